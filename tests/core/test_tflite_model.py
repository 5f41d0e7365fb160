"""The flatbuffer reader agrees with LiteRT's own view of real models and rejects everything else."""

from __future__ import annotations

import os

import numpy as np
import pytest
from ai_edge_litert.interpreter import Interpreter

from edgekit.errors import NotTFLiteError
from edgekit.tflite_model import inspect_tflite


@pytest.mark.parametrize("fixture", ["digits_fp32_tflite", "digits_int8_tflite"])
def test_matches_litert(request, fixture):
    path = request.getfixturevalue(fixture)
    data = path.read_bytes()
    info = inspect_tflite(data)
    interp = Interpreter(model_content=data)
    for mine, theirs in [(info.inputs, interp.get_input_details()), (info.outputs, interp.get_output_details())]:
        assert len(mine) == len(theirs)
        for a, b in zip(mine, theirs):
            assert a.name == b["name"]
            assert a.dtype == np.dtype(b["dtype"]).name
            assert a.shape == list(b["shape"])
            scale, zp = b["quantization"]
            assert (a.scale[0] if a.scale else 0.0) == pytest.approx(scale)
            assert (a.zero_point[0] if a.zero_point else 0) == zp
    hist = info.op_histogram()
    assert hist["CONV_2D"] == 3 and hist["FULLY_CONNECTED"] == 2
    if fixture == "digits_int8_tflite":
        assert info.inputs[0].dtype == "int8"
        conv = next(op for op in info.main.ops if op.opcode == "CONV_2D")
        assert conv.fused_activation() == "RELU"
    assert 0 < info.parameter_bytes < len(data)


def test_rejects_non_flatbuffers(digits_fp32_tflite):
    with pytest.raises(NotTFLiteError, match="TFL3"):
        inspect_tflite(b"hello world, not a model")
    data = digits_fp32_tflite.read_bytes()
    with pytest.raises(NotTFLiteError):
        inspect_tflite(data[:200])
    rng = np.random.default_rng(1)
    for _ in range(200):
        junk = bytearray(data[:8]) + bytearray(os.urandom(int(rng.integers(8, 4000))))
        try:
            inspect_tflite(bytes(junk))
        except NotTFLiteError:
            pass


@pytest.mark.parametrize("mode", ["fp32", "fp16", "int8"])
def test_weight_tensors_match_litert(mode, digits):
    """One locator finds each weight op's stored constant, through the DEQUANTIZE of fp16 weight-only storage."""
    from tests.support.models import digits_tflite

    from edgekit.tflite_model import weight_tensors

    data = digits_tflite(mode).read_bytes()
    info = inspect_tflite(data)
    found = weight_tensors(info)
    assert [w.op.opcode for w in found] == ["CONV_2D"] * 3 + ["FULLY_CONNECTED"] * 2
    details = {d["index"]: d for d in Interpreter(model_content=data).get_tensor_details()}
    for w in found:
        assert w.tensor.index == w.op.inputs[1]
        theirs = details[w.stored.index]
        assert w.stored.name == theirs["name"] and w.stored.shape == list(theirs["shape"])
        assert w.stored.dtype == np.dtype(theirs["dtype"]).name == {"fp32": "float32", "fp16": "float16",
                                                                      "int8": "int8"}[mode]
        assert w.stored_bytes == int(np.prod(w.stored.shape)) * np.dtype(w.stored.dtype).itemsize
        if mode == "fp16":
            assert w.via == "DEQUANTIZE" and w.tensor.dtype == "float32" and w.stored is not w.tensor
        else:
            assert w.via is None and w.stored is w.tensor
        assert not w.sparse
    assert weight_tensors(info, ("FULLY_CONNECTED",), main_only=True) == found[3:]
