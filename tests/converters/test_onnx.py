"""ONNX sources: real ONNX models (the trained digits CNN in PyTorch's layout, built with onnx.helper; a PyTorch
export shipped in the onnx package) converted for real in every mode, with onnxruntime as the float reference."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from converters.errors import ModelLoadError
from converters.loading import detect_format
from converters.onnx_source import Node, _to_layout, unsupported_node
from edgekit.bundle import read_bundle

from .conftest import run_convert

MODES = ["fp32", "fp16", "dynamic", "int8", "int16x8"]
SUPPORTED = frozenset({"Conv", "Relu", "Gemm"})


# -- pure logic -------------------------------------------------------------------------------------------------------

def test_first_unsupported_node_is_named():
    nodes = [Node("Conv", "/c1"), Node("Relu", "/r1"), Node("CastLike", "/cl"), Node("Foo", "/f")]
    assert unsupported_node(nodes, SUPPORTED) == Node("CastLike", "/cl")
    assert unsupported_node(nodes[:2], SUPPORTED) is None


def test_custom_domain_is_unsupported_even_with_a_known_op_name():
    assert unsupported_node([Node("Conv", "/c", "com.example")], SUPPORTED) == Node("Conv", "/c", "com.example")
    assert unsupported_node([Node("Conv", "/c", "ai.onnx")], SUPPORTED) is None


def test_channel_first_reference_is_moved_last_only_when_that_matches():
    ref = np.arange(2 * 3 * 4 * 5, dtype=np.float32).reshape(2, 3, 4, 5)
    moved = _to_layout(ref, (4, 5, 3))
    assert moved.shape == (2, 4, 5, 3) and moved[1, 2, 3, 0] == ref[1, 0, 2, 3]
    assert _to_layout(ref, (3, 4, 5)) is ref
    assert _to_layout(ref, (9, 9, 9)) is ref
    flat = np.zeros((2, 10))
    assert _to_layout(flat, (10,)) is flat


def test_onnx_is_detected_by_its_suffix(tmp_path):
    p = tmp_path / "m.ONNX"
    p.write_bytes(b"\x08\x08")
    assert detect_format(p).kind == "onnx"


# -- real conversions -------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def digits_onnx():
    pytest.importorskip("onnx2tf", reason="onnx2tf is not installed (pip install --no-deps onnx2tf==1.29.24)")
    from tests.support.models import digits_onnx as build

    return build()


@pytest.fixture(scope="module")
def converted(digits_onnx, session_key, tmp_path_factory):
    out = {}
    for mode in MODES:
        d = tmp_path_factory.mktemp(f"onnx-{mode}") / "out"
        res = run_convert(model=digits_onnx["model"], output=d, mode=mode, calibration=digits_onnx["calibration"],
                          eval=digits_onnx["eval"], key=session_key[0], name=f"digits-{mode}", version="1.0.0",
                          runs=5)
        out[mode] = (res, d)
    return out


@pytest.mark.slow
@pytest.mark.parametrize("mode", MODES)
def test_every_mode_is_measured_against_onnxruntime(converted, digits_onnx, mode):
    import onnxruntime as ort

    res, d = converted[mode]
    card = json.loads((d / "report.json").read_text())
    assert card["source"]["format"] == "onnx" and card["conversion"]["mode"] == mode
    assert card["source"]["inputs"] == [{"name": "input", "shape": [1, 8, 8], "dtype": "float32"}]
    assert card["conversion"]["versions"]["onnx2tf"] == "1.29.24"
    ev = np.load(digits_onnx["eval"])
    sess = ort.InferenceSession(digits_onnx["model"], providers=["CPUExecutionProvider"])
    ort_top1 = float(np.mean(sess.run(None, {"input": ev["input"]})[0].argmax(1) == ev["y"]))
    acc = card["accuracy"]
    assert acc["top1_float"] == pytest.approx(ort_top1)  # the reference is the ONNX model itself
    assert acc["samples"] == len(ev["y"]) and acc["top1_converted"] > 0.9
    src = acc["source_float_agreement"]
    assert src["reference"] == "onnxruntime" and src["agreement"] == 1.0 and src["max_abs_error"] < 1e-4
    # the TFLite model takes the ONNX layout (NCHW) as it was exported
    assert card["model"]["inputs"][0]["shape"] == [1, 1, 8, 8]


@pytest.mark.slow
def test_int8_drop_against_onnx_float_is_small_and_the_bundle_verifies(converted, session_key):
    res, d = converted["int8"]
    assert res.report["accuracy"]["top1_drop_pp"] <= 1.0
    assert res.report["model"]["inputs"][0]["dtype"] == "int8"
    b = read_bundle(d / "digits-int8-1.0.0.ekb", session_key[1])
    assert b.signature_verified
    prov = b.manifest["provenance"]
    assert prov["source"]["format"] == "onnx" and prov["converter"]["onnx2tf"] == "1.29.24"
    assert b.manifest["inputs"][0]["shape"] == [1, 1, 8, 8]


@pytest.mark.slow
def test_edgetpu_target_prechecks_an_onnx_model(digits_onnx, tmp_path):
    res = run_convert(model=digits_onnx["model"], output=tmp_path / "out", target="edgetpu",
                      calibration=digits_onnx["calibration"], eval=digits_onnx["eval"], runs=3)
    card = res.report
    assert card["conversion"]["mode"] == "int8" and card["conversion"]["io"] == "int8"
    assert card["placement"]["edgetpu"]["all_mapped"] is True, card["placement"]["edgetpu"]
    assert card["accuracy"]["source_float_agreement"]["agreement"] == 1.0


@pytest.mark.slow
def test_float_fallback_runs_on_an_onnx_model(digits_onnx, tmp_path):
    res = run_convert(model=digits_onnx["model"], output=tmp_path / "out", mode="int8",
                      calibration=digits_onnx["calibration"], eval=digits_onnx["eval"], max_accuracy_drop=0.0,
                      runs=0)
    fb = res.report["fallback"]
    assert fb["budget_pp"] == 0.0 and fb["met"] == (fb["best"]["drop_pp"] <= 0.0)
    assert res.budget_met == fb["met"]


@pytest.mark.slow
def test_a_pytorch_export_shipped_by_the_onnx_package_converts(tmp_path):
    """onnx's own test data: torch.nn.Conv2d exported by torch.onnx (batch 2 fixed, input named '0', NCHW out)."""
    pytest.importorskip("onnx2tf", reason="onnx2tf is not installed")
    import onnx

    src = Path(onnx.__file__).parent / "backend/test/data/pytorch-converted/test_Conv2d/model.onnx"
    if not src.exists():
        pytest.skip(f"the onnx package on this machine ships no {src.name} test model")
    rng = np.random.default_rng(0)
    calib = tmp_path / "calib.npz"
    np.savez(calib, x=rng.standard_normal((48, 3, 7, 5)).astype(np.float32))
    res = run_convert(model=src, output=tmp_path / "out", mode="int8", io="float", calibration=calib, runs=0)
    acc = res.report["accuracy"]
    assert acc["data"] == "held_out_calibration" and acc["samples"] == 12
    src_agree = acc["source_float_agreement"]
    assert src_agree["max_abs_error"] < 1e-4  # NCHW onnxruntime output compared in onnx2tf's NHWC layout
    assert acc["snr_db"] > 20


