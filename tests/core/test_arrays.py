"""The one .npy/.npz reader: paths, bytes and file objects in, arrays by name out; nothing else calls np.load."""

from __future__ import annotations

import io
import re
from pathlib import Path

import numpy as np
import pytest

from edgekit.arrays import load_arrays
from edgekit.errors import ArrayFileError, UsageError

REPO = Path(__file__).resolve().parents[2]


def test_npy_npz_from_path_bytes_and_file(tmp_path):
    a, b = np.arange(6, dtype=np.int8).reshape(2, 3), np.ones((1, 2), np.float32)
    np.save(tmp_path / "one.npy", a)
    np.savez(tmp_path / "two.npz", second=b, first=a)
    arrays, is_npy = load_arrays(tmp_path / "one.npy", single="x")
    assert is_npy and list(arrays) == ["x"] and np.array_equal(arrays["x"], a)
    arrays, is_npy = load_arrays((tmp_path / "two.npz").read_bytes())
    assert not is_npy and list(arrays) == ["second", "first"]  # the file's order
    assert np.array_equal(arrays["first"], a) and arrays["second"].dtype == np.float32
    with open(tmp_path / "one.npy", "rb") as f:
        assert list(load_arrays(f)[0]) == ["arr_0"]


@pytest.mark.parametrize("body", [b"", b"not numpy", b"\x93NUMPY\x01\x00garbage", b"PK\x03\x04truncated"])
def test_unreadable_input_is_one_usage_error(body, tmp_path):
    with pytest.raises(ArrayFileError) as e:
        load_arrays(body, what="the test body")
    assert isinstance(e.value, UsageError) and "the test body" in e.value.message and e.value.hint
    assert isinstance(e.value.original, Exception)
    with pytest.raises(ArrayFileError):
        load_arrays(tmp_path / "missing.npz")


def test_pickles_are_refused():
    buf = io.BytesIO()
    np.save(buf, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(ArrayFileError):
        load_arrays(buf.getvalue())


def test_no_other_product_module_reads_npy_itself():
    readers = [str(p.relative_to(REPO)) for pkg in ("edgekit", "converters", "device_agent", "fleet")
               for p in (REPO / pkg).rglob("*.py") if re.search(r"\bnp\.load\(", p.read_text())]
    assert readers == ["edgekit/arrays.py"]
