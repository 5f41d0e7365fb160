"""int4 / mixed int4-int8 weights on a converted float .tflite, with Google's ai-edge-quantizer (AEQ).

The recipe (:class:`Int4Options`) says which ops get int4 weights — FULLY_CONNECTED and CONV_2D can; AEQ has no
int4 DEPTHWISE_CONV_2D, so depthwise weights stay int8 — optionally only the ops whose output tensor name matches a
regex (Keras layer names appear in those names), optionally blockwise (FULLY_CONNECTED, dynamic activations). Every
other op with weights gets int8 weights (``others="int8"``, the mixed scheme) or stays float (``others="float"``).

Activations are either ``dynamic`` (float in the file, quantized at run time by the kernel: XNNPACK runs int4
FULLY_CONNECTED this way, int4 CONV_2D falls back to a slower builtin kernel) or ``int8`` (static, calibrated on
sample data: a full-integer model comparable with plain int8 PTQ, with float I/O).

:func:`weight_types` reads the result back with edgekit's own flatbuffer reader (no TensorFlow, no AEQ) and reports
the type of every op's weight tensor, so callers and tests see what was written, not what was asked for.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgekit.errors import NotTFLiteError
from edgekit.tflite_model import WEIGHT_OPS, inspect_tflite, weight_tensors

from ..errors import CalibrationError, ConversionError, OptionError

INT4_OPS = ("FULLY_CONNECTED", "CONV_2D")
INT8_ONLY_OPS = ("DEPTHWISE_CONV_2D",)
BLOCK_SIZES = (32, 64, 128, 256)
_OP_ALIASES = {"fc": "FULLY_CONNECTED", "dense": "FULLY_CONNECTED", "fully_connected": "FULLY_CONNECTED",
               "conv": "CONV_2D", "conv2d": "CONV_2D", "conv_2d": "CONV_2D",
               "depthwise": "DEPTHWISE_CONV_2D", "depthwise_conv_2d": "DEPTHWISE_CONV_2D"}
_HINT = "int4 takes fc and/or conv, e.g. int4:fc+conv:block=32:layers=dense:act=int8:others=float"


@dataclass(frozen=True)
class Int4Options:
    """What gets int4: ``ops`` (TFLite op names), ``layers`` (regex on op output names), blockwise ``block_size``."""

    ops: tuple[str, ...] = ("FULLY_CONNECTED",)
    layers: str | None = None
    block_size: int | None = None
    activations: str = "dynamic"  # dynamic | int8
    others: str = "int8"  # int8 | float: the weights of every op that does not get int4

    def __post_init__(self):
        ops = tuple(dict.fromkeys(_OP_ALIASES.get(o.lower(), o.upper()) for o in self.ops))
        object.__setattr__(self, "ops", ops)
        self.validate()

    def validate(self) -> None:
        if not self.ops:
            raise OptionError("int4 needs at least one op to quantize", hint=_HINT)
        for op in self.ops:
            if op in INT8_ONLY_OPS:
                raise OptionError(f"{op} cannot take int4 weights (ai-edge-quantizer has no int4 kernel config for "
                                  "it); it stays int8", hint="ask int4 for fc and/or conv only")
            if op not in INT4_OPS:
                raise OptionError(f"unknown int4 op '{op}'", hint=_HINT)
        if self.layers is not None:
            try:
                re.compile(self.layers)
            except re.error as exc:
                raise OptionError(f"int4 layers regex '{self.layers}' is invalid: {exc}", hint=_HINT) from exc
        if self.activations not in ("dynamic", "int8"):
            raise OptionError(f"int4 act must be dynamic or int8, not '{self.activations}'", hint=_HINT)
        if self.others not in ("int8", "float"):
            raise OptionError(f"int4 others must be int8 or float, not '{self.others}'", hint=_HINT)
        if self.activations == "int8" and self.others == "float":
            raise OptionError("int4 act=int8 quantizes every op, so others=float is not possible",
                              hint="use others=int8 with act=int8, or act=dynamic")
        if self.block_size is not None:
            if self.block_size not in BLOCK_SIZES:
                raise OptionError(f"int4 block size {self.block_size} is not one of {list(BLOCK_SIZES)}", hint=_HINT)
            if self.ops != ("FULLY_CONNECTED",) or self.activations != "dynamic":
                raise OptionError("blockwise int4 works on FULLY_CONNECTED with dynamic activations only "
                                  "(ai-edge-quantizer DYNAMIC_WI4_AFP32_BLOCKWISE)", hint="use int4:fc:block=32")

    @classmethod
    def parse(cls, spec: str) -> "Int4Options":
        """``fc+conv:block=32:layers=REGEX:act=int8:others=float`` (each part optional; the text after ``int4:``)."""
        kw: dict[str, Any] = {}
        for part in [p for p in spec.split(":") if p] if spec else []:
            key, eq, value = part.partition("=")
            if not eq:
                kw["ops"] = tuple(o for o in key.split("+") if o)
            elif key == "block":
                if not value.isdigit():
                    raise OptionError(f"int4 block must be a number, not '{value}'", hint=_HINT)
                kw["block_size"] = int(value)
            elif key == "layers":
                kw["layers"] = value
            elif key in ("act", "activations"):
                kw["activations"] = value
            elif key == "others":
                kw["others"] = value
            else:
                raise OptionError(f"unknown int4 option '{key}'", hint=_HINT)
        return cls(**kw)

    def to_dict(self) -> dict[str, Any]:
        return {"ops": list(self.ops), "layers": self.layers, "block_size": self.block_size,
                "activations": self.activations, "others": self.others}


@dataclass(frozen=True)
class WeightType:
    """The weight tensor of one op as written in the flatbuffer."""

    op_index: int
    opcode: str
    tensor: str
    type: str  # INT4, INT8, FLOAT32, FLOAT16 ...
    shape: list[int]
    bytes: int
    scales: int  # quantization scales stored in the tensor (1 per tensor or per channel; 0 when blockwise)
    block_size: int = 0  # blockwise: weights per scale (the scales live in a separate tensor)
    dequantized: bool = False  # fed through a DEQUANTIZE op (weight-only storage)

    def to_dict(self) -> dict[str, Any]:
        return {"op": self.op_index, "opcode": self.opcode, "tensor": self.tensor, "type": self.type,
                "shape": self.shape, "bytes": self.bytes, "scales": self.scales, "block_size": self.block_size,
                "dequantized": self.dequantized}


@dataclass
class Int4Result:
    model: bytes
    options: Int4Options
    weights: list[WeightType] = field(default_factory=list)

    def type_counts(self) -> dict[str, int]:
        return type_histogram(self.weights)

    def to_dict(self) -> dict[str, Any]:
        return {"options": self.options.to_dict(), "size": len(self.model), "weight_types": self.type_counts(),
                "weights": [w.to_dict() for w in self.weights]}


def weight_types(model: bytes) -> list[WeightType]:
    """The weight tensor (input 1) of every op in :data:`WEIGHT_OPS`, read with edgekit's flatbuffer reader."""
    return [WeightType(w.op.index, w.op.opcode, w.stored.name, w.stored.type, list(w.stored.shape), w.stored_bytes,
                       len(w.stored.scale), w.stored.block_size, w.via == "DEQUANTIZE")
            for w in weight_tensors(inspect_tflite(model), WEIGHT_OPS)]


