"""The recipes built on the standalone optimization modules: distill, separable (student + distillation), int4."""

from __future__ import annotations

from typing import Any

from .fit import progress_callback, steps_per_epoch
from .recipes import RECIPES, Step

DEFAULT_LR = {"distill": 1e-3}


def apply_distill(run, step: Step) -> dict[str, Any]:
    from .distill import distill

    cfg = run.fit_config("distill", DEFAULT_LR["distill"])
    bars = progress_callback(cfg.progress, step.spec, cfg.epochs, steps_per_epoch(len(run.train_x), cfg.batch_size))
    run.model, info = distill(run.teacher, run.model, run.train_x, run.train_y,
                              temperature=step.params["temperature"], alpha=step.params["alpha"], epochs=cfg.epochs,
                              batch_size=cfg.batch_size, lr=cfg.lr, seed=cfg.seed, strategy=cfg.strategy,
                              callbacks=[bars], val=run.val)
    return info


def apply_separable(run, step: Step, *, distill_after: bool) -> dict[str, Any]:
    from .separable import SeparableRule, make_separable

    student, rewrite = make_separable(run.model, SeparableRule(**step.params), x=run.train_x)
    run.teacher = run.teacher or run.model
    run.model = student
    info: dict[str, Any] = {"rewrite": rewrite.to_dict()}
    if distill_after:  # separable alone: distil with the default temperature and alpha
        info["distill"] = apply_distill(run, RECIPES["distill"].parse("distill", []))
    return info


def apply_int4(run, step: Step) -> dict[str, Any]:
    from .int4 import Int4Options, quantize_int4

    p = step.params
    options = Int4Options(ops=tuple(p["ops"]), layers=p["layers"], block_size=p["block_size"],
                          activations=p["activations"], others=p["others"])
    before = len(run.blob)
    result = quantize_int4(run.blob, options, calibration=run.calibration_arrays())
    run.blob = result.model
    return {"bytes_before": before, "bytes_after": len(result.model), **result.to_dict()}
