"""Tensor bodies of the local API, pure functions: JSON, raw ``.npy`` and ``.npz`` in; JSON, npy or npz out.

Inputs are validated against the model's input specs (count, dtype, shape). JSON numbers are cast to the input's
dtype only when that is exact (integers within range for integer inputs); ``.npy``/``.npz`` arrays must carry the
input's dtype. A leading batch dimension of 1 may be left out.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np

from edgekit.arrays import load_arrays
from edgekit.errors import ArrayFileError

from .errors import InvalidInputError

JSON = "application/json"
NPY = "application/x-npy"
NPZ = "application/x-npz"


def _fit_shape(arr: np.ndarray, spec: Any) -> np.ndarray:
    shape = tuple(spec.shape)
    if arr.shape == shape:
        return arr
    if len(shape) >= 1 and shape[0] == 1 and arr.shape == shape[1:]:
        return arr.reshape(shape)
    raise InvalidInputError(f"input {spec.name!r} has shape {list(arr.shape)}, the model expects {list(shape)}")


def _from_json_value(value: Any, spec: Any) -> np.ndarray:
    try:
        arr = np.asarray(value)
    except (ValueError, TypeError) as exc:
        raise InvalidInputError(f"input {spec.name!r} is not a rectangular array of numbers") from exc
    if arr.dtype == object or arr.dtype.kind not in "biuf" or (arr.dtype.kind == "b" and spec.dtype.kind != "b"):
        raise InvalidInputError(f"input {spec.name!r} must be a rectangular array of numbers")
    dtype = spec.dtype
    if dtype.kind in "iu":
        if arr.dtype.kind == "f":
            if not np.all(np.isfinite(arr)) or not np.all(arr == np.round(arr)):
                raise InvalidInputError(f"input {spec.name!r} is {dtype}: its values must be integers")
        info = np.iinfo(dtype)
        if arr.size and (arr.min() < info.min or arr.max() > info.max):
            raise InvalidInputError(f"input {spec.name!r} is {dtype}: values must lie in [{info.min}, {info.max}]")
    return _fit_shape(arr.astype(dtype), spec)


def decode_json(body: bytes, specs: Sequence[Any]) -> list[np.ndarray]:
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidInputError("the request body is not valid JSON") from exc
    if not isinstance(data, dict) or "inputs" not in data:
        raise InvalidInputError('the JSON body must be an object with "inputs" (a list, or an object by input name)')
    raw = data["inputs"]
    if isinstance(raw, dict):
        names = [s.name for s in specs]
        unknown = sorted(set(raw) - set(names))
        if unknown:
            raise InvalidInputError(f"unknown input name(s) {unknown}; the model's inputs are {names}")
        missing = [n for n in names if n not in raw]
        if missing:
            raise InvalidInputError(f"missing input(s) {missing}")
        values = [raw[n] for n in names]
    elif isinstance(raw, list):
        if len(specs) == 1 and _looks_like_single(raw, specs[0]):
            values = [raw]
        else:
            values = raw
    else:
        raise InvalidInputError('"inputs" must be a list or an object')
    if len(values) != len(specs):
        raise InvalidInputError(f"the model takes {len(specs)} input(s), got {len(values)}")
    return [_from_json_value(v, s) for v, s in zip(values, specs)]


def _looks_like_single(raw: list, spec: Any) -> bool:
    """For a one-input model, ``"inputs": <tensor>`` is accepted as well as ``"inputs": [<tensor>]``."""
    try:
        ndim = np.asarray(raw).ndim
    except (ValueError, TypeError):
        return False
    return ndim > 0 and ndim in (len(spec.shape), len(spec.shape) - 1)


def _load(body: bytes, what: str) -> tuple[dict[str, np.ndarray], bool]:
    """The body's arrays by name and whether it was an ``.npy`` (see :func:`edgekit.arrays.load_arrays`)."""
    if what == ".npy":
        fast = read_npy(body)
        if fast is not None:
            return {"arr_0": fast}, True
    try:
        return load_arrays(body, what="the request body")
    except ArrayFileError as exc:
        err = exc.original
        raise InvalidInputError(f"the request body is not a valid {what} file ({type(err).__name__}: {err})") from None


# --- fast .npy: the header of a given dtype/shape is parsed (or written) once, then cached -------------------------

_NPY_MAGIC = b"\x93NUMPY"
_HEADER_CACHE_MAX = 64
_read_cache: dict[bytes, tuple[np.dtype, tuple[int, ...]] | None] = {}
_write_cache: dict[tuple[str, tuple[int, ...]], bytes] = {}


def _header_span(body: bytes) -> tuple[int, int] | None:
    if len(body) < 10 or body[:6] != _NPY_MAGIC:
        return None
    major = body[6]
    if major == 1:
        start, hlen = 10, int.from_bytes(body[8:10], "little")
    elif major in (2, 3) and len(body) >= 12:
        start, hlen = 12, int.from_bytes(body[8:12], "little")
    else:
        return None
    return start, start + hlen


