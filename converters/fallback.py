"""Accuracy budget: keep the most quantization-sensitive layers in float until the drop fits the budget.

Sensitivity comes from TFLite's ``QuantizationDebugger``: for each quantized layer it compares the float op with its
quantized counterpart. We rank layers by RMSE measured in steps of the float tensor's own range (≈0.3 is ideal
rounding noise; outliers or huge ranges give tens or hundreds). Errors propagate — a broken layer also makes the
layers after it look bad — so the search is greedy: keep the top-ranked layer(s) in float (``denylisted_nodes``),
re-measure the real accuracy drop on evaluation data, re-rank with those layers already in float, and repeat. When
the budget is met, layers that turn out not to be needed are put back into int8 one at a time.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from .errors import ConverterFailed
from .loading import LoadedModel
from .modes import Plan
from .tflite import make_converter, quiet_absl, quiet_native, representative


def rmse_in_steps(float_tensors, quant_tensors, scale, zero_point) -> float:
    """RMSE between a float tensor and its dequantized counterpart, in 1/255ths of the float tensor's range."""
    f = np.asarray(float_tensors[0] if isinstance(float_tensors, (list, tuple)) else float_tensors, np.float64)
    q = np.asarray(quant_tensors[0] if isinstance(quant_tensors, (list, tuple)) else quant_tensors, np.float64)
    dq = (q - zero_point) * scale
    span = float(f.max() - f.min()) if f.size else 0.0
    return float(np.sqrt(np.mean((f - dq) ** 2)) / (span / 255.0 + 1e-12))


@dataclass
class LayerScore:
    tensor: str
    op: str
    score: float

    def to_dict(self):
        return {"tensor": self.tensor, "op": self.op, "rmse_steps": round(self.score, 4)}


@dataclass
class Attempt:
    denylisted: list[str]
    drop_pp: float
    result: dict
    model: bytes = field(repr=False, default=b"")


def rank_layers(model: LoadedModel, plan: Plan, calib: list[np.ndarray], denylist: list[str] | None = None,
                debug_samples: int = 64) -> list[LayerScore]:
    import tensorflow as tf

    with quiet_absl():
        conv = make_converter(model, plan, representative(calib), allow_float_ops=True)
    opts = tf.lite.experimental.QuantizationDebugOptions(layer_direct_compare_metrics={"rmse_steps": rmse_in_steps},
                                                         denylisted_nodes=list(denylist or []))
    sub = [a[:debug_samples] for a in calib]
    try:
        with quiet_native():
            dbg = tf.lite.experimental.QuantizationDebugger(converter=conv, debug_dataset=representative(sub),
                                                            debug_options=opts)
            dbg.run()
    except Exception as exc:  # noqa: BLE001
        raise ConverterFailed(f"QuantizationDebugger failed: {str(exc).strip().splitlines()[0][:300]}") from exc
    buf = io.StringIO()
    dbg.layer_statistics_dump(buf)
    rows = list(csv.DictReader(io.StringIO(buf.getvalue())))
    scores = [LayerScore(r["tensor_name"], r["op_name"], float(r["rmse_steps"])) for r in rows
              if r.get("rmse_steps") not in (None, "", "nan")]
    return sorted(scores, key=lambda s: -s.score)


def quantize_with_denylist(model: LoadedModel, plan: Plan, calib: list[np.ndarray], denylist: list[str]) -> bytes:
    """Full-integer model with ``denylist`` nodes kept in float. I/O follows ``plan.io`` (int8/uint8/float)."""
    import tensorflow as tf
    from tensorflow.lite.python import convert as tfl_convert

    with quiet_absl():
        conv = make_converter(model, plan, representative(calib), allow_float_ops=True)
    opts = tf.lite.experimental.QuantizationDebugOptions(denylisted_nodes=list(denylist))
    io_type = {"int8": tf.int8, "uint8": tf.uint8}.get(plan.io, tf.float32)
    try:
        with quiet_native():
            dbg = tf.lite.experimental.QuantizationDebugger(converter=conv, debug_dataset=representative(calib[:1]),
                                                            debug_options=opts)
            if io_type == tf.float32:
                return dbg.get_nondebug_quantized_model()
            return tfl_convert.mlir_quantize(dbg.calibrated_model, fully_quantize=True, input_data_type=io_type,
                                             output_data_type=io_type, denylisted_nodes=list(denylist))
    except Exception as exc:  # noqa: BLE001
        raise ConverterFailed(f"quantizing with {len(denylist)} float layer(s) failed: "
                              f"{str(exc).strip().splitlines()[0][:300]}") from exc


def search(model: LoadedModel, plan: Plan, calib: list[np.ndarray], budget_pp: float,
           measure: Callable[[bytes], tuple[float, dict]], first: Attempt, max_steps: int = 6,
           on_step: Callable[[Attempt], None] | None = None, max_float_layers: int = 8
           ) -> tuple[Attempt, list[Attempt], list[LayerScore]]:
    """Greedy float fallback until ``measure(model) -> (drop_pp, result)`` fits ``budget_pp``.

    Each step re-ranks with the current float layers and adds the next max(1, len(float layers)) of them (1, 1, 2,
    4 …). Returns (best attempt, every attempt, the first ranking). ``first`` is the all-int8 attempt.
    """
    attempts = [first]
    best = first
    deny: list[str] = []
    first_ranking: list[LayerScore] = []

    def attempt(denylist: list[str]) -> Attempt:
        blob = quantize_with_denylist(model, plan, calib, denylist)
        drop, result = measure(blob)
        att = Attempt(list(denylist), drop, result, blob)
        attempts.append(att)
        if on_step:
            on_step(att)
        return att

    for _ in range(max_steps):
        if best.drop_pp <= budget_pp:
            break
        ranking = rank_layers(model, plan, calib, deny)
        first_ranking = first_ranking or ranking
        candidates = [s.tensor for s in ranking if s.tensor not in deny]
        room = max_float_layers - len(deny)
        if not candidates or room <= 0:
            break
        deny = deny + candidates[:min(max(1, len(deny)), room)]
        try:
            att = attempt(deny)
        except ConverterFailed:  # e.g. nothing left to quantize
            break
        if att.drop_pp < best.drop_pp:
            best = att
    if best.drop_pp <= budget_pp and len(best.denylisted) > 1:
        keep = list(best.denylisted)
        for layer in list(keep):  # put back into int8 what the budget does not need
            trial = [t for t in keep if t != layer]
            att = attempt(trial)
            if att.drop_pp <= budget_pp:
                keep, best = trial, att
    return best, attempts, first_ranking
