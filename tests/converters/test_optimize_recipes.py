"""Recipe edges of ``edgekit optimize``: too few pruning steps, stock MobileNetV2 under XNNPACK pruning, and the
separable student's opt-in head. Real tfmot and LiteRT on digits-sized models."""

from __future__ import annotations

import numpy as np
import pytest

from converters.optimize import parse_chain
from converters.optimize.recipes import MIN_PRUNE_STEPS, RECIPES

# -- too few fine-tuning steps for magnitude pruning ---------------------------------------------------------------


def test_prune_warns_below_the_minimum_step_count():
    prune = RECIPES["prune"]
    step = parse_chain("prune:0.75").get("prune")
    msg = prune.check_steps(step, 8, 8)
    assert "fine-tunes only 8 steps (8 per epoch)" in msg
    assert f"--epochs {-(-MIN_PRUNE_STEPS // 8)} or more" in msg
    assert prune.check_steps(step, MIN_PRUNE_STEPS, 10) is None
    # M-by-N and XNNPACK M-by-N use a constant schedule: nothing ramps up, nothing to warn about
    assert prune.check_steps(parse_chain("prune:2:4").get("prune"), 2, 1) is None
    assert RECIPES["cluster"].check_steps(parse_chain("cluster:8").get("cluster"), 1, 1) is None


@pytest.mark.slow
def test_prune_with_too_few_steps_warns_before_training(digits_legacy, digits_train, tmp_path, capsys):
    from converters import pipeline
    from converters.optimize import OptimizeOptions, optimize

    z = np.load(digits_train)
    np.savez(tmp_path / "small.npz", x=z["x"][:64], y=z["y"][:64])  # 2 steps of 32
    with pipeline.progress_bars(True) as progress:
        r = optimize(OptimizeOptions(model=digits_legacy["model"], recipe="prune:0.75",
                                     train=str(tmp_path / "small.npz"), eval=digits_legacy["eval"], epochs=1, runs=0),
                     progress)
    err = capsys.readouterr().err
    assert "prune:0.75 fine-tunes only 2 steps (2 per epoch)" in " ".join(err.split())
    assert any("fine-tunes only 2 steps" in w for w in r.report["warnings"])
    assert r.report["optimization"]["stages"][0]["steps"] == 2
    # enough data and epochs: no warning
    full = optimize(OptimizeOptions(model=digits_legacy["model"], recipe="prune:0.75", train=str(digits_train),
                                    eval=digits_legacy["eval"], epochs=2, runs=0))
    assert full.report["optimization"]["stages"][0]["steps"] >= MIN_PRUNE_STEPS
    assert not any("fine-tunes only" in w for w in full.report["warnings"])


# -- stock keras.applications MobileNetV2 under XNNPACK pruning -------------------------------------------------------


def _digits_rgb(digits_train, tmp_path, size: int, n: int) -> tuple[str, str]:
    """Digits upsampled to size x size x 3 in [-1, 1] (MobileNetV2's range): n training and n evaluation images."""
    z = np.load(digits_train)
    f = size // 8

    def up(x):
        return np.repeat(np.kron(x, np.ones((1, f, f, 1), np.float32)), 3, axis=-1) * 2.0 - 1.0

    np.savez(tmp_path / "train.npz", x=up(z["x"][:n]), y=z["y"][:n])
    np.savez(tmp_path / "eval.npz", x=up(z["x"][n:2 * n]), y=z["y"][n:2 * n])
    return str(tmp_path / "train.npz"), str(tmp_path / "eval.npz")


