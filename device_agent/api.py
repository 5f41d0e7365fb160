"""The local inference API: HTTP/1.1 (keep-alive) on the loopback interface, stdlib ``ThreadingHTTPServer``.

Routes (a table, :data:`ROUTES`):

Optionally the same API listens on a Unix socket too (``api.unix_socket``).

* ``GET /v1/health`` — ``{"status": "ok" | "no_model", "model", "backend", "mqtt_connected", ...}``
* ``GET /v1/model`` — the serving model: name, version, sha256, inputs, outputs, labels, preprocessing
* ``POST /v1/infer`` — body ``application/json`` (``{"inputs": ...}``), ``application/x-npy`` or
  ``application/x-npz``; the answer uses the same encoding. Bad input → 400, unknown route → 404, wrong method → 405,
  body too large → 413, unknown content type → 415, no model → 503.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import socketserver
import threading
import time
from email.utils import formatdate
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable

from edgekit.errors import EdgekitError

from . import codec
from .errors import InvalidInputError, NoModelError

log = logging.getLogger("edgekit.agent.api")


MAX_LINE = 8192
MAX_HEADERS = 64
_PHRASES = {s.value: s.phrase for s in HTTPStatus}
_date_cache: list = [0, ""]


def _http_date() -> str:
    now = int(time.time())
    if _date_cache[0] != now:
        _date_cache[0], _date_cache[1] = now, formatdate(now, usegmt=True)
    return _date_cache[1]


class Headers(dict):
    """Request headers by lower-cased name; ``get`` ignores case like the stdlib's message class."""

    def get(self, key: str, default=None):  # type: ignore[override]
        return dict.get(self, key.lower(), default)

    def __getitem__(self, key: str) -> str:
        return dict.__getitem__(self, key.lower())


class HttpError(Exception):
    def __init__(self, status: int, message: str, hint: str = ""):
        super().__init__(message)
        self.status = status
        self.message = message
        self.hint = hint


