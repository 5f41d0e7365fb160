"""Edge TPU: target rules, precheck on real converted models, and the compiler path with a stand-in executable."""

from __future__ import annotations

import json
import os
import stat
import sys
import textwrap

import numpy as np
import pytest
from click.testing import CliRunner

from converters.cli import edgetpu
from converters.edgetpu_check import precheck
from converters.edgetpu_compiler import disagreements, parse_log
from converters.errors import TargetRefusal
from edgekit.bundle import read_bundle

from .conftest import run_convert


@pytest.fixture(scope="module")
def mobilenet_int8(mobilenet, tmp_path_factory):
    d = tmp_path_factory.mktemp("mnv2") / "out"
    res = run_convert(model=mobilenet["model"], output=d, mode="int8", calibration=mobilenet["calibration"],
                      calibration_samples=64, runs=5)
    return res, d


def test_mobilenet_int8_size_ratio_and_every_op_mapped(mobilenet_int8):
    res, d = mobilenet_int8
    card = res.report
    assert card["source"]["flavor"] == "tf_keras"
    # against 4 bytes per float parameter (1,691,208 parameters; batch-norm statistics fold away)
    assert 0.2 < card["model"]["size_ratio"] <= 0.29, card["model"]["size_ratio"]
    assert card["source"]["parameters"] == 1_691_208
    pre = precheck((d / "mobilenetv2.tflite").read_bytes())
    assert pre.all_mapped, [v.to_dict() for v in pre.ops if v.placement != "edgetpu"]
    assert pre.first_cut is None and not pre.cpu_ops
    assert len(pre.ops) == card["model"]["op_count"]
    assert {"CONV_2D", "DEPTHWISE_CONV_2D", "ADD", "MEAN", "FULLY_CONNECTED", "SOFTMAX"} <= set(pre.histogram())
    assert 0 < pre.parameter_bytes < 8 * 1024 * 1024
    assert card["placement"]["edgetpu"]["all_mapped"] is True


