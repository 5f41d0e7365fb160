"""Real models for tests: the digits CNN from examples/, converted with the plain TFLiteConverter.

These helpers import TensorFlow, so only call them from the test process (never from an agent subprocess).
Results are cached under ``<repo>/.cache/test-models`` keyed by the arguments, so a rerun skips the training.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
CACHE = REPO / ".cache" / "test-models"


@contextlib.contextmanager
def _cache_lock():
    """Serialize cache writes between concurrent test runs (several pytest processes may share .cache)."""
    CACHE.mkdir(parents=True, exist_ok=True)
    with open(CACHE / ".lock", "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def digits_keras(epochs: int = 8, seed: int = 0, legacy: bool = False, width: int = 16) -> dict:
    """Train (once) and return {'model', 'calibration', 'eval', 'test_accuracy'} paths for the digits CNN."""
    tag = f"digits-e{epochs}-s{seed}-w{width}{'-legacy' if legacy else ''}"
    out = CACHE / tag / ("digits.h5" if legacy else "digits.keras")
    meta = CACHE / tag / "meta.json"
    with _cache_lock():
        if meta.exists() and out.exists():
            return json.loads(meta.read_text())
        return _train(out, meta, epochs, seed, legacy, width)


def _train(out: Path, meta: Path, epochs: int, seed: int, legacy: bool, width: int) -> dict:
    sys.path.insert(0, str(REPO / "examples"))
    try:
        import train_digits
    finally:
        sys.path.pop(0)
    result = train_digits.train(out, epochs=epochs, seed=seed, legacy=legacy, width=width)
    meta.write_text(json.dumps(result))
    return result


def to_tflite(keras_path: str | os.PathLike, mode: str = "fp32", calibration: np.ndarray | None = None) -> bytes:
    """Convert with the plain TFLiteConverter: fp32, fp16 weights, or int8 (full integer, int8 I/O, batch 1)."""
    import keras
    import tensorflow as tf

    model = keras.models.load_model(keras_path)
    shape = [1] + list(model.inputs[0].shape[1:])
    # fix the batch dimension to 1 (a dynamic batch adds SHAPE/STRIDED_SLICE/PACK ops around Flatten)
    inp = keras.Input(shape=shape[1:], batch_size=1, name=model.inputs[0].name.split(":")[0])
    fixed = keras.Model(inp, model(inp))
    conv = tf.lite.TFLiteConverter.from_keras_model(fixed)
    if mode == "int8":
        calib = calibration if calibration is not None else np.random.default_rng(0).random([64] + shape[1:])
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        conv.representative_dataset = lambda: ([calib[i:i + 1].astype("float32")] for i in range(len(calib)))
        conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        conv.inference_input_type = tf.int8
        conv.inference_output_type = tf.int8
    elif mode == "fp16":  # fp16 weight-only storage: each weight reaches its op through a DEQUANTIZE
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        conv.target_spec.supported_types = [tf.float16]
    elif mode != "fp32":
        raise ValueError(mode)
    return conv.convert()


def digits_tflite(mode: str = "fp32", **kw) -> Path:
    """The digits CNN as a .tflite file (cached)."""
    info = digits_keras(**kw)
    path = Path(info["model"]).with_name(f"digits-{mode}.tflite")
    with _cache_lock():
        if not path.exists():
            calib = np.load(info["calibration"])["x"] if mode == "int8" else None
            tmp = path.with_suffix(".tmp")
            tmp.write_bytes(to_tflite(info["model"], mode, calib))
            os.replace(tmp, path)
    return path


def digits_onnx(**kw) -> dict:
    """The trained digits CNN as ONNX in PyTorch's NCHW layout (examples/digits_onnx.py), with NCHW data (cached)."""
    info = digits_keras(**kw)
    out = Path(info["model"]).with_name("digits_nchw.onnx")  # its _calib/_eval .npz beside the Keras ones
    stem = out.with_suffix("")
    result = {"model": str(out), "calibration": f"{stem}_calib.npz", "eval": f"{stem}_eval.npz"}
    with _cache_lock():
        if not all(Path(p).exists() for p in result.values()):
            sys.path.insert(0, str(REPO / "examples"))
            try:
                import digits_onnx as export
            finally:
                sys.path.pop(0)
            export.export(Path(info["model"]), out)
    return result
