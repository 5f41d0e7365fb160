"""A small Python client of the local inference API (stdlib ``http.client``, one keep-alive connection per thread).

    from device_agent.client import AgentClient
    client = AgentClient("http://127.0.0.1:8765")   # or AgentClient("unix:///run/edgekit/api.sock")
    outputs = client.infer(x)            # x: np.ndarray (one input) or a list of arrays; returns a list of arrays
    client.model()["inputs"]; client.health()["status"]
"""

from __future__ import annotations

import io
import json
import socket
import threading
from typing import Any, Sequence
from urllib.parse import urlsplit

import numpy as np

from edgekit.arrays import load_arrays
from edgekit.errors import ArrayFileError

from . import codec
from .errors import ApiError


class _Connection:
    """One keep-alive HTTP/1.1 connection: a request is one ``sendall``, the answer is read by Content-Length."""

    def __init__(self, host: str, port: int, timeout: float, unix_path: str | None = None):
        self.host, self.port = host, port
        if unix_path:
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self.sock.settimeout(timeout)
            try:
                self.sock.connect(unix_path)
            except OSError:
                self.sock.close()
                raise
        else:
            self.sock = socket.create_connection((host, port), timeout=timeout)
            self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.rfile = self.sock.makefile("rb")

    def request(self, method: str, path: str, body: bytes, content_type: str | None) -> tuple[int, dict, bytes]:
        head = f"{method} {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\nContent-Length: {len(body)}\r\n"
        if content_type:
            head += f"Content-Type: {content_type}\r\n"
        self.sock.sendall((head + "\r\n").encode("latin-1") + body)
        line = self.rfile.readline(65537)
        if not line:
            raise ConnectionResetError("the server closed the connection")
        parts = line.split(None, 2)
        if len(parts) < 2 or not parts[0].startswith(b"HTTP/"):
            raise ApiError(f"not an HTTP answer: {line[:80]!r}", status=0)
        headers: dict[str, str] = {}
        for _ in range(100):
            raw = self.rfile.readline(65537)
            if raw in (b"\r\n", b"\n", b""):
                break
            name, _, value = raw.decode("latin-1").partition(":")
            headers[name.strip().lower()] = value.strip()
        n = int(headers.get("content-length", "0"))
        data = self.rfile.read(n)
        if len(data) != n:
            raise ConnectionResetError("the answer was cut short")
        return int(parts[1]), headers, data

    def close(self) -> None:
        try:
            self.rfile.close()
        finally:
            self.sock.close()


class AgentClient:
    def __init__(self, url: str = "http://127.0.0.1:8765", timeout: float = 30.0):
        parts = urlsplit(url)
        self.unix_path: str | None = None
        if parts.scheme == "unix" and parts.path:
            self.unix_path, self.host, self.port = parts.path, "localhost", 0
        elif parts.scheme == "http" and parts.hostname:
            self.host = parts.hostname
            self.port = parts.port or 80
        else:
            raise ApiError(f"local API URL {url!r} must look like http://127.0.0.1:PORT or unix:///path/api.sock",
                           status=0)
        self.timeout = timeout
        self._local = threading.local()

    @property
    def where(self) -> str:
        return f"unix:{self.unix_path}" if self.unix_path else f"{self.host}:{self.port}"

    def _conn(self) -> _Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._local.conn = _Connection(self.host, self.port, self.timeout, self.unix_path)
        return conn

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    def request(self, method: str, path: str, body: bytes | None = None,
                content_type: str | None = None) -> tuple[int, str, bytes]:
        """One request on this thread's keep-alive connection (reopened once if the server had closed it)."""
        for attempt in (0, 1):
            fresh = getattr(self._local, "conn", None) is None
            try:
                status, headers, data = self._conn().request(method, path, body or b"", content_type)
            except (ConnectionError, socket.timeout) as exc:
                self.close()
                if attempt or fresh or isinstance(exc, socket.timeout):
                    raise ApiError(f"the local API at {self.where} did not answer ({exc})", status=0,
                                   hint="check that the agent runs: edgekit agent status") from exc
                continue
            except OSError as exc:
                self.close()
                raise ApiError(f"cannot reach the local API at {self.where} ({exc})", status=0,
                               hint="check that the agent runs: edgekit agent status") from exc
            if headers.get("connection", "").lower() == "close":
                self.close()
            return status, headers.get("content-type", ""), data
        raise AssertionError("unreachable")  # pragma: no cover

    def _json(self, method: str, path: str) -> dict[str, Any]:
        status, _, data = self.request(method, path)
        return self._check(status, data, json.loads(data))

    @staticmethod
    def _check(status: int, data: bytes, doc: Any = None) -> Any:
        if status >= 400:
            try:
                err = json.loads(data)
                raise ApiError(err.get("error", f"HTTP {status}"), status=status, hint=err.get("hint") or None)
            except (ValueError, AttributeError):
                raise ApiError(f"HTTP {status}: {data[:200]!r}", status=status) from None
        return doc

    def health(self) -> dict[str, Any]:
        return self._json("GET", "/v1/health")

    def model(self) -> dict[str, Any]:
        return self._json("GET", "/v1/model")

    def infer(self, inputs: np.ndarray | Sequence[np.ndarray], *, encoding: str = "npy") -> list[np.ndarray]:
        """Run one inference. ``encoding`` is ``npy`` (binary, exact) or ``json``."""
        arrays = [inputs] if isinstance(inputs, np.ndarray) else list(inputs)
        if encoding == "json":
            body = json.dumps({"inputs": [a.tolist() for a in arrays]}).encode()
            ctype = codec.JSON
        elif len(arrays) == 1:
            body, ctype = codec.encode_npy(arrays[0]), codec.NPY
        else:
            buf = io.BytesIO()
            np.savez(buf, *arrays)
            body, ctype = buf.getvalue(), codec.NPZ
        status, rtype, data = self.request("POST", "/v1/infer", body, ctype)
        self._check(status, data)
        rtype = codec.media_type(rtype)
        if rtype == codec.JSON:
            return codec.decode_json_outputs(json.loads(data))
        fast = codec.read_npy(data) if rtype == codec.NPY else None
        if fast is not None:
            return [fast]
        try:
            return list(load_arrays(data, what="the agent's answer")[0].values())
        except ArrayFileError as exc:
            raise ApiError(exc.message, status=502,
                           hint="the agent answered with a body that is not .npy/.npz") from exc
