"""The tfmot recipes: prune (magnitude, M-by-N, XNNPACK), cluster (sparsity-preserving after prune), qat (and its
collaborative forms PQAT / CQAT / PCQAT). Each fine-tunes ``run.model`` (a tf_keras model) under the run's
strategy and leaves the stripped (or, for qat, quantize-wrapped) model in ``run.model``."""

from __future__ import annotations

from typing import Any

from .errors import RecipeError, TrainingError
from .fit import fit, steps_per_epoch
from .keras2 import tfmot
from .recipes import Step

DEFAULT_LR = {"prune": 5e-4, "cluster": 1e-4, "qat": 1e-4}
PRUNE_END = 0.8  # reach the final sparsity after this fraction of the fine-tuning steps, then train at it
PRUNE_UPDATES = 10  # mask updates on the way there


def _tfmot_call(what: str, fn, *args, **kw):
    """tfmot refuses unsupported layers and models with ValueError/TypeError: make that one line, before training."""
    try:
        return fn(*args, **kw)
    except (ValueError, TypeError, NotImplementedError) as exc:
        first = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
        raise RecipeError(f"{what}: tfmot refused the model: {first}",
                          hint="these recipes support Sequential/Functional models of standard Keras layers") from exc


def pruning_schedule(sk, step: Step, total_steps: int):
    freq = max(1, int(total_steps * PRUNE_END) // PRUNE_UPDATES)
    end = max(freq, freq * (int(total_steps * PRUNE_END) // freq))
    p = step.params
    if p["kind"] == "magnitude":
        return sk.PolynomialDecay(initial_sparsity=0.0, final_sparsity=p["sparsity"], begin_step=0, end_step=end,
                                  frequency=freq), {"schedule": "PolynomialDecay", "end_step": end, "frequency": freq}
    return sk.ConstantSparsity(p["sparsity"], begin_step=0, frequency=freq), {
        "schedule": "ConstantSparsity", "frequency": freq, "m_by_n": [p["m"], p["n"]]}


def apply_prune(run, step: Step) -> dict[str, Any]:
    sk = tfmot().sparsity.keras
    cfg = run.fit_config("prune", DEFAULT_LR["prune"])
    total = steps_per_epoch(len(run.train_x), cfg.batch_size) * cfg.epochs
    schedule, info = pruning_schedule(sk, step, total)
    kw: dict[str, Any] = {"pruning_schedule": schedule}
    if step.params["kind"] == "m_by_n":
        kw["sparsity_m_by_n"] = (step.params["m"], step.params["n"])
    if step.params["xnnpack"]:
        from . import xnnpack_padding
        from .keras2 import tf_keras

        kw["pruning_policy"] = policy = sk.PruneForLatencyOnXNNPack()
        run.model, rewritten = xnnpack_padding.rewrite(run.model, tf_keras())
        info.update(policy="PruneForLatencyOnXNNPack", padding_rewritten=rewritten)
        try:
            policy.ensure_model_supports_pruning(run.model)
        except ValueError as exc:
            raise xnnpack_padding.refused_error(step.spec, policy, run.model, exc) from exc
    with cfg.strategy.scope():
        pruned = _tfmot_call(f"recipe {step.spec}", sk.prune_low_magnitude, run.model, **kw)
    history = fit(pruned, run.train_x, run.train_y, cfg, step.spec, val=run.val, callbacks=[sk.UpdatePruningStep()])
    run.model = sk.strip_pruning(pruned)
    return {"tfmot": "prune_low_magnitude + strip_pruning", **info, "steps": total, "lr": cfg.lr,
            "history": history}


def apply_cluster(run, step: Step, *, preserve_sparsity: bool) -> dict[str, Any]:
    ck = tfmot().clustering.keras
    cfg = run.fit_config("cluster", DEFAULT_LR["cluster"])
    with cfg.strategy.scope():
        clustered = _tfmot_call(f"recipe {step.spec}", ck.cluster_weights, run.model,
                                number_of_clusters=step.params["clusters"],
                                cluster_centroids_init=ck.CentroidInitialization.KMEANS_PLUS_PLUS,
                                preserve_sparsity=preserve_sparsity)
    history = fit(clustered, run.train_x, run.train_y, cfg, step.spec, val=run.val)
    run.model = ck.strip_clustering(clustered)
    return {"tfmot": "cluster_weights + strip_clustering", "preserve_sparsity": preserve_sparsity,
            "centroids_init": "KMEANS_PLUS_PLUS", "lr": cfg.lr, "history": history}


SCHEMES = {
    "qat": ("quantize_model", None),
    "pqat": ("quantize_apply", "Default8BitPrunePreserveQuantizeScheme"),
    "cqat": ("quantize_apply", "Default8BitClusterPreserveQuantizeScheme"),
    "pcqat": ("quantize_apply", "Default8BitClusterPreserveQuantizeScheme(preserve_sparsity=True)"),
}


def _quantized(mod, model, scheme: str):
    qk = mod.quantization.keras
    if scheme == "qat":
        return qk.quantize_model(model)
    combine = mod.experimental.combine
    if scheme == "pqat":
        chosen = combine.Default8BitPrunePreserveQuantizeScheme()
    else:
        chosen = combine.Default8BitClusterPreserveQuantizeScheme(preserve_sparsity=scheme == "pcqat")
    return qk.quantize_apply(qk.quantize_annotate_model(model), chosen)


def apply_qat(run, step: Step, *, scheme: str) -> dict[str, Any]:
    mod = tfmot()
    cfg = run.fit_config("qat", DEFAULT_LR["qat"])
    with cfg.strategy.scope():
        q = _tfmot_call(f"recipe {step.spec}", _quantized, mod, run.model, scheme)
    history = fit(q, run.train_x, run.train_y, cfg, f"{step.spec} ({scheme})", val=run.val)
    if not history:
        raise TrainingError("qat: no epoch ran")
    run.model = q
    api, extra = SCHEMES[scheme]
    return {"tfmot": api, "scheme": scheme, **({"quantize_scheme": extra} if extra else {}), "lr": cfg.lr,
            "history": history}
