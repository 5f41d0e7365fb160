"""Read a TFLite flatbuffer without TensorFlow: tensors, operators, op histogram, parameter sizes.

A small, bounds-checked flatbuffer reader (stdlib ``struct`` only) over the fields of ``schema.fbs`` that edgekit
needs. Anything that does not parse raises :class:`~edgekit.errors.NotTFLiteError`.
"""

from __future__ import annotations

import struct
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from .errors import NotTFLiteError
from .tflite_schema import ACTIVATIONS, BUILTIN_OPERATORS, BUILTIN_OPTIONS, TENSOR_TYPES

FILE_IDENTIFIER = b"TFL3"

NUMPY_DTYPES = {
    "FLOAT32": "float32", "FLOAT16": "float16", "INT32": "int32", "UINT8": "uint8", "INT64": "int64",
    "STRING": "object", "BOOL": "bool", "INT16": "int16", "COMPLEX64": "complex64", "INT8": "int8",
    "FLOAT64": "float64", "COMPLEX128": "complex128", "UINT64": "uint64", "UINT32": "uint32", "UINT16": "uint16",
}


class Table:
    """A flatbuffer table at ``pos`` in ``buf``; field access by index, with defaults for absent fields."""

    __slots__ = ("buf", "pos", "_vt", "_vt_len")

    def __init__(self, buf: bytes, pos: int):
        self.buf = buf
        self.pos = pos
        vt = pos - _unpack("<i", buf, pos)
        self._vt = vt
        self._vt_len = _unpack("<H", buf, vt)
        if self._vt_len < 4 or vt + self._vt_len > len(buf):
            raise NotTFLiteError("flatbuffer vtable out of range")

    def _offset(self, index: int) -> int:
        entry = 4 + 2 * index
        if entry + 2 > self._vt_len:
            return 0
        return _unpack("<H", self.buf, self._vt + entry)

    def has(self, index: int) -> bool:
        return self._offset(index) != 0

    def scalar(self, index: int, fmt: str, default: Any = 0) -> Any:
        off = self._offset(index)
        return default if off == 0 else _unpack("<" + fmt, self.buf, self.pos + off)

    def _target(self, index: int) -> int | None:
        off = self._offset(index)
        if off == 0:
            return None
        p = self.pos + off
        return p + _unpack("<I", self.buf, p)

    def table(self, index: int) -> "Table | None":
        t = self._target(index)
        return None if t is None else Table(self.buf, t)

    def string(self, index: int, default: str = "") -> str:
        t = self._target(index)
        if t is None:
            return default
        n = _unpack("<I", self.buf, t)
        raw = _slice(self.buf, t + 4, n)
        return raw.decode("utf-8", errors="replace")

    def vector_len(self, index: int) -> int:
        t = self._target(index)
        return 0 if t is None else _unpack("<I", self.buf, t)

    def scalars(self, index: int, fmt: str) -> list:
        t = self._target(index)
        if t is None:
            return []
        n = _unpack("<I", self.buf, t)
        size = struct.calcsize("<" + fmt)
        raw = _slice(self.buf, t + 4, n * size)
        return list(struct.unpack(f"<{n}{fmt}", raw))

    def tables(self, index: int) -> list["Table"]:
        t = self._target(index)
        if t is None:
            return []
        n = _unpack("<I", self.buf, t)
        _slice(self.buf, t + 4, 4 * n)
        out = []
        for i in range(n):
            p = t + 4 + 4 * i
            out.append(Table(self.buf, p + _unpack("<I", self.buf, p)))
        return out

    def bytes_len(self, index: int) -> int:
        return self.vector_len(index)


def _unpack(fmt: str, buf: bytes, pos: int):
    size = struct.calcsize(fmt)
    if pos < 0 or pos + size > len(buf):
        raise NotTFLiteError("flatbuffer offset out of range (truncated or not a TFLite model)")
    return struct.unpack_from(fmt, buf, pos)[0]


def _slice(buf: bytes, pos: int, n: int) -> bytes:
    if pos < 0 or n < 0 or pos + n > len(buf):
        raise NotTFLiteError("flatbuffer vector out of range (truncated or not a TFLite model)")
    return buf[pos:pos + n]


# --- the model -------------------------------------------------------------------------------------------------------


@dataclass
class TensorInfo:
    index: int
    name: str
    type: str  # schema name, e.g. INT8
    shape: list[int]
    shape_signature: list[int]
    buffer: int
    block_size: int = 0  # blockwise quantization (BlockwiseQuantization details): weights per scale along a row
    scale: list[float] = field(default_factory=list)
    zero_point: list[int] = field(default_factory=list)
    quantized_dimension: int = 0
    sparse: bool = False  # carries SparsityParameters: the buffer holds a compressed (e.g. CSR) encoding

    @property
    def dtype(self) -> str:
        """numpy dtype name (``int8``, ``float32`` ...)."""
        return NUMPY_DTYPES.get(self.type, self.type.lower())

    @property
    def is_dynamic(self) -> bool:
        return any(d < 0 for d in self.shape_signature) or any(d < 0 for d in self.shape)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name, "dtype": self.dtype, "shape": list(self.shape),
            "shape_signature": list(self.shape_signature or self.shape),
            "quantization": {"scale": list(self.scale), "zero_point": list(self.zero_point),
                             "quantized_dimension": self.quantized_dimension},
        }


