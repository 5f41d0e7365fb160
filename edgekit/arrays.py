"""``.npy`` / ``.npz`` -> named arrays: the one reader behind golden inputs, calibration data, ``agent infer`` and the
local API's tensor bodies. Each caller keeps its own rule for which arrays feed which model input."""

from __future__ import annotations

import io
import os
from typing import BinaryIO

import numpy as np

from .errors import ArrayFileError


def load_arrays(source: str | os.PathLike | bytes | BinaryIO, *, single: str = "arr_0",
                what: str = "array file") -> tuple[dict[str, np.ndarray], bool]:
    """Read an ``.npy`` or ``.npz`` (a path, the file's bytes, or a binary file object; never pickles).

    Returns ``(arrays, is_npy)``: the arrays by name in the file's order (an ``.npy`` gives one array named
    ``single``) and whether it was a plain ``.npy``. Anything unreadable is an :class:`ArrayFileError` that
    carries numpy's own exception as ``original``."""
    src = io.BytesIO(source) if isinstance(source, (bytes, bytearray, memoryview)) else source
    try:
        loaded = np.load(src, allow_pickle=False)
        if isinstance(loaded, np.ndarray):
            return {single: loaded}, True
        with loaded:
            return {k: loaded[k] for k in loaded.files}, False
    except Exception as exc:  # noqa: BLE001 - numpy raises OSError, ValueError, EOFError, zipfile/tokenize errors...
        raise ArrayFileError(what, exc) from exc
