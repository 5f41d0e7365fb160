"""Staged rollouts to 1,000 and 10,000 simulated devices through the real fleet: Mosquitto on the generated config
(password listener, per-device ACL), ``edgekit fleet serve`` (ingest, rollout engine, artifact server) and
``edgekit fleet simulate`` (virtual devices on asyncio loops, one process per 2,500 devices), each its own process.

    .venv/bin/python benchmarks/rollout/bench_scale.py [--devices 1000 10000] [--db sqlite|postgresql] [--smoke]

Per fleet size: provision N devices (one batch), start them on v1 and wait until the registry shows every one
online; roll v1 out to all (instant: they run it) so every device has a desired state; then time
``rollout create`` of v2 (stages 1%/10%/100%, soak 0) to ``completed``. For the largest size, a faulty v3
(20% of the devices fail its self-test) must stop at its 1% canary, and a plain subscriber on ``desired/#``
counts the devices that ever received v3's desired state beyond that canary. Recorded: rollout time, the engine's
tick times (from the service's own /stats), ``fleet serve`` RSS (peak, sampled every 0.5 s), downloads per
second and bytes served (artifact server counters), and the load average. ``--smoke``: 50 devices, nothing written.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

sys.path.append(str(Path(__file__).resolve().parents[1]))
import benchlib  # noqa: E402,I001 (puts the repository on sys.path)

REPO = benchlib.REPO

from edgekit.procs import free_port, stop_pid, wait_port  # noqa: E402

CACHE = REPO / ".cache" / "bench-scale"


def build_model() -> Path:
    """A tiny dense classifier as .tflite (cached): only its bytes matter to simulated devices."""
    path = CACHE / "tiny.tflite"
    if path.exists():
        return path
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import numpy as np
    import tensorflow as tf

    CACHE.mkdir(parents=True, exist_ok=True)
    tf.keras.utils.set_random_seed(0)
    m = tf.keras.Sequential([tf.keras.Input((64,)), tf.keras.layers.Dense(32, activation="relu"),
                             tf.keras.layers.Dense(10, activation="softmax")])
    m(np.zeros((1, 64), np.float32))
    path.write_bytes(tf.lite.TFLiteConverter.from_keras_model(m).convert())
    return path


class Postgres:
    """A throwaway PostgreSQL cluster (initdb + pg_ctl as the postgres user when root) on a free port."""

    def __init__(self):
        self.dir = Path(tempfile.mkdtemp(prefix="edgekit-bench-pg-"))
        self.port = free_port()
        self.pid = None

    @staticmethod
    def _bin(name):
        for base in sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True):
            if (base / name).exists():
                return str(base / name)
        return shutil.which(name) or name

    def _run(self, argv):
        if os.geteuid() == 0:
            shutil.chown(self.dir, "postgres", "postgres")
            argv = ["runuser", "-u", "postgres", "--"] + argv
        subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    def start(self):
        data = self.dir / "data"
        self._run([self._bin("initdb"), "-D", str(data), "-U", "edgekit", "--auth=trust", "-E", "UTF8"])
        self._run([self._bin("pg_ctl"), "-D", str(data), "-l", str(self.dir / "pg.log"), "-w", "-o",
                   f"-h 127.0.0.1 -p {self.port} -k {self.dir} -F -c max_connections=200", "start"])
        self.pid = int((data / "postmaster.pid").read_text().splitlines()[0])
        wait_port(self.port)
        return self

    def url(self, db="postgres"):
        return f"postgresql+psycopg://edgekit@127.0.0.1:{self.port}/{db}"

    def stop(self):
        if self.pid:
            stop_pid(self.pid, timeout=30)
        shutil.rmtree(self.dir, ignore_errors=True)


def sim_processes(n: int) -> int:
    """Simulator processes for ``n`` devices: one per 2,500 (one event loop saturates near 10,000), at most 4."""
    return max(1, min(4, round(n / 2500)))


def rss(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


class Sampler(threading.Thread):
    def __init__(self, pids: dict[str, int]):
        super().__init__(daemon=True)
        self.pids = pids
        self.peak = {k: 0 for k in pids}
        self.stop_ev = threading.Event()

    def run(self):
        while not self.stop_ev.wait(0.5):
            for k, pid in list(self.pids.items()):
                self.peak[k] = max(self.peak.get(k, 0), rss(pid) + sum(rss(c) for c in children(pid)))


def children(pid: int) -> list[int]:
    """Direct child processes (the simulator's shards)."""
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(x) for x in f.read().split()]
    except OSError:
        return []


def get_json(url):
    with urllib.request.urlopen(url, timeout=5) as r:
        return json.loads(r.read())


