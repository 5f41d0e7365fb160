"""Quality checks on calibration/evaluation arrays. Pure numpy: data in, errors or warnings out.

Errors (:class:`CalibrationError`) are for data that cannot work: too few samples, NaN/inf, constant inputs,
a shape or dtype that does not fit the model. Warnings are for data that works but is probably wrong, such as
values in 0..255 for a model that expects 0..1.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from .errors import CalibrationError

MIN_SAMPLES = 8


@dataclass(frozen=True)
class Stats:
    count: int
    min: float
    max: float
    mean: float
    std: float
    integer_valued: bool

    def to_dict(self) -> dict:
        return {"count": self.count, "min": self.min, "max": self.max, "mean": self.mean, "std": self.std}


def check_count(n: int, minimum: int = MIN_SAMPLES, what: str = "calibration") -> None:
    if n < minimum:
        raise CalibrationError(f"{what} data has {n} sample(s); at least {minimum} are needed",
                               hint="pass more samples (100-500 representative inputs is typical)")


def check_dtype(arr: np.ndarray, name: str) -> None:
    if arr.dtype.kind not in "fiu":
        raise CalibrationError(f"{name}: data of dtype {arr.dtype} cannot feed a numeric model input",
                               hint="store the inputs as float32 (or integer) arrays")


def check_shape(arr: np.ndarray, expected: Sequence[int | None], name: str) -> None:
    """``arr`` is [N, *expected]; None in ``expected`` matches any size."""
    got = tuple(arr.shape[1:])
    ok = len(got) == len(expected) and all(e is None or e == g for e, g in zip(expected, got))
    if not ok:
        want = ", ".join("?" if e is None else str(e) for e in expected)
        raise CalibrationError(f"{name}: samples have shape {list(got)}, the model expects [{want}]",
                               hint=f"reshape the data to [N, {want}] (N samples first)")


def check_finite(arr: np.ndarray, name: str) -> None:
    if arr.dtype.kind == "f":
        bad = ~np.isfinite(arr)
        if bad.any():
            rows = np.unique(np.nonzero(bad.reshape(arr.shape[0], -1))[0])
            raise CalibrationError(f"{name}: {int(bad.sum())} NaN/inf value(s) in {len(rows)} sample(s) "
                                   f"(first: sample {int(rows[0])})",
                                   hint="drop or repair those samples before calibrating")


def check_not_constant(arr: np.ndarray, name: str) -> None:
    if arr.size and float(np.max(arr)) == float(np.min(arr)):
        raise CalibrationError(f"{name}: every value is {float(arr.flat[0])}; constant data cannot calibrate ranges",
                               hint="pass real, varied inputs")


def stats(arr: np.ndarray) -> Stats:
    a = arr.astype(np.float64, copy=False)
    return Stats(int(arr.shape[0]), float(a.min()), float(a.max()), float(a.mean()), float(a.std()),
                 bool(np.all(np.equal(np.mod(a, 1), 0))))


def range_warnings(s: Stats, name: str, *, expected: tuple[float, float] | None = None,
                   model_rescales: bool = False, reference: Stats | None = None) -> list[str]:
    """Loud warnings for suspicious value ranges (pure)."""
    out = []
    if expected is not None:
        lo, hi = expected
        span = max(hi - lo, 1e-12)
        if s.min < lo - 0.05 * span or s.max > hi + 0.05 * span:
            out.append(f"{name}: values span {s.min:g}..{s.max:g}, outside the expected range {lo:g}..{hi:g}")
    elif not model_rescales and s.max > 2.0 and s.min >= 0 and s.max <= 255 and (s.integer_valued or s.max > 64):
        out.append(f"{name}: values span {s.min:g}..{s.max:g} (looks like raw 0..255 pixels) but the model has no "
                   f"Rescaling layer; if it was trained on 0..1 inputs, scale the data (e.g. --scale 0.00392156862)")
    if reference is not None:
        ref_span = max(reference.max - reference.min, 1e-12)
        span = max(s.max - s.min, 1e-12)
        if span / ref_span > 8 or ref_span / span > 8:
            out.append(f"{name}: range {s.min:g}..{s.max:g} differs from the calibration range "
                       f"{reference.min:g}..{reference.max:g} by more than 8x; were both preprocessed the same way?")
    return out


def check_all(arr: np.ndarray, expected_shape: Sequence[int | None], name: str, *, minimum: int = MIN_SAMPLES,
              what: str = "calibration") -> Stats:
    """Run every error check on one input array; return its stats."""
    check_dtype(arr, name)
    check_shape(arr, expected_shape, name)
    check_count(arr.shape[0], minimum, what)
    check_finite(arr, name)
    check_not_constant(arr, name)
    return stats(arr)
