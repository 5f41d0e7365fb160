"""The blessing logic and the data checks, pure: tables of evaluations, thresholds and releases."""

from __future__ import annotations

import numpy as np
import pytest

from pipelines.gate import Baseline, Thresholds, bless, release_figures
from pipelines.validation import check_splits, drift, drift_check, stats

EVAL = {"accuracy": 0.95, "size": 50_000, "drop_vs_float_pp": 0.4, "latency_ms": {"p95_ms": 0.2},
        "per_class": {"0": {"accuracy": 1.0}, "1": {"accuracy": 0.8}, "2": {"accuracy": None}}}
RELEASE = Baseline("digits", "1.0.0", "ab" * 32, devices=3, accuracy=0.96, size=60_000, source="pipeline evaluation")


@pytest.mark.parametrize("thresholds, baseline, blessed, failed", [
    (Thresholds(min_accuracy=0.9), None, True, []),
    (Thresholds(min_accuracy=0.96), None, False, ["accuracy"]),
    (Thresholds(min_class_accuracy=0.8), None, True, []),
    (Thresholds(min_class_accuracy=0.85), None, False, ["worst class accuracy"]),
    (Thresholds(max_drop_vs_float_pp=0.5, max_size_bytes=50_000, max_latency_ms=0.3), None, True, []),
    (Thresholds(max_size_bytes=49_999), None, False, ["size (bytes)"]),
    (Thresholds(max_accuracy_drop_vs_release_pp=1.0), RELEASE, True, []),        # 1.0 pp below: allowed
    (Thresholds(max_accuracy_drop_vs_release_pp=0.5), RELEASE, False, ["drop vs release (pp)"]),
    (Thresholds(max_size_ratio_vs_release=0.8), RELEASE, False, ["size vs release (ratio)"]),
    (Thresholds(max_size_ratio_vs_release=0.9), RELEASE, True, []),
    # no release of this model on the fleet: relative thresholds are skipped, absolute ones still judge
    (Thresholds(min_accuracy=0.9, max_accuracy_drop_vs_release_pp=0.0), None, True, []),
    (Thresholds(min_accuracy=0.99, max_accuracy_drop_vs_release_pp=0.0), None, False, ["accuracy"]),
    # a release without figures cannot be compared with: that fails rather than passing silently
    (Thresholds(max_accuracy_drop_vs_release_pp=1.0), Baseline("digits", "0.9", "c" * 64, 1), False,
     ["drop vs release (pp)"]),
])
def test_bless(thresholds, baseline, blessed, failed):
    b = bless(EVAL, thresholds, baseline)
    assert b.blessed is blessed
    assert [c.check for c in b.failed] == failed
    assert b.to_dict()["blessed"] is blessed


def test_checks_carry_value_threshold_and_detail():
    b = bless(EVAL, Thresholds(min_class_accuracy=0.85, max_accuracy_drop_vs_release_pp=0.5), RELEASE)
    worst, rel = b.checks
    assert (worst.value, worst.threshold, worst.detail) == (0.8, 0.85, "class 1")
    assert rel.value == pytest.approx(1.0) and "1.0.0" in rel.detail
    skipped = bless(EVAL, Thresholds(max_size_ratio_vs_release=1.0), None).checks[0]
    assert skipped.status == "skipped" and "no release" in skipped.detail


def test_an_unmeasured_figure_fails():
    assert not bless({"accuracy": None}, Thresholds(min_accuracy=0.1), None).blessed


def test_release_figures_prefer_the_pipeline_evaluation():
    m = {"model_file": "model.tflite", "files": {"model.tflite": {"sha256": "x", "size": 1234}},
         "provenance": {"pipeline": {"evaluation": {"accuracy": 0.97}},
                        "report": {"accuracy": {"top1_converted": 0.9}, "size": 999}}}
    assert release_figures(m) == (0.97, 1234, "pipeline evaluation")
    m["provenance"].pop("pipeline")
    assert release_figures(m) == (0.9, 999, "report card")
    assert release_figures({"provenance": {}}) == (None, None, "report card")


def _split(x, y):
    return stats(np.asarray(x), None if y is None else np.asarray(y))


def test_data_checks_find_nans_ranges_shapes_and_missing_classes():
    good = np.random.default_rng(0).random((40, 4, 4)).astype(np.float32)
    y = np.arange(40) % 4
    splits = {"train": _split(good, y), "val": _split(good[:8], y[:8]), "test": _split(good[:8], y[:8])}
    assert {r.status for r in check_splits(splits, value_range=(0.0, 1.0))} == {"ok"}

    nan = good.copy()
    nan[3, 0, 0] = np.nan
    rows = check_splits({**splits, "test": _split(nan, y)}, value_range=(0.0, 1.0))
    assert [(r.check, r.split) for r in rows if r.status == "fail"] == [("NaN/inf", "test")]

    rows = check_splits({**splits, "val": _split(good[:8] * 3, y[:8])}, value_range=(0.0, 1.0))
    assert [(r.check, r.split) for r in rows if r.status == "fail"] == [("range", "val")]

    rows = check_splits({**splits, "test": _split(good[:8, :2], y[:8])})
    assert [(r.check, r.split) for r in rows if r.status == "fail"] == [("shape", "test")]

    rows = check_splits({**splits, "train": _split(good, y % 3), "test": _split(good[:8], y[:8])})
    assert [r.check for r in rows if r.status == "fail"] == ["classes in train"]

    skewed = np.array([0] * 37 + [1, 2, 3])
    rows = check_splits({**splits, "train": _split(good, skewed)})
    assert [(r.check, r.status) for r in rows if r.status != "ok"] == [("class balance", "warn")]


def test_drift_against_the_previous_statistics():
    x = np.random.default_rng(1).random((100, 3)).astype(np.float32)
    y = np.arange(100) % 2
    before = stats(x, y)
    assert drift(before, None) is None and drift_check(None, 0.1).status == "ok"
    same = drift(before, before)
    assert same["score"] == 0.0 and drift_check(same, 0.1).status == "ok"
    shifted = drift(stats(x + 0.5, np.zeros(100, int)), before)
    assert shifted["label_linf"] == pytest.approx(0.5) and shifted["mean_shift_std"] > 1.0
    assert drift_check(shifted, 0.1).status == "fail" and drift_check(shifted, None).status == "ok"
