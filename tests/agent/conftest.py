"""Fixtures of the device agent tests: signed bundles, agent processes, an MQTT subscriber."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.support.procs import free_port, stop_pid

REPO = Path(__file__).resolve().parents[2]
FLEET = "f1"


@pytest.fixture(scope="session")
def bundles(session_key, digits_int8_tflite, digits_fp32_tflite, tmp_path_factory):
    """Signed bundles of the digits CNN: {'int8', 'fp32', 'int8_v2', 'key', 'pub'}."""
    from edgekit.bundle import create_bundle

    priv, pub = session_key
    d = tmp_path_factory.mktemp("bundles")
    return {
        "int8": create_bundle(digits_int8_tflite, d / "int8.ekb", name="digits", version="1.0.0", key=priv,
                              labels=[str(i) for i in range(10)]),
        "fp32": create_bundle(digits_fp32_tflite, d / "fp32.ekb", name="digits-fp32", version="1.0.0", key=priv),
        "key": priv, "pub": pub,
    }


def write_config(path: Path, *, pub: Path, data_dir: Path, bundle: Path | None = None, broker=None,
                 api_port: int | None = None, device_id: str = "dev1", **sections) -> Path:
    import tomli_w

    cfg = {"device_id": device_id, "fleet": FLEET, "fleet_public_key": str(pub), "data_dir": str(data_dir),
           "log_level": "info",
           "api": {"port": api_port if api_port is not None else free_port()},
           "mqtt": ({"host": broker.host, "port": broker.port, "backoff_initial": 0.2, "backoff_max": 1.0,
                     "keepalive": 5} if broker is not None else {"enabled": False}),
           "telemetry": {"interval": 0.5}}
    if bundle is not None:
        cfg["model"] = {"bundle": str(bundle)}
    for name, values in sections.items():
        cfg.setdefault(name, {}).update(values)
    path.write_text(tomli_w.dumps(cfg))
    return path


class AgentProcess:
    """``python -m device_agent run --config FILE`` as a real subprocess, stopped by PID."""

    def __init__(self, config: Path, python: str = sys.executable, log: Path | None = None):
        self.config = Path(config)
        self.python = python
        self.log = log or self.config.with_suffix(".log")
        self.proc: subprocess.Popen | None = None
        import tomllib

        self.settings = tomllib.loads(self.config.read_text())
        self.url = f"http://127.0.0.1:{self.settings['api']['port']}"

    def start(self, wait: bool = True, timeout: float = 20.0) -> "AgentProcess":
        env = dict(os.environ, PYTHONPATH=str(REPO))
        self._logf = open(self.log, "ab")
        self.proc = subprocess.Popen([self.python, "-m", "device_agent", "run", "--config", str(self.config)],
                                     stdout=self._logf, stderr=subprocess.STDOUT, env=env, cwd=str(REPO))
        if wait:
            self.wait_healthy(timeout)
        return self

    def wait_healthy(self, timeout: float = 20.0) -> dict:
        from device_agent.client import AgentClient
        from device_agent.errors import ApiError

        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"agent exited with {self.proc.returncode}:\n{self.log.read_text()[-3000:]}")
            try:
                return AgentClient(self.url, timeout=2).health()
            except ApiError as exc:
                last = exc
                time.sleep(0.05)
        raise TimeoutError(f"agent not healthy after {timeout}s ({last}):\n{self.log.read_text()[-3000:]}")

    def client(self):
        from device_agent.client import AgentClient

        return AgentClient(self.url)

    def stop(self) -> None:
        if self.proc is not None:
            stop_pid(self.proc.pid, timeout=15)
            self.proc = None
            self._logf.close()

    def kill(self) -> None:
        import signal

        if self.proc is not None:
            stop_pid(self.proc.pid, sig=signal.SIGKILL)
            self.proc = None
            self._logf.close()


@pytest.fixture
def agent_factory(tmp_path):
    procs: list[AgentProcess] = []

    def make(config: Path, **kw) -> AgentProcess:
        p = AgentProcess(config, **kw)
        procs.append(p)
        return p

    yield make
    for p in procs:
        p.stop()


class Subscriber:
    """A plain paho subscriber with a persistent session (so it gets what was published while it was away)."""

    def __init__(self, broker, topic: str, client_id: str = "test-sub"):
        import paho.mqtt.client as mqtt
        from paho.mqtt.packettypes import PacketTypes
        from paho.mqtt.properties import Properties

        self.messages: list[tuple[str, bytes, bool]] = []
        self.lock = threading.Lock()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
        self.client.reconnect_delay_set(0.1, 0.5)
        self.topic = topic
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = 3600
        self.subscribed = threading.Event()
        self.marker = f"edgekit-test/barrier/{client_id}"
        self.client.on_connect = lambda c, u, f, rc, p: c.subscribe([(topic, 1), (self.marker, 1)])
        self.client.on_subscribe = lambda c, u, mid, rcs, p: self.subscribed.set()
        self.client.on_message = self._on_message
        self.client.connect(broker.host, broker.port, keepalive=5, clean_start=False, properties=props)
        self.client.loop_start()
        if not self.subscribed.wait(10):  # nothing published after this returns can be missed
            raise TimeoutError(f"no SUBACK for {topic}")

    def _on_message(self, client, userdata, msg) -> None:
        with self.lock:
            self.messages.append((msg.topic, msg.payload, bool(msg.retain)))

    def of(self, channel: str) -> list[dict]:
        with self.lock:
            return [json.loads(p) for t, p, _ in self.messages if t.endswith("/" + channel)]

    def barrier(self, timeout: float = 20.0) -> None:
        """Publish a marker through the broker and wait for it: every message the broker took in before it (the
        broker routes in arrival order) has then been delivered here."""
        self._markers = getattr(self, "_markers", 0) + 1
        token = f"marker-{self._markers}".encode()
        self.client.publish(self.marker, token, qos=1).wait_for_publish(10)
        self.wait_for(lambda s: any(t == s.marker and p == token for t, p, _ in s.messages), timeout, "the marker")

    def wait_for(self, predicate, timeout: float = 20.0, what: str = "messages"):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            result = predicate(self)
            if result:
                return result
            time.sleep(0.05)
        raise TimeoutError(f"no {what} after {timeout}s; got {len(self.messages)} messages")

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


@pytest.fixture
def subscriber_factory():
    subs: list[Subscriber] = []

    def make(broker, topic: str, **kw) -> Subscriber:
        s = Subscriber(broker, topic, **kw)
        subs.append(s)
        return s

    yield make
    for s in subs:
        try:
            s.close()
        except Exception:  # noqa: BLE001
            pass


def telemetry_seqs(sub: Subscriber) -> list[int]:
    return [s["seq"] for m in sub.of("telemetry") for s in m["samples"]]
