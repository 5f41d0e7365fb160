"""Running one budget-search trial, and reading the source model once: the TensorFlow side of the search.

A plain-conversion candidate is :func:`converters.pipeline.convert` (with the float fallback's
``max_accuracy_drop`` when the candidate has one); a recipe candidate is :func:`converters.optimize.optimize`. Both
run in memory (no output directory) with the search's data and options, and the trial keeps their report card and
``.tflite`` bytes. TensorFlow is imported only when a trial actually runs.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from edgekit.errors import EdgekitError

from . import measure
from .estimate import TFLITE_OP, Layer
from .space import Candidate

GOLDEN_COUNT = 3


def metrics_of(card: dict[str, Any], blob: bytes) -> dict[str, Any]:
    """What the budget and the Pareto front compare, from a report card and the model bytes."""
    acc = card.get("accuracy") or {}
    lat = card.get("latency") or {}
    return {"bytes": len(blob), "gzip_bytes": measure.gzip_size(blob),
            "latency_p95_ms": lat.get("p95_ms"), "latency_median_ms": lat.get("median_ms"),
            "drop_pp": acc.get("drop_pp"), "top1": acc.get("top1_converted"), "top1_float": acc.get("top1_float"),
            "agreement": acc.get("agreement")}


def run_trial(cand: Candidate, o) -> tuple[dict[str, Any], bytes | None]:
    """(record, model bytes) of one candidate under the search options ``o``; a failure is a record too, with
    ``cacheable`` False when it was not an edgekit error (it may not happen again)."""
    from ..errors import CalibrationError

    t0 = time.perf_counter()
    try:
        card, blob, note = _run(cand, o)
    except CalibrationError:
        raise  # the data does not fit the model: every candidate would fail the same way, so the search stops
    except EdgekitError as exc:
        return {"status": "failed", "error": exc.one_line(), "cacheable": True,
                "wall_s": round(time.perf_counter() - t0, 3)}, None
    except Exception as exc:  # noqa: BLE001 - a library error in one trial must not end the whole search
        first = (str(exc).strip().splitlines() or [""])[0][:300]
        return {"status": "failed", "error": f"{type(exc).__name__}: {first}", "cacheable": False,
                "wall_s": round(time.perf_counter() - t0, 3)}, None
    record = {"status": "ok", "metrics": metrics_of(card, blob), "card": card, "cacheable": True,
              "wall_s": round(time.perf_counter() - t0, 3)}
    if note:
        record["note"] = note
    return record, blob


def _run(cand: Candidate, o) -> tuple[dict[str, Any], bytes, str | None]:
    if cand.recipe is None:
        from .. import pipeline
        from ..errors import AccuracyBudgetError

        opts = pipeline.ConvertOptions(
            model=o.model, mode=cand.mode, calibration=o.train, calibration_samples=o.calibration_samples,
            eval=o.eval, scale=o.scale, offset=o.offset, max_accuracy_drop=cand.fallback_pp, threads=o.threads,
            runs=o.runs)
        try:
            result = pipeline.convert(opts)
        except AccuracyBudgetError as exc:  # the fallback's best attempt is still a measured model
            result = exc.result
            return result.report, result.model_bytes, exc.one_line()
        return result.report, result.model_bytes, None
    from .runner import OptimizeOptions, optimize

    result = optimize(OptimizeOptions(
        model=o.model, recipe=cand.recipe, train=o.train, val=o.val, eval=o.eval, epochs=o.epochs,
        batch_size=o.batch_size, lr=o.lr, seed=o.seed, mode=cand.mode, scale=o.scale, offset=o.offset,
        calibration_samples=o.calibration_samples, threads=o.threads, runs=o.runs))
    return result.report, result.model_bytes, None


def analyze(o) -> dict[str, Any]:
    """The source model's weight layers (for the estimates), inputs, format, and the first training samples (the
    bundle's golden inputs), read once per model and data and cached by the search. Training and evaluation data
    that do not fit the model are refused here, before any trial."""
    from .. import calibration as cal
    from .models import load_source
    from .measure import _flat_layers

    src = load_source(o.model)
    layers = []
    for layer in _flat_layers(src.keras_model):
        kernel = getattr(layer, "kernel", None)
        if kernel is None:
            kernel = getattr(layer, "depthwise_kernel", None)
        cls = type(layer).__name__
        if kernel is None or cls not in TFLITE_OP:
            continue
        bias = getattr(layer, "bias", None)
        cfg = layer.get_config()
        config = {k: cfg[k] for k in ("kernel_size", "filters", "groups", "data_format") if k in cfg} \
            if cls == "Conv2D" else None
        layers.append(Layer(layer.name, cls, tuple(int(d) for d in kernel.shape),
                            0 if bias is None else int(np.prod(bias.shape)), config).to_dict())
    norm = cal.Normalize(o.scale, o.offset)
    data = cal.load_dataset(o.train, src.inputs, limit=max(GOLDEN_COUNT, 8), normalize=norm, what="training",
                            minimum=1)
    cal.load_dataset(o.eval, src.inputs, limit=8, normalize=norm, what="evaluation", minimum=1)  # fits the model
    return {
        "source": {"path": src.path.name, "sha256": src.sha256, "format": src.format.kind,
                   "flavor": src.format.flavor, "parameters": src.float_parameters()},
        "inputs": [s.to_dict() for s in src.inputs],
        "layers": layers,
        "labels": data.labels is not None,
        "golden": [np.asarray(a[:GOLDEN_COUNT]).tolist() for a in data.arrays],
        "golden_dtypes": [str(a.dtype) for a in data.arrays],
    }
