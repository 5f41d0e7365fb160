"""ExampleValidator-style checks on the split data, pure numpy: statistics per split, anomalies (shapes, dtypes,
value ranges, NaNs, class balance) and drift against the previous run's statistics.

Each check is a :class:`Check` row (``ok``, ``warn`` or ``fail``); the data step fails on any ``fail``. Drift is
the TFX measure for categorical features, the L-infinity distance between the two class distributions, plus the
shift of the mean value in units of the previous standard deviation; the larger of the two is compared with
``max_drift``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Check:
    check: str
    split: str
    value: str
    expected: str
    status: str  # ok | warn | fail

    def to_dict(self) -> dict[str, str]:
        return asdict(self)


def stats(x: np.ndarray, y: np.ndarray | None) -> dict[str, Any]:
    """Statistics of one split (or the whole set)."""
    finite = np.isfinite(x) if x.dtype.kind == "f" else np.ones(x.shape, bool)
    vals = x[finite].astype(np.float64) if x.size else np.zeros(0)
    out: dict[str, Any] = {
        "n": int(x.shape[0]), "shape": [int(s) for s in x.shape[1:]], "dtype": str(x.dtype),
        "nan": int((~finite).sum()),
        "min": float(vals.min()) if vals.size else None, "max": float(vals.max()) if vals.size else None,
        "mean": float(vals.mean()) if vals.size else None, "std": float(vals.std()) if vals.size else None,
    }
    if y is not None:
        labels, counts = np.unique(y, return_counts=True)
        out["label_dtype"] = str(y.dtype)
        out["classes"] = {str(int(k)) if np.issubdtype(y.dtype, np.integer) else str(k): int(c)
                          for k, c in zip(labels, counts)}
    return out


def check_splits(splits: dict[str, dict[str, Any]], *, value_range: tuple[float, float] | None = None,
                 min_class_fraction: float | None = None) -> list[Check]:
    """Anomalies of the split statistics (from :func:`stats`)."""
    rows: list[Check] = []
    shapes = {name: tuple(s["shape"]) for name, s in splits.items()}
    first = next(iter(shapes.values()))
    for name, s in splits.items():
        rows.append(Check("shape", name, str(list(shapes[name])), str(list(first)),
                          "ok" if shapes[name] == first else "fail"))
        numeric = np.dtype(s["dtype"]).kind in "fiub"
        rows.append(Check("dtype", name, s["dtype"], "numeric", "ok" if numeric else "fail"))
        if "label_dtype" in s:
            integer = np.dtype(s["label_dtype"]).kind in "iu"
            rows.append(Check("label dtype", name, s["label_dtype"], "integer classes", "ok" if integer else "fail"))
        rows.append(Check("NaN/inf", name, str(s["nan"]), "0", "ok" if s["nan"] == 0 else "fail"))
        if value_range is not None and s["min"] is not None:
            lo, hi = value_range
            inside = s["min"] >= lo and s["max"] <= hi
            rows.append(Check("range", name, f"{s['min']:.4g}..{s['max']:.4g}", f"{lo:g}..{hi:g}",
                              "ok" if inside else "fail"))
        if s["n"] == 0:
            rows.append(Check("samples", name, "0", "> 0", "fail"))
    train = splits.get("train", {})
    if "classes" in train:
        everywhere = set().union(*(s.get("classes", {}).keys() for s in splits.values()))
        missing = sorted(everywhere - set(train["classes"]), key=_label_order)
        rows.append(Check("classes in train", "train", f"{len(train['classes'])}",
                          f"all {len(everywhere)}" + (f" (missing {', '.join(missing)})" if missing else ""),
                          "fail" if missing else "ok"))
        counts = np.array(list(train["classes"].values()), np.float64)
        share = counts.min() / counts.sum() if counts.size else 0.0
        uniform = 1.0 / max(1, counts.size)
        want = min_class_fraction if min_class_fraction is not None else 0.2 * uniform
        rows.append(Check("class balance", "train", f"smallest {share:.3f}, largest {counts.max() / counts.sum():.3f}",
                          f"smallest >= {want:.3f}", "ok" if share >= want else "warn"))
    return rows


def drift(current: dict[str, Any], previous: dict[str, Any] | None) -> dict[str, float] | None:
    """Drift of the whole set against the previous run's statistics; None without a previous run."""
    if previous is None:
        return None
    out: dict[str, float] = {}
    pc, cc = previous.get("classes"), current.get("classes")
    if pc and cc:
        keys = set(pc) | set(cc)
        pn, cn = sum(pc.values()) or 1, sum(cc.values()) or 1
        out["label_linf"] = float(max(abs(cc.get(k, 0) / cn - pc.get(k, 0) / pn) for k in keys))
    if previous.get("std") and current.get("mean") is not None and previous.get("mean") is not None:
        out["mean_shift_std"] = float(abs(current["mean"] - previous["mean"]) / previous["std"])
    out["score"] = max(out.values()) if out else 0.0
    return out


def drift_check(d: dict[str, float] | None, max_drift: float | None) -> Check:
    if d is None:
        return Check("drift", "all", "-", "no previous run", "ok")
    expected = f"<= {max_drift:g}" if max_drift is not None else "(no max_drift)"
    parts = ", ".join(f"{k} {v:.4f}" for k, v in d.items() if k != "score")
    bad = max_drift is not None and d["score"] > max_drift
    return Check("drift", "all", parts or "0", expected, "fail" if bad else "ok")


def _label_order(k: str):
    return (0, int(k)) if k.lstrip("-").isdigit() else (1, k)
