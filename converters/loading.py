"""Detect and load a source model (.keras, .h5, SavedModel directory, .onnx) and give the converter a static-shape
function.

Format detection is pure (:func:`detect_format` reads a few bytes); loading imports TensorFlow lazily. Every
model is turned into a *frozen concrete function with batch 1 and static shapes*: that is what the Edge TPU needs,
and it keeps Keras 3 models from emitting SHAPE/STRIDED_SLICE/PACK ops for a dynamic batch in ``Flatten``.
"""

from __future__ import annotations

import hashlib
import json
import os
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgekit.extras import require

from .errors import ModelLoadError

HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"


@dataclass(frozen=True)
class InputSpec:
    name: str
    shape: tuple[int | None, ...]  # without the batch dimension
    dtype: str = "float32"

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "shape": list(self.shape), "dtype": self.dtype}


@dataclass(frozen=True)
class SourceFormat:
    """What a path holds: ``kind`` is keras | h5 | savedmodel; ``flavor`` is keras3 | tf_keras | tf."""

    kind: str
    flavor: str


def detect_format(path: str | os.PathLike) -> SourceFormat:
    """Decide what ``path`` is from its content (not only its suffix). Raises ModelLoadError."""
    p = Path(path)
    if not p.exists():
        raise ModelLoadError(f"model {p} does not exist", hint="check the path")
    if p.is_dir():
        if (p / "saved_model.pb").exists() or (p / "saved_model.pbtxt").exists():
            return SourceFormat("savedmodel", "tf")
        raise ModelLoadError(f"{p} is a directory without saved_model.pb, so not a SavedModel")
    if p.suffix.lower() == ".onnx":  # ONNX (converters/onnx_source.py): a bare protobuf, named by its suffix
        return SourceFormat("onnx", "onnx")
    with open(p, "rb") as f:
        head = f.read(8)
    if head == HDF5_MAGIC:
        return SourceFormat("h5", "tf_keras")
    if head[:4] == b"PK\x03\x04":
        try:
            with zipfile.ZipFile(p) as z:
                names = set(z.namelist())
                if "config.json" not in names:
                    raise ModelLoadError(f"{p} is a zip archive but not a Keras model (no config.json)")
                meta = json.loads(z.read("metadata.json")) if "metadata.json" in names else {}
        except (zipfile.BadZipFile, json.JSONDecodeError) as exc:
            raise ModelLoadError(f"{p} is not a readable .keras archive: {exc}") from exc
        version = str(meta.get("keras_version", "3"))
        return SourceFormat("keras", "tf_keras" if version.startswith("2.") else "keras3")
    if head[4:8] == b"TFL3":
        raise ModelLoadError(f"{p} is already a TFLite model",
                             hint="pass the Keras or SavedModel source; use 'edgekit edgetpu check' for .tflite files")
    raise ModelLoadError(f"{p} is not a .keras archive, an HDF5 (.h5) file, an .onnx file or a SavedModel directory")


def source_digest(path: str | os.PathLike) -> tuple[str, int]:
    """(sha256, size in bytes) of a model file, or of every file of a SavedModel directory (sorted paths)."""
    p = Path(path)
    h = hashlib.sha256()
    size = 0
    files = sorted(q for q in p.rglob("*") if q.is_file()) if p.is_dir() else [p]
    for q in files:
        if p.is_dir():
            h.update(str(q.relative_to(p)).encode() + b"\0")
        with open(q, "rb") as f:
            while block := f.read(1 << 20):
                h.update(block)
                size += len(block)
    return h.hexdigest(), size


