"""ONNX (and so PyTorch, through ``torch.onnx.export``) as a source model.

onnx2tf turns the ONNX graph into a tf_keras model with batch 1 (inputs kept in the ONNX layout, e.g. NCHW, so the
calibration and evaluation data are the same arrays the ONNX model takes); from there the model goes through the
same frozen-concrete-function conversion, calibration, fallback, precheck and bundle as a Keras model. The float
reference for accuracy is the ONNX model itself run in onnxruntime, and the report adds the agreement between
onnxruntime and the fp32 TFLite conversion, so that an ONNX→TF conversion error is never read as quantization loss.

The op check (:func:`unsupported_node`) is pure: it reads the graph and the set of ops onnx2tf implements.
"""

from __future__ import annotations

import contextlib
import io
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from edgekit.errors import MissingExtraError
from edgekit.extras import require

from .errors import ModelLoadError
from .loading import InputSpec, LoadedModel, SourceFormat

ONNX2TF_VERSION = "1.29.24"  # the pin of requirements/constraints.txt
STANDARD_DOMAINS = ("", "ai.onnx")
# an onnxruntime session on a model with a dynamic batch runs the evaluation data this many samples at a time
ORT_BATCH = 64
# below this top-1 agreement between onnxruntime and the fp32 TFLite, the report warns that the ONNX→TF
# conversion itself changed the model
FLOAT_AGREEMENT_WARN = 0.99


class UnsupportedOnnxOpError(ModelLoadError):
    """The ONNX graph has an op that onnx2tf cannot convert."""

    default_hint = ("re-export the model without that op (e.g. a supported equivalent in the PyTorch module, or a "
                    "lower opset in torch.onnx.export), or convert the part before it")


def onnx2tf_ops() -> frozenset[str]:
    """The ONNX op types onnx2tf implements: one module per op in ``onnx2tf.ops``."""
    import pkgutil

    import onnx2tf.ops as ops

    return frozenset(m.name for m in pkgutil.iter_modules(ops.__path__) if m.name[:1].isupper())


@dataclass(frozen=True)
class Node:
    op_type: str
    name: str
    domain: str = ""


def unsupported_node(nodes: Iterable[Node], supported: frozenset[str]) -> Node | None:
    """The first node whose op the converter cannot take (a custom domain, or an op type it lacks)."""
    for node in nodes:
        if node.domain not in STANDARD_DOMAINS or node.op_type not in supported:
            return node
    return None


def graph_nodes(graph) -> list[Node]:
    """Every node of an onnx GraphProto, nested subgraphs (If/Loop bodies) included."""
    out: list[Node] = []
    for i, n in enumerate(graph.node):
        out.append(Node(n.op_type, n.name or f"#{i}", n.domain))
        for attr in n.attribute:
            if attr.g is not None and len(attr.g.node):
                out.extend(graph_nodes(attr.g))
    return out


def onnx_inputs(graph) -> list[InputSpec]:
    """The graph's real inputs (initializers excluded), batch dimension dropped; other dynamic dims are None."""
    from onnx import helper

    inits = {t.name for t in graph.initializer}
    specs = []
    for vi in graph.input:
        if vi.name in inits:
            continue
        tt = vi.type.tensor_type
        dims = [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None for d in tt.shape.dim]
        dtype = np.dtype(helper.tensor_dtype_to_np_dtype(tt.elem_type)).name
        specs.append(InputSpec(vi.name, tuple(dims[1:]), dtype))
    return specs


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:300] if text else type(exc).__name__


