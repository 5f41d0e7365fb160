"""Stride-2 padding in the form tfmot's ``PruneForLatencyOnXNNPack`` accepts, and a one-line error naming the layer
it refuses.

XNNPACK's sparse subgraph takes a stride-2 3x3 (5x5) convolution only as ``ZeroPadding2D(1)`` (``(2)``) followed by
a ``'valid'`` convolution. ``keras.applications`` models are built otherwise: MobileNetV2's stem is a ``'same'``
stride-2 ``Conv2D``, and its stride-2 depthwise blocks pad ``((0, 1), (0, 1))`` at even sizes such as 96 or 224.
:func:`rewrite` rebuilds a Functional model with

* ``'same'`` stride-2 KxK ``Conv2D``/``DepthwiseConv2D`` → ``ZeroPadding2D(K // 2)`` + ``'valid'`` (always the same
  output size: ``ceil(H / 2)``);
* an asymmetric ``ZeroPadding2D`` feeding a ``'valid'`` stride-2 KxK convolution → symmetric ``K // 2`` padding,
  only where the output size stays the same (even input sizes);

and copies every weight by layer name. Parameter count and every output shape are unchanged. The function is not
identical: at even sizes a stride-2 window now starts one pixel earlier (a symmetric pad samples rows -1, 1, 3, …
where ``'same'`` sampled 0, 2, 4, …), so the pruning fine-tune that follows also adapts to the shift; the report
lists the layers rewritten, and its float and int8 top-1 figures are those of the rewritten, pruned model.
"""

from __future__ import annotations

import copy
from typing import Any

from .errors import RecipeError

CONVS = ("Conv2D", "DepthwiseConv2D")


def _pair(v) -> tuple[int, int]:
    return (int(v), int(v)) if isinstance(v, int) else (int(v[0]), int(v[1]))


def _pads(v) -> tuple[tuple[int, int], tuple[int, int]]:
    if isinstance(v, int):
        return ((v, v), (v, v))
    a, b = v
    return (_pair(a), _pair(b))


def _valid_out(size: int, before: int, after: int, k: int) -> int:
    return (size + before + after - k) // 2 + 1


def _stride2_conv(entry: dict) -> int | None:
    """The kernel size K of a square, undilated, stride-2 KxK (3 or 5) convolution entry, else None."""
    c = entry["config"]
    if entry["class_name"] not in CONVS or _pair(c.get("strides", 1)) != (2, 2):
        return None
    k = _pair(c["kernel_size"])
    if k[0] != k[1] or k[0] not in (3, 5) or _pair(c.get("dilation_rate", 1)) != (1, 1):
        return None
    return k[0]


def plan(config: dict, input_hw: dict[str, tuple[int, int]]) -> tuple[dict, list[dict[str, Any]]]:
    """Pure: the rewritten Functional config and the list of changes. ``input_hw`` maps a layer name to the height
    and width of its input (from the built model)."""
    cfg = copy.deepcopy(config)
    layers = cfg["layers"]
    consumers: dict[str, list[dict]] = {}
    for e in layers:
        for node in e.get("inbound_nodes") or []:
            for ref in node:
                consumers.setdefault(ref[0], []).append(e)
    changes: list[dict[str, Any]] = []
    out: list[dict] = []
    for e in layers:
        k = _stride2_conv(e)
        nodes = e.get("inbound_nodes") or []
        if k is not None and e["config"]["padding"].lower() == "same" and len(nodes) == 1 and len(nodes[0]) == 1:
            p = k // 2
            name = f"{e['name']}_xnnpack_pad"
            out.append({"module": "keras.layers", "class_name": "ZeroPadding2D", "registered_name": None,
                        "name": name, "config": {"name": name, "trainable": True, "dtype": e["config"].get("dtype"),
                                                 "padding": ((p, p), (p, p)), "data_format": "channels_last"},
                        "inbound_nodes": nodes})
            e["config"]["padding"] = "valid"
            e["inbound_nodes"] = [[[name, 0, 0, {}]]]
            changes.append({"layer": e["name"], "class": e["class_name"], "from": "same, stride 2",
                            "to": f"ZeroPadding2D({p}) + valid"})
        elif e["class_name"] == "ZeroPadding2D" and e["name"] in input_hw:
            users = consumers.get(e["name"], [])
            kernel = _stride2_conv(users[0]) if len(users) == 1 else None
            if kernel is not None and users[0]["config"]["padding"] == "valid":
                k = kernel
                p = k // 2
                (t, b), (left, r) = _pads(e["config"]["padding"])
                h, w = input_hw[e["name"]]
                same_size = (_valid_out(h, t, b, k) == _valid_out(h, p, p, k)
                             and _valid_out(w, left, r, k) == _valid_out(w, p, p, k))
                if ((t, b), (left, r)) != ((p, p), (p, p)) and same_size:
                    e["config"]["padding"] = ((p, p), (p, p))
                    changes.append({"layer": e["name"], "class": "ZeroPadding2D",
                                    "from": f"{((t, b), (left, r))}", "to": f"{((p, p), (p, p))}",
                                    "feeds": users[0]["name"]})
        out.append(e)
    cfg["layers"] = out
    return cfg, changes


