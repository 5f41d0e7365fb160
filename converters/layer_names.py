"""Which Keras layer a TensorFlow node came from (pure).

Inside a traced function TensorFlow makes every name scope unique by suffixing ``_1``, ``_2`` …, and Keras 3 asks
for each layer's scope twice, so layer ``conv2d`` emits nodes under ``<model>_1/conv2d_1/`` while a layer really
named ``conv2d_1`` ends up under ``conv2d_1_2/``. Replaying that uniquification over the layers in call order maps a
scope back to its layer; which replay (one or two requests per layer, i.e. tf_keras or Keras 3) is chosen by the
scopes the graph actually has.
"""

from __future__ import annotations


def _unique(name: str, used: dict[str, int]) -> str:
    """TensorFlow's Graph.unique_name: ``name`` if free, else ``name_<n>`` with the first free n."""
    key = name.lower()
    if key not in used:
        used[key] = 1
        return name
    i = used[key]
    while f"{key}_{i}" in used:
        i += 1
    used[key] = i + 1
    used[f"{key}_{i}"] = 1
    return f"{name}_{i}"


def scope_map(layer_names: list[str], requests: int) -> dict[str, str]:
    used: dict[str, int] = {}
    out = {}
    for name in layer_names:
        scope = name
        for _ in range(requests):
            scope = _unique(name, used)
        out[scope] = name
    return out


def _scope(node: str) -> str | None:
    parts = node.split(";")[0].split("/")
    return parts[1] if len(parts) >= 3 else None


def keras_layers(nodes: list[str], layer_names: list[str]) -> dict[str, str]:
    """node -> Keras layer name, for the nodes whose scope can be traced back to a layer."""
    scopes = {s for s in map(_scope, nodes) if s}
    best: dict[str, str] = {}
    for requests in (2, 1):
        cand = scope_map(layer_names, requests)
        if len(scopes & cand.keys()) > len(scopes & best.keys()):
            best = cand
    return {n: best[s] for n in nodes if (s := _scope(n)) in best}


def describe(node: str, mapping: dict[str, str]) -> str:
    """``conv2d (TF node digits_cnn_1/conv2d_1/Relu)``, or the node alone when its layer is unknown."""
    short = node.split(";")[0]
    layer = mapping.get(node)
    return f"{layer} (TF node {short})" if layer else short
