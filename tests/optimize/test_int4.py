"""int4 / mixed int4-int8 weights with the real ai-edge-quantizer, read back with edgekit's flatbuffer reader and
run in LiteRT on the digits CNN."""

from __future__ import annotations

import numpy as np
import pytest

from converters.errors import CalibrationError, OptionError
from converters.evaluate import run_float_io
from converters.optimize.int4 import Int4Options, quantize_int4, type_histogram, weight_types
from edgekit.tflite_model import inspect_tflite


@pytest.fixture(scope="module")
def digits_data(digits):
    ev = np.load(digits["eval"])
    return {"x": ev["x"], "y": ev["y"], "calib": np.load(digits["calibration"])["x"]}


def _top1(model: bytes, data) -> float:
    out = run_float_io(model, [data["x"]])[0]
    return float(np.mean(np.argmax(out, axis=1) == data["y"]))


def test_default_recipe_writes_int4_fully_connected_and_int8_conv(digits_fp32_tflite, digits_data):
    fp32 = digits_fp32_tflite.read_bytes()
    result = quantize_int4(fp32)
    types = type_histogram(weight_types(result.model))  # read from the written bytes, not the result object
    assert types == {"CONV_2D:INT8": 3, "FULLY_CONNECTED:INT4": 2}
    assert result.type_counts() == types
    assert len(result.model) < 0.25 * len(fp32)
    float_top1 = _top1(fp32, digits_data)
    assert _top1(result.model, digits_data) >= float_top1 - 0.02


def test_fc_and_conv_int4_and_a_layer_regex(digits_fp32_tflite):
    fp32 = digits_fp32_tflite.read_bytes()
    both = quantize_int4(fp32, Int4Options.parse("fc+conv"))
    assert type_histogram(weight_types(both.model)) == {"CONV_2D:INT4": 3, "FULLY_CONNECTED:INT4": 2}
    only_probs = quantize_int4(fp32, Int4Options.parse("fc:layers=probs"))
    weights = weight_types(only_probs.model)
    int4 = [w for w in weights if w.type == "INT4"]
    assert len(int4) == 1 and "probs" in int4[0].tensor
    assert type_histogram(weights)["FULLY_CONNECTED:INT8"] == 1
    assert len(both.model) < len(only_probs.model)


def test_blockwise_stores_one_scale_per_block(digits_fp32_tflite, digits_data):
    result = quantize_int4(digits_fp32_tflite.read_bytes(), Int4Options.parse("fc:block=32"))
    fc = [w for w in weight_types(result.model) if w.opcode == "FULLY_CONNECTED"]
    assert all(w.type == "INT4" for w in fc)
    assert [w.block_size for w in fc] == [32, 32]
    channelwise = quantize_int4(digits_fp32_tflite.read_bytes())
    assert {w.block_size for w in weight_types(channelwise.model)} == {0}
    assert _top1(result.model, digits_data) > 0.9


def test_static_int8_activations_with_int4_weights(digits_fp32_tflite, digits_data):
    result = quantize_int4(digits_fp32_tflite.read_bytes(), Int4Options.parse("fc:act=int8"),
                           calibration=digits_data["calib"])
    assert type_histogram(weight_types(result.model)) == {"CONV_2D:INT8": 3, "FULLY_CONNECTED:INT4": 2}
    info = inspect_tflite(result.model)
    fc_inputs = [info.main.tensors[op.inputs[0]].type for op in info.main.ops if op.opcode == "FULLY_CONNECTED"]
    assert fc_inputs == ["INT8", "INT8"]  # activations are integer too: a full-integer model
    assert _top1(result.model, digits_data) > 0.9


def test_others_float_keeps_conv_weights_float(digits_fp32_tflite):
    result = quantize_int4(digits_fp32_tflite.read_bytes(), Int4Options.parse("fc:others=float"))
    assert type_histogram(weight_types(result.model)) == {"CONV_2D:FLOAT32": 3, "FULLY_CONNECTED:INT4": 2}


@pytest.fixture(scope="module")
def depthwise_tflite(tmp_path_factory):
    import keras

    from tests.support.models import to_tflite

    L = keras.layers
    keras.utils.set_random_seed(0)
    model = keras.Sequential([L.Input((16, 16, 3), name="image"), L.Conv2D(16, 3, activation="relu"),
                              L.DepthwiseConv2D(3, activation="relu"), L.Conv2D(32, 1), L.GlobalAveragePooling2D(),
                              L.Dense(10)])
    path = tmp_path_factory.mktemp("dw") / "dw.keras"
    model.save(path)
    return to_tflite(path, "fp32")


def test_depthwise_stays_int8_and_runs_in_litert(depthwise_tflite):
    result = quantize_int4(depthwise_tflite, Int4Options.parse("fc+conv"))
    types = type_histogram(weight_types(result.model))
    assert types == {"CONV_2D:INT4": 2, "DEPTHWISE_CONV_2D:INT8": 1, "FULLY_CONNECTED:INT4": 1}
    x = np.random.default_rng(0).random((4, 16, 16, 3), dtype=np.float32)
    ref = run_float_io(depthwise_tflite, [x])[0]
    out = run_float_io(result.model, [x])[0]
    assert out.shape == ref.shape and np.corrcoef(out.ravel(), ref.ravel())[0, 1] > 0.9


def test_bad_recipes_are_option_errors(digits_fp32_tflite, digits_int8_tflite):
    with pytest.raises(OptionError, match="DEPTHWISE_CONV_2D cannot take int4"):
        Int4Options.parse("depthwise")
    with pytest.raises(OptionError, match="unknown int4 op 'MATMUL'"):
        Int4Options.parse("matmul")
    with pytest.raises(OptionError, match="block size 48"):
        Int4Options.parse("fc:block=48")
    with pytest.raises(OptionError, match="FULLY_CONNECTED with dynamic"):
        Int4Options.parse("conv:block=32")
    with pytest.raises(OptionError, match="unknown int4 option 'bits'"):
        Int4Options.parse("fc:bits=3")
    with pytest.raises(OptionError, match="regex"):
        Int4Options.parse("fc:layers=(")
    with pytest.raises(OptionError, match="others=float is not possible"):
        Int4Options.parse("fc:act=int8:others=float")
    with pytest.raises(OptionError, match="already INT8"):
        quantize_int4(digits_int8_tflite.read_bytes())
    with pytest.raises(OptionError, match="matches no op"):
        quantize_int4(digits_fp32_tflite.read_bytes(), Int4Options.parse("fc:layers=no_such_layer"))
    with pytest.raises(CalibrationError, match="needs calibration"):
        quantize_int4(digits_fp32_tflite.read_bytes(), Int4Options.parse("fc:act=int8"))
    with pytest.raises(OptionError, match="needs a .tflite"):
        quantize_int4(b"not a model at all")