def wait_for(cond, timeout, what, interval=0.5):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return time.monotonic()
        time.sleep(interval)
    raise RuntimeError(f"timed out after {timeout:.0f}s waiting for {what}")


def run_size(n: int, db: str, work: Path, faulty_canary: bool, log, timed: bool = True) -> dict:
    from sqlalchemy import func, select

    from edgekit.bundle import create_bundle, read_bundle
    from fleet import broker
    from fleet.link import FleetLink
    from fleet.models import Device
    from fleet.rollout.service import create_rollout, open_store
    from fleet.setup import init_fleet

    pg = Postgres().start() if db == "postgresql" else None
    procs = []
    try:
        if pg:
            import psycopg

            with psycopg.connect(pg.url().replace("postgresql+psycopg", "postgresql"), autocommit=True) as c:
                c.execute("CREATE DATABASE fleet")
        ctx = init_fleet(work / "fleet", fleet_id="scale", tls_port=free_port(), password_port=free_port(),
                         artifacts_port=free_port(), db_url=pg.url("fleet") if pg else "")
        model = build_model()
        key = ctx.signing_key_path
        bundles = {v: create_bundle(model, work / f"tiny-{v}.ekb", name="tiny", version=v, key=key)
                   for v in ("1.0.0", "2.0.0", "3.0.0")}
        broker.start(ctx)
        env = {**os.environ, "PYTHONPATH": str(REPO), "TF_CPP_MIN_LOG_LEVEL": "3"}
        logs = work / "logs"
        logs.mkdir()

        def cli(name, *args):
            f = open(logs / f"{name}.log", "ab")
            p = subprocess.Popen([sys.executable, "-m", "edgekit.cli", "fleet", "--data-dir", str(ctx.data_dir),
                                  *args], stdout=f, stderr=subprocess.STDOUT, env=env, start_new_session=True)
            f.close()
            procs.append(p)
            return p

        serve = cli("serve", "serve")
        wait_for(lambda: _ok(ctx.artifact_url + "/healthz"), 60, "fleet serve")
        stats_url = ctx.artifact_url + "/stats"
        report_path = work / "sim.json"
        t0 = time.monotonic()
        sim = cli("simulate", "simulate", "--devices", str(n), "--provision", "--bundle", str(bundles["1.0.0"]),
                  "--faulty", "20%" if faulty_canary else "0%", "--faulty-version", "3.0.0",
                  "--connect-concurrency", "200", "--json", str(report_path), "--summary-interval", "10",
                  "--processes", str(sim_processes(n)))
        mosq = int(ctx.paths.broker_pid.read_text())
        sampler = Sampler({"serve": serve.pid, "broker": mosq, "simulate": sim.pid})
        sampler.start()
        engine = ctx.engine()

        def online():
            if sim.poll() is not None:
                raise RuntimeError(f"simulate exited: {(logs / 'simulate.log').read_text()[-2000:]}")
            with engine.connect() as c:
                return c.scalar(select(func.count()).select_from(Device).where(Device.online.is_(True))) == n
        wait_for(online, 1200, f"{n} devices online", 1.0)
        t_online = time.monotonic() - t0
        log(f"  {n} devices provisioned and online after {t_online:.0f}s")
        store = open_store(ctx)
        tb = time.monotonic()
        base = create_rollout(ctx, store, bundles["1.0.0"], "all", stages="100%", soak="0")
        wait_for(lambda: store.get(base.id).state == "completed", 600, "the v1 baseline", 1.0)
        baseline_s = round(time.monotonic() - tb, 1)
        log(f"  v1 baseline complete after {baseline_s}s")
        art0 = get_json(stats_url)["http"]["artifacts"]
        load0 = os.getloadavg()
        if not timed:  # --faulty-only: straight to the faulty canary
            result = {"devices": n, "db": db, "online_after_s": round(t_online, 1), "baseline_s": baseline_s,
                      "rollout_state": "not run (--faulty-only)", "loadavg_before": [round(x, 2) for x in load0]}
        else:
            ts = time.monotonic()
            r = create_rollout(ctx, store, bundles["2.0.0"], "all", stages="1%,10%,100%", soak="0",
                               device_timeout="600s")
            result = timed_rollout(ctx, store, r, ts, stats_url, art0, load0, bundles, n, db, t_online, log)
            result["baseline_s"] = baseline_s
        if faulty_canary:
            seen: dict[str, set] = {}
            lock = threading.Lock()
            bad = read_bundle(bundles["3.0.0"]).sha256

            def on(topic, payload):
                if payload and bad.encode() in payload:
                    with lock:
                        seen.setdefault(topic.split("/")[4], set()).add(bad)
            watch = FleetLink.from_context(ctx, client_id="bench-desired-watch",
                                           subscriptions=[(f"edgekit/v1/{ctx.fleet_id}/devices/+/desired", 1)],
                                           on_message=on).connect()
            tf0 = time.monotonic()
            r3 = create_rollout(ctx, store, bundles["3.0.0"], "all", stages="1%,10%,100%", soak="0")
            wait_for(lambda: store.get(r3.id).state in ("completed", "paused", "aborted"), 900, "the v3 rollout", 0.5)
            stop_s = time.monotonic() - tf0
            time.sleep(5)  # anything published late would arrive now
            f3 = store.get(r3.id)
            canary = set(f3.assignments)
            with lock:
                told = set(seen)
            watch.close()
            result["faulty"] = {"state": f3.state, "stage": f3.stage, "stopped_after_s": round(stop_s, 2),
                                "canary": len(canary), "told_bad_desired": len(told),
                                "beyond_canary": len(told - canary),
                                "failed_in_canary": sum(1 for a in f3.assignments.values() if a.status == "failed")}
            log(f"  faulty v3: {f3.state} at stage {f3.stage + 1}, {len(told - canary)} devices beyond the canary "
                f"saw its desired state")
        st = get_json(stats_url)
        if not timed:
            art = st["http"]["artifacts"]
            result["artifacts"] = {k: art[k] - art0.get(k, 0) if k in ("downloads", "bytes_sent", "busy") else art[k]
                                   for k in art}
        result["engine"] = st["engine"]
        result["outbox"] = st.get("outbox")
        result["simulator_processes"] = sim_processes(n)
        result["ingest"] = {k: st["ingest"][k] for k in ("received", "samples", "events", "states", "batches")}
        shards = children(sim.pid)
        stop_pid(sim.pid, timeout=180)
        for pid in shards:  # normally gone with their parent; never left behind
            stop_pid(pid, timeout=30)
        procs.remove(sim)
        sampler.stop_ev.set()
        result["rss_peak_mb"] = {k: round(v / 2**20, 1) for k, v in sampler.peak.items()}
        try:
            rep = json.loads(report_path.read_text())
            result["simulator"] = {k: rep["summary"][k] for k in ("downloads", "download_bytes", "download_retries",
                                                                   "committed", "self_test_failed", "samples")}
        except (OSError, ValueError):
            pass
        return result
    finally:
        for p in procs:
            stop_pid(p.pid, timeout=60)
        try:
            broker.stop(ctx)
        except Exception:  # noqa: BLE001
            pass
        if pg:
            pg.stop()


