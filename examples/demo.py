"""edgekit end to end on one machine: convert -> bundle -> fleet -> agents -> telemetry-gated staged rollout.

    python examples/demo.py [--devices 5] [--workdir DIR]

1. creates a fleet (``fleet init``), starts its Mosquitto (mTLS, generated config) and ``edgekit fleet serve``;
2. builds the models through ``examples/pipeline.toml`` (``edgekit pipeline run``: data checks, training on
   scikit-learn's bundled digits, conversion, evaluation, the gate, signing with the fleet's key): v1 = float32,
   v2 = full-integer int8, the second run reusing the first one's data and training from the pipeline's cache;
3. provisions N devices and starts N agents: separate processes, each running LiteRT, installed from their
   device packages; a load generator sends inferences to their local APIs;
4. rolls v1 out, then v2 in stages (1 device, 50%, 100%), each stage gated on the devices' self-test results,
   inference errors and p95 latency of v2 against v1 on the same devices, showing progress and each decision;
5. rolls out a faulty v3 (properly signed, wrong golden outputs): the canary's self-test fails and the rollout
   aborts there; no other device ever hears of v3 (skip with --no-faulty);
6. shows the devices table and their telemetry, then stops every process it started (also on Ctrl-C or errors).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from rich.console import Console  # noqa: E402

from edgekit.render import table  # noqa: E402

console = Console()
# short probation for a demo; N agents share a laptop's cores, where a sub-millisecond model's p95 jumps by several
# ms whenever another process runs, so the agents' own latency checks allow 20 ms of slack here (a device has its
# cores to itself and keeps the default 1 ms)
AGENT_POLICY = {"EDGEKIT_AGENT__UPDATE__PROBATION_S": "3", "EDGEKIT_AGENT__UPDATE__SELF_TEST_RUNS": "10",
                "EDGEKIT_AGENT__UPDATE__LATENCY_SLACK_MS": "20"}


def step(text: str) -> None:
    console.rule(f"[bold]{text}")


def run(argv: list[str], what: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    res = subprocess.run(argv, capture_output=True, text=True, env=env, cwd=REPO)
    if res.returncode != 0:
        raise SystemExit(f"demo: {what} failed (exit {res.returncode}):\n{res.stderr.strip()[-2000:]}")
    return res


PIPELINE = REPO / "examples" / "pipeline.toml"


def pipeline_file(work: Path, fleet_dir: Path, version: str, mode: str) -> Path:
    """examples/pipeline.toml for this demo: its workdir, the demo fleet (whose key signs), a version and a mode.
    Both versions' files share one directory and workdir, so they share the pipeline's cache."""
    d = work / "pipeline"
    d.mkdir(parents=True, exist_ok=True)
    shutil.copy(REPO / "examples" / "train_digits.py", d / "train_digits.py")
    text = PIPELINE.read_text()
    for pattern, repl in ((r"^workdir = .*$", 'workdir = "cache"'), (r"^# fleet = .*$", f'fleet = "{fleet_dir}"'),
                          (r"^key = .*$", "# key: the fleet's signing key"),
                          (r"^version = .*$", f'version = "{version}"'), (r"^mode = .*$", f'mode = "{mode}"')):
        text, n = re.subn(pattern, repl, text, flags=re.M)
        if n != 1:
            raise SystemExit(f"demo: {PIPELINE} no longer has one line matching {pattern!r}")
    path = d / f"digits-{version}.toml"
    path.write_text(text)
    return path


def build_models(work: Path, fleet_dir: Path) -> dict[str, Path]:
    """v1 (fp32) and v2 (int8) through the pipeline; each run ends with a blessed, signed bundle."""
    py = sys.executable
    out = {}
    for version, mode in (("1.0.0", "fp32"), ("2.0.0", "int8")):
        path = pipeline_file(work, fleet_dir, version, mode)
        with console.status(f"edgekit pipeline run {path.name} (convert --mode {mode})"):
            res = run([py, "-m", "edgekit.cli", "pipeline", "run", str(path), "--json", "--quiet"],
                      f"the pipeline for v{version}")
        manifest = json.loads(res.stdout)
        from pipelines.steps import ORDER

        steps = dict(sorted(manifest["steps"].items(), key=lambda kv: ORDER.index(kv[0])))
        out[version] = Path(steps["sign"]["outputs"]["bundle"]["path"])
        checks = {c["check"]: c for c in steps["gate"]["blessing"]["checks"]}
        ran = [s for s, v in steps.items() if v["status"] == "ran"]
        cached = [s for s, v in steps.items() if v["status"] == "cached"]
        console.print(f"  v{version} ({mode}): {out[version].name}, {out[version].stat().st_size / 1024:.1f} KiB, "
                      f"top-1 {checks['accuracy']['value'] * 100:.2f}% on the held-out digits, blessed; "
                      f"pipeline run {manifest['run']} ran {', '.join(ran) or 'nothing'}"
                      + (f", reused {', '.join(cached)} from its cache" if cached else ""))
    console.print(f"  the runs: edgekit pipeline runs -f {path}")
    return out


def faulty_bundle(good: Path, out_dir: Path, key: Path) -> Path:
    """v3: v2's model, properly signed, with golden outputs that do not match it: every device's self-test fails."""
    import numpy as np

    from edgekit.bundle import create_bundle, read_bundle

    b = read_bundle(good)
    ins, outs, _, _ = b.golden()
    out_dir.mkdir(parents=True, exist_ok=True)
    return create_bundle(b.model_bytes, out_dir / "digits-3.0.0.ekb", name="digits", version="3.0.0", key=key,
                         golden_inputs=ins, golden_outputs=[np.roll(o, 1, axis=-1) for o in outs],
                         tolerance=(0.0, 0.0), force=True)


def follow(store, rid: str, n_devices: int, timeout: float) -> str:
    """Show a rollout until it ends: the same view as 'edgekit fleet rollout watch'."""
    from fleet.rollout.cli import follow as follow_rollout

    return follow_rollout(store, rid, console, timeout)


def show_devices(lf, load) -> None:
    """The fleet's own views when they exist (``edgekit fleet devices``/``telemetry``), else the registry."""
    res = subprocess.run([sys.executable, "-m", "edgekit.cli", "fleet", "--data-dir", str(lf.ctx.data_dir),
                          "devices"], capture_output=True, text=True)
    if res.returncode == 0:
        console.print(res.stdout)
    else:
        from sqlalchemy import func, select

        from fleet.models import InferenceSample, TelemetrySample
        with lf.ctx.engine().connect() as c:
            inf = {(d, v): (n, e, p) for d, v, n, e, p in c.execute(
                select(InferenceSample.device_id, InferenceSample.model_version, func.sum(InferenceSample.count),
                       func.sum(InferenceSample.errors), func.avg(InferenceSample.p95_ms))
                .group_by(InferenceSample.device_id, InferenceSample.model_version))}
            sysm = {d: (cpu, mem) for d, cpu, mem in c.execute(
                select(TelemetrySample.device_id, func.avg(TelemetrySample.cpu), func.avg(TelemetrySample.mem))
                .group_by(TelemetrySample.device_id))}
        rows = []
        for d, dev in sorted(lf.devices().items()):
            figures = "; ".join(f"{v}: {n} inf, {e} err, p95 {p:.3f} ms" for (dd, v), (n, e, p) in sorted(inf.items())
                                if dd == d and p is not None)
            cpu, mem = sysm.get(d, (None, None))
            rows.append((d, "online" if dev.online else "offline", f"{dev.model_name} {dev.model_version}",
                         dev.update_state or "", f"{cpu:.0f}%" if cpu is not None else "-",
                         f"{mem:.0f}%" if mem is not None else "-", figures))
        console.print(table("devices and their telemetry (per model version)",
                            ["device", "status", "model", "update", "cpu", "mem", "inference"], rows))
    res = subprocess.run([sys.executable, "-m", "edgekit.cli", "fleet", "--data-dir", str(lf.ctx.data_dir),
                          "telemetry", "dev1", "--since", "1h"], capture_output=True, text=True)
    if res.returncode == 0:
        console.print(res.stdout)
    console.print(f"local API load: {sum(load.ok.values())} inferences answered, "
                  f"{sum(load.failed.values())} failed")