@dataclass
class OpInfo:
    index: int
    opcode: str  # BuiltinOperator name, or CUSTOM:<code>
    version: int
    inputs: list[int]
    outputs: list[int]
    options_type: str  # BuiltinOptions name, or "NONE"
    options: Table | None

    def fused_activation(self) -> str | None:
        """The fused activation of ops whose options start with ``fused_activation_function`` or carry it.

        Returns the ActivationFunctionType name, or None when the op has no such option.
        """
        index = _FUSED_ACTIVATION_FIELD.get(self.options_type)
        if index is None or self.options is None:
            return None
        return ACTIVATIONS.get(self.options.scalar(index, "b", 0), "UNKNOWN")


# field index of fused_activation_function in the options tables that have one (schema.fbs)
_FUSED_ACTIVATION_FIELD = {
    "Conv2DOptions": 3, "DepthwiseConv2DOptions": 4, "Conv3DOptions": 6, "Pool2DOptions": 5,
    "FullyConnectedOptions": 0, "AddOptions": 0, "SubOptions": 0, "MulOptions": 0, "DivOptions": 0,
    "ConcatenationOptions": 1, "L2NormOptions": 0, "SVDFOptions": 1, "RNNOptions": 0,
    "SequenceRNNOptions": 1, "BidirectionalSequenceRNNOptions": 1, "LSTMOptions": 0,
    "UnidirectionalSequenceLSTMOptions": 0, "BidirectionalSequenceLSTMOptions": 0, "TransposeConvOptions": 3,
}


@dataclass
class SubgraphInfo:
    name: str
    tensors: list[TensorInfo]
    inputs: list[int]
    outputs: list[int]
    ops: list[OpInfo]


@dataclass
class ModelInfo:
    version: int
    description: str
    subgraphs: list[SubgraphInfo]
    buffer_sizes: list[int]
    size: int
    buffer_spans: list[tuple[int, int]] = field(default_factory=list, repr=False)  # (file offset, length)

    @property
    def main(self) -> SubgraphInfo:
        return self.subgraphs[0]

    @property
    def inputs(self) -> list[TensorInfo]:
        return [self.main.tensors[i] for i in self.main.inputs]

    @property
    def outputs(self) -> list[TensorInfo]:
        return [self.main.tensors[i] for i in self.main.outputs]

    def op_histogram(self) -> dict[str, int]:
        counts = Counter(op.opcode for sg in self.subgraphs for op in sg.ops)
        return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))

    @property
    def parameter_bytes(self) -> int:
        return sum(self.buffer_sizes)

    def buffer_data(self, data: bytes, index: int) -> bytes:
        """The raw bytes of buffer ``index`` of ``data`` (the flatbuffer this info was parsed from)."""
        if not 0 <= index < len(self.buffer_spans):
            raise NotTFLiteError(f"buffer {index} does not exist")
        pos, n = self.buffer_spans[index]
        return _slice(data, pos, n)

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema_version": self.version,
            "size": self.size,
            "parameter_bytes": self.parameter_bytes,
            "subgraphs": len(self.subgraphs),
            "inputs": [t.to_dict() for t in self.inputs],
            "outputs": [t.to_dict() for t in self.outputs],
            "ops": self.op_histogram(),
            "op_count": sum(len(sg.ops) for sg in self.subgraphs),
        }


def is_tflite(data: bytes) -> bool:
    return len(data) >= 8 and data[4:8] == FILE_IDENTIFIER


def inspect_tflite(data: bytes) -> ModelInfo:
    """Parse a TFLite flatbuffer. Raises NotTFLiteError for anything else, truncated or malformed."""
    if not is_tflite(data):
        raise NotTFLiteError("payload is not a TFLite flatbuffer (missing the TFL3 identifier)")
    try:
        return _parse_model(data)
    except NotTFLiteError:
        raise
    except (struct.error, IndexError, ValueError, RecursionError) as exc:
        raise NotTFLiteError(f"malformed TFLite flatbuffer: {exc}") from exc


def _block_size(q: Table | None) -> int:
    """QuantizationParameters.details (field 5) when details_type (field 4) is BlockwiseQuantization (2)."""
    if q is None or q.scalar(4, "B", 0) != 2:
        return 0
    details = q.table(5)
    return details.scalar(2, "i", 0) if details is not None else 0