@dataclass
class LoadedModel:
    path: Path
    format: SourceFormat
    inputs: list[InputSpec]
    keras_model: Any = None  # a Keras 3 or tf_keras model, or None for SavedModel
    saved_model: Any = None
    signature: Any = None
    sha256: str = ""
    size: int = 0
    _frozen: Any = field(default=None, repr=False)
    _output_names: list[str] = field(default_factory=list, repr=False)

    @property
    def first_layer_names(self) -> list[str]:
        if self.keras_model is None:
            return []
        return [type(layer).__name__ for layer in getattr(self.keras_model, "layers", [])[:3]]

    @property
    def first_output_size(self) -> int | None:
        """Values per sample of the Keras model's first output (None when unknown, e.g. a SavedModel)."""
        outputs = getattr(self.keras_model, "outputs", None)
        if not outputs:
            return None
        dims = list(outputs[0].shape)[1:]
        return None if any(d is None for d in dims) else int(np.prod(dims))

    def concrete_function(self):
        """A frozen tf ConcreteFunction with batch 1 and static shapes (cached)."""
        if self._frozen is not None:
            return self._frozen
        import tensorflow as tf
        from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

        for spec in self.inputs:
            if any(d is None for d in spec.shape):
                from .errors import TargetRefusal

                raise TargetRefusal(f"input '{spec.name}' has a dynamic dimension {list(spec.shape)}",
                                    hint="give the model a fixed input size (e.g. Input(shape=(96, 96, 3)))")
        specs = [tf.TensorSpec([1, *spec.shape], tf.as_dtype(spec.dtype), name=_arg_name(spec.name, i))
                 for i, spec in enumerate(self.inputs)]
        if self.keras_model is not None:
            model = self.keras_model
            multi = len(self.inputs) > 1

            def call(*xs):
                return model(list(xs) if multi else xs[0], training=False)
        else:
            sig = self.signature
            names = [s.name for s in self.inputs]

            def call(*xs):
                return sig(**dict(zip(names, xs)))
        fn = tf.function(call).get_concrete_function(*specs)
        self._output_names = _output_names(fn.structured_outputs, _keras_output_names(self.keras_model))
        try:
            self._frozen = convert_variables_to_constants_v2(fn)
        except Exception as exc:  # noqa: BLE001 - TF raises many types here
            raise ModelLoadError(f"cannot freeze the model's variables: {exc}") from exc
        return self._frozen

    @property
    def output_names(self) -> list[str]:
        """The source's output names in the order of the frozen function's (and so the converted model's) outputs:
        Keras ``output_names`` for a list, sorted keys for a dict (TF flattens dicts by key)."""
        self.concrete_function()
        return list(self._output_names)

    @property
    def io_names(self) -> tuple[list[tuple[str, str]], list[str]]:
        """(inputs as (name, argument name the converter sees), output names), for :func:`signature.name_io`."""
        return [(s.name, _arg_name(s.name, i)) for i, s in enumerate(self.inputs)], self.output_names

    def float_parameters(self) -> int:
        """How many floating-point parameters the model has (trainable and not: batch-norm statistics count, the
        optimizer's slots do not), as Keras's ``count_params`` counts them; SavedModel: its signature's variables."""
        if self.keras_model is not None:
            variables = list(self.keras_model.weights)
        else:
            variables = list(getattr(self.signature, "variables", None) or getattr(self.saved_model, "variables", ()))
        return sum(int(np.prod(tuple(v.shape))) for v in variables
                   if str(getattr(v.dtype, "name", v.dtype)).startswith(("float", "bfloat", "half")))

    def predict(self, arrays: list[np.ndarray], batch: int = 64) -> list[np.ndarray] | None:
        """Float reference outputs from the source model itself (Keras models only; None otherwise)."""
        if self.keras_model is None:
            return None
        outs: list[list[np.ndarray]] = []
        n = arrays[0].shape[0]
        for start in range(0, n, batch):
            xs = [a[start:start + batch] for a in arrays]
            y = self.keras_model(xs if len(xs) > 1 else xs[0], training=False)
            ys = y if isinstance(y, (list, tuple)) else [y]
            if isinstance(y, dict):
                ys = [y[k] for k in sorted(y)]
            outs.append([np.asarray(t) for t in ys])
        return [np.concatenate([o[j] for o in outs]) for j in range(len(outs[0]))]


def _keras_output_names(model) -> list[str] | None:
    """Functional models (both Keras versions) name their outputs; a Keras 3 Sequential does not, so its outputs
    are named after the layers that make them."""
    if model is None:
        return None
    names = getattr(model, "output_names", None)
    if names:
        return list(names)
    try:
        return [t._keras_history.operation.name for t in model.outputs]
    except (AttributeError, TypeError):
        return None


