"""Rebuild a Keras 3 model as a tf_keras (Keras 2) model, from its config and its weights.

tfmot (pruning, clustering, QAT) accepts tf_keras models only. :func:`to_tf_keras` walks a Keras 3 Functional or
Sequential model, creates the tf_keras twin of every layer from the layer's own config (translating the few keys that
differ between the two Keras versions), wires them as the Keras 3 graph is wired, recurses into nested models (a
``keras.applications`` backbone inside a classifier stays a nested tf_keras model) and copies every weight. The
result is checked: both models run on the same batch and must agree to a tight tolerance.

Nothing is skipped: a subclassed model, a layer outside :data:`SUPPORTED_LAYERS`, a config value tf_keras has no
counterpart for, or a weight that does not fit raises :class:`~converters.errors.KerasBridgeError` naming the layer.
tf_keras models pass through unchanged.

``TF_USE_LEGACY_KERAS=1`` only changes what ``tf.keras`` means; this module never uses ``tf.keras`` and imports
``keras`` (always Keras 3) and ``tf_keras`` (always Keras 2) by name, so it behaves the same with or without it.
"""

from __future__ import annotations

import inspect
import os
from pathlib import Path
from typing import Any

import numpy as np

from .errors import KerasBridgeError, ModelLoadError

# Keras 3 layer classes with a tf_keras twin of the same name and semantics (weights in the same order).
SUPPORTED_LAYERS = frozenset({
    "Activation", "Add", "Average", "AveragePooling1D", "AveragePooling2D", "BatchNormalization", "Concatenate",
    "Conv1D", "Conv2D", "Cropping2D", "Dense", "DepthwiseConv2D", "Dropout", "ELU", "Embedding", "Flatten",
    "GlobalAveragePooling1D", "GlobalAveragePooling2D", "GlobalMaxPooling1D", "GlobalMaxPooling2D", "LeakyReLU",
    "LayerNormalization", "Maximum", "MaxPooling1D", "MaxPooling2D", "Minimum", "Multiply", "Permute", "ReLU",
    "Rescaling", "Reshape", "SeparableConv2D", "Softmax", "SpatialDropout2D", "Subtract", "UpSampling2D",
    "ZeroPadding1D", "ZeroPadding2D",
})

# Keras 3 config keys renamed in tf_keras, per layer class.
_RENAMED = {"LeakyReLU": {"negative_slope": "alpha"}}
# Keras 3 config keys tf_keras lacks, with the value that means "feature off": dropped only at that value.
_OFF_VALUES: dict[str, tuple] = {
    "lora_rank": (None, 0), "lora_alpha": (None,), "quantization_config": (None,), "optional": (False,),
    "ragged": (False,), "sparse": (False,), "synchronized": (False,),
}
_LAYER_BASE_KWARGS = {"name", "trainable", "dtype", "dynamic", "input_dim", "input_shape", "batch_input_shape",
                      "batch_size", "weights", "activity_regularizer", "autocast"}

_HINT = ("rebuild the model from keras.layers built-ins (see converters/keras_bridge.SUPPORTED_LAYERS), "
         "or build and save it with tf_keras (import tf_keras) so no rebuild is needed")


def is_tf_keras(model: Any) -> bool:
    """True for a tf_keras (Keras 2) model, without importing anything the caller has not imported."""
    return type(model).__module__.startswith("tf_keras.") or any(
        c.__module__.startswith("tf_keras.") and c.__name__ == "Model" for c in type(model).__mro__)


def to_tf_keras(model: Any, *, verify: bool = True, atol: float = 1e-5) -> Any:
    """A tf_keras model with the structure, names and weights of ``model`` (a Keras 3 Functional/Sequential).

    tf_keras models are returned as they are. With ``verify`` (default) both models run on one random batch and
    must agree within ``atol`` (plus a relative 1e-5), otherwise :class:`KerasBridgeError`.
    """
    if is_tf_keras(model):
        return model
    import keras

    if not isinstance(model, keras.Model):
        raise KerasBridgeError(f"{type(model).__name__} is not a Keras model",
                               hint="pass a keras.Model (Functional or Sequential) or a tf_keras model")
    import tf_keras

    rebuilt = _rebuild_model(model, tf_keras, keras)
    if verify:
        check_same_outputs(model, rebuilt, atol=atol)
    return rebuilt


