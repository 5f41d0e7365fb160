"""Rollout policy: stages, thresholds, durations and failure handling, parsed from CLI strings.

Targets (``tag:k=v``, ``group:g``, ``devices:a,b``) are the fleet's own :mod:`fleet.targets`.

Everything here is pure: strings in, frozen dataclasses out, and a :class:`PolicyError` with a hint for anything
malformed. Policies round-trip through plain dicts (``to_dict``/``from_dict``) for the database.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Mapping, Sequence

from edgekit import durations
from edgekit.durations import format_duration
from edgekit.errors import UsageError

from .errors import PolicyError

__all__ = ["format_duration", "parse_duration", "parse_fraction", "parse_ratio", "parse_stages", "build_policy",
           "Policy", "Stage"]

# --- scalars ---------------------------------------------------------------------------------------------------------

def parse_duration(text: str | float | int, what: str = "duration") -> float:
    """The core duration grammar (:func:`edgekit.durations.parse_duration`), failing as a :class:`PolicyError`."""
    try:
        return durations.parse_duration(text, what)
    except UsageError as exc:
        raise PolicyError(exc.message, hint=exc.hint) from None


def _parse_percent(text: str | float, what: str, example: str) -> float:
    """``"95%"`` -> 0.95; ``"0.95"`` or 0.95 -> 0.95. A bare number above 1 (``"20"``) is refused: it reads as 20
    to one person and 20% to the next, so a ratio option takes a percentage or a fraction, never a bare 20.
    Raises PolicyError for anything else."""
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        return float(text)
    s = str(text).strip()
    try:
        value = float(s[:-1]) / 100.0 if s.endswith("%") else float(s)
    except ValueError:
        raise PolicyError(f"invalid {what} {text!r}", hint=f"write a percentage like {example}") from None
    if not s.endswith("%") and value > 1:
        raise PolicyError(f"invalid {what} {text!r}: a bare number must be a fraction between 0 and 1",
                          hint=f"write {s}% for a percentage")
    return value


def parse_fraction(text: str | float, what: str = "threshold") -> float:
    """``"95%"`` -> 0.95; a bare number must already be a fraction in [0, 1] (``"0.95"``)."""
    value = _parse_percent(text, what, "95% or a fraction like 0.95")
    if not (0.0 <= value <= 1.0) or not math.isfinite(value):
        raise PolicyError(f"invalid {what} {text!r}: must be between 0% and 100%", hint="e.g. 95%")
    return value


def parse_ratio(text: str | float, what: str = "regression") -> float:
    """Like :func:`parse_fraction` but may exceed 100% (``"250%"`` -> 2.5): used for latency regressions.

    Above 100% it must be written as a percentage: ``"20"`` is refused rather than taken as 2000%."""
    value = _parse_percent(text, what, "20%")
    if value < 0 or not math.isfinite(value):
        raise PolicyError(f"invalid {what} {text!r}: must be a non-negative percentage", hint="e.g. 20%")
    return value


def format_pct(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.4g}%"


# --- stages ----------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Stage:
    """A cumulative stage size: ``count`` devices or ``percent`` (0-1] of the target."""

    count: int | None = None
    percent: float | None = None

    def size(self, total: int) -> int:
        """How many devices (cumulative) this stage covers out of ``total`` target devices (at least 1)."""
        if total <= 0:
            return 0
        if self.count is not None:
            return min(self.count, total)
        return max(1, min(total, math.ceil(round(self.percent * total, 9))))

    def label(self) -> str:
        """The stage as written on the command line (and stored): ``1`` or ``10%``."""
        return str(self.count) if self.count is not None else f"{self.percent * 100:.4g}%"

    def describe(self) -> str:
        """For people: ``1 device``, ``5 devices`` or ``10%``."""
        if self.count is None:
            return self.label()
        return f"{self.count} device" + ("" if self.count == 1 else "s")


def parse_stages(text: str | Sequence[str]) -> tuple[Stage, ...]:
    """``"1,10%,50%,100%"`` -> stages. Sizes must not shrink and the last stage must cover everyone (100%)."""
    items = [p.strip() for p in (text.split(",") if isinstance(text, str) else text)]
    if not items or any(not p for p in items):
        raise PolicyError(f"invalid stages {text!r}", hint="list cumulative stage sizes like 1,10%,50%,100%")
    stages: list[Stage] = []
    for p in items:
        if p.endswith("%"):
            try:
                pct = float(p[:-1]) / 100.0
            except ValueError:
                raise PolicyError(f"invalid stage {p!r}", hint="a stage is a device count (1) or a percentage (10%)")
            if not (0 < pct <= 1):
                raise PolicyError(f"invalid stage {p!r}: a percentage must be above 0% and at most 100%",
                                  hint="use e.g. 10%")
            stages.append(Stage(percent=pct))
        else:
            if not p.isdigit() or int(p) < 1:
                raise PolicyError(f"invalid stage {p!r}", hint="a stage is a device count >= 1 or a percentage (10%)")
            stages.append(Stage(count=int(p)))
    last = stages[-1]
    if last.percent != 1.0:
        raise PolicyError(f"the last stage of {text!r} must be 100%",
                          hint="end the list with 100%, e.g. 1,10%,50%,100%")
    # sizes must be non-decreasing for every fleet size; check percentages among themselves and counts among themselves
    pcts = [s.percent for s in stages if s.percent is not None]
    counts = [s.count for s in stages if s.count is not None]
    if pcts != sorted(pcts) or counts != sorted(counts):
        raise PolicyError(f"stages {text!r} shrink", hint="stages are cumulative: list them in increasing order")
    return tuple(stages)


def stage_sizes(stages: Sequence[Stage], total: int) -> list[int]:
    """Cumulative sizes for a target of ``total`` devices, made monotonic (a count stage never undoes a percent)."""
    sizes, high = [], 0
    for s in stages:
        high = max(high, s.size(total))
        sizes.append(high)
    return sizes


# --- failure handling ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FailureMode:
    """What the rollout does when a stage fails: the state-machine event it raises."""

    name: str
    event: str
    help: str


FAILURE_MODES: dict[str, FailureMode] = {
    m.name: m for m in (
        FailureMode("pause", "fail_pause", "stop assigning devices and wait for an operator (resume or abort)"),
        FailureMode("abort", "fail_abort", "abort and republish the previous desired state to every touched device"),
    )
}


def parse_on_failure(text: str) -> FailureMode:
    mode = FAILURE_MODES.get(str(text).strip().lower())
    if mode is None:
        raise PolicyError(f"invalid --on-failure {text!r}", hint=f"use one of {', '.join(FAILURE_MODES)}")
    return mode


# --- the policy ------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Policy:
    stages: tuple[Stage, ...] = (Stage(count=1), Stage(percent=0.1), Stage(percent=0.5), Stage(percent=1.0))
    success_threshold: float = 0.95   # fraction of a stage's cohort that must commit the new model
    failure_threshold: float = 0.05   # fraction failed (failed + rolled back + timed out) above which the stage fails
    max_p95_regression: float = 0.20  # new p95 / previous p95 - 1, median over the cohort's devices
    p95_slack_ms: float = 1.0         # ... and only when the median increase is also above this (timer noise)
    max_error_rate: float = 0.01      # inference errors / inferences of the new model over the cohort
    min_inferences: int = 0           # inferences of the new model the cohort must report before the gates pass
    soak: float = 300.0               # seconds a stage must stay healthy before the next one starts
    device_timeout: float = 600.0     # seconds an online device may take from assignment to an outcome
    on_failure: str = "pause"
    require_approval: bool = False    # wait for 'rollout approve' before each next stage

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["stages"] = [s.label() for s in self.stages]
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Policy":
        return build_policy(**dict(d))

    @property
    def failure_mode(self) -> FailureMode:
        return FAILURE_MODES[self.on_failure]

    def describe(self) -> str:
        return (f"stages {','.join(s.label() for s in self.stages)}; success >= {format_pct(self.success_threshold)}, "
                f"failure > {format_pct(self.failure_threshold)} -> {self.on_failure}; "
                f"p95 regression <= {format_pct(self.max_p95_regression)} (or <= {self.p95_slack_ms:g} ms), "
                f"error rate <= "
                f"{format_pct(self.max_error_rate)}; soak {format_duration(self.soak)}, "
                f"device timeout {format_duration(self.device_timeout)}"
                + ("; manual approval between stages" if self.require_approval else ""))


def build_policy(*, stages: str | Sequence[str] | None = None, success_threshold: str | float | None = None,
                 failure_threshold: str | float | None = None, max_p95_regression: str | float | None = None,
                 p95_slack_ms: str | float | None = None,
                 max_error_rate: str | float | None = None, min_inferences: int | None = None,
                 soak: str | float | None = None, device_timeout: str | float | None = None,
                 on_failure: str | None = None, require_approval: bool | None = None) -> Policy:
    """Build a policy from CLI-style strings; ``None`` keeps the default. Raises PolicyError on anything malformed."""
    base = Policy()
    kw: dict[str, Any] = {}
    if stages is not None:
        kw["stages"] = parse_stages(stages)
    if success_threshold is not None:
        kw["success_threshold"] = parse_fraction(success_threshold, "--success-threshold")
    if failure_threshold is not None:
        kw["failure_threshold"] = parse_fraction(failure_threshold, "--failure-threshold")
    if max_p95_regression is not None:
        kw["max_p95_regression"] = parse_ratio(max_p95_regression, "--max-p95-regression")
    if p95_slack_ms is not None:
        kw["p95_slack_ms"] = (float(p95_slack_ms) if isinstance(p95_slack_ms, (int, float))
                              else parse_duration(p95_slack_ms, "--p95-slack") * 1000.0)
        if kw["p95_slack_ms"] < 0:
            raise PolicyError("--p95-slack must not be negative", hint="e.g. 1ms")
    if max_error_rate is not None:
        kw["max_error_rate"] = parse_fraction(max_error_rate, "--max-error-rate")
    if min_inferences is not None:
        if int(min_inferences) < 0:
            raise PolicyError(f"invalid --min-inferences {min_inferences}", hint="use 0 or a positive count")
        kw["min_inferences"] = int(min_inferences)
    if soak is not None:
        kw["soak"] = parse_duration(soak, "--soak")
    if device_timeout is not None:
        kw["device_timeout"] = parse_duration(device_timeout, "--device-timeout")
        if kw["device_timeout"] <= 0:
            raise PolicyError("--device-timeout must be above 0", hint="e.g. 10m")
    if on_failure is not None:
        kw["on_failure"] = parse_on_failure(on_failure).name
    if require_approval is not None:
        kw["require_approval"] = bool(require_approval)
    policy = Policy(**{**asdict(base), "stages": base.stages, **kw})
    if policy.success_threshold + policy.failure_threshold > 1.0 + 1e-9:
        raise PolicyError(
            f"--success-threshold {format_pct(policy.success_threshold)} and --failure-threshold "
            f"{format_pct(policy.failure_threshold)} overlap (they add up to more than 100%)",
            hint="lower one of them, e.g. 95% and 5%")
    return policy
