"""The dashboard's ASGI application (Starlette): pages, the JSON API under ``/api/v1`` and live updates (SSE).

Authentication: a session cookie (HttpOnly, SameSite=Strict, Secure over TLS) from ``POST /api/v1/login``, or an
API token (``Authorization: Bearer ekt_…``). Every POST made with a session cookie must carry the session's CSRF
token in ``X-CSRF-Token``; API tokens are not cookies, so they need none. Only operators may act; every action is
written to the rollout audit log as ``user:NAME``.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import re
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from edgekit.errors import EdgekitError
from edgekit.extras import require

require("starlette", "fleet")

from starlette.applications import Starlette  # noqa: E402
from starlette.concurrency import run_in_threadpool  # noqa: E402
from starlette.requests import Request  # noqa: E402
from starlette.responses import FileResponse, RedirectResponse, Response, StreamingResponse  # noqa: E402
from starlette.routing import Mount, Route  # noqa: E402
from starlette.staticfiles import StaticFiles  # noqa: E402

from . import api  # noqa: E402
from .auth import CSRF_HEADER, SESSION_COOKIE, LoginLimiter  # noqa: E402
from .users import AuthError, Principal, StoredFailures  # noqa: E402

STATIC = Path(__file__).with_name("static")
SECURITY_HEADERS = {
    "content-security-policy": "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
                               "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "no-referrer",
}

# GET /api/v1/<path>: (pattern, reader(fleet, query, *groups)); the stream endpoint serves the same readers
READERS: list[tuple[re.Pattern, Callable[..., Any]]] = [
    (re.compile(r"^overview$"), api.overview),
    (re.compile(r"^devices$"), api.devices),
    (re.compile(r"^devices/([A-Za-z0-9_.-]{1,64})$"), api.device),
    (re.compile(r"^devices/([A-Za-z0-9_.-]{1,64})/telemetry$"), api.telemetry),
    (re.compile(r"^rollouts$"), api.rollouts),
    (re.compile(r"^rollouts/([A-Za-z0-9_.-]{1,64})$"), api.rollout),
    (re.compile(r"^bundles$"), api.bundles),
]


class Refused(Exception):
    def __init__(self, status: int, message: str, hint: str = "", headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.message, self.hint, self.headers = status, message, hint, headers or {}


def _json(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    body = json.dumps(data, default=str, separators=(",", ":")).encode()
    return Response(body, status, media_type="application/json",
                    headers={"cache-control": "no-store", **SECURITY_HEADERS, **(headers or {})})


def _status_of(exc: EdgekitError) -> int:
    from fleet.errors import UnknownDeviceError
    from fleet.rollout.errors import RolloutNotFoundError, RolloutStateError

    if isinstance(exc, AuthError):
        return 401
    if isinstance(exc, (UnknownDeviceError, RolloutNotFoundError)):
        return 404
    if isinstance(exc, RolloutStateError):
        return 409
    return 400


class Dashboard:
    """State of one dashboard app: the fleet, the login limiter, whether cookies are marked Secure, the live views."""

    def __init__(self, fleet: api.Fleet, *, secure_cookies: bool = False, limiter: LoginLimiter | None = None,
                 stream_interval: float = 1.0, stream_refresh: float = 10.0):
        self.fleet = fleet
        self.secure = secure_cookies
        # failed logins are counted in the fleet store: every dashboard process on it shares the limit
        self.limiter = limiter or LoginLimiter(clock=time.time, failures=StoredFailures(fleet.engine))
        self.stream_interval = stream_interval
        self.live = LiveViews(fleet, stream_interval, stream_refresh)
        self.stopping = False

    # --- who is asking -------------------------------------------------------------------------------------------

    def principal(self, request: Request) -> Principal | None:
        auth = request.headers.get("authorization", "")
        if auth:
            scheme, _, token = auth.partition(" ")
            if scheme.lower() != "bearer" or not token:
                raise Refused(401, "unsupported Authorization header", "send 'Authorization: Bearer <API token>'")
            p = self.fleet.users.token(token.strip())
            if p is None:
                raise Refused(401, "unknown or revoked API token", "create one with 'edgekit fleet token create'")
            return p
        cookie = request.cookies.get(SESSION_COOKIE)
        return self.fleet.users.session(cookie) if cookie else None

    def require(self, request: Request, *, act: bool = False) -> Principal:
        p = self.principal(request)
        if p is None:
            raise Refused(401, "not logged in", "log in at /login or send an API token")
        if act:
            if p.via == "session":
                sent = request.headers.get(CSRF_HEADER, "")
                if not sent or not hmac.compare_digest(sent, p.csrf or ""):
                    raise Refused(403, "missing or wrong CSRF token", "reload the page and try again")
            if not p.can_act:
                raise Refused(403, f"user {p.user!r} is a viewer and cannot act", "ask an operator")
        return p


async def _body(request: Request) -> dict[str, Any]:
    raw = await request.body()
    if len(raw) > 64 * 1024:
        raise Refused(413, "request body too large")
    if not raw:
        return {}
    try:
        data = json.loads(raw)
    except ValueError:
        raise Refused(400, "the request body is not JSON", "send a JSON object") from None
    if not isinstance(data, dict):
        raise Refused(400, "the request body must be a JSON object")
    return data


@dataclass
class _Live:
    text: str
    token: tuple | None
    at: float  # monotonic time it was computed


class LiveViews:
    """The JSON the live streams send, shared by every viewer of the same endpoint and query: computed at most once
    per ``interval``; for readers of device data only (the devices table, a device's telemetry) not recomputed
    while the store's cheap change token stays the same, yet at least every ``refresh`` seconds (their figures
    cover sliding time windows)."""

    TOKENED = (api.devices, api.telemetry)

    def __init__(self, fleet: api.Fleet, interval: float, refresh: float):
        self.fleet, self.interval, self.refresh = fleet, interval, refresh
        self._lock = threading.Lock()
        self._locks: dict[tuple, threading.Lock] = {}
        self._cache: dict[tuple, _Live] = {}
        self.computed = 0  # how many times a reader ran for a stream

    def text(self, fn: Callable[..., Any], query: dict[str, str], groups: tuple) -> str:
        key = (fn.__name__, groups, tuple(sorted(query.items())))
        with self._lock:
            lock = self._locks.setdefault(key, threading.Lock())
        with lock:
            now = time.monotonic()
            entry = self._cache.get(key)
            if entry is not None and now - entry.at < self.interval * 0.9:
                return entry.text  # another viewer's copy from this round
            token = None
            if fn in self.TOKENED:
                from fleet.store import devices_change_token

                try:
                    token = devices_change_token(self.fleet.engine)
                except EdgekitError:
                    token = None
                if entry is not None and token is not None and token == entry.token \
                        and now - entry.at < self.refresh:
                    return entry.text
            try:
                text = json.dumps(fn(self.fleet, query, *groups), default=str, separators=(",", ":"))
            except EdgekitError as exc:
                text, token = json.dumps({"error": exc.message, "hint": exc.hint}), None
            self.computed += 1
            self._cache[key] = _Live(text, token, now)
            with self._lock:  # forget views nobody streamed for a minute
                for k in [k for k, v in self._cache.items() if now - v.at > 60 and k != key]:
                    self._cache.pop(k, None)
                    self._locks.pop(k, None)
            return text


def _guard(handler):
    async def wrapped(request: Request) -> Response:
        try:
            return await handler(request)
        except Refused as exc:
            return _json({"error": exc.message, "hint": exc.hint}, exc.status, exc.headers)
        except EdgekitError as exc:
            return _json({"error": exc.message, "hint": exc.hint, "code": exc.code}, _status_of(exc))
    return wrapped


def _find_reader(path: str):
    for pattern, fn in READERS:
        m = pattern.match(path)
        if m:
            return fn, m.groups()
    raise Refused(404, f"no API endpoint /api/v1/{path}", "see docs/dashboard.md for the endpoints")


def build_app(fleet: api.Fleet, **options: Any) -> Starlette:
    dash = Dashboard(fleet, **options)

    def cookie_headers(value: str, max_age: int) -> dict[str, str]:
        attrs = [f"{SESSION_COOKIE}={value}", "Path=/", "HttpOnly", "SameSite=Strict", f"Max-Age={max_age}"]
        if dash.secure:
            attrs.append("Secure")
        return {"set-cookie": "; ".join(attrs)}

    @_guard
    async def login(request: Request) -> Response:
        body = await _body(request)
        user, password = body.get("user"), body.get("password")
        if not isinstance(user, str) or not isinstance(password, str):
            raise Refused(400, "send user and password", 'e.g. {"user": "ann", "password": "..."}')
        client = request.client.host if request.client else "?"
        wait = await run_in_threadpool(dash.limiter.retry_after, user, client)
        if wait > 0:
            raise Refused(429, "too many failed logins", f"try again in {wait:.0f} s",
                          {"retry-after": str(max(1, int(wait + 0.999)))})
        try:
            await run_in_threadpool(fleet.users.verify, user, password)
        except AuthError:
            await run_in_threadpool(dash.limiter.failed, user, client)
            raise
        await run_in_threadpool(dash.limiter.succeeded, user, client)
        token, p = await run_in_threadpool(fleet.users.open_session, user)
        from .users import SESSION_SECONDS

        return _json({"user": p.user, "role": p.role, "csrf": p.csrf}, 200, cookie_headers(token, SESSION_SECONDS))

    @_guard
    async def logout(request: Request) -> Response:
        await run_in_threadpool(dash.require, request, act=False)
        p = await run_in_threadpool(dash.principal, request)
        if p and p.via == "session":
            sent = request.headers.get(CSRF_HEADER, "")
            if not hmac.compare_digest(sent, p.csrf or ""):
                raise Refused(403, "missing or wrong CSRF token")
            await run_in_threadpool(fleet.users.close_session, request.cookies.get(SESSION_COOKIE, ""))
        return _json({"ok": True}, 200, cookie_headers("", 0))

    @_guard
    async def me(request: Request) -> Response:
        p = await run_in_threadpool(dash.require, request)
        return _json({"user": p.user, "role": p.role, "csrf": p.csrf, "via": p.via, "fleet": fleet.fleet_id,
                      "can_act": p.can_act})

    @_guard
    async def read(request: Request) -> Response:
        await run_in_threadpool(dash.require, request)
        fn, groups = _find_reader(request.path_params["path"])
        data = await run_in_threadpool(fn, fleet, dict(request.query_params), *groups)
        return _json(data)

    @_guard
    async def stream(request: Request) -> Response:
        """Server-sent events: the JSON of GET ``path`` each time it changes (checked every second)."""
        await run_in_threadpool(dash.require, request)
        path = request.query_params.get("path", "")
        if not path.startswith("/api/v1/"):
            raise Refused(400, "path must be an /api/v1/ endpoint", "e.g. ?path=/api/v1/overview")
        target, _, qs = path[len("/api/v1/"):].partition("?")
        fn, groups = _find_reader(target)
        from urllib.parse import parse_qsl

        query = dict(parse_qsl(qs))
        interval = dash.stream_interval

        async def events():
            last, last_sent = None, time.monotonic()
            while not dash.stopping:
                if await request.is_disconnected():
                    return
                if await run_in_threadpool(dash.principal, request) is None:
                    yield "event: logout\ndata: {}\n\n"
                    return
                text = await run_in_threadpool(dash.live.text, fn, query, groups)
                if text != last:
                    last, last_sent = text, time.monotonic()
                    yield f"event: update\ndata: {text}\n\n"
                elif time.monotonic() - last_sent > 15:
                    last_sent = time.monotonic()
                    yield ": keep-alive\n\n"
                await asyncio.sleep(interval)

        return StreamingResponse(events(), media_type="text/event-stream",
                                 headers={"cache-control": "no-store", "x-accel-buffering": "no"})

    @_guard
    async def act(request: Request) -> Response:
        p = await run_in_threadpool(dash.require, request, act=True)
        body = await _body(request)
        data = await run_in_threadpool(api.command, fleet, request.path_params["rid"],
                                       request.path_params["action"], p.actor, body)
        return _json(data)

    @_guard
    async def create(request: Request) -> Response:
        p = await run_in_threadpool(dash.require, request, act=True)
        body = await _body(request)
        data = await run_in_threadpool(api.create, fleet, p.actor, body)
        return _json(data, 201)

    async def page(request: Request) -> Response:
        try:
            p = await run_in_threadpool(dash.principal, request)
        except Refused:
            p = None
        if p is None:
            return RedirectResponse("/login", 303)
        return FileResponse(STATIC / "index.html", headers={"cache-control": "no-store", **SECURITY_HEADERS})

    async def login_page(request: Request) -> Response:
        return FileResponse(STATIC / "login.html", headers={"cache-control": "no-store", **SECURITY_HEADERS})

    async def healthz(request: Request) -> Response:
        return Response("ok\n", media_type="text/plain")

    async def not_allowed(request: Request) -> Response:
        return _json({"error": f"{request.method} is not allowed on {request.url.path}"}, 405)

    routes = [
        Route("/", page),
        Route("/login", login_page),
        Route("/healthz", healthz),
        Route("/api/v1/login", login, methods=["POST"]),
        Route("/api/v1/logout", logout, methods=["POST"]),
        Route("/api/v1/me", me),
        Route("/api/v1/stream", stream),
        Route("/api/v1/rollouts", create, methods=["POST"]),
        Route("/api/v1/rollouts/{rid}/{action}", act, methods=["POST"]),
        Route("/api/v1/{path:path}", read, methods=["GET"]),
        Route("/api/v1/{path:path}", not_allowed, methods=["POST", "PUT", "DELETE", "PATCH"]),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ]
    app = Starlette(routes=routes)
    app.state.dashboard = dash
    return app
