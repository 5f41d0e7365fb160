"""Benchmark: `edgekit convert` vs a raw TFLiteConverter script, int8 on MobileNetV2, same run, same data.

    .venv/bin/python benchmarks/convert/bench_convert.py [--repeats 3] [--samples 64] [--smoke] [--out FILE]

Both sides run as fresh subprocesses (Python + TensorFlow start-up included, as a user would see it), alternated
to spread machine noise. edgekit runs with --no-eval (no evaluation, no latency runs) so that both do the same
work: load, calibrate, convert, write. Reports the median wall time of each and the ratio edgekit / raw (goal ≤ 1.10).
A full run writes benchmarks/convert/bench_convert.json; ``--smoke`` converts a tiny CNN once per variant with 8
samples and writes nothing into the repository.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

sys.path.append(str(Path(__file__).resolve().parents[1]))
import benchlib  # noqa: E402

PY = sys.executable
EDGEKIT = str(Path(PY).with_name("edgekit"))

MAKE_MODEL = textwrap.dedent("""
    import sys, numpy as np, tf_keras
    if sys.argv[4] == "smoke":
        L = tf_keras.layers
        m = tf_keras.Sequential([L.Input((32, 32, 3)), L.Conv2D(8, 3, strides=2, activation="relu"),
                                 L.DepthwiseConv2D(3, activation="relu"), L.GlobalAveragePooling2D(), L.Dense(10)])
    else:
        m = tf_keras.applications.MobileNetV2(weights=None, alpha=0.35, input_shape=(96, 96, 3))
    m.save(sys.argv[1])
    rng = np.random.default_rng(0)
    shape = tuple(m.input_shape[1:])
    np.savez(sys.argv[2], x=rng.random((int(sys.argv[3]), *shape), dtype=np.float32) * 2 - 1)
""")

_RAW_HEAD = """
import sys, numpy as np, tensorflow as tf, tf_keras
model = tf_keras.models.load_model(sys.argv[1], compile=False)
x = np.load(sys.argv[2])["x"]
shape = [1] + list(model.inputs[0].shape[1:])
"""
_RAW_TAIL = """
conv.optimizations = [tf.lite.Optimize.DEFAULT]
conv.representative_dataset = lambda: ([x[i:i + 1]] for i in range(len(x)))
conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
conv.inference_input_type = tf.int8
conv.inference_output_type = tf.int8
open(sys.argv[3], "wb").write(conv.convert())
"""
# Three ways users write the conversion by hand; the fastest one is the baseline.
RAW = {
    "from_keras_model": _RAW_HEAD + "conv = tf.lite.TFLiteConverter.from_keras_model(model)\n" + _RAW_TAIL,
    "concrete_function": _RAW_HEAD + (
        "fn = tf.function(lambda t: model(t, training=False)).get_concrete_function(tf.TensorSpec(shape))\n"
        "conv = tf.lite.TFLiteConverter.from_concrete_functions([fn], model)\n") + _RAW_TAIL,
    "frozen_concrete_function": _RAW_HEAD + (
        "from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2\n"
        "fn = tf.function(lambda t: model(t, training=False)).get_concrete_function(tf.TensorSpec(shape))\n"
        "conv = tf.lite.TFLiteConverter.from_concrete_functions([convert_variables_to_constants_v2(fn)])\n")
    + _RAW_TAIL,
}


def timed(cmd: list[str], env: dict) -> float:
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900)
    dt = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"failed: {' '.join(cmd)}\n{proc.stderr[-3000:]}")
    return dt


def main(argv=None) -> int:
    ap = benchlib.add_options(argparse.ArgumentParser(description=__doc__.splitlines()[0]))
    ap.add_argument("--repeats", type=int, default=None, help="default 3 (smoke 1)")
    ap.add_argument("--samples", type=int, default=None, help="calibration samples (default 64; smoke 8)")
    a = ap.parse_args(argv)
    repeats = a.repeats or (1 if a.smoke else 3)
    samples = a.samples or (8 if a.smoke else 64)
    run = benchlib.Run(__file__, a)
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    work = Path(tempfile.mkdtemp(prefix="edgekit-bench-convert-"))
    try:
        model, calib = work / "model.keras", work / "calib.npz"
        made = subprocess.run([PY, "-c", MAKE_MODEL, str(model), str(calib), str(samples),
                               "smoke" if a.smoke else "full"], capture_output=True, text=True, env=env)
        if made.returncode != 0:
            raise SystemExit(f"building the model failed:\n{made.stderr[-3000:]}")
        scripts = {}
        for name, code in RAW.items():
            scripts[name] = work / f"raw_{name}.py"
            scripts[name].write_text(code)
        times: dict[str, list[float]] = {"edgekit": [], **{n: [] for n in RAW}}
        for i in range(repeats):
            out = work / f"out{i}"
            cmds = {"edgekit": [EDGEKIT, "convert", str(model), "--mode", "int8", "--io", "int8", "--calibration",
                                str(calib), "--calibration-samples", str(samples), "--no-eval", "--quiet",
                                "-o", str(out)]}
            for name, script in scripts.items():
                cmds[name] = [PY, str(script), str(model), str(calib), str(work / f"{name}{i}.tflite")]
            order = list(cmds) if i % 2 == 0 else list(cmds)[::-1]
            for name in order:
                times[name].append(timed(cmds[name], env))
        sizes = {"edgekit": (work / "out0" / "model.tflite").stat().st_size,
                 **{n: (work / f"{n}0.tflite").stat().st_size for n in RAW}}
    finally:
        shutil.rmtree(work, ignore_errors=True)
    medians = {n: statistics.median(t) for n, t in times.items()}
    baseline = min(RAW, key=lambda n: medians[n])
    e, r = medians["edgekit"], medians[baseline]
    for n, t in times.items():
        print(f"{n:<26} median {medians[n]:6.2f} s  runs {[round(x, 2) for x in t]}  size {sizes[n]} B",
              file=sys.stderr)
    result = {"model": ("tiny CNN 32x32 (smoke)" if a.smoke
                        else "MobileNetV2 alpha=0.35 96x96 (tf_keras, weights=None)"),
              "mode": "int8 (int8 I/O)", "calibration_samples": samples, "repeats": repeats,
              "runs_s": {n: [round(x, 2) for x in t] for n, t in times.items()},
              "median_s": {n: round(m, 2) for n, m in medians.items()},
              "baseline": baseline, "ratio": round(e / r, 3), "goal": 1.10, "sizes": sizes}
    label = {"edgekit": "`edgekit convert`", "from_keras_model": "raw `from_keras_model`",
             "concrete_function": "raw `from_concrete_functions([fn], model)`",
             "frozen_concrete_function": "raw frozen concrete function"}
    rows = [[label[n] + (" (baseline)" if n == baseline else ""), f"{medians[n]:.2f}",
             ", ".join(f"{x:.2f}" for x in t), f"{sizes[n]:,}"] for n, t in times.items()]
    rows.append([f"**ratio edgekit / fastest raw = {e / r:.3f}** (goal ≤ 1.10)", "", "", ""])
    run.finish(result, {"columns": ["variant", "median (s)", "runs (s)", "size (B)"], "rows": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
