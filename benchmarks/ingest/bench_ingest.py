"""Ingest throughput of `edgekit fleet serve` into SQLite and PostgreSQL vs mosquitto_sub and raw paho, in one run.

Each consumer drains the same backlog on the same broker (Mosquitto running the fleet's GENERATED config, mTLS):
the consumer first connects with a persistent session and subscribes, disconnects, the backlog of N telemetry
messages (agent-shaped: one sample of system + inference figures each) is published, and the consumer reconnects.
The rate is N / (time of the last message counted — for ingest: committed to the store — minus the first received).

  - mosquitto_sub: the C client of Debian's mosquitto-clients (same TLS identity, persistent MQTT 5 session, QoS 1),
            printing a receive timestamp per message (the baseline of the goal: ingest >= 0.8x its rate);
  - raw:    a paho MQTT 5 client (same TLS identity) that only counts messages (auto PUBACK);
  - sqlite: FleetService (the code `edgekit fleet serve` runs: decode, validate, batch, commit, then PUBACK);
  - pg:     the same with a PostgreSQL store (server started with pg_ctl on a free port).

Each consumer runs in its own process; phases run one after another; the whole sequence repeats --rounds times and
the report gives the median. ``BENCH_INGEST_PROFILE=PREFIX`` profiles the ingest writer thread with cProfile
(``PREFIX.<pid>.prof``; the profiler slows it, so such a run's rates are not figures). Usage:

    .venv/bin/python benchmarks/ingest/bench_ingest.py [--messages 20000] [--rounds 3] [--smoke] [--out FILE]

A full run writes benchmarks/ingest/bench_ingest.json; ``--smoke`` drains 300 messages from 5 devices once per
consumer and writes nothing into the repository.
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

sys.path.append(str(Path(__file__).resolve().parents[1]))
import benchlib  # noqa: E402
from benchlib import REPO  # noqa: E402


def payload(dev: str, seq: int) -> bytes:
    from edgekit.protocol import TelemetryMessage

    s = {"seq": seq, "ts": time.time(), "interval_s": 10.0,
         "system": {"cpu_percent": 12.5, "mem_total": 8_000_000_000, "mem_available": 5_000_000_000,
                    "mem_percent": 37.5, "uptime_s": 1234.5, "agent_uptime_s": 100.0, "agent_rss": 52_000_000,
                    "agent_cpu_percent": 3.1, "load": [0.5, 0.4, 0.3], "disk_percent": 40.0,
                    "temperature_c": {"cpu-thermal": 48.2}},
         "inference": {"digits@1.0.0": {"count": 120, "errors": 0, "error_rate": 0.0, "p50_ms": 0.9,
                                        "p95_ms": 1.4, "p99_ms": 2.0, "mean_ms": 1.0}}}
    return TelemetryMessage(dev, [s]).encode()


# --- consumer processes ----------------------------------------------------------------------------------------------


def end_session(ctx, client_id: str) -> None:
    """Discard a persistent session (clean start), so the next phase's backlog is not split with or queued for it."""
    from fleet.link import FleetLink

    FleetLink.from_context(ctx, client_id=client_id, clean_start=True).connect().close()


def consume_raw(ctx, n: int, phase: str) -> dict:
    import threading

    from edgekit.protocol import fleet_filter
    from fleet.link import FleetLink

    state = {"n": 0, "t0": None, "t1": None}
    done = threading.Event()

    def on_message(topic, p):
        if state["t0"] is None:
            state["t0"] = time.perf_counter()
        state["n"] += 1
        if state["n"] >= n:
            state["t1"] = time.perf_counter()
            done.set()

    subs = [(fleet_filter(ctx.fleet_id, "telemetry"), 1)]
    link = FleetLink.from_context(ctx, client_id="bench-raw", clean_start=False, session_expiry=3600,
                                  subscriptions=subs, on_message=on_message)
    link.connect()
    if phase == "prepare":
        time.sleep(0.3)
        link.close()
        return {}
    ok = done.wait(600)
    link.close()
    end_session(ctx, "bench-raw")
    return {"count": state["n"], "seconds": (state["t1"] or time.perf_counter()) - state["t0"], "complete": ok}


def _profiled(svc, out: str) -> None:
    """Profile the writer thread (where ingest spends its time) with cProfile; stats go to ``out``."""
    import cProfile

    run = svc._run

    def profiled_run():
        prof = cProfile.Profile()
        prof.enable()
        try:
            run()
        finally:
            prof.disable()
            prof.dump_stats(out)

    svc._run = profiled_run


