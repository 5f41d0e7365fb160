"""Calibration and evaluation data: .npy/.npz arrays, an image directory, or a ``module:function`` generator.

Each source is a registered object with ``matches(spec)`` and ``load(...)``; the result is a :class:`Dataset` with
one array ``[N, *input_shape]`` per model input (float32, or the input's integer dtype), checked by
:mod:`converters.calibration_qa`.
"""

from __future__ import annotations

import importlib
import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from edgekit.arrays import load_arrays
from edgekit.errors import ArrayFileError

from . import calibration_qa as qa
from .errors import CalibrationError
from .loading import InputSpec

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".ppm", ".pgm", ".tif", ".tiff", ".webp"}
GENERATOR_RE = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")


@dataclass
class Normalize:
    """x * scale + offset, applied to every source after loading."""

    scale: float = 1.0
    offset: float = 0.0

    def apply(self, arr: np.ndarray) -> np.ndarray:
        out = arr.astype(np.float32)
        if self.scale != 1.0 or self.offset != 0.0:
            out = out * np.float32(self.scale) + np.float32(self.offset)
        return out


@dataclass
class Dataset:
    source: str
    kind: str
    arrays: list[np.ndarray]  # one per model input, [N, ...]: float32 or the input's integer dtype
    labels: np.ndarray | None = None
    stats: dict[str, qa.Stats] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return int(self.arrays[0].shape[0])

    def take(self, idx: slice | np.ndarray) -> "Dataset":
        arrays = [a[idx] for a in self.arrays]
        stats = {name: qa.stats(a) for name, a in zip(self.stats, arrays)} if len(arrays[0]) else {}
        return Dataset(self.source, self.kind, arrays, None if self.labels is None else self.labels[idx], stats,
                       self.warnings)

    def samples(self, k: int) -> list[np.ndarray]:
        return [a[:k] for a in self.arrays]


class Source:
    kind: ClassVar[str]

    def matches(self, spec: str) -> bool:
        raise NotImplementedError

    def load(self, spec: str, inputs: list[InputSpec], limit: int | None) -> tuple[list[np.ndarray], np.ndarray | None]:
        raise NotImplementedError


SOURCES: list[Source] = []


def register_source(cls):
    SOURCES.append(cls())
    return cls


def _pick_arrays(arrays: dict[str, np.ndarray], inputs: list[InputSpec], spec: str) -> list[np.ndarray]:
    names = [i.name for i in inputs]
    if all(n in arrays for n in names):
        return [arrays[n] for n in names]
    if len(inputs) == 1:
        if "x" in arrays:
            return [arrays["x"]]
        data_keys = [k for k in arrays if k not in ("y", "labels")]
        if len(data_keys) == 1:
            return [arrays[data_keys[0]]]
    raise CalibrationError(f"{spec} holds arrays {sorted(arrays)}; cannot tell which feeds model input(s) {names}",
                           hint="name the arrays after the model inputs, or use 'x' for a single-input model")


OBJECT_ARRAY_HINT = "store numbers, not Python objects: numpy.save(path, x.astype(numpy.float32))"


def _read_arrays(p: Path) -> dict[str, np.ndarray]:
    """Every array of an .npy/.npz file; object (pickled) arrays are refused, never unpickled."""
    try:
        arrays, _ = load_arrays(p, single="x", what=str(p))
    except ArrayFileError as exc:
        if isinstance(exc.original, ValueError) and "allow_pickle" in str(exc.original):
            raise CalibrationError(f"{p} holds an object array (dtype object, saved with pickling), not numbers",
                                   hint=OBJECT_ARRAY_HINT) from None
        raise CalibrationError(f"cannot read {p}: {exc.original}",
                               hint="write it with numpy.save / numpy.savez") from None
    return arrays


