"""Fine-tuning shared by every training recipe: seeded tf.data input, compile under the strategy, a progress bar
per epoch with loss and metrics, and a NaN guard."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from .errors import TrainingError


@dataclass
class FitConfig:
    epochs: int
    batch_size: int
    lr: float
    seed: int
    from_logits: bool
    strategy: Any
    progress: Any
    verbose: bool = False


def seed_everything(seed: int) -> None:
    """Python, numpy and TensorFlow seeds, and deterministic TF kernels (same seed, same weights)."""
    import tensorflow as tf

    from .keras2 import tf_keras

    tf_keras().utils.set_random_seed(seed)
    try:
        tf.config.experimental.enable_op_determinism()
    except Exception:  # noqa: BLE001 - already enabled, or not available in this build
        pass


def dataset(x: np.ndarray, y: np.ndarray | None, batch: int, seed: int, shuffle: bool, strategy=None):
    import tensorflow as tf

    ds = tf.data.Dataset.from_tensor_slices((x, y) if y is not None else (x,))
    if shuffle:
        ds = ds.shuffle(len(x), seed=seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch)
    opts = tf.data.Options()
    opts.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    opts.deterministic = True
    return ds.with_options(opts)


def steps_per_epoch(n: int, batch: int) -> int:
    return max(1, math.ceil(n / batch))


def _callback_base():
    from .keras2 import tf_keras

    return tf_keras().callbacks.Callback


def progress_callback(progress, label: str, epochs: int, steps: int):
    """A Keras callback: one rich task per epoch, its description carrying the running loss and metrics."""
    base = _callback_base()

    class EpochBars(base):
        def __init__(self):
            super().__init__()
            self.task = None
            self.history: list[dict[str, float]] = []

        def on_epoch_begin(self, epoch, logs=None):
            self.epoch = epoch
            self.t0 = time.perf_counter()
            self.task = progress.add_task(f"{label} epoch {epoch + 1}/{epochs}", total=steps)

        def on_train_batch_end(self, batch, logs=None):
            progress.update(self.task, completed=batch + 1,
                            description=f"{label} epoch {self.epoch + 1}/{epochs} {_fmt(logs)}")

        def on_epoch_end(self, epoch, logs=None):
            logs = {k: float(v) for k, v in (logs or {}).items()}
            if not all(math.isfinite(v) for v in logs.values()):
                self.model.stop_training = True
            row = {"epoch": epoch + 1, **logs, "seconds": round(time.perf_counter() - self.t0, 3)}
            self.history.append(row)
            progress.update(self.task, completed=steps,
                            description=f"{label} epoch {epoch + 1}/{epochs} {_fmt(logs)}")

    return EpochBars()


def _fmt(logs) -> str:
    return " ".join(f"{k} {float(v):.4f}" for k, v in (logs or {}).items())


def fit(model, x: np.ndarray, y: np.ndarray, cfg: FitConfig, label: str, *, val: tuple | None = None,
        callbacks: list | None = None, loss=None, metrics: Callable | None = None) -> list[dict[str, float]]:
    """Compile (under the strategy) and fit; returns the per-epoch history. Raises TrainingError on a NaN loss."""
    from .keras2 import tf_keras

    k = tf_keras()
    with cfg.strategy.scope():
        model.compile(optimizer=k.optimizers.Adam(cfg.lr),
                      loss=loss or k.losses.SparseCategoricalCrossentropy(from_logits=cfg.from_logits),
                      metrics=metrics() if metrics else ["accuracy"])
    steps = steps_per_epoch(len(x), cfg.batch_size)
    bars = progress_callback(cfg.progress, label, cfg.epochs, steps)
    train = dataset(x, y, cfg.batch_size, cfg.seed, shuffle=True)
    val_ds = dataset(val[0], val[1], cfg.batch_size, cfg.seed, shuffle=False) if val is not None else None
    model.fit(train, epochs=cfg.epochs, validation_data=val_ds, callbacks=[*(callbacks or []), bars], verbose=0)
    for row in bars.history:
        bad = [k for k, v in row.items() if isinstance(v, float) and not math.isfinite(v)]
        if bad:
            raise TrainingError(f"{label}: {bad[0]} became {row[bad[0]]} in epoch {row['epoch']}",
                                hint="lower --lr or check the training data for extreme values")
    return bars.history


def probabilities(model, x: np.ndarray) -> bool:
    """True when the model's outputs already look like probabilities (softmax), so the loss is not from logits."""
    y = np.asarray(model(x[:16], training=False))
    return bool(y.min() >= 0.0 and np.allclose(y.reshape(len(y), -1).sum(axis=1), 1.0, atol=1e-3))