def load_as_tf_keras(path: str | os.PathLike, *, verify: bool = True) -> Any:
    """Load a .keras (Keras 3 or tf_keras), .h5 or Keras-2 SavedModel as a tf_keras model (compile=False)."""
    from .loading import detect_format

    p = Path(path)
    fmt = detect_format(p)
    import tf_keras

    if fmt.kind == "savedmodel":
        if not (p / "keras_metadata.pb").exists():
            raise KerasBridgeError(
                f"SavedModel {p} holds no Keras model (it was written by model.export or tf.saved_model.save)",
                hint="pass the .keras or .h5 file the SavedModel was exported from; training needs the Keras layers")
        return _load(lambda: tf_keras.models.load_model(p, compile=False), p, fmt.kind)
    if fmt.flavor == "tf_keras":
        try:
            return tf_keras.models.load_model(p, compile=False)
        except Exception as first:  # noqa: BLE001 - an .h5 may be a Keras 3 one; fall through to Keras 3
            if fmt.kind != "h5":
                raise ModelLoadError(f"cannot load {p} with tf_keras: {_first_line(first)}") from first
    import keras

    model = _load(lambda: keras.saving.load_model(p, compile=False), p, fmt.kind)
    return to_tf_keras(model, verify=verify)


def check_same_outputs(original: Any, rebuilt: Any, *, atol: float = 1e-5, batch: int = 2, seed: int = 0) -> float:
    """Run both models on one seeded random batch; return the largest absolute difference, raise if too large."""
    rng = np.random.default_rng(seed)
    xs = []
    for t in original.inputs:
        shape = [batch] + [8 if d is None else int(d) for d in list(t.shape)[1:]]
        dtype = getattr(getattr(t, "dtype", None), "name", None) or str(getattr(t, "dtype", "float32"))
        if "int" in dtype:  # token ids: 0 and 1 are valid for every Embedding
            xs.append(rng.integers(0, 2, shape).astype(dtype))
        else:
            xs.append(rng.uniform(-1, 1, shape).astype(dtype if "float" in dtype else "float32"))
    arg = xs if len(xs) > 1 else xs[0]
    a = _flat(original(arg, training=False))
    b = _flat(rebuilt(arg, training=False))
    if len(a) != len(b):
        raise KerasBridgeError(f"the rebuilt model has {len(b)} outputs, the original {len(a)}", hint=_HINT)
    worst = 0.0
    for i, (u, v) in enumerate(zip(a, b)):
        u, v = np.asarray(u, dtype="float64"), np.asarray(v, dtype="float64")
        if u.shape != v.shape:
            raise KerasBridgeError(f"output {i} of the rebuilt model has shape {v.shape}, the original {u.shape}",
                                   hint=_HINT)
        diff = float(np.max(np.abs(u - v))) if u.size else 0.0
        worst = max(worst, diff)
        if not np.allclose(u, v, atol=atol, rtol=1e-5):
            raise KerasBridgeError(f"output {i} of the rebuilt tf_keras model differs from the Keras 3 original "
                                   f"by up to {diff:.3g}", hint=_HINT)
    return worst


# --- rebuilding ------------------------------------------------------------------------------------------------------


def _rebuild_model(model, tf_keras, keras):
    if isinstance(model, keras.Sequential):
        return _rebuild_sequential(model, tf_keras, keras)
    from keras.src.models.functional import Functional

    if not isinstance(model, Functional) or type(model).__name__ not in ("Functional", "Model"):
        raise KerasBridgeError(
            f"model '{model.name}' is a subclassed Keras model ({type(model).__name__}); its layers and call() "
            "cannot be rebuilt from a config",
            hint="build it with the functional API (keras.Model(inputs, outputs)) or keras.Sequential")
    return _rebuild_functional(model, tf_keras, keras)


def _rebuild_sequential(model, tf_keras, keras):
    cfg = model.get_config()
    first = cfg["layers"][0] if cfg.get("layers") else None
    if first is None or first.get("class_name") != "InputLayer":
        raise KerasBridgeError(f"Sequential model '{model.name}' has no Input, so its input shape is unknown",
                               hint="start it with keras.Input(shape=...) and save it again")
    layers = [_input_layer(first["config"], tf_keras)]
    layers += [_twin(layer, tf_keras, keras) for layer in model.layers]
    out = tf_keras.Sequential(layers, name=model.name)
    out.trainable = model.trainable
    for layer in model.layers:
        _copy_weights(layer, out.get_layer(layer.name), keras)
    return out