def _parse_model(buf: bytes) -> ModelInfo:
    root = Table(buf, _unpack("<I", buf, 0))
    opcodes = []
    for oc in root.tables(1):
        code = max(oc.scalar(0, "b", 0), oc.scalar(3, "i", 0))
        name = BUILTIN_OPERATORS.get(code, f"UNKNOWN_{code}")
        if name == "CUSTOM":
            name = "CUSTOM:" + oc.string(1, "?")
        opcodes.append((name, oc.scalar(2, "i", 1)))
    buffer_sizes, buffer_spans = [], []
    for b in root.tables(4):
        size = b.bytes_len(0)
        start = b._target(0)
        pos = 0 if start is None else start + 4
        if size == 0 and b.has(2):
            size = b.scalar(2, "Q", 0)
            pos = b.scalar(1, "Q", 0)
        buffer_sizes.append(size)
        buffer_spans.append((pos, size))
    subgraphs = []
    for sg in root.tables(2):
        tensors = []
        for i, t in enumerate(sg.tables(0)):
            q = t.table(4)
            tensors.append(TensorInfo(
                index=i,
                name=t.string(3),
                type=TENSOR_TYPES.get(t.scalar(1, "b", 0), "UNKNOWN"),
                shape=t.scalars(0, "i"),
                shape_signature=t.scalars(7, "i"),
                buffer=t.scalar(2, "I", 0),
                block_size=_block_size(q),
                scale=q.scalars(2, "f") if q else [],
                zero_point=q.scalars(3, "q") if q else [],
                quantized_dimension=q.scalar(6, "i", 0) if q else 0,
                sparse=t.has(6),
            ))
        ops = []
        for i, op in enumerate(sg.tables(3)):
            idx = op.scalar(0, "I", 0)
            if idx >= len(opcodes):
                raise NotTFLiteError(f"operator {i} refers to missing opcode {idx}")
            name, version = opcodes[idx]
            ops.append(OpInfo(
                index=i, opcode=name, version=version,
                inputs=op.scalars(1, "i"), outputs=op.scalars(2, "i"),
                options_type=BUILTIN_OPTIONS.get(op.scalar(3, "B", 0), "NONE"),
                options=op.table(4),
            ))
        io = sg.scalars(1, "i") + sg.scalars(2, "i")
        if any(not 0 <= k < len(tensors) for k in io):
            raise NotTFLiteError("subgraph input/output refers to a missing tensor")
        subgraphs.append(SubgraphInfo(sg.string(4), tensors, sg.scalars(1, "i"), sg.scalars(2, "i"), ops))
    if not subgraphs:
        raise NotTFLiteError("TFLite model has no subgraph")
    return ModelInfo(root.scalar(0, "I", 0), root.string(3), subgraphs, buffer_sizes, len(buf), buffer_spans)


# --- weight tensors ---------------------------------------------------------------------------------------------------

# ops whose input 1 is a weight (kernel, rhs or embedding table)
WEIGHT_OPS = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "TRANSPOSE_CONV", "BATCH_MATMUL", "EMBEDDING_LOOKUP")
# ops that turn a stored constant into the weight an op reads: fp16/int4 weight-only storage, sparse encodings
STORAGE_OPS = ("DEQUANTIZE", "DENSIFY")


@dataclass(frozen=True)
class WeightTensor:
    """The weight (input 1) of one op, and the constant that stores it."""

    subgraph: int
    op: OpInfo
    tensor: TensorInfo  # the op's input as the op reads it
    stored: TensorInfo  # the constant holding the bytes: ``tensor``, or the input of the DEQUANTIZE/DENSIFY feeding it
    via: str | None  # "DEQUANTIZE" or "DENSIFY" when ``stored`` reaches the op through that op, else None
    stored_bytes: int  # size of ``stored``'s buffer

    @property
    def sparse(self) -> bool:
        """The stored buffer holds a sparse encoding (XNNPACK sparsity, read through DENSIFY)."""
        return self.via == "DENSIFY" or self.stored.sparse


def weight_tensors(info: ModelInfo, ops: tuple[str, ...] = WEIGHT_OPS, *,
                   main_only: bool = False) -> list[WeightTensor]:
    """The weight tensor of every op in ``ops``, in subgraph and graph order, following a DEQUANTIZE or DENSIFY
    that feeds it back to the constant that stores it. Ops without a weight input are left out."""
    out = []
    for s, sg in enumerate(info.subgraphs[:1] if main_only else info.subgraphs):
        producer = {t: op for op in sg.ops for t in op.outputs}
        for op in sg.ops:
            if op.opcode not in ops or len(op.inputs) < 2 or not 0 <= op.inputs[1] < len(sg.tensors):
                continue
            tensor = stored = sg.tensors[op.inputs[1]]
            src = producer.get(op.inputs[1])
            via = None
            if src is not None and src.opcode in STORAGE_OPS and src.inputs and 0 <= src.inputs[0] < len(sg.tensors):
                stored, via = sg.tensors[src.inputs[0]], src.opcode
            size = info.buffer_sizes[stored.buffer] if 0 <= stored.buffer < len(info.buffer_sizes) else 0
            out.append(WeightTensor(s, op, tensor, stored, via, size))
    return out
