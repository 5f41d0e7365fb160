"""Driving real agent processes through updates: config, start/kill, local API, the retained desired, events."""

from __future__ import annotations

import http.client
import io
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from tests.support.procs import stop_pid

REPO = Path(__file__).resolve().parents[2]
FLEET = "upd"

#: a fast policy for tests: short probation, quick retries
FAST_POLICY = {"probation_s": 1.5, "check_interval_s": 0.2, "retry_backoff_s": 0.2, "download_attempts": 3,
               "download_timeout_s": 5.0, "self_test_runs": 30, "crash_limit": 3, "min_free_bytes": 1 << 20}


def write_config(path: Path, *, pub: Path, data_dir: Path, bundle: Path, broker, device_id: str = "dev1",
                 update: dict | None = None, **sections: dict) -> Path:
    import tomli_w

    cfg = {"device_id": device_id, "fleet": FLEET, "fleet_public_key": str(pub), "data_dir": str(data_dir),
           "log_level": "info", "api": {"port": 0},
           "mqtt": {"host": broker.host, "port": broker.port, "backoff_initial": 0.2, "backoff_max": 1.0,
                    "keepalive": 5},
           "telemetry": {"enabled": False},
           "model": {"bundle": str(bundle)},
           "update": {**FAST_POLICY, **(update or {})}}
    for name, values in sections.items():
        cfg.setdefault(name, {}).update(values)
    path.write_text(tomli_w.dumps(cfg))
    return path


