"""Keras 3 -> tf_keras rebuild: outputs equal the original's on real and randomized models; bad models are errors."""

from __future__ import annotations

import numpy as np
import pytest

from converters.errors import KerasBridgeError
from converters.keras_bridge import check_same_outputs, load_as_tf_keras, to_tf_keras

ATOL = 1e-5


def _randomize(model, seed=0):
    """Give every weight random values (BN variances positive), so a weight that is not copied shows in outputs."""
    rng = np.random.default_rng(seed)
    for w in model.weights:
        v = rng.normal(0, 0.3, tuple(w.shape)).astype("float32")
        if "variance" in getattr(w, "path", w.name):
            v = np.abs(v) + 0.5
        w.assign(v)


def _outputs(model, x):
    y = model(x, training=False)
    return [np.asarray(t) for t in (y if isinstance(y, (list, tuple)) else [y])]


def _assert_same(original, rebuilt, x):
    a, b = _outputs(original, x), _outputs(rebuilt, x)
    assert len(a) == len(b)
    for u, v in zip(a, b):
        assert u.shape == v.shape
        np.testing.assert_allclose(v, u, atol=ATOL, rtol=1e-5)


def _every_layer_model():
    import keras

    L = keras.layers
    inner = keras.Sequential([L.Input((4, 4, 24)), L.Conv2D(8, 1, name="inner_pw"),
                              L.BatchNormalization(name="inner_bn"),
                              L.Activation("relu", name="inner_act")], name="inner_seq")
    inp = keras.Input((16, 16, 3), name="image")
    x = L.Rescaling(1 / 127.5, offset=-1.0)(inp)
    x = L.ZeroPadding2D(1)(x)
    x = L.Conv2D(8, 3, strides=2, use_bias=False)(x)
    x = L.BatchNormalization()(x)
    x = L.ReLU(6.0)(x)
    a = L.DepthwiseConv2D(3, padding="same", activation="relu")(x)
    b = L.SeparableConv2D(8, 3, padding="same")(x)
    x = L.Add()([a, b])
    x = L.MaxPooling2D(2)(x)
    c = L.Conv2D(16, 3, padding="same", activation="swish")(x)
    x = L.Concatenate()([x, c])
    x = inner(x)
    x = L.AveragePooling2D(2)(x)
    x = L.Flatten()(x)
    x = L.Reshape((2, 16))(x)
    x = L.Flatten()(x)
    x = L.Dropout(0.3)(x)
    x = L.Dense(12, activation="relu")(x)
    g = L.GlobalAveragePooling2D()(c)
    x = L.Concatenate()([x, g])
    out = L.Dense(10, activation="softmax", name="probs")(x)
    return keras.Model(inp, out, name="every_layer")


def test_every_standard_layer_and_a_nested_sequential_rebuild_with_equal_outputs():
    import tf_keras

    model = _every_layer_model()
    _randomize(model)
    rebuilt = to_tf_keras(model)
    assert isinstance(rebuilt, tf_keras.Model)
    assert [layer.name for layer in rebuilt.layers] == [layer.name for layer in model.layers]
    assert isinstance(rebuilt.get_layer("inner_seq"), tf_keras.Sequential)
    kinds = {type(layer).__name__ for layer in rebuilt.layers}
    assert {"Conv2D", "DepthwiseConv2D", "SeparableConv2D", "BatchNormalization", "Add", "Concatenate",
            "Rescaling", "ZeroPadding2D", "Reshape", "Flatten", "Dropout", "Dense", "ReLU"} <= kinds
    x = np.random.default_rng(1).uniform(0, 255, (8, 16, 16, 3)).astype("float32")
    _assert_same(model, rebuilt, x)
    assert rebuilt.count_params() == model.count_params()


def test_trained_digits_cnn_from_keras_file(digits):
    import tf_keras

    rebuilt = load_as_tf_keras(digits["model"])
    assert isinstance(rebuilt, tf_keras.Sequential)
    import keras

    original = keras.saving.load_model(digits["model"], compile=False)
    x = np.load(digits["eval"])["x"]
    _assert_same(original, rebuilt, x)
    y = np.load(digits["eval"])["y"]
    acc = float(np.mean(np.argmax(_outputs(rebuilt, x)[0], axis=1) == y))
    assert acc == pytest.approx(digits["test_accuracy"], abs=1e-6)


