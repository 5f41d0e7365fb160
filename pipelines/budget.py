"""Reads ``[optimize] budget`` (``"size<=120KB,gzip<=60KB,latency_p95<=2ms,accuracy_drop<=1"``) before any step
runs, so a budget the search could not read is a one-line error up front. Pure; the search itself lives in
``converters.optimize.search``."""

from __future__ import annotations

import re

UNITS: dict[str, dict[str, float]] = {"size": {"": 1, "b": 1, "kb": 1000, "kib": 1024, "mb": 1000 ** 2, "mib": 1024 ** 2},
         "gzip": {"": 1, "b": 1, "kb": 1000, "kib": 1024, "mb": 1000 ** 2, "mib": 1024 ** 2},
         "latency_p95": {"ms": 1.0, "us": 1e-3, "s": 1000.0},
         "accuracy_drop": {"": 1.0, "pp": 1.0}}
_TERM = re.compile(r"^\s*([a-z_0-9]+)\s*<=\s*([0-9]*\.?[0-9]+)\s*([a-zA-Z]*)\s*$")


class BudgetSyntaxError(ValueError):
    pass


def parse_budget(text: str) -> dict[str, float]:
    """``name<=value[unit]`` terms, comma-separated → {name: value in bytes, ms or points}."""
    out: dict[str, float] = {}
    for term in text.split(","):
        m = _TERM.match(term)
        if not m:
            raise BudgetSyntaxError(f"cannot read {term.strip()!r}: write name<=value, e.g. size<=120KB")
        name, value, unit = m.group(1), float(m.group(2)), m.group(3).lower()
        if name not in UNITS:
            raise BudgetSyntaxError(f"unknown budget {name!r}: use {', '.join(UNITS)}")
        if unit not in UNITS[name]:
            raise BudgetSyntaxError(f"unknown unit {m.group(3)!r} for {name}: use "
                                    f"{', '.join(u for u in UNITS[name] if u) or 'none'}")
        if name in out:
            raise BudgetSyntaxError(f"{name} given twice")
        out[name] = value * UNITS[name][unit]
    return out
