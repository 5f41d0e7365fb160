"""Model bundles (``*.ekb``): a POSIX tar of ``manifest.json``, ``signature`` and the payload files it pins.

Reading is safe by construction: only flat regular-file members with known names, bounded sizes, no duplicates;
the signature is checked over the manifest bytes and every payload's sha256 and size before anything uses it.
"""

from __future__ import annotations

import base64
import datetime as _dt
import io
import json
import os
import shutil
import tarfile
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from . import golden as golden_mod
from . import keys as keys_mod
from .arrays import load_arrays
from .errors import (ArrayFileError, BundleCorruptError, BundleTooLargeError, FileExistsRefusal, HashMismatchError,
                     ManifestError, NotTFLiteError, SignatureError, UnsafeMemberError, UsageError)
from .fsutil import atomic_write, fsync_dir
from .hashing import file_sha256, sha256_hex
from .manifest import (MANIFEST_NAME, SCHEMA_VERSION, SIGNATURE_NAME, canonical_bytes, check_name, check_version,
                       parse_manifest, validate_manifest)
from .tflite_model import ModelInfo, inspect_tflite, is_tflite

MODEL_FILE = "model.tflite"
EDGETPU_MODEL_FILE = "model_edgetpu.tflite"
LABELS_FILE = "labels.txt"
SUFFIX = ".ekb"


@dataclass(frozen=True)
class Limits:
    max_members: int = 16
    max_member_bytes: int = 1 << 30
    max_manifest_bytes: int = 1 << 20
    max_total_bytes: int = 2 << 30


DEFAULT_LIMITS = Limits()


@dataclass
class Bundle:
    path: Path | None
    manifest: dict[str, Any]
    manifest_bytes: bytes
    signature: dict[str, Any]
    files: dict[str, bytes]
    sha256: str
    size: int
    signature_verified: bool = False
    _info: ModelInfo | None = field(default=None, repr=False)

    @property
    def name(self) -> str:
        return self.manifest["name"]

    @property
    def version(self) -> str:
        return self.manifest["version"]

    @property
    def model_bytes(self) -> bytes:
        return self.files[self.manifest["model_file"]]

    def model_info(self) -> ModelInfo:
        if self._info is None:
            self._info = inspect_tflite(self.model_bytes)
        return self._info

    def golden(self) -> tuple[list[np.ndarray], list[np.ndarray], float, float] | None:
        """(inputs, expected outputs, atol, rtol), or None for a bundle without golden vectors."""
        g = self.manifest.get("golden")
        if not g:
            return None
        ins, outs = golden_mod.unpack(self.files[g["file"]])
        return ins, outs, float(g["atol"]), float(g["rtol"])

    def model_ref(self) -> dict[str, str]:
        return {"name": self.name, "version": self.version, "sha256": self.sha256}


# --- writing ---------------------------------------------------------------------------------------------------------


