"""20 real device agents (separate processes, real LiteRT on the digits model, credentials from `fleet provision`)
report through the generated broker to `edgekit fleet serve`; the CLI views show them, as tables and as JSON."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest
import tomli_w
import tomllib
from click.testing import CliRunner

from tests.support.procs import stop_pid

from .conftest import REPO, Fleet, edgekit, wait_for

N_AGENTS = 20


def _agent_config(pkg, bundle, interval=1.0) -> tuple:
    cfg = tomllib.loads((pkg / "agent.toml").read_text())
    cfg.update(data_dir=str(pkg / "data"), log_level="warning")
    cfg["api"] = {"port": 0}  # the agent picks a free port and writes it to <data_dir>/api.port
    cfg["telemetry"] = {"interval": interval}
    cfg["model"] = {"bundle": str(bundle)}
    cfg["mqtt"].update(backoff_initial=0.2, backoff_max=1.0)
    path = pkg / "agent-run.toml"  # beside agent.toml: its relative credential paths resolve the same way
    path.write_text(tomli_w.dumps(cfg))
    return path, pkg / "data" / "api.port"


def _cli(ctx, *args):
    from fleet.cli import fleet

    res = CliRunner().invoke(fleet, ["--data-dir", str(ctx.data_dir), *args], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    return res.output


@pytest.mark.slow
def test_twenty_agents_report_and_the_views_show_them(tmp_path, digits_int8_tflite):
    from edgekit.bundle import create_bundle

    f = Fleet(tmp_path).start_broker()
    ctx = f.ctx
    bundle = create_bundle(digits_int8_tflite, tmp_path / "digits.ekb", name="digits", version="1.0.0",
                           key=ctx.signing_key_path, labels=[str(i) for i in range(10)])
    agents, ports, serve = [], {}, None
    try:
        serve = edgekit(ctx, "serve", "--replica", "views", "--no-http")
        for i in range(N_AGENTS):
            dev = f"pi-{i:02d}"
            pkg = f.provision(dev, tags={"site": "a" if i % 2 == 0 else "b"}, groups=["lab"]).package
            conf, ports[dev] = _agent_config(pkg, bundle)
            log = open(pkg / "agent.log", "wb")
            agents.append(subprocess.Popen([sys.executable, "-m", "device_agent", "run", "--config", str(conf)],
                                           cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)},
                                           stdout=log, stderr=subprocess.STDOUT))
            log.close()
        from fleet.registry import Registry
        from fleet.store import latest_system

        engine = ctx.engine()
        reg = Registry(engine, ctx.fleet_id)

        def all_reporting():
            for p in agents:
                if p.poll() is not None:
                    raise AssertionError(f"an agent exited with {p.returncode}")
            devs = reg.list()
            return (sum(d.online and d.model_version == "1.0.0" for d in devs) == N_AGENTS
                    and len(latest_system(engine)) == N_AGENTS)

        wait_for(all_reporting, timeout=120, interval=0.5, what="20 agents online with telemetry")

        # real inferences on one device, so its p95 latency shows in the views
        from device_agent.client import AgentClient

        client = AgentClient(f"http://127.0.0.1:{int(ports['pi-03'].read_text().strip())}")
        meta = client.model()
        inp = meta["inputs"][0]
        x = np.zeros([d if d > 0 else 1 for d in inp["shape"]], dtype=np.dtype(inp["dtype"]))
        for _ in range(20):
            client.infer(x)
        wait_for(lambda: json.loads(_cli(ctx, "device", "pi-03", "--json"))["inference_5m"].get("digits@1.0.0", {})
                 .get("count", 0) >= 20, timeout=30, what="inference figures of pi-03")

        # devices --json: every agent, online, on the bundle's model, with CPU figures
        rows = json.loads(_cli(ctx, "devices", "--json"))
        assert [r["id"] for r in rows] == [f"pi-{i:02d}" for i in range(N_AGENTS)]
        assert all(r["online"] and r["model"] == "digits" and r["version"] == "1.0.0" for r in rows)
        assert all(r["cpu"] is not None and r["last_seen"] > time.time() - 60 for r in rows)
        p95 = {r["id"]: r["p95_ms"] for r in rows}
        assert p95["pi-03"] is not None and p95["pi-03"] > 0
        assert len(json.loads(_cli(ctx, "devices", "--target", "tag:site=a", "--json"))) == N_AGENTS // 2
        # the table, end to end as a subprocess
        out = subprocess.run([sys.executable, "-m", "edgekit.cli", "fleet", "--data-dir", str(ctx.data_dir),
                              "devices"], cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)},
                             capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        assert f"{N_AGENTS} devices, {N_AGENTS} online" in out.stdout
        for i in range(N_AGENTS):
            assert f"pi-{i:02d}" in out.stdout
        # one device in detail, and its telemetry
        detail = json.loads(_cli(ctx, "device", "pi-07", "--json"))
        assert detail["capabilities"]["runtime"] and detail["tags"] == {"site": "b"} and detail["groups"] == ["lab"]
        tel = json.loads(_cli(ctx, "telemetry", "pi-07", "--since", "1h", "--metric", "cpu", "--json"))
        assert tel["metrics"]["cpu"]["n"] >= 1
        text = _cli(ctx, "telemetry", "pi-03", "--since", "10m", "--metric", "cpu", "--metric", "p95_ms")
        assert "cpu" in text and "p95_ms" in text and "samples" in text
        assert "cpu" in _cli(ctx, "telemetry", "pi-03", "--since", "10m", "--metric", "cpu", "--plot")
        assert "20 devices" in _cli(ctx, "watch", "--count", "1")
        # a clean agent shutdown publishes `offline`
        stop_pid(agents[0].pid, timeout=20)
        wait_for(lambda: not reg.get("pi-00").online, timeout=20, what="pi-00 offline")
        engine.dispose()
    finally:
        for p in agents:
            stop_pid(p.pid, timeout=20)
        if serve is not None:
            stop_pid(serve.pid, timeout=20)
        f.stop_broker()
