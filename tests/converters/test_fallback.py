"""--max-accuracy-drop: the sensitive layer found by QuantizationDebugger is kept in float and the budget is met."""

from __future__ import annotations

import pytest

from converters.errors import AccuracyBudgetError
from edgekit.tflite_model import inspect_tflite

from .conftest import run_convert


def _fc_weight_types(model: bytes) -> list[str]:
    info = inspect_tflite(model)
    sg = info.main
    return [sg.tensors[op.inputs[1]].type for op in sg.ops if op.opcode == "FULLY_CONNECTED"]


@pytest.fixture(scope="module")
def plain_int8(sensitive_model, digits):
    return run_convert(model=sensitive_model, mode="int8", calibration=digits["calibration"], eval=digits["eval"],
                       runs=0)


def test_sensitive_layer_breaks_plain_int8(plain_int8):
    acc = plain_int8.report["accuracy"]
    assert acc["top1_float"] > 0.85
    assert acc["top1_drop_pp"] > 20, acc  # the outlier row really destroys the int8 layer


def test_fallback_meets_budget_and_keeps_the_sensitive_layer_in_float(sensitive_model, digits, tmp_path, plain_int8):
    res = run_convert(model=sensitive_model, output=tmp_path / "out", mode="int8", calibration=digits["calibration"],
                      eval=digits["eval"], max_accuracy_drop=1.0, runs=0)
    fb = res.report["fallback"]
    assert fb["met"] is True
    assert res.report["accuracy"]["top1_drop_pp"] <= 1.0
    assert [t.split("/")[1] for t in fb["best"]["float_layers"]] == ["sensitive_1"], fb
    # the written model really has the sensitive Dense in float and the classifier still in int8
    written = (tmp_path / "out" / "sensitive.tflite").read_bytes()
    assert written == res.model_bytes
    assert _fc_weight_types(written) == ["FLOAT32", "INT8"]
    assert [t["dtype"] for t in res.report["model"]["inputs"]] == ["int8"]  # --io int8 kept
    assert any("kept 1 sensitive layer" in w for w in res.report["warnings"])
    # named by the Keras layer, with TensorFlow's node beside it
    assert any("budget: sensitive (TF node " in w for w in res.report["warnings"]), res.report["warnings"]
    # the ranking names each TF node's Keras layer: the node kept in float is the layer named "sensitive"
    kept = next(r for r in fb["ranking"] if r["tensor"] == fb["best"]["float_layers"][0])
    assert kept["layer"] == "sensitive", fb["ranking"]


def test_budget_that_cannot_be_met_reports_best_and_fails(doubly_sensitive_model, digits, tmp_path, plain_int8,
                                                          signing_key):
    # with one float layer at most, the second sensitive layer keeps the drop far above 0 on every training run
    with pytest.raises(AccuracyBudgetError, match="exceeds --max-accuracy-drop 0.0") as exc:
        run_convert(model=doubly_sensitive_model, output=tmp_path / "out", mode="int8",
                    calibration=digits["calibration"], eval=digits["eval"], max_accuracy_drop=0.0,
                    max_float_layers=1, runs=0, key=signing_key[0])
    assert exc.value.exit_code == 4
    import json

    card = json.loads((tmp_path / "out" / "report.json").read_text())
    assert card["fallback"]["met"] is False
    assert card["fallback"]["best"]["drop_pp"] > 0.0
    assert len(card["fallback"]["attempts"]) == 2  # plain int8, then one layer in float (the cap)
    assert (tmp_path / "out" / "doubly-sensitive.tflite").exists()  # the best model is kept for inspection
    assert not list((tmp_path / "out").glob("*.ekb"))  # but not signed
    assert "no bundle written: the accuracy budget was not met" in card["warnings"]
    # the error carries the best attempt (the budget search measures it beside its other candidates)
    best = exc.value.result
    assert best.budget_met is False and best.report["fallback"]["best"] == card["fallback"]["best"]
    assert best.model_bytes == (tmp_path / "out" / "doubly-sensitive.tflite").read_bytes()


def test_budget_in_a_mode_without_fallback_is_measured_only(sensitive_model, digits):
    with pytest.raises(AccuracyBudgetError, match="exceeds --max-accuracy-drop 0.0"):
        run_convert(model=sensitive_model, mode="int16x8", calibration=digits["calibration"], eval=digits["eval"],
                    max_accuracy_drop=0.0, runs=0)
    res = run_convert(model=sensitive_model, mode="fp16", eval=digits["eval"], max_accuracy_drop=0.5, runs=0)
    assert res.report["fallback"]["met"] is True and res.report["accuracy"]["top1_drop_pp"] <= 0.5
