"""Pure tests of the budget search's logic: the budget grammar, the analytic size estimates, the Pareto front, the
search space and the trial cache's atomic writes. No TensorFlow."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from converters.optimize.budget import Budget, BudgetError, parse_budget
from converters.optimize.estimate import GZIP_FLOOR, Layer, estimate
from converters.optimize.pareto import dominates, front, objective_vectors
from converters.optimize.space import build_space
from converters.optimize.trials import TrialCache, trial_key
from edgekit.errors import ExitCode


# --- grammar -------------------------------------------------------------------------------------------------------


def test_full_budget_parses_with_units():
    b = parse_budget("size<=120KB,gzip<=60KB,latency_p95<=2ms,accuracy_drop<=1")
    assert (b.size, b.gzip, b.latency_p95, b.accuracy_drop) == (120_000, 60_000, 2.0, 1.0)


@pytest.mark.parametrize("text, field, value", [
    ("size<=1.5MB", "size", 1_500_000), ("size<=96KiB", "size", 96 * 1024), ("gzip<=2MiB", "gzip", 2 * 1024 ** 2),
    ("gzip<=5000", "gzip", 5000), ("gzip<=5000B", "gzip", 5000), ("latency_p95<=500us", "latency_p95", 0.5),
    ("latency_p95<=0.01s", "latency_p95", 10.0), ("accuracy_drop<=0.5pt", "accuracy_drop", 0.5),
    ("accuracy_drop<=0", "accuracy_drop", 0.0), (" Size <= 40kb ", "size", 40_000),
])
def test_each_key_and_unit(text, field, value):
    b = parse_budget(text)
    assert getattr(b, field) == pytest.approx(value)
    assert [k for k, v in b.limits().items()] == [field]


@pytest.mark.parametrize("text, fragment", [
    ("", "empty --budget"),
    ("size<120KB", "expected KEY<=VALUE"),
    ("size=120KB", "expected KEY<=VALUE"),
    ("flash<=1MB", "unknown budget key 'flash'"),
    ("size<=1MB,size<=2MB", "given twice"),
    ("size<=12XB", "unknown size unit 'xb'"),
    ("size<=-5KB", "not a non-negative number"),
    ("size<=0KB", "allows no bytes"),
    ("latency_p95<=2", "needs a unit"),
    ("latency_p95<=2m", "needs a unit"),
    ("latency_p95<=0ms", "allows no time"),
    ("accuracy_drop<=1%", "not a non-negative number"),
    ("accuracy_drop<=200", "more than 100 points"),
    ("size<=1MB,,gzip<=1KB", "empty term"),
    ("size<=abc", "not a non-negative number"),
])
def test_bad_budgets_are_one_line_usage_errors(text, fragment):
    with pytest.raises(BudgetError) as err:
        parse_budget(text)
    assert fragment in err.value.message
    assert err.value.exit_code == ExitCode.USAGE
    assert "\n" not in err.value.one_line() and err.value.hint


def test_misses_and_distance():
    b = parse_budget("size<=100B,accuracy_drop<=1")
    assert b.met({"bytes": 100, "drop_pp": 1.0})
    assert b.misses({"bytes": 150, "drop_pp": 0.5}) == {"size": (150, 100)}
    assert b.distance({"bytes": 150, "drop_pp": 3.0}) == pytest.approx(0.5 + 2.0)
    assert b.distance({"bytes": 90, "drop_pp": None}) == float("inf")  # unmeasured never meets a limit
    assert Budget().met({})


# --- estimates -----------------------------------------------------------------------------------------------------

CONV = {"kernel_size": [3, 3], "filters": 32, "groups": 1, "data_format": "channels_last"}
LAYERS = [Layer("c1", "Conv2D", (3, 3, 1, 16), 16, {**CONV, "filters": 16}),
          Layer("c2", "Conv2D", (3, 3, 16, 32), 32, CONV),
          Layer("fc", "Dense", (512, 10), 10)]
W = 144 + 4608 + 5120


def test_size_estimate_is_weights_times_dtype_plus_biases():
    assert estimate(LAYERS, "int8").bytes == W + 4 * 58
    assert estimate(LAYERS, "fp16").bytes == 2 * W + 2 * 58
    assert estimate(LAYERS, "int16x8").bytes == W + 8 * 58
    assert estimate(LAYERS, "int8", "prune:0.75").bytes == estimate(LAYERS, "int8").bytes  # stored dense
    # int4 on FULLY_CONNECTED only: the Dense kernel at half a byte, the convolutions int8, biases float32
    assert estimate(LAYERS, "int8", "int4:fc").bytes == 144 + 4608 + 5120 // 2 + 4 * 58
    assert estimate(LAYERS, "int8", "int4:fc+conv").bytes == W // 2 + 4 * 58


def test_int4_with_a_layers_regex_is_still_a_lower_bound():
    """A regex may match every Dense layer, so its estimate may not exceed int4:fc's (it used to count them int8 and
    could prune a candidate that fits)."""
    assert estimate(LAYERS, "int8", "int4:fc:layers=.*").bytes <= estimate(LAYERS, "int8", "int4:fc").bytes
    assert estimate(LAYERS, "int8", "int4:fc:layers=fc").gzip_bytes <= estimate(LAYERS, "int8", "int4:fc").gzip_bytes


def test_separable_estimate_follows_the_recipes_rule():
    est = estimate(LAYERS, "int8", "separable")
    # c1 has 1 input channel (< min_in 8): kept; c2 becomes 3x3x16 depthwise + 16x32 pointwise
    assert est.weights == 144 + 3 * 3 * 16 + 16 * 32 + 5120
    assert estimate(LAYERS, "int8", "separable:min_in=32").weights == W  # the rule now skips c2 too


def test_gzip_estimate_shrinks_with_sparsity_and_clusters():
    dense = estimate(LAYERS, "int8").gzip_bytes
    assert dense == int(W * 8 * GZIP_FLOOR / 8)
    assert estimate(LAYERS, "int8", "prune:0.75").gzip_bytes == pytest.approx(dense * 0.25, abs=1)
    assert estimate(LAYERS, "int8", "cluster:16").gzip_bytes == pytest.approx(dense * 4 / 8, abs=1)
    assert estimate(LAYERS, "int8", "prune:0.5,cluster:16").gzip_bytes < estimate(LAYERS, "int8",
                                                                                  "cluster:16").gzip_bytes


# --- Pareto --------------------------------------------------------------------------------------------------------


def test_pareto_front():
    pts = [[10, 1.0], [20, 0.5], [15, 1.5], [10, 1.0], [30, 0.5]]
    assert dominates([10, 1.0], [15, 1.5]) and not dominates([10, 1.0], [10, 1.0])
    assert front(pts) == [True, True, False, True, False]
    assert front([]) == []


def test_objectives_leave_out_what_no_trial_measured():
    vectors, used = objective_vectors([{"bytes": 1, "gzip_bytes": 1, "latency_p95_ms": None, "drop_pp": 0.1},
                                       {"bytes": 2, "gzip_bytes": 1, "latency_p95_ms": 0.2, "drop_pp": 0.0}])
    assert used == ["bytes", "gzip_bytes", "drop_pp"] and vectors == [[1, 1, 0.1], [2, 1, 0.0]]


# --- space ---------------------------------------------------------------------------------------------------------


def test_space_is_built_from_registered_recipes_and_modes():
    space = build_space(parse_budget("size<=40KB"))
    labels = [c.label for c in space]
    assert labels[:4] == ["convert int8", "convert dynamic", "convert fp16", "convert int16x8"]
    assert "int4:fc+conv" in labels and "prune:0.75" in labels and "cluster:16" in labels and "separable" in labels
    assert not any("fallback" in la for la in labels)  # no accuracy budget: no float fallback candidate
    with_acc = build_space(parse_budget("accuracy_drop<=0.5"))
    assert "convert int8 fallback<=0.5pp" in [c.label for c in with_acc]
    unlabelled = [c.label for c in build_space(parse_budget("size<=40KB"), labels=False)]
    assert "separable" in unlabelled and "prune:0.75" not in unlabelled and "qat" not in unlabelled
    assert len(labels) == len(set(labels))


# --- cache ---------------------------------------------------------------------------------------------------------


def test_trial_cache_roundtrip_and_damaged_trials(tmp_path):
    cache = TrialCache(tmp_path)
    key = trial_key({"a": 1})
    assert cache.get(key) is None
    cache.put(key, {"status": "ok", "metrics": {"bytes": 3}}, b"abc")
    record, blob = cache.get(key)
    assert record["metrics"] == {"bytes": 3} and blob == b"abc"
    (tmp_path / "trials" / key[:2] / key / "model.tflite").write_bytes(b"abd")  # a model that does not match
    assert cache.get(key) is None
    cache.put(key, {"status": "ok"}, b"xyz")  # replaced whole
    assert cache.get(key)[1] == b"xyz"
    assert trial_key({"a": 1, "b": 2}) == trial_key({"b": 2, "a": 1}) != key


def test_half_written_trial_is_never_read_and_is_swept(tmp_path):
    cache = TrialCache(tmp_path)
    key = trial_key({"x": 1})
    # a writer killed with -9 after writing its temp directory, before the rename
    code = ("import os, sys, json; from converters.optimize.trials import TrialCache; c = TrialCache(sys.argv[1]); "
            "import converters.optimize.trials as t; t.os.rename = lambda *a: os.kill(os.getpid(), 9); "
            "c.put(sys.argv[2], {'status': 'ok'}, b'model')")
    proc = subprocess.run([sys.executable, "-c", code, str(tmp_path), key], cwd=os.getcwd())
    assert proc.returncode == -9
    temps = list((tmp_path / "trials" / key[:2]).glob(".tmp-*"))
    assert len(temps) == 1 and (temps[0] / "trial.json").exists()
    assert cache.get(key) is None
    assert cache.sweep() == 1 and not list((tmp_path / "trials" / key[:2]).glob(".tmp-*"))
    assert json.loads(json.dumps(cache.put(key, {"status": "ok"}, None)))["model_sha256"] is None


def test_data_hashes_follow_content(tmp_path):
    from converters.optimize.trials import hash_data

    f = tmp_path / "d.npz"
    f.write_bytes(b"one")
    h1 = hash_data(str(f))
    f.write_bytes(b"two")
    assert hash_data(str(f)) != h1
    d = tmp_path / "images"
    (d / "0").mkdir(parents=True)
    (d / "0" / "a.png").write_bytes(b"x")
    h2 = hash_data(str(d))
    (d / "0" / "a.png").rename(d / "0" / "b.png")  # same bytes, another name: another data set
    assert hash_data(str(d)) != h2
    mod = tmp_path / "gen_data_mod.py"
    mod.write_text("def load():\n    return 1\n")
    sys.path.insert(0, str(tmp_path))
    try:
        h3 = hash_data("gen_data_mod:load")
        mod.write_text("def load():\n    return 2\n")
        assert hash_data("gen_data_mod:load") != h3  # the module's source is hashed, not only its name
        assert "gen_data_mod" not in sys.modules  # found, not imported
    finally:
        sys.path.remove(str(tmp_path))
    assert hash_data(None) is None


def test_training_options_key_only_the_trials_that_train(tmp_path):
    """--epochs/--lr/--seed change a fine-tuned trial, not a conversion or int4 (no training): changing them must
    not make the cache miss on int4 trials (docs: "the training options only for trials that train")."""
    from converters.optimize.search import Search, SearchOptions
    from converters.optimize.space import Candidate

    budget = parse_budget("size<=1MB")
    hashes = {"model": "m", "train": "t", "eval": "e", "val": None}

    def key(cand, **kw):
        s = Search(SearchOptions(model=tmp_path / "m.keras", budget=budget, cache_dir=tmp_path, **kw))
        return s._plan(cand, budget, LAYERS, hashes, {"edgekit": "x"})["key"]

    for cand, trains in [(Candidate(mode="int8"), False), (Candidate(recipe="int4:fc"), False),
                         (Candidate(recipe="prune:0.5"), True)]:
        assert cand.trains is trains
        changed = [key(cand, epochs=5) != key(cand), key(cand, seed=1) != key(cand), key(cand, lr=0.01) != key(cand)]
        assert changed == [trains] * 3, cand.label
    assert key(Candidate(recipe="int4:fc"), threads=2) != key(Candidate(recipe="int4:fc"))  # still a measured option