def _rebuild_functional(model, tf_keras, keras):
    cfg = model.get_config()
    produced: dict[tuple[str, int, int], Any] = {}
    twins: dict[str, Any] = {}
    pending = []
    operations = {op.name: op for op in model.operations}
    for entry in cfg["layers"]:
        name = entry["name"]
        if entry["class_name"] == "InputLayer":
            conf = entry["config"]
            _check_off_keys(conf, ("batch_shape", "dtype", "name", "sparse", "ragged", "optional"), name)
            t = tf_keras.Input(batch_shape=tuple(conf["batch_shape"]), dtype=_dtype_name(conf.get("dtype")),
                               name=conf.get("name", name))
            produced[(name, 0, 0)] = t
            continue
        layer = operations.get(name)
        if not isinstance(layer, keras.layers.Layer):
            raise KerasBridgeError(
                f"'{name}' in model '{model.name}' is a keras.ops call ({entry['class_name']}), not a layer, so "
                "tf_keras cannot rebuild it", hint="use the matching keras.layers layer (e.g. keras.layers.Add)")
        twins[name] = _twin(layer, tf_keras, keras)
        pending += [(name, k, node) for k, node in enumerate(entry.get("inbound_nodes", []))]
    while pending:
        left = []
        for name, k, node in pending:
            try:
                args = _resolve(node.get("args", []), produced)
                kwargs = {key: _resolve(v, produced) for key, v in node.get("kwargs", {}).items()
                          if not (key in ("mask", "training") and v is None)}
            except KeyError:
                left.append((name, k, node))
                continue
            outs = twins[name](*args, **kwargs)
            for t_i, t in enumerate(_flat(outs)):
                produced[(name, k, t_i)] = t
        if len(left) == len(pending):
            raise KerasBridgeError(f"cannot order the layers of '{model.name}' (a node of '{left[0][0]}' waits "
                                   "on a tensor no layer produces)", hint=_HINT)
        pending = left
    inputs = _refs(cfg["input_layers"], produced)
    outputs = _refs(cfg["output_layers"], produced)
    out = tf_keras.Model(inputs, outputs, name=model.name)
    out.trainable = model.trainable
    for name in twins:
        _copy_weights(operations[name], out.get_layer(name), keras)
    return out


def _twin(layer, tf_keras, keras):
    """The tf_keras layer (or rebuilt nested model) standing for Keras 3 ``layer``."""
    if isinstance(layer, keras.Model):
        return _rebuild_model(layer, tf_keras, keras)
    cls_name = type(layer).__name__
    module = type(layer).__module__
    if cls_name not in SUPPORTED_LAYERS or not module.startswith("keras.src.layers."):
        what = "a custom layer" if not module.startswith("keras.") else "a Keras layer edgekit cannot rebuild"
        raise KerasBridgeError(f"layer '{layer.name}' ({cls_name}, {what}) has no tf_keras rebuild", hint=_HINT)
    cls = getattr(tf_keras.layers, cls_name)
    cfg = _translate_config(layer.get_config(), cls, layer.name, tf_keras)
    try:
        return cls.from_config(cfg)
    except Exception as exc:  # noqa: BLE001 - tf_keras raises TypeError/ValueError for configs it rejects
        raise KerasBridgeError(f"layer '{layer.name}' ({cls_name}): tf_keras rejects its config: "
                               f"{_first_line(exc)}", hint=_HINT) from exc


def _translate_config(cfg: dict, cls, layer_name: str, tf_keras) -> dict:
    renames = _RENAMED.get(cls.__name__, {})
    accepted = _init_params(cls) | _LAYER_BASE_KWARGS
    out = {}
    for key, value in cfg.items():
        key = renames.get(key, key)
        if key not in accepted:
            if key in _OFF_VALUES and value in _OFF_VALUES[key]:
                continue
            raise KerasBridgeError(f"layer '{layer_name}' ({cls.__name__}) sets '{key}'={value!r}, which tf_keras "
                                   "has no counterpart for", hint=_HINT)
        out[key] = _translate_value(value, key, layer_name, tf_keras)
    return out


def _translate_value(value, key: str, layer_name: str, tf_keras):
    if key == "dtype":
        return _dtype_name(value)
    if isinstance(value, dict) and "class_name" in value and "config" in value:
        return _translate_object(value, key, layer_name, tf_keras)
    if isinstance(value, list):
        return tuple(_translate_value(v, key, layer_name, tf_keras) for v in value)
    return value


