"""Converter fixtures: real models built once per session and shared conversions (TensorFlow is slow to start)."""

from __future__ import annotations

import numpy as np
import pytest

from tests.support.models import CACHE


def run_convert(**kw):
    from converters import pipeline

    return pipeline.convert(pipeline.ConvertOptions(**kw))


@pytest.fixture(scope="session")
def mobilenet(tmp_path_factory):
    """MobileNetV2 (tf_keras, weights=None, alpha 0.35, 96x96) saved as .keras, with 64 calibration images."""
    out = CACHE / "mobilenetv2-a035-96"
    model, calib = out / "mobilenetv2.keras", out / "calib.npz"
    if not (model.exists() and calib.exists()):
        import tf_keras

        out.mkdir(parents=True, exist_ok=True)
        m = tf_keras.applications.MobileNetV2(weights=None, alpha=0.35, input_shape=(96, 96, 3))
        m.save(model)
        rng = np.random.default_rng(0)
        np.savez(calib, x=(rng.random((64, 96, 96, 3), dtype=np.float32) * 2 - 1))
    return {"model": model, "calibration": calib}


@pytest.fixture(scope="session")
def sensitive_model():
    """A digits MLP whose hidden Dense layer has one input row of huge weights on a pixel that is always 0.

    The float model ignores that row (the pixel is 0 in every digit), but per-channel int8 weight quantization
    spends its whole range on the outlier and rounds every real weight of the layer to zero: int8 accuracy
    collapses unless that one layer stays in float.
    """
    out = CACHE / "digits-sensitive"
    model = out / "sensitive.keras"
    if not model.exists():
        import keras
        import tensorflow as tf

        from tests.support.models import REPO

        import sys

        sys.path.insert(0, str(REPO / "examples"))
        try:
            import train_digits
        finally:
            sys.path.pop(0)
        (xtr, ytr), _ = train_digits.load_digits_split()
        assert float(np.abs(xtr[:, 0, 0, 0]).max()) == 0.0  # fixture precondition, not input validation
        tf.random.set_seed(0)
        L = keras.layers
        m = keras.Sequential([L.Input((8, 8, 1), name="image"), L.Flatten(),
                              L.Dense(64, activation="relu", name="sensitive"),
                              L.Dense(10, activation="softmax", name="probs")])
        m.compile(optimizer=keras.optimizers.Adam(3e-3), loss="sparse_categorical_crossentropy")
        m.fit(xtr, ytr, epochs=15, batch_size=32, verbose=0)
        w, b = m.get_layer("sensitive").get_weights()
        w[0, :] = 500.0
        m.get_layer("sensitive").set_weights([w, b])
        out.mkdir(parents=True, exist_ok=True)
        m.save(model)
    return model


@pytest.fixture(scope="session")
def doubly_sensitive_model(sensitive_model):
    """The sensitive MLP with a second sensitive layer, so that one float layer can never meet a 0 pp budget.

    Hidden unit 0 of ``sensitive`` is made dead (zero weights but the always-0 pixel, bias -1, so ReLU gives 0 for
    every input), and the classifier gets an outlier row of 500.0 on that unit: the float model is unchanged, but
    int8 quantization of the classifier rounds its real weights to zero whatever else stays in float.
    """
    out = CACHE / "digits-sensitive"
    model = out / "doubly-sensitive.keras"
    if not model.exists():
        import keras

        m = keras.models.load_model(sensitive_model)
        w, b = m.get_layer("sensitive").get_weights()
        w[1:, 0] = 0.0
        b[0] = -1.0
        m.get_layer("sensitive").set_weights([w, b])
        w2, b2 = m.get_layer("probs").get_weights()
        w2[0, :] = 500.0
        m.get_layer("probs").set_weights([w2, b2])
        m.save(model)
    return model


@pytest.fixture(scope="session")
def digits_legacy():
    """The digits CNN built with tf_keras (.h5): tfmot's native input."""
    from tests.support.models import digits_keras

    return digits_keras(legacy=True)


@pytest.fixture(scope="session")
def digits_train(tmp_path_factory):
    """The digits training split with labels (x, y) as .npz, for --train."""
    import sys

    from tests.support.models import REPO

    sys.path.insert(0, str(REPO / "examples"))
    try:
        import train_digits
    finally:
        sys.path.pop(0)
    (xtr, ytr), _ = train_digits.load_digits_split()
    path = tmp_path_factory.mktemp("digits-train") / "train.npz"
    np.savez(path, x=xtr, y=ytr)
    return path