@dataclass
class OnnxModel(LoadedModel):
    """A LoadedModel whose float reference is the ONNX model in onnxruntime (``keras_model`` is onnx2tf's)."""

    session: Any = field(default=None, repr=False)
    parameters: int = 0
    output_sizes: list[int | None] = field(default_factory=list)
    onnx2tf_version: str = ""

    @property
    def first_layer_names(self) -> list[str]:
        return []

    @property
    def first_output_size(self) -> int | None:
        return self.output_sizes[0] if self.output_sizes else None

    def float_parameters(self) -> int:
        return self.parameters

    def predict(self, arrays: list[np.ndarray], batch: int = ORT_BATCH) -> list[np.ndarray] | None:
        """The ONNX model's outputs in onnxruntime, in the layout of onnx2tf's outputs (NCHW outputs → NHWC)."""
        sess = self.session
        fixed = [i.shape[0] for i in sess.get_inputs() if isinstance(i.shape[0], int)]
        step = fixed[0] if fixed else batch  # an exported batch size must be fed exactly: pad the last chunk
        names = [i.name for i in sess.get_inputs()]
        dtypes = {s.name: s.dtype for s in self.inputs}
        n = arrays[0].shape[0]
        outs: list[list[np.ndarray]] = []
        for start in range(0, n, step):
            take = min(step, n - start)
            feed = {}
            for name, a in zip(names, arrays):
                chunk = np.asarray(a[start:start + take], dtype=dtypes.get(name, a.dtype))
                if fixed and take < step:
                    chunk = np.concatenate([chunk, np.repeat(chunk[-1:], step - take, axis=0)])
                feed[name] = chunk
            outs.append([o[:take] for o in sess.run(None, feed)])
        ref = [np.concatenate([o[j] for o in outs]) for j in range(len(outs[0]))]
        tf_shapes = [tuple(t.shape[1:]) for t in getattr(self.keras_model, "outputs", [])]
        return [_to_layout(r, s) for r, s in zip(ref, tf_shapes)] if len(tf_shapes) == len(ref) else ref


def _to_layout(ref: np.ndarray, tf_shape: tuple) -> np.ndarray:
    """onnx2tf emits channel-last outputs: move the ONNX channel axis last when that is what makes shapes agree."""
    if tuple(ref.shape[1:]) == tuple(tf_shape) or ref.ndim < 3:
        return ref
    perm = (0, *range(2, ref.ndim), 1)
    moved = ref.transpose(perm)
    return moved if tuple(moved.shape[1:]) == tuple(tf_shape) else ref


def load_onnx(path: Path, sha: str, size: int) -> OnnxModel:
    """Check the graph, convert it with onnx2tf (batch 1, input layout kept) and open it in onnxruntime."""
    onnx = require("onnx", "convert")
    require("onnxruntime", "convert")
    require("tensorflow", "convert")
    onnx2tf = _require_onnx2tf()
    try:
        proto = onnx.load(str(path))
    except Exception as exc:  # noqa: BLE001 - protobuf DecodeError, OSError ...
        raise ModelLoadError(f"cannot load {path} as an ONNX model: {_first_line(exc)}",
                             hint="export it again (torch.onnx.export) and check it with onnx.checker") from exc
    try:
        onnx.checker.check_model(proto)
        session = None
    except Exception as exc:  # noqa: BLE001 - the checker is stricter than old exporters (IR < 4 initializers)
        try:
            session = _session(proto)  # what onnxruntime runs is a usable model
        except ModelLoadError:
            raise ModelLoadError(f"cannot load {path} as an ONNX model: {_first_line(exc)}",
                                 hint="export it again (torch.onnx.export) and check it with onnx.checker") from exc
    bad = unsupported_node(graph_nodes(proto.graph), onnx2tf_ops())
    if bad is not None:
        where = f"{bad.domain}:" if bad.domain not in STANDARD_DOMAINS else ""
        raise UnsupportedOnnxOpError(f"ONNX op {where}{bad.op_type} (node '{bad.name}') in {path.name} cannot be "
                                     f"converted to TFLite (onnx2tf {onnx2tf.__version__})")
    inputs = onnx_inputs(proto.graph)
    if not inputs:
        raise ModelLoadError(f"{path} has no inputs")
    for spec in inputs:
        if any(d is None for d in spec.shape):
            shown = ["?" if d is None else d for d in spec.shape]
            raise ModelLoadError(f"ONNX input '{spec.name}' has a dynamic dimension {shown} beyond the batch",
                                 hint="export it with a fixed size (torch.onnx.export without "
                                 "dynamic_axes on that dimension)")
    keras_model = _onnx2tf(onnx2tf, path, inputs)
    session = session or _session(proto)
    params = sum(int(np.prod(t.dims)) for t in proto.graph.initializer
                 if t.data_type in (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.DOUBLE,
                                    onnx.TensorProto.BFLOAT16))
    sizes = []
    for vi in proto.graph.output:
        out_dims = [int(d.dim_value) for d in vi.type.tensor_type.shape.dim[1:]
                    if d.HasField("dim_value") and d.dim_value > 0]
        static = len(out_dims) == len(vi.type.tensor_type.shape.dim) - 1
        sizes.append(int(np.prod(out_dims)) if static else None)
    return OnnxModel(path, SourceFormat("onnx", "onnx"), inputs, keras_model=keras_model, sha256=sha, size=size,
                     session=session, parameters=params, output_sizes=sizes,
                     onnx2tf_version=str(onnx2tf.__version__))


