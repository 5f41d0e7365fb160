"""Run TensorFlow's TFLiteConverter for a plan (mode + io) on a loaded model's static concrete function."""

from __future__ import annotations

import contextlib
import dataclasses
import os
from typing import Callable, Iterable

import numpy as np

from .errors import ConverterFailed
from .hints import hint_for
from .loading import LoadedModel
from .modes import MODES, Plan


def representative(arrays: list[np.ndarray], tick: Callable[[int], None] | None = None
                   ) -> Callable[[], Iterable[list[np.ndarray]]]:
    """A representative_dataset callable yielding one batch-1 sample per step: float inputs as float32, integer
    inputs (token ids) in their own dtype, which the converter checks against the model's input type."""
    arrays = [a if a.dtype.kind in "iu" else a.astype(np.float32, copy=False) for a in arrays]

    def gen():
        for k in range(arrays[0].shape[0]):
            if tick:
                tick(1)
            yield [a[k:k + 1] for a in arrays]

    return gen


@contextlib.contextmanager
def quiet_native():
    """Silence the converter's C++ chatter on fd 1/2 (MLIR pass logs), keep Python exceptions."""
    saved = []
    try:
        for fd in (1, 2):
            saved.append((fd, os.dup(fd)))
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, fd)
            os.close(devnull)
    except OSError:
        pass
    try:
        yield
    finally:
        for fd, copy in saved:
            os.dup2(copy, fd)
            os.close(copy)


def make_converter(model: LoadedModel, plan: Plan, dataset: Callable | None, **mode_kw):
    import tensorflow as tf

    fn = model.concrete_function()
    conv = tf.lite.TFLiteConverter.from_concrete_functions([fn])
    MODES[plan.mode].configure(conv, plan.io, dataset, **mode_kw)
    return conv


@contextlib.contextmanager
def quiet_absl():
    """Hide absl's Python-side deprecation chatter from the converter for the duration of a call."""
    import logging

    logger = logging.getLogger("absl")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def convert(model: LoadedModel, plan: Plan, dataset: Callable | None = None, *, quiet: bool = True,
            sparsity: bool = False, per_tensor: bool = False) -> bytes:
    """Convert and return the flatbuffer; TF's failures become ConverterFailed with the first line of its message.

    ``sparsity`` adds ``tf.lite.Optimize.EXPERIMENTAL_SPARSITY``: pruned weights are stored sparse (DENSIFY or
    XNNPACK's sparse kernels read them). ``per_tensor`` quantizes each weight tensor with one scale instead of one
    per output channel (the converter's ``_experimental_disable_per_channel``): a clustered layer's N shared
    centroids then stay N int8 values in the whole tensor, instead of up to N different values per channel.
    """
    model = int16_source(model, plan)
    with quiet_absl():
        conv = make_converter(model, plan, dataset)
    if per_tensor:
        conv._experimental_disable_per_channel = True
    if sparsity:
        import tensorflow as tf

        conv.optimizations = [*conv.optimizations, tf.lite.Optimize.EXPERIMENTAL_SPARSITY]
    try:
        with quiet_native() if quiet else contextlib.nullcontext():
            return conv.convert()
    except Exception as exc:  # noqa: BLE001 - the converter raises ConverterError, RuntimeError, ValueError ...
        text = str(exc).strip().splitlines()
        first = next((ln for ln in text if "error" in ln.lower()), text[0] if text else type(exc).__name__)
        raise ConverterFailed(f"TFLiteConverter failed in mode {plan.mode}: {first[:400]}",
                              hint=hint_for(str(exc), plan.mode)) from exc


def int16_source(model: LoadedModel, plan: Plan) -> LoadedModel:
    """The model to convert for ``plan``: for int16x8 of a Keras 3 model with integer inputs, its tf_keras twin.

    Keras 3's Embedding wraps negative token ids (LESS, ADD, SELECT on the int32 input before the GATHER), and
    TensorFlow 2.21's 16x8 quantizer wants calibration ranges for that integer ADD, which it never records ("Max and
    min for dynamic tensors ... Failed for tensor tokens"). tf_keras's Embedding gathers directly, so its twin (same
    layers and weights, :mod:`converters.keras_bridge`, checked to give the same outputs) converts. A model the
    bridge cannot rebuild is converted as it is, and fails with that message and its hint.
    """
    if plan.mode != "int16x8" or model.keras_model is None or not any(
            s.dtype.startswith(("int", "uint")) for s in model.inputs):
        return model
    from .keras_bridge import is_tf_keras, to_tf_keras

    if is_tf_keras(model.keras_model):
        return model
    from .errors import KerasBridgeError

    try:
        twin = to_tf_keras(model.keras_model)
    except KerasBridgeError:
        return model
    return dataclasses.replace(model, keras_model=twin, _frozen=None, _output_names=[])


def versions() -> dict[str, str]:
    import tensorflow as tf

    out = {"tensorflow": tf.__version__}
    try:
        import keras

        out["keras"] = keras.__version__
    except Exception:  # noqa: BLE001
        pass
    return out