def _output_names(structured: Any, keras_names: list[str] | None) -> list[str]:
    if isinstance(structured, dict):
        return [str(k) for k in sorted(structured)]
    flat = list(structured) if isinstance(structured, (list, tuple)) else [structured]
    names = [str(n) for n in (keras_names or [])]
    if len(names) != len(flat) or len(set(names)) != len(names):
        names = [f"output_{j}" for j in range(len(flat))]
    return names


def _arg_name(name: str, i: int) -> str:
    clean = "".join(c if c.isalnum() or c == "_" else "_" for c in name)
    return clean if clean and not clean[0].isdigit() else f"input_{i}"


def _keras_inputs(model) -> list[InputSpec]:
    specs = []
    for i, t in enumerate(model.inputs):
        shape = tuple(None if d is None else int(d) for d in list(t.shape)[1:])
        name = getattr(t, "name", None) or f"input_{i}"
        name = name.split(":")[0]
        dtype = getattr(t, "dtype", "float32")
        dtype = getattr(dtype, "name", dtype)
        specs.append(InputSpec(name, shape, str(dtype)))
    return specs


def load_model(path: str | os.PathLike) -> LoadedModel:
    """Load a .keras / .h5 / SavedModel source. Third-party load errors become ModelLoadError here, once."""
    p = Path(path)
    fmt = detect_format(p)
    sha, size = source_digest(p)
    if fmt.kind == "onnx":
        from .onnx_source import load_onnx

        return load_onnx(p, sha, size)
    require("tensorflow", "convert")  # a missing extra is an install hint, not a load error
    try:
        if fmt.kind == "savedmodel":
            loaded = _load_savedmodel(p, fmt, sha, size)
        elif fmt.flavor == "tf_keras":
            model, fmt = _load_legacy(p, fmt)
            loaded = LoadedModel(p, fmt, _keras_inputs(model), keras_model=model, sha256=sha, size=size)
        else:
            import keras

            model = keras.saving.load_model(p, compile=False)
            _check_graph_network(model, p)
            loaded = LoadedModel(p, fmt, _keras_inputs(model), keras_model=model, sha256=sha, size=size)
    except ModelLoadError:
        raise
    except Exception as exc:  # noqa: BLE001 - loaders raise anything from ValueError to OSError
        first = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
        raise ModelLoadError(f"cannot load {p} as a {fmt.kind} model ({fmt.flavor}): {first}") from exc
    if not loaded.inputs:
        raise ModelLoadError(f"{p} has no inputs")
    return loaded


def _check_graph_network(model, p: Path) -> None:
    """Functional and Sequential models have a layer graph to convert and rebuild; subclassed ones only code."""
    from keras.src.models.functional import Functional

    import keras

    if isinstance(model, (keras.Sequential, Functional)) or getattr(model, "_is_graph_network", False):
        return
    raise ModelLoadError(f"{p} holds a subclassed model ({type(model).__name__}); its layers cannot be read as a "
                         "graph", hint="rebuild it as a Sequential or Functional model (keras.Model(inputs, outputs)) "
                         "and save it as .keras")


def _load_legacy(p: Path, fmt: SourceFormat):
    """tf_keras first (it wrote most .h5 files); an .h5 written by Keras 3 loads with Keras 3."""
    import tf_keras

    try:
        return tf_keras.models.load_model(p, compile=False), fmt
    except Exception as first:  # noqa: BLE001
        if _is_qat(first):
            return _load_qat(p), fmt
        if fmt.kind != "h5":
            raise
        import keras

        try:
            return keras.saving.load_model(p, compile=False), SourceFormat("h5", "keras3")
        except Exception:  # noqa: BLE001
            raise first from None


QAT_LAYERS = ("QuantizeLayer", "QuantizeWrapper", "QuantizeWrapperV2", "QuantizeAnnotate")


def _is_qat(exc: Exception) -> bool:
    return any(name in str(exc) for name in QAT_LAYERS)