def timed_rollout(ctx, store, r, ts, stats_url, art0, load0, bundles, n, db, t_online, log) -> dict:
    """Wait for the timed v2 rollout ``r`` (created at monotonic ``ts``) and collect its figures."""
    from edgekit.bundle import read_bundle

    wait_for(lambda: store.get(r.id).state in ("completed", "paused", "aborted"), 1800, "the v2 rollout", 0.5)
    rollout_s = time.monotonic() - ts
    load1 = os.getloadavg()
    final = store.get(r.id)
    st = get_json(stats_url)
    art1 = st["http"]["artifacts"]
    result = {"devices": n, "db": db, "online_after_s": round(t_online, 1), "rollout_state": final.state,
              "rollout_s": round(rollout_s, 2),
              "stage_decisions": [(e["event"], round(e["ts"] - final.created_at, 2), e["numbers"].get("stage_size"))
                                  for e in store.audit(r.id) if e["event"] in ("advance", "complete")],
              "downloads": art1["downloads"] - art0["downloads"],
              "bytes_served": art1["bytes_sent"] - art0["bytes_sent"],
              "busy_503": art1["busy"] - art0["busy"], "peak_active_downloads": art1["peak_active"],
              "bundle_size": read_bundle(bundles["2.0.0"]).size,
              "loadavg_before": [round(x, 2) for x in load0], "loadavg_after": [round(x, 2) for x in load1]}
    result["downloads_per_s"] = round(result["downloads"] / rollout_s, 1)
    log(f"  v2 rollout {final.state} in {rollout_s:.1f}s ({result['downloads']} downloads)")
    return result


def _ok(url):
    try:
        with urllib.request.urlopen(url, timeout=1):
            return True
    except OSError:
        return False