# -- bad input --------------------------------------------------------------------------------------------------------

def _model_with(node, inputs, outputs, inits=(), domains=()):
    import onnx
    from onnx import helper

    graph = helper.make_graph([node], "g", inputs, outputs, list(inits))
    opsets = [helper.make_opsetid("", 17), *[helper.make_opsetid(d, 1) for d in domains]]
    m = helper.make_model(graph, opset_imports=opsets)
    m.ir_version = 8
    return m, onnx


def test_an_op_onnx2tf_lacks_is_a_one_line_error_naming_op_and_node(tmp_path):
    pytest.importorskip("onnx2tf", reason="onnx2tf is not installed")
    from onnx import TensorProto, helper, numpy_helper

    m, onnx = _model_with(
        helper.make_node("CastLike", ["x", "like"], ["y"], name="/head/CastLike"),
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT16, [1, 4])],
        [numpy_helper.from_array(np.zeros(1, np.float16), "like")])
    onnx.checker.check_model(m)
    path = tmp_path / "castlike.onnx"
    onnx.save(m, path)
    with pytest.raises(ModelLoadError) as e:
        run_convert(model=path, output=tmp_path / "out")
    msg = str(e.value)
    assert "CastLike" in msg and "/head/CastLike" in msg and "\n" not in msg
    assert type(e.value).__name__ == "UnsupportedOnnxOpError"
    assert not (tmp_path / "out").exists()


