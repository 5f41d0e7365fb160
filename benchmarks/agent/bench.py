"""Agent benchmark on MobileNetV2 int8 (alpha 0.35, 96x96): every figure is a ratio/difference against bare LiteRT
measured in the same run. No process measured here imports TensorFlow (the model is built by build_model.py).

    .venv/bin/python benchmarks/agent/build_model.py      # once (TensorFlow, cached under .cache/bench-agent)
    .venv/bin/python benchmarks/agent/bench.py [--rounds 15] [--n 100] [--json out.json]

1. in-process: ``Agent.infer`` (slot acquire + runner + stats) vs bare ``set_tensor/invoke/get_tensor`` on the same
   interpreter; single calls alternate (order swapped every pair) and each is timed; the figure is the ratio of the
   median per-call times (the 10th percentiles beside it). Goal ≤ 1.03×.
2. local API: ``AgentClient.infer`` (HTTP keep-alive, .npy body) against a real ``python -m device_agent run`` process
   (with its MQTT link to a local Mosquitto and telemetry on) vs bare invoke in this process, alternating single
   calls; difference of the medians. Goal ≤ bare + 0.5 ms.
   The bare side is a separate interpreter in this process (instances differ by a few per cent among themselves).
3. RSS of that agent process after the API rounds vs a bare LiteRT script that loaded the model and ran it. ≤ 1.4×.
4. cold start: process start → first successful inference through the local API (store already holds the model,
   i.e. a service restart), median of 5; and the first boot that installs the bundle. Goal ≤ 1 s.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

CACHE = REPO / ".cache" / "bench-agent"
MODEL = CACHE / "mobilenetv2-int8.tflite"
BUNDLE = CACHE / "mobilenetv2-int8.ekb"
PUB = CACHE / "bench.key.pub"

INPROC = r"""
import json, sys, time, statistics
import numpy as np
from ai_edge_litert.interpreter import Interpreter
from device_agent.config import from_dict
from device_agent.agent import Agent
model, bundle, pub, data, rounds, n = sys.argv[1:7]
rounds, n = int(rounds), int(n)
cfg = from_dict({"device_id": "bench", "fleet_public_key": pub, "data_dir": data, "model": {"bundle": bundle},
                 "api": {"enabled": False}, "mqtt": {"enabled": False}, "telemetry": {"enabled": False}},
                environ={})
agent = Agent(cfg, with_updater=False)
agent.load_initial_model()
# the baseline drives the very interpreter the agent serves with: separate interpreters of the same model differ
# by up to ~20 % on this machine (placement, caches), far more than the overhead measured here
bare = agent.slot.runner.interpreter
i_idx = bare.get_input_details()[0]["index"]; o_idx = bare.get_output_details()[0]["index"]
shape = bare.get_input_details()[0]["shape"]
x = np.random.default_rng(0).integers(-128, 128, size=shape).astype(np.int8)
def run_bare():
    bare.set_tensor(i_idx, x); bare.invoke(); return bare.get_tensor(o_idx)
def run_agent():
    return agent.infer([x])[0][0]
assert np.array_equal(run_bare(), run_agent())
for _ in range(20):
    run_bare(); run_agent()
# one call of each, alternating which goes first, each timed on its own: both sides see the same load, and the
# median of the per-call times ignores the calls that another process preempted
res = {"bare": [], "agent": []}
clock = time.perf_counter
for i in range(rounds * n):
    order = ((res["bare"], run_bare), (res["agent"], run_agent))
    for out, fn in (order if i % 2 == 0 else order[::-1]):
        t0 = clock()
        fn()
        out.append(clock() - t0)
heavy = [m for m in sys.modules if m.split(".")[0] in ("tensorflow", "tf_keras", "keras")]
print(json.dumps({"bare": res["bare"], "agent": res["agent"], "heavy": heavy}))
"""

BARE_RSS = r"""
import sys, resource, psutil
import numpy as np
from ai_edge_litert.interpreter import Interpreter
it = Interpreter(model_path=sys.argv[1], num_threads=1)
it.allocate_tensors()
d = it.get_input_details()[0]
x = np.zeros(d["shape"], np.int8)
for _ in range(int(sys.argv[2])):
    it.set_tensor(d["index"], x); it.invoke(); it.get_tensor(it.get_output_details()[0]["index"])