@pytest.mark.slow
def test_stock_mobilenetv2_is_rewritten_for_xnnpack_pruning(digits_train, tmp_path):
    """keras.applications' MobileNetV2 ('same' stride-2 stem, ((0, 1), (0, 1)) block padding) is refused by tfmot's
    XNNPACK policy as it is; the recipe rewrites the padding and the 1x1 convs come out sparse."""
    import keras

    from converters.optimize import OptimizeOptions, optimize
    from edgekit.tflite_model import inspect_tflite

    from .test_optimize import litert_top1

    train, ev = _digits_rgb(digits_train, tmp_path, 32, 64)
    keras.utils.set_random_seed(0)
    keras.applications.MobileNetV2(weights=None, alpha=0.35, input_shape=(32, 32, 3), classes=10).save(
        tmp_path / "mnv2.keras")
    r = optimize(OptimizeOptions(model=tmp_path / "mnv2.keras", recipe="prune:2:4:xnnpack", train=train, eval=ev,
                                 epochs=1, runs=2, mode="fp32"))
    opt = r.report["optimization"]
    rewritten = {c["layer"]: c for c in opt["stages"][0]["padding_rewritten"]}
    assert rewritten["Conv1"]["to"] == "ZeroPadding2D(1) + valid"
    assert {n for n in rewritten if n.endswith("_pad")} == {"block_1_pad", "block_3_pad", "block_6_pad",
                                                          "block_13_pad"}
    assert all(rewritten[n]["to"] == "((1, 1), (1, 1))" for n in rewritten if n.endswith("_pad"))
    assert opt["stages"][0]["params"] == opt["baseline_int8"]["params"]  # same layers, same weights count
    info = inspect_tflite(r.model_bytes)
    sparse = [t for t in info.main.tensors if t.sparse]
    assert len(sparse) == info.op_histogram()["DENSIFY"] >= 30  # the 1x1 convs of the 17 blocks, stored sparse
    assert opt["result"]["top1"] == pytest.approx(litert_top1(r.model_bytes, ev), abs=1e-9)


@pytest.mark.slow
def test_xnnpack_pruning_names_the_layer_it_cannot_run_sparse(digits_train, tmp_path):
    import tf_keras as k

    from converters.optimize import OptimizeOptions, optimize
    from converters.optimize.errors import RecipeError

    train, ev = _digits_rgb(digits_train, tmp_path, 16, 64)
    L = k.layers
    inp = L.Input((16, 16, 3), name="image")
    h = L.Conv2D(16, 3, strides=2, padding="same", activation="relu")(inp)  # rewritten, then accepted
    h = L.Conv2D(16, 3, padding="same", name="dense_3x3")(h)  # a full 3x3 conv: XNNPACK has no sparse kernel
    h = L.GlobalAveragePooling2D()(h)
    k.Model(inp, L.Dense(10, activation="softmax")(h)).save(tmp_path / "m.h5")
    out = tmp_path / "out"
    with pytest.raises(RecipeError) as err:
        optimize(OptimizeOptions(model=tmp_path / "m.h5", recipe="prune:0.75:xnnpack", train=train, eval=ev,
                                 epochs=1, runs=0, mode="fp32", output=out))
    assert "layer dense_3x3 (Conv2D, kernel_size=(3, 3), strides=(1, 1), padding=same)" in str(err.value)
    assert "\n" not in str(err.value) and "drop :xnnpack" in err.value.hint
    assert not out.exists()


# -- separable:head: pooling before a dominating Flatten -> Dense head -----------------------------------------------


def test_separable_head_option_parses():
    assert parse_chain("separable:head").get("separable").params == {"head": True}
    assert parse_chain("separable:min_in=4:head").get("separable").params == {"head": True, "min_in_channels": 4}
    assert parse_chain("separable").get("separable").params == {}
    from converters.optimize.errors import RecipeError

    with pytest.raises(RecipeError, match="unknown option 'head=yes'"):
        parse_chain("separable:head=yes")


