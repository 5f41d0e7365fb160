"""The step cache: ``<workdir>/cache/<step>/<key>/``, one directory per finished step.

A key is the sha256 of the step's name, config, the digests of its inputs, the outside facts it depends on
(the data file's hash, the fleet's current release...) and its code version (edgekit's version and the source of
the step's module and of any user code it calls). A step writes into a temporary directory next to the entry;
``outputs.json`` (every file with its sha256) is written last, fsynced, and the directory is renamed into place, so
an entry exists only when complete. Reusing one re-hashes its files: a damaged entry is discarded and the step
runs again.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgekit import __version__ as edgekit_version
from edgekit.fsutil import fsync_dir
from edgekit.hashing import file_sha256, sha256_hex

from .artifacts import files_of, from_files

MARKER = "outputs.json"


def code_version(files: list[Path]) -> str:
    """edgekit's version and the sha256 of each source file the step runs."""
    h = [edgekit_version] + [f"{p.name}:{file_sha256(p)}" for p in files if p.is_file()]
    return sha256_hex("\n".join(h).encode())


def step_key(step: str, config: dict[str, Any], inputs: dict[str, str], external: dict[str, Any],
             code: str) -> str:
    doc = {"step": step, "config": config, "inputs": inputs, "external": external, "code": code}
    return sha256_hex(json.dumps(doc, sort_keys=True, default=str).encode())


@dataclass(frozen=True)
class Entry:
    step: str
    key: str
    kind: str
    path: Path
    files: dict[str, dict[str, Any]]   # field -> {"name", "sha256", "size"}

    @property
    def digest(self) -> str:
        """The artifact's identity for the steps after it: the hash of its files' hashes."""
        return sha256_hex(json.dumps({k: v["sha256"] for k, v in sorted(self.files.items())}).encode())

    def artifact(self) -> Any:
        return from_files(self.kind, self.path, {k: v["name"] for k, v in self.files.items()})


class Cache:
    def __init__(self, root: Path):
        self.root = Path(root)

    def entry_dir(self, step: str, key: str) -> Path:
        return self.root / step / key

    def get(self, step: str, key: str) -> Entry | None:
        d = self.entry_dir(step, key)
        try:
            doc = json.loads((d / MARKER).read_text())
        except (OSError, ValueError):
            return None
        for v in doc["files"].values():
            p = d / v["name"]
            if not p.is_file() or file_sha256(p) != v["sha256"]:
                shutil.rmtree(d, ignore_errors=True)  # damaged: never reused
                return None
        return Entry(step, key, doc["kind"], d, doc["files"])

    def begin(self, step: str, key: str) -> Path:
        """A fresh temporary directory for the step to write into."""
        parent = self.root / step
        parent.mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(prefix=f".{key[:16]}.", suffix=".tmp", dir=parent))

    def commit(self, step: str, key: str, kind: str, tmp: Path, artifact: Any) -> Entry:
        """Record the artifact's files (they must lie in ``tmp``), then move ``tmp`` into place."""
        files = {}
        for fld, p in files_of(artifact).items():
            p = Path(p)
            if p.parent.resolve() != tmp.resolve() or not p.is_file():
                raise ValueError(f"step {step} returned {p}, not a file in its output directory")
            files[fld] = {"name": p.name, "sha256": file_sha256(p), "size": p.stat().st_size}
        for p in tmp.iterdir():
            if p.is_file():
                with open(p, "rb") as f:
                    os.fsync(f.fileno())
        with open(tmp / MARKER, "w") as f:
            json.dump({"step": step, "key": key, "kind": kind, "files": files}, f, indent=2, sort_keys=True)
            f.flush()
            os.fsync(f.fileno())
        fsync_dir(tmp)
        dest = self.entry_dir(step, key)
        if dest.exists():
            shutil.rmtree(dest)
        os.replace(tmp, dest)
        fsync_dir(dest.parent)
        return Entry(step, key, kind, dest, files)

    def abandon(self, tmp: Path) -> None:
        shutil.rmtree(tmp, ignore_errors=True)
