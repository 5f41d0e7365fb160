"""Build step of the agent and update benchmarks (imports TensorFlow; the measured processes never do).

Writes MobileNetV2 (alpha 0.35, 96x96, weights=None) converted to full-integer int8 with the plain TFLiteConverter,
and a signed bundle of it, into ``<repo>/.cache/bench-agent/``. Cached: a second run only prints the paths.
``--smoke --out-dir DIR`` builds a tiny CNN the same way into DIR instead (for the benchmarks' smoke runs).

    .venv/bin/python benchmarks/agent/build_model.py [--smoke --out-dir DIR]

The benchmarks call :func:`ensure`, which runs this script in a child process when the files are missing, so a
fresh clone needs no separate step.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
OUT = REPO / ".cache" / "bench-agent"


def paths(out: Path) -> dict[str, Path]:
    key = out / "bench.key"
    return {"model": out / "mobilenetv2-int8.tflite", "bundle": out / "mobilenetv2-int8.ekb", "key": key,
            "pub": Path(str(key) + ".pub")}


def _network(smoke: bool):
    import tf_keras

    if not smoke:
        return tf_keras.applications.MobileNetV2(weights=None, alpha=0.35, input_shape=(96, 96, 3))
    L = tf_keras.layers
    return tf_keras.Sequential([L.Input((32, 32, 3)), L.Conv2D(8, 3, strides=2, activation="relu"),
                                L.DepthwiseConv2D(3, activation="relu"), L.Conv2D(16, 1, activation="relu"),
                                L.GlobalAveragePooling2D(), L.Dense(10)])


def build(out: Path = OUT, smoke: bool = False) -> dict[str, Path]:
    out.mkdir(parents=True, exist_ok=True)
    p = paths(out)
    if not p["model"].exists():
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
        import tensorflow as tf

        net = _network(smoke)
        conv = tf.lite.TFLiteConverter.from_keras_model(net)
        rng = np.random.default_rng(0)
        calib = rng.random((8 if smoke else 32, *net.input_shape[1:]), dtype=np.float32)
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        conv.representative_dataset = lambda: ([calib[i:i + 1]] for i in range(len(calib)))
        conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        conv.inference_input_type = tf.int8
        conv.inference_output_type = tf.int8
        tmp = p["model"].with_suffix(".tmp")
        tmp.write_bytes(conv.convert())
        os.replace(tmp, p["model"])
    if not p["key"].exists():
        from edgekit.keys import generate_keypair

        generate_keypair(p["key"])
    if not p["bundle"].exists():
        from edgekit.bundle import create_bundle

        create_bundle(p["model"], p["bundle"], name="mobilenetv2", version="1.0.0", key=p["key"])
    return p


def ensure(out: Path | None = None, smoke: bool = False) -> dict[str, Path]:
    """The built files, building them first in a child process (TensorFlow stays out of the caller)."""
    out = Path(out) if out is not None else OUT
    p = paths(out)
    if not all(v.exists() for v in p.values()):
        argv = [sys.executable, __file__, "--out-dir", str(out)] + (["--smoke"] if smoke else [])
        subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, cwd=str(REPO),
                       env={**os.environ, "PYTHONPATH": str(REPO), "TF_CPP_MIN_LOG_LEVEL": "3"})
    return p


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out-dir", type=Path, default=OUT)
    ap.add_argument("--smoke", action="store_true", help="a tiny CNN instead of MobileNetV2 (needs --out-dir)")
    a = ap.parse_args()
    if a.smoke and a.out_dir == OUT:
        ap.error("--smoke needs --out-dir (the cache holds the full benchmark model)")
    sys.path.insert(0, str(REPO))
    for k, v in build(a.out_dir, a.smoke).items():
        print(f"{k}\t{v}")


if __name__ == "__main__":
    main()