def _error_status(exc: Exception) -> int:
    if isinstance(exc, InvalidInputError):
        return 400
    if isinstance(exc, NoModelError):
        return 503
    return 500


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "edgekit-agent"
    disable_nagle_algorithm = True

    # --- plumbing ----------------------------------------------------------------------------------------------

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        log.debug("%s " + format, self.address_string(), *args)

    # The stdlib parses headers with the email package and writes a response in several system calls; requests
    # here are small and frequent, so both are done directly (same behaviour for the HTTP/1.0 and 1.1 subset used).

    def parse_request(self) -> bool:
        self.command = None
        self.request_version = "HTTP/0.9"
        self.close_connection = True
        line = str(self.raw_requestline, "iso-8859-1").rstrip("\r\n")
        self.requestline = line
        parts = line.split()
        if len(parts) != 3:
            self.request_version = "HTTP/1.0"
            self._fail(400, f"bad request line {line[:80]!r}")
            return False
        self.command, self.path, version = parts
        if version not in ("HTTP/1.1", "HTTP/1.0"):
            self.request_version = "HTTP/1.0"
            self._fail(505, f"unsupported HTTP version {version[:20]!r}")
            return False
        self.request_version = version
        headers = Headers()
        for _ in range(MAX_HEADERS + 1):
            raw = self.rfile.readline(MAX_LINE + 1)
            if len(raw) > MAX_LINE:
                self._fail(431, "header line too long")
                return False
            if raw in (b"\r\n", b"\n", b""):
                break
            name, sep, value = raw.decode("iso-8859-1").partition(":")
            if not sep or not name.strip():
                self._fail(400, "malformed header line")
                return False
            headers[name.strip().lower()] = value.strip()
        else:
            self._fail(431, "too many headers")
            return False
        self.headers = headers  # type: ignore[assignment]
        conn = headers.get("connection", "").lower()
        self.close_connection = conn == "close" or (version == "HTTP/1.0" and conn != "keep-alive")
        if version == "HTTP/1.1" and headers.get("expect", "").lower() == "100-continue":
            self.wfile.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        return True

    def _send(self, status: int, content_type: str, body: bytes, headers: dict[str, str] | None = None) -> None:
        phrase = _PHRASES.get(status, "")
        lines = [f"HTTP/1.1 {status} {phrase}", "Server: edgekit-agent", f"Date: {_http_date()}",
                 f"Content-Type: {content_type}", f"Content-Length: {len(body)}"]
        lines.extend(f"{k}: {v}" for k, v in (headers or {}).items())
        if self.close_connection:
            lines.append("Connection: close")
        self.wfile.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body)
        log.debug("%s %s %d", self.command, self.path, status)

    def _json(self, status: int, doc: Any) -> None:
        self._send(status, codec.JSON, json.dumps(doc, separators=(",", ":")).encode())

    def _fail(self, status: int, message: str, hint: str = "") -> None:
        doc = {"error": message, "status": status}
        if hint:
            doc["hint"] = hint
        self._json(status, doc)

    def _body(self) -> bytes:
        length = self.headers.get("Content-Length")
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            self.close_connection = True
            raise HttpError(411, "chunked bodies are not supported", "send a Content-Length")
        if length is None:
            self.close_connection = True
            raise HttpError(411, "the request needs a Content-Length")
        try:
            n = int(length)
        except ValueError:
            self.close_connection = True
            raise HttpError(400, "Content-Length is not a number") from None
        limit = self.server.app.max_body
        if n < 0 or n > limit:
            self.close_connection = True
            raise HttpError(413, f"the body is {n} bytes, over the {limit}-byte limit")
        return self.rfile.read(n)

    def _dispatch(self, method: str) -> None:
        path = self.path.split("?", 1)[0].rstrip("/") or "/"
        methods = ROUTES.get(path)
        try:
            if methods is None:
                if method == "POST":
                    self._drain()
                raise HttpError(404, f"no route {path}", "use /v1/infer, /v1/model or /v1/health")
            handler = methods.get(method)
            if handler is None:
                if method == "POST":
                    self._drain()
                raise HttpError(405, f"{method} is not allowed on {path}", f"use {', '.join(methods)}")
            handler(self)
        except HttpError as exc:
            self._fail(exc.status, exc.message, exc.hint)
        except EdgekitError as exc:
            self._fail(_error_status(exc), exc.message, exc.hint)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
        except Exception as exc:  # noqa: BLE001 - answer 500, keep serving
            log.exception("local API request failed")
            self._fail(500, f"internal error: {type(exc).__name__}: {exc}")

    def _drain(self) -> None:
        try:
            self._body()
        except HttpError:
            pass

    def do_GET(self) -> None:  # noqa: N802 - stdlib naming
        self._dispatch("GET")

    def do_POST(self) -> None:  # noqa: N802
        self._dispatch("POST")

    def do_PUT(self) -> None:  # noqa: N802
        self._dispatch("PUT")

    def do_DELETE(self) -> None:  # noqa: N802
        self._dispatch("DELETE")

    # --- routes ------------------------------------------------------------------------------------------------

    def health(self) -> None:
        self._json(200, self.server.app.health())

    def model(self) -> None:
        self._json(200, self.server.app.model_info())

    def infer(self) -> None:
        body = self._body()
        mtype = codec.media_type(self.headers.get("Content-Type"))
        decoder = codec.DECODERS.get(mtype)
        if decoder is None:
            raise HttpError(415, f"unsupported content type {mtype!r}",
                            f"send {codec.JSON}, {codec.NPY} or {codec.NPZ}")
        app = self.server.app
        outputs, runner, entry, seconds = app.infer_body(decoder, body)
        meta = {"model": entry.model_ref(), "latency_ms": round(seconds * 1000, 4)}
        enc = codec.encode_outputs(outputs, runner.outputs, mtype, meta)
        self._send(200, enc.content_type, enc.body,
                   {"X-Edgekit-Model": f"{entry.name}@{entry.version}", "X-Edgekit-Sha256": entry.sha256,
                    "X-Edgekit-Latency-Ms": str(meta["latency_ms"])})


ROUTES: dict[str, dict[str, Callable[[Handler], None]]] = {
    "/v1/health": {"GET": Handler.health},
    "/v1/model": {"GET": Handler.model},
    "/v1/infer": {"POST": Handler.infer},
}


class _Serving:
    """Start/stop of a server in its own thread (mixed into the TCP and the Unix-socket server)."""

    _thread: threading.Thread | None = None

    def start(self):
        self._thread = threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.2},
                                        name=f"local-api-{type(self).__name__}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self.shutdown()
        self.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)


class ApiServer(_Serving, ThreadingHTTPServer):
    """The API on a loopback TCP port (``::1`` selects IPv6)."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, app: Any, host: str = "127.0.0.1", port: int = 0):
        self.app = app
        self.address_family = socket.AF_INET6 if ":" in host else socket.AF_INET
        super().__init__((host, port), Handler)

    @property
    def port(self) -> int:
        return self.server_address[1]


class UnixHandler(Handler):
    disable_nagle_algorithm = False  # not a TCP socket

    def address_string(self) -> str:
        return "unix"


class UnixApiServer(_Serving, socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    """The same API on a Unix socket (file mode 0660: the agent's user and group)."""

    daemon_threads = True

    def __init__(self, app: Any, path: str | os.PathLike):
        self.app = app
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.path.is_socket():
            self.path.unlink()  # left by a previous run that was killed
        super().__init__(str(self.path), UnixHandler)
        os.chmod(self.path, 0o660)

    def server_close(self) -> None:
        super().server_close()
        self.path.unlink(missing_ok=True)
