"""The recipes built on the standalone optimization modules: distill, separable (student + distillation), int4."""

from __future__ import annotations

from typing import Any

from .recipes import RECIPES, Step

DEFAULT_LR = {"distill": 1e-3}


def apply_distill(run, step: Step) -> dict[str, Any]:
    from .distill import distill

    cfg = run.fit_config("distill", DEFAULT_LR["distill"])
    out = distill(run.teacher, run.model, run.train_x, run.train_y, temperature=step.params["temperature"],
                  alpha=step.params["alpha"], epochs=cfg.epochs, batch_size=cfg.batch_size, lr=cfg.lr, seed=cfg.seed,
                  strategy=cfg.strategy)
    model, info = out if isinstance(out, tuple) else (out, {})
    run.model = model
    return {"temperature": step.params["temperature"], "alpha": step.params["alpha"], "lr": cfg.lr,
            "labels": run.train_y is not None, **(info or {})}


def apply_separable(run, step: Step, *, distill_after: bool) -> dict[str, Any]:
    from .separable import make_separable_student

    student, rewrite = make_separable_student(run.model)
    run.teacher = run.teacher or run.model
    run.model = student
    info: dict[str, Any] = {"rewrite": rewrite}
    if distill_after:
        d = RECIPES["distill"].parse("distill", [])
        info["distill"] = apply_distill(run, d)
    return info


def apply_int4(run, step: Step) -> dict[str, Any]:
    from .int4 import quantize_weights_int4

    before = len(run.blob)
    out = quantize_weights_int4(run.blob, ops=tuple(step.params["ops"]), blockwise=step.params["blockwise"])
    blob, info = out if isinstance(out, tuple) else (out, {})
    run.blob = blob
    return {"ops": step.params["ops"], "blockwise": step.params["blockwise"], "bytes_before": before,
            "bytes_after": len(blob), **(info if isinstance(info, dict) else {})}