def _translate_object(obj: dict, key: str, layer_name: str, tf_keras):
    """An initializer/regularizer/constraint (Keras 3 serialized form) as a tf_keras object."""
    module = str(obj.get("module", ""))
    family = module.rsplit(".", 1)[-1] if module.startswith("keras.") else ""
    registry = {"initializers": tf_keras.initializers, "regularizers": tf_keras.regularizers,
                "constraints": tf_keras.constraints}.get(family)
    cls = getattr(registry, obj["class_name"], None) if registry is not None else None
    if cls is None:
        raise KerasBridgeError(f"layer '{layer_name}': '{key}' is {obj['class_name']} ({module or 'custom'}), "
                               "which has no tf_keras counterpart", hint=_HINT)
    accepted = _init_params(cls)
    conf = {}
    for k, v in (obj.get("config") or {}).items():
        if k in accepted:
            conf[k] = v
        elif v is not None:
            raise KerasBridgeError(f"layer '{layer_name}': {obj['class_name']} '{key}' sets '{k}'={v!r}, which "
                                   "tf_keras has no counterpart for", hint=_HINT)
    return cls(**conf)


def _init_params(cls) -> set[str]:
    """Keyword arguments ``cls`` accepts, including those its ``**kwargs`` hands to its base classes."""
    names: set[str] = set()
    for klass in cls.__mro__:
        if "__init__" not in vars(klass) or klass is object:
            continue
        try:
            params = inspect.signature(klass.__init__).parameters
        except (TypeError, ValueError):
            continue
        names |= set(params) - {"self", "kwargs", "args"}
        if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
            break
    return names


def _dtype_name(value) -> str | None:
    if isinstance(value, dict):
        return (value.get("config") or {}).get("name")
    return value


def _check_off_keys(conf: dict, known: tuple, name: str) -> None:
    for key, value in conf.items():
        if key not in known:
            raise KerasBridgeError(f"input '{name}' sets '{key}'={value!r}, which edgekit cannot rebuild", hint=_HINT)
    for key in ("sparse", "ragged", "optional"):
        if conf.get(key):
            raise KerasBridgeError(f"input '{name}' is {key}; tf_keras fine-tuning needs a dense, required input",
                                   hint="use a dense keras.Input(shape=...)")


def _input_layer(conf: dict, tf_keras):
    name = conf.get("name", "input")
    _check_off_keys(conf, ("batch_shape", "dtype", "name", "sparse", "ragged", "optional"), name)
    return tf_keras.layers.InputLayer(batch_input_shape=tuple(conf["batch_shape"]),
                                      dtype=_dtype_name(conf.get("dtype")), name=name)


def _resolve(value, produced):
    """Replace serialized Keras 3 tensors in a node's args by the tf_keras tensors produced so far (KeyError if not)."""
    if isinstance(value, dict) and value.get("class_name") == "__keras_tensor__":
        name, node, index = value["config"]["keras_history"]
        return produced[(name, node, index)]
    if isinstance(value, list):
        return [_resolve(v, produced) for v in value]
    if isinstance(value, tuple):
        return tuple(_resolve(v, produced) for v in value)
    if isinstance(value, dict):
        return {k: _resolve(v, produced) for k, v in value.items()}
    return value


def _refs(spec, produced):
    if isinstance(spec, list) and len(spec) == 3 and isinstance(spec[0], str):
        return produced[tuple(spec)]
    if isinstance(spec, dict):
        return {k: _refs(v, produced) for k, v in spec.items()}
    return [_refs(s, produced) for s in spec]


def _copy_weights(src, dst, keras) -> None:
    if isinstance(src, keras.Model):
        return  # a nested model copied its own weights when it was rebuilt
    weights = src.get_weights()
    want = [tuple(w.shape) for w in dst.get_weights()]
    have = [tuple(w.shape) for w in weights]
    if want != have:
        raise KerasBridgeError(f"layer '{src.name}' ({type(src).__name__}): weights {have} do not fit the tf_keras "
                               f"layer's {want}", hint=_HINT)
    dst.set_weights(weights)


def _flat(outs) -> list:
    if isinstance(outs, dict):
        return [outs[k] for k in sorted(outs)]
    if isinstance(outs, (list, tuple)):
        return [t for o in outs for t in _flat(o)]
    return [outs]


def _load(fn, p: Path, kind: str):
    try:
        return fn()
    except Exception as exc:  # noqa: BLE001 - loaders raise anything from ValueError to OSError
        raise ModelLoadError(f"cannot load {p} as a {kind} model: {_first_line(exc)}") from exc


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:300] if text else type(exc).__name__
