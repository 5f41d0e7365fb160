"""Bytes per stored telemetry sample in PostgreSQL and SQLite (table + indexes), for capacity planning.

    .venv/bin/python benchmarks/ingest/bench_rowsize.py [--samples 100000] [--smoke]

Writes samples shaped like the agent's (the system figures of ``device_agent.telemetry.SystemProbe`` and one
model's inference figures) through the fleet's own row builders and batch writer, then measures
``pg_total_relation_size`` (after VACUUM ANALYZE) and the SQLite file growth, divided by the sample count.
docs/scaling.md sizes a 100,000-device fleet from these figures.
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.append(str(Path(__file__).resolve().parents[1]))
import benchlib  # noqa: E402,I001 (puts the repository on sys.path)

REPO = benchlib.REPO
sys.path.insert(0, str(REPO / "benchmarks" / "rollout"))

from bench_scale import Postgres  # noqa: E402


def agent_sample(seq: int, ts: float, rng: random.Random) -> dict:
    return {"seq": seq, "ts": ts, "interval_s": 10.0,
            "system": {"cpu_percent": round(rng.uniform(0, 100), 1), "mem_total": 4_000_000_000,
                       "mem_available": rng.randrange(1_000_000_000, 3_000_000_000), "mem_percent": 41.3,
                       "uptime_s": 123456.7, "agent_uptime_s": 3456.1, "agent_rss": 48_000_000,
                       "agent_cpu_percent": 3.1, "load": [0.52, 0.41, 0.33], "disk_total": 31_000_000_000,
                       "disk_free": 20_000_000_000, "disk_percent": 35.5, "temperature_c": {"cpu-thermal": 51.2}},
            "inference": {"mobilenet@2.0.0": {"count": 50, "errors": 0, "p50_ms": 11.2, "p95_ms": 14.8,
                                              "p99_ms": 17.9}}}


def fill(url: str, n: int, devices: int = 200) -> None:
    from fleet.db import make_engine, upgrade
    from fleet.rows import inference_rows, system_row
    from fleet.store import write_batch

    upgrade(url)
    engine = make_engine(url)
    rng = random.Random(0)
    now = time.time()
    per = n // devices
    for d in range(devices):
        dev = f"dev{d:05d}"
        samples = [agent_sample(s, now - (per - s) * 10, rng) for s in range(per)]
        with engine.begin() as conn:
            write_batch(conn, telemetry=[system_row(dev, x, x["ts"]) for x in samples],
                        inference=[r for x in samples for r in inference_rows(dev, x)])
    engine.dispose()


def measure(n: int) -> dict:
    import psycopg

    out = {"samples": n}
    pg = Postgres().start()
    try:
        with psycopg.connect(pg.url().replace("postgresql+psycopg", "postgresql"), autocommit=True) as c:
            c.execute("CREATE DATABASE sizing")
        fill(pg.url("sizing"), n)
        with psycopg.connect(pg.url("sizing").replace("postgresql+psycopg", "postgresql"), autocommit=True) as c:
            c.execute("VACUUM ANALYZE")
            for table in ("telemetry", "inference"):
                total = c.execute(f"SELECT pg_total_relation_size('{table}')").fetchone()[0]
                heap = c.execute(f"SELECT pg_relation_size('{table}')").fetchone()[0]
                rows = c.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
                out[f"pg_{table}_bytes_per_row"] = round(total / rows, 1)
                out[f"pg_{table}_heap_bytes_per_row"] = round(heap / rows, 1)
        out["pg_bytes_per_sample"] = round(out["pg_telemetry_bytes_per_row"] + out["pg_inference_bytes_per_row"], 1)
    finally:
        pg.stop()
    with tempfile.TemporaryDirectory() as d:
        db = Path(d) / "f.sqlite"
        from fleet.db import upgrade

        upgrade(f"sqlite:///{db}")
        before = db.stat().st_size
        fill(f"sqlite:///{db}", n)
        import sqlite3

        con = sqlite3.connect(db)
        con.execute("VACUUM")
        con.close()
        out["sqlite_bytes_per_sample"] = round((db.stat().st_size - before) / n, 1)
    return out


def main(argv=None) -> int:
    ap = benchlib.add_options(argparse.ArgumentParser(description=__doc__.splitlines()[0]))
    ap.add_argument("--samples", type=int, default=100_000)
    args = ap.parse_args(argv)
    run = benchlib.Run(__file__, args)
    res = measure(2000 if args.smoke else args.samples)
    run.finish(res, table(res))
    return 0


def table(f: dict) -> dict:
    """The README table from the figures (pure)."""
    return {"columns": [f"store ({f['samples']:,} samples)",
                        "bytes per agent-shaped sample (one model), incl. indexes"],
            "rows": [[f"PostgreSQL (`telemetry` {f['pg_telemetry_bytes_per_row']:.0f} + `inference` "
                      f"{f['pg_inference_bytes_per_row']:.0f})", f"{f['pg_bytes_per_sample']:.0f}"],
                     ["SQLite (file growth after VACUUM)", f"{f['sqlite_bytes_per_sample']:.0f}"]]}


if __name__ == "__main__":
    sys.exit(main())
