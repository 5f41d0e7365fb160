"""Errors raised by the converter, all rooted at :class:`edgekit.errors.EdgekitError`."""

from __future__ import annotations

from typing import Any

from edgekit.errors import EdgekitError, ExitCode, UsageError

from .hints import GENERIC_CONVERTER


class ConversionError(EdgekitError):
    """Base for every problem converting a model."""

    default_hint = "run 'edgekit convert --help' for the supported inputs and options"


class ModelLoadError(ConversionError):
    """The source model is missing, of an unknown format, or cannot be loaded."""

    default_hint = "pass a .keras file, a .h5 file (tf_keras) or a SavedModel directory"


class OptionError(ConversionError, UsageError):
    """A mode/target/io combination that cannot work."""

    exit_code = ExitCode.USAGE
    default_hint = "see 'edgekit convert --help' for the valid combinations"


class CalibrationError(ConversionError):
    """Calibration or evaluation data is missing, malformed or does not fit the model."""

    default_hint = "pass --calibration with an .npz/.npy file, an image directory or a module:function generator"


class ConverterFailed(ConversionError):
    """TensorFlow's TFLiteConverter rejected the model."""

    default_hint = GENERIC_CONVERTER


class ConverterCrashed(ConverterFailed):
    """The process converting the model was killed by a signal (a crash inside TensorFlow or LiteRT)."""


class TargetRefusal(ConversionError):
    """The model cannot meet the requirements of the chosen target (e.g. Edge TPU: int8, static shapes)."""


class TargetOptionError(OptionError, TargetRefusal):
    """A --mode/--io the chosen --target cannot take: a bad option combination (exit 2), not a model problem."""


class AccuracyBudgetError(ConversionError):
    """--max-accuracy-drop could not be met, even with the most sensitive layers kept in float."""

    exit_code = ExitCode.BUDGET_NOT_MET
    default_hint = ("raise --max-accuracy-drop, calibrate with more representative data, "
                    "or use quantization-aware training")
    result: Any = None  # the converter's Result of the best attempt


class CompilerError(ConversionError):
    """edgetpu_compiler failed or produced no usable model."""

    default_hint = "read the compiler log above; 'edgekit edgetpu check' predicts which ops cannot be mapped"


class KerasBridgeError(ModelLoadError):
    """A Keras 3 model that cannot be rebuilt as a tf_keras model (subclassed, or a layer without a tf_keras twin)."""

    default_hint = "build the model from keras.layers built-ins with the functional API or Sequential"
