"""TFX-style blessing, pure: absolute thresholds on the evaluation, and thresholds relative to the release of the
same model the fleet runs now (its figures read from the fleet's store and that release's report card).

:func:`bless` returns every check with its value and threshold; the model is blessed when none fails. A relative
threshold with no release to compare with (the fleet runs no model of this name yet) is ``skipped``, as TFX
blesses a first model on absolute thresholds alone.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any


@dataclass(frozen=True)
class Thresholds:
    min_accuracy: float | None = None            # top-1 on the test split, 0..1
    min_class_accuracy: float | None = None      # the worst class's top-1, 0..1
    max_drop_vs_float_pp: float | None = None    # points lost by conversion/optimization against the float model
    max_size_bytes: int | None = None
    max_latency_ms: float | None = None          # host p95
    max_accuracy_drop_vs_release_pp: float | None = None  # points below the release the fleet runs
    max_size_ratio_vs_release: float | None = None        # bytes / the release's bytes

    def any(self) -> bool:
        return any(getattr(self, f.name) is not None for f in fields(self))


@dataclass(frozen=True)
class Baseline:
    """The release the fleet runs now: the most common model of that name on the fleet's devices."""

    name: str
    version: str
    sha256: str
    devices: int
    accuracy: float | None = None   # its top-1 (its pipeline evaluation, else its report card's converted top-1)
    size: int | None = None
    source: str = ""                # where the figures came from


@dataclass(frozen=True)
class GateCheck:
    check: str
    value: float | None
    threshold: float
    status: str        # passed | failed | skipped
    detail: str = ""


@dataclass
class Blessing:
    blessed: bool
    checks: list[GateCheck] = field(default_factory=list)
    baseline: Baseline | None = None

    @property
    def failed(self) -> list[GateCheck]:
        return [c for c in self.checks if c.status == "failed"]

    def to_dict(self) -> dict[str, Any]:
        return {"blessed": self.blessed, "checks": [asdict(c) for c in self.checks],
                "baseline": asdict(self.baseline) if self.baseline else None}


EPS = 1e-9  # figures computed in floating point (100 * (0.96 - 0.95) = 1.0000000000000009) meet a threshold equal
# to them


def _at_least(name: str, value: float | None, threshold: float, detail: str = "") -> GateCheck:
    if value is None:
        return GateCheck(name, None, threshold, "failed", detail or "not measured")
    return GateCheck(name, value, threshold, "passed" if value >= threshold - EPS else "failed", detail)


def _at_most(name: str, value: float | None, threshold: float, detail: str = "") -> GateCheck:
    if value is None:
        return GateCheck(name, None, threshold, "failed", detail or "not measured")
    return GateCheck(name, value, threshold, "passed" if value <= threshold + EPS else "failed", detail)


def bless(evaluation: dict[str, Any], t: Thresholds, baseline: Baseline | None) -> Blessing:
    """Judge an evaluation (the evaluate step's ``evaluation.json``) against the thresholds."""
    checks: list[GateCheck] = []
    acc = evaluation.get("accuracy")
    if t.min_accuracy is not None:
        checks.append(_at_least("accuracy", acc, t.min_accuracy))
    if t.min_class_accuracy is not None:
        per = {k: v.get("accuracy") for k, v in (evaluation.get("per_class") or {}).items()
               if v.get("accuracy") is not None}
        worst = min(per.items(), key=lambda kv: kv[1]) if per else None
        checks.append(_at_least("worst class accuracy", worst[1] if worst else None, t.min_class_accuracy,
                                f"class {worst[0]}" if worst else "no per-class figures"))
    if t.max_drop_vs_float_pp is not None:
        checks.append(_at_most("drop vs float (pp)", evaluation.get("drop_vs_float_pp"), t.max_drop_vs_float_pp))
    if t.max_size_bytes is not None:
        checks.append(_at_most("size (bytes)", evaluation.get("size"), t.max_size_bytes))
    if t.max_latency_ms is not None:
        checks.append(_at_most("latency p95 (ms)", (evaluation.get("latency_ms") or {}).get("p95_ms"),
                               t.max_latency_ms))
    if t.max_accuracy_drop_vs_release_pp is not None:
        name = "drop vs release (pp)"
        if baseline is None:
            checks.append(GateCheck(name, None, t.max_accuracy_drop_vs_release_pp, "skipped",
                                    "the fleet runs no release of this model"))
        elif baseline.accuracy is None or acc is None:
            checks.append(GateCheck(name, None, t.max_accuracy_drop_vs_release_pp, "failed",
                                    f"release {baseline.version} has no accuracy figure to compare with"))
        else:
            checks.append(_at_most(name, 100.0 * (baseline.accuracy - acc), t.max_accuracy_drop_vs_release_pp,
                                   f"release {baseline.version}: {100 * baseline.accuracy:.2f}%"))
    if t.max_size_ratio_vs_release is not None:
        name = "size vs release (ratio)"
        if baseline is None:
            checks.append(GateCheck(name, None, t.max_size_ratio_vs_release, "skipped",
                                    "the fleet runs no release of this model"))
        elif not baseline.size or evaluation.get("size") is None:
            checks.append(GateCheck(name, None, t.max_size_ratio_vs_release, "failed",
                                    f"release {baseline.version} has no size to compare with"))
        else:
            checks.append(_at_most(name, evaluation["size"] / baseline.size, t.max_size_ratio_vs_release,
                                   f"release {baseline.version}: {baseline.size} bytes"))
    return Blessing(not any(c.status == "failed" for c in checks), checks, baseline)


def release_figures(manifest: dict[str, Any]) -> tuple[float | None, int | None, str]:
    """A release's accuracy and size from its bundle manifest: the pipeline's evaluation when it came from a
    pipeline, else the report card summary ``edgekit convert`` puts in the provenance."""
    prov = manifest.get("provenance") or {}
    files = manifest.get("files") or {}
    meta = files.get(manifest.get("model_file")) if isinstance(files, dict) else None
    size = meta.get("size") if isinstance(meta, dict) else None
    pipe = (prov.get("pipeline") or {}).get("evaluation") or {}
    if pipe.get("accuracy") is not None:
        return float(pipe["accuracy"]), pipe.get("size", size), "pipeline evaluation"
    acc = ((prov.get("report") or {}).get("accuracy") or {}).get("top1_converted")
    size = (prov.get("report") or {}).get("size", size)
    return (float(acc) if acc is not None else None), size, "report card"