def test_check_cli_on_mobilenet(mobilenet_int8):
    _, d = mobilenet_int8
    r = CliRunner().invoke(edgetpu, ["check", str(d / "mobilenetv2.tflite"), "--json"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.output)
    assert out["all_mapped"] and out["cpu_ops"] == 0 and out["parameters_fit_on_chip"]
    r = CliRunner().invoke(edgetpu, ["check", str(d / "mobilenetv2.tflite")])
    assert "every op maps to the Edge TPU" in r.output


def _five_d_model(path):
    import keras

    L = keras.layers
    inp = L.Input((8, 8, 1), name="image")
    y = L.Conv2D(8, 3, padding="same")(inp)
    y = L.Reshape((2, 4, 8, 8))(y)
    y = L.Permute((2, 1, 3, 4))(y)
    y = L.Reshape((512,))(y)
    out = L.Dense(10, activation="softmax")(y)
    keras.Model(inp, out).save(path)


def _cumsum_savedmodel(path):
    import tensorflow as tf

    class M(tf.Module):
        def __init__(self):
            self.w = tf.Variable(np.random.default_rng(0).normal(size=(3, 3, 1, 8)).astype("float32"))

        @tf.function(input_signature=[tf.TensorSpec([None, 8, 8, 1], tf.float32, name="image")])
        def serve(self, image):
            y = tf.nn.relu(tf.nn.conv2d(image, self.w, 1, "SAME"))
            y = tf.math.cumsum(y, axis=2)
            return {"features": tf.reduce_mean(y, axis=[1, 2])}

    m = M()
    tf.saved_model.save(m, str(path), signatures={"serving_default": m.serve})


def test_five_d_tensor_gets_rank_reason_and_cut(tmp_path, digits):
    src = tmp_path / "fived.keras"
    _five_d_model(src)
    res = run_convert(model=src, output=tmp_path / "out", target="edgetpu", calibration=digits["calibration"],
                      runs=0)
    et = res.report["placement"]["edgetpu"]
    assert not et["all_mapped"]
    cut = et["first_cut"]
    assert any("rank" in r and "[1, 2, 4, 8, 8]" in r for r in cut["reasons"]), cut
    ops = et["ops"]
    assert all(v["placement"] == "edgetpu" for v in ops[:cut["index"]])
    assert all(v["placement"] == "cpu" for v in ops[cut["index"]:])
    assert ops[0]["op"] == "CONV_2D" and ops[0]["placement"] == "edgetpu"
    assert any(w.startswith(f"Edge TPU: first cut at op {cut['index']} (RESHAPE)") for w in res.report["warnings"])


def test_cumsum_savedmodel_named_reason_and_cut(tmp_path, digits):
    src = tmp_path / "cumsum_sm"
    _cumsum_savedmodel(src)
    res = run_convert(model=src, output=tmp_path / "out", target="edgetpu", calibration=digits["calibration"],
                      runs=0)
    assert res.report["source"]["format"] == "savedmodel"
    assert res.report["source"]["parameters"] == 3 * 3 * 1 * 8  # the signature's one variable
    r = CliRunner().invoke(edgetpu, ["check", str(tmp_path / "out" / "cumsum_sm.tflite"), "--json"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.output)
    cumsum = [v for v in out["ops"] if v["op"] == "CUMSUM"]
    assert cumsum and "op CUMSUM is not in the Edge TPU op table" in cumsum[0]["reasons"]
    assert cumsum[0]["placement"] == "cpu"
    cut = out["first_cut"]
    assert cut["index"] <= cumsum[0]["index"] and "CUMSUM" in " ".join(cut["reasons"])
    assert out["ops"][0]["op"] == "CONV_2D" and out["ops"][0]["placement"] == "edgetpu"
    assert all(v["placement"] == "cpu" for v in out["ops"][cut["index"]:])


def test_edgetpu_target_refuses_non_int8_and_dynamic_shapes(tmp_path, digits):
    with pytest.raises(TargetRefusal, match="needs full-integer int8"):
        run_convert(model=digits["model"], target="edgetpu", mode="fp16")
    with pytest.raises(TargetRefusal, match="integer input/output"):
        run_convert(model=digits["model"], target="edgetpu", io="float", calibration=digits["calibration"])
    import keras

    L = keras.layers
    m = keras.Sequential([L.Input((None, None, 3), name="img"), L.Conv2D(4, 3), L.GlobalAveragePooling2D()])
    m.save(tmp_path / "dyn.keras")
    with pytest.raises(TargetRefusal, match=r"input 'img' has dynamic dimension\(s\) \[1, 2\]"):
        run_convert(model=tmp_path / "dyn.keras", target="edgetpu", calibration=digits["calibration"])


# --- compiler path -------------------------------------------------------------------------------------------------

STAND_IN = textwrap.dedent("""\
    #!{python}
    # Stand-in for edgetpu_compiler: replays a recorded-style log and writes the input model as the output.
    import os, shutil, sys
    args = sys.argv[1:]
    out_dir = args[args.index("-o") + 1] if "-o" in args else "."
    model = [a for a in args if a.endswith(".tflite")][-1]
    log = open(os.environ["EDGEKIT_TEST_COMPILER_LOG"]).read()
    code = int(os.environ.get("EDGEKIT_TEST_COMPILER_EXIT", "0"))
    print(log)
    if code:
        print("ERROR: recorded failure", file=sys.stderr)
        sys.exit(code)
    stem = os.path.splitext(os.path.basename(model))[0]
    shutil.copyfile(model, os.path.join(out_dir, stem + "_edgetpu.tflite"))
    open(os.path.join(out_dir, stem + "_edgetpu.log"), "w").write(log)
""")


def recorded_log(rows: list[tuple[str, int, str]]) -> str:
    on_tpu = sum(n for _, n, s in rows if s == "Mapped to Edge TPU")
    total = sum(n for _, n, _ in rows)
    lines = ["Edge TPU Compiler version 16.0.384591198", "Started a compilation timeout timer of 180 seconds.", "",
             "Model compiled successfully in 312 ms.", "", "Input model: model.tflite", "Input size: 53.38KiB",
             "Output model: model_edgetpu.tflite", "Output size: 120.49KiB",
             "On-chip memory used for caching model parameters: 52.25KiB",
             "On-chip memory remaining for caching model parameters: 7.81MiB",
             "Off-chip memory used for streaming uncached model parameters: 0.00B",
             "Number of Edge TPU subgraphs: 1", f"Total number of operations: {total}",
             "Operation log: model_edgetpu.log", ""]
    if on_tpu < total:
        lines += ["Model successfully compiled but not all operations are supported by the Edge TPU.",
                  f"Number of operations that will run on Edge TPU: {on_tpu}",
                  f"Number of operations that will run on CPU: {total - on_tpu}", ""]
    lines += ["Operator                       Count      Status", ""]
    lines += [f"{op:<30} {n:<10} {status}" for op, n, status in rows]
    return "\n".join(lines) + "\n"


@pytest.fixture
def stand_in_compiler(tmp_path, monkeypatch):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    exe = bin_dir / "edgetpu_compiler"
    exe.write_text(STAND_IN.format(python=sys.executable))
    exe.chmod(exe.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    log = tmp_path / "recorded.log"
    monkeypatch.setenv("EDGEKIT_TEST_COMPILER_LOG", str(log))
    return log


def _rows_from_prediction(model: bytes, overrides: dict[str, str] | None = None):
    counts = precheck(model).histogram()
    rows = []
    for op, c in counts.items():
        status = (overrides or {}).get(op, "Mapped to Edge TPU")
        rows.append((op, c["edgetpu"] + c["cpu"], status))
    return rows


def test_parse_log_reads_counts_and_table():
    log = parse_log(recorded_log([("CONV_2D", 3, "Mapped to Edge TPU"),
                                  ("CUMSUM", 1, "Operation not supported"),
                                  ("MEAN", 1, "More than one subgraph is not supported")]))
    assert log.version == "16.0.384591198"
    assert (log.edgetpu_ops, log.cpu_ops, log.subgraphs) == (3, 2, 1)
    assert log.counts() == {"CONV_2D": {"edgetpu": 3, "cpu": 0}, "CUMSUM": {"edgetpu": 0, "cpu": 1},
                            "MEAN": {"edgetpu": 0, "cpu": 1}}
    assert log.on_chip_used == "52.25KiB"


def test_convert_edgetpu_runs_compiler_and_bundles_its_output(stand_in_compiler, digits, tmp_path, session_key):
    from tests.support.models import digits_tflite

    stand_in_compiler.write_text(recorded_log(_rows_from_prediction(digits_tflite("int8").read_bytes())))
    res = run_convert(model=digits["model"], output=tmp_path / "out", target="edgetpu",
                      calibration=digits["calibration"], key=session_key[0], runs=0)
    comp = res.report["compiler"]
    assert comp["log"]["version"] == "16.0.384591198"
    assert comp["disagreements"] == []
    b = read_bundle(tmp_path / "out" / "digits-0.1.0.ekb", session_key[1])
    assert b.manifest["target"] == "edgetpu" and b.manifest["model_file"] == "model_edgetpu.tflite"


def test_compiler_disagreement_is_reported(stand_in_compiler, digits_int8_tflite):
    data = digits_int8_tflite.read_bytes()
    stand_in_compiler.write_text(recorded_log(_rows_from_prediction(
        data, {"SOFTMAX": "Operation is otherwise supported, but not mapped due to some unspecified limitation"})))
    r = CliRunner().invoke(edgetpu, ["check", str(digits_int8_tflite), "--compile", "--json"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.output)
    dis = out["compiler"]["disagreements"]
    assert len(dis) == 1 and dis[0].startswith("SOFTMAX: predicted 1 on Edge TPU / 0 on CPU, compiler placed 0 / 1")
    assert "unspecified limitation" in dis[0]
    pre = precheck(data)
    assert disagreements(pre, parse_log(stand_in_compiler.read_text())) == dis


def test_compiler_failure_exit_code_is_an_error(stand_in_compiler, digits_int8_tflite, monkeypatch):
    stand_in_compiler.write_text("Edge TPU Compiler version 16.0.384591198\nInvalid model: model.tflite\n")
    monkeypatch.setenv("EDGEKIT_TEST_COMPILER_EXIT", "1")
    from edgekit.cli import cli

    r = CliRunner().invoke(cli, ["edgetpu", "check", str(digits_int8_tflite), "--compile"])
    assert r.exit_code != 0
    assert "edgetpu_compiler exited with status 1" in r.output


def test_real_compiler_when_installed(digits_int8_tflite):
    import shutil

    if shutil.which("edgetpu_compiler") is None:
        pytest.skip("edgetpu_compiler is not installed (x86-64 Debian package edgetpu-compiler)")
    r = CliRunner().invoke(edgetpu, ["check", str(digits_int8_tflite), "--compile", "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["compiler"]["log"]["edgetpu_ops"] > 0


def test_check_rejects_files_that_are_not_tflite(tmp_path):
    from edgekit.cli import cli

    (tmp_path / "x.tflite").write_bytes(b"definitely not a flatbuffer")
    r = CliRunner().invoke(cli, ["edgetpu", "check", str(tmp_path / "x.tflite")])
    assert r.exit_code == 1 and "not a TFLite flatbuffer" in r.output
    r = CliRunner().invoke(cli, ["edgetpu", "check", str(tmp_path / "missing.tflite")])
    assert r.exit_code != 0 and "does not exist" in r.output
