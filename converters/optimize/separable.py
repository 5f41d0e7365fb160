"""An automatic depthwise-separable student: eligible ``Conv2D`` layers become ``DepthwiseConv2D`` + 1x1 ``Conv2D``.

The rule (:class:`SeparableRule`): a ``Conv2D`` is rewritten when

* its kernel has more than one tap (``kh * kw > 1``), it has ``groups == 1`` and is ``channels_last``;
* it has at least ``min_in_channels`` (default 8) input channels — below that the depthwise stage has too few
  channels to carry the layer (the classic case is the first convolution on a 1- or 3-channel image, which
  MobileNets also keep dense);
* it pays: the separable pair costs at most ``max_cost_ratio`` (default 0.5) of the original's MACs. Per output
  pixel the pair costs ``kh*kw*Cin + Cin*Cout`` against ``kh*kw*Cin*Cout``, i.e. ``1/Cout + 1/(kh*kw)``.

The depthwise layer takes the original's kernel size, strides, padding and dilation (no bias, linear); the 1x1
layer takes its filters, bias and fused activation and keeps its name's meaning (``<name>_pw``), so a following
BatchNormalization and activation layer stay where they were, with their weights. The pair is initialised from the
original kernel by the best rank-1 (SVD) factorisation of each input channel's ``kh*kw x Cout`` slice, so the
student starts close to the teacher before distillation. Every other layer keeps its weights; nested models are
rewritten inside. The student is a tf_keras model (Keras 3 models are bridged first).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

import numpy as np



@dataclass(frozen=True)
class SeparableRule:
    min_in_channels: int = 8
    max_cost_ratio: float = 0.5
    head: bool = False  # also pool 2x2 before every Flatten -> Dense head (see _head_entries)

    def __post_init__(self):
        from .errors import RecipeError

        if self.min_in_channels < 1:
            raise RecipeError(f"separable min_in={self.min_in_channels} must be at least 1",
                              hint="e.g. separable:min_in=8 (input channels a Conv2D needs to be rewritten)")
        if not 0 < self.max_cost_ratio <= 1:
            raise RecipeError(f"separable max_cost={self.max_cost_ratio:g} must be in (0, 1]",
                              hint="e.g. separable:max_cost=0.5 (the largest MAC ratio of the separable pair)")

    def decide(self, cfg: dict, in_channels: int) -> str | None:
        """None when the Conv2D (its tf_keras config) is rewritten, else why it is skipped."""
        kh, kw = _pair(cfg["kernel_size"])
        if kh * kw == 1:
            return "1x1 kernel (already pointwise)"
        if int(cfg.get("groups", 1)) != 1:
            return f"grouped convolution (groups={cfg['groups']})"
        if cfg.get("data_format", "channels_last") != "channels_last":
            return "channels_first data format"
        if in_channels < self.min_in_channels:
            return f"{in_channels} input channels < {self.min_in_channels}"
        ratio = separable_cost_ratio(kh, kw, int(cfg["filters"]))
        if ratio > self.max_cost_ratio:
            return f"separable pair would cost {ratio:.2f}x the MACs (> {self.max_cost_ratio})"
        return None


def separable_cost_ratio(kh: int, kw: int, filters: int) -> float:
    return 1.0 / filters + 1.0 / (kh * kw)


@dataclass
class SeparableReport:
    rewritten: list[dict[str, Any]] = field(default_factory=list)
    skipped: list[dict[str, Any]] = field(default_factory=list)
    params_before: int = 0
    params_after: int = 0
    macs_before: int = 0
    macs_after: int = 0
    rule: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"rule": self.rule, "rewritten": self.rewritten, "skipped": self.skipped,
                "params": {"before": self.params_before, "after": self.params_after,
                           "ratio": round(self.params_after / self.params_before, 4) if self.params_before else None},
                "macs": {"before": self.macs_before, "after": self.macs_after,
                         "ratio": round(self.macs_after / self.macs_before, 4) if self.macs_before else None}}


def make_separable(model: Any, rule: SeparableRule | None = None, x: np.ndarray | None = None
                   ) -> tuple[Any, SeparableReport]:
    """The separable student of ``model`` (tf_keras or Keras 3) and the report of what changed. With ``x``
    (training inputs), a pooled head's Dense layer is fitted by least squares to the original's (see _fit_head)."""
    from ..keras_bridge import to_tf_keras

    rule = rule or SeparableRule()
    teacher = to_tf_keras(model)
    import tf_keras

    report = SeparableReport(rule={"min_in_channels": rule.min_in_channels, "max_cost_ratio": rule.max_cost_ratio,
                                   "head": rule.head})
    pairs: dict[Any, Any] = {}
    cfg = _rewrite_config(teacher, rule, report, pairs)
    if isinstance(teacher, tf_keras.Sequential):
        student = tf_keras.Sequential.from_config(cfg)
    else:
        student = tf_keras.Model.from_config(cfg)
    _copy_weights(teacher, student, pairs, tf_keras)
    if x is not None:
        for key, geometry in pairs.items():
            if isinstance(key, tuple) and key[0] == "head" and key[1] in {e.name for e in teacher.layers}:
                _fit_head(teacher, student, key[1], geometry, x, tf_keras, report)
    before, after = count_params_macs(teacher), count_params_macs(student)
    report.params_before, report.macs_before = before["params"], before["macs"]
    report.params_after, report.macs_after = after["params"], after["macs"]
    return student, report


def _rewrite_config(model, rule: SeparableRule, report: SeparableReport, pairs: dict, prefix: str = "") -> dict:
    """The model's config with eligible Conv2D entries replaced (recursing into nested models)."""
    import tf_keras

    cfg = copy.deepcopy(model.get_config())
    sequential = isinstance(model, tf_keras.Sequential)
    new_layers, renamed = [], {}
    for entry in cfg["layers"]:
        cls = entry["class_name"]
        name = entry["config"].get("name", entry.get("name"))
        if cls in ("Functional", "Sequential", "Model"):
            sub = model.get_layer(name)
            entry["config"] = _rewrite_config(sub, rule, report, pairs, prefix=f"{prefix}{name}/")
            new_layers.append(entry)
            continue
        if cls != "Conv2D":
            new_layers.append(entry)
            continue
        layer = model.get_layer(name)
        in_channels = int(layer.kernel.shape[2]) * int(entry["config"].get("groups", 1))
        reason = rule.decide(entry["config"], in_channels)
        if reason is not None:
            report.skipped.append({"layer": prefix + name, "reason": reason})
            new_layers.append(entry)
            continue
        dw, pw = _pair_entries(entry)
        new_layers += [dw, pw]
        renamed[name] = pw["config"]["name"]
        pairs[id(layer)] = (dw["config"]["name"], pw["config"]["name"])
        kh, kw = _pair(entry["config"]["kernel_size"])
        filters = int(entry["config"]["filters"])
        report.rewritten.append({
            "layer": prefix + name, "kernel": [kh, kw], "in_channels": in_channels, "filters": filters,
            "into": [prefix + dw["config"]["name"], prefix + pw["config"]["name"]],
            "params_before": int(layer.count_params()),
            "params_after": kh * kw * in_channels + in_channels * filters + (filters if layer.use_bias else 0),
        })
    if not sequential:
        for entry in new_layers:
            for node in entry.get("inbound_nodes", []):
                for ref in node:
                    if ref[0] in renamed:
                        ref[0] = renamed[ref[0]]
        for ref in cfg["output_layers"] if isinstance(cfg["output_layers"][0], list) else [cfg["output_layers"]]:
            if ref[0] in renamed:
                ref[0] = renamed[ref[0]]
    if rule.head:
        new_layers = _head_entries(model, new_layers, sequential, report, pairs, prefix)
    cfg["layers"] = new_layers
    return cfg


