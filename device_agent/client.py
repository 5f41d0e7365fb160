"""A small Python client of the local inference API (stdlib ``http.client``, one keep-alive connection per thread).

    from device_agent.client import AgentClient
    client = AgentClient("http://127.0.0.1:8765")
    outputs = client.infer(x)            # x: np.ndarray (one input) or a list of arrays; returns a list of arrays
    client.model()["inputs"]; client.health()["status"]
"""

from __future__ import annotations

import http.client
import io
import json
import socket
import threading
from typing import Any, Sequence
from urllib.parse import urlsplit

import numpy as np

from . import codec
from .errors import ApiError


class AgentClient:
    def __init__(self, url: str = "http://127.0.0.1:8765", timeout: float = 30.0):
        parts = urlsplit(url)
        if parts.scheme != "http" or not parts.hostname:
            raise ApiError(f"local API URL {url!r} must look like http://127.0.0.1:PORT", status=0)
        self.host = parts.hostname
        self.port = parts.port or 80
        self.timeout = timeout
        self._local = threading.local()

    def _conn(self) -> http.client.HTTPConnection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
            conn.connect()
            conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._local.conn = conn
        return conn

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    def request(self, method: str, path: str, body: bytes | None = None,
                content_type: str | None = None) -> tuple[int, str, bytes]:
        headers = {"Content-Type": content_type} if content_type else {}
        for attempt in (0, 1):
            try:
                conn = self._conn()
                conn.request(method, path, body=body, headers=headers)
                resp = conn.getresponse()
                data = resp.read()
                if resp.getheader("Connection", "").lower() == "close":
                    self.close()
                return resp.status, resp.getheader("Content-Type", ""), data
            except (ConnectionError, http.client.RemoteDisconnected, http.client.CannotSendRequest,
                    http.client.BadStatusLine) as exc:
                self.close()
                if attempt:
                    raise ApiError(f"the local API at {self.host}:{self.port} closed the connection ({exc})",
                                   status=0, hint="check that the agent runs: edgekit agent status") from exc
            except OSError as exc:
                self.close()
                raise ApiError(f"cannot reach the local API at {self.host}:{self.port} ({exc})", status=0,
                               hint="check that the agent runs: edgekit agent status") from exc
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
        loaded = np.load(io.BytesIO(data), allow_pickle=False)
        if isinstance(loaded, np.ndarray):
            return [loaded]
        with loaded:
            return [loaded[k] for k in loaded.files]