def test_a_custom_domain_op_is_refused_by_name(tmp_path):
    pytest.importorskip("onnx2tf", reason="onnx2tf is not installed")
    from onnx import TensorProto, helper

    m, onnx = _model_with(
        helper.make_node("FancyGelu", ["x"], ["y"], name="blk0", domain="com.example"),
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])], domains=["com.example"])
    path = tmp_path / "custom.onnx"
    onnx.save(m, path)
    with pytest.raises(ModelLoadError, match=r"com\.example:FancyGelu \(node 'blk0'\)"):
        run_convert(model=path)


def test_cli_refuses_a_corrupt_onnx_file_in_one_line(tmp_path):
    pytest.importorskip("onnx2tf", reason="onnx2tf is not installed")
    from click.testing import CliRunner

    from edgekit.cli import cli

    bad = tmp_path / "broken.onnx"
    bad.write_bytes(b"\x08\x07garbage that is not a protobuf \xff\xff\xff")
    before = bad.read_bytes()
    r = CliRunner().invoke(cli, ["convert", str(bad), "--quiet"])
    assert r.exit_code == 1, r.output
    lines = [ln for ln in r.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and "cannot load" in lines[0] and "ONNX" in lines[0]
    assert bad.read_bytes() == before


def test_dynamic_spatial_size_is_refused(tmp_path):
    pytest.importorskip("onnx2tf", reason="onnx2tf is not installed")
    from onnx import TensorProto, helper

    m, onnx = _model_with(helper.make_node("Relu", ["x"], ["y"], name="r"),
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3, "h", "w"])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 3, "h", "w"])])
    path = tmp_path / "dyn.onnx"
    onnx.save(m, path)
    with pytest.raises(ModelLoadError, match="dynamic dimension"):
        run_convert(model=path)


# -- several payloads in one run ---------------------------------------------------------------------------------------

