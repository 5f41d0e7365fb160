"""``evaluate``: the converted model in LiteRT on the held-out test split: top-1 accuracy, per-class slices
(samples, accuracy, precision), the confusion matrix, size and host latency; the report card's float accuracy
beside it. The gate reads this."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..artifacts import Data, Evaluation, TFLiteModel
from ..env import StepEnv
from ..errors import PipelineError

NAME = "evaluate"
PRODUCES = "evaluation"
CONSUMES = {"data": "data", "model": "tflite"}
OPTIONAL: dict[str, str] = {}


@dataclass
class Config:
    threads: int = 1
    runs: int = 20

    def validate(self) -> list[tuple[str, str]]:
        return [] if self.threads >= 1 and self.runs >= 1 else [("threads", "[evaluate] threads and runs must be >= 1")]


@dataclass(frozen=True)
class Inputs:
    data: Data
    model: TFLiteModel


def slices(y: np.ndarray, pred: np.ndarray) -> dict[str, Any]:
    """Accuracy overall and per class, precision per class, and the confusion matrix (rows: true class)."""
    classes = sorted(set(int(c) for c in np.unique(y)) | set(int(c) for c in np.unique(pred)))
    pos = {c: i for i, c in enumerate(classes)}
    cm = np.zeros((len(classes), len(classes)), np.int64)
    for t, p in zip(y.astype(int), pred.astype(int)):
        cm[pos[t], pos[p]] += 1
    per_class = {}
    for c in classes:
        i = pos[c]
        n, hit, predicted = int(cm[i].sum()), int(cm[i, i]), int(cm[:, i].sum())
        per_class[str(c)] = {"samples": n, "accuracy": hit / n if n else None,
                             "precision": hit / predicted if predicted else None}
    return {"accuracy": float(np.trace(cm) / max(1, cm.sum())), "samples": int(cm.sum()), "per_class": per_class,
            "classes": classes, "confusion": cm.tolist()}


def run(cfg: Config, inp: Inputs, out: Path, env: StepEnv) -> Evaluation:
    from converters.evaluate import latency, run_float_io

    with np.load(inp.data.test, allow_pickle=False) as z:
        x, y = z["x"], (z["y"] if "y" in z.files else None)
    if y is None:
        raise PipelineError("the test split has no labels (y): nothing to evaluate",
                            hint="give the data step labels (y in the .npz, or return (x, y))")
    blob = inp.model.model.read_bytes()
    outs = run_float_io(blob, [x.astype(np.float32)], threads=cfg.threads)
    pred = outs[0].reshape(len(x), -1).argmax(axis=1)
    doc = slices(y, pred)
    card = json.loads(inp.model.report.read_text())
    acc = card.get("accuracy") or {}
    lat = latency(blob, [x[:1].astype(np.float32)], threads=cfg.threads, runs=cfg.runs)
    doc.update({"size": len(blob), "top1_float": acc.get("top1_float"), "latency_ms": lat,
                "mode": (card.get("conversion") or {}).get("mode")})
    doc["drop_vs_float_pp"] = (100.0 * (doc["top1_float"] - doc["accuracy"])
                               if doc["top1_float"] is not None else None)
    (out / "evaluation.json").write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n")
    return Evaluation(out / "evaluation.json")