def mosquitto_sub_argv(ctx, client_id: str) -> list[str]:
    """The C client (Debian mosquitto-clients) with the fleet service's TLS identity and a persistent MQTT 5
    session (clean start off, session expiry), QoS 1 on the fleet's telemetry filter."""
    from edgekit.protocol import fleet_filter

    p = ctx.paths
    return ["mosquitto_sub", "-V", "mqttv5", "-h", ctx.broker_host, "-p", str(ctx.broker_port),
            "--cafile", str(p.ca_cert), "--cert", str(p.service_cert), "--key", str(p.service_key),
            "-i", client_id, "-c", "-x", "3600", "-q", "1", "-t", fleet_filter(ctx.fleet_id, "telemetry")]


def consume_mosquitto_sub(ctx, n: int, phase: str) -> dict:
    """mosquitto_sub drains the backlog and prints one receive timestamp per message (``-F %U``: UNIX time with
    nanoseconds, taken as it handles the message); the rate is N over last minus first."""
    argv = mosquitto_sub_argv(ctx, "bench-mosq")
    if phase == "prepare":
        subprocess.run(argv + ["-E"], check=True, timeout=30)
        return {}
    res = subprocess.run(argv + ["-C", str(n), "-F", "%U", "-W", "600"], capture_output=True, text=True,
                         timeout=660)
    stamps = [float(x) for x in res.stdout.split()]
    end_session(ctx, "bench-mosq")
    return {"count": len(stamps), "seconds": (stamps[-1] - stamps[0]) if len(stamps) > 1 else 0.0,
            "complete": len(stamps) >= n and res.returncode == 0}


def consume_ingest(ctx, n: int, phase: str) -> dict:
    from fleet.service import FleetService, ServiceOptions

    svc = FleetService(ctx, ServiceOptions(replica="bench", http=False, stats_interval=3600, rollouts=False))
    if phase == "drain" and os.environ.get("BENCH_INGEST_PROFILE"):
        _profiled(svc, os.environ["BENCH_INGEST_PROFILE"] + f".{os.getpid()}.prof")
    svc.start(wait_connected=10)
    if phase == "prepare":
        time.sleep(0.5)
        svc.stop()
        return {}
    t0 = None
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        st = svc.ingest.stats
        if t0 is None and st.received:
            t0 = time.perf_counter()
        if svc.acked >= n:  # acked == committed (a message is acknowledged only after its batch commits)
            break
        time.sleep(0.002)
    t1 = time.perf_counter()
    svc.stop()
    end_session(ctx, svc.link.client_id)
    st = svc.ingest.stats
    from fleet.store import counts

    stored = counts(ctx.engine())
    return {"count": st.samples, "seconds": t1 - t0, "complete": svc.acked >= n, "batches": st.batches,
            "stored_telemetry": stored["telemetry"], "stored_inference": stored["inference"]}


def child_main(argv) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("kind")
    ap.add_argument("phase")
    ap.add_argument("data_dir")
    ap.add_argument("--db", default=None)
    ap.add_argument("--messages", type=int)
    a = ap.parse_args(argv)
    from fleet.config import FleetContext

    ctx = FleetContext.load(a.data_dir, a.db)
    fn = {"raw": consume_raw, "mosquitto_sub": consume_mosquitto_sub}.get(a.kind, consume_ingest)
    print(json.dumps(fn(ctx, a.messages, a.phase)))
    return 0


KINDS = ("mosquitto_sub", "raw", "sqlite", "pg")
LABELS = {"mosquitto_sub": "mosquitto_sub, C client (baseline)", "raw": "raw paho subscriber",
          "sqlite": "ingest → SQLite (WAL)", "pg": "ingest → PostgreSQL"}
GOAL = 0.8

# --- orchestration ---------------------------------------------------------------------------------------------------


def run_child(kind, phase, ctx, db, n):
    argv = [sys.executable, __file__, "--child", kind, phase, str(ctx.data_dir), "--messages", str(n)]
    if db:
        argv += ["--db", db]
    return subprocess.Popen(argv, stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(REPO)})


