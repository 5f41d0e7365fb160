"""The dashboard's devices page vs the CLI's ``fleet devices --json`` on the same store, in one run.

A fleet store (SQLite) is filled with N devices in the registry, each with a birth message and a few telemetry
samples written through the real ingest path, so every row has online, model, version, last seen, p95, CPU and
temperature. Then, alternating, median of --repeats each:

  - api-page: ``GET /api/v1/devices`` as the devices page asks for it (sorted by id, first 200 rows), over HTTP
    from ``edgekit fleet dashboard`` running as its own process, with an API token;
  - api-all:  the same with every row (``limit=N``), the CLI's full output;
  - cli:      ``edgekit fleet devices --json`` as a subprocess (what a user or script runs: interpreter start,
    imports, query, JSON);
  - cli-work: the same click command invoked in-process after a warm-up (the query and JSON work alone, no start).

Goals: api-page ≤ 1.5× cli and under 300 ms. ``--smoke`` runs 200 devices, 2 repeats and writes nothing.

    .venv/bin/python benchmarks/dashboard/bench_dashboard.py --devices 5000 --repeats 7
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
import urllib.request
from pathlib import Path

sys.path.append(str(Path(__file__).resolve().parents[1]))
import benchlib  # noqa: E402,I001 (puts the repository on sys.path)

REPO = benchlib.REPO


def populate(ctx, n: int, samples: int = 3) -> None:
    from edgekit.protocol import StateMessage, TelemetryMessage, Topic
    from fleet.db import session_factory
    from fleet.ingest import Ingest
    from fleet.models import Device

    now = time.time()
    with session_factory(ctx.engine()).begin() as s:  # the registry rows 'fleet provision' would write
        s.add_all([Device(id=f"dev{i:05d}", fleet=ctx.fleet_id, provisioned=True, provisioned_at=now, auth="cert",
                          tags={"site": f"s{i % 10}"}, groups=[f"g{i % 3}"], online=False, capabilities={},
                          update={}) for i in range(n)])
    ing = Ingest(ctx.engine(), ctx.fleet_id, known_refresh=0)
    for i in range(n):
        dev = f"dev{i:05d}"
        ver = "1.0.0" if i % 4 else "2.0.0"
        ing.handle(str(Topic(ctx.fleet_id, dev, "state")), StateMessage(
            dev, "online" if i % 7 else "offline", ts=now, agent_version="0.1.0", runtime={"name": "litert"},
            hardware={"cores": 4}, model={"name": "digits", "version": ver, "sha256": "ab" * 32},
            update={"state": "IDLE"}).encode(), now)
        rows = [{"seq": k, "ts": now - 10 * (samples - k), "interval_s": 10,
                 "system": {"cpu_percent": 10 + (i + k) % 80, "mem_percent": 40.0,
                            "temperature_c": {"cpu": 40 + (i % 30)}},
                 "inference": {f"digits@{ver}": {"count": 100, "errors": 0, "p50_ms": 1.0, "p95_ms": 2.0 + i % 5,
                                                 "p99_ms": 4.0}}} for k in range(samples)]
        ing.handle(str(Topic(ctx.fleet_id, dev, "telemetry")), TelemetryMessage(dev, rows).encode(), now)
        if i % 500 == 499:
            ing.flush()
    ing.flush()
    assert ing.stats.unknown == 0 and ing.stats.malformed == 0, ing.stats.to_dict()


def timed_get(url: str, token: str) -> tuple[float, int]:
    req = urllib.request.Request(url, headers={"authorization": f"Bearer {token}"})
    t0 = time.perf_counter()
    with urllib.request.urlopen(req, timeout=60) as r:
        body = r.read()
    return time.perf_counter() - t0, len(body)


def main(argv=None) -> int:
    ap = benchlib.add_options(argparse.ArgumentParser(description=__doc__.split("\n")[0]))
    ap.add_argument("--devices", type=int, default=5000)
    ap.add_argument("--repeats", type=int, default=7)
    args = ap.parse_args(argv)
    run = benchlib.Run(__file__, args)
    if args.smoke:
        args.devices, args.repeats = 200, 2

    from click.testing import CliRunner

    from edgekit.procs import free_port, stop_pid, wait_port
    from fleet.cli import fleet as cli_main
    from fleet.dashboard.api import Fleet
    from fleet.setup import init_fleet

    work = Path(tempfile.mkdtemp(prefix="edgekit-bench-dash-"))
    ctx = init_fleet(work / "fleet", fleet_id="bench", tls_port=free_port(), artifacts_port=free_port())
    t0 = time.perf_counter()
    populate(ctx, args.devices)
    print(f"populated {args.devices} devices in {time.perf_counter() - t0:.1f}s", file=sys.stderr)
    users = Fleet(ctx).users
    users.add("bench", "viewer", "bench-password")
    token = users.create_token("bench", "bench")

    env = {**os.environ, "PYTHONPATH": str(REPO), "EDGEKIT_FLEET_DIR": str(ctx.data_dir)}
    port = free_port()
    dash = subprocess.Popen([sys.executable, "-m", "edgekit.cli", "fleet", "dashboard", "--port", str(port)],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}/api/v1/devices"
    cli_argv = [sys.executable, "-m", "edgekit.cli", "fleet", "devices", "--json"]
    runner = CliRunner()
    cli_args = ["--data-dir", str(ctx.data_dir), "devices", "--json"]
    try:
        wait_port(port, timeout=60)
        page_url, all_url = f"{base}?sort=id&limit=200", f"{base}?sort=id&limit={args.devices}"
        timed_get(page_url, token)  # warm-up: first connections, caches
        res = runner.invoke(cli_main, cli_args)
        assert res.exit_code == 0, res.output
        cli_rows = len(json.loads(res.output))
        api_all = json.loads(urllib.request.urlopen(urllib.request.Request(
            all_url, headers={"authorization": f"Bearer {token}"}), timeout=60).read())
        assert cli_rows == api_all["total"] == len(api_all["devices"]) == args.devices
        t = {"api_page": [], "api_all": [], "cli": [], "cli_work": []}
        sizes = {}
        for _ in range(args.repeats):
            dt, sizes["api_page"] = timed_get(page_url, token)
            t["api_page"].append(dt)
            dt, sizes["api_all"] = timed_get(all_url, token)
            t["api_all"].append(dt)
            t0 = time.perf_counter()
            out = subprocess.run(cli_argv, env=env, capture_output=True, timeout=300)
            t["cli"].append(time.perf_counter() - t0)
            assert out.returncode == 0, out.stderr
            sizes["cli"] = len(out.stdout)
            t0 = time.perf_counter()
            res = runner.invoke(cli_main, cli_args)
            t["cli_work"].append(time.perf_counter() - t0)
            assert res.exit_code == 0
    finally:
        stop_pid(dash.pid)
    med = {k: statistics.median(v) * 1000 for k, v in t.items()}
    report = {
        "devices": args.devices, "repeats": args.repeats, "smoke": args.smoke,
        "median_ms": {k: round(v, 1) for k, v in med.items()},
        "bytes": sizes,
        "ratio_api_page_vs_cli": round(med["api_page"] / med["cli"], 3),
        "ratio_api_all_vs_cli": round(med["api_all"] / med["cli"], 3),
        "ratio_api_page_vs_cli_work": round(med["api_page"] / med["cli_work"], 3),
        "ratio_api_all_vs_cli_work": round(med["api_all"] / med["cli_work"], 3),
        "goals": {"api_page_vs_cli_max": 1.5, "api_page_ms_max": 300},
        "load_avg": os.getloadavg()[0],
    }
    # judged against both: the subprocess is what users run; the in-process work is the stricter comparison
    report["goals_met"] = {"ratio_vs_cli": report["ratio_api_page_vs_cli"] <= 1.5,
                           "ratio_vs_cli_work": report["ratio_api_page_vs_cli_work"] <= 1.5,
                           "under_300ms": med["api_page"] < 300}
    run.finish(report, table(report))
    return 0


def table(f: dict) -> dict:
    """The README table from the figures (pure)."""
    ms, met = f["median_ms"], f["goals_met"]
    verdict = (lambda ok: "met" if ok else "**not met**")  # noqa: E731
    return {"columns": ["figure", "goal", "result"], "rows": [
        [f"`GET /api/v1/devices` (the page: sorted, first 200) / `fleet devices --json` subprocess "
         f"({ms['api_page']} vs {ms['cli']} ms)", f"≤ {f['goals']['api_page_vs_cli_max']}×",
         f"**{f['ratio_api_page_vs_cli']}×** — {verdict(met['ratio_vs_cli'])}"],
        [f"the same / the CLI command in-process, without interpreter start ({ms['cli_work']} ms)",
         f"≤ {f['goals']['api_page_vs_cli_max']}×",
         f"**{f['ratio_api_page_vs_cli_work']}×** — {verdict(met['ratio_vs_cli_work'])}"],
        [f"every row (`limit={f['devices']}`) / the CLI subprocess, in-process ({ms['api_all']} ms)", "—",
         f"{f['ratio_api_all_vs_cli']}×, {f['ratio_api_all_vs_cli_work']}×"],
        ["the page's request", f"< {f['goals']['api_page_ms_max']} ms",
         f"**{ms['api_page']} ms** — {verdict(met['under_300ms'])}"],
    ]}


if __name__ == "__main__":
    raise SystemExit(main())
