"""Fetching an artifact over HTTP(S) with Range resume, and verifying it before anything else touches it.

:func:`fetch` appends to ``<partial>`` and, when a previous attempt (or a previous agent process) left some bytes,
asks for the rest with ``Range: bytes=<offset>-``. A server that ignores the Range header (200 instead of 206) gets
the file rewritten from the start. :func:`verify_artifact` checks size, sha256 and the Ed25519 signature (through
:func:`edgekit.bundle.read_bundle`) and maps every failure to a reason code. :func:`check_free_space` refuses a
download that would fill the disk.
"""

from __future__ import annotations

import http.client
import os
import re
import shutil
import ssl
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping

from edgekit.errors import BundleError, EdgekitError, HashMismatchError, KeyFileError, SignatureError

from .errors import UpdateFailed
from .machine import Reason

if TYPE_CHECKING:  # edgekit.bundle brings cryptography: imported only when an artifact is verified
    from edgekit.bundle import Bundle

CHUNK = 64 * 1024
_CONTENT_RANGE = re.compile(r"^bytes (\d+)-(\d+)/(\d+|\*)$")
USER_AGENT = "edgekit-agent"


@dataclass
class FetchResult:
    path: Path
    size: int
    resumed_from: int        # bytes already present when this call started (0 = fresh)
    requests: int            # HTTP requests made by this call (0 when the partial file was already complete)


def check_free_space(directory: str | os.PathLike, size: int, already: int = 0, reserve: int = 0) -> None:
    """The download needs ``size - already`` more bytes for the artifact plus ``size`` for its extracted copy in the
    store, and ``reserve`` must stay free after that. Raises UpdateFailed(disk_full)."""
    free = shutil.disk_usage(directory).free
    need = max(size - already, 0) + size + reserve
    if free < need:
        raise UpdateFailed(Reason.DISK_FULL,
                           f"not enough free disk space for the update: {need} bytes needed, {free} free",
                           hint="free space on the device or lower update.min_free_bytes",
                           detail={"free": free, "needed": need})


def _open(url: str, offset: int, timeout: float, ssl_context: ssl.SSLContext | None):
    req = urllib.request.Request(url, headers={"User-Agent": USER_AGENT, "Accept-Encoding": "identity"})
    if offset:
        req.add_header("Range", f"bytes={offset}-")
    try:
        return urllib.request.urlopen(req, timeout=timeout, context=ssl_context)  # noqa: S310 - scheme checked
    except urllib.error.HTTPError as exc:
        if exc.code == 416:
            return exc
        raise UpdateFailed(Reason.DOWNLOAD_FAILED, f"artifact server answered HTTP {exc.code} for {url}",
                           hint="check the bundle URL in the desired state",
                           retryable=exc.code >= 500 or exc.code == 429,
                           detail={"status": exc.code}) from exc
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        raise UpdateFailed(Reason.DOWNLOAD_FAILED, f"cannot reach the artifact server for {url}: {reason}",
                           hint="check the network and the artifact server", retryable=True) from exc