@pytest.mark.slow
def test_cpu_edgetpu_gpu_in_one_run_make_one_multi_payload_bundle(digits_onnx, session_key, tmp_path):
    from click.testing import CliRunner

    from converters import edgetpu_compiler
    from edgekit.cli import cli
    from edgekit.golden import compare, run_model
    from edgekit.onnx_model import run_model as run_onnx

    out = tmp_path / "out"
    r = CliRunner().invoke(cli, ["convert", digits_onnx["model"], "--target", "cpu,edgetpu,gpu", "--mode", "int8",
                                 "--calibration", digits_onnx["calibration"], "--eval", digits_onnx["eval"],
                                 "--runs", "2", "-o", str(out), "--key", str(session_key[0]), "--name", "digits",
                                 "--version", "2.0.0", "--json", "--quiet"])
    assert r.exit_code == 0, r.output
    card = json.loads(r.output[r.output.index("{"):])
    compiler = edgetpu_compiler.available() is not None
    assert card["payloads"] == (["cpu", "edgetpu", "gpu"] if compiler else ["cpu", "gpu"])
    assert card["targets"]["cpu"]["conversion"]["mode"] == "int8"
    assert card["targets"]["edgetpu"]["placement"]["edgetpu"]["all_mapped"] is True
    assert card["targets"]["cpu"]["accuracy"]["source_float_agreement"]["agreement"] == 1.0
    assert (out / "digits-cpu.tflite").exists() and (out / "digits-edgetpu.tflite").exists()
    import onnx

    gpu = onnx.load(str(out / "digits-gpu.onnx"))  # float16 weights, float32 I/O
    weights = [t for t in gpu.graph.initializer if len(t.dims) >= 2]
    assert weights and all(t.data_type == onnx.TensorProto.FLOAT16 for t in weights)
    assert all(v.type.tensor_type.elem_type == onnx.TensorProto.FLOAT for v in [*gpu.graph.input, *gpu.graph.output])
    agree = card["targets"]["gpu"]["fp32_agreement"]
    assert agree["samples"] == 3 and agree["max_abs_diff"] <= 0.01 and agree["top1_agreement"] == 1.0
    fp32 = run_onnx(Path(digits_onnx["model"]).read_bytes(), [np.load(digits_onnx["calibration"])["input"][:3, None]])
    fp16 = run_onnx((out / "digits-gpu.onnx").read_bytes(), [np.load(digits_onnx["calibration"])["input"][:3, None]])
    np.testing.assert_allclose(fp16[0], fp32[0], atol=0.01)  # recomputed here, not read from the card
    b = read_bundle(out / "digits-2.0.0.ekb", session_key[1])
    assert b.manifest["schema_version"] == 2 and b.signature_verified
    for target in card["payloads"]:
        view = b.meta.select(target)
        ins, outs, atol, rtol = view.golden_vectors(b.files.__getitem__)
        if target == "edgetpu":
            continue  # compiled: runs only on an Edge TPU
        actual = (run_onnx if target == "gpu" else run_model)(b.files[view.model_file], ins)
        assert compare(outs, actual, atol, rtol).ok, target
    gpu_in = b.meta.select("gpu").golden_vectors(b.files.__getitem__)[0][0]
    assert gpu_in.shape == (3, 1, 1, 8, 8)
    cal_first = np.load(digits_onnx["calibration"])["input"][:3]
    np.testing.assert_array_equal(gpu_in[:, 0], cal_first.astype(np.float32))  # real samples, not noise


@pytest.mark.parametrize("args, message", [
    (["--target", "cpu,npu"], "unknown target npu"),
    (["--target", "cpu,cpu"], "names a target twice"),
])
def test_bad_target_lists_are_one_line_usage_errors(tmp_path, args, message):
    from click.testing import CliRunner

    from edgekit.cli import cli

    src = tmp_path / "m.onnx"
    src.write_bytes(b"\x08\x08")
    r = CliRunner().invoke(cli, ["convert", str(src), *args, "--quiet"])
    assert r.exit_code == 2, r.output
    assert message in r.output and len([ln for ln in r.output.splitlines() if ln.strip()]) == 1


def test_gpu_payload_needs_an_onnx_source(tmp_path):
    from click.testing import CliRunner

    from edgekit.cli import cli

    src = tmp_path / "m.keras"
    src.write_bytes(b"PK\x03\x04")
    r = CliRunner().invoke(cli, ["convert", str(src), "--target", "cpu,gpu", "--quiet"])
    assert r.exit_code == 2 and "needs an ONNX source" in r.output, r.output


def test_fp16_node_order_is_topological_and_keeps_the_source_order_otherwise():
    """The float16 converter appends the input casts after the nodes that read them; the payload's nodes are sorted
    so that every input is produced before it is read (what the ONNX checker and runtimes require)."""
    import onnx
    from onnx import TensorProto, helper

    from converters.onnx_fp16 import _sort_nodes

    g = helper.make_graph(
        [helper.make_node("Relu", ["c"], ["y"], name="late_reader"),
         helper.make_node("Neg", ["x"], ["b"], name="first"),
         helper.make_node("Abs", ["b"], ["c"], name="second")],
        "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    _sort_nodes(g)
    assert [n.name for n in g.node] == ["first", "second", "late_reader"]
    onnx.checker.check_model(helper.make_model(g))
    dangling = helper.make_graph([helper.make_node("Relu", ["nowhere"], ["y"], name="orphan")], "g", [],
                                 [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    with pytest.raises(ValueError, match="orphan"):
        _sort_nodes(dangling)