@register_source
class ArrayFile(Source):
    kind = "arrays"

    def matches(self, spec):
        return spec.endswith((".npz", ".npy"))

    def load(self, spec, inputs, limit):
        p = Path(spec)
        if not p.is_file():
            raise CalibrationError(f"data file {p} does not exist")
        arrays = _read_arrays(p)
        chosen = _pick_arrays(arrays, inputs, spec)
        labels = arrays.get("y", arrays.get("labels"))
        if limit:
            chosen = [a[:limit] for a in chosen]
            labels = None if labels is None else labels[:limit]
        return chosen, labels


@register_source
class ImageDirectory(Source):
    kind = "images"

    def matches(self, spec):
        return Path(spec).is_dir()

    def load(self, spec, inputs, limit):
        if len(inputs) != 1 or len(inputs[0].shape) != 3:
            raise CalibrationError("an image directory can only feed a single [H, W, C] model input",
                                   hint="pass an .npz with one array per input instead")
        try:
            from PIL import Image
        except ModuleNotFoundError:
            from edgekit.errors import MissingExtraError

            raise MissingExtraError("convert", "PIL") from None
        h, w, c = inputs[0].shape
        if h is None or w is None:
            raise CalibrationError("the model input has no fixed size to resize images to")
        files = sorted(q for q in Path(spec).rglob("*") if q.suffix.lower() in IMAGE_SUFFIXES)
        if limit:
            files = files[:limit]
        mode = {1: "L", 3: "RGB", 4: "RGBA"}.get(c)
        if mode is None:
            raise CalibrationError(f"cannot make {c}-channel inputs from images")
        out = []
        for q in files:
            try:
                with Image.open(q) as im:
                    im = im.convert(mode).resize((w, h), Image.BILINEAR)
                    arr = np.asarray(im, dtype=np.float32)
            except OSError as exc:
                raise CalibrationError(f"cannot read image {q}: {exc}") from exc
            out.append(arr.reshape(h, w, c))
        if not out:
            raise CalibrationError(f"no images ({', '.join(sorted(IMAGE_SUFFIXES))}) in {spec}")
        return [np.stack(out)], folder_labels(Path(spec), files)


def folder_labels(root: Path, files: list[Path]) -> np.ndarray | None:
    """Labels from class subfolders (``root/<class>/<image>``): the folder name when every name is a whole number,
    else its index in the sorted folder names. None unless every image sits directly in a subfolder."""
    parents = [q.parent for q in files]
    if any(p.parent != root for p in parents):
        return None
    names = sorted({p.name for p in parents})
    if all(n.isdigit() for n in names):
        return np.asarray([int(p.name) for p in parents], np.int64)
    index = {n: i for i, n in enumerate(names)}
    return np.asarray([index[p.name] for p in parents], np.int64)


@register_source
class Generator(Source):
    kind = "generator"

    def matches(self, spec):
        return bool(GENERATOR_RE.match(spec)) and not Path(spec).exists()

    def load(self, spec, inputs, limit):
        mod_name, fn_name = spec.split(":")
        if os.getcwd() not in sys.path:
            sys.path.insert(0, os.getcwd())
        try:
            fn = getattr(importlib.import_module(mod_name), fn_name)
        except (ImportError, AttributeError) as exc:
            raise CalibrationError(f"cannot import generator {spec}: {exc}",
                                   hint="pass module:function with the module importable from the current directory"
                                   ) from exc
        names = [i.name for i in inputs]
        cols: list[list[np.ndarray]] = [[] for _ in inputs]
        labels: list = []
        limit = limit or 1000
        for k, sample in enumerate(fn()):
            if k >= limit:
                break
            label = None
            if isinstance(sample, dict):
                missing = [n for n in names if n not in sample]
                if missing:
                    raise CalibrationError(f"generator {spec} yielded keys {sorted(sample)}, missing {missing}")
                parts = [sample[n] for n in names]
                label = sample.get("y", sample.get("label"))
            elif isinstance(sample, (list, tuple)):
                parts = list(sample)
                if len(parts) == len(inputs) + 1:  # (x, y): the last item is the label
                    label = parts.pop()
            else:
                parts = [sample]
            if label is not None or labels:
                if label is None:
                    raise CalibrationError(f"generator {spec}: sample {k} has no label while earlier ones had")
                labels.append(np.asarray(label).reshape(-1)[0] if np.ndim(label) else label)
            if len(parts) != len(inputs):
                raise CalibrationError(f"generator {spec} yields {len(parts)} array(s) per sample, "
                                       f"the model has {len(inputs)} input(s)")
            for j, (part, inp) in enumerate(zip(parts, inputs)):
                a = np.asarray(part)
                if a.ndim == len(inp.shape) + 1 and a.shape[0] == 1:
                    a = a[0]
                cols[j].append(a)
        if not cols[0]:
            raise CalibrationError(f"generator {spec} yielded no samples")
        try:
            return [np.stack(c) for c in cols], (np.asarray(labels) if labels else None)
        except ValueError as exc:
            raise CalibrationError(f"generator {spec} yielded samples of different shapes: {exc}") from exc


