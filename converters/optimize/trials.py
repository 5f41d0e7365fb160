"""The on-disk cache of budget-search trials, and the content hashes that key it. No TensorFlow.

A trial is a directory ``<cache>/trials/<key[:2]>/<key>/`` holding ``trial.json`` (metrics, the report card, the
status) and, for a finished trial, ``model.tflite``. It is built in a temporary sibling directory (every file
written and fsynced there), then renamed into place and the parent fsynced: a trial directory either exists whole
or not at all, so a search killed with ``kill -9`` leaves at most a ``.tmp-*`` directory, which is never read and
is removed by the next search. ``trial.json`` also pins the sha256 of ``model.tflite``; a trial whose model does
not match (a disk that lied) is treated as missing.

The key is the sha256 of a canonical JSON of everything that decides the result: the source model's bytes, every
data file's bytes, the candidate (recipe, mode, fallback budget) with the run's options, and the edgekit,
TensorFlow, tf_keras, tfmot, ai-edge-quantizer and LiteRT versions.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
from importlib import metadata
from pathlib import Path
from typing import Any

from edgekit import __version__ as edgekit_version
from edgekit.fsutil import fsync_dir
from edgekit.hashing import sha256_hex

FORMAT = 1
# distributions whose versions change what a trial produces
VERSIONED = ("tensorflow", "tensorflow-cpu", "tf-keras", "tensorflow-model-optimization", "ai-edge-quantizer",
             "ai-edge-litert")


def default_cache_dir() -> Path:
    """``$EDGEKIT_CACHE_DIR/search``, else ``$XDG_CACHE_HOME/edgekit/search``, else ``~/.cache/edgekit/search``."""
    if os.environ.get("EDGEKIT_CACHE_DIR"):
        return Path(os.environ["EDGEKIT_CACHE_DIR"]) / "search"
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "edgekit" / "search"


def versions() -> dict[str, str]:
    """Installed versions, read from package metadata (no import of TensorFlow)."""
    out = {"edgekit": edgekit_version}
    for dist in VERSIONED:
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return out


def hash_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def hash_data(spec: str | None) -> str | None:
    """Content hash of a data argument: a file's bytes, every file of a directory (with its relative path), or, for
    ``module:function``, the spec and the module's source file when it can be found without importing it."""
    if spec is None:
        return None
    p = Path(spec)
    if p.is_file():
        return hash_file(p)
    if p.is_dir():
        h = hashlib.sha256()
        for f in sorted(x for x in p.rglob("*") if x.is_file()):
            h.update(str(f.relative_to(p)).encode() + b"\0" + hash_file(f).encode() + b"\0")
        return h.hexdigest()
    module = spec.split(":", 1)[0]
    h = hashlib.sha256(spec.encode())
    try:
        import importlib.util

        found = importlib.util.find_spec(module)
        if found is not None and found.origin and Path(found.origin).is_file():
            h.update(hash_file(Path(found.origin)).encode())
    except (ImportError, ValueError):
        pass
    return h.hexdigest()


def trial_key(parts: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, separators=(",", ":"), default=str).encode()).hexdigest()


def _write(path: Path, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


class TrialCache:
    """Finished trials under ``root`` (created on first write)."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self.trials = self.root / "trials"

    def check(self) -> None:
        """Create the cache directory and write a file in it, before any work: a --cache-dir that cannot hold
        trials is a one-line error now, not a traceback after the first trial has run."""
        from edgekit.errors import UsageError

        try:
            self.root.mkdir(parents=True, exist_ok=True)
            fd, name = tempfile.mkstemp(prefix=".probe-", dir=self.root)
            os.close(fd)
            os.unlink(name)
        except OSError as exc:
            raise UsageError(f"--cache-dir {self.root} cannot hold the trial cache: {exc.strerror}",
                             hint="pass a writable --cache-dir (or set EDGEKIT_CACHE_DIR)") from None

    def _dir(self, key: str) -> Path:
        return self.trials / key[:2] / key

    def get(self, key: str) -> tuple[dict[str, Any], bytes | None] | None:
        """(trial record, model bytes or None) of a whole, intact trial; None otherwise."""
        d = self._dir(key)
        try:
            record = json.loads((d / "trial.json").read_text())
        except (OSError, ValueError):
            return None
        if record.get("format") != FORMAT or record.get("key") != key:
            return None
        blob = None
        if record.get("model_sha256"):
            try:
                blob = (d / "model.tflite").read_bytes()
            except OSError:
                return None
            if sha256_hex(blob) != record["model_sha256"]:
                return None
        return record, blob

    def put(self, key: str, record: dict[str, Any], blob: bytes | None) -> dict[str, Any]:
        """Store a trial atomically: temp dir → fsync every file → rename → fsync the parent."""
        final = self._dir(key)
        final.parent.mkdir(parents=True, exist_ok=True)
        record = {**record, "format": FORMAT, "key": key, "stored_at": time.time(),
                  "model_sha256": sha256_hex(blob) if blob is not None else None}
        tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{key[:12]}-{os.getpid()}-", dir=final.parent))
        try:
            if blob is not None:
                _write(tmp / "model.tflite", blob)
            _write(tmp / "trial.json", (json.dumps(record, sort_keys=True, default=str) + "\n").encode())
            fsync_dir(tmp)
            if final.exists():  # an earlier, unreadable copy (get() returned None): replace it
                shutil.rmtree(final, ignore_errors=True)
            try:
                os.rename(tmp, final)
            except OSError:
                if self.get(key) is None:
                    raise
                shutil.rmtree(tmp, ignore_errors=True)  # another search stored the same trial first: keep that one
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        fsync_dir(final.parent)
        return record

    def sweep(self) -> int:
        """Remove the temp directories of searches that died mid-trial (their process no longer runs)."""
        removed = 0
        if not self.trials.is_dir():
            return 0
        for tmp in self.trials.glob("*/.tmp-*"):
            try:
                pid = int(tmp.name.split("-")[2])
            except (IndexError, ValueError):
                pid = -1
            if pid > 0 and _alive(pid):
                continue
            shutil.rmtree(tmp, ignore_errors=True)
            removed += 1
        return removed

    # the source model's analysis (weight layers, inputs, golden samples): keyed like a trial
    def get_json(self, name: str, key: str) -> dict[str, Any] | None:
        try:
            doc = json.loads((self.root / name / f"{key}.json").read_text())
        except (OSError, ValueError):
            return None
        return doc if doc.get("key") == key else None

    def put_json(self, name: str, key: str, doc: dict[str, Any]) -> None:
        from edgekit.fsutil import atomic_write

        atomic_write(self.root / name / f"{key}.json",
                     (json.dumps({**doc, "key": key}, sort_keys=True, default=str) + "\n").encode())


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