def _interrupt(signum, frame):
    raise KeyboardInterrupt  # SIGTERM stops the demo like Ctrl-C: the finally block stops every process


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--devices", type=int, default=5, help="number of local agents (default 5)")
    ap.add_argument("--workdir", type=Path, default=None, help="where everything goes (default: a new temp dir)")
    ap.add_argument("--soak", default="5s", help="soak time per stage (default 5s)")
    ap.add_argument("--no-faulty", action="store_true", help="skip the faulty v3 that is stopped at the canary")
    args = ap.parse_args(argv)
    if not 1 <= args.devices <= 50:
        ap.error("--devices must be between 1 and 50")
    from edgekit.errors import EdgekitError
    from fleet.rollout.policy import parse_duration

    try:
        parse_duration(args.soak, "--soak")
    except EdgekitError as exc:
        ap.error(exc.one_line())
    work = (args.workdir or Path(tempfile.mkdtemp(prefix="edgekit-demo-"))).absolute()
    if (work / "lf" / "fleet" / "fleet.toml").exists():
        ap.error(f"{work} already holds a demo fleet; pass another --workdir or remove it")
    work.mkdir(parents=True, exist_ok=True)

    from examples.localfleet import LoadGenerator, LocalFleet, wait_for
    from fleet.rollout.service import create_rollout, open_store

    started = time.monotonic()
    lf = LocalFleet(work / "lf", fleet_id="demo", telemetry_interval=1.0, agent_env=dict(AGENT_POLICY))
    load = None
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        step("1. fleet: keys, CA, broker, fleet service")
        lf.init()
        lf.start_broker()
        pid = lf.start_service()
        console.print(f"  fleet 'demo' in {lf.ctx.data_dir}; mosquitto (mTLS) on 127.0.0.1:{lf.ctx.broker_port}; "
                      f"fleet serve pid {pid}, artifacts at {lf.ctx.artifact_url}")

        step("2. models through examples/pipeline.toml: v1 (fp32) and v2 (int8), gated and signed")
        bundles = build_models(work, lf.ctx.data_dir)

        step(f"3. {args.devices} devices: provision, install and start the agents")
        ids = [f"dev{i}" for i in range(1, args.devices + 1)]
        lf.add_devices(ids)
        for d in ids:
            lf.start_agent(d)
        lf.wait_api(ids, timeout=120)
        lf.wait_online(ids, timeout=60)
        console.print(f"  {len(ids)} agents online (pids {', '.join(str(a.proc.pid) for a in lf.agents.values())}), "
                      "no model yet")
        load = LoadGenerator(lambda: list(lf.agents.values()), rate=5).start()
        store = open_store(lf.ctx)

        step("4. roll out v1 to every device")
        r1 = create_rollout(lf.ctx, store, bundles["1.0.0"], "all", stages="100%", soak="0")
        if follow(store, r1.id, len(ids), 180) != "completed":
            raise SystemExit("demo: the v1 rollout did not complete; see the logs in " + str(lf.workdir / "logs"))
        time.sleep(3)  # a few telemetry samples of v1: the latency baseline for v2's gate

        step("5. roll out v2 in stages, gated on the devices' telemetry")
        r2 = create_rollout(lf.ctx, store, bundles["2.0.0"], "all", stages="1,50%,100%", soak=args.soak,
                            device_timeout="2m", on_failure="abort")
        console.print(f"  {r2.id}: {r2.policy.describe()}")
        end = follow(store, r2.id, len(ids), 300)
        console.print(f"  rollout {r2.id} ended [bold]{end}[/bold]")

        if end == "completed" and not args.no_faulty:
            step("6. a faulty v3 (its golden outputs are wrong) is stopped at the canary")
            v3 = faulty_bundle(bundles["2.0.0"], work / "bundles" / "3.0.0", lf.ctx.signing_key_path)
            r3 = create_rollout(lf.ctx, store, v3, "all", stages="1,50%,100%", soak=args.soak,
                                device_timeout="2m", on_failure="abort")
            console.print(f"  {r3.id}: {r3.policy.describe()}")
            end3 = follow(store, r3.id, len(ids), 180)
            wait_for(lambda: store.get(r3.id).reverted or end3 != "aborted", 30, "the revert")
            told = sorted(store.get(r3.id).assignments)
            v2_sha = store.get(r2.id).bundle.sha256
            wait_for(lambda: all(d.model_sha256 == v2_sha for d in lf.devices().values()), 30, "devices on v2")
            console.print(f"  rollout {r3.id} ended [bold]{end3}[/bold]; v3 was assigned only to "
                          f"{', '.join(told)}, and every device runs v2")

        step("7. devices and telemetry")
        time.sleep(2)
        show_devices(lf, load)
        from fleet.rollout.cli import render_status

        render_status(store.get(r2.id), None, console)  # the decisions were printed as they happened
        console.print(f"the whole audit log: edgekit fleet --data-dir {lf.ctx.data_dir} rollout status {r2.id}")
        console.print(f"[bold green]done in {time.monotonic() - started:.0f}s[/bold green]; everything is in {work}")
        return 0 if end == "completed" else 1
    except KeyboardInterrupt:
        console.print("[yellow]interrupted[/yellow]")
        return 130
    except EdgekitError as exc:
        console.print(f"[red]demo: {exc.one_line()}[/red] (logs: {lf.workdir / 'logs'})")
        return 1
    finally:
        if load is not None:
            load.stop()
        with console.status("stopping agents, fleet service and broker"):
            lf.close()
        console.print("stopped every process the demo started")


if __name__ == "__main__":
    sys.exit(main())