def test_pooled_dense_kernel_is_exact_on_window_constant_features():
    from converters.optimize.separable import pool_dense_kernel

    rng = np.random.default_rng(0)
    h, w, c, units = 4, 6, 3, 5
    kernel = rng.normal(size=(h * w * c, units))
    pooled = rng.normal(size=(1, h // 2, w // 2, c))
    full = np.repeat(np.repeat(pooled, 2, axis=1), 2, axis=2)  # each 2x2 window constant
    got = pooled.reshape(1, -1) @ pool_dense_kernel(kernel, h, w, c, (2, 2))
    np.testing.assert_allclose(got, full.reshape(1, -1) @ kernel, rtol=1e-10)


@pytest.mark.slow
def test_separable_head_pools_the_flatten_dense_head(digits_legacy, digits_train):
    from converters.optimize import OptimizeOptions, optimize
    from edgekit.tflite_model import inspect_tflite

    from .test_optimize import litert_top1

    r = optimize(OptimizeOptions(model=digits_legacy["model"], recipe="separable:head", train=str(digits_train),
                                 eval=digits_legacy["eval"], epochs=1, runs=2))
    opt = r.report["optimization"]
    rewrite = opt["stages"][0]["rewrite"]
    head = [row for row in rewrite["rewritten"] if row.get("head")]
    assert len(head) == 1 and head[0]["in_features"] == [512, 128] and head[0]["pool"] == [2, 2]
    assert head[0]["init"] == "least_squares"
    assert head[0]["init_relative_error"]["least_squares"] < head[0]["init_relative_error"]["window_sum"]
    assert rewrite["rule"]["head"] is True
    info = inspect_tflite(r.model_bytes)
    fc = [list(info.main.tensors[op.inputs[1]].shape) for op in info.main.ops if op.opcode == "FULLY_CONNECTED"]
    assert fc == [[64, 128], [10, 64]]  # read from the written flatbuffer
    assert "AVERAGE_POOL_2D" in info.op_histogram()
    assert opt["result"]["params"] == rewrite["params"]["after"] < 0.4 * opt["baseline_int8"]["params"]
    assert opt["result"]["top1"] == pytest.approx(litert_top1(r.model_bytes, digits_legacy["eval"]), abs=1e-9)
    assert opt["result"]["top1"] >= 0.9


@pytest.mark.slow
def test_cli_card_names_per_tensor_scales_and_the_step_warning(digits_legacy, digits_train, tmp_path, session_key):
    from click.testing import CliRunner

    from edgekit.cli import cli

    z = np.load(digits_train)
    np.savez(tmp_path / "small.npz", x=z["x"][:64], y=z["y"][:64])
    r = CliRunner().invoke(cli, ["optimize", digits_legacy["model"], "--recipe", "prune:0.5,cluster:8", "--train",
                                 str(tmp_path / "small.npz"), "--eval", digits_legacy["eval"], "--epochs", "1",
                                 "--runs", "0", "-o", str(tmp_path / "out"), "--key", str(session_key[0]), "--quiet"])
    assert r.exit_code == 0, r.output
    text = " ".join(r.output.split())
    assert "per-tensor weight scales" in text
    assert "prune:0.5 fine-tunes only 2 steps" in text
    assert (tmp_path / "out" / "report.json").exists()


@pytest.mark.slow
def test_separable_head_without_bias_and_in_a_sequential_model():
    """A bias-free Dense gets no fitted intercept; a Sequential model is rewritten like a Functional one."""
    import tf_keras as k

    from converters.optimize.separable import SeparableRule, make_separable

    L = k.layers
    k.utils.set_random_seed(0)
    m = k.Sequential([L.Input((6, 6, 4)), L.Conv2D(8, 3, padding="same", activation="relu"), L.Flatten(),
                      L.Dense(5, use_bias=False, name="head")])
    x = np.random.default_rng(0).normal(size=(256, 6, 6, 4)).astype(np.float32)
    student, report = make_separable(m, SeparableRule(head=True), x=x)
    assert [type(layer).__name__ for layer in student.layers] == ["Conv2D", "AveragePooling2D", "Flatten", "Dense"]
    assert [w.shape for w in student.get_layer("head").get_weights()] == [(3 * 3 * 8, 5)]
    row = next(r for r in report.rewritten if r.get("head"))
    assert row["in_features"] == [288, 72] and row["params_after"] == 72 * 5
    assert row["init_relative_error"]["least_squares"] <= row["init_relative_error"]["window_sum"]
    y, got = m.predict(x[:32], verbose=0), student.predict(x[:32], verbose=0)
    assert np.sqrt(np.mean((got - y) ** 2)) < np.sqrt(np.mean(y ** 2))  # closer to the original than zero is


@pytest.mark.slow
def test_int4_without_train_calibrates_on_calibration_samples_of_eval(digits_legacy):
    """int4 alone needs no --train; the int8 baseline then calibrates on the evaluation data, and
    --calibration-samples still bounds how much (it used to take the whole evaluation set)."""
    from converters.optimize import OptimizeOptions, optimize

    n_eval = len(np.load(digits_legacy["eval"])["x"])
    r = optimize(OptimizeOptions(model=digits_legacy["model"], recipe="int4:fc", eval=digits_legacy["eval"],
                                 calibration_samples=50, runs=0))
    assert n_eval > 50
    assert r.report["calibration"]["samples"] == 50
