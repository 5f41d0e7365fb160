"""The bundle manifest, schema version 1 (documented in docs/bundle.md).

The manifest is stored in the bundle as its canonical bytes (UTF-8 JSON, sorted keys, no spaces) and the signature
covers exactly those bytes. It pins the sha256 and size of every payload file.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from . import jsonlimits
from .errors import ManifestError, SchemaVersionError

SCHEMA_VERSION = 1
MANIFEST_NAME = "manifest.json"
SIGNATURE_NAME = "signature"
MAX_MANIFEST_BYTES = 1 << 20
TARGETS = ("cpu", "edgetpu", "gpu")  # gpu: an ONNX payload for onnxruntime
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$")
_VERSION = re.compile(r"^\d+\.\d+\.\d+(?:[-+][0-9A-Za-z.\-+]+)?$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_FILE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}$")

REQUIRED = ("schema_version", "name", "version", "created_at", "model_file", "files", "inputs", "outputs", "target")


def canonical_bytes(manifest: dict[str, Any]) -> bytes:
    return json.dumps(manifest, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()


def check_name(name: str) -> str:
    if not isinstance(name, str) or not _NAME.match(name):
        raise ManifestError(f"invalid model name {name!r}",
                            hint="use 1-64 letters, digits, '_', '.' or '-', starting with a letter or digit")
    return name


def check_version(version: str) -> str:
    if not isinstance(version, str) or not _VERSION.match(version):
        raise ManifestError(f"invalid version {version!r}", hint="use a semantic version such as 1.2.0")
    return version


def check_file_name(name: str) -> str:
    if not isinstance(name, str) or not _FILE.match(name) or ".." in name:
        raise ManifestError(f"invalid payload file name {name!r}", hint="use a flat name such as model.tflite")
    return name


def parse_manifest(raw: bytes, *, max_bytes: int = MAX_MANIFEST_BYTES) -> dict[str, Any]:
    """Parse (bounded in size and depth) and validate manifest bytes; raise ManifestError / SchemaVersionError."""
    data = jsonlimits.loads(raw, what="manifest.json", max_bytes=max_bytes)
    if not isinstance(data, dict):
        raise ManifestError("manifest.json must be a JSON object")
    version = data.get("schema_version")
    if version != SCHEMA_VERSION:
        raise SchemaVersionError(
            f"manifest schema version {version!r} is not supported (this edgekit reads version {SCHEMA_VERSION})")
    validate_manifest(data)
    return data


def validate_manifest(m: dict[str, Any]) -> None:
    missing = [k for k in REQUIRED if k not in m]
    if missing:
        raise ManifestError(f"manifest lacks {', '.join(missing)}")
    check_name(m["name"])
    check_version(m["version"])
    if m["target"] not in TARGETS:
        raise ManifestError(f"unknown target {m['target']!r}", hint=f"use one of {', '.join(TARGETS)}")
    files = m["files"]
    if not isinstance(files, dict) or not files:
        raise ManifestError("manifest.files must be a non-empty object")
    for name, entry in files.items():
        check_file_name(name)
        if name in (MANIFEST_NAME, SIGNATURE_NAME):
            raise ManifestError(f"payload file may not be called {name}")
        if (not isinstance(entry, dict) or not isinstance(entry.get("sha256"), str)
                or not _SHA256.match(entry["sha256"])):
            raise ManifestError(f"manifest.files[{name!r}] needs a lowercase hex sha256")
        if not isinstance(entry.get("size"), int) or entry["size"] < 0:
            raise ManifestError(f"manifest.files[{name!r}] needs a non-negative integer size")
    if m["model_file"] not in files:
        raise ManifestError(f"model_file {m['model_file']!r} is not listed in manifest.files")
    for key in ("inputs", "outputs"):
        tensors = m[key]
        if not isinstance(tensors, list) or not tensors:
            raise ManifestError(f"manifest.{key} must be a non-empty list")
        for t in tensors:
            if not isinstance(t, dict) or not isinstance(t.get("dtype"), str) or not isinstance(t.get("shape"), list):
                raise ManifestError(f"each entry of manifest.{key} needs dtype and shape")
    golden = m.get("golden")
    if golden is not None:
        if not isinstance(golden, dict) or golden.get("file") not in files:
            raise ManifestError("manifest.golden.file must name a payload file")
        for k in ("atol", "rtol"):
            if not isinstance(golden.get(k), (int, float)) or golden[k] < 0:
                raise ManifestError(f"manifest.golden.{k} must be a non-negative number")
    labels = m.get("labels")
    if labels is not None and (not isinstance(labels, list) or not all(isinstance(x, str) for x in labels)):
        raise ManifestError("manifest.labels must be a list of strings")


# --- the typed view --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PayloadFile:
    sha256: str
    size: int


@dataclass(frozen=True)
class GoldenRef:
    file: str
    atol: float
    rtol: float


@dataclass(frozen=True)
class Manifest:
    """A typed, read-only view of a validated manifest, shared by bundles (:class:`edgekit.bundle.Bundle`) and the
    agent's store entries. ``data`` is the manifest itself (what the signature covers, once canonicalised)."""

    data: Mapping[str, Any] = field(repr=False)

    @classmethod
    def parse(cls, raw: bytes) -> "Manifest":
        return cls(parse_manifest(raw))

    @property
    def name(self) -> str:
        return self.data["name"]

    @property
    def version(self) -> str:
        return self.data["version"]

    @property
    def target(self) -> str:
        return self.data.get("target", "cpu")

    @property
    def model_file(self) -> str:
        return self.data["model_file"]

    @property
    def created_at(self) -> str | None:
        return self.data.get("created_at")

    @property
    def files(self) -> dict[str, PayloadFile]:
        return {name: PayloadFile(e["sha256"], e["size"]) for name, e in self.data["files"].items()}

    @property
    def inputs(self) -> list[dict[str, Any]]:
        return self.data["inputs"]

    @property
    def outputs(self) -> list[dict[str, Any]]:
        return self.data["outputs"]

    @property
    def labels(self) -> list[str] | None:
        return self.data.get("labels")

    @property
    def preprocessing(self) -> dict[str, Any]:
        return self.data.get("preprocessing", {})

    @property
    def golden(self) -> GoldenRef | None:
        g = self.data.get("golden")
        return GoldenRef(g["file"], float(g["atol"]), float(g["rtol"])) if g else None

    def golden_vectors(self, read: Callable[[str], bytes]):
        """(inputs, expected outputs, atol, rtol) of the golden vectors, reading payload files with ``read``; None
        for a bundle without them."""
        from . import golden as golden_mod

        ref = self.golden
        if ref is None:
            return None
        ins, outs = golden_mod.unpack(read(ref.file))
        return ins, outs, ref.atol, ref.rtol

    def model_ref(self, sha256: str) -> dict[str, str]:
        return {"name": self.name, "version": self.version, "sha256": sha256}
