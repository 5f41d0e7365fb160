"""Fetching a bundle over HTTP/1.1 on the event loop, in byte ranges, and checking its size and sha256.

Like the agent, a device resumes an interrupted download with ``Range: bytes=<offset>-`` and checks that the
server's ``Content-Range`` starts there. A simulated device always downloads in ``parts`` ranged requests (the
first ones as if the connection broke), so every download exercises the resume path. A ``503`` (the artifact
server's concurrency limit) or a broken connection is retried after a delay; a wrong size or hash fails.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
import re
from dataclasses import dataclass
from urllib.parse import urlsplit

_CONTENT_RANGE = re.compile(r"^bytes (\d+)-(\d+)/(\d+|\*)$")
CHUNK = 64 * 1024


class DownloadError(Exception):
    def __init__(self, message: str, reason: str = "download_failed", retryable: bool = False):
        super().__init__(message)
        self.reason = reason
        self.retryable = retryable


@dataclass
class Fetched:
    size: int
    sha256: str
    requests: int
    retries: int


async def _get(host: str, port: int, path: str, first: int, last: int | None,
               timeout: float) -> tuple[int, dict[str, str], bytes]:
    reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
    try:
        rng = f"bytes={first}-" + ("" if last is None else str(last))
        writer.write(f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUser-Agent: edgekit-sim\r\n"
                     f"Accept-Encoding: identity\r\nRange: {rng}\r\nConnection: close\r\n\r\n".encode())
        await writer.drain()
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout)
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers = {}
        for line in lines[1:]:
            k, sep, v = line.partition(":")
            if sep:
                headers[k.strip().lower()] = v.strip()
        length = int(headers.get("content-length", "0"))
        body = await asyncio.wait_for(reader.readexactly(length), timeout) if length else b""
        return status, headers, body
    finally:
        writer.close()
        try:
            await writer.wait_closed()
        except OSError:
            pass


async def fetch(url: str, size: int | None, sha256: str, *, parts: int = 2, timeout: float = 60.0,
                attempts: int = 20, rng: random.Random | None = None) -> Fetched:
    """Download ``url`` in ``parts`` ranged requests; raise DownloadError (reason ``hash_mismatch`` for a wrong
    size or digest, ``download_failed`` otherwise)."""
    u = urlsplit(url)
    if u.scheme != "http" or not u.hostname:
        raise DownloadError(f"unsupported artifact URL {url!r}")
    host, port, path = u.hostname, u.port or 80, u.path or "/"
    rng = rng or random.Random()
    total = size
    digest = hashlib.sha256()
    have = requests = retries = 0
    delay = 0.2
    while True:
        if total is not None and have >= total:
            break
        # the first parts end early, as if the connection had broken there
        step = max(1, (total or 0) // max(parts, 1))
        last = have + step - 1 if total is not None and requests < parts - 1 and have + step < total else None
        try:
            requests += 1
            status, headers, body = await _get(host, port, path, have, last, timeout)
        except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError, ValueError, IndexError) as exc:
            status, headers, body = -1, {}, repr(exc).encode()
        if status == 206:
            m = _CONTENT_RANGE.match(headers.get("content-range", ""))
            if not m or int(m.group(1)) != have:
                raise DownloadError(f"server sent range {headers.get('content-range')!r}, asked for {have}-")
            if m.group(3) != "*":
                whole = int(m.group(3))
                if total is not None and whole != total:
                    raise DownloadError(f"artifact is {whole} bytes, the desired state says {total}",
                                        reason="hash_mismatch")
                total = whole
            digest.update(body)
            have += len(body)
            delay = 0.2
            continue
        if status == 200 and have == 0:
            digest.update(body)
            have = len(body)
            total = total if total is not None else have
            break
        if status in (-1, 429, 500, 502, 503, 504) and retries + 1 < attempts:
            retries += 1
            after = headers.get("retry-after", "")
            wait = float(after) if after.replace(".", "", 1).isdigit() else delay
            await asyncio.sleep(wait * rng.uniform(0.5, 1.5))
            delay = min(delay * 2, 5.0)
            continue
        raise DownloadError(f"artifact server answered HTTP {status} for {url}", retryable=status >= 500)
    if total is not None and have != total:
        raise DownloadError(f"download ended after {have} of {total} bytes", reason="hash_mismatch")
    got = digest.hexdigest()
    if got != sha256:
        raise DownloadError(f"artifact sha256 {got[:12]}… is not the desired {sha256[:12]}…", reason="hash_mismatch")
    return Fetched(have, got, requests, retries)