print(psutil.Process().memory_info().rss)
"""


def _py() -> str:
    return sys.executable


def _env() -> dict[str, str]:
    return dict(os.environ, PYTHONPATH=str(REPO), TF_CPP_MIN_LOG_LEVEL="3")


def write_config(path: Path, data: Path, port: int, broker) -> Path:
    import tomli_w

    cfg = {"device_id": "bench", "fleet": "bench", "fleet_public_key": str(PUB), "data_dir": str(data),
           "log_level": "warning", "model": {"bundle": str(BUNDLE)}, "api": {"port": port},
           "telemetry": {"interval": 1.0},
           "mqtt": ({"host": broker.host, "port": broker.port} if broker else {"enabled": False})}
    path.write_text(tomli_w.dumps(cfg))
    return path


CORE = r"""
import sys
from device_agent.config import load_config
from device_agent.agent import Agent
Agent(load_config(sys.argv[1]), with_updater=False).run_forever()
"""


def start_agent(config: Path, url: str, x: np.ndarray, timeout: float = 30.0, core: bool = False):
    """Start ``python -m device_agent run`` (or, with ``core``, the agent without the update package); return
    (process, seconds until the first inference succeeded)."""
    from device_agent.client import AgentClient
    from device_agent.errors import ApiError

    t0 = time.perf_counter()
    argv = ([_py(), "-c", CORE, str(config)] if core
            else [_py(), "-m", "device_agent", "run", "--config", str(config)])
    proc = subprocess.Popen(argv, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=str(REPO))
    client = AgentClient(url, timeout=5)
    while True:
        try:
            client.infer(x)
            return proc, time.perf_counter() - t0
        except ApiError:
            if proc.poll() is not None or time.perf_counter() - t0 > timeout:
                raise RuntimeError("agent did not serve")
            time.sleep(0.005)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=40)
    ap.add_argument("--n", type=int, default=50)
    ap.add_argument("--cold", type=int, default=5)
    ap.add_argument("--json", dest="json_out")
    args = ap.parse_args()
    if not BUNDLE.exists():
        sys.exit("run benchmarks/agent/build_model.py first")
    from ai_edge_litert.interpreter import Interpreter

    from device_agent.client import AgentClient
    from tests.support.procs import Mosquitto, free_port, stop_pid

    out: dict = {"model": "MobileNetV2 alpha=0.35 96x96 int8", "threads": 1, "cpus": os.cpu_count()}
    tmp = Path(tempfile.mkdtemp(prefix="edgekit-bench-agent-"))

    # 1. in-process
    res = subprocess.run([_py(), "-c", INPROC, str(MODEL), str(BUNDLE), str(PUB), str(tmp / "inproc"),
                          str(args.rounds), str(args.n)], capture_output=True, text=True, env=_env(), check=True)
    r = json.loads(res.stdout.strip().splitlines()[-1])
    bare_ms, agent_ms = statistics.median(r["bare"]) * 1e3, statistics.median(r["agent"]) * 1e3
    q10 = lambda xs: sorted(xs)[len(xs) // 10]  # noqa: E731
    out["inprocess"] = {"bare_ms": round(bare_ms, 4), "agent_ms": round(agent_ms, 4),
                        "ratio": round(agent_ms / bare_ms, 4),
                        "ratio_p10": round(q10(r["agent"]) / q10(r["bare"]), 4),
                        "overhead_us": round((agent_ms - bare_ms) * 1e3, 2),
                        "calls": len(r["bare"]), "tensorflow_imported": r["heavy"]}

    # 2. local API round trip (real agent process, MQTT link to a real broker)
    broker = None
    try:
        broker = Mosquitto(tmp / "broker", extra_conf="user root\n" if os.geteuid() == 0 else "").start()
    except RuntimeError:
        broker = None
    bare = Interpreter(model_path=str(MODEL), num_threads=1)
    bare.allocate_tensors()
    d_in, d_out = bare.get_input_details()[0], bare.get_output_details()[0]
    x = np.random.default_rng(1).integers(-128, 128, size=d_in["shape"]).astype(np.int8)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    cfg = write_config(tmp / "agent.toml", tmp / "data", port, broker)
    proc, first_boot = start_agent(cfg, url, x)  # first boot: installs (verifies, extracts) the bundle
    import psutil

    first_boot_rss = psutil.Process(proc.pid).memory_info().rss
    stop_pid(proc.pid)
    proc, _ = start_agent(cfg, url, x)  # what a device runs after a restart: the store holds the model
    try:
        client = AgentClient(url)
        want = None
        for _ in range(20):
            bare.set_tensor(d_in["index"], x)
            bare.invoke()
            want = bare.get_tensor(d_out["index"])
            got = client.infer(x)[0]
        assert np.array_equal(want, got), "API output differs from bare LiteRT"
        times: dict[str, list[float]] = {"bare": [], "api": []}

        def run_bare():
            bare.set_tensor(d_in["index"], x)
            bare.invoke()
            bare.get_tensor(d_out["index"])

        order = ((times["bare"], run_bare), (times["api"], lambda: client.infer(x)))
        for i in range(args.rounds * args.n):  # alternating single calls, as in-process
            for sink, fn in (order if i % 2 == 0 else order[::-1]):
                t0 = time.perf_counter()
                fn()
                sink.append(time.perf_counter() - t0)
        b, a = statistics.median(times["bare"]) * 1e3, statistics.median(times["api"]) * 1e3
        out["api"] = {"bare_ms": round(b, 4), "api_ms": round(a, 4), "overhead_ms": round(a - b, 4),
                      "mqtt_link": broker is not None}
        agent_rss = psutil.Process(proc.pid).memory_info().rss
        agent_crypto = "cryptography" in open(f"/proc/{proc.pid}/maps").read()
    finally:
        stop_pid(proc.pid)
    # the same without the update package (which imports the signature code at start)
    proc, _ = start_agent(cfg, url, x, core=True)
    try:
        client = AgentClient(url)
        for _ in range(args.rounds * args.n // 5):
            client.infer(x)
        core_rss = psutil.Process(proc.pid).memory_info().rss
        core_crypto = "cryptography" in open(f"/proc/{proc.pid}/maps").read()
    finally:
        stop_pid(proc.pid)
    res = subprocess.run([_py(), "-c", BARE_RSS, str(MODEL), str(args.rounds * args.n // 5)], capture_output=True,
                         text=True, env=_env(), check=True)
    bare_rss = int(res.stdout.strip().splitlines()[-1])
    out["rss"] = {"bare_mb": round(bare_rss / 2**20, 1), "agent_mb": round(agent_rss / 2**20, 1),
                  "ratio": round(agent_rss / bare_rss, 3),
                  "signature_code_resident": agent_crypto,
                  "agent_first_boot_mb": round(first_boot_rss / 2**20, 1),
                  "core_agent_mb": round(core_rss / 2**20, 1), "core_ratio": round(core_rss / bare_rss, 3),
                  "core_signature_code_resident": core_crypto}

    # 4. cold start (restart: the store already holds the verified model)
    colds = []
    for _ in range(args.cold):
        proc, secs = start_agent(cfg, url, x)
        stop_pid(proc.pid)
        colds.append(secs)
    out["cold_start"] = {"restart_median_s": round(statistics.median(colds), 3),
                         "restart_max_s": round(max(colds), 3), "first_boot_s": round(first_boot, 3)}
    if broker is not None:
        broker.stop()

    text = json.dumps(out, indent=2)
    print(text)
    if args.json_out:
        Path(args.json_out).write_text(text + "\n")


if __name__ == "__main__":
    main()
