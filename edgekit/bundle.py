"""Model bundles (``*.ekb``): a ustar archive of ``manifest.json``, ``signature`` and the payload files it pins.

Reading authenticates before it parses: the archive is read by edgekit's own strict reader (:mod:`.archive`:
canonical headers only, bounded member count and sizes), the signature record is bounded and canonical
(:mod:`.keys`), the signature is checked over the raw manifest bytes, and only then is the manifest parsed — with
bounded size and depth — and every payload's sha256 and size compared before anything uses it.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from . import archive
from . import golden as golden_mod
from . import keys as keys_mod
from . import onnx_model
from .arrays import load_arrays
from .errors import (ArrayFileError, BundleCorruptError, BundleTooLargeError, FileExistsRefusal, HashMismatchError,
                     ManifestError, NotTFLiteError, SignatureError, UnsafeMemberError, UsageError)
from .fsutil import atomic_write, fsync_dir
from .hashing import file_sha256, sha256_hex
from .manifest import (MANIFEST_NAME, MAX_MANIFEST_BYTES, SCHEMA_VERSION, SIGNATURE_NAME, Manifest, canonical_bytes,
                       check_name, check_version, parse_manifest, validate_manifest)
from .tflite_model import ModelInfo, inspect_tflite, is_tflite

MODEL_FILE = "model.tflite"
EDGETPU_MODEL_FILE = "model_edgetpu.tflite"
MODEL_FILES = {"cpu": MODEL_FILE, "edgetpu": EDGETPU_MODEL_FILE, "gpu": onnx_model.ONNX_MODEL_FILE}
LABELS_FILE = "labels.txt"
SUFFIX = ".ekb"


@dataclass(frozen=True)
class Limits:
    max_members: int = 16
    max_member_bytes: int = 1 << 30
    max_manifest_bytes: int = MAX_MANIFEST_BYTES
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
    def meta(self) -> Manifest:
        """The typed view of :attr:`manifest` (shared with the agent's store entries)."""
        return Manifest(self.manifest)

    @property
    def name(self) -> str:
        return self.meta.name

    @property
    def version(self) -> str:
        return self.meta.version

    @property
    def model_bytes(self) -> bytes:
        return self.files[self.meta.model_file]

    def model_info(self) -> ModelInfo:
        if self._info is None:
            self._info = inspect_tflite(self.model_bytes)
        return self._info

    def golden(self) -> tuple[list[np.ndarray], list[np.ndarray], float, float] | None:
        """(inputs, expected outputs, atol, rtol), or None for a bundle without golden vectors."""
        return self.meta.golden_vectors(self.files.__getitem__)

    def model_ref(self) -> dict[str, str]:
        return self.meta.model_ref(self.sha256)


# --- writing ---------------------------------------------------------------------------------------------------------


def pack_bytes(manifest_bytes: bytes, signature_bytes: bytes, files: dict[str, bytes]) -> bytes:
    """The canonical archive (see :mod:`.archive`): manifest, signature, then the payloads in sorted name order."""
    return archive.pack([(MANIFEST_NAME, manifest_bytes), (SIGNATURE_NAME, signature_bytes), *sorted(files.items())])


def pack_bundle(out: str | os.PathLike, manifest_bytes: bytes, signature_bytes: bytes, files: dict[str, bytes]) -> Path:
    """Low-level: write the canonical archive atomically. No checks."""
    return atomic_write(out, pack_bytes(manifest_bytes, signature_bytes, files))


def signature_record(key: Ed25519PrivateKey, manifest_bytes: bytes) -> bytes:
    return keys_mod.sign_record(key, manifest_bytes).encode()


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
    min_ops: dict[str, int] = {}
    if target == "gpu":  # an ONNX payload: its tensors come from onnxruntime (edgekit/onnx_model.py)
        in_specs, out_specs = onnx_model.tensor_specs(model)
    else:
        info = inspect_tflite(model)
        for sg in info.subgraphs:
            for op in sg.ops:
                min_ops[op.opcode] = max(min_ops.get(op.opcode, 1), op.version)
        in_specs, out_specs = [t.to_dict() for t in info.inputs], [t.to_dict() for t in info.outputs]
    manifest = {
        "schema_version": SCHEMA_VERSION,
        "name": name,
        "version": version,
        "created_at": _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat(),
        "model_file": model_file,
        "files": {n: {"sha256": sha256_hex(d), "size": len(d)} for n, d in sorted(files.items())},
        "inputs": in_specs,
        "outputs": out_specs,
        "labels": labels,
        "preprocessing": preprocessing or {},
        "target": target,
        "min_runtime": {"op_versions": dict(sorted(min_ops.items()))},
        "provenance": provenance or {},
        "golden": golden,
        "signing": {"alg": keys_mod.ALGORITHM, "key_id": keys_mod.key_id(key)},
    }
    validate_manifest(manifest)
    return manifest


def bundle_path(out: str | os.PathLike, name: str, version: str, force: bool) -> Path:
    """Where a new bundle goes: ``out`` itself, or ``NAME-VERSION.ekb`` inside it when it is a directory. An
    existing file (without ``force``) or a missing parent directory is refused before any work."""
    out_path = Path(out)
    if out_path.is_dir():
        out_path = out_path / f"{name}-{version}{SUFFIX}"
    if out_path.exists() and not force:
        raise FileExistsRefusal(f"{out_path} already exists")
    if not out_path.parent.is_dir():
        raise UsageError(f"output directory {out_path.parent} does not exist", hint="create it first")
    return out_path


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
    if target == "gpu":
        onnx_model.check_onnx(model)
        in_specs, out_specs = onnx_model.tensor_specs(model)
    else:
        if not is_tflite(model):
            raise NotTFLiteError("the model is not a TFLite flatbuffer (no TFL3 identifier)")
        info = inspect_tflite(model)
        in_specs, out_specs = [t.to_dict() for t in info.inputs], [t.to_dict() for t in info.outputs]
    out_path = bundle_path(out, name, version, force)
    if not isinstance(key, Ed25519PrivateKey):
        key = keys_mod.load_private_key(key)
    if isinstance(labels, (str, os.PathLike)):
        try:
            labels = [ln.strip() for ln in Path(labels).read_text().splitlines() if ln.strip()]
        except (OSError, UnicodeDecodeError) as exc:
            raise UsageError(f"cannot read labels file {labels}: {exc}") from exc
    labels = list(labels) if labels is not None else None

    model_file = MODEL_FILES.get(target, MODEL_FILE)
    files = {model_file: model}
    if isinstance(golden_inputs, (str, os.PathLike)):
        golden_inputs = _load_golden_inputs(golden_inputs, in_specs)
    elif golden_inputs is None:
        golden_inputs = golden_mod.default_inputs(in_specs, golden_count)
    if golden_outputs is None:
        run = onnx_model.run_model if target == "gpu" else golden_mod.run_model
        golden_outputs = run(model, golden_inputs)
    atol, rtol = tolerance or (onnx_model.GPU_TOLERANCE if target == "gpu" else golden_mod.default_tolerance(out_specs))
    files[golden_mod.GOLDEN_FILE] = golden_mod.pack(golden_inputs, golden_outputs)
    golden = {"file": golden_mod.GOLDEN_FILE, "count": int(golden_inputs[0].shape[0]), "atol": atol, "rtol": rtol}
    if labels is not None:
        files[LABELS_FILE] = ("\n".join(labels) + "\n").encode()

    manifest = build_manifest(model, name=name, version=version, files=files, model_file=model_file, labels=labels,
                              target=target, provenance=provenance, preprocessing=preprocessing, golden=golden,
                              key=key)
    mbytes = canonical_bytes(manifest)
    _check_manifest_size(mbytes, DEFAULT_LIMITS)
    parse_manifest(mbytes)  # the reader's bounds (depth): never write a bundle that no reader would accept
    return pack_bundle(out_path, mbytes, signature_record(key, mbytes), files)


# --- reading ---------------------------------------------------------------------------------------------------------


def _check_manifest_size(raw: bytes, limits: Limits) -> None:
    if len(raw) > limits.max_manifest_bytes:
        raise BundleTooLargeError(f"manifest is {len(raw)} bytes, over the {limits.max_manifest_bytes}-byte limit")


def _check_signing(manifest: dict[str, Any], record: keys_mod.SignatureRecord) -> None:
    """The signed manifest's ``signing`` entry must name the record's algorithm and key (so the signature covers
    them too)."""
    signing = manifest.get("signing")
    if signing is None:
        return
    if not isinstance(signing, dict):
        raise ManifestError("manifest.signing must be an object")
    if signing.get("alg") != record.alg:
        raise SignatureError(f"manifest.signing names algorithm {repr(signing.get('alg'))[:40]}; edgekit verifies "
                             f"only {keys_mod.ALGORITHM!r} signatures",
                             hint="re-sign the bundle with 'edgekit bundle create'")
    if signing.get("key_id") != record.key_id:
        raise SignatureError(f"manifest.signing names key {repr(signing.get('key_id'))[:40]}, the signature record "
                             f"key {record.key_id}: one of them was modified",
                             hint="rebuild the bundle or fetch it again from a trusted source")


def parse_bundle(data: bytes, pubkey: Ed25519PublicKey | None = None, *, path: Path | None = None,
                 limits: Limits = DEFAULT_LIMITS) -> Bundle:
    """Check a bundle held in memory; see :func:`read_bundle`.

    Order: the archive (canonical headers, bounds) → the signature record (bounded, canonical, ``ed25519`` only)
    → with a key, the signature over the raw manifest bytes → the manifest, parsed only now (bounded) → its
    ``signing`` entry against the record → pinned payloads → the TFLite model → canonical member order.
    """
    listed = archive.unpack(data, max_members=limits.max_members, max_member_bytes=limits.max_member_bytes,
                            max_total_bytes=limits.max_total_bytes)
    members = dict(listed)
    for required in (MANIFEST_NAME, SIGNATURE_NAME):
        if required not in members:
            raise BundleCorruptError(f"bundle lacks {required}")
    raw_manifest = members.pop(MANIFEST_NAME)
    raw_signature = members.pop(SIGNATURE_NAME)
    _check_manifest_size(raw_manifest, limits)
    record = keys_mod.parse_record(raw_signature)
    verified = False
    if pubkey is not None:  # authenticate the raw bytes before any parser sees them
        keys_mod.verify_record(pubkey, raw_manifest, record)
        verified = True
    manifest = parse_manifest(raw_manifest, max_bytes=limits.max_manifest_bytes)
    _check_signing(manifest, record)
    extra = set(members) - set(manifest["files"])
    if extra:
        raise UnsafeMemberError(f"bundle holds files the manifest does not pin: {sorted(extra)}")
    for name, entry in manifest["files"].items():
        if name not in members:
            raise BundleCorruptError(f"bundle lacks {name}, which the manifest lists")
        content = members[name]
        if len(content) != entry["size"] or sha256_hex(content) != entry["sha256"]:
            raise HashMismatchError(f"{name} does not match the sha256/size in the manifest: the file was modified")
    meta = Manifest(manifest)
    for target in meta.payload_targets:  # every model of the bundle (schema 2: one per payload)
        model = members[meta.select(target).model_file]
        if target == "gpu":
            onnx_model.check_onnx(model)  # NotTFLiteError for a gpu payload that is not an ONNX model
        else:
            inspect_tflite(model)  # NotTFLiteError for a payload that is not a TFLite flatbuffer
    order = [name for name, _ in listed]
    canonical_order = [MANIFEST_NAME, SIGNATURE_NAME, *sorted(members)]
    if order != canonical_order:
        raise BundleCorruptError(f"bundle archive is not in canonical form: member order {', '.join(order)}, "
                                 f"expected {', '.join(canonical_order)}",
                                 hint="rebuild the bundle with 'edgekit bundle create'")
    return Bundle(path=path, manifest=manifest, manifest_bytes=raw_manifest, signature=record.to_dict(),
                  files=members, sha256=sha256_hex(data), size=len(data), signature_verified=verified)


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
    m = bundle.manifest
    meta = bundle.meta
    info = None if meta.target == "gpu" else bundle.model_info()  # an ONNX payload has no TFLite op table
    return {
        "path": str(bundle.path) if bundle.path else None,
        "name": m["name"], "version": m["version"], "created_at": m["created_at"], "target": meta.target,
        "payloads": {t: {"model_file": meta.select(t).model_file, "golden": meta.select(t).data_golden()}
                     for t in meta.payload_targets},
        "schema_version": m["schema_version"],
        "bundle": {"size": bundle.size, "sha256": bundle.sha256},
        "files": m["files"],
        "inputs": meta.inputs, "outputs": meta.outputs,
        "labels": m.get("labels"),
        "ops": info.op_histogram() if info else {},
        "op_count": sum(len(sg.ops) for sg in info.subgraphs) if info else None,
        "parameter_bytes": info.parameter_bytes if info else None,
        "min_runtime": meta.min_runtime,
        "golden": meta.data_golden(),
        "provenance": m.get("provenance", {}),
        "signature": {"key_id": bundle.signature.get("key_id"),
                      "status": "verified" if bundle.signature_verified else "not checked (pass --pubkey)"},
    }


__all__ = ["Bundle", "Limits", "create_bundle", "read_bundle", "verify_bundle", "parse_bundle", "extract_bundle",
           "pack_bundle", "describe", "file_sha256", "sha256_hex", "ManifestError"]
