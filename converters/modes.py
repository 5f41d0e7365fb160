"""Quantization modes and deployment targets as registered objects.

A :class:`Mode` knows how to configure a ``tf.lite.TFLiteConverter`` and which I/O types it accepts; a
:class:`Target` validates a plan (mode, io, model inputs) and may refuse with a reason. Adding a mode or a target
is adding a class to a registry, not another branch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, ClassVar, Iterable

from .errors import OptionError, TargetOptionError, TargetRefusal
from .loading import InputSpec


@dataclass(frozen=True)
class Plan:
    """What to produce: resolved mode, io and target names."""

    mode: str
    io: str
    target: str


class Mode:
    name: ClassVar[str]
    help: ClassVar[str]
    needs_calibration: ClassVar[bool] = False
    io_choices: ClassVar[tuple[str, ...]] = ("float",)
    default_io: ClassVar[str] = "float"
    quantized: ClassVar[bool] = False
    supports_fallback: ClassVar[bool] = False  # QuantizationDebugger-driven float fallback (full int8 only)

    def check_io(self, io: str | None) -> str:
        if io is None:
            return self.default_io
        if io not in self.io_choices:
            raise OptionError(f"--io {io} does not apply to mode {self.name}",
                              hint=f"mode {self.name} supports --io {'|'.join(self.io_choices)}")
        return io

    def configure(self, converter, io: str, dataset: Callable[[], Iterable] | None) -> None:
        raise NotImplementedError


MODES: dict[str, Mode] = {}
TARGETS: dict[str, "Target"] = {}


def register_mode(cls):
    MODES[cls.name] = cls()
    return cls


def register_target(cls):
    TARGETS[cls.name] = cls()
    return cls


def _tf():
    import tensorflow as tf

    return tf


@register_mode
class Fp32(Mode):
    name = "fp32"
    help = "float32, no quantization (reference)"

    def configure(self, converter, io, dataset):
        converter.optimizations = []


@register_mode
class Fp16(Mode):
    name = "fp16"
    help = "float16 weights, float compute"

    def configure(self, converter, io, dataset):
        tf = _tf()
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]


@register_mode
class Dynamic(Mode):
    name = "dynamic"
    help = "int8 weights, float activations (dynamic range); no calibration data"
    quantized = True

    def configure(self, converter, io, dataset):
        converter.optimizations = [_tf().lite.Optimize.DEFAULT]


@register_mode
class Int8(Mode):
    name = "int8"
    help = "full integer: int8 weights and activations; needs calibration data"
    needs_calibration = True
    io_choices = ("int8", "uint8", "float")
    default_io = "int8"
    quantized = True
    supports_fallback = True

    IO_TYPES = {"int8": "int8", "uint8": "uint8", "float": "float32"}

    def configure(self, converter, io, dataset, allow_float_ops: bool = False):
        tf = _tf()
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = dataset
        ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        if allow_float_ops:
            ops.append(tf.lite.OpsSet.TFLITE_BUILTINS)
        converter.target_spec.supported_ops = ops
        converter.inference_input_type = tf.as_dtype(self.IO_TYPES[io])
        converter.inference_output_type = tf.as_dtype(self.IO_TYPES[io])


@register_mode
class Int16x8(Mode):
    name = "int16x8"
    help = "int16 activations, int8 weights; needs calibration data"
    needs_calibration = True
    io_choices = ("float", "int16")
    default_io = "float"
    quantized = True

    def configure(self, converter, io, dataset):
        tf = _tf()
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = dataset
        converter.target_spec.supported_ops = [
            tf.lite.OpsSet.EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8]
        if io == "int16":
            converter.inference_input_type = tf.int16
            converter.inference_output_type = tf.int16


class Target:
    name: ClassVar[str]
    help: ClassVar[str]
    default_mode: ClassVar[str]

    def plan(self, mode: str | None, io: str | None) -> Plan:
        raise NotImplementedError

    def check_inputs(self, inputs: list[InputSpec]) -> None:
        """Refuse models this target cannot run (before converting)."""


def _mode(name: str) -> Mode:
    try:
        return MODES[name]
    except KeyError:
        raise OptionError(f"unknown mode {name!r}", hint=f"choose one of {', '.join(MODES)}") from None


@register_target
class Cpu(Target):
    name = "cpu"
    help = "any CPU with LiteRT (XNNPACK)"
    default_mode = "fp32"

    def plan(self, mode, io):
        m = _mode(mode or self.default_mode)
        return Plan(m.name, m.check_io(io), self.name)


@register_target
class EdgeTpu(Target):
    name = "edgetpu"
    help = "Coral Edge TPU: full int8, integer I/O, batch 1, static shapes"
    default_mode = "int8"
    io_choices = ("int8", "uint8")

    def plan(self, mode, io):
        if mode not in (None, "int8"):
            raise TargetOptionError(f"target edgetpu needs full-integer int8, not mode {mode}",
                                hint="drop --mode or pass --mode int8")
        if io not in (None, *self.io_choices):
            raise TargetOptionError(f"target edgetpu needs integer input/output, not --io {io}",
                                hint="pass --io int8 or --io uint8")
        return Plan("int8", io or "int8", self.name)

    def check_inputs(self, inputs):
        for spec in inputs:
            dynamic = [i + 1 for i, d in enumerate(spec.shape) if d is None]
            if dynamic:
                raise TargetRefusal(
                    f"input '{spec.name}' has dynamic dimension(s) {dynamic} (shape [batch, "
                    f"{', '.join('?' if d is None else str(d) for d in spec.shape)}]); "
                    "the Edge TPU needs static shapes",
                    hint="rebuild the model with a fixed input size")
            if spec.dtype not in ("float32", "int8", "uint8"):
                raise TargetRefusal(f"input '{spec.name}' is {spec.dtype}; the Edge TPU takes 8-bit image-like inputs")


def resolve(target: str, mode: str | None, io: str | None) -> Plan:
    try:
        t = TARGETS[target]
    except KeyError:
        raise OptionError(f"unknown target {target!r}", hint=f"choose one of {', '.join(TARGETS)}") from None
    return t.plan(mode, io)
