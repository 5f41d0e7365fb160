"""Knowledge distillation on the digits CNN: labelled and unlabelled, seeded, under a strategy, bad pairs refused."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from converters.optimize.distill import distill
from converters.optimize.errors import ModelShapeError, RecipeError, TrainingDataError
from converters.optimize.separable import make_separable
from tests.support.models import REPO


@pytest.fixture(scope="module")
def data():
    sys.path.insert(0, str(REPO / "examples"))
    try:
        import train_digits
    finally:
        sys.path.pop(0)
    (xtr, ytr), (xte, yte) = train_digits.load_digits_split()
    return xtr, ytr, xte, yte


@pytest.fixture(scope="module")
def teacher(digits):
    import keras

    return keras.saving.load_model(digits["model"], compile=False)


def _top1(model, x, y) -> float:
    return float(np.mean(np.argmax(np.asarray(model(x, training=False)), axis=1) == y))


def _student(teacher):
    return make_separable(teacher)[0]


def test_labelled_distillation_recovers_the_separable_student(teacher, data, digits):
    xtr, ytr, xte, yte = data
    student = _student(teacher)
    before = _top1(student, xte, yte)
    rows = []
    student, info = distill(teacher, student, xtr, ytr, epochs=6, seed=0, progress=rows.append)
    after = _top1(student, xte, yte)
    assert [r["epoch"] for r in rows] == [1, 2, 3, 4, 5, 6] and info["history"] == rows
    assert {"loss", "agreement", "accuracy", "seconds"} <= set(rows[-1])
    assert rows[-1]["loss"] < rows[0]["loss"]
    assert after > before and after >= digits["test_accuracy"] - 0.03
    assert info["alpha_effective"] == info["alpha"] == 0.1 and info["teacher_outputs"] == "probabilities"


def test_unlabelled_distillation_learns_from_the_teacher_only(teacher, data):
    xtr, _, xte, yte = data
    student = _student(teacher)
    student, info = distill(teacher, student, xtr, None, alpha=0.5, epochs=6, seed=0)
    assert info["labelled"] is False and info["alpha_effective"] == 0.0
    assert "accuracy" not in info["history"][-1]
    agree = np.mean(np.argmax(student(xte, training=False), 1) == np.argmax(teacher(xte, training=False), 1))
    assert agree > 0.9


def test_same_seed_same_student_and_a_strategy(teacher, data):
    import tensorflow as tf

    xtr, ytr, _, _ = data
    runs = []
    for strategy in (None, None, tf.distribute.OneDeviceStrategy("/cpu:0")):
        student, _ = distill(teacher, _student(teacher), xtr[:300], ytr[:300], epochs=2, seed=7, strategy=strategy)
        runs.append(student.get_weights())
    for a, b in zip(runs[0], runs[1]):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(runs[0], runs[2]):
        np.testing.assert_allclose(a, b, atol=1e-5)
    other, _ = distill(teacher, _student(teacher), xtr[:300], ytr[:300], epochs=2, seed=8)
    assert any(not np.allclose(a, b) for a, b in zip(runs[0], other.get_weights()))


def test_bad_pairs_and_data_are_refused_before_training(teacher, data):
    import tf_keras

    xtr, ytr, _, _ = data
    L = tf_keras.layers
    wrong_classes = tf_keras.Sequential([L.InputLayer((8, 8, 1)), L.Flatten(), L.Dense(5, activation="softmax")])
    before = [w.copy() for w in wrong_classes.get_weights()]
    with pytest.raises(ModelShapeError, match=r"teacher's output shape \[10\] differs from the student's \[5\]"):
        distill(teacher, wrong_classes, xtr, ytr)
    assert all(np.array_equal(a, b) for a, b in zip(before, wrong_classes.get_weights()))
    wrong_input = tf_keras.Sequential([L.InputLayer((4, 4, 1)), L.Flatten(), L.Dense(10)])
    with pytest.raises(ModelShapeError, match="input shape"):
        distill(teacher, wrong_input, xtr, ytr)
    student = _student(teacher)
    with pytest.raises(TrainingDataError, match="labels must be in 0..9"):
        distill(teacher, student, xtr, ytr + 5)
    with pytest.raises(TrainingDataError, match="samples have shape"):
        distill(teacher, student, xtr[:, :4, :4], ytr)
    with pytest.raises(TrainingDataError, match="at least 2"):
        distill(teacher, student, xtr[:1], ytr[:1])
    with pytest.raises(RecipeError, match="temperature"):
        distill(teacher, student, xtr, ytr, temperature=0)
    with pytest.raises(RecipeError, match="alpha"):
        distill(teacher, student, xtr, ytr, alpha=1.5)