def pack_bytes(manifest_bytes: bytes, signature_bytes: bytes, files: dict[str, bytes]) -> bytes:
    """The canonical archive: PAX tar of manifest, signature, then payloads in sorted order; fixed metadata."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in [(MANIFEST_NAME, manifest_bytes), (SIGNATURE_NAME, signature_bytes),
                           *sorted(files.items())]:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o644
            info.mtime = 0
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def pack_bundle(out: str | os.PathLike, manifest_bytes: bytes, signature_bytes: bytes, files: dict[str, bytes]) -> Path:
    """Low-level: write the canonical archive atomically. No checks."""
    return atomic_write(out, pack_bytes(manifest_bytes, signature_bytes, files))


def signature_record(key: Ed25519PrivateKey, manifest_bytes: bytes) -> bytes:
    record = {"alg": "ed25519", "key_id": keys_mod.key_id(key),
              "sig": base64.b64encode(keys_mod.sign(key, manifest_bytes)).decode()}
    return json.dumps(record, sort_keys=True).encode()


def _load_golden_inputs(path: str | os.PathLike, specs: list[dict[str, Any]]) -> list[np.ndarray]:
    try:
        arrays, _ = load_arrays(path, what=f"golden inputs {path}")
    except ArrayFileError as exc:
        raise UsageError(f"cannot read golden inputs {path}: {exc.original}", hint="pass an .npz or .npy file") from exc
    names = [s["name"] for s in specs]
    if all(n in arrays for n in names):
        chosen = [arrays[n] for n in names]
    elif len(arrays) == len(specs):
        chosen = list(arrays.values())
    else:
        raise UsageError(f"golden inputs {path} hold {sorted(arrays)}, the model's inputs are {names}",
                         hint="name the arrays after the input tensors, or give one array per input")
    out = []
    for spec, arr in zip(specs, chosen):
        shape = list(spec["shape"])
        if list(arr.shape) == shape:
            arr = arr[None]
        if list(arr.shape[1:]) != shape:
            raise UsageError(f"golden input for {spec['name']} has shape {list(arr.shape)}, "
                             f"expected [N, {', '.join(map(str, shape))}]")
        out.append(arr.astype(spec["dtype"], copy=False))
    return out


def build_manifest(model: bytes, *, name: str, version: str, files: dict[str, bytes], model_file: str,
                   labels: list[str] | None, target: str, provenance: dict[str, Any] | None,
                   preprocessing: dict[str, Any] | None, golden: dict[str, Any] | None,
                   key: Ed25519PrivateKey) -> dict[str, Any]:
    info = inspect_tflite(model)
    min_ops: dict[str, int] = {}
    for sg in info.subgraphs:
        for op in sg.ops:
            min_ops[op.opcode] = max(min_ops.get(op.opcode, 1), op.version)
    manifest = {
        "schema_version": SCHEMA_VERSION,
        "name": name,
        "version": version,
        "created_at": _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat(),
        "model_file": model_file,
        "files": {n: {"sha256": sha256_hex(d), "size": len(d)} for n, d in sorted(files.items())},
        "inputs": [t.to_dict() for t in info.inputs],
        "outputs": [t.to_dict() for t in info.outputs],
        "labels": labels,
        "preprocessing": preprocessing or {},
        "target": target,
        "min_runtime": {"op_versions": dict(sorted(min_ops.items()))},
        "provenance": provenance or {},
        "golden": golden,
        "signing": {"alg": "ed25519", "key_id": keys_mod.key_id(key)},
    }
    validate_manifest(manifest)
    return manifest


def create_bundle(model: bytes | str | os.PathLike, out: str | os.PathLike, *, name: str, version: str,
                  key: Ed25519PrivateKey | str | os.PathLike, labels: Sequence[str] | str | os.PathLike | None = None,
                  golden_inputs: Sequence[np.ndarray] | str | os.PathLike | None = None,
                  golden_outputs: Sequence[np.ndarray] | None = None, golden_count: int = 3,
                  tolerance: tuple[float, float] | None = None, target: str = "cpu",
                  provenance: dict[str, Any] | None = None, preprocessing: dict[str, Any] | None = None,
                  force: bool = False) -> Path:
    """Build, sign and write a bundle. Golden outputs are computed with LiteRT when not given.

    ``out`` is a file path (``.ekb``) or an existing directory (then ``<name>-<version>.ekb`` inside it).
    Nothing is written unless every check passes; an existing file is only replaced with ``force``.
    """
    check_name(name)
    check_version(version)
    if isinstance(model, (str, os.PathLike)):
        try:
            model = Path(model).read_bytes()
        except FileNotFoundError:
            raise UsageError(f"model file {model} does not exist") from None
    if not is_tflite(model):
        raise NotTFLiteError("the model is not a TFLite flatbuffer (no TFL3 identifier)")
    info = inspect_tflite(model)
    out_path = Path(out)
    if out_path.is_dir():
        out_path = out_path / f"{name}-{version}{SUFFIX}"
    if out_path.exists() and not force:
        raise FileExistsRefusal(f"{out_path} already exists")
    if not out_path.parent.is_dir():
        raise UsageError(f"output directory {out_path.parent} does not exist", hint="create it first")
    if not isinstance(key, Ed25519PrivateKey):
        key = keys_mod.load_private_key(key)
    if isinstance(labels, (str, os.PathLike)):
        try:
            labels = [ln.strip() for ln in Path(labels).read_text().splitlines() if ln.strip()]
        except (OSError, UnicodeDecodeError) as exc:
            raise UsageError(f"cannot read labels file {labels}: {exc}") from exc
    labels = list(labels) if labels is not None else None

    model_file = EDGETPU_MODEL_FILE if target == "edgetpu" else MODEL_FILE
    files = {model_file: model}
    in_specs = [t.to_dict() for t in info.inputs]
    out_specs = [t.to_dict() for t in info.outputs]
    if isinstance(golden_inputs, (str, os.PathLike)):
        golden_inputs = _load_golden_inputs(golden_inputs, in_specs)
    elif golden_inputs is None:
        golden_inputs = golden_mod.default_inputs(in_specs, golden_count)
    if golden_outputs is None:
        golden_outputs = golden_mod.run_model(model, golden_inputs)
    atol, rtol = tolerance or golden_mod.default_tolerance(out_specs)
    files[golden_mod.GOLDEN_FILE] = golden_mod.pack(golden_inputs, golden_outputs)
    golden = {"file": golden_mod.GOLDEN_FILE, "count": int(golden_inputs[0].shape[0]), "atol": atol, "rtol": rtol}
    if labels is not None:
        files[LABELS_FILE] = ("\n".join(labels) + "\n").encode()

    manifest = build_manifest(model, name=name, version=version, files=files, model_file=model_file, labels=labels,
                              target=target, provenance=provenance, preprocessing=preprocessing, golden=golden,
                              key=key)
    mbytes = canonical_bytes(manifest)
    return pack_bundle(out_path, mbytes, signature_record(key, mbytes), files)


# --- reading ---------------------------------------------------------------------------------------------------------


def _check_member(info: tarfile.TarInfo, limits: Limits) -> None:
    name = info.name
    if name.startswith("/") or os.path.isabs(name):
        raise UnsafeMemberError(f"bundle member {name!r} has an absolute path")
    if ".." in Path(name).parts or "/" in name or "\\" in name:
        raise UnsafeMemberError(f"bundle member {name!r} leaves the bundle directory or is nested")
    if info.issym() or info.islnk():
        raise UnsafeMemberError(f"bundle member {name!r} is a link")
    if not info.isreg():
        raise UnsafeMemberError(f"bundle member {name!r} is not a regular file")
    if info.size > limits.max_member_bytes:
        raise BundleTooLargeError(f"bundle member {name!r} is {info.size} bytes, over the "
                                  f"{limits.max_member_bytes}-byte limit")


def _read_members(data: bytes, limits: Limits) -> dict[str, bytes]:
    members: dict[str, bytes] = {}
    total = 0
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tar:
            for info in tar:
                if len(members) >= limits.max_members:
                    raise BundleTooLargeError(f"bundle has more than {limits.max_members} members")
                _check_member(info, limits)
                if info.name in members:
                    raise UnsafeMemberError(f"bundle member {info.name!r} appears twice")
                total += info.size
                if total > limits.max_total_bytes:
                    raise BundleTooLargeError(f"bundle payload exceeds {limits.max_total_bytes} bytes")
                f = tar.extractfile(info)
                content = f.read() if f is not None else b""
                if len(content) != info.size:
                    raise BundleCorruptError(f"bundle member {info.name!r} is truncated")
                members[info.name] = content
    except tarfile.TarError as exc:
        raise BundleCorruptError(f"bundle is not a readable tar archive ({exc})") from exc
    except (EOFError, OSError, ValueError) as exc:
        raise BundleCorruptError(f"bundle archive is truncated or corrupt ({exc})") from exc
    if not members:
        raise BundleCorruptError("bundle archive is empty or truncated")
    return members


def parse_bundle(data: bytes, pubkey: Ed25519PublicKey | None = None, *, path: Path | None = None,
                 limits: Limits = DEFAULT_LIMITS) -> Bundle:
    """Check a bundle held in memory; see :func:`read_bundle`."""
    members = _read_members(data, limits)
    for required in (MANIFEST_NAME, SIGNATURE_NAME):
        if required not in members:
            raise BundleCorruptError(f"bundle lacks {required}")
    raw_manifest = members.pop(MANIFEST_NAME)
    if len(raw_manifest) > limits.max_manifest_bytes:
        raise BundleTooLargeError(f"manifest is over {limits.max_manifest_bytes} bytes")
    manifest = parse_manifest(raw_manifest)
    raw_signature = members.pop(SIGNATURE_NAME)
    try:
        sig = json.loads(raw_signature)
        sig_bytes = base64.b64decode(sig["sig"], validate=True)
        if not isinstance(sig.get("key_id"), str):
            raise ValueError("key_id")
    except (ValueError, KeyError, TypeError) as exc:
        raise SignatureError("bundle signature record is malformed") from exc
    verified = False
    if pubkey is not None:
        try:
            keys_mod.verify(pubkey, raw_manifest, sig_bytes)
        except SignatureError:
            given = keys_mod.key_id(pubkey)
            if sig["key_id"] != given:  # the recorded signer tells a wrong key from a tampered manifest
                raise SignatureError(f"bundle was signed by key {sig['key_id']}, not by the given key {given}",
                                     hint="verify with the public key of the fleet that signed it") from None
            raise SignatureError("manifest does not match its signature: the bundle was tampered with",
                                 hint="rebuild the bundle or fetch it again from a trusted source") from None
        verified = True
    extra = set(members) - set(manifest["files"])
    if extra:
        raise UnsafeMemberError(f"bundle holds files the manifest does not pin: {sorted(extra)}")
    for name, entry in manifest["files"].items():
        if name not in members:
            raise BundleCorruptError(f"bundle lacks {name}, which the manifest lists")
        content = members[name]
        if len(content) != entry["size"] or sha256_hex(content) != entry["sha256"]:
            raise HashMismatchError(f"{name} does not match the sha256/size in the manifest: the file was modified")
    model = members[manifest["model_file"]]
    inspect_tflite(model)  # NotTFLiteError for a payload that is not a TFLite flatbuffer
    # Last: the archive must be byte-for-byte the canonical packing of what was checked, so that no byte of the
    # file (headers, padding, trailing blocks) can change without verification failing.
    if pack_bytes(raw_manifest, raw_signature, members) != data:
        raise BundleCorruptError("bundle archive is not in canonical form: it was modified after signing",
                                 hint="fetch the bundle again, or rebuild it with 'edgekit bundle create'")
    return Bundle(path=path, manifest=manifest, manifest_bytes=raw_manifest, signature=sig, files=members,
                  sha256=sha256_hex(data), size=len(data), signature_verified=verified)


def read_bundle(path: str | os.PathLike, pubkey: Ed25519PublicKey | str | os.PathLike | None = None, *,
                limits: Limits = DEFAULT_LIMITS) -> Bundle:
    """Read and check a bundle. Structure, hashes and the TFLite payload are always checked; the signature too
    when ``pubkey`` is given (``Bundle.signature_verified`` says whether it was)."""
    path = Path(path)
    if pubkey is not None and not isinstance(pubkey, Ed25519PublicKey):
        pubkey = keys_mod.load_public_key(pubkey)
    try:
        size = path.stat().st_size
        if size > limits.max_total_bytes + (1 << 20):
            raise BundleTooLargeError(f"bundle {path} is {size} bytes, over the limit")
        data = path.read_bytes()
    except FileNotFoundError:
        raise UsageError(f"bundle {path} does not exist") from None
    except IsADirectoryError:
        raise UsageError(f"{path} is a directory, not a bundle file") from None
    return parse_bundle(data, pubkey, path=path, limits=limits)


def verify_bundle(path: str | os.PathLike, pubkey: Ed25519PublicKey | str | os.PathLike, *,
                  limits: Limits = DEFAULT_LIMITS) -> Bundle:
    """Read a bundle and require its signature to verify against ``pubkey``."""
    if pubkey is None:
        raise UsageError("a public key is needed to verify a bundle", hint="pass --pubkey")
    return read_bundle(path, pubkey, limits=limits)


def extract_bundle(bundle: Bundle, dest: str | os.PathLike) -> Path:
    """Write a verified bundle's files (and manifest, signature) into a new directory ``dest``, atomically."""
    if not bundle.signature_verified:
        raise SignatureError("refusing to extract a bundle whose signature was not verified",
                             hint="read it with the fleet's public key first")
    dest = Path(dest)
    if dest.exists():
        raise FileExistsRefusal(f"{dest} already exists")
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
    try:
        for name, data in [(MANIFEST_NAME, bundle.manifest_bytes),
                           (SIGNATURE_NAME, json.dumps(bundle.signature, sort_keys=True).encode()),
                           *bundle.files.items()]:
            target = tmp / name
            with open(target, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
        fsync_dir(tmp)
        os.rename(tmp, dest)
        fsync_dir(dest.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return dest


def describe(bundle: Bundle) -> dict[str, Any]:
    """A JSON-able summary for ``edgekit bundle inspect``."""
    info = bundle.model_info()
    m = bundle.manifest
    return {
        "path": str(bundle.path) if bundle.path else None,
        "name": m["name"], "version": m["version"], "created_at": m["created_at"], "target": m["target"],
        "schema_version": m["schema_version"],
        "bundle": {"size": bundle.size, "sha256": bundle.sha256},
        "files": m["files"],
        "inputs": m["inputs"], "outputs": m["outputs"],
        "labels": m.get("labels"),
        "ops": info.op_histogram(),
        "op_count": sum(len(sg.ops) for sg in info.subgraphs),
        "parameter_bytes": info.parameter_bytes,
        "min_runtime": m.get("min_runtime", {}),
        "golden": m.get("golden"),
        "provenance": m.get("provenance", {}),
        "signature": {"key_id": bundle.signature.get("key_id"),
                      "status": "verified" if bundle.signature_verified else "not checked (pass --pubkey)"},
    }


__all__ = ["Bundle", "Limits", "create_bundle", "read_bundle", "verify_bundle", "parse_bundle", "extract_bundle",
           "pack_bundle", "describe", "file_sha256", "sha256_hex", "ManifestError"]