def read_npy(body: bytes) -> np.ndarray | None:
    """Decode a C-ordered, non-object .npy without re-parsing a header seen before; None → use np.load."""
    span = _header_span(body)
    if span is None or span[1] > len(body):
        return None
    header = bytes(body[:span[1]])
    meta = _read_cache.get(header, False)
    if meta is False:
        try:
            with io.BytesIO(body) as f:
                major, _ = np.lib.format.read_magic(f)
                reader = np.lib.format.read_array_header_1_0 if major == 1 else np.lib.format.read_array_header_2_0
                shape, fortran, dtype = reader(f)
        except Exception:  # noqa: BLE001 - malformed header: np.load reports it
            return None
        meta = None if (fortran or dtype.hasobject) else (dtype, tuple(shape))
        if len(_read_cache) >= _HEADER_CACHE_MAX:
            _read_cache.clear()
        _read_cache[header] = meta
    if meta is None:
        return None
    dtype, shape = meta
    count = 1
    for d in shape:
        count *= d
    if len(body) - span[1] != count * dtype.itemsize:
        return None  # truncated or trailing bytes: let np.load produce the error
    return np.frombuffer(body, dtype=dtype, count=count, offset=span[1]).reshape(shape)


def _check_dtype(arr: np.ndarray, spec: Any) -> np.ndarray:
    if arr.dtype != spec.dtype:
        raise InvalidInputError(f"input {spec.name!r} has dtype {arr.dtype}, the model expects {spec.dtype}")
    return _fit_shape(arr, spec)


def decode_npy(body: bytes, specs: Sequence[Any]) -> list[np.ndarray]:
    if len(specs) != 1:
        raise InvalidInputError(f"the model takes {len(specs)} inputs: send an .npz ({NPZ}) with one array each")
    arrays, is_npy = _load(body, ".npy")
    if not is_npy:
        raise InvalidInputError("the request body is an .npz, send it as " + NPZ)
    return [_check_dtype(arrays["arr_0"], specs[0])]


def decode_npz(body: bytes, specs: Sequence[Any]) -> list[np.ndarray]:
    arrays, is_npy = _load(body, ".npz")
    if is_npy:
        return decode_npy(body, specs)
    names = [s.name for s in specs]
    if all(n in arrays for n in names):
        chosen = [arrays[n] for n in names]
    elif all(f"arr_{i}" in arrays for i in range(len(specs))) and len(arrays) == len(specs):
        chosen = [arrays[f"arr_{i}"] for i in range(len(specs))]
    else:
        raise InvalidInputError(f"the .npz holds {sorted(arrays)}; name the arrays {names} (or arr_0..)")
    return [_check_dtype(a, s) for a, s in zip(chosen, specs)]


DECODERS: dict[str, Callable[[bytes, Sequence[Any]], list[np.ndarray]]] = {
    JSON: decode_json, NPY: decode_npy, "application/octet-stream": decode_npy, NPZ: decode_npz,
}


def media_type(content_type: str | None) -> str:
    return (content_type or JSON).split(";", 1)[0].strip().lower()


@dataclass
class Encoded:
    content_type: str
    body: bytes


def encode_npy(arr: np.ndarray) -> bytes:
    """``np.save`` bytes; the header of each (dtype, shape) is built once."""
    if not arr.flags.c_contiguous:
        arr = np.ascontiguousarray(arr)  # (never for 0-d arrays, which it would turn into 1-d)
    if arr.dtype.hasobject:
        raise InvalidInputError("object arrays cannot be sent")
    key = (arr.dtype.str, arr.shape)
    header = _write_cache.get(key)
    if header is None:
        buf = io.BytesIO()
        np.save(buf, arr, allow_pickle=False)
        full = buf.getvalue()
        header = full[:len(full) - arr.nbytes]
        if len(_write_cache) >= _HEADER_CACHE_MAX:
            _write_cache.clear()
        _write_cache[key] = header
    return header + arr.tobytes()


def encode_outputs(outputs: Sequence[np.ndarray], specs: Sequence[Any], request_type: str,
                   meta: dict[str, Any]) -> Encoded:
    """JSON answers JSON (with ``meta``); npy answers npy for one output, npz otherwise (meta in headers)."""
    if request_type == JSON:
        doc = dict(meta)
        doc["outputs"] = [{"name": s.name, "dtype": a.dtype.name, "shape": list(a.shape), "data": a.tolist()}
                          for s, a in zip(specs, outputs)]
        return Encoded(JSON, json.dumps(doc, separators=(",", ":")).encode())
    if len(outputs) == 1 and request_type != NPZ:
        return Encoded(NPY, encode_npy(outputs[0]))
    buf = io.BytesIO()
    np.savez(buf, **{s.name: a for s, a in zip(specs, outputs)})
    return Encoded(NPZ, buf.getvalue())


def decode_json_outputs(doc: dict[str, Any]) -> list[np.ndarray]:
    return [np.asarray(o["data"], dtype=np.dtype(o["dtype"])).reshape(o["shape"]) for o in doc["outputs"]]
