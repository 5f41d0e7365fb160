"""Optimization recipes as registered objects, and the recipe chain (``--recipe prune:0.75,qat``).

Pure logic, no TensorFlow: a :class:`Recipe` parses and validates its own options into a :class:`Step`; the
:class:`Chain` checks the composition order ``separable → distill → prune → cluster → qat → convert → int4``.
What a recipe does at run time lives in its ``apply`` (which imports the training code lazily), so parsing a bad
``--recipe`` fails in milliseconds, before any model is loaded.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, ClassVar

from .errors import RecipeError

# the documented composition order; "convert" is the TFLite conversion every run ends with
ORDER = ("separable", "distill", "prune", "cluster", "qat", "convert", "int4")
# fewer fine-tuning steps than this make prune:S warn before training (Prune.check_steps, docs/optimize.md). Measured
# on the digits CNN, prune:0.75: 8 steps lost 9.1 pt of top-1, 24 steps 1.1 pt, 43 steps 0 pt
MIN_PRUNE_STEPS = 50


@dataclass(frozen=True)
class Step:
    """One parsed recipe: its registry name, the text it came from, and its validated parameters."""

    recipe: str
    spec: str
    params: dict[str, Any] = field(default_factory=dict)

    @property
    def rank(self) -> int:
        return ORDER.index(self.recipe)

    def to_dict(self) -> dict[str, Any]:
        return {"recipe": self.recipe, "spec": self.spec, "params": dict(self.params)}


class Recipe:
    name: ClassVar[str]
    usage: ClassVar[str]
    help: ClassVar[str]
    needs_labels: ClassVar[bool] = True  # fine-tunes on hard labels
    trains: ClassVar[bool] = True

    def parse(self, spec: str, args: list[str]) -> Step:
        if args:
            raise RecipeError(f"recipe {self.name} takes no options (got {spec!r})", hint=f"write {self.usage}")
        return Step(self.name, spec, {})

    def apply(self, run, step: Step, chain: "Chain"):
        """Transform ``run.model`` (a tf_keras model) or ``run.blob``; return a dict for the report."""
        raise NotImplementedError

    def check_steps(self, step: Step, steps: int, per_epoch: int) -> str | None:
        """A warning when ``steps`` fine-tuning steps (``per_epoch`` per epoch) are too few for this recipe."""
        return None


RECIPES: dict[str, Recipe] = {}


def register_recipe(cls):
    RECIPES[cls.name] = cls()
    return cls


def _float(text: str, what: str, spec: str, usage: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise RecipeError(f"{what} {text!r} in {spec!r} is not a number", hint=f"write {usage}") from None


def _int(text: str, what: str, spec: str, usage: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise RecipeError(f"{what} {text!r} in {spec!r} is not a whole number", hint=f"write {usage}") from None


def _keywords(spec: str, args: list[str], allowed: dict[str, str], usage: str) -> dict[str, str]:
    """``key=value`` options; ``allowed`` maps each key to its description."""
    out = {}
    for a in args:
        key, sep, value = a.partition("=")
        if not sep or key not in allowed:
            raise RecipeError(f"unknown option {a!r} in {spec!r}",
                              hint=f"write {usage} ({', '.join(f'{k}: {v}' for k, v in allowed.items())})")
        out[key] = value
    return out


@register_recipe
class Prune(Recipe):
    name = "prune"
    usage = "prune:S (0 < S < 1), prune:M:N (e.g. prune:2:4), optionally ending in :xnnpack"
    help = "magnitude pruning (polynomial schedule), M-by-N structured sparsity, or XNNPACK sparse inference"

    def parse(self, spec, args):
        xnnpack = bool(args) and args[-1] == "xnnpack"
        if xnnpack:
            args = args[:-1]
        if len(args) == 1:
            s = _float(args[0], "sparsity", spec, self.usage)
            if not 0.0 < s < 1.0:
                raise RecipeError(f"sparsity {args[0]} in {spec!r} is outside (0, 1)",
                                  hint="pass the fraction of weights to remove, e.g. prune:0.75")
            return Step(self.name, spec, {"kind": "magnitude", "sparsity": s, "xnnpack": xnnpack})
        if len(args) == 2:
            m = _int(args[0], "M", spec, self.usage)
            n = _int(args[1], "N", spec, self.usage)
            if not 0 < m < n:
                raise RecipeError(f"M-by-N sparsity needs 0 < M < N, got {m}:{n} in {spec!r}",
                                  hint="write prune:2:4 (2 zeros in every 4 consecutive weights)")
            return Step(self.name, spec, {"kind": "m_by_n", "m": m, "n": n, "sparsity": m / n,
                                          "xnnpack": xnnpack})
        raise RecipeError(f"cannot read {spec!r}", hint=f"write {self.usage}")

    def check_steps(self, step, steps, per_epoch):
        """Magnitude pruning raises sparsity from 0 to S over the first PRUNE_END of the steps: in a handful of
        steps the weights are cut faster than the rest can take over their work, and top-1 collapses."""
        if step.params["kind"] != "magnitude" or steps >= MIN_PRUNE_STEPS:
            return None
        epochs = -(-MIN_PRUNE_STEPS // per_epoch)
        return (f"{step.spec} fine-tunes only {steps} steps ({per_epoch} per epoch): the schedule reaches sparsity "
                f"{step.params['sparsity']:g} within them, too fast for the model to recover (expect a large top-1 "
                f"drop); pass --epochs {epochs} or more (at least {MIN_PRUNE_STEPS} steps), more data, or a smaller "
                f"--batch-size")

    def apply(self, run, step, chain):
        from .training import apply_prune

        return apply_prune(run, step)


@register_recipe
class Cluster(Recipe):
    name = "cluster"
    usage = "cluster:N (N >= 2 centroids per layer)"
    help = "weight clustering to N centroids per layer; sparsity-preserving after prune"

    def parse(self, spec, args):
        if len(args) != 1:
            raise RecipeError(f"cannot read {spec!r}", hint=f"write {self.usage}")
        n = _int(args[0], "cluster count", spec, self.usage)
        if n < 2:
            raise RecipeError(f"cluster count {n} in {spec!r} is below 2", hint="pass 2 or more, e.g. cluster:16")
        return Step(self.name, spec, {"clusters": n})

    def apply(self, run, step, chain):
        from .training import apply_cluster

        return apply_cluster(run, step, preserve_sparsity=chain.has("prune"))


@register_recipe
class Qat(Recipe):
    name = "qat"
    usage = "qat"
    help = "quantization-aware fine-tuning, then full int8; PQAT/CQAT/PCQAT after prune/cluster"

    def apply(self, run, step, chain):
        from .training import apply_qat

        return apply_qat(run, step, scheme=chain.qat_scheme())


@register_recipe
class Distill(Recipe):
    name = "distill"
    usage = "distill[:t=T][:alpha=A] (temperature T > 0, hard-label weight 0 <= A <= 1)"
    help = "knowledge distillation from --teacher (default: the input model) into --student"
    needs_labels = False
    DEFAULTS = {"temperature": 4.0, "alpha": 0.1}

    def parse(self, spec, args):
        kw = _keywords(spec, args, {"t": "temperature", "alpha": "hard-label weight"}, self.usage)
        t = _float(kw.get("t", str(self.DEFAULTS["temperature"])), "temperature", spec, self.usage)
        alpha = _float(kw.get("alpha", str(self.DEFAULTS["alpha"])), "alpha", spec, self.usage)
        if not (math.isfinite(t) and t > 0):  # nan or inf would make every soft target nan or uniform
            raise RecipeError(f"temperature {t} in {spec!r} must be above 0 and finite", hint="e.g. distill:t=4")
        if not 0.0 <= alpha <= 1.0:
            raise RecipeError(f"alpha {alpha} in {spec!r} is outside [0, 1]", hint="e.g. distill:alpha=0.1")
        return Step(self.name, spec, {"temperature": t, "alpha": alpha})

    def apply(self, run, step, chain):
        from .stages import apply_distill

        return apply_distill(run, step)


@register_recipe
class Separable(Recipe):
    name = "separable"
    usage = ("separable[:min_in=C][:max_cost=R][:head] (rewrite Conv2D with >= C input channels whose pair costs "
             "<= R; head: also pool 2x2 before a Flatten -> Dense head)")
    help = "automatic student: eligible Conv2D -> DepthwiseConv2D + 1x1 Conv2D, then distilled from the original"
    needs_labels = False

    def parse(self, spec, args):
        from .separable import SeparableRule

        rule: dict[str, Any] = {}
        if "head" in args:
            rule["head"] = True
            args = [a for a in args if a != "head"]
        kw = _keywords(spec, args, {"min_in": "minimum input channels", "max_cost": "largest MAC ratio"}, self.usage)
        if "min_in" in kw:
            rule["min_in_channels"] = _int(kw["min_in"], "min_in", spec, self.usage)
        if "max_cost" in kw:
            rule["max_cost_ratio"] = _float(kw["max_cost"], "max_cost", spec, self.usage)
        SeparableRule(**rule)  # validates
        return Step(self.name, spec, rule)

    def apply(self, run, step, chain):
        from .stages import apply_separable

        return apply_separable(run, step, distill_after=not chain.has("distill"))


@register_recipe
class Int4(Recipe):
    name = "int4"
    usage = "int4[:fc|conv|fc+conv][:block=B][:layers=REGEX][:act=dynamic|int8][:others=int8|float]"
    help = "int4 weights (ai-edge-quantizer) on the converted float model; other weights int8 (or float)"
    needs_labels = False
    trains = False

    def parse(self, spec, args):
        from .int4 import Int4Options

        return Step(self.name, spec, Int4Options.parse(":".join(args)).to_dict())

    def apply(self, run, step, chain):
        from .stages import apply_int4

        return apply_int4(run, step)


@dataclass
class Chain:
    steps: list[Step]

    def has(self, name: str) -> bool:
        return any(s.recipe == name for s in self.steps)

    def get(self, name: str) -> Step | None:
        return next((s for s in self.steps if s.recipe == name), None)

    @property
    def names(self) -> list[str]:
        return [s.recipe for s in self.steps]

    @property
    def needs_labels(self) -> bool:
        return any(RECIPES[s.recipe].needs_labels for s in self.steps)

    @property
    def trains(self) -> bool:
        return any(RECIPES[s.recipe].trains for s in self.steps)

    @property
    def xnnpack(self) -> bool:
        p = self.get("prune")
        return bool(p and p.params.get("xnnpack"))

    @property
    def per_tensor(self) -> bool:
        """Cluster without qat converts with one weight scale per tensor: per-channel int8 would map a layer's N
        shared centroids to up to N different values in every output channel (up to N x channels in the tensor),
        and the gzip saving clustering exists for would be lost. After qat, tfmot's CQAT scheme decides."""
        return self.has("cluster") and not self.has("qat")

    def qat_scheme(self) -> str:
        """tfmot's collaborative scheme for qat: plain, PQAT, CQAT or PCQAT."""
        if self.has("prune") and self.has("cluster"):
            return "pcqat"
        if self.has("cluster"):
            return "cqat"
        if self.has("prune"):
            return "pqat"
        return "qat"

    def to_list(self) -> list[dict[str, Any]]:
        return [s.to_dict() for s in self.steps]


