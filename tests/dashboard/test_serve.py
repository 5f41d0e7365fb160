"""``edgekit fleet serve --dashboard-port``: one process serves ingest, artifacts with /metrics, and the dashboard."""

from __future__ import annotations

import os
import subprocess
import sys
import urllib.request
from pathlib import Path

from tests.support.procs import free_port, stop_pid, wait_port

from .conftest import Client

REPO = Path(__file__).resolve().parents[2]


def test_fleet_serve_also_serves_the_dashboard_and_metrics(dash_ctx):
    dport, hport = free_port(), free_port()
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-m", "edgekit.cli", "fleet", "--data-dir", str(dash_ctx.data_dir),
                             "serve", "--replica", "web", "--no-rollouts", "--http-port", str(hport),
                             "--dashboard-port", str(dport)], env=env, cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        wait_port(dport, timeout=60)
        wait_port(hport, timeout=60)
        c = Client(f"http://127.0.0.1:{dport}")
        assert c.login("vic").status == 200
        assert c.get("/api/v1/overview").json()["fleet"] == "dash"
        with urllib.request.urlopen(f"http://127.0.0.1:{hport}/metrics", timeout=10) as r:
            body = r.read().decode()
        # no broker runs in this test: the metrics say so, and the store's figures are there regardless
        assert "edgekit_broker_connected 0.0" in body and "edgekit_devices_online 0.0" in body
        assert "edgekit_store_up 1.0" in body
    finally:
        stop_pid(proc.pid)
    assert proc.wait(5) is not None
    assert "dashboard at http://127.0.0.1:" in proc.stderr.read()
