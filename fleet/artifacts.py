"""Content-addressed bundle store and the HTTP server devices download bundles from.

``publish_bundle(path, artifacts_dir, base_url)`` verifies the bundle, copies it to ``<sha256>.ekb`` (temp → fsync →
rename) and returns its URL. :class:`ArtifactServer` serves ``GET``/``HEAD /artifacts/<sha256>.ekb``:

* the body goes out with ``sendfile(2)`` (``socket.sendfile``): no copy through Python, whatever the bundle size;
* single byte ranges (``bytes=a-b``, ``bytes=a-``, ``bytes=-n``) for resumed downloads;
* ``ETag`` is the content hash, so ``If-None-Match`` gets ``304 Not Modified``, and the response may be cached
  for good (``Cache-Control: public, max-age=31536000, immutable``: a URL never changes content);
* at most ``max_downloads`` bodies are sent at once; one more gets ``503`` with ``Retry-After`` (devices retry
  with backoff) instead of a thread more and a slower transfer for everyone.

It keeps a bounded request log and counters (:meth:`ArtifactServer.counters`), and serves ``/stats`` (JSON
counters supplied by the ingest service), ``/metrics`` (Prometheus, when the service supplies it) and
``/healthz``.
"""

from __future__ import annotations

import collections
import json
import logging
import os
import re
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Callable

from edgekit.bundle import read_bundle
from edgekit.hashing import file_sha256
from edgekit.errors import BundleError
from edgekit.fsutil import fsync_dir

from .errors import ArtifactError

log = logging.getLogger("edgekit.fleet.artifacts")
_NAME = re.compile(r"^/artifacts/([0-9a-f]{64})\.ekb$")
_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")
CHUNK = 256 * 1024
CACHE_CONTROL = "public, max-age=31536000, immutable"  # content-addressed: a URL never changes


def publish_bundle(path: str | os.PathLike, artifacts_dir: str | os.PathLike, base_url: str,
                   pubkey: str | os.PathLike | None = None) -> str:
    """Verify ``path`` (against ``pubkey`` if given) and copy it into the content-addressed store; return its URL."""
    src = Path(path)
    try:
        read_bundle(src, pubkey=pubkey)
    except FileNotFoundError:
        raise ArtifactError(f"bundle {src} does not exist") from None
    except BundleError as exc:
        raise ArtifactError(f"refusing to publish {src}: {exc.message}", hint=exc.hint) from exc
    sha = file_sha256(src)
    dest_dir = Path(artifacts_dir)
    dest_dir.mkdir(parents=True, exist_ok=True)
    dest = dest_dir / f"{sha}.ekb"
    if not dest.exists() or file_sha256(dest) != sha:
        fd, tmp = tempfile.mkstemp(prefix=f".{sha}.", suffix=".tmp", dir=dest_dir)
        try:
            with os.fdopen(fd, "wb") as out, open(src, "rb") as inp:
                shutil.copyfileobj(inp, out, CHUNK)
                out.flush()
                os.fsync(out.fileno())
            os.chmod(tmp, 0o644)
            os.replace(tmp, dest)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        fsync_dir(dest_dir)
    return artifact_url(base_url, sha)


def artifact_url(base_url: str, sha256: str) -> str:
    return f"{base_url.rstrip('/')}/artifacts/{sha256}.ekb"


def parse_range(header: str, size: int) -> tuple[int, int] | None:
    """``Range`` header → inclusive (start, end), or None if unsatisfiable/unsupported. Pure."""
    m = _RANGE.match(header.strip())
    if not m or (not m.group(1) and not m.group(2)) or size == 0:
        return None
    first, last = m.group(1), m.group(2)
    if not first:
        n = int(last)
        if n == 0:
            return None
        return max(0, size - n), size - 1
    start = int(first)
    end = int(last) if last else size - 1
    if start >= size or end < start:
        return None
    return start, min(end, size - 1)


@dataclass
class RequestRecord:
    ts: float
    client: str
    method: str
    path: str
    status: int
    range: str | None
    bytes_sent: int


def etag_matches(header: str | None, etag: str) -> bool:
    """Does an ``If-None-Match`` header name ``etag`` (or ``*``)? Weak validators compare equal too. Pure."""
    if not header:
        return False
    for tag in header.split(","):
        tag = tag.strip()
        if tag == "*" or tag.removeprefix("W/") == etag:
            return True
    return False


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 1024  # thousands of devices may connect at once after a desired state goes out


