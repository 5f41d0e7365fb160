"""ONNX payloads in bundles (target ``gpu``): a light format check, tensor specs and golden outputs.

The format check is pure (an ONNX file is a protobuf ``ModelProto``: its first field is ``ir_version``, tag 0x08,
and it carries a graph, field 7). Tensor specs and golden outputs come from onnxruntime, imported only here and only
when an ONNX bundle is created (``edgekit[agent-onnx]`` or ``[convert]``); reading and verifying an ONNX bundle
needs neither.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from .errors import NotTFLiteError, UsageError
from .extras import require

ONNX_MODEL_FILE = "model.onnx"
# golden tolerance of an ONNX (gpu) payload: outputs are computed by onnxruntime on the CPU in fp32 and checked on the
# device's GPU provider, where TensorRT runs in fp16
GPU_TOLERANCE = (1e-2, 1e-2)
_GRAPH_TAG = 0x3A  # field 7 (graph), wire type 2

_DTYPES = {
    "tensor(float)": "float32", "tensor(float16)": "float16", "tensor(double)": "float64",
    "tensor(int8)": "int8", "tensor(uint8)": "uint8", "tensor(int16)": "int16", "tensor(int32)": "int32",
    "tensor(int64)": "int64", "tensor(bool)": "bool",
}


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    value, shift = 0, 0
    while pos < len(data) and shift < 64:
        b = data[pos]
        value |= (b & 0x7F) << shift
        pos += 1
        if not b & 0x80:
            return value, pos
        shift += 7
    raise ValueError("truncated varint")


def is_onnx(data: bytes) -> bool:
    """Whether ``data`` is shaped like an ONNX ModelProto: the top-level protobuf fields parse to the end, the first
    is ``ir_version`` and one is a graph. Pure; does not validate the graph (onnxruntime does, when loading)."""
    if len(data) < 4 or data[0] != 0x08:
        return False
    pos, graph = 0, False
    try:
        while pos < len(data):
            tag, pos = _varint(data, pos)
            wire = tag & 7
            if tag == _GRAPH_TAG:
                graph = True
            if wire == 0:
                _, pos = _varint(data, pos)
            elif wire == 2:
                n, pos = _varint(data, pos)
                pos += n
            elif wire == 1:
                pos += 8
            elif wire == 5:
                pos += 4
            else:
                return False
            if tag >> 3 == 0:
                return False
    except ValueError:
        return False
    return pos == len(data) and graph


def check_onnx(data: bytes) -> None:
    if not is_onnx(data):
        raise NotTFLiteError("the gpu payload is not an ONNX model (no ModelProto with a graph)")


def _session(model: bytes):
    ort = require("onnxruntime", "agent-onnx")
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    try:
        return ort.InferenceSession(model, opts, providers=["CPUExecutionProvider"])
    except Exception as exc:  # noqa: BLE001 - onnxruntime's own exception types
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
        raise UsageError(f"onnxruntime cannot load the ONNX model: {first}") from exc


def _spec(arg) -> dict[str, Any]:
    sig = [int(d) if isinstance(d, int) and d > 0 else -1 for d in arg.shape]
    return {"name": arg.name, "dtype": _DTYPES.get(arg.type, "float32"), "shape": [d if d > 0 else 1 for d in sig],
            "shape_signature": sig, "quantization": {"scale": [], "zero_point": [], "quantized_dimension": 0}}


def tensor_specs(model: bytes) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(inputs, outputs) in the manifest's form; a symbolic dimension (the batch) runs as 1."""
    sess = _session(model)
    return [_spec(a) for a in sess.get_inputs()], [_spec(a) for a in sess.get_outputs()]


def run_model(model: bytes, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
    """Golden outputs: every sample of ``inputs`` ([count, *shape]) through onnxruntime on the CPU, one at a time."""
    sess = _session(model)
    names = [a.name for a in sess.get_inputs()]
    if len(names) != len(inputs):
        raise UsageError(f"model has {len(names)} inputs but {len(inputs)} golden arrays were given")
    results: list[list[np.ndarray]] = []
    for k in range(inputs[0].shape[0]):
        outs = sess.run(None, {n: a[k] for n, a in zip(names, inputs)})
        if not results:
            results = [[] for _ in outs]
        for j, o in enumerate(outs):
            results[j].append(np.asarray(o))
    return [np.stack(r) for r in results]