def main(argv=None) -> int:
    ap = benchlib.add_options(argparse.ArgumentParser(description=__doc__.splitlines()[0]))
    ap.add_argument("--devices", type=int, nargs="+", default=[1000, 10000])
    ap.add_argument("--db", choices=["sqlite", "postgresql"], default="sqlite")
    ap.add_argument("--faulty-only", action="store_true",
                    help="skip the timed v2 rollout: provision, baseline, then only the faulty canary (largest size)")
    args = ap.parse_args(argv)
    run = benchlib.Run(__file__, args)
    sizes = [50] if args.smoke else args.devices
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # inherited by mosquitto and the simulator
    need = max(sizes) * 2 + 500
    if hard != resource.RLIM_INFINITY and hard < need:
        print(f"warning: RLIMIT_NOFILE hard limit {hard} < {need} needed for {max(sizes)} devices", file=sys.stderr)
    results = []
    for n in sizes:
        print(f"{n} devices, {args.db}:", flush=True)
        work = Path(tempfile.mkdtemp(prefix="edgekit-bench-scale-"))
        try:
            results.append(run_size(n, args.db, work, faulty_canary=(n == max(sizes)), timed=not args.faulty_only,
                                    log=lambda m: print(m, flush=True)))
        except BaseException:
            print(f"failed; logs kept in {work / 'logs'}", file=sys.stderr)
            raise
        shutil.rmtree(work, ignore_errors=True)
        print(json.dumps(results[-1], indent=1), flush=True)
    figures = {"db": args.db, "results": results}
    run.finish(figures, table(figures))
    return 0


GOAL_ROLLOUT_S = {1000: 60, 10000: 180}  # issue 14a's goals for `rollout create` -> completed
GOAL_TICK_S = 1.0


def table(f: dict) -> dict:
    """The README table from the figures (pure): one column per fleet size. An interrupted run (recorded by hand
    from the running service, without ``rollout_s``) shows how far it got."""
    res = f["results"]

    def rollout(r):
        if str(r.get("rollout_state", "")).startswith("not run"):
            return f"not run in this run (faulty canary only; baseline v1 to all in {r.get('baseline_s')} s)"
        if r.get("rollout_state") == "completed":
            return f"**{r['rollout_s']} s**"
        done = [f"stage {p} at {r[k]} s" for p, k in (("1%", "stage_1pct_done_s"), ("10%", "stage_10pct_done_s"))
                if k in r]
        return "not completed: " + ", ".join(done + [r.get("note", r.get("rollout_state", "?"))])

    def tick(r):
        e = r["engine"]
        return f"{e['median_s']} / {e['p95_s']} / {e['max_s']} s"

    def rss(r, key):
        return r.get("rss_peak_mb", {}).get(key) or r.get("rss_mb", {}).get(f"{key}_peak") or \
            r.get("rss_mb", {}).get(key)

    def downloads(r):
        if "downloads_per_s" in r:
            return f"{r['downloads_per_s']}/s / {r['bytes_served'] / 1e6:.1f} MB"
        a = r.get("artifacts", {})
        return f"{a.get('downloads', '?')} by the stop / {a.get('bytes_sent', 0) / 1e6:.1f} MB"

    def canary(r):
        if "faulty" in r:
            bad = r["faulty"]
            return f"{bad['beyond_canary']} (v3 {bad['state']} after {bad['stopped_after_s']} s)"
        return r.get("faulty_canary", "— (only at the largest size)")

    goals = " / ".join(f"≤ {GOAL_ROLLOUT_S[r['devices']]} s" for r in res if r["devices"] in GOAL_ROLLOUT_S)
    rows = [["`rollout create` → completed", *map(rollout, res), goals or "—"],
            ["engine tick median / p95 / max", *map(tick, res), f"< {GOAL_TICK_S:g} s"],
            ["`fleet serve` peak RSS", *(f"{rss(r, 'serve')} MB" for r in res), "recorded"],
            ["Mosquitto RSS", *(f"{rss(r, 'broker')} MB" for r in res), "recorded"],
            ["simulator peak RSS (sum over its processes)",
             *(f"{rss(r, 'simulate')} MB ({r.get('simulator_processes', 1)} process(es))" for r in res), "recorded"],
            ["desired states: largest outbox round (publish + PUBACKs), outside the tick",
             *(f"{r['outbox']['max_round_s']} s" if r.get("outbox") else "— (inside the tick)" for r in res),
             "recorded"],
            ["downloads per second / bytes served", *map(downloads, res), "recorded"],
            ["faulty canary: devices beyond it that saw the bad desired", *map(canary, res), "0"]]
    return {"columns": ["figure", *(f"{r['devices']:,} devices ({r['db']})" for r in res), "goal"], "rows": rows}


if __name__ == "__main__":
    sys.exit(main())
