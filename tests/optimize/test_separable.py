"""Automatic depthwise-separable students: what is rewritten and why, exact rebuilds, kept weights, params/MACs."""

from __future__ import annotations

import numpy as np
import pytest

from converters.errors import OptionError
from converters.optimize.separable import (SeparableRule, count_params_macs, factorize_kernel, make_separable,
                                           separable_cost_ratio)


def _rank1_kernels(model, seed=0):
    """Make every 3x3 Conv2D kernel separable per input channel (so the student must reproduce it exactly)."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if type(layer).__name__ == "Conv2D" and layer.kernel_size != (1, 1):
            kh, kw, cin, cout = layer.kernel.shape
            d = rng.normal(size=(kh, kw, cin, 1))
            p = rng.normal(size=(1, 1, cin, cout)) / np.sqrt(cin * kh * kw)
            layer.kernel.assign((d * p).astype("float32"))


def _functional(tf_keras):
    L = tf_keras.layers
    inner = tf_keras.Sequential([L.InputLayer((8, 8, 16)), L.Conv2D(16, 3, padding="same", name="inner_conv"),
                                 L.BatchNormalization(name="inner_bn")], name="inner")
    inp = tf_keras.Input((8, 8, 3), name="image")
    x = L.Conv2D(16, 3, padding="same", name="stem")(inp)  # 3 input channels: kept
    x = L.BatchNormalization(name="stem_bn")(x)
    x = L.ReLU(name="stem_relu")(x)
    y = L.Conv2D(16, 3, padding="same", use_bias=False, name="body")(x)  # rewritten
    y = L.BatchNormalization(name="body_bn")(y)
    y = L.Activation("relu", name="body_act")(y)
    x = L.Add(name="skip")([x, y])
    x = L.Conv2D(16, 1, name="point")(x)  # 1x1: kept
    x = inner(x)  # nested: inner_conv rewritten
    x = L.Conv2D(4, 3, padding="same", activation="relu", name="narrow")(x)  # 1/4 + 1/9 = 0.36 -> rewritten
    x = L.Conv2D(2, 3, padding="same", name="tiny")(x)  # 4 input channels: kept
    out = L.Dense(10, name="head")(L.Flatten()(x))
    return tf_keras.Model(inp, out)


def test_rewrites_eligible_convs_keeps_the_rest_and_says_why():
    import tf_keras

    model = _functional(tf_keras)
    rng = np.random.default_rng(1)
    for layer in model.layers + model.get_layer("inner").layers:
        if type(layer).__name__ == "BatchNormalization":
            layer.set_weights([rng.uniform(0.5, 1.5, w.shape).astype("float32") for w in layer.get_weights()])
    _rank1_kernels(model)
    _rank1_kernels(model.get_layer("inner"))
    student, report = make_separable(model)

    assert [r["layer"] for r in report.rewritten] == ["body", "inner/inner_conv", "narrow"]
    skipped = {s["layer"]: s["reason"] for s in report.skipped}
    assert skipped == {"stem": "3 input channels < 8", "point": "1x1 kernel (already pointwise)",
                       "tiny": "4 input channels < 8"}
    assert type(student.get_layer("body_dw")).__name__ == "DepthwiseConv2D"
    assert student.get_layer("body_pw").kernel_size == (1, 1)
    assert type(student.get_layer("inner").get_layer("inner_conv_dw")).__name__ == "DepthwiseConv2D"
    # BN, activation and every untouched layer keep their weights
    for name in ("stem", "stem_bn", "body_bn", "point", "tiny", "head"):
        for a, b in zip(model.get_layer(name).get_weights(), student.get_layer(name).get_weights()):
            np.testing.assert_array_equal(a, b)
    assert student.get_layer("narrow_pw").activation.__name__ == "relu"
    # rank-1 kernels factorise exactly, so the student computes the same function
    x = rng.normal(size=(4, 8, 8, 3)).astype("float32")
    np.testing.assert_allclose(student(x, training=False), model(x, training=False), atol=1e-4, rtol=1e-4)
    assert report.params_after == student.count_params() < report.params_before == model.count_params()


def test_report_counts_match_hand_computed_params_and_macs(digits):
    import keras

    model = keras.saving.load_model(digits["model"], compile=False)
    counted = count_params_macs(model)
    # digits CNN: 8x8 conv 1->16, 8x8 conv 16->32, pool to 4x4, 4x4 conv 32->32, dense 512->64, dense 64->10
    macs = 64 * 9 * 1 * 16 + 64 * 9 * 16 * 32 + 16 * 9 * 32 * 32 + 512 * 64 + 64 * 10
    assert counted["macs"] == macs and counted["params"] == model.count_params()
    student, report = make_separable(model)
    assert [r["layer"].split("_")[0] for r in report.rewritten] == ["conv2d", "conv2d"]
    pair_macs = 64 * (9 * 16 + 16 * 32) + 16 * (9 * 32 + 32 * 32)
    assert report.macs_after == 64 * 9 * 16 + pair_macs + 512 * 64 + 64 * 10
    assert report.params_after == model.count_params() - (9 * 16 * 32 + 9 * 32 * 32) + (9 * 16 + 16 * 32) \
        + (9 * 32 + 32 * 32)
    d = report.to_dict()
    assert d["params"]["ratio"] == pytest.approx(report.params_after / report.params_before, abs=1e-4)


@pytest.mark.slow
def test_mobilenetv2_is_already_separable_so_every_conv_is_skipped_with_a_reason():
    import tf_keras

    model = tf_keras.applications.MobileNetV2(weights=None, alpha=0.35, input_shape=(96, 96, 3), classes=4)
    student, report = make_separable(model)
    convs = [layer.name for layer in model.layers if type(layer).__name__ == "Conv2D"]
    assert report.rewritten == [] and sorted(s["layer"] for s in report.skipped) == sorted(convs)
    assert report.params_after == report.params_before


def test_factorize_kernel_is_the_best_rank1_split():
    rng = np.random.default_rng(0)
    k = rng.normal(size=(3, 3, 5, 7)).astype("float32")
    d, p = factorize_kernel(k)
    approx = d * p
    for c in range(5):
        s = np.linalg.svd(k[:, :, c, :].reshape(9, 7), compute_uv=False)
        err = np.linalg.norm((k[:, :, c, :] - approx[:, :, c, :]).ravel())
        assert err == pytest.approx(np.sqrt(np.sum(s[1:] ** 2)), rel=1e-4)


def test_rule_bounds():
    assert separable_cost_ratio(3, 3, 32) == pytest.approx(1 / 32 + 1 / 9)
    with pytest.raises(OptionError):
        SeparableRule(max_cost_ratio=0)
    with pytest.raises(OptionError):
        SeparableRule(min_in_channels=0)
    assert SeparableRule(max_cost_ratio=0.3).decide({"kernel_size": [3, 3], "filters": 4}, 16).startswith(
        "separable pair would cost 0.36x")
