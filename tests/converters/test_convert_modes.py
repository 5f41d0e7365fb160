"""Every quantization mode converts the digits CNN; each result reloads in an agent-only venv (no TensorFlow)."""

from __future__ import annotations

import json
from pathlib import Path
import subprocess
import textwrap

import numpy as np
import pytest

from edgekit.bundle import read_bundle

from .conftest import run_convert

MODES = ["fp32", "fp16", "dynamic", "int8", "int16x8"]


@pytest.fixture(scope="module")
def converted(digits, session_key, tmp_path_factory):
    """mode -> (Result, output dir); one real conversion per mode, shared by this module."""
    out = {}
    for mode in MODES:
        d = tmp_path_factory.mktemp(f"digits-{mode}") / "out"
        res = run_convert(model=digits["model"], output=d, mode=mode, calibration=digits["calibration"],
                          eval=digits["eval"], key=session_key[0], name=f"digits-{mode}", version="1.0.0",
                          runs=10)
        out[mode] = (res, d)
    return out


@pytest.mark.parametrize("mode", MODES)
def test_mode_report_has_measured_accuracy(converted, digits, mode):
    res, d = converted[mode]
    card = json.loads((d / "report.json").read_text())
    assert card["schema_version"] == 2
    assert card["conversion"]["mode"] == mode
    acc = card["accuracy"]
    assert acc["data"] == "eval" and acc["samples"] == len(np.load(digits["eval"])["y"])
    assert acc["top1_converted"] > 0.9
    assert acc["agreement"] > 0.95
    assert card["model"]["size"] == (d / f"digits-{mode}.tflite").stat().st_size
    assert card["latency"]["median_ms"] > 0
    assert sum(card["model"]["ops"].values()) == card["model"]["op_count"]


def test_sizes_shrink_with_quantization(converted):
    size = {m: converted[m][0].report["model"]["size"] for m in MODES}
    assert size["fp16"] < 0.6 * size["fp32"]
    assert size["dynamic"] < 0.35 * size["fp32"]
    assert size["int8"] < 0.35 * size["fp32"]


def test_size_ratio_is_against_the_float_weights_and_the_file_size_is_its_own_field(converted, digits):
    import keras

    params = keras.models.load_model(digits["model"]).count_params()
    ratio = {}
    for mode in MODES:
        card = converted[mode][0].report
        src = card["source"]
        assert src["file_size"] == Path(digits["model"]).stat().st_size  # .keras: weights + optimizer state
        assert src["parameters"] == params and src["float_parameter_bytes"] == 4 * params
        assert card["model"]["size_ratio"] == round(card["model"]["size"] / (4 * params), 4)
        ratio[mode] = card["model"]["size_ratio"]
    # fp32 holds every float weight (plus the graph); int8 holds one byte of four (plus the graph and scales)
    assert 1.0 <= ratio["fp32"] < 1.3, ratio
    assert 0.25 <= ratio["int8"] < 0.25 * ratio["fp32"] + 0.1, ratio
    # the trained model's .keras file carries Adam's two slots per weight: the old file-based ratio understated
    assert converted["int8"][0].report["source"]["file_size"] > 2.5 * 4 * params


def test_int8_drop_within_half_a_point(converted):
    acc = converted["int8"][0].report["accuracy"]
    assert acc["top1_drop_pp"] <= 0.5, acc


def test_int8_is_full_integer_with_int8_io(converted):
    card = converted["int8"][0].report
    assert [t["dtype"] for t in card["model"]["inputs"]] == ["int8"]
    assert [t["dtype"] for t in card["model"]["outputs"]] == ["int8"]
    assert "DEQUANTIZE" not in card["model"]["ops"]
    # batch fixed to 1: Keras 3's Flatten becomes one RESHAPE, not SHAPE/STRIDED_SLICE/PACK
    assert set(card["model"]["ops"]) == {"CONV_2D", "MAX_POOL_2D", "RESHAPE", "FULLY_CONNECTED", "SOFTMAX"}
    assert card["placement"]["edgetpu"]["all_mapped"] is True


def test_bundles_verify_and_carry_the_report_summary(converted, session_key):
    for mode in MODES:
        res, d = converted[mode]
        b = read_bundle(d / f"digits-{mode}-1.0.0.ekb", session_key[1])
        assert b.signature_verified
        prov = b.manifest["provenance"]
        assert prov["mode"] == mode and prov["source"]["sha256"] == res.report["source"]["sha256"]
        assert prov["report"]["accuracy"]["top1_converted"] == res.report["accuracy"]["top1_converted"]
        assert "tensorflow" in prov["converter"]
        ins, outs, atol, rtol = b.golden()
        assert ins[0].shape[0] == 3 and ins[0].dtype == np.dtype(b.manifest["inputs"][0]["dtype"])
        assert b.model_bytes == (d / f"digits-{mode}.tflite").read_bytes()


def test_every_mode_runs_in_agent_only_venv(converted, agent_python):
    script = textwrap.dedent("""
        import json, sys
        import numpy as np
        from ai_edge_litert.interpreter import Interpreter
        try:
            import tensorflow  # noqa: F401
            print(json.dumps({"error": "tensorflow importable"})); sys.exit(1)
        except ImportError:
            pass
        out = {}
        for path in sys.argv[1:]:
            it = Interpreter(model_path=path)
            it.allocate_tensors()
            d = it.get_input_details()[0]
            x = np.zeros(d["shape"], d["dtype"])
            it.set_tensor(d["index"], x)
            it.invoke()
            o = it.get_output_details()[0]
            out[path] = [str(np.dtype(d["dtype"])), list(map(int, it.get_tensor(o["index"]).shape))]
        print(json.dumps(out))
    """)
    paths = [str(converted[m][1] / f"digits-{m}.tflite") for m in MODES]
    proc = subprocess.run([agent_python, "-c", script, *paths], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert sorted(result) == sorted(paths)
    for p in paths:
        assert result[p][1] == [1, 10]
    assert result[paths[MODES.index("int8")]][0] == "int8"
    assert result[paths[MODES.index("int16x8")]][0] == "float32"


def test_report_schema_is_stable_and_documented(converted):
    from converters.report import TOP_LEVEL_KEYS

    doc = (Path(__file__).resolve().parents[2] / "docs" / "report-card.md").read_text()
    for mode in MODES:
        card = converted[mode][0].report
        assert tuple(card) == TOP_LEVEL_KEYS
        json.dumps(card, allow_nan=False)  # strict JSON: no NaN/Infinity
    for key in TOP_LEVEL_KEYS:
        assert f"`{key}`" in doc, key


@pytest.mark.parametrize("io,dtype", [("uint8", "uint8"), ("float", "float32")])
def test_int8_io_variants(digits, io, dtype):
    from .conftest import run_convert

    res = run_convert(model=digits["model"], mode="int8", io=io, calibration=digits["calibration"],
                      eval=digits["eval"], runs=0)
    card = res.report
    assert card["conversion"]["io"] == io
    assert card["model"]["inputs"][0]["dtype"] == dtype and card["model"]["outputs"][0]["dtype"] == dtype
    assert card["accuracy"]["top1_drop_pp"] <= 1.0