def _require_onnx2tf():
    try:
        return require("onnx2tf", "convert")
    except MissingExtraError as exc:  # [convert] cannot carry onnx2tf: it pins tensorflow==2.19 and numpy==1.26
        exc.hint = f"install it without its dependencies: pip install --no-deps onnx2tf=={ONNX2TF_VERSION}"
        raise


def versions(model: LoadedModel) -> dict[str, str]:
    """The ONNX tools that made an ONNX model's conversion (empty for other sources): report and provenance."""
    if not isinstance(model, OnnxModel):
        return {}
    import onnx
    import onnxruntime

    return {"onnx2tf": model.onnx2tf_version, "onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__}


def _onnx2tf(onnx2tf, path: Path, inputs: list[InputSpec]):
    keep = [s.name for s in inputs if 2 <= len(s.shape) <= 4]  # NCW / NCHW / NCDHW stay as exported
    with tempfile.TemporaryDirectory(prefix="edgekit-onnx2tf-") as tmp, _quiet():
        try:
            model = onnx2tf.convert(input_onnx_file_path=str(path), output_folder_path=tmp, batch_size=1,
                                    keep_ncw_or_nchw_or_ncdhw_input_names=keep or None, not_use_onnxsim=True,
                                    disable_model_save=True, non_verbose=True)
        except (Exception, SystemExit) as exc:  # noqa: BLE001 - onnx2tf raises anything, and exits on some errors
            raise ModelLoadError(f"onnx2tf cannot convert {path.name}: {_first_line(exc)}",
                                 hint="simplify the graph (onnxsim) or export it with another opset") from None
    if model is None:
        raise ModelLoadError(f"onnx2tf produced no model for {path.name}")
    return model


@contextlib.contextmanager
def _quiet():
    """onnx2tf prints its progress on stdout; keep it off edgekit's output (--json prints there)."""
    with contextlib.redirect_stdout(io.StringIO()):
        yield


def _session(proto):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    opts.intra_op_num_threads = max(1, min(2, os.cpu_count() or 1))
    try:
        return ort.InferenceSession(proto.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    except Exception as exc:  # noqa: BLE001
        raise ModelLoadError(f"onnxruntime cannot run the ONNX model: {_first_line(exc)}") from exc


def float_agreement(model: LoadedModel, ds, reference: list[np.ndarray], names: list[str]) -> dict[str, Any] | None:
    """onnxruntime vs the fp32 TFLite conversion on the evaluation data (None for a non-ONNX model)."""
    if not isinstance(model, OnnxModel):
        return None
    from . import evaluate, metrics
    from .modes import Plan
    from .tflite import convert as tfl_convert

    fp32 = tfl_convert(model, Plan("fp32", "float", "cpu"))
    outs = evaluate.run_float_io(fp32, ds.arrays, names=names)
    r, c = reference[0], outs[0]
    if r.shape != c.shape:
        c = c.reshape(r.shape)
    result = metrics.compare(r, c, ds.labels)
    result["reference"] = "onnxruntime"
    result["converted"] = "fp32 tflite (onnx2tf)"
    return result


def agreement_warning(agreement: dict[str, Any] | None) -> str | None:
    if agreement is None or agreement["agreement"] >= FLOAT_AGREEMENT_WARN:
        return None
    return (f"the fp32 TFLite conversion agrees with onnxruntime on only {100 * agreement['agreement']:.1f}% of the "
            f"evaluation samples (max |error| {agreement['max_abs_error']:.3g}): the ONNX→TF conversion changed the "
            f"model, so the accuracy drop is not only quantization loss")
