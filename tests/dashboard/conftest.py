"""Dashboard fixtures: a fleet (real SQLite store) with users, its dashboard served by real uvicorn on 127.0.0.1,
and a small HTTP client with a cookie jar (urllib only)."""

from __future__ import annotations

import http.cookiejar
import json
import ssl
import time
import urllib.error
import urllib.request
from dataclasses import dataclass

import pytest

from tests.support.procs import free_port

PASSWORDS = {"olga": "operator-pass-1", "vic": "viewer-pass-1"}


@dataclass
class Reply:
    status: int
    body: bytes
    headers: dict

    def json(self):
        return json.loads(self.body)


class Client:
    """One browser-like client: its own cookie jar, optional CSRF token and bearer token."""

    def __init__(self, base: str, cafile: str | None = None):
        self.base = base
        self.jar = http.cookiejar.CookieJar()
        handlers = [urllib.request.HTTPCookieProcessor(self.jar)]
        if cafile:
            handlers.append(urllib.request.HTTPSHandler(context=ssl.create_default_context(cafile=cafile)))
        self.opener = urllib.request.build_opener(*handlers, _NoRedirect)
        self.csrf: str | None = None
        self.token: str | None = None

    def request(self, method: str, path: str, body=None, headers=None) -> Reply:
        hdrs = {"accept": "application/json", **(headers or {})}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            hdrs["content-type"] = "application/json"
        if self.token:
            hdrs["authorization"] = f"Bearer {self.token}"
        req = urllib.request.Request(self.base + path, data=data, method=method, headers=hdrs)
        try:
            with self.opener.open(req, timeout=30) as r:
                return Reply(r.status, r.read(), dict(r.headers))
        except urllib.error.HTTPError as exc:
            return Reply(exc.code, exc.read(), dict(exc.headers))

    def get(self, path: str) -> Reply:
        return self.request("GET", path)

    def post(self, path: str, body=None, csrf: bool = True) -> Reply:
        headers = {"x-csrf-token": self.csrf} if csrf and self.csrf else {}
        return self.request("POST", path, body if body is not None else {}, headers)

    def login(self, user: str, password: str | None = None) -> Reply:
        r = self.request("POST", "/api/v1/login", {"user": user, "password": password or PASSWORDS[user]})
        if r.status == 200:
            self.csrf = r.json()["csrf"]
        return r


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *a, **kw):
        return None


@pytest.fixture
def dash_ctx(tmp_path):
    """A fleet with an operator 'olga' and a viewer 'vic' (no broker: the API reads and writes the store)."""
    from fleet.dashboard.api import Fleet
    from fleet.setup import init_fleet

    ctx = init_fleet(tmp_path / "fleet", fleet_id="dash", tls_port=free_port(), password_port=free_port(),
                     artifacts_port=free_port())
    users = Fleet(ctx).users
    users.add("olga", "operator", PASSWORDS["olga"])
    users.add("vic", "viewer", PASSWORDS["vic"])
    return ctx


@pytest.fixture
def dashboard(dash_ctx):
    from fleet.dashboard.server import DashboardServer

    server = DashboardServer(dash_ctx, port=free_port(), stream_interval=0.2).start()
    yield server
    server.stop()


@pytest.fixture
def client(dashboard):
    return Client(dashboard.url)


def feed(ctx, device_id: str, *, version: str = "1.0.0", samples: int = 5, online: bool = True,
         p95: float = 3.0, now: float | None = None) -> None:
    """Messages through the real ingest path (decode, route, batch write): a birth message and telemetry."""
    from edgekit.protocol import StateMessage, TelemetryMessage, Topic
    from fleet.ingest import Ingest

    now = now or time.time()
    ing = Ingest(ctx.engine(), ctx.fleet_id)
    state = StateMessage(device_id, "online" if online else "offline", ts=now, agent_version="test",
                         runtime={"name": "litert", "delegates": ["xnnpack"]}, hardware={"cores": 4, "arch": "aarch64"},
                         model={"name": "digits", "version": version, "sha256": "ab" * 32},
                         update={"state": "IDLE"})
    ing.handle(str(Topic(ctx.fleet_id, device_id, "state")), state.encode(), now)
    rows = [{"seq": i, "ts": now - (samples - i) * 10, "interval_s": 10,
             "system": {"cpu_percent": 20 + i, "mem_percent": 40.0, "temperature_c": {"cpu": 50.0 + i}},
             "inference": {f"digits@{version}": {"count": 100, "errors": i % 2, "p50_ms": p95 / 2, "p95_ms": p95,
                                                 "p99_ms": p95 * 1.5}}} for i in range(samples)]
    ing.handle(str(Topic(ctx.fleet_id, device_id, "telemetry")), TelemetryMessage(device_id, rows).encode(), now)
    assert ing.stats.malformed == 0 and ing.stats.unknown == 0, ing.stats.to_dict()
    ing.flush()
