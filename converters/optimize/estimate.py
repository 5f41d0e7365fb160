"""Cheap analytic estimates of a candidate's size, from the weight count and the dtype. Pure logic.

Both estimates are **lower bounds**, so that a candidate is pruned from the search only when it cannot meet a size
budget whatever training does:

* ``bytes``: every weight kernel at the bytes of the dtype the candidate stores it in (4 fp32, 2 fp16, 1 int8 —
  also for dynamic and int16x8 — and 0.5 for int4 kernels), plus the biases (4 bytes; 2 in fp16, 8 in int16x8).
  The flatbuffer's graph, per-channel scales and zero points come on top (a few KB on a small model).
* ``gzip_bytes``: the nonzero weights at ``min(dtype bits, log2(distinct values))`` bits each (distinct values:
  2^bits, or the cluster count, plus the zero that pruning keeps), times :data:`GZIP_FLOOR`. The positions of the
  zeros and everything else that gzip must encode are left out.

The separable student's weight count comes from the recipe's own rule (:class:`~.separable.SeparableRule`), so
the estimate rewrites exactly the Conv2D layers the recipe would.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from .recipes import Chain, parse_chain
from .separable import SeparableRule

# the most gzip -9 was assumed to compress quantized weights beyond their value entropy (a safety margin: the
# digits CNN's int8 weights compress to 0.88x, pruned or clustered ones to 0.5-0.8x of their entropy bound)
GZIP_FLOOR = 0.5
WEIGHT_BITS = {"fp32": 32, "fp16": 16, "dynamic": 8, "int8": 8, "int16x8": 8}
BIAS_BYTES = {"fp32": 4, "fp16": 2, "dynamic": 4, "int8": 4, "int16x8": 8}
# the TFLite op each Keras weight layer becomes (int4 recipes name these)
TFLITE_OP = {"Conv2D": "CONV_2D", "Dense": "FULLY_CONNECTED", "DepthwiseConv2D": "DEPTHWISE_CONV_2D"}


@dataclass(frozen=True)
class Layer:
    """A weight layer of the source model, as far as the estimates need it (read once from the Keras model)."""

    name: str
    cls: str  # Conv2D, Dense, DepthwiseConv2D, ...
    kernel: tuple[int, ...]  # the Keras kernel shape (kh, kw, cin, cout) / (in, out)
    bias: int = 0
    config: dict[str, Any] | None = None  # Conv2D: kernel_size, filters, groups, data_format

    @property
    def weights(self) -> int:
        return math.prod(self.kernel) if self.kernel else 0

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "cls": self.cls, "kernel": list(self.kernel), "bias": self.bias,
                "config": self.config}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Layer":
        return cls(d["name"], d["cls"], tuple(d["kernel"]), int(d.get("bias", 0)), d.get("config"))


@dataclass(frozen=True)
class Estimate:
    bytes: int
    gzip_bytes: int
    weights: int

    def to_dict(self) -> dict[str, int]:
        return {"bytes": self.bytes, "gzip_bytes": self.gzip_bytes, "weights": self.weights}


def _separable(layers: list[Layer], params: dict[str, Any]) -> list[Layer]:
    """The layers after the separable recipe: each Conv2D its rule rewrites becomes a depthwise + 1x1 pair."""
    rule = SeparableRule(**params)
    out = []
    for la in layers:
        if la.cls == "Conv2D" and la.config is not None and len(la.kernel) == 4 \
                and rule.decide(la.config, int(la.kernel[2])) is None:
            kh, kw, cin, cout = la.kernel
            out.append(Layer(la.name + "/depthwise", "DepthwiseConv2D", (kh, kw, cin, 1), 0))
            out.append(Layer(la.name + "/pointwise", "Conv2D", (1, 1, cin, cout), la.bias))
        else:
            out.append(la)
    return out


def estimate(layers: list[Layer], mode: str, recipe: str | None = None) -> Estimate:
    """Lower bounds of the ``.tflite`` bytes and gzip bytes of ``layers`` converted in ``mode`` after ``recipe``."""
    chain: Chain = parse_chain(recipe) if recipe else Chain([])
    params = {s.recipe: s.params for s in chain.steps}
    if "separable" in params:
        layers = _separable(layers, params["separable"])
    if "qat" in params:
        mode = "int8"
    int4_ops: tuple[str, ...] = ()
    if "int4" in params:
        p = params["int4"]
        # int4 on the float model; the other weights int8 (others=int8) or float, biases float32
        mode = "int8" if p.get("others", "int8") == "int8" else "fp32"
        # a layers regex may match every op of these kinds: a lower bound assumes it does
        int4_ops = tuple(p["ops"])
    sparsity = float(params["prune"]["sparsity"]) if "prune" in params else 0.0
    clusters = params["cluster"]["clusters"] if "cluster" in params else None
    total_bytes = 0.0
    gzip_bits = 0.0
    weights = 0
    for la in layers:
        bits = 4 if TFLITE_OP.get(la.cls) in int4_ops else WEIGHT_BITS[mode]
        n = la.weights
        weights += n
        total_bytes += n * bits / 8 + la.bias * (4 if int4_ops else BIAS_BYTES[mode])
        levels = 2 ** bits
        if clusters is not None:
            levels = min(levels, clusters + (1 if sparsity else 0))
        value_bits = min(bits, math.log2(max(levels, 2)))
        gzip_bits += n * (1.0 - sparsity) * value_bits * GZIP_FLOOR
    return Estimate(int(total_bytes), int(gzip_bits / 8), weights)
