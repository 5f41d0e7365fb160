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
