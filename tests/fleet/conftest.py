"""Fleet fixtures: a fleet initialised in a temp dir whose broker runs the GENERATED Mosquitto config."""

from __future__ import annotations

import ssl
import threading
import time
from pathlib import Path

import pytest

from tests.support.procs import free_port


class Fleet:
    """A fleet data dir + its running broker (stopped by PID at teardown)."""

    def __init__(self, root: Path, fleet_id: str = "f1", db_url: str = "", password: bool = True):
        from fleet.setup import init_fleet

        self.ctx = init_fleet(root / "fleet", fleet_id=fleet_id, tls_port=free_port(),
                              password_port=free_port() if password else 0, artifacts_port=free_port(),
                              db_url=db_url)

    def start_broker(self) -> "Fleet":
        from fleet import broker

        broker.start(self.ctx)
        return self

    def stop_broker(self) -> None:
        from fleet import broker

        broker.stop(self.ctx)

    def kill_broker(self) -> None:
        import signal

        from fleet import broker

        broker.stop(self.ctx, sig=signal.SIGKILL)

    def provision(self, device_id: str, auth: str = "cert", **kw):
        from fleet.provision import provision

        return provision(self.ctx, device_id, auth=auth, **kw)

    def engine(self):
        return self.ctx.engine()


def device_client(fleet: Fleet, package: Path, auth: str = "cert", client_id: str | None = None,
                  timeout: float = 10.0, will: bytes | None = None):
    """A paho MQTT 5 client logged in with a device package's credentials; returns (client, reason code)."""
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    import tomllib

    cfg = tomllib.loads((package / "agent.toml").read_text())
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id or cfg["device_id"], protocol=mqtt.MQTTv5)
    ctx = ssl.create_default_context(cafile=str(package / "ca.pem"))
    if auth == "cert":
        ctx.load_cert_chain(str(package / "client.pem"), str(package / "client.key"))
    c.tls_set_context(ctx)
    if auth == "password":
        c.username_pw_set(cfg["device_id"], (package / "password").read_text())
    done = threading.Event()
    result = {}

    def on_connect(cl, u, flags, rc, props):
        result.setdefault("rc", rc)
        done.set()

    def on_disconnect(cl, u, flags, rc, props):
        result.setdefault("rc", rc)
        done.set()

    c.on_connect = on_connect
    c.on_disconnect = on_disconnect
    c.connect_async(cfg["mqtt"]["host"], cfg["mqtt"]["port"])
    c.loop_start()
    done.wait(timeout)
    rc = result.get("rc")
    return c, rc


def close(client) -> None:
    try:
        client.disconnect()
    finally:
        client.loop_stop()


@pytest.fixture(autouse=True)
def _close_pooled_connections():
    """Pooled database connections would keep PostgreSQL's smart shutdown waiting at the end of the session."""
    yield
    from fleet.db import dispose_all

    dispose_all()


@pytest.fixture
def fleet(tmp_path):
    f = Fleet(tmp_path).start_broker()
    yield f
    f.stop_broker()


def wait_for(pred, timeout: float = 20.0, interval: float = 0.05, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


REPO = Path(__file__).resolve().parents[2]


def spawn(argv: list[str], **kw):
    """A child process with the repo on sys.path (stdout piped); the caller stops it by PID."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen([sys.executable, *argv], cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kw)


def edgekit(ctx, *args: str):
    """``edgekit fleet --data-dir <ctx> ARGS`` as a child process."""
    return spawn(["-m", "edgekit.cli", "fleet", "--data-dir", str(ctx.data_dir), *args])


@pytest.fixture
def pg_url(postgres, request):
    """A fresh database on the session's PostgreSQL server."""
    import re

    import psycopg

    name = "t_" + re.sub(r"[^a-z0-9_]", "_", request.node.name.lower())[-50:]
    with psycopg.connect(postgres.url().replace("postgresql+psycopg", "postgresql"), autocommit=True) as c:
        c.execute(f'DROP DATABASE IF EXISTS "{name}"')
        c.execute(f'CREATE DATABASE "{name}"')
    return postgres.url(name)


@pytest.fixture(params=["sqlite", "postgresql"])
def any_db(request, tmp_path):
    """'' for the default SQLite store in the data dir, or a fresh PostgreSQL url."""
    if request.param == "sqlite":
        return ""
    return request.getfixturevalue("pg_url")


@pytest.fixture
def fleet_db(tmp_path, any_db):
    f = Fleet(tmp_path, db_url=any_db).start_broker()
    yield f
    f.stop_broker()