def fetch(url: str, partial: str | os.PathLike, *, size: int | None, timeout: float = 30.0,
          ssl_context: ssl.SSLContext | None = None,
          progress: Callable[[int, int | None], None] | None = None,
          should_stop: Callable[[], bool] | None = None) -> FetchResult:
    """Download ``url`` into ``partial``, resuming from the bytes already there.

    ``size`` (from the desired state) bounds the download: more bytes than that is a hash mismatch. ``progress``
    is called after each chunk with (bytes on disk, size). ``should_stop`` is polled between chunks; when it returns
    True the download stops (bytes kept for a later resume) by raising :class:`~.errors.Superseded`.
    """
    from .errors import Superseded

    if not url.startswith(("http://", "https://")):
        raise UpdateFailed(Reason.DOWNLOAD_FAILED, f"unsupported artifact URL {url!r}",
                           hint="the desired model URL must be http:// or https://")
    partial = Path(partial)
    partial.parent.mkdir(parents=True, exist_ok=True)
    have = partial.stat().st_size if partial.exists() else 0
    if size is not None and have > size:
        partial.unlink()
        have = 0
    start = have
    if size is not None and have == size and have > 0:
        return FetchResult(partial, have, start, 0)

    resp = _open(url, have, timeout, ssl_context)
    requests = 1
    if getattr(resp, "code", None) == 416 or getattr(resp, "status", None) == 416:
        # our offset is past the end: the partial file is from another artifact or complete; start over
        resp.close()
        partial.unlink(missing_ok=True)
        have = start = 0
        resp = _open(url, 0, timeout, ssl_context)
        requests += 1
    with resp:
        status = resp.status
        if have and status == 206:
            m = _CONTENT_RANGE.match(resp.headers.get("Content-Range", ""))
            if not m or int(m.group(1)) != have:
                raise UpdateFailed(Reason.DOWNLOAD_FAILED,
                                   f"artifact server sent range {resp.headers.get('Content-Range')!r}, "
                                   f"asked for bytes {have}-", retryable=True)
            mode = "ab"
        elif status == 200:
            mode, have, start = "wb", 0, 0  # no Range support (or fresh): rewrite from the start
        else:
            raise UpdateFailed(Reason.DOWNLOAD_FAILED, f"artifact server answered HTTP {status} for {url}",
                               retryable=True)
        length = resp.headers.get("Content-Length")
        expected_end = have + int(length) if length and length.isdigit() else None
        if size is not None and expected_end is not None and expected_end != size:
            raise UpdateFailed(Reason.HASH_MISMATCH,
                               f"artifact is {expected_end} bytes, the desired state says {size}",
                               hint="the URL serves another file than the desired sha256/size describe")
        with open(partial, mode) as f:
            while True:
                if should_stop is not None and should_stop():
                    f.flush()
                    raise Superseded("download stopped: a newer desired model arrived")
                try:
                    block = resp.read(CHUNK)
                except (OSError, ValueError, http.client.HTTPException) as exc:
                    f.flush()
                    raise UpdateFailed(Reason.DOWNLOAD_FAILED, f"download of {url} broke off after "
                                       f"{have} bytes ({type(exc).__name__})", retryable=True,
                                       detail={"have": have}) from exc
                if not block:
                    break
                f.write(block)
                have += len(block)
                if size is not None and have > size:
                    f.flush()
                    raise UpdateFailed(Reason.HASH_MISMATCH, f"artifact is larger than the {size} bytes the "
                                       "desired state says")
                if progress is not None:
                    f.flush()
                    progress(have, size)
            f.flush()
            os.fsync(f.fileno())
    end = size if size is not None else expected_end
    if end is not None and have < end:
        raise UpdateFailed(Reason.DOWNLOAD_FAILED, f"download of {url} ended after {have} of {end} bytes",
                           retryable=True, detail={"have": have, "size": end})
    return FetchResult(partial, have, start, requests)


def verify_artifact(path: str | os.PathLike, *, sha256: str, size: int | None, pubkey: Any,
                    expect: Mapping[str, Any] | None = None) -> "Bundle":
    """Check the downloaded file before anything else uses it: size, sha256 against the desired state, then the
    bundle's signature (fleet key), structure and payload hashes. ``expect`` (the desired model) must match the
    signed manifest's name and version."""
    from edgekit.bundle import file_sha256, read_bundle

    path = Path(path)
    actual_size = path.stat().st_size
    if size is not None and actual_size != size:
        raise UpdateFailed(Reason.HASH_MISMATCH, f"artifact is {actual_size} bytes, the desired state says {size}")
    actual = file_sha256(path)
    if actual != sha256:
        raise UpdateFailed(Reason.HASH_MISMATCH, f"artifact sha256 {actual[:12]}… is not the desired {sha256[:12]}…",
                           hint="the artifact was modified in transit or the desired state names another file",
                           detail={"sha256": actual})
    try:
        bundle = read_bundle(path, pubkey)
    except SignatureError as exc:
        raise UpdateFailed(Reason.SIGNATURE_INVALID, exc.message, hint=exc.hint) from exc
    except KeyFileError as exc:
        raise UpdateFailed(Reason.SIGNATURE_INVALID, f"cannot load the fleet public key: {exc.message}",
                           hint=exc.hint) from exc
    except HashMismatchError as exc:
        raise UpdateFailed(Reason.BUNDLE_INVALID, exc.message, hint=exc.hint) from exc
    except (BundleError, EdgekitError) as exc:
        raise UpdateFailed(Reason.BUNDLE_INVALID, exc.message, hint=exc.hint) from exc
    if not bundle.signature_verified:
        raise UpdateFailed(Reason.SIGNATURE_INVALID, "the bundle signature was not verified",
                           hint="set the fleet public key in the agent config")
    if expect:
        for key in ("name", "version"):
            if expect.get(key) and expect[key] != bundle.manifest[key]:
                raise UpdateFailed(Reason.BUNDLE_INVALID,
                                   f"bundle {key} is {bundle.manifest[key]!r}, the desired state says {expect[key]!r}")
    return bundle