class AgentProc:
    """``python -m device_agent run`` as a real subprocess; killed or stopped by PID."""

    def __init__(self, workdir: Path, config: Path, data_dir: Path, python: str = sys.executable):
        self.workdir, self.config, self.data_dir = Path(workdir), Path(config), Path(data_dir)
        self.python = python
        self.log = self.workdir / "agent.log"
        self.proc: subprocess.Popen | None = None
        self.port: int | None = None
        self.launches = 0

    # --- lifecycle ---------------------------------------------------------------------------------------------

    def start(self, crash_at: str | None = None, env: dict | None = None) -> "AgentProc":
        (self.data_dir / "api.port").unlink(missing_ok=True)
        e = dict(os.environ, PYTHONPATH=str(REPO), **(env or {}))
        e.pop("EDGEKIT_TEST_CRASH_AT", None)
        if crash_at:
            e["EDGEKIT_TEST_CRASH_AT"] = crash_at
        self.launches += 1
        with open(self.log, "ab") as logf:
            logf.write(f"\n=== launch {self.launches} crash_at={crash_at}\n".encode())
            self.proc = subprocess.Popen([self.python, "-m", "device_agent", "run", "--config", str(self.config)],
                                         stdout=logf, stderr=subprocess.STDOUT, env=e, cwd=str(REPO))
        self.port = None
        return self

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def wait_ready(self, timeout: float = 30.0) -> bool:
        """True once the local API answers; False when the process died first."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.alive:
                return False
            if self.port is None:
                try:
                    self.port = int((self.data_dir / "api.port").read_text().strip())
                except (FileNotFoundError, ValueError):
                    time.sleep(0.05)
                    continue
            try:
                self.get("/v1/health")
                return True
            except OSError:
                time.sleep(0.05)
        raise TimeoutError(f"agent not ready after {timeout}s:\n{self.tail()}")

    def wait_exit(self, timeout: float = 60.0) -> int:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise TimeoutError(f"agent still running after {timeout}s:\n{self.tail()}") from None

    def stop(self) -> None:
        if self.proc is not None:
            stop_pid(self.proc.pid, timeout=15)
            self.proc.wait()
            self.proc = None

    def kill(self) -> None:
        if self.proc is not None:
            stop_pid(self.proc.pid, sig=signal.SIGKILL)
            self.proc.wait()
            self.proc = None

    def tail(self, n: int = 4000) -> str:
        try:
            return self.log.read_text(errors="replace")[-n:]
        except FileNotFoundError:
            return ""

    # --- local API ---------------------------------------------------------------------------------------------

    def _conn(self, timeout: float = 10.0) -> http.client.HTTPConnection:
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)

    def get(self, path: str) -> dict:
        conn = self._conn(3)
        try:
            conn.request("GET", path)
            resp = conn.getresponse()
            return json.loads(resp.read())
        finally:
            conn.close()

    def infer(self, x: np.ndarray, conn: http.client.HTTPConnection | None = None) -> tuple[int, np.ndarray | None,
                                                                                             str | None]:
        """(status, output, sha256 of the model that answered)."""
        buf = io.BytesIO()
        np.save(buf, x, allow_pickle=False)
        own = conn is None
        conn = conn or self._conn()
        try:
            conn.request("POST", "/v1/infer", body=buf.getvalue(), headers={"Content-Type": "application/x-npy"})
            resp = conn.getresponse()
            data = resp.read()
            if resp.status != 200:
                return resp.status, None, None
            return 200, np.load(io.BytesIO(data), allow_pickle=False), resp.getheader("X-Edgekit-Sha256")
        finally:
            if own:
                conn.close()

    # --- files -------------------------------------------------------------------------------------------------

    def record(self) -> dict:
        return json.loads((self.data_dir / "update" / "state.json").read_text())

    def history(self) -> list[dict]:
        from device_agent.update.persist import read_history

        return list(read_history(self.data_dir / "update" / "history.jsonl"))

    def store(self):
        from device_agent.store import ModelStore

        return ModelStore(self.data_dir / "store")

    def wait_state(self, pred: Callable[[dict], bool], timeout: float = 60.0, what: str = "state") -> dict:
        deadline = time.monotonic() + timeout
        rec: dict = {}
        while time.monotonic() < deadline:
            try:
                rec = self.record()
                if pred(rec):
                    return rec
            except (FileNotFoundError, ValueError):
                pass
            if self.proc is not None and self.proc.poll() is not None and self.proc.returncode != 0:
                raise RuntimeError(f"agent died ({self.proc.returncode}) waiting for {what}; record {rec}:\n"
                                   f"{self.tail()}")
            time.sleep(0.05)
        raise TimeoutError(f"no {what} after {timeout}s; record {rec}:\n{self.tail()}")

    def wait_history(self, pred: Callable[[list[dict]], Any], timeout: float = 60.0, what: str = "history"):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            got = pred(self.history())
            if got:
                return got
            if self.proc is not None and self.proc.poll() is not None and self.proc.returncode not in (0, -9):
                raise RuntimeError(f"agent died ({self.proc.returncode}) waiting for {what}:\n{self.tail()}")
            time.sleep(0.05)
        raise TimeoutError(f"no {what} after {timeout}s; history {[h['name'] for h in self.history()]}:\n"
                           f"{self.tail()}")


class EventLog:
    """A plain paho subscriber on the device's ``events`` and ``state`` topics."""

    def __init__(self, broker, device_id: str = "dev1"):
        import paho.mqtt.client as mqtt

        self.messages: list[tuple[str, dict]] = []
        self.lock = threading.Lock()
        base = f"edgekit/v1/{FLEET}/devices/{device_id}/"
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"events-{device_id}-{os.getpid()}",
                                  protocol=mqtt.MQTTv5)
        self.client.on_connect = lambda c, u, f, rc, p: c.subscribe([(base + "events", 1), (base + "state", 1),
                                                                     (base + "cmd/reply", 1)])
        self.client.on_message = self._on_message
        self.client.connect(broker.host, broker.port, keepalive=5)
        self.client.loop_start()
        self.base = base
        self.device_id = device_id
        self.broker = broker
        deadline = time.monotonic() + 10
        while not self.client.is_connected() and time.monotonic() < deadline:
            time.sleep(0.02)

    def _on_message(self, client, userdata, msg) -> None:
        try:
            body = json.loads(msg.payload)
        except ValueError:
            return
        with self.lock:
            self.messages.append((msg.topic.rsplit("/", 1)[-1], body))

    def events(self) -> list[dict]:
        """Events in sequence order, duplicates (QoS 1 redelivery after a crash) removed by their ``seq``."""
        with self.lock:
            by_seq = {b["seq"]: b for ch, b in self.messages if ch == "events"}
        return [by_seq[k] for k in sorted(by_seq)]

    def names(self) -> list[str]:
        return [e["event"] for e in self.events()]

    def wait(self, pred: Callable[[list[dict]], Any], timeout: float = 30.0, what: str = "events"):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            got = pred(self.events())
            if got:
                return got
            time.sleep(0.05)
        raise TimeoutError(f"no {what} after {timeout}s; got {self.names()}")

    def barrier(self, timeout: float = 30.0) -> None:
        """Ping the agent over MQTT until it answers: it has then taken in every message the broker delivered to it
        before the ping (a retained ``desired`` on (re)connecting among them)."""
        from edgekit.protocol import CommandMessage

        self._pings = getattr(self, "_pings", 0) + 1
        cid = f"barrier-{os.getpid()}-{self._pings}"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:  # resent: a ping before the agent subscribed to cmd is not queued
            self.client.publish(self.base + "cmd", CommandMessage(id=cid, name="ping").encode(), qos=1)
            until = min(deadline, time.monotonic() + 1.0)
            while time.monotonic() < until:
                with self.lock:
                    if any(ch == "reply" and b.get("id") == cid for ch, b in self.messages):
                        return
                time.sleep(0.02)
        raise TimeoutError(f"the agent did not answer a ping within {timeout}s")

    def publish_desired(self, model: dict, rollout_id: str | None = "r1") -> None:
        from edgekit.protocol import DesiredMessage

        payload = DesiredMessage(model=model, rollout_id=rollout_id).encode()
        info = self.client.publish(self.base + "desired", payload, qos=1, retain=True)
        info.wait_for_publish(10)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def desired_for(bundle: Path, url: str, **override) -> dict:
    from edgekit.bundle import file_sha256, read_bundle
    from edgekit.errors import EdgekitError

    try:
        b = read_bundle(bundle)
        name, version = b.name, b.version
    except EdgekitError:  # a deliberately broken bundle: the desired state still names it
        name, version = "digits", "2.0.0"
    model = {"name": name, "version": version, "sha256": file_sha256(bundle), "url": url,
             "size": bundle.stat().st_size}
    model.update(override)
    return model


def expected_output(bundle: Path, x: np.ndarray) -> np.ndarray:
    """A direct LiteRT run of the bundle's model on one input tensor ``x`` (no agent involved)."""
    from edgekit.bundle import read_bundle
    from edgekit.golden import run_model

    return run_model(read_bundle(bundle).model_bytes, [x[None]])[0][0]
