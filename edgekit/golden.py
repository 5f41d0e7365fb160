"""Golden vectors: a few inputs with the outputs the model must reproduce on a device.

Pure numpy (``default_inputs``, ``pack``, ``unpack``, ``compare``) plus one thin runner over LiteRT (``run_model``).
Each sample is one full input tensor per model input; arrays are stored as ``in<i>`` / ``out<j>`` of shape
``[count, *tensor_shape]`` in ``golden.npz``.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from .arrays import load_arrays
from .errors import ArrayFileError, BundleError, UsageError
from .extras import require

GOLDEN_FILE = "golden.npz"


def default_inputs(specs: Sequence[dict[str, Any]], count: int = 3, seed: int = 0) -> list[np.ndarray]:
    """Deterministic inputs covering each input's range: floats in [0, 1), integers over their dtype's range."""
    rng = np.random.default_rng(seed)
    arrays = []
    for spec in specs:
        shape = [count] + [max(int(d), 1) for d in spec["shape"]]
        dtype = np.dtype(spec["dtype"])
        if dtype.kind == "f":
            arrays.append(rng.random(shape).astype(dtype))
        elif dtype.kind in "iu":
            info = np.iinfo(dtype)
            lo, hi = max(int(info.min), -128), min(int(info.max), 255)
            arrays.append(rng.integers(lo, hi + 1, size=shape).astype(dtype))
        elif dtype.kind == "b":
            arrays.append(rng.random(shape) > 0.5)
        else:
            raise UsageError(f"cannot make golden inputs for dtype {dtype}", hint="pass --golden inputs.npz")
    return arrays


def default_tolerance(output_specs: Sequence[dict[str, Any]]) -> tuple[float, float]:
    """(atol, rtol): one quantization step for integer outputs, a float32 rounding margin otherwise."""
    if all(np.dtype(s["dtype"]).kind in "iub" for s in output_specs):
        return 1.0, 0.0
    return 1e-4, 1e-3


def pack(inputs: Sequence[np.ndarray], outputs: Sequence[np.ndarray]) -> bytes:
    buf = io.BytesIO()
    arrays = {f"in{i}": a for i, a in enumerate(inputs)}
    arrays.update({f"out{j}": a for j, a in enumerate(outputs)})
    np.savez(buf, **arrays)
    return buf.getvalue()


def unpack(data: bytes) -> tuple[list[np.ndarray], list[np.ndarray]]:
    try:
        z, _ = load_arrays(data, what="golden.npz")
        ins = [z[f"in{i}"] for i in range(sum(1 for k in z if k.startswith("in")))]
        outs = [z[f"out{j}"] for j in range(sum(1 for k in z if k.startswith("out")))]
    except (ArrayFileError, KeyError) as exc:
        raise BundleError("golden.npz is not a valid golden-vector archive") from exc
    return ins, outs


@dataclass
class Comparison:
    ok: bool
    max_abs_error: float
    worst_output: int
    detail: str


def compare(expected: Sequence[np.ndarray], actual: Sequence[np.ndarray], atol: float, rtol: float) -> Comparison:
    """Element-wise |actual - expected| <= atol + rtol*|expected| for every output; shapes must match."""
    if len(expected) != len(actual):
        return Comparison(False, float("inf"), -1, f"expected {len(expected)} outputs, got {len(actual)}")
    worst, worst_j = 0.0, 0
    for j, (e, a) in enumerate(zip(expected, actual)):
        if e.shape != a.shape:
            return Comparison(False, float("inf"), j, f"output {j} shape {a.shape} != expected {e.shape}")
        e64, a64 = e.astype(np.float64), a.astype(np.float64)
        if not np.all(np.isfinite(a64)):
            return Comparison(False, float("inf"), j, f"output {j} has NaN or inf")
        err = np.abs(a64 - e64)
        if err.size and float(err.max()) > worst:
            worst, worst_j = float(err.max()), j
        if np.any(err > atol + rtol * np.abs(e64)):
            return Comparison(False, float(err.max()), j,
                              f"output {j} differs by up to {float(err.max()):.6g} (atol {atol}, rtol {rtol})")
    return Comparison(True, worst, worst_j, "ok")


def run_model(model: bytes, inputs: Sequence[np.ndarray], threads: int = 1) -> list[np.ndarray]:
    """Run every sample of ``inputs`` (arrays of shape [count, *input_shape]) through LiteRT; stack the outputs."""
    interpreter_mod = require("ai_edge_litert.interpreter", "agent")
    interp = interpreter_mod.Interpreter(model_content=model, num_threads=threads)
    interp.allocate_tensors()
    in_details = interp.get_input_details()
    out_details = interp.get_output_details()
    if len(in_details) != len(inputs):
        raise UsageError(f"model has {len(in_details)} inputs but {len(inputs)} golden arrays were given")
    count = inputs[0].shape[0]
    results: list[list[np.ndarray]] = [[] for _ in out_details]
    for k in range(count):
        for d, arr in zip(in_details, inputs):
            sample = arr[k]
            if tuple(sample.shape) != tuple(d["shape"]) or sample.dtype != d["dtype"]:
                raise UsageError(
                    f"golden input for {d['name']} has shape {list(sample.shape)} {sample.dtype}, "
                    f"the model expects {list(d['shape'])} {np.dtype(d['dtype'])}")
            interp.set_tensor(d["index"], sample)
        interp.invoke()
        for j, d in enumerate(out_details):
            results[j].append(interp.get_tensor(d["index"]).copy())
    return [np.stack(r) for r in results]
