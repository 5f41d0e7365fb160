"""``edgekit convert --target cpu,edgetpu,gpu``: every payload of one model version in one run, one bundle.

Each TFLite target is a full conversion of its own (:class:`converters.pipeline.Converter`: calibration, evaluation,
fallback, precheck, report card); the ``gpu`` payload is the ONNX source in float16 with float32 I/O
(:mod:`converters.onnx_fp16`), checked against the source in onnxruntime. The result
is ``NAME-<target>.tflite`` per TFLite payload, one ``report.json`` with a card per target, and with ``--key`` one
multi-payload bundle (manifest schema 2, :mod:`edgekit.bundle_multi`) whose payloads each carry golden vectors made
from the first real samples.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np

from edgekit.keys import load_private_key
from edgekit.onnx_model import GPU_TOLERANCE  # the gpu payload's golden tolerance (TensorRT runs it in fp16)

from .errors import OptionError
from .output import Staging

PAYLOAD_TARGETS = ("cpu", "edgetpu", "gpu")


def parse_targets(text: str) -> list[str]:
    """``cpu,edgetpu,gpu`` → the targets in that order; OptionError (exit 2) for an unknown or repeated one."""
    targets = [t.strip() for t in str(text).split(",") if t.strip()]
    bad = [t for t in targets if t not in PAYLOAD_TARGETS]
    if not targets or bad:
        raise OptionError(f"--target {text}: unknown target {', '.join(bad) or '(none)'}",
                          hint=f"use one or more of {', '.join(PAYLOAD_TARGETS)}, separated by commas")
    if len(set(targets)) != len(targets):
        raise OptionError(f"--target {text} names a target twice")
    return targets


def is_multi(text: str) -> bool:
    """Whether ``--target`` asks for this path: several targets, or the gpu payload (only a bundle carries it)."""
    targets = parse_targets(text)
    return len(targets) > 1 or targets == ["gpu"]


def _names(opts, targets: list[str]) -> dict[str, str]:
    name = opts.name or opts.model.stem.replace(" ", "_") or "model"
    out = {t: f"{name}-{t}.tflite" for t in targets if t != "gpu"}
    if "gpu" in targets:
        out["gpu"] = f"{name}-gpu.onnx"
    out["report"] = "report.json"
    if opts.key is not None:
        out["bundle"] = f"{name}-{opts.version}.ekb"
    return out


def convert_targets(opts, targets: list[str], progress=None) -> dict[str, Any]:
    """Convert for every target, write the files, sign one bundle; returns the combined report."""
    from . import onnx_source, pipeline

    if "gpu" in targets and opts.model.suffix.lower() != ".onnx":
        raise OptionError("--target gpu needs an ONNX source (the gpu payload is the ONNX model)",
                          hint="export the model to ONNX (docs/convert.md) or leave gpu out of --target")
    if opts.mode is not None and "cpu" not in targets:
        raise OptionError("--mode applies to the cpu payload; --target has no cpu")
    names = _names(opts, targets)
    staging = Staging(opts.output, list(names.values()), opts.force) if opts.output else None
    if staging:
        staging.check()
    key = load_private_key(opts.key) if opts.key is not None else None
    reports: dict[str, Any] = {}
    payloads: dict[str, bytes] = {}
    golden_in: dict[str, list[np.ndarray]] = {}
    golden_out: dict[str, list[np.ndarray]] = {}
    tolerance: dict[str, tuple[float, float]] = {}
    warnings: list[str] = []
    samples = None
    files: dict[str, bytes] = {}
    for target in [t for t in targets if t != "gpu"]:
        sub = dataclasses.replace(opts, target=target, output=None, key=None,
                                  mode=opts.mode if target == "cpu" else None,
                                  io=opts.io if target == "cpu" else None)
        res = pipeline.Converter(sub, progress).run()
        reports[target] = res.report
        files[names[target]] = res.model_bytes
        samples = samples or res.samples
        names_in = [i["name"] for i in res.report["source"]["inputs"]]
        ins = pipeline._golden_inputs(res.model_bytes, samples, names_in) if samples else None
        if target == "edgetpu":
            if res.compiled is None:
                warnings.append("no edgetpu payload in the bundle: edgetpu_compiler is not on PATH (the "
                                "Edge TPU-ready int8 model is written, for compiling elsewhere)")
                continue
            payloads[target] = res.compiled
            if ins is not None:  # the compiled model runs only on an Edge TPU: golden outputs from its int8 source
                from edgekit.golden import run_model

                golden_in[target], golden_out[target] = ins, run_model(res.model_bytes, ins)
        else:
            payloads[target] = res.model_bytes
            if ins is not None:
                golden_in[target] = ins
    if "gpu" in targets:
        from .onnx_fp16 import agreement, to_fp16

        model = onnx_source.load_onnx(opts.model, *_digest(opts.model))
        source = Path(opts.model).read_bytes()
        half = to_fp16(source)
        payloads["gpu"] = files[names["gpu"]] = half
        tolerance["gpu"] = GPU_TOLERANCE
        reports["gpu"] = {"payload": names["gpu"], "runtime": "onnxruntime",
                          "precision": "fp16 weights and activations, fp32 inputs and outputs",
                          "inputs": [s.to_dict() for s in model.inputs], "golden_tolerance": list(GPU_TOLERANCE)}
        if samples:
            golden_in["gpu"] = [np.asarray(a, dtype=s.dtype)[:, None] for a, s in zip(samples, model.inputs)]
            # the fp16 payload against its fp32 source on the golden samples (the golden outputs are the fp16's own)
            reports["gpu"]["fp32_agreement"] = agreement(source, half, golden_in["gpu"])
    card = {"targets": reports, "payloads": sorted(payloads), "warnings": warnings}
    if staging:
        with staging:
            for fname, data in files.items():
                staging.write(fname, data)
            if key is not None and payloads:
                from edgekit.bundle_multi import create_multi_bundle

                name = opts.name or opts.model.stem.replace(" ", "_") or "model"
                create_multi_bundle(payloads, staging.path(names["bundle"]), name=name, version=opts.version,
                                    key=key, golden_inputs=golden_in, golden_outputs=golden_out,
                                    tolerance=tolerance, labels=_labels(opts.labels),
                                    provenance={"source": {"path": opts.model.name}, "targets": sorted(payloads)})
            card["outputs"] = {k: str(staging.out_dir / v) for k, v in names.items()
                               if k == "report" or staging.path(v).exists()}
            staging.write(names["report"], (json.dumps(card, indent=2, sort_keys=True, default=str) + "\n").encode())
            staging.commit()
    return card


def _digest(path: Path) -> tuple[str, int]:
    from .loading import source_digest

    return source_digest(path)


def _labels(path: Path | None) -> list[str] | None:
    if path is None:
        return None
    return [ln.strip() for ln in Path(path).read_text().splitlines() if ln.strip()]