def _head_entries(model, entries: list[dict], sequential: bool, report: SeparableReport, pairs: dict,
                  prefix: str) -> list[dict]:
    """``separable:head``: a 2x2 ``AveragePooling2D`` before every ``Flatten`` that feeds only a ``Dense`` layer.

    A Flatten -> Dense head holds ``H*W*C x units`` weights, which in a small CNN can outweigh all its convolutions
    (the digits CNN: 69 % of its parameters); pooling first divides that by about 4. The Dense kernel starts as its
    rows summed over each pooling window (exact when the features are constant over the window) and, given training
    inputs, is then fitted by least squares (:func:`_fit_head`); the distillation that follows trains it with the
    rest. The head loses spatial resolution, so this is opt-in.
    """
    consumers: dict[str, list[dict]] = {}
    for i, e in enumerate(entries):
        if sequential:
            if i > 0:
                consumers.setdefault(entries[i - 1]["config"]["name"], []).append(e)
        else:
            for node in e.get("inbound_nodes") or []:
                for ref in node:
                    consumers.setdefault(ref[0], []).append(e)
    out = []
    for e in entries:
        name = e["config"].get("name", e.get("name"))
        if e["class_name"] != "Flatten":
            out.append(e)
            continue
        users = consumers.get(name, [])
        shape = model.get_layer(name).input_shape
        h, w = (int(shape[1]), int(shape[2])) if isinstance(shape, tuple) and len(shape) == 4 and None not in \
            shape[1:3] else (1, 1)
        why = ("not followed by a single Dense layer" if len(users) != 1 or users[0]["class_name"] != "Dense"
               else "channels_first data format" if e["config"].get("data_format") == "channels_first"
               else f"{h}x{w} features: too small to pool" if h < 2 and w < 2 else None)
        if why is not None:
            report.skipped.append({"layer": prefix + name, "reason": f"head: {why}"})
            out.append(e)
            continue
        dense = users[0]
        pool = (2 if h >= 2 else 1, 2 if w >= 2 else 1)
        pname = f"{name}_pool"
        entry = {"class_name": "AveragePooling2D", "name": pname,
                 "config": {"name": pname, "trainable": True, "dtype": e["config"].get("dtype", "float32"),
                            "pool_size": pool, "strides": pool, "padding": "valid", "data_format": "channels_last"}}
        if not sequential:
            entry["inbound_nodes"] = e["inbound_nodes"]
            e["inbound_nodes"] = [[[pname, 0, 0, {}]]]
        for x in (e, dense):
            x.pop("build_config", None)
        out += [entry, e]
        dname = dense["config"]["name"]
        layer = model.get_layer(dname)
        units = int(dense["config"]["units"])
        c = int(shape[3])
        after = (h // pool[0]) * (w // pool[1]) * c * units + (units if layer.use_bias else 0)
        pairs[("head", dname)] = (h, w, c, pool)
        report.rewritten.append({"layer": prefix + dname, "head": True, "pool": list(pool),
                                 "into": [prefix + pname, prefix + name, prefix + dname],
                                 "in_features": [h * w * c, (h // pool[0]) * (w // pool[1]) * c],
                                 "params_before": int(layer.count_params()), "params_after": after})
    return out


def _fit_head(teacher, student, dense_name: str, geometry, x: np.ndarray, tf_keras, report: SeparableReport,
              ridge: float = 1e-3, limit: int = 4096) -> None:
    """Least-squares init of a pooled head's Dense layer: on the training inputs, the student's pooled features P
    should give the original Dense layer's pre-activation outputs Y = F W + b (F: the original's flattened
    features), which also absorbs what the separable rewrite changed upstream. ``[P 1] theta = Y`` is solved with a
    small ridge term; the window-sum kernel is kept if it fits better. The relative error of both is reported."""
    h, w, c, pool = geometry
    layer = teacher.get_layer(dense_name)
    kernel, *bias = layer.get_weights()
    xs = x[:limit]
    f = np.asarray(tf_keras.Model(teacher.inputs, layer.input).predict(xs, batch_size=256, verbose=0), np.float64)
    y = f @ kernel + (bias[0] if bias else 0.0)
    p = np.asarray(tf_keras.Model(student.inputs, student.get_layer(dense_name).input).predict(
        xs, batch_size=256, verbose=0), np.float64)
    start = pool_dense_kernel(kernel, h, w, c, pool)
    if bias:  # the bias is fitted as the weight of a constant feature
        p = np.concatenate([p, np.ones((len(p), 1))], axis=1)
        start = np.concatenate([start, bias[0][None]], axis=0)
    a = p.T @ p
    theta = np.linalg.solve(a + ridge * np.trace(a) / len(a) * np.eye(len(a)), p.T @ y)
    err = {name: float(np.sqrt(np.mean((p @ t - y) ** 2)) / (float(np.sqrt(np.mean(y ** 2))) or 1.0))
           for name, t in (("least_squares", theta), ("window_sum", start))}
    best = theta if err["least_squares"] <= err["window_sum"] else start
    dense = student.get_layer(dense_name)
    dense.set_weights([best[:-1].astype(np.float32), best[-1].astype(np.float32)] if bias
                      else [best.astype(np.float32)])
    for row in report.rewritten:
        if row.get("head") and row["layer"].endswith(dense_name):
            row["init"] = "least_squares" if best is theta else "window_sum"
            row["init_relative_error"] = {k: round(v, 4) for k, v in err.items()}
            row["init_samples"] = int(len(xs))


def pool_dense_kernel(kernel: np.ndarray, h: int, w: int, c: int, pool: tuple[int, int]) -> np.ndarray:
    """A Flatten -> Dense kernel (h*w*c, units) for the same Dense after ``pool`` average pooling: the rows of each
    window summed (a window's mean times its size), trailing odd rows/columns dropped as 'valid' pooling does."""
    units = kernel.shape[1]
    k = kernel.reshape(h, w, c, units)
    ph, pw = pool
    hh, ww = h // ph, w // pw
    k = k[:hh * ph, :ww * pw].reshape(hh, ph, ww, pw, c, units).sum(axis=(1, 3))
    return k.reshape(hh * ww * c, units)


def _pair_entries(entry: dict) -> tuple[dict, dict]:
    conf = entry["config"]
    name = conf["name"]
    dw_conf = {
        "name": f"{name}_dw", "trainable": conf.get("trainable", True), "dtype": conf.get("dtype", "float32"),
        "kernel_size": conf["kernel_size"], "strides": conf["strides"], "padding": conf["padding"],
        "data_format": conf.get("data_format", "channels_last"), "dilation_rate": conf.get("dilation_rate", (1, 1)),
        "depth_multiplier": 1, "activation": "linear", "use_bias": False,
    }
    pw_conf = dict(conf)
    pw_conf.update({"name": f"{name}_pw", "kernel_size": (1, 1), "strides": (1, 1), "padding": "valid",
                    "dilation_rate": (1, 1), "groups": 1})
    dw = {"class_name": "DepthwiseConv2D", "config": dw_conf, "name": dw_conf["name"]}
    pw = {"class_name": "Conv2D", "config": pw_conf, "name": pw_conf["name"]}
    if "inbound_nodes" in entry:
        dw["inbound_nodes"] = copy.deepcopy(entry["inbound_nodes"])
        pw["inbound_nodes"] = [[[dw_conf["name"], k, 0, {}]] for k in range(len(entry["inbound_nodes"]))]
    return dw, pw


def _copy_weights(teacher, student, pairs: dict, tf_keras) -> None:
    for layer in teacher.layers:
        if isinstance(layer, tf_keras.Model):
            _copy_weights(layer, student.get_layer(layer.name), pairs, tf_keras)
        elif id(layer) in pairs:
            dw_name, pw_name = pairs[id(layer)]
            kernel, *bias = layer.get_weights()
            depthwise, pointwise = factorize_kernel(kernel)
            student.get_layer(dw_name).set_weights([depthwise])
            student.get_layer(pw_name).set_weights([pointwise, *bias])
        elif ("head", layer.name) in pairs:
            kernel, *bias = layer.get_weights()
            student.get_layer(layer.name).set_weights([pool_dense_kernel(kernel, *pairs[("head", layer.name)]),
                                                       *bias])
        elif layer.weights:
            student.get_layer(layer.name).set_weights(layer.get_weights())


def factorize_kernel(kernel: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Best per-input-channel rank-1 split of a (kh, kw, Cin, Cout) kernel: depthwise (kh, kw, Cin, 1), pointwise
    (1, 1, Cin, Cout), with ``kernel[:, :, c, o] ~= depthwise[:, :, c, 0] * pointwise[0, 0, c, o]``."""
    kh, kw, cin, cout = kernel.shape
    depthwise = np.zeros((kh, kw, cin, 1), kernel.dtype)
    pointwise = np.zeros((1, 1, cin, cout), kernel.dtype)
    for c in range(cin):
        u, s, vt = np.linalg.svd(kernel[:, :, c, :].reshape(kh * kw, cout), full_matrices=False)
        root = np.sqrt(s[0])
        depthwise[:, :, c, 0] = (u[:, 0] * root).reshape(kh, kw)
        pointwise[0, 0, c, :] = vt[0] * root
    return depthwise, pointwise


# --- counting --------------------------------------------------------------------------------------------------------


def count_params_macs(model: Any) -> dict[str, Any]:
    """Parameters and multiply-accumulates per inference (batch 1) of a tf_keras or Keras 3 model, per layer too.

    MACs count Conv2D/DepthwiseConv2D/SeparableConv2D/Conv1D and Dense; BatchNormalization, activations and
    pooling count 0 (they fold into the convolutions or are negligible on device).
    """
    layers: list[dict[str, Any]] = []
    _count(model, "", layers)
    return {"params": int(model.count_params()), "macs": int(sum(item["macs"] for item in layers)),
            "layers": layers}


def _count(model, prefix: str, out: list) -> None:
    for layer in model.layers:
        if hasattr(layer, "layers") and getattr(layer, "layers", None) and hasattr(layer, "inputs"):
            _count(layer, f"{prefix}{layer.name}/", out)
            continue
        macs = _layer_macs(layer)
        params = int(layer.count_params()) if layer.weights else 0
        if params or macs:
            out.append({"layer": prefix + layer.name, "type": type(layer).__name__, "params": params, "macs": macs})


def _layer_macs(layer) -> int:
    kind = type(layer).__name__
    if kind not in ("Conv2D", "DepthwiseConv2D", "SeparableConv2D", "Conv1D", "Dense"):
        return 0
    out_shape = [int(d) for d in list(_shape(layer.output))[1:] if d is not None]
    in_shape = [int(d) for d in list(_shape(layer.input))[1:] if d is not None]
    cin = in_shape[-1]
    spatial = int(np.prod(out_shape[:-1])) if len(out_shape) > 1 else 1
    if kind == "Dense":
        return spatial * cin * out_shape[-1]
    ks = _pair(layer.kernel_size) if kind != "Conv1D" else (int(layer.kernel_size[0]), 1)
    taps = ks[0] * ks[1]
    if kind == "DepthwiseConv2D":
        return spatial * taps * cin * int(layer.depth_multiplier)
    if kind == "SeparableConv2D":
        mid = cin * int(layer.depth_multiplier)
        return spatial * (taps * mid + mid * out_shape[-1])
    groups = int(getattr(layer, "groups", 1) or 1)
    return spatial * taps * (cin // groups) * out_shape[-1]


def _shape(t):
    return t.shape if not isinstance(t, (list, tuple)) else t[0].shape


def _pair(v) -> tuple[int, int]:
    if isinstance(v, int):
        return v, v
    v = list(v)
    return int(v[0]), int(v[-1] if len(v) > 1 else v[0])
