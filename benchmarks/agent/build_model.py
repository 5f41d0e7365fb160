"""Build step of the agent benchmark (imports TensorFlow; the measured processes never do).

Writes MobileNetV2 (alpha 0.35, 96x96, weights=None) converted to full-integer int8 with the plain TFLiteConverter,
and a signed bundle of it, into ``<repo>/.cache/bench-agent/``. Cached: a second run only prints the paths.

    .venv/bin/python benchmarks/agent/build_model.py
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
OUT = REPO / ".cache" / "bench-agent"


def build() -> dict[str, Path]:
    OUT.mkdir(parents=True, exist_ok=True)
    model = OUT / "mobilenetv2-int8.tflite"
    key = OUT / "bench.key"
    bundle = OUT / "mobilenetv2-int8.ekb"
    if not model.exists():
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
        import tensorflow as tf
        import tf_keras

        net = tf_keras.applications.MobileNetV2(weights=None, alpha=0.35, input_shape=(96, 96, 3))
        conv = tf.lite.TFLiteConverter.from_keras_model(net)
        rng = np.random.default_rng(0)
        calib = rng.random((32, 96, 96, 3), dtype=np.float32)
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        conv.representative_dataset = lambda: ([calib[i:i + 1]] for i in range(len(calib)))
        conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        conv.inference_input_type = tf.int8
        conv.inference_output_type = tf.int8
        tmp = model.with_suffix(".tmp")
        tmp.write_bytes(conv.convert())
        os.replace(tmp, model)
    if not key.exists():
        from edgekit.keys import generate_keypair

        generate_keypair(key)
    if not bundle.exists():
        from edgekit.bundle import create_bundle

        create_bundle(model, bundle, name="mobilenetv2", version="1.0.0", key=key)
    return {"model": model, "bundle": bundle, "pub": Path(str(key) + ".pub")}


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    for k, v in build().items():
        print(f"{k}\t{v}")
