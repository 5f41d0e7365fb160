"""Edge TPU precheck without the compiler: which ops map to the Edge TPU, which fall back to the CPU, and why.

Reads the flatbuffer with :func:`edgekit.tflite_model.inspect_tflite` (no TensorFlow). Each op is checked against the
general requirements and the op table in :mod:`converters.edgetpu_ops`; the compiler cuts the graph once, at the
first op it cannot map, and runs that op and every op after it on the CPU — so we predict the cut the same way.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Any, Callable

from edgekit.tflite_model import ModelInfo, OpInfo, SubgraphInfo, Table, TensorInfo, inspect_tflite

from . import edgetpu_ops as table


@dataclass
class OpVerdict:
    index: int
    opcode: str
    mapped: bool  # True: the op itself meets every rule
    reasons: list[str] = field(default_factory=list)
    placement: str = "edgetpu"  # edgetpu | cpu
    outputs: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"index": self.index, "op": self.opcode, "mapped": self.mapped, "placement": self.placement,
                "reasons": self.reasons, "outputs": self.outputs}


@dataclass
class Precheck:
    ops: list[OpVerdict]
    first_cut: int | None  # index of the first op that cannot be mapped (None: everything maps)
    parameter_bytes: int  # constant data used by ops placed on the Edge TPU
    warnings: list[str] = field(default_factory=list)
    subgraphs: int = 1

    @property
    def cpu_ops(self) -> list[OpVerdict]:
        return [v for v in self.ops if v.placement == "cpu"]

    @property
    def all_mapped(self) -> bool:
        return all(v.placement == "edgetpu" for v in self.ops)

    def histogram(self) -> dict[str, dict[str, int]]:
        out: dict[str, dict[str, int]] = {}
        for v in self.ops:
            out.setdefault(v.opcode, {"edgetpu": 0, "cpu": 0})[v.placement] += 1
        return dict(sorted(out.items()))

    def to_dict(self) -> dict[str, Any]:
        cut = self.ops[self.first_cut] if self.first_cut is not None else None
        return {
            "all_mapped": self.all_mapped,
            "edgetpu_ops": sum(v.placement == "edgetpu" for v in self.ops),
            "cpu_ops": len(self.cpu_ops),
            "first_cut": None if cut is None else {"index": cut.index, "op": cut.opcode, "reasons": cut.reasons},
            "parameter_bytes": self.parameter_bytes,
            "on_chip_bytes": table.ON_CHIP_PARAMETER_BYTES,
            "parameters_fit_on_chip": self.parameter_bytes <= table.ON_CHIP_PARAMETER_BYTES,
            "histogram": self.histogram(),
            "ops": [v.to_dict() for v in self.ops],
            "warnings": self.warnings,
            "op_table": {"source": table.SOURCE_URL, "compiler_version": table.COMPILER_VERSION},
        }


class _Ctx:
    """What rule functions need: the model bytes (for constant values), the subgraph and the tensor sizes."""

    def __init__(self, data: bytes, info: ModelInfo):
        self.data = data
        self.info = info
        self.sg: SubgraphInfo = info.main
        root = Table(data, struct.unpack_from("<I", data, 0)[0])
        self._buffers = root.tables(4)
        # weights stored as float16 (or int8, dynamic range) are constants behind a DEQUANTIZE op: still weights,
        # whose leading dimension is output channels, not a batch
        self._dequantized_weights = {o for op in self.sg.ops if op.opcode == "DEQUANTIZE"
                                     and op.inputs and op.inputs[0] >= 0
                                     and self.is_constant(self.sg.tensors[op.inputs[0]]) for o in op.outputs}

    def is_dequantized_weight(self, i: int) -> bool:
        return i in self._dequantized_weights

    def tensor(self, i: int) -> TensorInfo:
        return self.sg.tensors[i]

    def is_constant(self, t: TensorInfo) -> bool:
        return 0 < t.buffer < len(self.info.buffer_sizes) and self.info.buffer_sizes[t.buffer] > 0

    def values(self, t: TensorInfo) -> list[int] | None:
        """Small int32 constants (axes, paddings); None when not constant or stored outside the flatbuffer."""
        if not self.is_constant(t) or t.type not in ("INT32", "INT64"):
            return None
        raw = bytes(self._buffers[t.buffer].scalars(0, "B"))
        fmt = "<%di" % (len(raw) // 4) if t.type == "INT32" else "<%dq" % (len(raw) // 8)
        return list(struct.unpack(fmt, raw)) if raw else None


def _rank_excess(shape: list[int]) -> bool:
    return len(shape) > 3 and any(d > 1 for d in shape[:-3])


def general_reasons(op: OpInfo, ctx: _Ctx) -> list[str]:
    reasons = []
    for i in op.inputs + op.outputs:
        if i < 0:
            continue
        t = ctx.tensor(i)
        if t.is_dynamic:
            reasons.append(f"dynamic shape: tensor '{t.name}' has shape signature {t.shape_signature}")
        if ctx.is_dequantized_weight(i):  # its float32 dtype is the DEQUANTIZE op's reason; it has no batch
            continue
        if ctx.is_constant(t):
            if t.dtype not in table.CONSTANT_DTYPES:
                reasons.append(f"dtype: constant '{t.name}' is {t.dtype} (needs int8/uint8 weights, int32 biases)")
            continue
        if t.dtype not in table.ACTIVATION_DTYPES and not (t.dtype == "int32" and op.opcode in _INT32_OK):
            reasons.append(f"dtype: tensor '{t.name}' is {t.dtype} (the Edge TPU computes on int8/uint8 only)")
        if _rank_excess(t.shape):
            if t.shape and t.shape[0] > 1 and not any(d > 1 for d in t.shape[1:-3]):
                reasons.append(f"batch: tensor '{t.name}' has batch {t.shape[0]} {t.shape} (the Edge TPU runs batch 1)")
            else:
                reasons.append(f"rank: tensor '{t.name}' has shape {t.shape}; only the 3 innermost dimensions "
                               f"may exceed 1")
    act = op.fused_activation()
    if act is not None and act not in table.ALLOWED_FUSED_ACTIVATIONS:
        reasons.append(f"fused activation {act} is not supported on the Edge TPU")
    return list(dict.fromkeys(reasons))


_INT32_OK = frozenset()


# --- op-specific rules (named in edgetpu_ops.OPS[...].checks) -------------------------------------------------------


def _no_fused_activation(op, ctx):
    act = op.fused_activation()
    return [] if act in (None, "NONE") else [f"{op.opcode} has fused activation {act}; no fused activation allowed"]


def _same_dilation(op, ctx):
    if op.options is None:
        return []
    w_idx, h_idx = (4, 5) if op.opcode == "CONV_2D" else (5, 6)
    dw, dh = op.options.scalar(w_idx, "i", 1), op.options.scalar(h_idx, "i", 1)
    return [] if dw == dh else [f"{op.opcode} dilation differs in x ({dw}) and y ({dh})"]


def _fc_default_format(op, ctx):
    fmt = op.options.scalar(1, "b", 0) if op.options is not None else 0
    return [] if fmt == 0 else ["FULLY_CONNECTED weights are not in the default format"]


def _output_one_dimensional(op, ctx):
    shape = ctx.tensor(op.outputs[0]).shape
    return [] if sum(d > 1 for d in shape) <= 1 else [f"{op.opcode} output {shape} is not one-dimensional"]


def _softmax_1d(op, ctx):
    shape = ctx.tensor(op.inputs[0]).shape
    n = 1
    for d in shape:
        n *= max(d, 1)
    out = []
    if sum(d > 1 for d in shape) > 1:
        out.append(f"SOFTMAX input {shape} is not 1-D")
    if n > table.SOFTMAX_MAX_ELEMENTS:
        out.append(f"SOFTMAX input has {n} elements (max {table.SOFTMAX_MAX_ELEMENTS})")
    return out


def _axes(op, ctx, input_index):
    if len(op.inputs) <= input_index or op.inputs[input_index] < 0:
        return None
    return ctx.values(ctx.tensor(op.inputs[input_index]))


def _reduce_not_batch(op, ctx):
    axes = _axes(op, ctx, 1)
    rank = len(ctx.tensor(op.inputs[0]).shape)
    if axes is None:
        return [f"{op.opcode} axes are not a compile-time constant"]
    axes = [a % rank for a in axes] if rank else axes
    return [f"{op.opcode} reduces over the batch dimension"] if 0 in axes and rank > 1 else []


def _reduce_xy_only(op, ctx):
    out = _reduce_not_batch(op, ctx)
    axes = _axes(op, ctx, 1)
    rank = len(ctx.tensor(op.inputs[0]).shape)
    if axes is not None and rank == 4 and any(a % 4 == 3 for a in axes):
        out.append(f"{op.opcode} reduces along the channel dimension (only x and/or y are supported)")
    return out


def _pad_not_batch(op, ctx):
    pads = _axes(op, ctx, 1)
    if pads is None:
        return ["PAD paddings are not a compile-time constant"]
    return ["PAD pads the batch dimension"] if len(pads) >= 2 and (pads[0] or pads[1]) else []


def _pack_not_batch(op, ctx):
    axis = op.options.scalar(1, "i", 0) if op.options is not None else 0
    return ["PACK packs along the batch dimension"] if axis == 0 else []


def _split_not_batch(op, ctx):
    axes = _axes(op, ctx, 0)
    return ["SPLIT splits the batch dimension"] if axes and axes[0] == 0 else []


def _strided_slice_unit(op, ctx):
    out = []
    strides = _axes(op, ctx, 3)
    if strides is None or any(s != 1 for s in strides):
        out.append(f"STRIDED_SLICE strides {strides} are not all 1")
    if op.options is not None and (op.options.scalar(2, "i", 0) or op.options.scalar(3, "i", 0)):
        out.append("STRIDED_SLICE uses an ellipsis or new-axis mask")
    return out


def _concat_constant(op, ctx):
    consts = [ctx.tensor(i) for i in op.inputs if i >= 0 and ctx.is_constant(ctx.tensor(i))]
    if not consts:
        return []
    if len(op.inputs) != 2:
        return ["CONCATENATION with a constant input must have exactly 2 inputs"]
    return []


RULES: dict[str, Callable[[OpInfo, _Ctx], list[str]]] = {
    "no_fused_activation": _no_fused_activation, "same_dilation": _same_dilation,
    "fc_default_format": _fc_default_format, "output_one_dimensional": _output_one_dimensional,
    "softmax_1d": _softmax_1d, "reduce_not_batch": _reduce_not_batch, "reduce_xy_only": _reduce_xy_only,
    "pad_not_batch": _pad_not_batch, "pack_not_batch": _pack_not_batch, "split_not_batch": _split_not_batch,
    "strided_slice_unit": _strided_slice_unit, "concat_constant": _concat_constant,
}


def op_reasons(op: OpInfo, ctx: _Ctx) -> list[str]:
    rule = table.OPS.get(op.opcode)
    if rule is None:
        return [f"op {op.opcode} is not in the Edge TPU op table"]
    reasons = []
    for check in rule.checks:
        reasons += RULES[check](op, ctx)
    return reasons


def _is_boundary(op: OpInfo, ctx: _Ctx) -> bool:
    """A float→int QUANTIZE on a model input or int→float DEQUANTIZE on a model output: CPU, but no cut."""
    if op.opcode not in table.BOUNDARY_OPS:
        return False
    if op.opcode == "QUANTIZE":
        return op.inputs[0] in ctx.sg.inputs and ctx.tensor(op.inputs[0]).dtype == "float32"
    return op.outputs[0] in ctx.sg.outputs and ctx.tensor(op.outputs[0]).dtype == "float32"


def _float_island(op: OpInfo, ctx: _Ctx) -> list[str]:
    """Name why a mid-graph DEQUANTIZE exists: the consumer that the converter had to keep in float."""
    out = []
    for c in ctx.sg.ops:
        if op.outputs and op.outputs[0] in c.inputs:
            why = op_reasons(c, ctx) or [r for r in general_reasons(c, ctx) if not r.startswith("dtype")]
            detail = f": {why[0]}" if why else ""
            out.append(f"dequantizes to float32 for {c.opcode} (op {c.index}){detail}")
    return out


def precheck(data: bytes) -> Precheck:
    """Predict Edge TPU placement for a .tflite flatbuffer (pure: bytes in, verdicts out)."""
    info = inspect_tflite(data)
    ctx = _Ctx(data, info)
    verdicts: list[OpVerdict] = []
    warnings = []
    if len(info.subgraphs) > 1:
        warnings.append(f"the model has {len(info.subgraphs)} subgraphs; only the first is compiled for the Edge TPU")
    first_cut = None
    for op in ctx.sg.ops:
        outs = [ctx.tensor(i).name for i in op.outputs if i >= 0]
        if _is_boundary(op, ctx):
            verdicts.append(OpVerdict(op.index, op.opcode, False, ["float model boundary: runs on the CPU"], "cpu",
                                      outs))
            continue
        reasons = op_reasons(op, ctx) + general_reasons(op, ctx)
        if op.opcode == "DEQUANTIZE" and reasons:
            reasons = _float_island(op, ctx) + reasons
        mapped = not reasons
        if not mapped and first_cut is None:
            first_cut = op.index
        placement = "edgetpu" if mapped and first_cut is None else "cpu"
        if mapped and placement == "cpu":
            reasons = [f"after the first cut at op {first_cut} ({ctx.sg.ops[first_cut].opcode}): "
                       f"the compiler partitions the graph only once"]
        verdicts.append(OpVerdict(op.index, op.opcode, mapped, reasons, placement, outs))
    params = 0
    seen = set()
    for v, op in zip(verdicts, ctx.sg.ops):
        if v.placement != "edgetpu":
            continue
        for i in op.inputs:
            if i >= 0 and i not in seen and ctx.is_constant(ctx.tensor(i)):
                seen.add(i)
                params += info.buffer_sizes[ctx.tensor(i).buffer]
    if params > table.ON_CHIP_PARAMETER_BYTES:
        warnings.append(f"parameters ({params} bytes) exceed the ~8 MiB on-chip cache; the rest streams from host "
                        f"memory on every inference (slower)")
    return Precheck(verdicts, first_cut, params, warnings, len(info.subgraphs))