def parse_chain(text: str) -> Chain:
    """``"prune:0.75,cluster:16,qat"`` → a validated :class:`Chain`. Raises RecipeError."""
    items = [t.strip() for t in (text or "").split(",")]
    if not text or not any(items):
        raise RecipeError("no recipe given", hint=f"pass --recipe with one or more of {', '.join(RECIPES)}")
    steps = []
    for item in items:
        if not item:
            raise RecipeError(f"empty recipe in {text!r}", hint="separate recipes with single commas")
        name, *args = item.split(":")
        recipe = RECIPES.get(name)
        if recipe is None:
            raise RecipeError(f"unknown recipe {name!r}", hint=f"choose from {', '.join(RECIPES)}")
        steps.append(recipe.parse(item, args))
    seen: dict[str, Step] = {}
    for prev, step in zip([None, *steps], steps):
        if step.recipe in seen:
            raise RecipeError(f"recipe {step.recipe} appears twice in {text!r}", hint="give each recipe once")
        seen[step.recipe] = step
        if prev is not None and step.rank < prev.rank:
            raise RecipeError(f"impossible order: {prev.recipe} before {step.recipe}",
                              hint=f"recipes compose in the order {' -> '.join(ORDER)}")
    chain = Chain(steps)
    if chain.has("int4") and chain.has("qat"):
        raise RecipeError("int4 re-quantizes the weights of a float model; after qat the model is already full int8",
                          hint="use qat or int4, not both")
    return chain
