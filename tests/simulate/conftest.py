"""A fleet with a password listener, its broker on the GENERATED Mosquitto config, and a real ``fleet serve``."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from edgekit.procs import free_port, stop_pid
from tests.fleet.conftest import REPO

from tests.rollout.conftest import make_bundles


class SimFleet:
    def __init__(self, root: Path):
        from fleet.setup import init_fleet

        self.root = root
        self.ctx = init_fleet(root / "fleet", fleet_id="sim", tls_port=free_port(), password_port=free_port(),
                              artifacts_port=free_port())
        self.procs: list[subprocess.Popen] = []
        self.logs = root / "logs"
        self.logs.mkdir()

    def cli(self, *args: str, name: str) -> subprocess.Popen:
        log = open(self.logs / f"{name}.log", "ab")
        try:
            p = subprocess.Popen([sys.executable, "-m", "edgekit.cli", "fleet", "--data-dir", str(self.ctx.data_dir),
                                  *args], cwd=REPO, stdout=subprocess.PIPE, stderr=log, text=True,
                                 start_new_session=True)
        finally:
            log.close()
        self.procs.append(p)
        return p

    def start_service(self, timeout: float = 60.0) -> subprocess.Popen:
        p = self.cli("serve", "-v", name="serve")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert p.poll() is None, (self.logs / "serve.log").read_text()[-2000:]
            try:
                with urllib.request.urlopen(self.ctx.artifact_url + "/healthz", timeout=1):
                    return p
            except OSError:
                time.sleep(0.1)
        raise AssertionError("fleet serve did not answer")

    def stop(self, p: subprocess.Popen, sig: int = signal.SIGTERM, timeout: float = 120.0) -> str:
        stop_pid(p.pid, timeout=timeout, sig=sig)
        out = p.stdout.read() if p.stdout else ""
        self.procs.remove(p)
        return out

    def close(self) -> None:
        from fleet import broker

        for p in list(self.procs):
            self.stop(p)
        broker.stop(self.ctx)


@pytest.fixture
def sim_fleet(tmp_path, digits_fp32_tflite, digits_int8_tflite):
    from fleet import broker

    f = SimFleet(tmp_path)
    try:
        f.bundles = make_bundles(f.ctx, tmp_path / "bundles", digits_fp32_tflite, digits_int8_tflite)
        broker.start(f.ctx)
        f.start_service()
        yield f
    finally:
        f.close()


def read_report(path: Path) -> dict:
    return json.loads(path.read_text())
