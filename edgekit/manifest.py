"""The bundle manifest, schema versions 1 (one model) and 2 (several payloads), documented in docs/bundle.md.

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

SCHEMA_VERSION = 1        # one model for one target (``model_file``, ``target`` at the top level)
MULTI_SCHEMA_VERSION = 2  # ``payloads``: one model per target, each with its own tensors and golden vectors
SCHEMA_VERSIONS = (SCHEMA_VERSION, MULTI_SCHEMA_VERSION)
MANIFEST_NAME = "manifest.json"
SIGNATURE_NAME = "signature"
MAX_MANIFEST_BYTES = 1 << 20
TARGETS = ("cpu", "edgetpu", "gpu")  # gpu: an ONNX payload for onnxruntime
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$")
_VERSION = re.compile(r"^\d+\.\d+\.\d+(?:[-+][0-9A-Za-z.\-+]+)?$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_FILE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}$")

REQUIRED = ("schema_version", "name", "version", "created_at", "model_file", "files", "inputs", "outputs", "target")
REQUIRED_MULTI = ("schema_version", "name", "version", "created_at", "files", "payloads")
PAYLOAD_REQUIRED = ("model_file", "inputs", "outputs")
#: which payload a reader shows when none is chosen (a device chooses with edgekit.payloads.choose_payload)
DEFAULT_ORDER = ("cpu", "edgetpu", "gpu")


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
    if version not in SCHEMA_VERSIONS or isinstance(version, bool):
        raise SchemaVersionError(
            f"manifest schema version {version!r} is not supported (this edgekit reads versions "
            f"{', '.join(map(str, SCHEMA_VERSIONS))})")
    validate_manifest(data)
    return data


def validate_manifest(m: dict[str, Any]) -> None:
    if m.get("schema_version") == MULTI_SCHEMA_VERSION:
        validate_multi(m)
        return
    missing = [k for k in REQUIRED if k not in m]
    if missing:
        raise ManifestError(f"manifest lacks {', '.join(missing)}")
    check_name(m["name"])
    check_version(m["version"])
    if m["target"] not in TARGETS:
        raise ManifestError(f"unknown target {m['target']!r}", hint=f"use one of {', '.join(TARGETS)}")
    _check_files(m)
    _check_payload(m, "manifest")
    labels = m.get("labels")
    if labels is not None and (not isinstance(labels, list) or not all(isinstance(x, str) for x in labels)):
        raise ManifestError("manifest.labels must be a list of strings")


def validate_multi(m: dict[str, Any]) -> None:
    """Schema 2: ``payloads`` maps each target to its model file, tensors and golden vectors; no two payloads share
    a model or golden file, and every file they name is pinned in ``files``."""
    missing = [k for k in REQUIRED_MULTI if k not in m]
    if missing:
        raise ManifestError(f"manifest lacks {', '.join(missing)}")
    check_name(m["name"])
    check_version(m["version"])
    _check_files(m)
    payloads = m["payloads"]
    if not isinstance(payloads, dict) or not payloads:
        raise ManifestError("manifest.payloads must be a non-empty object")
    used: dict[str, str] = {}
    for target, entry in payloads.items():
        where = f"manifest.payloads[{target!r}]"
        if target not in TARGETS:
            raise ManifestError(f"unknown payload target {target!r}", hint=f"use one of {', '.join(TARGETS)}")
        if not isinstance(entry, dict):
            raise ManifestError(f"{where} must be an object")
        lacking = [k for k in PAYLOAD_REQUIRED if k not in entry]
        if lacking:
            raise ManifestError(f"{where} lacks {', '.join(lacking)}")
        _check_payload({**entry, "files": m["files"]}, where)
        mine = [entry["model_file"]] + ([entry["golden"]["file"]] if entry.get("golden") else [])
        for name in mine:
            if name in used:
                raise ManifestError(f"{where} and manifest.payloads[{used[name]!r}] both use {name}")
            used[name] = target
    labels = m.get("labels")
    if labels is not None and (not isinstance(labels, list) or not all(isinstance(x, str) for x in labels)):
        raise ManifestError("manifest.labels must be a list of strings")


def _check_files(m: dict[str, Any]) -> None:
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


def _check_payload(m: dict[str, Any], where: str) -> None:
    """model_file, inputs, outputs and golden of one model (the manifest itself in schema 1, a payload in 2)."""
    files = m["files"]
    if not isinstance(m["model_file"], str) or m["model_file"] not in files:
        raise ManifestError(f"{where}: model_file {m['model_file']!r} is not listed in manifest.files")
    for key in ("inputs", "outputs"):
        tensors = m[key]
        if not isinstance(tensors, list) or not tensors:
            raise ManifestError(f"{where}.{key} must be a non-empty list")
        for t in tensors:
            if not isinstance(t, dict) or not isinstance(t.get("dtype"), str) or not isinstance(t.get("shape"), list):
                raise ManifestError(f"each entry of {where}.{key} needs dtype and shape")
    golden = m.get("golden")
    if golden is not None:
        if not isinstance(golden, dict) or not isinstance(golden.get("file"), str) or golden["file"] not in files:
            raise ManifestError(f"{where}.golden.file must name a payload file")
        for k in ("atol", "rtol"):
            if not isinstance(golden.get(k), (int, float)) or isinstance(golden.get(k), bool) or golden[k] < 0:
                raise ManifestError(f"{where}.golden.{k} must be a non-negative number")


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
    payload: str | None = None  # schema 2: the chosen payload (None: the first of DEFAULT_ORDER it has)

    @classmethod
    def parse(cls, raw: bytes) -> "Manifest":
        return cls(parse_manifest(raw))

    @property
    def multi(self) -> bool:
        return self.data.get("schema_version") == MULTI_SCHEMA_VERSION

    @property
    def payload_targets(self) -> list[str]:
        """The targets this bundle has a model for (schema 1: its one target)."""
        if self.multi:
            return [t for t in DEFAULT_ORDER if t in self.data["payloads"]]
        return [self.data.get("target", "cpu")]

    def select(self, target: str) -> "Manifest":
        """The view of one payload; ManifestError when the bundle has none for ``target``."""
        if target not in self.payload_targets:
            raise ManifestError(f"bundle {self.name} {self.version} has no {target} payload "
                                f"(it has {', '.join(self.payload_targets)})")
        return Manifest(self.data, target if self.multi else None)

    @property
    def _entry(self) -> Mapping[str, Any]:
        if self.multi:
            return self.data["payloads"][self.target]
        return self.data

    @property
    def name(self) -> str:
        return self.data["name"]

    @property
    def version(self) -> str:
        return self.data["version"]

    @property
    def target(self) -> str:
        if self.multi:
            return self.payload or self.payload_targets[0]
        return self.data.get("target", "cpu")

    @property
    def model_file(self) -> str:
        return self._entry["model_file"]

    @property
    def created_at(self) -> str | None:
        return self.data.get("created_at")

    @property
    def files(self) -> dict[str, PayloadFile]:
        return {name: PayloadFile(e["sha256"], e["size"]) for name, e in self.data["files"].items()}

    @property
    def inputs(self) -> list[dict[str, Any]]:
        return self._entry["inputs"]

    @property
    def outputs(self) -> list[dict[str, Any]]:
        return self._entry["outputs"]

    @property
    def labels(self) -> list[str] | None:
        return self.data.get("labels")

    @property
    def preprocessing(self) -> dict[str, Any]:
        return self.data.get("preprocessing", {})

    @property
    def min_runtime(self) -> dict[str, Any]:
        return dict(self._entry.get("min_runtime", {}))

    def data_golden(self) -> dict[str, Any] | None:
        """The payload's ``golden`` entry as written in the manifest."""
        g = self._entry.get("golden")
        return dict(g) if g else None

    @property
    def golden(self) -> GoldenRef | None:
        g = self._entry.get("golden")
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