def rewrite(model, tf_keras) -> tuple[Any, list[dict[str, Any]]]:
    """A rebuilt copy of a Functional tf_keras model with XNNPACK-ready stride-2 padding, and the changes made.
    Sequential models and models with nothing to change come back as they are."""
    if isinstance(model, tf_keras.Sequential) or "input_layers" not in (cfg := model.get_config()):
        return model, []
    hw = {}
    for layer in model.layers:
        if type(layer).__name__ == "ZeroPadding2D":
            shape = layer.input_shape
            if isinstance(shape, tuple) and len(shape) == 4 and None not in shape[1:3]:
                hw[layer.name] = (int(shape[1]), int(shape[2]))
    new_cfg, changes = plan(cfg, hw)
    if not changes:
        return model, []
    rebuilt = tf_keras.Model.from_config(new_cfg)
    for layer in rebuilt.layers:
        try:
            src = model.get_layer(layer.name)
        except ValueError:
            continue  # an inserted padding layer: no weights
        layer.set_weights(src.get_weights())
    return rebuilt, changes


def first_refused(policy, model):
    """The first layer inside XNNPACK's sparse subgraph that the policy refuses (tfmot's own error names only its
    class), or None. Walks the graph with the policy's own start/end/support tests."""
    try:
        starts = policy._lookup_layers({i._keras_history.layer for i in model.inputs},
                                       policy._start_layer_stop_fn, policy._get_consumers)
        ends = policy._lookup_layers({o._keras_history.layer for o in model.outputs},
                                     policy._end_layer_stop_fn, policy._get_producers)
        bad: list = []

        def visit(layer):
            if layer in ends:
                return True
            if not policy._check_layer_support(layer):
                bad.append(layer)
                return True
            return False

        policy._lookup_layers(sum([policy._get_consumers(s) for s in starts], []), visit, policy._get_consumers)
        return bad[0] if bad else None
    except Exception:  # noqa: BLE001 - private tfmot helpers: without them the policy's own message stands
        return None


def describe(layer) -> str:
    c = layer.get_config()
    parts = [f"{k}={c[k]}" for k in ("kernel_size", "strides", "padding") if k in c]
    return f"{layer.name} ({type(layer).__name__}{', ' + ', '.join(parts) if parts else ''})"


def refused_error(spec: str, policy, model, exc: Exception) -> RecipeError:
    """One line for a model the XNNPACK policy refuses, naming the layer when it is one layer's fault."""
    first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
    layer = first_refused(policy, model)
    if layer is not None:
        return RecipeError(
            f"recipe {spec}: layer {describe(layer)} is not supported by XNNPACK sparse inference",
            hint="between the stride-2 3x3 stem and GlobalAveragePooling2D XNNPACK runs sparse only 1x1 Conv2D, "
                 "3x3/5x5 DepthwiseConv2D, BatchNormalization, ReLU/ReLU6, Add and ZeroPadding2D: replace that "
                 "layer, or drop :xnnpack")
    return RecipeError(f"recipe {spec}: tfmot's XNNPACK pruning policy refused the model: {first}",
                       hint="XNNPACK sparse inference needs a ZeroPadding2D(1) + valid stride-2 3x3 Conv2D stem on the "
                            "3-channel input and a GlobalAveragePooling2D before the head; or drop :xnnpack")
