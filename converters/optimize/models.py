"""Models for optimize: load the source, get a tf_keras copy (tfmot's only input), check teacher and student,
convert the result, count params and MACs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import ModelLoadError
from ..loading import LoadedModel, SourceFormat, load_model
from .errors import ModelShapeError, RecipeError

def load_source(path: Path) -> LoadedModel:
    src = load_model(path)
    if src.keras_model is None:
        raise ModelShapeError(f"{path} is a SavedModel; optimize fine-tunes Keras models",
                              hint="pass the .keras or .h5 model the SavedModel was exported from")
    return src


def as_tf_keras(src: LoadedModel):
    """The tf_keras model tfmot can wrap: the model itself (tf_keras sources) or a rebuild of a Keras 3 model."""
    if src.format.flavor == "tf_keras":
        return src.keras_model
    from ..keras_bridge import to_tf_keras

    return to_tf_keras(src.keras_model)


def load_tf_keras(path: Path, what: str):
    try:
        src = load_model(path)
    except ModelLoadError as exc:
        raise type(exc)(f"{what}: {exc.message}", hint=exc.hint) from exc
    if src.keras_model is None:
        raise ModelShapeError(f"{what} {path} is a SavedModel", hint="pass a .keras or .h5 model")
    return as_tf_keras(src)


def output_classes(model) -> int | None:
    shape = list(model.outputs[0].shape)
    return int(shape[-1]) if shape and shape[-1] is not None else None


def _shape(t) -> list:
    return [None if d is None else int(d) for d in list(t.shape)[1:]]


def check_student_teacher(run, chain, src: LoadedModel) -> None:
    """Pick teacher and student for distill/separable and check they fit each other and the data."""
    o = run.opts
    distills = chain.has("distill") or chain.has("separable")
    if not distills:
        if o.teacher or o.student:
            raise RecipeError("--teacher and --student apply to the distill and separable recipes",
                              hint="add distill to --recipe, or drop --teacher/--student")
        return
    if chain.has("separable") and o.student:
        raise RecipeError("separable builds its own student; --student cannot be combined with it",
                          hint="drop --student, or use distill alone")
    teacher = load_tf_keras(o.teacher, "teacher") if o.teacher else run.model
    if o.student:
        run.model = load_tf_keras(o.student, "student")
    elif chain.has("distill") and not chain.has("separable") and not o.teacher:
        raise RecipeError("distill needs a student: pass --student MODEL (the input model is the teacher), or "
                          "--teacher MODEL to distill into the input model", hint="or use separable,distill")
    from .distill import check_pair

    check_pair(teacher, run.model)
    got, want = _shape(run.model.inputs[0]), list(src.inputs[0].shape)
    if got != want:
        raise ModelShapeError(f"the student's input shape {got} differs from the data's {want}",
                              hint="the student must take the same inputs as MODEL")
    run.teacher = teacher


def wrap(model, src: LoadedModel) -> LoadedModel:
    """The converter's view of a tf_keras model built in this run (same inputs as the source)."""
    return LoadedModel(src.path, SourceFormat(src.format.kind, "tf_keras"), list(src.inputs), keras_model=model,
                       sha256=src.sha256, size=src.size)


def convert(model, src: LoadedModel, plan, dataset, *, sparsity: bool = False, per_tensor: bool = False) -> bytes:
    from ..tflite import convert as tfl_convert

    return tfl_convert(wrap(model, src), plan, dataset if plan.mode in ("int8", "int16x8") else None,
                       sparsity=sparsity, per_tensor=per_tensor)


def params_macs(model) -> dict[str, Any]:
    from .separable import count_params_macs

    counted = count_params_macs(model)
    return {"params": counted["params"], "macs": counted["macs"]}


def versions() -> dict[str, str]:
    out = {}
    for dist in ("tf_keras", "tensorflow_model_optimization", "ai_edge_quantizer"):
        try:
            from importlib.metadata import version

            out[dist] = version(dist.replace("_", "-"))
        except Exception:  # noqa: BLE001 - not installed
            continue
    return out
