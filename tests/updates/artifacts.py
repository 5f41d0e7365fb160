"""A small artifact server for update tests: serves files from a directory with Range support and logs requests.

Per-path faults make the network misbehave on purpose: ``truncate`` (send only the first N bytes of the body, then
close the connection, for the next ``times`` requests), ``delay`` (seconds between 16 KiB chunks) and ``status``
(answer with an HTTP error). Runs in a thread of the test process on 127.0.0.1; the test stops it.
"""

from __future__ import annotations

import re
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

_RANGE = re.compile(r"^bytes=(\d+)-(\d*)$")
CHUNK = 16 * 1024


@dataclass
class Fault:
    truncate: int | None = None   # send at most this many body bytes, then drop the connection
    times: int = 1                # how many requests the truncation applies to (-1: always)
    delay: float = 0.0            # pause between chunks
    status: int | None = None     # answer every request with this status instead
    ignore_range: bool = False    # behave like a server without Range support (always 200, whole file)


@dataclass
class LoggedRequest:
    path: str
    range: str | None
    status: int
    sent: int
    ts: float = field(default_factory=time.time)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format, *args):  # noqa: A002
        pass

    def do_GET(self):  # noqa: N802
        srv: ArtifactServer = self.server.owner
        name = self.path.lstrip("/").split("?")[0]
        path = srv.root / name
        rng = self.headers.get("Range")
        fault = srv.faults.get(name)
        if fault and fault.status:
            return self._error(fault.status, name, rng)
        if "/" in name or not path.is_file():
            return self._error(404, name, rng)
        data = path.read_bytes()
        start, end, status = 0, len(data) - 1, 200
        if rng and not (fault and fault.ignore_range):
            m = _RANGE.match(rng)
            if not m:
                return self._error(416, name, rng)
            start = int(m.group(1))
            end = int(m.group(2)) if m.group(2) else len(data) - 1
            if start >= len(data):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                srv.log(LoggedRequest(name, rng, 416, 0))
                return
            status = 206
        body = data[start:end + 1]
        self.send_response(status)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Content-Length", str(len(body)))
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{end}/{len(data)}")
        self.end_headers()
        limit = len(body)
        truncating = False
        if fault and fault.truncate is not None and fault.times != 0:
            limit = min(limit, fault.truncate)
            truncating = True
            if fault.times > 0:
                fault.times -= 1
        sent = 0
        try:
            while sent < limit:
                n = min(CHUNK, limit - sent)
                self.wfile.write(body[sent:sent + n])
                self.wfile.flush()
                sent += n
                if fault and fault.delay:
                    time.sleep(fault.delay)
        except (BrokenPipeError, ConnectionResetError):
            pass
        srv.log(LoggedRequest(name, rng, status, sent))
        if truncating and sent < len(body):
            self.close_connection = True
            try:
                self.connection.shutdown(2)
            except OSError:
                pass

    def _error(self, status, name, rng):
        body = f"HTTP {status}\n".encode()
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
        self.server.owner.log(LoggedRequest(name, rng, status, 0))


class ArtifactServer:
    def __init__(self, root: Path):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.faults: dict[str, Fault] = {}
        self.requests: list[LoggedRequest] = []
        self._lock = threading.Lock()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self._httpd.daemon_threads = True
        self._httpd.owner = self
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.1},
                                        daemon=True)

    @property
    def port(self) -> int:
        return self._httpd.server_address[1]

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.port}/{name}"

    def add(self, src: Path, name: str | None = None) -> str:
        name = name or Path(src).name
        (self.root / name).write_bytes(Path(src).read_bytes())
        return name

    def log(self, req: LoggedRequest) -> None:
        with self._lock:
            self.requests.append(req)

    def requests_for(self, name: str) -> list[LoggedRequest]:
        with self._lock:
            return [r for r in self.requests if r.path == name]

    def start(self) -> "ArtifactServer":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)
