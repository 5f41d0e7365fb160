"""Pure logic: calibration QA, metrics, mode/target registries, format detection, output staging."""

from __future__ import annotations

import math
import zipfile

import numpy as np
import pytest

from converters import calibration_qa as qa
from converters import metrics
from converters.cli import IO_NAMES, MODE_NAMES, TARGET_NAMES
from converters.errors import CalibrationError, ModelLoadError, OptionError, TargetRefusal
from converters.loading import InputSpec, detect_format
from converters.modes import MODES, TARGETS, resolve
from converters.output import Staging
from edgekit.errors import FileExistsRefusal


def data(n=20, shape=(8, 8, 1), seed=0):
    return np.random.default_rng(seed).random((n, *shape), dtype=np.float32)


# --- calibration QA --------------------------------------------------------------------------------------------------

def test_qa_accepts_good_data():
    s = qa.check_all(data(), (8, 8, 1), "x")
    assert s.count == 20 and 0 <= s.min < s.max <= 1


def test_qa_too_few_samples():
    with pytest.raises(CalibrationError, match="has 3 sample"):
        qa.check_all(data(3), (8, 8, 1), "x")


def test_qa_nan_and_inf_name_the_sample():
    x = data()
    x[5, 0, 0, 0] = np.nan
    x[7, 1, 1, 0] = np.inf
    with pytest.raises(CalibrationError, match=r"2 NaN/inf value\(s\) in 2 sample\(s\) \(first: sample 5\)"):
        qa.check_all(x, (8, 8, 1), "x")


def test_qa_constant_data():
    with pytest.raises(CalibrationError, match="every value is 0.5"):
        qa.check_all(np.full((20, 8, 8, 1), 0.5, np.float32), (8, 8, 1), "x")


def test_qa_shape_mismatch_says_what_is_expected():
    with pytest.raises(CalibrationError, match=r"samples have shape \[8, 8\], the model expects \[8, 8, 1\]"):
        qa.check_all(data(shape=(8, 8)), (8, 8, 1), "x")
    qa.check_all(data(shape=(5, 8, 1)), (None, 8, 1), "x")  # None matches any size


def test_qa_dtype():
    with pytest.raises(CalibrationError, match="dtype <U1"):
        qa.check_dtype(np.array([["a"]]), "x")


def test_range_warning_for_raw_pixels():
    s = qa.stats(np.round(data() * 255))
    w = qa.range_warnings(s, "x")
    assert len(w) == 1 and "0..255" in w[0] and "--scale" in w[0]
    assert qa.range_warnings(s, "x", model_rescales=True) == []
    assert qa.range_warnings(qa.stats(data()), "x") == []


def test_range_warning_against_expected_and_reference():
    s = qa.stats(data() * 4 - 2)
    assert "outside the expected range 0..1" in qa.range_warnings(s, "x", expected=(0, 1))[0]
    ref = qa.stats(data() * 0.1)
    assert "differs from the calibration range" in qa.range_warnings(s, "x", reference=ref)[0]


# --- metrics ---------------------------------------------------------------------------------------------------------

def test_metrics_compare():
    ref = np.eye(4, dtype=np.float32)
    conv = ref.copy()
    conv[3] = [0.6, 0.1, 0.1, 0.2]
    r = metrics.compare(ref, conv, labels=np.array([0, 1, 2, 3]))
    assert r["agreement"] == 0.75 and r["top1_float"] == 1.0 and r["top1_converted"] == 0.75
    assert r["top1_drop_pp"] == pytest.approx(25.0)
    assert r["max_abs_error"] == pytest.approx(0.8)
    assert metrics.accuracy_drop_pp(r) == pytest.approx(25.0)
    r.pop("top1_drop_pp")
    assert metrics.accuracy_drop_pp(r) == pytest.approx(25.0)


def test_snr():
    x = np.ones(100)
    assert metrics.snr_db(x, x) == math.inf
    assert metrics.snr_db(x, x * 1.1) == pytest.approx(20.0)


