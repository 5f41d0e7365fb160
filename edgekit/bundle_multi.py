"""Bundles with several payloads of one model version (manifest schema 2): ``cpu`` (int8/fp16 TFLite), ``edgetpu``
(compiled TFLite) and ``gpu`` (ONNX), each with its own tensors, golden vectors and tolerance.

Written by :func:`create_multi_bundle`; read, verified and extracted by :mod:`edgekit.bundle` like any bundle. A
device runs the one payload that fits it (:func:`edgekit.payloads.choose_payload`).
"""

from __future__ import annotations

import datetime as _dt
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from . import golden as golden_mod
from . import keys as keys_mod
from . import onnx_model
from .bundle import (DEFAULT_LIMITS, bundle_path, LABELS_FILE, MODEL_FILES, _check_manifest_size, pack_bundle,
                     signature_record)
from .errors import NotTFLiteError, UsageError
from .hashing import sha256_hex
from .manifest import MULTI_SCHEMA_VERSION, TARGETS, canonical_bytes, check_name, check_version, parse_manifest
from .tflite_model import inspect_tflite, is_tflite


def golden_file(target: str) -> str:
    return f"golden_{target}.npz"


def _describe(target: str, model: bytes) -> tuple[list[dict], list[dict], dict[str, Any]]:
    """(inputs, outputs, min_runtime) of one payload's model."""
    if target == "gpu":
        onnx_model.check_onnx(model)
        ins, outs = onnx_model.tensor_specs(model)
        return ins, outs, {"op_versions": {}}
    if not is_tflite(model):
        raise NotTFLiteError(f"the {target} payload is not a TFLite flatbuffer (no TFL3 identifier)")
    info = inspect_tflite(model)
    ops: dict[str, int] = {}
    for sg in info.subgraphs:
        for op in sg.ops:
            ops[op.opcode] = max(ops.get(op.opcode, 1), op.version)
    return ([t.to_dict() for t in info.inputs], [t.to_dict() for t in info.outputs],
            {"op_versions": dict(sorted(ops.items()))})


def create_multi_bundle(payloads: Mapping[str, bytes], out: str | os.PathLike, *, name: str, version: str,
                        key: Ed25519PrivateKey | str | os.PathLike, labels: Sequence[str] | None = None,
                        golden_inputs: Mapping[str, Sequence[np.ndarray]] | None = None,
                        golden_outputs: Mapping[str, Sequence[np.ndarray]] | None = None,
                        tolerance: Mapping[str, tuple[float, float]] | None = None, golden_count: int = 3,
                        provenance: dict[str, Any] | None = None, preprocessing: dict[str, Any] | None = None,
                        force: bool = False) -> Path:
    """Build, sign and write a schema-2 bundle holding one model per target of ``payloads``.

    Golden outputs not given are computed per payload (LiteRT for TFLite, onnxruntime for ONNX); an ``edgetpu``
    payload that a CPU cannot run needs its golden outputs given (the converter passes those of the int8 model it
    was compiled from).
    """
    check_name(name)
    check_version(version)
    if not payloads:
        raise UsageError("a multi-payload bundle needs at least one payload")
    unknown = sorted(set(payloads) - set(TARGETS))
    if unknown:
        raise UsageError(f"unknown payload target(s) {', '.join(unknown)}", hint=f"use {', '.join(TARGETS)}")
    out_path = bundle_path(out, name, version, force)
    if not isinstance(key, Ed25519PrivateKey):
        key = keys_mod.load_private_key(key)
    files: dict[str, bytes] = {}
    entries: dict[str, Any] = {}
    for target, model in sorted(payloads.items()):
        ins, outs, min_runtime = _describe(target, model)
        model_file = MODEL_FILES[target]
        files[model_file] = model
        g_in = (golden_inputs or {}).get(target)
        g_in = list(g_in) if g_in is not None else golden_mod.default_inputs(ins, golden_count)
        g_out = (golden_outputs or {}).get(target)
        if g_out is None:
            g_out = (onnx_model.run_model if target == "gpu" else golden_mod.run_model)(model, g_in)
        default = onnx_model.GPU_TOLERANCE if target == "gpu" else golden_mod.default_tolerance(outs)
        atol, rtol = (tolerance or {}).get(target) or default
        files[golden_file(target)] = golden_mod.pack(g_in, g_out)
        entries[target] = {"model_file": model_file, "inputs": ins, "outputs": outs, "min_runtime": min_runtime,
                           "golden": {"file": golden_file(target), "count": int(g_in[0].shape[0]), "atol": atol,
                                      "rtol": rtol}}
    labels = list(labels) if labels is not None else None
    if labels is not None:
        files[LABELS_FILE] = ("\n".join(labels) + "\n").encode()
    manifest = {
        "schema_version": MULTI_SCHEMA_VERSION,
        "name": name,
        "version": version,
        "created_at": _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat(),
        "files": {n: {"sha256": sha256_hex(d), "size": len(d)} for n, d in sorted(files.items())},
        "payloads": entries,
        "labels": labels,
        "preprocessing": preprocessing or {},
        "provenance": provenance or {},
        "signing": {"alg": keys_mod.ALGORITHM, "key_id": keys_mod.key_id(key)},
    }
    mbytes = canonical_bytes(manifest)
    _check_manifest_size(mbytes, DEFAULT_LIMITS)
    parse_manifest(mbytes)  # never write a manifest that no reader would accept
    return pack_bundle(out_path, mbytes, signature_record(key, mbytes), files)
