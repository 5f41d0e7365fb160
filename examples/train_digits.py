"""Train a small CNN on scikit-learn's bundled digits (real data, no downloads) and save it as .keras.

    python examples/train_digits.py --out out/digits.keras [--epochs 8] [--seed 0] [--legacy]

Also writes ``<out stem>_calib.npz`` (x: 200 training images) and ``<out stem>_eval.npz`` (x, y: the held-out test
split) next to the model, for ``edgekit convert --calibration ... --eval ...``. ``--legacy`` builds the model with
tf_keras (Keras 2), which tfmot's pruning/clustering/QAT require; the default is Keras 3.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np


def load_digits_split(seed: int = 0):
    """Digits as float32 images in [0, 1], shape (N, 8, 8, 1), with a fixed 75/25 split."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x = (d.images / 16.0).astype("float32")[..., None]
    y = d.target.astype("int64")
    rng = np.random.default_rng(seed)
    idx = rng.permutation(len(x))
    cut = int(0.75 * len(x))
    return (x[idx[:cut]], y[idx[:cut]]), (x[idx[cut:]], y[idx[cut:]])


def digits_xy():
    """All of scikit-learn's digits as ``(x, y)``: float32 images in [0, 1], shape (N, 8, 8, 1), integer labels.
    The data source of ``examples/pipeline.toml`` (``source = "train_digits:digits_xy"``)."""
    from sklearn.datasets import load_digits

    d = load_digits()
    return (d.images / 16.0).astype("float32")[..., None], d.target.astype("int64")


def fit(train, val, epochs: int = 8, seed: int = 0, width: int = 16, lr: float = 3e-3):
    """The pipeline's train function (``[train] function = "train_digits:fit"``): the digits CNN (Keras 3) trained
    on ``train = (x, y)``, with ``val`` reported per epoch."""
    import keras

    keras.utils.set_random_seed(seed)
    model = build_model(keras, width)
    model.compile(optimizer=keras.optimizers.Adam(lr), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(train[0], train[1], epochs=epochs, batch_size=32, verbose=0,
              validation_data=val if len(val[0]) else None)
    return model


def build_model(keras, width: int = 16):
    L = keras.layers
    return keras.Sequential([
        L.Input((8, 8, 1), name="image"),
        L.Conv2D(width, 3, padding="same", activation="relu"),
        L.Conv2D(width * 2, 3, padding="same", activation="relu"),
        L.MaxPooling2D(2),
        L.Conv2D(width * 2, 3, padding="same", activation="relu"),
        L.Flatten(),
        L.Dense(64, activation="relu"),
        L.Dense(10, activation="softmax", name="probs"),
    ], name="digits_cnn")


def train(out: Path, epochs: int = 8, seed: int = 0, legacy: bool = False, width: int = 16) -> dict:
    if legacy:
        os.environ["TF_USE_LEGACY_KERAS"] = "1"
        import tf_keras as keras
    else:
        import keras
    import tensorflow as tf

    tf.random.set_seed(seed)
    np.random.seed(seed)
    (xtr, ytr), (xte, yte) = load_digits_split()
    model = build_model(keras, width)
    model.compile(optimizer=keras.optimizers.Adam(3e-3), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    model.fit(xtr, ytr, epochs=epochs, batch_size=32, verbose=0, validation_split=0.0, shuffle=True)
    _, acc = model.evaluate(xte, yte, verbose=0)
    out.parent.mkdir(parents=True, exist_ok=True)
    model.save(out)
    stem = out.with_suffix("")
    np.savez(f"{stem}_calib.npz", x=xtr[:200])
    np.savez(f"{stem}_eval.npz", x=xte, y=yte)
    return {"model": str(out), "test_accuracy": float(acc), "calibration": f"{stem}_calib.npz",
            "eval": f"{stem}_eval.npz"}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=Path("out/digits.keras"))
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--width", type=int, default=16, help="filters in the first conv layer")
    p.add_argument("--legacy", action="store_true", help="build with tf_keras (Keras 2)")
    a = p.parse_args(argv)
    result = train(a.out, a.epochs, a.seed, a.legacy, a.width)
    print(f"saved {result['model']} (test accuracy {result['test_accuracy']:.4f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
