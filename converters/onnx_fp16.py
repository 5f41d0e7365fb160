"""The ``gpu`` payload's precision: the ONNX source with float16 weights and activations and float32 inputs and
outputs, made with onnxruntime's own converter (``onnxruntime.transformers.float16``, shipped in the onnxruntime
wheel the ``convert`` extra already installs), then checked against the float32 source in onnxruntime.

float32 I/O keeps the device's API and the manifest's tensor specs the same as the source's; onnxruntime inserts the
casts at the edges. Ops with no float16 kernel on an execution provider run in float32 there (onnxruntime's cast
insertion), so the same file runs on TensorRT, CUDA and, more slowly, the CPU.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from .errors import ModelLoadError


def to_fp16(onnx_bytes: bytes) -> bytes:
    """float32 ONNX → float16 weights and activations with float32 I/O (one-line error if the graph refuses)."""
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    try:
        model = onnx.load_from_string(onnx_bytes)
        half = convert_float_to_float16(model, keep_io_types=True)
        _sort_nodes(half.graph)  # the converter appends its I/O casts after the nodes that read them
        onnx.checker.check_model(half)
    except Exception as exc:  # noqa: BLE001 - onnx raises ValidationError, protobuf errors, ValueError ...
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ModelLoadError(f"cannot convert the ONNX model to float16 for the gpu payload: {first}",
                             hint="leave gpu out of --target, or export the model with standard ONNX ops") from exc
    return half.SerializeToString()


def _sort_nodes(graph: Any) -> None:
    """Reorder ``graph.node`` topologically (stable: a node keeps its place unless an input is made later), as the
    ONNX checker and other runtimes require. Raises ValueError for a cycle or an input nothing produces."""
    known = {i.name for i in graph.input} | {t.name for t in graph.initializer} | {""}
    pending = list(range(len(graph.node)))
    ordered: list[int] = []
    while pending:
        ready = [k for k in pending if all(i in known for i in graph.node[k].input)]
        if not ready:
            first = graph.node[pending[0]]
            raise ValueError(f"node {first.name or first.op_type} reads a tensor nothing produces")
        for k in ready:
            known.update(graph.node[k].output)
        ordered.extend(ready)
        taken = set(ready)
        pending = [k for k in pending if k not in taken]
    copies = [type(graph.node[k])() for k in ordered]
    for c, k in zip(copies, ordered):
        c.CopyFrom(graph.node[k])
    del graph.node[:]
    graph.node.extend(copies)


def agreement(fp32: bytes, fp16: bytes, inputs: Sequence[np.ndarray]) -> dict[str, Any]:
    """Run both models in onnxruntime (CPU) on the same batch-1 samples: the largest absolute difference of any
    output and the share of samples whose top-1 class agrees (for classifiers; None when outputs are scalar)."""
    from edgekit.onnx_model import run_model

    a, b = run_model(fp32, list(inputs)), run_model(fp16, list(inputs))
    max_abs = max(float(np.max(np.abs(np.asarray(x, np.float64) - np.asarray(y, np.float64)))) for x, y in zip(a, b))
    first_a, first_b = np.asarray(a[0]), np.asarray(b[0])
    top1 = None
    if first_a.ndim >= 2 and first_a.shape[-1] > 1:
        top1 = float(np.mean(first_a.reshape(len(first_a), -1).argmax(-1) ==
                             first_b.reshape(len(first_b), -1).argmax(-1)))
    return {"max_abs_diff": max_abs, "top1_agreement": top1, "samples": int(len(first_a))}