def _load_qat(p: Path):
    """A quantization-aware-training model saved by tfmot without strip: its layers only exist under tfmot's
    quantize scope. The fake-quant nodes it keeps carry the trained ranges into the int8 conversion."""
    import tf_keras

    try:
        import tensorflow_model_optimization as tfmot
    except ModuleNotFoundError:
        raise ModelLoadError(f"{p} is a quantization-aware-training model (tfmot layers) and "
                             f"tensorflow-model-optimization is not installed",
                             hint="install it with: pip install 'edgekit[convert]'") from None
    with tfmot.quantization.keras.quantize_scope():
        try:
            if zipfile.is_zipfile(p):
                return _load_qat_archive(p, tf_keras)
            return tf_keras.models.load_model(p, compile=False)
        except Exception as exc:  # noqa: BLE001
            first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
            raise ModelLoadError(f"{p} is a quantization-aware-training model that tfmot cannot restore from this "
                                 f"file ({first})",
                                 hint="re-save the QAT model as .h5 (model.save('m.h5')) or as a SavedModel "
                                      "directory (model.export('m')), and convert that") from exc


def _load_qat_archive(p: Path, tf_keras):
    """A tfmot QAT model from a ``.keras`` archive (under tfmot's quantize scope).

    tf_keras's loader refuses it: rebuilt from its config, a ``QuantizeLayer`` holds 5 variables (its min/max twice)
    while the file holds 3, and a ``QuantizeWrapperV2`` holds 6 while the file holds 8 (the wrapped layer's kernel and
    bias first). So the model is rebuilt from ``config.json`` and each layer's saved variables are matched to its own
    by their common tail, shape by shape; a variable before that tail takes the value of the matched variable of the
    same name (QuantizeLayer's duplicate min/max). Any other mismatch is an error."""
    with zipfile.ZipFile(p) as z:
        config = json.loads(z.read("config.json"))
    model = tf_keras.saving.deserialize_keras_object(config)
    layers: list = []
    stack = list(model.layers)
    while stack:
        layer = stack.pop()
        layers.append(layer)
        stack += [x for x in (getattr(layer, "layer", None), *getattr(layer, "layers", ())) if x is not None]
    for layer in layers:
        layer.load_own_variables = _tail_loader(layer)  # this instance only, for the load below
    try:
        model.load_weights(str(p))
    finally:
        for layer in layers:
            del layer.load_own_variables
    return model


def _tail_loader(layer):
    def load_own_variables(store) -> None:
        own = layer._trainable_weights + layer._non_trainable_weights
        saved = [np.asarray(store[str(i)]) for i in range(len(store.keys()))]
        k = min(len(own), len(saved))
        by_name: dict[str, np.ndarray] = {}
        for var, value in zip(own[len(own) - k:], saved[len(saved) - k:]):
            if tuple(var.shape) != value.shape:
                raise ValueError(f"layer '{layer.name}': saved variable of shape {value.shape} for "
                                 f"{var.name} {tuple(var.shape)}")
            var.assign(value)
            by_name[_base_name(var.name)] = value
        for var in own[:len(own) - k]:
            same = by_name.get(_base_name(var.name))
            if same is None or tuple(var.shape) != same.shape:
                raise ValueError(f"layer '{layer.name}': no saved value for {var.name}")
            var.assign(same)
    return load_own_variables


def _base_name(name: str) -> str:
    return name.split("/")[-1].split(":")[0]


def _load_savedmodel(p: Path, fmt: SourceFormat, sha: str, size: int) -> LoadedModel:
    import tensorflow as tf

    obj = tf.saved_model.load(str(p))
    sigs = getattr(obj, "signatures", {})
    if "serving_default" not in sigs:
        raise ModelLoadError(f"SavedModel {p} has no 'serving_default' signature",
                             hint="export it with model.export(path) or tf.saved_model.save(..., signatures=...)")
    sig = sigs["serving_default"]
    _, kwargs = sig.structured_input_signature
    inputs = []
    for name in sorted(kwargs):
        spec = kwargs[name]
        dims = list(spec.shape)
        inputs.append(InputSpec(name, tuple(None if d is None else int(d) for d in dims[1:]), spec.dtype.name))
    return LoadedModel(p, fmt, inputs, saved_model=obj, signature=sig, sha256=sha, size=size)
