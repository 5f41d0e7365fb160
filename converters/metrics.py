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


def accuracy_drop_pp(result: dict[str, Any]) -> float:
    """The drop the accuracy budget is measured in: top-1 points with labels, else disagreement points."""
    if "top1_drop_pp" in result:
        return float(result["top1_drop_pp"])
    return 100.0 * (1.0 - float(result["agreement"]))


def percentile_ms(samples_s: list[float]) -> dict[str, float]:
    arr = np.asarray(samples_s) * 1000.0
    return {"median_ms": float(np.median(arr)), "p95_ms": float(np.percentile(arr, 95)),
            "min_ms": float(arr.min())}
