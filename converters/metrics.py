"""Accuracy metrics between float reference outputs and converted-model outputs. Pure numpy."""

from __future__ import annotations

import math
from typing import Any

import numpy as np


def top1(outputs: np.ndarray, labels: np.ndarray) -> float:
    """Fraction of samples whose argmax over the last axis equals the label."""
    pred = np.argmax(outputs.reshape(outputs.shape[0], -1), axis=1)
    return float(np.mean(pred == labels.reshape(-1)))


def agreement(reference: np.ndarray, converted: np.ndarray) -> float:
    """Fraction of samples with the same argmax (top-1 agreement)."""
    a = np.argmax(reference.reshape(reference.shape[0], -1), axis=1)
    b = np.argmax(converted.reshape(converted.shape[0], -1), axis=1)
    return float(np.mean(a == b))


def snr_db(reference: np.ndarray, converted: np.ndarray) -> float:
    """10·log10(Σ ref² / Σ (ref − conv)²); +inf for identical outputs."""
    ref = reference.astype(np.float64)
    noise = float(np.sum((ref - converted.astype(np.float64)) ** 2))
    signal = float(np.sum(ref ** 2))
    if noise == 0.0:
        return math.inf
    if signal == 0.0:
        return -math.inf
    return 10.0 * math.log10(signal / noise)


def compare(reference: np.ndarray, converted: np.ndarray, labels: np.ndarray | None = None) -> dict[str, Any]:
    """Every accuracy figure for one output: agreement, mean/max |error|, SNR, and top-1 when labels are given."""
    err = np.abs(reference.astype(np.float64) - converted.astype(np.float64))
    out: dict[str, Any] = {
        "samples": int(reference.shape[0]),
        "agreement": agreement(reference, converted),
        "mean_abs_error": float(err.mean()),
        "max_abs_error": float(err.max()),
        "snr_db": snr_db(reference, converted),
    }
    if labels is not None:
        out["top1_float"] = top1(reference, labels)
        out["top1_converted"] = top1(converted, labels)
        out["top1_drop_pp"] = 100.0 * (out["top1_float"] - out["top1_converted"])
    return out


def label_problem(labels: np.ndarray, classes: int) -> str | None:
    """Why ``labels`` cannot be class indices of an output with ``classes`` values (None when they can)."""
    lab = np.asarray(labels).reshape(-1)
    if lab.size == 0:
        return None
    if lab.dtype.kind not in "iuf" or (lab.dtype.kind == "f" and not np.all(np.isfinite(lab) & (lab == np.round(lab)))):
        return f"labels must be integer class indices, got dtype {lab.dtype}"
    bad = np.flatnonzero((lab < 0) | (lab >= classes))
    if bad.size:
        k = int(bad[0])
        return (f"{bad.size} label(s) outside 0..{classes - 1} for a {classes}-value output "
                f"(first: sample {k} has label {lab[k]:g})")
    return None


def is_constant(outputs: np.ndarray, atol: float = 1e-7) -> bool:
    """True when every sample gives the same output (so agreement and SNR measure nothing)."""
    if outputs.shape[0] < 2:
        return False
    flat = outputs.reshape(outputs.shape[0], -1).astype(np.float64)
    return bool(np.all(np.abs(flat - flat[0]) <= atol * max(1.0, float(np.abs(flat[0]).max(initial=0.0)))))


def accuracy_drop_pp(result: dict[str, Any]) -> float:
    """The drop the accuracy budget is measured in: top-1 points with labels, else disagreement points."""
    if "top1_drop_pp" in result:
        return float(result["top1_drop_pp"])
    return 100.0 * (1.0 - float(result["agreement"]))


def percentile_ms(samples_s: list[float]) -> dict[str, float]:
    arr = np.asarray(samples_s) * 1000.0
    return {"median_ms": float(np.median(arr)), "p95_ms": float(np.percentile(arr, 95)),
            "min_ms": float(arr.min())}