def type_histogram(weights: list[WeightType]) -> dict[str, int]:
    """``{"FULLY_CONNECTED:INT4": 2, "CONV_2D:INT8": 3, ...}``."""
    counts: dict[str, int] = {}
    for w in weights:
        key = f"{w.opcode}:{w.type}"
        counts[key] = counts.get(key, 0) + 1
    return dict(sorted(counts.items()))


def quantize_int4(model: bytes | str | os.PathLike, options: Int4Options | None = None, *,
                  calibration: list[np.ndarray] | np.ndarray | None = None) -> Int4Result:
    """Apply ``options`` to a float .tflite (bytes or path); return the new flatbuffer and its weight types.

    ``calibration`` (samples, in the model's input order) is required for ``activations="int8"``.
    """
    options = options or Int4Options()
    data = Path(model).read_bytes() if isinstance(model, (str, os.PathLike)) else bytes(model)
    targets = _check_source(data, options)
    if options.activations == "int8" and calibration is None:
        raise CalibrationError("int4 with act=int8 quantizes activations statically and needs calibration samples",
                               hint="pass calibration data, or use the default act=dynamic")
    from edgekit.extras import require

    require("ai_edge_quantizer", "convert")
    from ai_edge_quantizer import quantizer

    with tempfile.TemporaryDirectory(prefix="edgekit-int4-") as tmp:
        src = Path(tmp) / "float.tflite"
        src.write_bytes(data)
        try:
            with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()), \
                    warnings.catch_warnings():
                warnings.simplefilter("ignore")
                qt = quantizer.Quantizer(str(src))
                _configure(qt, options)
                if options.activations == "int8":
                    result = qt.quantize(qt.calibrate(_calibration_set(data, calibration)))
                else:
                    result = qt.quantize()
            out = bytes(result.quantized_model)
        except (ValueError, RuntimeError, KeyError, TypeError) as exc:
            first = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
            raise ConversionError(f"ai-edge-quantizer could not apply int4 ({first})",
                                  hint="try act=dynamic, fewer ops (int4:fc), or no block size") from exc
    weights = weight_types(out)
    got = {w.op_index for w in weights if w.type == "INT4"}
    missing = sorted(targets - got)
    if missing:
        raise ConversionError(f"ai-edge-quantizer left {len(missing)} targeted op(s) without int4 weights "
                              f"(op indices {missing[:8]})", hint="try act=dynamic or int4:fc only")
    return Int4Result(out, options, weights)