def find_source(spec: str) -> Source:
    for src in SOURCES:
        if src.matches(spec):
            return src
    if not Path(spec).exists() and not GENERATOR_RE.match(spec):
        raise CalibrationError(f"data {spec} does not exist")
    raise CalibrationError(f"cannot tell what kind of data {spec} is",
                           hint="use a .npz/.npy file, an image directory, or module:function")


def load_dataset(spec: str | os.PathLike, inputs: list[InputSpec], *, limit: int | None = None,
                 normalize: Normalize | None = None, what: str = "calibration", minimum: int = qa.MIN_SAMPLES,
                 expected_range: tuple[float, float] | None = None, model_rescales: bool = False,
                 reference: dict[str, qa.Stats] | None = None) -> Dataset:
    spec = str(spec)
    src = find_source(spec)
    raw, labels = src.load(spec, inputs, limit)
    normalize = normalize or Normalize()
    arrays, stats, warnings = [], {}, []
    for arr, inp in zip(raw, inputs):
        name = f"{what} input '{inp.name}'"
        qa.check_dtype(arr, name)
        integer_input = np.dtype(inp.dtype).kind in "iu"
        arr = _as_integer(arr, inp.dtype, name) if integer_input else normalize.apply(arr)
        s = qa.check_all(arr, inp.shape, name, minimum=minimum, what=what)
        stats[inp.name] = s
        if not integer_input:  # ids and counts have no pixel-like range to warn about; --scale does not apply
            warnings += qa.range_warnings(s, name, expected=expected_range, model_rescales=model_rescales,
                                          reference=(reference or {}).get(inp.name))
        arrays.append(arr)
    if labels is not None:
        labels = np.asarray(labels)
        if labels.shape[0] != arrays[0].shape[0]:
            raise CalibrationError(f"{spec}: {labels.shape[0]} labels for {arrays[0].shape[0]} samples")
    return Dataset(spec, src.kind, arrays, labels, stats, warnings)


def _as_integer(arr: np.ndarray, dtype: str, name: str) -> np.ndarray:
    """Data for an integer model input (token ids, indices) keeps integer values, in the input's own dtype."""
    target = np.dtype(dtype)
    if arr.dtype.kind == "f" and not np.all(np.isfinite(arr) & (arr == np.round(arr))):
        raise CalibrationError(f"{name}: the model input is {target} but the data has fractional values",
                               hint=f"pass integer data (e.g. token ids) as {target}")
    info = np.iinfo(target)
    if arr.size and (arr.min() < info.min or arr.max() > info.max):
        raise CalibrationError(f"{name}: values {arr.min()}..{arr.max()} do not fit the model's {target} input")
    return arr.astype(target)


def describe(ds: Dataset) -> dict[str, Any]:
    return {"source": ds.source, "kind": ds.kind, "samples": len(ds),
            "labels": ds.labels is not None, "stats": {k: v.to_dict() for k, v in ds.stats.items()}}
