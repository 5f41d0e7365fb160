"""Run converted models with LiteRT: outputs on a dataset (dequantized to float) and host latency."""

from __future__ import annotations

import time
from typing import Callable

import numpy as np

from edgekit.extras import require

from .errors import ConversionError
from .hints import GENERIC_LOAD, hint_for
from .metrics import percentile_ms


def _interpreter(model: bytes, threads: int = 1, mode: str = "this mode"):
    mod = require("ai_edge_litert.interpreter", "agent")
    try:
        interp = mod.Interpreter(model_content=model, num_threads=threads)
        interp.allocate_tensors()
    except (ValueError, RuntimeError) as exc:
        text = " ".join(str(exc).split())
        raise ConversionError(f"LiteRT cannot load the converted model: {text[:400]}",
                              hint=hint_for(str(exc), mode, GENERIC_LOAD)) from exc
    return interp


def quantize_input(x: np.ndarray, detail: dict) -> np.ndarray:
    dtype = np.dtype(detail["dtype"])
    if dtype.kind == "f":
        return x.astype(dtype)
    scale, zp = detail["quantization"]
    if not scale:
        return x.astype(dtype)
    info = np.iinfo(dtype)
    return np.clip(np.round(x / scale + zp), info.min, info.max).astype(dtype)


def dequantize_output(y: np.ndarray, detail: dict) -> np.ndarray:
    if np.dtype(detail["dtype"]).kind == "f":
        return y.astype(np.float32)
    scale, zp = detail["quantization"]
    if not scale:
        return y.astype(np.float32)
    return ((y.astype(np.float32) - zp) * scale).astype(np.float32)


def align(details: list[dict], arrays: list[np.ndarray], names: list[str] | None) -> list[np.ndarray]:
    """Order ``arrays`` (given in the source model's input order, named ``names``) like the TFLite inputs.

    TFLite names inputs ``serving_default_<name>:0`` or ``<name>``; when every detail matches exactly one name the
    arrays are reordered, otherwise the order is kept (single-input models, or names the converter rewrote).
    """
    if len(details) != len(arrays):
        raise ConversionError(f"converted model has {len(details)} inputs, data has {len(arrays)}")
    if not names or len(names) < 2:
        return list(arrays)
    order = []
    for d in details:
        tname = d["name"].split(":")[0]
        hits = [i for i, n in enumerate(names) if tname == n or tname.endswith("_" + n)]
        if len(hits) != 1:
            return list(arrays)
        order.append(hits[0])
    return [arrays[i] for i in order] if sorted(order) == list(range(len(names))) else list(arrays)


def run_float_io(model: bytes, arrays: list[np.ndarray], *, threads: int = 1, names: list[str] | None = None,
                 progress: Callable[[int], None] | None = None) -> list[np.ndarray]:
    """Feed float samples one at a time (quantizing integer inputs), return float outputs [N, ...] per output."""
    interp = _interpreter(model, threads)
    ins, outs = interp.get_input_details(), interp.get_output_details()
    arrays = align(ins, arrays, names)
    results: list[list[np.ndarray]] = [[] for _ in outs]
    for k in range(arrays[0].shape[0]):
        for d, a in zip(ins, arrays):
            interp.set_tensor(d["index"], quantize_input(a[k:k + 1].reshape(d["shape"]), d))
        interp.invoke()
        for j, d in enumerate(outs):
            results[j].append(dequantize_output(interp.get_tensor(d["index"]), d)[0])
        if progress:
            progress(1)
    return [np.stack(r) for r in results]


def latency(model: bytes, arrays: list[np.ndarray], *, threads: int = 1, runs: int = 50, warmup: int = 3,
            names: list[str] | None = None) -> dict:
    """Median/p95 wall time of ``invoke()`` on one real sample, after ``warmup`` runs."""
    interp = _interpreter(model, threads)
    details = interp.get_input_details()
    for d, a in zip(details, align(details, arrays, names)):
        interp.set_tensor(d["index"], quantize_input(a[:1].reshape(d["shape"]), d))
    for _ in range(warmup):
        interp.invoke()
    times = []
    for _ in range(max(runs, 1)):
        t0 = time.perf_counter()
        interp.invoke()
        times.append(time.perf_counter() - t0)
    return {"threads": threads, "runs": runs, **percentile_ms(times)}