def _check_source(data: bytes, options: Int4Options) -> set[int]:
    """The indices of the ops that must get int4; refuse non-float sources and recipes that match nothing."""
    try:
        info = inspect_tflite(data)
    except NotTFLiteError as exc:
        raise OptionError(f"int4 needs a .tflite model: {exc.message}",
                          hint="convert the model first (edgekit convert --mode fp32)") from exc
    weights = weight_types(data)
    quantized = [w for w in weights if w.type not in ("FLOAT32", "FLOAT16") or w.dequantized]
    if quantized:
        raise OptionError(f"int4 needs the float .tflite, but {quantized[0].opcode} weight '{quantized[0].tensor}' "
                          f"is already {quantized[0].type}", hint="convert with --mode fp32 and apply int4 to that")
    names = {op.index: [info.main.tensors[t].name for t in op.outputs] for op in info.main.ops}
    pattern = re.compile(options.layers) if options.layers else None
    targets = {w.op_index for w in weights if w.opcode in options.ops
               and (pattern is None or any(pattern.search(n) for n in names.get(w.op_index, [])))}
    if not targets:
        what = "+".join(options.ops) + (f" matching '{options.layers}'" if options.layers else "")
        present = sorted({w.opcode for w in weights})
        raise OptionError(f"int4 matches no op: the model has no {what} (its weight ops: {present or 'none'})",
                          hint="choose ops the model has, or a layers regex that matches their names")
    return targets


def _configure(qt, options: Int4Options) -> None:
    from ai_edge_quantizer import qtyping

    names = qtyping.TFLOperationName
    granularity = qtyping.QuantGranularity
    static = options.activations == "int8"
    if options.others == "int8" or static:
        # static int8 everywhere (activations too) or dynamic int8 weights; the int4 entries below win (last match)
        if static:
            qt.add_static_config(".*", names.ALL_SUPPORTED, 8, 8)
        else:
            qt.add_dynamic_config(".*", names.ALL_SUPPORTED, 8)
    regex = options.layers or ".*"
    for op in options.ops:
        op_name = names(op)
        if static:
            qt.add_static_config(regex, op_name, 8, 4)
        elif options.block_size:
            qt.add_dynamic_config(regex, op_name, 4, granularity(f"BLOCKWISE_{options.block_size}"))
        else:
            qt.add_dynamic_config(regex, op_name, 4)


def _calibration_set(model: bytes, calibration) -> dict:
    """AEQ's calibration format: ``{signature: [{input name: one-sample batch}, ...]}``, in the model's input order."""
    from ai_edge_litert import interpreter as litert

    arrays = list(calibration) if isinstance(calibration, (list, tuple)) else [calibration]
    interp = litert.Interpreter(model_content=model)
    sigs = interp.get_signature_list()
    if not sigs:
        raise CalibrationError("the float model has no signature, so ai-edge-quantizer cannot calibrate it",
                               hint="convert it with edgekit convert --mode fp32")
    key = "serving_default" if "serving_default" in sigs else sorted(sigs)[0]
    details = interp.get_signature_runner(key).get_input_details()
    order = [d["index"] for d in interp.get_input_details()]
    names = sorted(details, key=lambda n: order.index(details[n]["index"]) if details[n]["index"] in order else 0)
    if len(names) != len(arrays):
        raise CalibrationError(f"calibration has {len(arrays)} input arrays, the model {len(names)} inputs")
    samples = []
    for k in range(len(arrays[0])):
        sample = {}
        for name, a in zip(names, arrays):
            shape = list(details[name]["shape"])
            x = np.asarray(a[k:k + 1], dtype=np.float32)
            if x.size != int(np.prod(shape)):
                raise CalibrationError(f"a calibration sample of shape {list(x.shape[1:])} does not fit input "
                                       f"'{name}' {shape[1:]}", hint="pass samples shaped like the model input")
            sample[name] = x.reshape(shape)
        samples.append(sample)
    if not samples:
        raise CalibrationError("calibration data is empty", hint="pass at least one sample (100 or more is typical)")
    return {key: samples}
