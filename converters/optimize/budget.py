"""The budget of ``edgekit optimize --budget``: its grammar, and how far a measured model is from it. Pure logic.

``size<=120KB,gzip<=60KB,latency_p95<=2ms,accuracy_drop<=1`` — comma-separated ``key<=value`` terms, any subset of
the four keys, each at most once:

* ``size`` and ``gzip``: bytes of the ``.tflite`` file, raw and gzip -9 (what travels to a device). Units ``B``,
  ``KB``/``MB`` (1000-based) or ``KiB``/``MiB`` (1024-based); a bare number is bytes.
* ``latency_p95``: the 95th percentile of one LiteRT ``invoke()`` on this host with ``--threads``; ``us``, ``ms`` or
  ``s`` (a unit is required: a bare number could mean either).
* ``accuracy_drop``: top-1 points lost against the float source model (disagreement points without labels), the
  unit of ``convert --max-accuracy-drop``; an optional ``pt``/``pp`` suffix.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

from edgekit.errors import UsageError

KEYS = ("size", "gzip", "latency_p95", "accuracy_drop")
# the trial metric each budget key bounds
METRIC = {"size": "bytes", "gzip": "gzip_bytes", "latency_p95": "latency_p95_ms", "accuracy_drop": "drop_pp"}
SIZE_UNITS = {"b": 1, "kb": 1000, "mb": 1000 ** 2, "kib": 1024, "mib": 1024 ** 2}
TIME_UNITS_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0}
GRAMMAR = "write it like size<=120KB,gzip<=60KB,latency_p95<=2ms,accuracy_drop<=1 (any subset)"
_TERM = re.compile(r"^\s*([a-z_0-9]+)\s*<=\s*(\S.*?)\s*$")
_VALUE = re.compile(r"^(\d+(?:\.\d+)?|\.\d+)\s*([a-z]*)$")


class BudgetError(UsageError):
    """A ``--budget`` the parser cannot read."""

    default_hint = GRAMMAR


@dataclass(frozen=True)
class Budget:
    """Limits a model must meet; ``None`` is no limit. Sizes in bytes, latency in ms, accuracy drop in points."""

    size: int | None = None
    gzip: int | None = None
    latency_p95: float | None = None  # milliseconds
    accuracy_drop: float | None = None  # points
    text: str = ""

    def limits(self) -> dict[str, float]:
        return {k: getattr(self, k) for k in KEYS if getattr(self, k) is not None}

    def misses(self, metrics: dict[str, Any]) -> dict[str, tuple[float | None, float]]:
        """{key: (measured, limit)} for every limit ``metrics`` does not meet (a missing measurement misses)."""
        out = {}
        for key, limit in self.limits().items():
            value = metrics.get(METRIC[key])
            if value is None or value > limit:
                out[key] = (value, limit)
        return out

    def met(self, metrics: dict[str, Any]) -> bool:
        return not self.misses(metrics)

    def distance(self, metrics: dict[str, Any]) -> float:
        """How far ``metrics`` are from the budget: the sum over missed limits of the excess relative to the limit
        (accuracy points against max(limit, 1)); 0 when it is met, infinity when a limit was not measured."""
        total = 0.0
        for key, (value, limit) in self.misses(metrics).items():
            if value is None:
                return math.inf
            total += (value - limit) / (max(limit, 1.0) if key == "accuracy_drop" else max(limit, 1e-9))
        return total

    def to_dict(self) -> dict[str, Any]:
        return {"text": self.text, **{k: getattr(self, k) for k in KEYS}}


def parse_budget(text: str) -> Budget:
    """``"size<=120KB,latency_p95<=2ms"`` → a :class:`Budget`. Raises :class:`BudgetError` (one line, exit 2)."""
    if text is None or not str(text).strip():
        raise BudgetError("empty --budget")
    values: dict[str, Any] = {}
    for term in str(text).split(","):
        if not term.strip():
            raise BudgetError(f"empty term in --budget {text!r}", hint="separate terms with single commas")
        m = _TERM.match(term.lower())
        if not m:
            raise BudgetError(f"cannot read {term.strip()!r} in --budget: expected KEY<=VALUE")
        key, raw = m.groups()
        if key not in KEYS:
            raise BudgetError(f"unknown budget key {key!r}", hint=f"choose from {', '.join(KEYS)}")
        if key in values:
            raise BudgetError(f"budget key {key} given twice in {text!r}", hint="give each key once")
        values[key] = _value(key, raw, term.strip())
    return Budget(**values, text=str(text).strip())


def _value(key: str, raw: str, term: str) -> float:
    m = _VALUE.match(raw.strip())
    if not m:
        raise BudgetError(f"cannot read the value of {term!r}: not a non-negative number with a unit",
                          hint=_UNIT_HINT[key])
    number, unit = float(m.group(1)), m.group(2)
    if key in ("size", "gzip"):
        if unit not in SIZE_UNITS and unit != "":
            raise BudgetError(f"unknown size unit {unit!r} in {term!r}", hint=_UNIT_HINT[key])
        value = number * SIZE_UNITS.get(unit, 1)
        if value < 1:
            raise BudgetError(f"{term!r} allows no bytes at all", hint="give a size of at least 1B")
        return int(value)
    if key == "latency_p95":
        if unit not in TIME_UNITS_MS:
            raise BudgetError(f"latency {raw!r} in {term!r} needs a unit (us, ms or s)", hint=_UNIT_HINT[key])
        value = number * TIME_UNITS_MS[unit]
        if value <= 0:
            raise BudgetError(f"{term!r} allows no time at all", hint="give a latency above 0, e.g. 2ms")
        return value
    if unit not in ("", "pt", "pp"):
        raise BudgetError(f"unknown accuracy unit {unit!r} in {term!r}", hint=_UNIT_HINT[key])
    if number > 100:
        raise BudgetError(f"accuracy drop {number} in {term!r} is more than 100 points", hint=_UNIT_HINT[key])
    return number


_UNIT_HINT = {
    "size": "write the size like 120KB, 1.5MB, 96KiB or 50000B",
    "gzip": "write the size like 60KB, 1.5MB, 48KiB or 30000B",
    "latency_p95": "write the latency like 500us, 2ms or 0.01s",
    "accuracy_drop": "write the drop in top-1 points, e.g. accuracy_drop<=1 (or 0.5pt)",
}
