"""Converter edge cases: bad inputs are one-line errors (and JSON errors with --json), hints and reasons are true."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from edgekit.cli import cli

from .conftest import run_convert


EDGEKIT = str(Path(sys.executable).with_name("edgekit"))


def invoke(*args):
    return CliRunner().invoke(cli, ["convert", *map(str, args), "--quiet"])


def leftovers(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if "staging" in p.name or "probe" in p.name)


# --- 1: object arrays ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".npy", ".npz"])
def test_object_array_calibration_is_one_line(digits, tmp_path, suffix):
    data = tmp_path / f"obj{suffix}"
    objects = np.array([None] * 64, dtype=object)
    if suffix == ".npy":
        np.save(data, objects, allow_pickle=True)
    else:
        np.savez(data, x=objects)
    r = invoke(digits["model"], "--mode", "int8", "--calibration", data, "-o", tmp_path / "out")
    assert r.exit_code == 1, r.output
    lines = r.output.strip().splitlines()
    assert len(lines) == 1 and "holds an object array" in lines[0] and "Traceback" not in r.output
    assert not (tmp_path / "out").exists() and leftovers(tmp_path) == []


# --- 2: output paths ----------------------------------------------------------------------------------------------


def test_output_under_a_file_says_it_is_a_file(digits, tmp_path):
    (tmp_path / "some_file").write_text("keep")
    r = invoke(digits["model"], "-o", tmp_path / "some_file" / "out", "--no-eval")
    assert r.exit_code == 2, r.output
    assert "is a file, not a directory" in r.output and "does not exist" not in r.output
    assert (tmp_path / "some_file").read_text() == "keep"


@pytest.mark.parametrize("out", ["/proc/x", "/proc", "/sys/kernel/x"])
def test_unwritable_output_is_refused_before_any_work(tmp_path, out):
    # the model is not even loadable: the refusal must come first, before loading and converting
    (tmp_path / "bad.h5").write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 64)
    r = invoke(tmp_path / "bad.h5", "-o", out)
    assert r.exit_code == 2, r.output
    assert "cannot write to" in r.output and "writable --output" in r.output
    assert len(r.output.strip().splitlines()) == 1


# --- 3: a converter that crashes the process ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def recurrent_models(tmp_path_factory):
    """Token-id classifiers with an Embedding and an LSTM or a GRU: TensorFlow 2.21's int8 calibrator segfaults on
    them when it is given int32 token ids (the data these models take)."""
    import keras

    d = tmp_path_factory.mktemp("recurrent")
    L = keras.layers
    keras.utils.set_random_seed(0)
    for name, rnn in (("lstm", L.LSTM(8)), ("gru", L.GRU(8))):
        m = keras.Sequential([L.Input((16,), dtype="int32", name="tokens"), L.Embedding(50, 8), rnn,
                              L.Dense(4, activation="softmax", name="cls")])
        m.save(d / f"{name}.keras")
    np.savez(d / "calib.npz", tokens=np.random.default_rng(0).integers(0, 50, (64, 16)).astype(np.int32))
    return d


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_converter_crash_is_a_one_line_error(recurrent_models, tmp_path, kind):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("keep")
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    proc = subprocess.run([EDGEKIT, "convert", str(recurrent_models / f"{kind}.keras"), "--mode", "int8",
                           "--calibration", str(recurrent_models / "calib.npz"), "-o", str(out), "--json",
                           "--quiet"], capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 1, (proc.returncode, proc.stderr[-2000:])
    err = json.loads(proc.stdout)["error"]
    assert err["code"] == "ConverterCrashed" and err["exit_code"] == 1
    assert err["message"] == "TensorFlow's converter crashed (SIGSEGV, exit 139) converting the model to int8"
    assert "--mode dynamic" in err["hint"]
    assert proc.stderr.strip().splitlines()[-1].startswith("edgekit: error: TensorFlow's converter crashed")
    assert "Traceback" not in proc.stderr
    assert sorted(p.name for p in out.iterdir()) == ["keep.txt"] and leftovers(tmp_path) == []
    # what the hint says to try works on the same model and data
    res = run_convert(model=recurrent_models / f"{kind}.keras", mode="dynamic",
                      calibration=recurrent_models / "calib.npz", runs=0)
    assert res.report["accuracy"]["snr_db"] > 20


@pytest.mark.slow
def test_killing_the_command_ends_the_conversion_child(mobilenet, tmp_path):
    import signal
    import time

    import psutil

    out = tmp_path / "out"
    proc = subprocess.Popen([EDGEKIT, "convert", str(mobilenet["model"]), "--mode", "int8", "--calibration",
                             str(mobilenet["calibration"]), "-o", str(out), "--quiet"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        children: list = []
        while not children and time.monotonic() < deadline:
            children = psutil.Process(proc.pid).children()
            time.sleep(0.1)
        assert children, "the command started no conversion child"
        time.sleep(2)  # converting now (TensorFlow import, load, calibration: well over 2 s here)
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
        gone, alive = psutil.wait_procs(children, timeout=15)
        assert not alive, "the conversion child outlived the command"
        assert not out.exists()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_crash_hint_depends_on_mode_and_step():
    from converters.isolation import crash_error

    e = crash_error("int16x8", "convert int16x8", -6)
    assert e.message == "TensorFlow's converter crashed (SIGABRT, exit 134) converting the model to int16x8"
    assert "--mode dynamic" in e.hint
    e = crash_error("dynamic", "evaluate converted model", -11)
    assert "in step 'evaluate converted model' of mode dynamic" in e.message and "fp16" in e.hint
    assert "--max-accuracy-drop" in crash_error("int8", "accuracy budget: float fallback", -11).hint


@pytest.mark.parametrize("start", ["spawn", "fork"])
def test_errors_in_the_conversion_process_keep_their_class_and_exit_status(digits, tmp_path, start):
    from converters.errors import OptionError
    from converters.isolation import convert_isolated
    from converters.pipeline import ConvertOptions

    if start == "fork":  # a fork only where TensorFlow is not loaded, as in the CLI: run it from a fresh interpreter
        code = ("import sys, json\n"
                "from converters.isolation import convert_isolated\n"
                "from converters.pipeline import ConvertOptions\n"
                "from converters.errors import OptionError\n"
                f"opts = ConvertOptions(model={str(digits['model'])!r}, mode='int8', io='int16')\n"
                "try:\n    convert_isolated(opts, start='fork')\n"
                "except OptionError as e:\n"
                "    print(json.dumps([e.exit_code, e.message, 'tensorflow' in sys.modules]))\n")
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
        exit_code, message, tf_loaded = json.loads(proc.stdout)
        assert not tf_loaded
    else:
        with pytest.raises(OptionError) as info:
            convert_isolated(ConvertOptions(model=digits["model"], mode="int8", io="int16"), start=start)
        exit_code, message = info.value.exit_code, info.value.message
    assert exit_code == 2 and "--io int16 does not apply to mode int8" in message


@pytest.mark.slow
def test_crash_in_a_spawned_child_is_reported(recurrent_models):
    # a library caller with TensorFlow loaded gets a fresh interpreter (a fork would abort), and the same error
    from converters.errors import ConverterCrashed
    from converters.isolation import convert_isolated
    from converters.pipeline import ConvertOptions

    with pytest.raises(ConverterCrashed) as info:
        convert_isolated(ConvertOptions(model=recurrent_models / "lstm.keras", mode="int8",
                                        calibration=recurrent_models / "calib.npz", runs=0))
    assert info.value.message.startswith("TensorFlow's converter crashed (SIGSEGV")


# --- 9: input and output names -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def two_outputs(tmp_path_factory):
    """Two-output models whose output names sort the other way round from their order (``reg`` before ``cls``), with
    outputs of the same shape (a swap shows only in the values): one returns a list, one a dict."""
    import keras

    d = tmp_path_factory.mktemp("two-outputs")
    L = keras.layers
    keras.utils.set_random_seed(0)
    inp = L.Input((8,), name="features")
    h = L.Dense(16, activation="relu")(inp)
    reg, cls = L.Dense(3, name="reg")(h), L.Dense(3, activation="softmax", name="cls")(h)
    keras.Model(inp, [reg, cls]).save(d / "as_list.keras")
    keras.Model(inp, {"reg": reg, "cls": cls}).save(d / "as_dict.keras")
    rng = np.random.default_rng(0)
    np.savez(d / "data.npz", features=rng.random((64, 8), dtype=np.float32))
    return d


@pytest.mark.parametrize("variant", ["as_list", "as_dict"])
@pytest.mark.parametrize("mode", ["fp32", "int8"])
def test_outputs_keep_their_names(two_outputs, tmp_path, session_key, variant, mode):
    import keras
    from ai_edge_litert.interpreter import Interpreter

    from converters.evaluate import dequantize_output, quantize_input
    from device_agent.runtime import load_runner
    from edgekit.bundle import read_bundle

    src = two_outputs / f"{variant}.keras"
    x = np.load(two_outputs / "data.npz")["features"]
    y = keras.saving.load_model(src).predict(x, verbose=0)
    expected = dict(zip(["reg", "cls"], y)) if isinstance(y, list) else {k: np.asarray(v) for k, v in y.items()}
    out = tmp_path / "out"
    res = run_convert(model=src, mode=mode, calibration=two_outputs / "data.npz", output=out, key=session_key[0],
                      version="1.0.0", runs=0)
    tol = 1e-5 if mode == "fp32" else 0.2  # int8: a few quantization steps of the outputs
    for k in (0, 5):
        assert np.abs(expected["reg"][k] - expected["cls"][k]).max() > 2 * tol  # a swap would show
    # the .tflite carries a SignatureDef with the Keras names, and its runner answers by name
    interp = Interpreter(model_content=res.model_bytes)
    assert interp.get_signature_list() == {"serving_default": {"inputs": ["features"], "outputs": ["cls", "reg"]}}
    runner = interp.get_signature_runner("serving_default")
    details = runner.get_output_details()
    for k in (0, 5):
        got = runner(features=quantize_input(x[k:k + 1], runner.get_input_details()["features"]))
        for name in ("reg", "cls"):
            np.testing.assert_allclose(dequantize_output(got[name], details[name])[0], expected[name][k], atol=tol)
    # evaluation compared each output with its own reference
    per_output = res.report["accuracy"]["outputs"]
    if mode == "fp32":
        assert [o["max_abs_error"] <= tol for o in per_output] == [True, True]
    else:
        assert [o["snr_db"] > 20 for o in per_output] == [True, True]
    # the bundle's io spec names the outputs in the model's output order; golden vectors and the device runtime agree
    bundle = read_bundle(out / f"{variant}-1.0.0.ekb", session_key[1])
    order = [o["name"] for o in bundle.manifest["outputs"]]
    assert sorted(order) == ["cls", "reg"] and bundle.manifest["inputs"][0]["name"] == "features"
    golden_in, golden_out, atol, rtol = bundle.golden()
    device = load_runner(bundle.model_bytes)
    assert [s.name for s in device.outputs] == order
    got = device.invoke([golden_in[0][0]])  # golden sample 0 is the first calibration sample
    for spec, arr, gold in zip(device.outputs, got, golden_out):
        np.testing.assert_allclose(arr, gold[0], atol=atol, rtol=rtol)
        detail = {"dtype": spec.dtype, "quantization": spec.quantization}
        np.testing.assert_allclose(dequantize_output(arr, detail)[0], expected[spec.name][0], atol=tol)


def test_two_inputs_are_named_in_the_signature(tmp_path):
    """Inputs whose names sort the other way round from their order, of different widths, reach the right tensors."""
    import keras
    from ai_edge_litert.interpreter import Interpreter

    L = keras.layers
    keras.utils.set_random_seed(1)
    zeta, alpha = L.Input((4,), name="zeta"), L.Input((6,), name="alpha")
    out = L.Dense(3, name="score")(L.Concatenate()([L.Dense(5)(zeta), L.Dense(5)(alpha)]))
    model = keras.Model([zeta, alpha], out)
    model.save(tmp_path / "two_in.keras")
    rng = np.random.default_rng(0)
    z, a = rng.random((1, 4), dtype=np.float32), rng.random((1, 6), dtype=np.float32)
    res = run_convert(model=tmp_path / "two_in.keras", mode="fp32", evaluate=False)
    interp = Interpreter(model_content=res.model_bytes)
    assert interp.get_signature_list() == {"serving_default": {"inputs": ["alpha", "zeta"], "outputs": ["score"]}}
    got = interp.get_signature_runner()(zeta=z, alpha=a)["score"]
    np.testing.assert_allclose(got, np.asarray(model([z, a])), atol=1e-5)


# --- 10: --json errors, report outputs, exit codes, warnings ------------------------------------------------------


def test_json_error_object_on_stdout(tmp_path):
    r = CliRunner().invoke(cli, ["convert", str(tmp_path / "nope.keras"), "--json", "--quiet"])
    assert r.exit_code == 1
    err = json.loads(r.stdout)["error"]
    assert err["code"] == "ModelLoadError" and "does not exist" in err["message"] and err["hint"]
    assert err["exit_code"] == 1


@pytest.mark.parametrize("args", [
    ["edgetpu", "check", "{missing}", "--json"],
    ["bundle", "inspect", "{missing}", "--json"],
    ["agent", "status", "--config", "{missing}", "--json"],
    ["convert", "{missing}", "--mode", "nonsense", "--json"],
])
def test_json_error_for_every_command(tmp_path, args):
    args = [a.replace("{missing}", str(tmp_path / "missing.bin")) for a in args]
    r = CliRunner().invoke(cli, args)
    assert r.exit_code != 0
    err = json.loads(r.stdout)["error"]
    assert set(err) == {"code", "message", "hint", "exit_code"} and err["message"] and err["exit_code"] == r.exit_code


def test_edgetpu_fp16_is_a_bad_option_combination(digits, tmp_path):
    r = CliRunner().invoke(cli, ["convert", str(digits["model"]), "--target", "edgetpu", "--mode", "fp16",
                                 "--json", "--quiet"])
    assert r.exit_code == 2
    assert json.loads(r.stdout)["error"]["code"] == "TargetOptionError"


def test_report_outputs_keyed_as_documented(digits, tmp_path, session_key):
    out = tmp_path / "out"
    res = run_convert(model=digits["model"], output=out, evaluate=False, key=session_key[0], version="1.0.0")
    written = json.loads((out / "report.json").read_text())
    expected = {"model": str(out / "digits.tflite"), "report": str(out / "report.json"),
                "bundle": str(out / "digits-1.0.0.ekb")}
    assert written["outputs"] == expected and res.report["outputs"] == expected
    assert all(Path(v).is_file() for v in expected.values())
    assert set(res.files) == {"model", "report", "bundle"}
    doc = (Path(__file__).resolve().parents[2] / "docs" / "report-card.md").read_text()
    assert "| `outputs` | object | paths written: `model`, `report`, `bundle`" in doc


def test_no_eval_warning_does_not_ask_for_given_calibration(digits, tmp_path):
    res = run_convert(model=digits["model"], mode="int8", calibration=digits["calibration"], evaluate=False)
    assert any("--no-eval" in w for w in res.report["warnings"])
    assert not any("pass --eval or --calibration" in w for w in res.report["warnings"])


# --- 8: degenerate outputs, impossible labels ---------------------------------------------------------------------


def test_constant_outputs_are_a_warning(digits, tmp_path):
    import keras

    L = keras.layers
    m = keras.Sequential([L.Input((8, 8, 1), name="image"), L.Flatten(),
                          L.Dense(10, activation="softmax", kernel_initializer="zeros", bias_initializer="ones")])
    m.save(tmp_path / "constant.keras")
    res = run_convert(model=tmp_path / "constant.keras", mode="int8", calibration=digits["calibration"],
                      eval=digits["eval"], runs=0)
    assert res.report["accuracy"]["agreement"] == 1.0  # the figure that looked perfect
    assert any("is the same for all" in w and "measure nothing" in w for w in res.report["warnings"])


def test_labels_outside_the_output_range_are_refused(digits, tmp_path):
    ev = np.load(digits["eval"])
    y = ev["y"].copy()
    y[5] = 99
    np.savez(tmp_path / "ev.npz", x=ev["x"], y=y)
    r = invoke(digits["model"], "--mode", "int8", "--calibration", digits["calibration"], "--eval",
               tmp_path / "ev.npz", "-o", tmp_path / "out")
    assert r.exit_code == 1, r.output
    assert "outside 0..9 for a 10-value output (first: sample 5 has label 99)" in r.output
    assert len(r.output.strip().splitlines()) == 1 and not (tmp_path / "out").exists()


# --- 4: integer inputs ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def token_model(tmp_path_factory):
    """A small token-id classifier (Keras 3): int32 tokens -> Embedding -> average -> Dense."""
    import keras

    d = tmp_path_factory.mktemp("tokens")
    L = keras.layers
    keras.utils.set_random_seed(0)
    m = keras.Sequential([L.Input((16,), dtype="int32", name="tokens"), L.Embedding(50, 8),
                          L.GlobalAveragePooling1D(), L.Dense(4, activation="softmax", name="cls")])
    m.save(d / "tokens.keras")
    rng = np.random.default_rng(0)
    np.savez(d / "calib.npz", tokens=rng.integers(0, 50, (64, 16)).astype(np.int32))
    return {"model": d / "tokens.keras", "calibration": d / "calib.npz"}


def test_integer_inputs_keep_their_dtype(token_model):
    res = run_convert(model=token_model["model"], mode="int8", calibration=token_model["calibration"], runs=0)
    assert res.report["model"]["inputs"][0]["dtype"] == "int32"
    acc = res.report["accuracy"]
    assert acc["samples"] == 16 and acc["snr_db"] > 20  # a measured, working integer model
    assert not any("pixels" in w for w in res.report["warnings"])


def test_int16x8_of_integer_inputs_converts(token_model):
    """Keras 3's Embedding wraps negative ids with an int32 ADD that TF 2.21's 16x8 quantizer cannot calibrate; the
    model converts through its tf_keras twin (same weights), whose Embedding gathers directly."""
    from ai_edge_litert.interpreter import Interpreter

    res = run_convert(model=token_model["model"], mode="int16x8", calibration=token_model["calibration"], runs=0)
    acc = res.report["accuracy"]
    assert acc["samples"] == 16 and acc["snr_db"] > 20 and acc["agreement"] == 1.0
    interp = Interpreter(model_content=res.model_bytes)
    dtypes = {d["name"]: d["dtype"] for d in interp.get_tensor_details()}
    assert np.int16 in dtypes.values()  # 16-bit activations, not a float model
    assert interp.get_input_details()[0]["dtype"] == np.int32
    assert interp.get_signature_list()["serving_default"] == {"inputs": ["tokens"], "outputs": ["cls"]}


def test_int16x8_of_integer_inputs_without_a_twin_names_the_real_limit(tmp_path, token_model):
    # UnitNormalization has no tf_keras twin: the model is converted as it is and hits TF's 16x8 limit
    import keras

    from converters.errors import ConverterFailed

    L = keras.layers
    m = keras.Sequential([L.Input((16,), dtype="int32", name="tokens"), L.Embedding(50, 8), L.UnitNormalization(),
                          L.GlobalAveragePooling1D(), L.Dense(4, activation="softmax", name="cls")])
    m.save(tmp_path / "untwinned.keras")
    with pytest.raises(ConverterFailed) as info:
        run_convert(model=tmp_path / "untwinned.keras", mode="int16x8", calibration=token_model["calibration"],
                    runs=0)
    assert "Failed for tensor tokens" in info.value.message
    assert "cannot calibrate the integer input 'tokens'" in info.value.hint and "--mode int8" in info.value.hint
    assert "batch of 1" not in info.value.hint


# --- 5: precheck batch reasons ------------------------------------------------------------------------------------


def test_fp16_weights_are_not_a_batch(tmp_path):
    import keras

    from converters.edgetpu_check import precheck

    L = keras.layers
    m = keras.Sequential([L.Input((16, 16, 3), name="image"), L.Conv2D(24, 5, name="wide"),
                          L.DepthwiseConv2D(3), L.Conv2D(8, 1), L.GlobalAveragePooling2D()])
    m.save(tmp_path / "fp16w.keras")
    res = run_convert(model=tmp_path / "fp16w.keras", mode="fp16", evaluate=False)
    assert "DEQUANTIZE" in res.report["model"]["ops"]
    reasons = [r for op in precheck(res.model_bytes).ops for r in op.reasons]
    assert reasons  # a float model is still refused, for its real reasons
    assert not [r for r in reasons if r.startswith(("batch:", "rank:"))], reasons
    assert any("DEQUANTIZE" in r or "float" in r for r in reasons)


# --- 6: hints name the real cause -------------------------------------------------------------------------------


def test_hard_swish_in_int16x8_hint(tmp_path):
    import keras

    from converters.errors import ConverterFailed

    L = keras.layers
    m = keras.Sequential([L.Input((8, 8, 1), name="image"), L.Conv2D(4, 3, activation="hard_silu"), L.Flatten(),
                          L.Dense(3)])
    m.save(tmp_path / "hs.keras")
    np.savez(tmp_path / "c.npz", x=np.random.default_rng(0).random((32, 8, 8, 1), dtype=np.float32))
    with pytest.raises(ConverterFailed) as info:
        run_convert(model=tmp_path / "hs.keras", mode="int16x8", calibration=tmp_path / "c.npz", runs=0)
    assert "HARD_SWISH" in info.value.message
    assert info.value.hint.startswith("op HARD_SWISH has no int16x8") and "batch of 1" not in info.value.hint


@pytest.mark.slow
def test_int16x8_overflow_hint_on_mobilenet(mobilenet):
    from converters.errors import ConversionError

    with pytest.raises(ConversionError) as info:
        run_convert(model=mobilenet["model"], mode="int16x8", calibration=mobilenet["calibration"], runs=0)
    assert "no_integer_overflow_from_quantization" in info.value.message
    assert "quantization overflow" in info.value.hint and "--max-accuracy-drop" in info.value.hint
    assert "lacks" not in info.value.hint


def test_hint_table_integer_input_and_generic():
    from converters.hints import GENERIC_CONVERTER, hint_for

    msg = "Got value of type FLOAT32 but expected type INT32 for input 0, name: tokens"
    assert "integer input (INT32)" in hint_for(msg, "int8") and "batch of 1" not in hint_for(msg, "int8")
    assert hint_for("something nobody has seen", "int8") == GENERIC_CONVERTER


# --- 11: QAT models saved by tfmot without stripping ----------------------------------------------------------------


@pytest.fixture(scope="module")
def qat_model(tmp_path_factory, digits):
    import tensorflow_model_optimization as tfmot
    import tf_keras

    d = tmp_path_factory.mktemp("qat")
    L = tf_keras.layers
    tf_keras.utils.set_random_seed(0)
    base = tf_keras.Sequential([L.Input((8, 8, 1), name="image"), L.Conv2D(8, 3, activation="relu"), L.Flatten(),
                                L.Dense(10, activation="softmax")])
    q = tfmot.quantization.keras.quantize_model(base)
    q.compile("adam", "sparse_categorical_crossentropy")
    sys_path = str(Path(__file__).resolve().parents[2] / "examples")
    import sys

    sys.path.insert(0, sys_path)
    try:
        import train_digits
    finally:
        sys.path.remove(sys_path)
    (xtr, ytr), _ = train_digits.load_digits_split()
    q.fit(xtr, ytr, epochs=5, verbose=0)
    q.save(d / "qat.h5")
    q.save(d / "qat.keras")
    return d


def test_unstripped_qat_h5_loads_and_converts_to_int8(qat_model, digits):
    res = run_convert(model=qat_model / "qat.h5", mode="int8", calibration=digits["calibration"],
                      eval=digits["eval"], runs=0)
    assert res.report["source"]["flavor"] == "tf_keras"
    assert res.report["accuracy"]["top1_drop_pp"] <= 1.0


def test_unstripped_qat_keras_loads_like_the_h5_and_converts(qat_model, digits):
    # tf_keras alone refuses it even under tfmot's scope ("expected 5 variables, but received 3")
    from converters.loading import load_model

    x = np.load(digits["eval"])["x"][:32]
    from_h5 = load_model(qat_model / "qat.h5").keras_model.predict(x, verbose=0)
    from_keras = load_model(qat_model / "qat.keras").keras_model.predict(x, verbose=0)
    np.testing.assert_array_equal(from_keras, from_h5)  # trained weights and quantization ranges restored
    res = run_convert(model=qat_model / "qat.keras", mode="int8", calibration=digits["calibration"],
                      eval=digits["eval"], runs=0)
    assert res.report["source"]["format"] == "keras" and res.report["source"]["flavor"] == "tf_keras"
    assert res.report["accuracy"]["top1_drop_pp"] <= 1.0


def test_unrestorable_qat_keras_is_a_one_line_error(qat_model, digits, tmp_path):
    import zipfile

    broken = tmp_path / "qat-no-weights.keras"
    with zipfile.ZipFile(qat_model / "qat.keras") as src, zipfile.ZipFile(broken, "w") as dst:
        for name in src.namelist():
            if name != "model.weights.h5":
                dst.writestr(name, src.read(name))
    r = invoke(broken, "--mode", "int8", "--calibration", digits["calibration"], "-o", tmp_path / "out")
    assert r.exit_code == 1 and len(r.output.strip().splitlines()) == 1, r.output
    assert "quantization-aware-training model" in r.output and "e-save the QAT model as .h5" in r.output
    assert "Unknown layer" not in r.output and "pass a .h5 file" not in r.output
    assert not (tmp_path / "out").exists()


# --- 7: Keras layer names in the fallback ---------------------------------------------------------------------------


def test_fallback_names_the_keras_layer(digits, tmp_path):
    """The digits CNN has layers conv2d (16 filters) and conv2d_1 (32); TF puts conv2d's nodes under conv2d_1/."""
    from ai_edge_litert.interpreter import Interpreter

    from converters.fallback import rank_layers
    from converters.layer_names import describe, keras_layers
    from converters.loading import load_model
    from converters.modes import Plan

    model = load_model(digits["model"])
    calib = [np.load(digits["calibration"])["x"][:32]]
    ranking = rank_layers(model, Plan("int8", "int8", "cpu"), calib)
    mapping = keras_layers([s.tensor for s in ranking], [la.name for la in model.keras_model.layers])
    # the shapes of the converted tensors say independently which layer each node belongs to
    from converters.tflite import convert, representative

    interp = Interpreter(model_content=convert(model, Plan("int8", "int8", "cpu"), representative(calib)))
    shapes = {d["name"].split(";")[0]: list(d["shape"]) for d in interp.get_tensor_details()}
    convs = {n: mapping[n] for n in mapping if model.keras_model.get_layer(mapping[n]).__class__.__name__ == "Conv2D"}
    assert sorted(convs.values()) == ["conv2d", "conv2d_1", "conv2d_2"]
    for node, layer in convs.items():
        filters = model.keras_model.get_layer(layer).filters
        assert shapes[node.split(";")[0]][-1] == filters, (node, layer)
    node = next(n for n, la in convs.items() if la == "conv2d")
    assert "/conv2d_1/" in node and describe(node, mapping).startswith("conv2d (TF node ")

