"""Agent benchmark, ONNX Runtime backend: ``Agent.infer`` on a gpu-target bundle vs bare ``session.run`` on the very
session the agent serves with (CPU execution provider; this machine has no GPU).

    .venv/bin/python benchmarks/agent/bench_ort.py [--rounds 40] [--n 50] [--smoke] [--out FILE]

Two models, both run by the agent from a signed bundle (``target: gpu``):
- ``squeezenet``: onnx's own ``light_squeezenet.onnx`` test model (1×3×224×224, the Caffe2 zoo architecture, shipped
  in the onnx package), ~15 ms a call here: what a real vision model costs;
- ``digits-cnn``: the digits CNN shape (1×1×8×8, Conv/Relu/MaxPool/Gemm, random weights), tens of µs a call: the
  worst case, where the agent's Python around ``run`` is the largest share.

Single calls alternate (order swapped every pair), each timed on its own; the figure is the ratio of the median
per-call times (10th percentiles beside it). Goal ≤ 1.05×. Also records the import time of the agent modules and the
RSS after loading the model, with onnxruntime installed, and whether onnxruntime was imported before a gpu model was
loaded. A full run writes benchmarks/agent/bench_ort.json; ``--smoke`` runs a few calls on the digits model only.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.append(str(Path(__file__).resolve().parents[1]))
import benchlib  # noqa: E402
from benchlib import REPO  # noqa: E402

INPROC = r"""
import json, sys, time
t0 = time.perf_counter()
from device_agent.config import from_dict
from device_agent.agent import Agent
import_s = time.perf_counter() - t0
ort_before = "onnxruntime" in sys.modules
import numpy as np, psutil
bundle, pub, data, rounds, n = sys.argv[1:6]
rounds, n = int(rounds), int(n)
rss0 = psutil.Process().memory_info().rss
cfg = from_dict({"device_id": "bench", "fleet_public_key": pub, "data_dir": data, "model": {"bundle": bundle},
                 "runtime": {"allow_cpu_fallback": True}, "api": {"enabled": False}, "mqtt": {"enabled": False},
                 "telemetry": {"enabled": False}}, environ={})
agent = Agent(cfg, with_updater=False)
agent.load_initial_model()
runner = agent.slot.runner
assert runner.backend == "onnxruntime", runner.backend
sess = runner.session  # the baseline drives the very session the agent serves with
name = sess.get_inputs()[0].name
spec = runner.inputs[0]
x = np.random.default_rng(0).random(spec.shape).astype(spec.dtype)
def run_bare():
    return sess.run(None, {name: x})[0]
def run_agent():
    return agent.infer([x])[0][0]
assert np.array_equal(run_bare(), run_agent())
for _ in range(20):
    run_bare(); run_agent()
res = {"bare": [], "agent": []}
clock = time.perf_counter
for i in range(rounds * n):
    order = ((res["bare"], run_bare), (res["agent"], run_agent))
    for out, fn in (order if i % 2 == 0 else order[::-1]):
        t0 = clock()
        fn()
        out.append(clock() - t0)
heavy = [m for m in sys.modules if m.split(".")[0] in ("tensorflow", "tf_keras", "keras")]
print(json.dumps({"bare": res["bare"], "agent": res["agent"], "heavy": heavy, "import_s": import_s,
                  "ort_imported_before_load": ort_before, "rss_mb": psutil.Process().memory_info().rss / 2**20,
                  "rss_before_load_mb": rss0 / 2**20, "providers": runner.providers}))
"""


def digits_cnn(path: Path) -> Path:
    """The digits CNN's shape with random weights (onnx.helper), NCHW, dynamic batch."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)

    def w(name, *shape):
        return numpy_helper.from_array((rng.standard_normal(shape) * 0.1).astype(np.float32), name)

    inits = [w("w1", 16, 1, 3, 3), w("b1", 16), w("w2", 32, 16, 3, 3), w("b2", 32), w("w3", 32, 32, 3, 3),
             w("b3", 32), w("w4", 512, 64), w("b4", 64), w("w5", 64, 10), w("b5", 10)]
    pads = {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1]}
    nodes = [helper.make_node("Conv", ["input", "w1", "b1"], ["c1"], **pads), helper.make_node("Relu", ["c1"], ["r1"]),
             helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], **pads), helper.make_node("Relu", ["c2"], ["r2"]),
             helper.make_node("MaxPool", ["r2"], ["p2"], kernel_shape=[2, 2], strides=[2, 2]),
             helper.make_node("Conv", ["p2", "w3", "b3"], ["c3"], **pads), helper.make_node("Relu", ["c3"], ["r3"]),
             helper.make_node("Flatten", ["r3"], ["f"], axis=1),
             helper.make_node("Gemm", ["f", "w4", "b4"], ["g4"]), helper.make_node("Relu", ["g4"], ["r4"]),
             helper.make_node("Gemm", ["r4", "w5", "b5"], ["g5"]), helper.make_node("Softmax", ["g5"], ["probs"])]
    graph = helper.make_graph(nodes, "digits", [helper.make_tensor_value_info("input", TensorProto.FLOAT,
                                                                              ["batch", 1, 8, 8])],
                              [helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["batch", 10])], inits)
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    onnx.save(m, path)
    return path