@pytest.mark.slow
def test_nested_mobilenetv2_backbone_saved_as_keras3(tmp_path):
    import keras
    import tf_keras

    backbone = keras.applications.MobileNetV2(weights=None, alpha=0.35, input_shape=(96, 96, 3))
    inp = keras.Input((96, 96, 3), name="image")
    x = keras.layers.Rescaling(1 / 127.5, offset=-1.0)(inp)
    x = backbone(x)
    out = keras.layers.Dense(4, activation="softmax", name="head")(keras.layers.Dropout(0.2)(x))
    model = keras.Model(inp, out, name="classifier")
    _randomize(model, seed=3)
    path = tmp_path / "classifier.keras"
    model.save(path)

    rebuilt = load_as_tf_keras(path)
    nested = rebuilt.get_layer(backbone.name)
    assert isinstance(nested, tf_keras.Model) and len(nested.layers) == len(backbone.layers)
    x = np.random.default_rng(2).uniform(0, 255, (4, 96, 96, 3)).astype("float32")
    _assert_same(model, rebuilt, x)


def test_multi_input_multi_output_with_a_shared_layer():
    import keras

    L = keras.layers
    a, b = keras.Input((6,), name="a"), keras.Input((6,), name="b")
    shared = L.Dense(5, name="shared")
    y = L.Concatenate(name="joined")([shared(a), shared(b)])
    model = keras.Model([a, b], [y, L.Dense(2, name="head")(y)])
    _randomize(model)
    rebuilt = to_tf_keras(model)
    assert rebuilt.input_names == ["a", "b"]
    rng = np.random.default_rng(0)
    xs = [rng.normal(size=(3, 6)).astype("float32") for _ in range(2)]
    _assert_same(model, rebuilt, xs)


def test_tf_keras_models_pass_through_and_tf_keras_files_load(tmp_path):
    import tf_keras

    L = tf_keras.layers
    model = tf_keras.Sequential([L.InputLayer((8, 8, 1)), L.Conv2D(4, 3), L.Flatten(), L.Dense(3)])
    assert to_tf_keras(model) is model
    x = np.random.default_rng(0).normal(size=(2, 8, 8, 1)).astype("float32")
    for path in (tmp_path / "m.h5", tmp_path / "m.keras", tmp_path / "saved"):
        model.save(path)
        loaded = load_as_tf_keras(path)
        assert isinstance(loaded, tf_keras.Model)
        _assert_same(model, loaded, x)


def test_exported_savedmodel_without_keras_config_is_an_error(tmp_path):
    import keras

    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    model.export(tmp_path / "exported", verbose=False)
    with pytest.raises(KerasBridgeError, match="holds no Keras model"):
        load_as_tf_keras(tmp_path / "exported")


def test_subclassed_model_is_a_one_line_error():
    import keras

    class Net(keras.Model):
        def __init__(self):
            super().__init__(name="net")
            self.d = keras.layers.Dense(2)

        def call(self, x):
            return self.d(x)

    net = Net()
    net(np.zeros((1, 3), "float32"))
    with pytest.raises(KerasBridgeError) as info:
        to_tf_keras(net)
    line = info.value.one_line()
    assert "'net' is a subclassed" in line and "functional API" in line and "\n" not in line


def test_custom_layer_ops_call_and_untranslatable_option_name_the_layer():
    import keras

    class Doubler(keras.layers.Layer):
        def call(self, x):
            return x * 2

    inp = keras.Input((3,))
    with pytest.raises(KerasBridgeError, match="'doubler' \\(Doubler, a custom layer\\)"):
        to_tf_keras(keras.Model(inp, keras.layers.Dense(2)(Doubler(name="doubler")(inp))))
    with pytest.raises(KerasBridgeError, match="keras.ops call"):
        to_tf_keras(keras.Model(inp, keras.ops.add(keras.layers.Dense(3)(inp), inp)))
    dense = keras.layers.Dense(3, name="adapted")
    model = keras.Model(inp, dense(inp))
    dense.enable_lora(2)
    with pytest.raises(KerasBridgeError, match="'adapted' \\(Dense\\) sets 'lora_rank'=2"):
        to_tf_keras(model)


def test_check_same_outputs_catches_a_wrong_weight():
    import keras

    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, name="d")])
    _randomize(model)
    rebuilt = to_tf_keras(model)
    k, b = rebuilt.get_layer("d").get_weights()
    rebuilt.get_layer("d").set_weights([k + 0.01, b])
    with pytest.raises(KerasBridgeError, match="differs from the Keras 3 original"):
        check_same_outputs(model, rebuilt)
