"""The search space of ``edgekit optimize --budget``: candidates built from the registered recipes and the
converter's modes. Pure logic.

A :class:`Candidate` is either a plain conversion (``convert`` in a mode, optionally with the converter's float
fallback under an accuracy budget) or a recipe chain of :mod:`.recipes` run by :func:`converters.optimize.optimize`.
The chains are parsed by :func:`~.recipes.parse_chain`, so the space holds only chains the recipes accept; a chain
runs with the runner's default mode (its :func:`~.runner.resolve_plan`: int8, qat int8, int4 from fp32).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .budget import Budget
from .recipes import parse_chain

# conversion modes tried as plain conversions (fp32 is the reference, never smaller or more accurate than fp16)
MODES = ("int8", "dynamic", "fp16", "int16x8")
SPARSITIES = (0.5, 0.75, 0.9)
CLUSTERS = (8, 16, 32)
INT4_OPS = ("fc", "conv", "fc+conv")
# combinations of the above that the recipes compose into (order separable → prune → cluster → qat → int4)
CHAINS = (
    "prune:0.5,cluster:16", "prune:0.75,cluster:16", "qat", "prune:0.75,qat", "prune:0.5,cluster:16,qat",
    "separable", "separable,prune:0.5", "separable,int4:fc", "separable,prune:0.5,qat",
)


@dataclass(frozen=True)
class Candidate:
    """One point of the space. ``recipe`` None is a plain conversion in ``mode``; ``fallback_pp`` is the float
    fallback's accuracy budget (int8 conversions only)."""

    recipe: str | None = None
    mode: str | None = None
    fallback_pp: float | None = None

    @property
    def kind(self) -> str:
        return "convert" if self.recipe is None else "optimize"

    @property
    def trains(self) -> bool:
        return self.recipe is not None and parse_chain(self.recipe).trains

    @property
    def label(self) -> str:
        if self.recipe is None:
            return f"convert {self.mode}" + (f" fallback<={self.fallback_pp:g}pp" if self.fallback_pp is not None
                                             else "")
        return self.recipe + (f" ({self.mode})" if self.mode else "")

    @property
    def conversion_mode(self) -> str:
        """The mode the estimate and the report use: the chain's (qat int8, int4 its own) or ``mode`` or int8."""
        if self.recipe is not None:
            chain = parse_chain(self.recipe)
            if chain.has("qat"):
                return "int8"
        return self.mode or "int8"

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "recipe": self.recipe, "mode": self.mode, "fallback_pp": self.fallback_pp,
                "label": self.label}


def build_space(budget: Budget, *, labels: bool = True) -> list[Candidate]:
    """Every candidate, cheapest first: plain conversions, int4 (no training), then the fine-tuning recipes.

    The float fallback is a candidate only under an accuracy budget (its own budget); without labels in the
    training data only the recipes that learn from the teacher (separable) fine-tune."""
    out = [Candidate(mode=m) for m in MODES]
    if budget.accuracy_drop is not None:
        out.append(Candidate(mode="int8", fallback_pp=budget.accuracy_drop))
    out += [Candidate(recipe=f"int4:{ops}") for ops in INT4_OPS]
    chains = [f"prune:{s}" for s in SPARSITIES] + [f"cluster:{n}" for n in CLUSTERS] + list(CHAINS)
    for text in chains:
        chain = parse_chain(text)  # the space holds only what the recipes accept
        if chain.needs_labels and not labels:
            continue
        out.append(Candidate(recipe=text))
    return out