def squeezenet() -> Path:
    import onnx

    return Path(onnx.__file__).parent / "backend" / "test" / "data" / "light" / "light_squeezenet.onnx"


def measure(name: str, model: Path, tmp: Path, rounds: int, n: int) -> dict:
    from edgekit.bundle import create_bundle
    from edgekit.keys import generate_keypair

    priv, pub = generate_keypair(tmp / f"{name}.key")
    bundle = create_bundle(model, tmp / f"{name}.ekb", name=name, version="1.0.0", key=priv, target="gpu")
    env = dict(os.environ, PYTHONPATH=str(REPO))
    res = subprocess.run([sys.executable, "-c", INPROC, str(bundle), str(pub), str(tmp / f"data-{name}"),
                          str(rounds), str(n)], capture_output=True, text=True, env=env)
    if res.returncode != 0:
        raise SystemExit(f"{name}: in-process measurement failed:\n{res.stderr[-3000:]}")
    r = json.loads(res.stdout.strip().splitlines()[-1])
    bare_ms, agent_ms = statistics.median(r["bare"]) * 1e3, statistics.median(r["agent"]) * 1e3
    return {"bare_ms": round(bare_ms, 4), "agent_ms": round(agent_ms, 4), "ratio": round(agent_ms / bare_ms, 4),
            "ratio_p10": round(benchlib.q(r["agent"], 0.1) / benchlib.q(r["bare"], 0.1), 4),
            "overhead_us": round((agent_ms - bare_ms) * 1e3, 2), "calls": len(r["bare"]),
            "providers": r["providers"], "agent_import_s": round(r["import_s"], 3),
            "onnxruntime_imported_before_load": r["ort_imported_before_load"],
            "rss_before_load_mb": round(r["rss_before_load_mb"], 1), "rss_mb": round(r["rss_mb"], 1),
            "tensorflow_imported": r["heavy"]}


def main() -> int:
    ap = benchlib.add_options(argparse.ArgumentParser(description=__doc__.splitlines()[0]))
    ap.add_argument("--rounds", type=int, default=40)
    ap.add_argument("--n", type=int, default=50)
    args = ap.parse_args()
    run = benchlib.Run(__file__, args)
    rounds, n = (2, 20) if args.smoke else (args.rounds, args.n)
    figures: dict = {"rounds": rounds, "n": n, "goal_ratio": 1.05}
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-ort-") as t:
        tmp = Path(t)
        models = {"digits-cnn": digits_cnn(tmp / "digits.onnx")}
        if not args.smoke:
            models = {"squeezenet": squeezenet(), **models}
        for name, path in models.items():
            f = measure(name, path, tmp, rounds, n if name != "squeezenet" else max(2, n // 10))
            figures[name] = f
            rows.append([f"`{name}`", f"{f['bare_ms']:.4f}", f"{f['agent_ms']:.4f}", f"+{f['overhead_us']:.1f}",
                         f"**{f['ratio']:.3f}×** (p10 {f['ratio_p10']:.3f}×)", "≤ 1.05×", f"{f['calls']:,}"])
    rows.append(["agent import (s) / RSS after load (MB), digits", "", "", "",
                 f"{figures['digits-cnn']['agent_import_s']} s / {figures['digits-cnn']['rss_mb']} MB", "",
                 "onnxruntime imported before load: "
                 f"{figures['digits-cnn']['onnxruntime_imported_before_load']}"])
    table = {"columns": ["model", "bare run (ms)", "Agent.infer (ms)", "overhead (µs)", "ratio", "goal", "calls"],
             "rows": rows}
    run.finish(figures, table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