def publish_backlog(ctx, devices, n):
    from edgekit.protocol import Topic
    from fleet.link import FleetLink

    link = FleetLink.from_context(ctx, client_id="bench-pub").connect()
    infos = []
    for i in range(n):
        dev = devices[i % len(devices)]
        infos.append(link.client.publish(str(Topic(ctx.fleet_id, dev, "telemetry")), payload(dev, i), qos=1))
        if len(infos) >= 500:
            for info in infos:
                info.wait_for_publish(60)
            infos = []
    for info in infos:
        info.wait_for_publish(60)
    link.close()


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        return child_main(sys.argv[2:])
    ap = benchlib.add_options(argparse.ArgumentParser(description=__doc__.splitlines()[0]))
    ap.add_argument("--messages", type=int, default=None, help="backlog per phase (default 20000; smoke 300)")
    ap.add_argument("--devices", type=int, default=None, help="devices publishing it (default 20; smoke 5)")
    ap.add_argument("--rounds", type=int, default=None, help="default 3 (smoke 1)")
    args = ap.parse_args()
    args.messages = args.messages or (300 if args.smoke else 20000)
    args.devices = args.devices or (5 if args.smoke else 20)
    args.rounds = args.rounds or (1 if args.smoke else 3)
    import shutil

    if shutil.which("mosquitto_sub") is None:
        print("mosquitto_sub not found: install the Debian package mosquitto-clients (scripts/bootstrap.sh does)",
              file=sys.stderr)
        return 2
    run = benchlib.Run(__file__, args)

    from fleet import broker
    from fleet.db import upgrade
    from fleet.provision import provision
    from fleet.setup import init_fleet
    from edgekit.procs import free_port
    from edgekit.servers import Postgres

    work = Path(tempfile.mkdtemp(prefix="edgekit-bench-ingest-"))
    pg = Postgres(work / "pg").start()
    results: dict[str, list[dict]] = {k: [] for k in KINDS}
    try:
        import psycopg

        ctx = init_fleet(work / "fleet", fleet_id="bench", tls_port=free_port(), artifacts_port=free_port())
        devices = [f"dev-{i:03d}" for i in range(args.devices)]
        for d in devices:
            provision(ctx, d)
        broker.start(ctx)
        for r in range(args.rounds):
            for kind in KINDS:
                db = None
                if kind == "sqlite":
                    db = f"sqlite:///{work / f'r{r}.db'}"
                elif kind == "pg":
                    name = f"bench_r{r}"
                    with psycopg.connect(pg.url().replace("postgresql+psycopg", "postgresql"), autocommit=True) as c:
                        c.execute(f"CREATE DATABASE {name}")
                    db = pg.url(name)
                if db:  # a fresh store holding the same provisioned devices
                    upgrade(db)
                    from fleet.db import make_engine
                    from fleet.registry import Registry

                    eng = make_engine(db)
                    reg = Registry(eng, ctx.fleet_id)
                    for d in devices:
                        reg.add(d)
                    eng.dispose()
                prep = run_child(kind, "prepare", ctx, db, args.messages)
                prep.communicate(timeout=60)
                publish_backlog(ctx, devices, args.messages)
                proc = run_child(kind, "drain", ctx, db, args.messages)
                out, _ = proc.communicate(timeout=900)
                res = json.loads(out.strip().splitlines()[-1])
                res["rate"] = res["count"] / res["seconds"] if res["seconds"] else 0.0
                results[kind].append(res)
                stored = (f", stored {res['stored_telemetry']}+{res['stored_inference']} rows"
                          if "stored_telemetry" in res else "")
                print(f"round {r + 1} {kind:>13}: {res['count']} msgs in {res['seconds']:.2f}s = {res['rate']:,.0f}/s"
                      f"{stored}{'' if res['complete'] else ' (INCOMPLETE)'}", file=sys.stderr)
    finally:
        try:
            broker.stop(ctx)
        finally:
            pg.stop()
            shutil.rmtree(work, ignore_errors=True)
    med = {k: statistics.median(r["rate"] for r in v) for k, v in results.items()}
    ratios = {f"{store}_vs_{base}": med[store] / med[base] for store in ("sqlite", "pg")
              for base in ("mosquitto_sub", "raw")}
    report = {"messages": args.messages, "devices": args.devices, "rounds": args.rounds, "median_rate": med,
              "ratios": ratios, "goal": GOAL, "all": results}
    for k in KINDS:
        extra = "".join(f"   {ratios[f'{k}_vs_{b}']:.2f}x {b}" for b in ("mosquitto_sub", "raw")
                        if f"{k}_vs_{b}" in ratios)
        print(f"{LABELS[k]:<34}{med[k]:>9,.0f} msg/s{extra}", file=sys.stderr)
    rows = []
    for k in KINDS:
        if k in ("sqlite", "pg"):
            vs = [f"**{ratios[f'{k}_vs_mosquitto_sub']:.2f}×**", f"{ratios[f'{k}_vs_raw']:.2f}×", f"≥ {GOAL}×"]
        else:
            vs = ["1.00×" if k == "mosquitto_sub" else f"{med[k] / med['mosquitto_sub']:.2f}×", "", ""]
        rows.append([LABELS[k], f"{med[k]:,.0f} msg/s", *vs])
    run.finish(report, {"columns": [f"consumer (median of {args.rounds})", "rate", "vs mosquitto_sub",
                                    "vs raw paho", "goal (vs mosquitto_sub)"], "rows": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
