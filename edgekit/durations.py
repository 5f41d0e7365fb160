"""The one duration grammar and "time ago" formatter of every edgekit command.

``parse_duration`` reads ``500ms``, ``90s``, ``5m``, ``1h30m``, ``2d``, ``1w`` (units may be combined, largest
first or not, no spaces between parts) or a bare number of seconds. ``--since``, ``--soak``, ``--timeout`` and
every other time option use it, so they all accept the same spellings.
"""

from __future__ import annotations

import math
import re

from .errors import UsageError

UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 7 * 86400.0}
_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)")
_NUMBER = re.compile(r"\d+(?:\.\d+)?")
HINT = "write it like 500ms, 30s, 5m, 1h30m, 2d, 1w or a number of seconds"


def parse_duration(text: str | float | int, what: str = "duration") -> float:
    """A duration -> seconds (float, >= 0). Raises :class:`UsageError` (naming ``what``) for anything else."""
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        value = float(text)
    else:
        s = str(text if text is not None else "").strip().lower()
        if _NUMBER.fullmatch(s):
            value = float(s)
        else:
            parts = _PART.findall(s)
            if not parts or "".join(n + u for n, u in parts) != s:
                raise UsageError(f"invalid {what} {text!r}: not a duration", hint=HINT)
            value = sum(float(n) * UNIT_SECONDS[u] for n, u in parts)
    if value < 0 or not math.isfinite(value):
        raise UsageError(f"invalid {what} {text!r}: must be a finite, non-negative time", hint="e.g. 5m")
    return value


def format_duration(seconds: float) -> str:
    """Seconds -> ``1h2m3s`` / ``5m`` / ``250ms`` (exact to the second; what ``parse_duration`` reads back)."""
    if seconds < 1 and seconds != 0:
        return f"{seconds * 1000:.0f}ms"
    s = int(round(seconds))
    h, rest = divmod(s, 3600)
    m, sec = divmod(rest, 60)
    return (f"{h}h" if h else "") + (f"{m}m" if m else "") + (f"{sec}s" if sec or not (h or m) else "")


def ago(ts: float | None, now: float, never: str = "never") -> str:
    """How long ago ``ts`` was, in its largest whole unit: ``12s ago``, ``5m ago``, ``3h ago``, ``2d ago``."""
    if ts is None:
        return never
    d = max(0.0, now - ts)
    for unit, sec in (("d", 86400), ("h", 3600), ("m", 60)):
        if d >= sec:
            return f"{d / sec:.0f}{unit} ago"
    return f"{d:.0f}s ago"
