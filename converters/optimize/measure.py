"""What an optimization bought, read from the written ``.tflite`` with edgekit's own flatbuffer reader.

Per weight layer (CONV_2D, DEPTHWISE_CONV_2D, FULLY_CONNECTED): the weight tensor's type, the sparsity achieved
(fraction of zero weights: quantized values equal to the zero point), the unique weights (per tensor, and the
largest count in one output channel, which is what clustering bounds after per-channel int8), and whether the
buffer holds a sparse encoding (XNNPACK sparsity, DENSIFY). Plus bytes raw and gzip-compressed. Pure numpy.
"""

from __future__ import annotations

import gzip
from typing import Any

import numpy as np

from edgekit.tflite_model import ModelInfo, TensorInfo, inspect_tflite, weight_tensors

WEIGHT_OPS = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED")
NP_TYPES = {"FLOAT32": np.float32, "FLOAT16": np.float16, "INT8": np.int8, "UINT8": np.uint8, "INT16": np.int16,
            "INT32": np.int32}
GZIP_LEVEL = 9


def gzip_size(data: bytes) -> int:
    """Bytes over the wire: gzip level 9, no timestamp (the same input gives the same size)."""
    return len(gzip.compress(data, compresslevel=GZIP_LEVEL, mtime=0))


def sizes(data: bytes) -> dict[str, int]:
    return {"bytes": len(data), "gzip_bytes": gzip_size(data)}


def _int4(raw: bytes, count: int) -> np.ndarray:
    """Unpack two's-complement int4 values, two per byte, low nibble first."""
    b = np.frombuffer(raw, np.uint8)
    lo = (b & 0x0F).astype(np.int8)
    hi = (b >> 4).astype(np.int8)
    vals = np.stack([lo, hi], axis=1).reshape(-1)[:count]
    return np.where(vals > 7, vals - 16, vals).astype(np.int8)


def tensor_values(data: bytes, info: ModelInfo, t: TensorInfo) -> np.ndarray | None:
    """A constant tensor's stored values (flattened), or None when it has no buffer."""
    raw = info.buffer_data(data, t.buffer) if t.buffer else b""
    if not raw:
        return None
    if t.type == "INT4":
        return _int4(raw, int(np.prod(t.shape)))
    dtype = NP_TYPES.get(t.type)
    if dtype is None:
        return None
    return np.frombuffer(raw, dtype)


def layer_weights(data: bytes) -> list[dict[str, Any]]:
    """One row per weight op of the main subgraph, in graph order."""
    info = inspect_tflite(data)
    rows = []
    for w in weight_tensors(info, WEIGHT_OPS, main_only=True):
        t, src = w.tensor, w.stored
        size = int(np.prod(t.shape)) if t.shape else 0
        values = tensor_values(data, info, src)
        if values is None:
            continue
        encoding = "sparse" if w.sparse else "dense"
        row: dict[str, Any] = {"op": w.op.opcode, "index": w.op.index, "tensor": t.name, "type": src.type,
                               "shape": list(t.shape), "params": size, "encoding": encoding,
                               "stored_bytes": w.stored_bytes}
        if encoding == "sparse":
            nonzero = int(np.count_nonzero(values))
            row["sparsity"] = round(1.0 - nonzero / size, 6) if size else 0.0
            row["unique"] = int(len(np.unique(values[values != 0]))) + (1 if nonzero < size else 0)
            row["max_unique_per_channel"] = None
        else:
            zero = src.zero_point[0] if (src.zero_point and src.type in ("INT8", "UINT8", "INT16", "INT4")) else 0
            zps = np.asarray(src.zero_point) if len(src.zero_point) > 1 else None
            values = values[:size]
            row["sparsity"] = round(_zero_fraction(values, t, zero, zps, src.quantized_dimension), 6)
            row["unique"] = int(len(np.unique(values)))
            row["max_unique_per_channel"] = _max_unique_per_channel(values, t, w.op.opcode)
        rows.append(row)
    return rows


def _channels(values: np.ndarray, t: TensorInfo, opcode: str) -> np.ndarray:
    """[channels, -1]: output channels are the first axis for CONV_2D/FULLY_CONNECTED, the last for depthwise."""
    shaped = values.reshape(t.shape)
    if opcode == "DEPTHWISE_CONV_2D":
        return shaped.reshape(-1, shaped.shape[-1]).T
    return shaped.reshape(shaped.shape[0], -1)


def _zero_fraction(values: np.ndarray, t: TensorInfo, zero: int, zps: np.ndarray | None, axis: int = 0) -> float:
    """The fraction of stored values equal to their zero point: one per tensor, or one per channel along ``axis``
    (the tensor's quantized_dimension) when the zero points differ between channels."""
    if values.size == 0:
        return 0.0
    if zps is not None and t.shape and 0 <= axis < len(t.shape) and len(zps) == t.shape[axis] \
            and values.size == int(np.prod(t.shape)):
        shape = [1] * len(t.shape)
        shape[axis] = len(zps)
        return float(np.mean(values.reshape(t.shape) == zps.reshape(shape)))
    return float(np.mean(values == zero))


def _max_unique_per_channel(values: np.ndarray, t: TensorInfo, opcode: str) -> int | None:
    if len(t.shape) < 2:
        return None
    per = _channels(values, t, opcode)
    return int(max(len(np.unique(row)) for row in per))


def summarize(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Whole-model figures over the weight layers: total params, overall sparsity, the largest unique count."""
    params = sum(r["params"] for r in rows)
    zeros = sum(r["sparsity"] * r["params"] for r in rows)
    return {"weight_params": params, "sparsity": round(zeros / params, 6) if params else 0.0,
            "max_unique": max((r["unique"] for r in rows), default=0),
            "types": sorted({r["type"] for r in rows})}


def keras_layers(model) -> list[dict[str, Any]]:
    """Sparsity and unique values of each kernel in a (tf_)keras model, before conversion (recipe by recipe)."""
    rows = []
    for layer in _flat_layers(model):
        kernel = getattr(layer, "kernel", None)
        if kernel is None:
            kernel = getattr(layer, "depthwise_kernel", None)
        if kernel is None:
            continue
        w = np.asarray(kernel)
        rows.append({"layer": layer.name, "class": type(layer).__name__, "params": int(w.size),
                     "sparsity": round(float(np.mean(w == 0)), 6), "unique": int(len(np.unique(w)))})
    return rows


def _flat_layers(model):
    for layer in getattr(model, "layers", []):
        if hasattr(layer, "layers") and getattr(layer, "layers"):
            yield from _flat_layers(layer)
        else:
            yield layer