class ArtifactServer:
    """A threading HTTP server over ``artifacts_dir``; ``start()`` runs it in a daemon thread."""

    def __init__(self, artifacts_dir: str | os.PathLike, host: str = "127.0.0.1", port: int = 0,
                 stats: Callable[[], dict] | None = None, log_size: int = 1000, max_downloads: int = 64,
                 retry_after: int = 1, metrics: Callable[[], tuple[bytes, str]] | None = None):
        self.dir = Path(artifacts_dir)
        self.metrics = metrics
        self.downloads = 0    # GET of a bundle answered 200/206
        self.bytes_sent = 0   # bundle bytes sent
        self.dir.mkdir(parents=True, exist_ok=True)
        self.stats = stats
        self.requests: collections.deque[RequestRecord] = collections.deque(maxlen=log_size)
        self.max_downloads = max_downloads
        self.retry_after = retry_after
        self._slots = threading.BoundedSemaphore(max(1, max_downloads))
        self._lock = threading.Lock()
        self._counts = collections.Counter()
        self._active = 0
        self._httpd = _Server((host, port), _handler_for(self))
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return self._httpd.server_address[1]

    @property
    def url(self) -> str:
        host = self._httpd.server_address[0]
        return f"http://{host}:{self.port}"

    def start(self) -> "ArtifactServer":
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="artifact-http", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        if self._thread:
            self._thread.join(5)

    def counters(self) -> dict[str, int]:
        """requests, bodies started/completed (``downloads``: ranges ending at the last byte), ``bytes_sent``,
        ``not_modified``, ``busy`` (503 at the concurrency limit), ``active`` and its ``peak_active``."""
        with self._lock:
            return {**{k: self._counts[k] for k in ("requests", "bodies", "downloads", "bytes_sent", "not_modified",
                                                    "busy", "peak_active")}, "active": self._active,
                    "max_downloads": self.max_downloads}

    def _count(self, **kw: int) -> None:
        with self._lock:
            self._counts.update(kw)

    def acquire(self) -> bool:
        if not self._slots.acquire(blocking=False):
            return False
        with self._lock:
            self._active += 1
            self._counts["peak_active"] = max(self._counts["peak_active"], self._active)
        return True

    def release(self) -> None:
        with self._lock:
            self._active -= 1
        self._slots.release()

    def record(self, rec: RequestRecord) -> None:
        self.requests.append(rec)
        self._count(requests=1)
        if rec.method == "GET" and rec.status in (200, 206) and rec.path.startswith("/artifacts/"):
            self.downloads += 1
            self.bytes_sent += rec.bytes_sent
        log.info("%s %s %s %s range=%s bytes=%d", rec.client, rec.method, rec.path, rec.status, rec.range,
                 rec.bytes_sent)


def _handler_for(server: ArtifactServer):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = "edgekit-artifacts/1"

        def log_message(self, fmt, *args):  # replaced by ArtifactServer.record
            pass

        def do_HEAD(self):
            self._serve(head=True)

        def do_GET(self):
            self._serve(head=False)

        def _send_small(self, status: int, body: bytes, ctype: str = "text/plain; charset=utf-8") -> None:
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)
            self._log(status, len(body))

        def _log(self, status: int, sent: int) -> None:
            server.record(RequestRecord(time.time(), self.client_address[0], self.command, self.path, status,
                                        self.headers.get("Range"), sent))

        def _serve(self, head: bool) -> None:
            if self.path == "/healthz":
                return self._send_small(200, b"ok\n")
            if self.path == "/stats":
                body = json.dumps(server.stats() if server.stats else {}, sort_keys=True).encode()
                return self._send_small(200, body, "application/json")
            if self.path == "/metrics" and server.metrics is not None:
                body, ctype = server.metrics()
                return self._send_small(200, body, ctype)
            m = _NAME.match(self.path)
            if not m:
                return self._send_small(404, b"not found\n")
            path = server.dir / f"{m.group(1)}.ekb"
            etag = f'"{m.group(1)}"'
            try:
                f = open(path, "rb")
            except FileNotFoundError:
                return self._send_small(404, b"no such artifact\n")
            with f:
                size = os.fstat(f.fileno()).st_size
                if etag_matches(self.headers.get("If-None-Match"), etag):
                    self.send_response(304)
                    self.send_header("ETag", etag)
                    self.send_header("Cache-Control", CACHE_CONTROL)
                    self.end_headers()
                    server._count(not_modified=1)
                    return self._log(304, 0)
                rng_header = self.headers.get("Range")
                start, end, status = 0, size - 1, 200
                if rng_header:
                    rng = parse_range(rng_header, size)
                    if rng is None:
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{size}")
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return self._log(416, 0)
                    start, end, status = rng[0], rng[1], 206
                if not head and not server.acquire():
                    self.send_response(503)
                    self.send_header("Retry-After", str(server.retry_after))
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    server._count(busy=1)
                    return self._log(503, 0)
                try:
                    self._send_body(f, head, status, start, end, size, etag)
                finally:
                    if not head:
                        server.release()

        def _send_body(self, f, head: bool, status: int, start: int, end: int, size: int, etag: str) -> None:
            length = end - start + 1 if size else 0
            self.send_response(status)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Accept-Ranges", "bytes")
            self.send_header("ETag", etag)
            self.send_header("Cache-Control", CACHE_CONTROL)
            self.send_header("Content-Length", str(length))
            if status == 206:
                self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
            self.end_headers()
            sent = 0
            if not head and length:
                server._count(bodies=1)
                try:
                    sent = self.connection.sendfile(f, offset=start, count=length)  # sendfile(2), no user copy
                except (BrokenPipeError, ConnectionResetError, TimeoutError):
                    self.close_connection = True
                server._count(bytes_sent=sent)
                if sent == length and end == size - 1:
                    server._count(downloads=1)
            self._log(status, sent)

    return Handler
