"""Bounded JSON: size and nesting depth are checked on the raw bytes before :func:`json.loads` sees them.

Python's json parser recurses once per nesting level, so a few hundred kilobytes of ``[[[[`` end in a
RecursionError (a traceback, not an error a user can act on). :func:`nesting_depth` is a linear scan that skips
strings and stops as soon as the limit is passed.
"""

from __future__ import annotations

import json
import re
from typing import Any

from .errors import EdgekitError, ManifestError

#: deeper than any manifest edgekit writes (about 5 levels) by a wide margin
MAX_DEPTH = 32

_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.S)  # disjoint alternatives: linear, no backtracking blow-up
_NOT_BRACKETS = bytes(sorted(set(range(256)) - set(b"[]{}")))
_OPEN = frozenset(b"[{")


def nesting_depth(raw: bytes, limit: int | None = None) -> int:
    """The deepest nesting of arrays/objects in ``raw`` (brackets inside strings do not count); with ``limit``,
    returns as soon as the depth passes it."""
    depth = deepest = 0
    for c in _STRING.sub(b"", raw).translate(None, _NOT_BRACKETS):
        if c in _OPEN:
            depth += 1
            if depth > deepest:
                deepest = depth
                if limit is not None and deepest > limit:
                    break
        else:
            depth -= 1
    return deepest


def loads(raw: bytes, *, what: str, max_bytes: int, max_depth: int = MAX_DEPTH,
          error: type[EdgekitError] = ManifestError, hint: str | None = None) -> Any:
    """``json.loads`` of UTF-8 ``raw`` within bounds; every failure is one ``error`` naming ``what``."""
    if len(raw) > max_bytes:
        raise error(f"{what} is {len(raw)} bytes, over the {max_bytes}-byte limit", hint=hint)
    if nesting_depth(raw, max_depth) > max_depth:
        levels = f"{max_depth} level{'s' if max_depth != 1 else ''}"
        raise error(f"{what} is too deeply nested (arrays and objects over {levels} deep)", hint=hint)
    try:
        return json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise error(f"{what} is not valid UTF-8 JSON", hint=hint) from exc