# --- modes and targets -----------------------------------------------------------------------------------------------

def test_cli_choices_mirror_the_registries():
    assert MODE_NAMES == list(MODES)
    assert TARGET_NAMES == list(TARGETS)
    assert {io for m in MODES.values() for io in m.io_choices} <= set(IO_NAMES)


def test_plans():
    assert resolve("cpu", None, None).mode == "fp32"
    assert resolve("cpu", "int8", None).io == "int8"
    assert resolve("cpu", "int8", "uint8").io == "uint8"
    assert resolve("cpu", "int16x8", None).io == "float"
    p = resolve("edgetpu", None, None)
    assert (p.mode, p.io, p.target) == ("int8", "int8", "edgetpu")


def test_invalid_combinations_are_refused_with_a_reason():
    with pytest.raises(OptionError, match="--io int8 does not apply to mode fp16"):
        resolve("cpu", "fp16", "int8")
    with pytest.raises(TargetRefusal, match="needs full-integer int8, not mode dynamic"):
        resolve("edgetpu", "dynamic", None)
    with pytest.raises(TargetRefusal, match="integer input/output"):
        resolve("edgetpu", "int8", "float")
    with pytest.raises(OptionError, match="unknown target"):
        resolve("gpu", None, None)


def test_edgetpu_refuses_dynamic_inputs():
    with pytest.raises(TargetRefusal, match=r"input 'x' has dynamic dimension\(s\) \[1\]"):
        TARGETS["edgetpu"].check_inputs([InputSpec("x", (None, 8, 3))])
    TARGETS["cpu"].check_inputs([InputSpec("x", (None, 8, 3))])


# --- format detection ------------------------------------------------------------------------------------------------

def test_detect_format(tmp_path):
    with pytest.raises(ModelLoadError, match="does not exist"):
        detect_format(tmp_path / "missing.keras")
    (tmp_path / "junk.keras").write_bytes(b"not a model at all")
    with pytest.raises(ModelLoadError, match="not a .keras archive"):
        detect_format(tmp_path / "junk.keras")
    (tmp_path / "m.h5").write_bytes(b"\x89HDF\r\n\x1a\nrest")
    assert detect_format(tmp_path / "m.h5").flavor == "tf_keras"
    with zipfile.ZipFile(tmp_path / "k2.keras", "w") as z:
        z.writestr("config.json", "{}")
        z.writestr("metadata.json", '{"keras_version": "2.21.0"}')
    assert detect_format(tmp_path / "k2.keras").flavor == "tf_keras"
    with zipfile.ZipFile(tmp_path / "k3.keras", "w") as z:
        z.writestr("config.json", "{}")
        z.writestr("metadata.json", '{"keras_version": "3.15.1"}')
    assert detect_format(tmp_path / "k3.keras").flavor == "keras3"
    (tmp_path / "emptydir").mkdir()
    with pytest.raises(ModelLoadError, match="without saved_model.pb"):
        detect_format(tmp_path / "emptydir")
    (tmp_path / "m.tflite").write_bytes(b"\x1c\x00\x00\x00TFL3" + b"\x00" * 20)
    with pytest.raises(ModelLoadError, match="already a TFLite model"):
        detect_format(tmp_path / "m.tflite")


# --- staging ---------------------------------------------------------------------------------------------------------

def test_staging_refuses_existing_and_leaves_nothing_on_failure(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "a.tflite").write_bytes(b"old")
    with pytest.raises(FileExistsRefusal, match="already holds a.tflite"):
        Staging(out, ["a.tflite", "report.json"]).check()
    with pytest.raises(RuntimeError):
        with Staging(out, ["a.tflite", "report.json"], force=True) as st:
            st.write("a.tflite", b"new")
            raise RuntimeError("boom")
    assert (out / "a.tflite").read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # staging dir removed
    with Staging(out, ["a.tflite", "report.json"], force=True) as st:
        st.write("a.tflite", b"new")
        st.write("report.json", b"{}")
        st.commit()
    assert (out / "a.tflite").read_bytes() == b"new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
