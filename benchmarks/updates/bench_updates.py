"""Update benchmark: what an update costs the apps that use the local API, and how fast a rollback is.

Model: the agent benchmark's MobileNetV2 int8 bundle (``benchmarks/agent/build_model.py``, built once with
TensorFlow in its own process) as v1, and the same model re-bundled as v2 (another sha256: a full update — download,
verification and self-test in child processes, a second interpreter, the swap). A real agent process, a real
Mosquitto, a local artifact server; a client thread sends local-API requests back to back the whole time.

Figures (each a ratio in the same run):
* p99 / max request latency while an update runs (desired → committed) against the same figures just before it;
  failed requests (goal: 0);
* rollback time from the request to the previous model serving: previous interpreter kept loaded (instant) against
  ``keep_previous_loaded = false`` (reloaded from the store);
* where the update's time goes (from the history timestamps).

    .venv/bin/python benchmarks/agent/build_model.py
    .venv/bin/python benchmarks/updates/bench_updates.py [--steady 5] [--runs 3] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))


def _pct(xs, q):
    return float(np.percentile(np.asarray(xs) * 1000.0, q)) if xs else float("nan")


class Load(threading.Thread):
    def __init__(self, agent, x):
        super().__init__(daemon=True)
        self.agent, self.x = agent, x
        self.samples: list[tuple[float, float, int, str | None]] = []  # (t_end, seconds, status, sha)
        self.stop_flag = threading.Event()

    def run(self):
        conn = self.agent._conn()
        while not self.stop_flag.is_set():
            t0 = time.perf_counter()
            try:
                status, _, sha = self.agent.infer(self.x, conn)
            except OSError:
                status, sha = -1, None
                conn.close()
                conn = self.agent._conn()
            t1 = time.perf_counter()
            self.samples.append((time.time(), t1 - t0, status, sha))
        conn.close()

    def window(self, t0, t1):
        return [s for s in self.samples if t0 <= s[0] <= t1]


def one_run(work: Path, built: dict, keep_loaded: bool, steady_s: float) -> dict:
    from edgekit.bundle import create_bundle, read_bundle
    from tests.support.procs import Mosquitto
    from tests.updates.artifacts import ArtifactServer
    from tests.updates.harness import AgentProc, EventLog, desired_for, write_config

    priv = Path(str(built["pub"])[:-4])
    v1 = built["bundle"]
    v2 = work / "v2.ekb"
    create_bundle(built["model"], v2, name="mobilenetv2", version="2.0.0", key=priv, force=True)
    broker = Mosquitto(work / "broker").start()
    server = ArtifactServer(work / "artifacts").start()
    events = EventLog(broker)
    data = work / "data"
    cfg = write_config(work / "agent.toml", pub=built["pub"], data_dir=data, bundle=v1, broker=broker,
                       update={"probation_s": 3.0, "keep_previous_loaded": keep_loaded, "self_test_runs": 30})
    agent = AgentProc(work, cfg, data)
    store = agent.store()
    store.set_current(store.install(v1, built["pub"]).sha256)
    try:
        agent.start()
        agent.wait_ready()
        spec = read_bundle(v1).manifest["inputs"][0]
        x = np.random.default_rng(0).integers(-128, 128, size=spec["shape"]).astype(spec["dtype"])
        load = Load(agent, x)
        load.start()
        time.sleep(steady_s)
        t_pub = time.time()
        server.add(v2, "v2.ekb")
        events.publish_desired(desired_for(v2, server.url("v2.ekb")))
        agent.wait_history(lambda h: [i for i in h if i["name"] == "switched"], timeout=120)
        t_switch = next(i["ts"] for i in agent.history() if i["name"] == "switched")
        # roll back in probation: the previous interpreter is loaded, or not (keep_previous_loaded)
        time.sleep(1.0)
        control_dir = data / "update"
        from device_agent.update import control

        control.post_rollback_request(control_dir)
        done = agent.wait_history(lambda h: [i for i in h if i["name"] == "rolled_back"], timeout=60)
        t_done = time.time()
        time.sleep(0.5)
        load.stop_flag.set()
        load.join(10)
        hist = agent.history()
        ts = {i["name"]: i["ts"] for i in hist}
        steady = [s[1] for s in load.window(t_pub - steady_s + 0.5, t_pub)]
        during = [s[1] for s in load.window(t_pub, t_done)]
        failed = sum(1 for s in load.samples if s[2] != 200)
        req = next(i for i in hist if i["name"] == "rollback_requested")
        return {
            "keep_previous_loaded": keep_loaded,
            "requests": len(load.samples), "failed": failed,
            "steady": {"n": len(steady), "p50_ms": _pct(steady, 50), "p99_ms": _pct(steady, 99),
                       "max_ms": max(steady) * 1000},
            "update": {"n": len(during), "p50_ms": _pct(during, 50), "p99_ms": _pct(during, 99),
                       "max_ms": max(during) * 1000},
            "rollback_s": done[0]["ts"] - req["ts"],
            "phases_s": {"download": ts["downloaded"] - ts["downloading"], "verify": ts["verified"] - ts["downloaded"],
                         "self_test": ts["self_test_passed"] - ts["self_test"],
                         "switch": ts["switched"] - ts["self_test_passed"],
                         "desired_to_switched": t_switch - t_pub},
        }
    finally:
        agent.stop()
        events.close()
        server.stop()
        broker.stop()


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steady", type=float, default=5.0, help="seconds of load before the update")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--json", dest="json_out")
    a = ap.parse_args()
    sys.path.insert(0, str(REPO / "benchmarks" / "agent"))
    from build_model import build

    built = build()
    results = []
    for r in range(a.runs):
        for keep in (True, False):
            with tempfile.TemporaryDirectory(prefix="bench-upd-") as d:
                res = one_run(Path(d), built, keep, a.steady)
            results.append(res)
            print(json.dumps(res))
    inst = [r["rollback_s"] for r in results if r["keep_previous_loaded"]]
    rel = [r["rollback_s"] for r in results if not r["keep_previous_loaded"]]
    summary = {
        "failed_requests": sum(r["failed"] for r in results),
        "p99_ratio_update_vs_steady": [round(r["update"]["p99_ms"] / r["steady"]["p99_ms"], 2) for r in results],
        "max_ratio_update_vs_steady": [round(r["update"]["max_ms"] / r["steady"]["max_ms"], 2) for r in results],
        "rollback_instant_ms_median": round(float(np.median(inst)) * 1000, 1),
        "rollback_reload_ms_median": round(float(np.median(rel)) * 1000, 1),
        "rollback_reload_vs_instant": round(float(np.median(rel) / np.median(inst)), 1),
    }
    print(json.dumps(summary, indent=1))
    if a.json_out:
        Path(a.json_out).write_text(json.dumps({"runs": results, "summary": summary}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
