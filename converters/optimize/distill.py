"""Knowledge distillation: train a student on a teacher's soft targets, plus a hard-label loss when labels exist.

The loss per sample is ``alpha * CE(label, student) + (1 - alpha) * T^2 * KL(p_teacher^T || p_student^T)``, where
``p^T = softmax(logits / T)`` (Hinton et al., 2015; the ``T^2`` keeps the soft-target gradients on the hard-label
scale). Models ending in a softmax are handled by taking ``log(p)`` as their logits (softmax is shift-invariant, so
this is exact). Without labels (``y=None``) only the KL term trains, whatever ``alpha`` says, and the result records
``alpha_effective = 0``.

The teacher runs once over the data (it is frozen and there is no augmentation), so the student's fit is a plain
Keras fit on ``(x, [teacher soft targets | label])``: it works under any ``tf.distribute`` strategy, and is
reproducible for a given ``seed``. The student is trained as a tf_keras model (a Keras 3 student is bridged first);
the teacher may be either Keras.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from .errors import ModelShapeError, RecipeError, TrainingDataError, TrainingError

_PAIR_HINT = "distill between models with the same input and output shapes (same classes)"


@dataclass(frozen=True)
class DistillOptions:
    temperature: float = 4.0
    alpha: float = 0.1  # weight of the hard-label loss; the soft-target loss gets 1 - alpha
    epochs: int = 10
    batch_size: int = 32
    lr: float = 1e-3
    seed: int = 0

    def __post_init__(self):
        if not (self.temperature > 0 and math.isfinite(self.temperature)):
            raise RecipeError(f"distill temperature must be above 0, not {self.temperature}", hint="e.g. t=4")
        if not 0 <= self.alpha <= 1:
            raise RecipeError(f"distill alpha {self.alpha} is outside [0, 1]", hint="e.g. alpha=0.1")
        if self.epochs < 1 or self.batch_size < 1 or not self.lr > 0:
            raise RecipeError(f"distill needs epochs >= 1, batch size >= 1 and lr > 0 (got {self.epochs}, "
                              f"{self.batch_size}, {self.lr})")


def check_pair(teacher: Any, student: Any, x: np.ndarray | None = None) -> None:
    """Raise ModelShapeError when the teacher's and student's outputs (or inputs, or the data) do not match."""
    for who, m in (("teacher", teacher), ("student", student)):
        if len(m.outputs) != 1:
            raise ModelShapeError(f"the {who} has {len(m.outputs)} outputs; distill needs one output per model",
                                  hint="distill a single-output classifier")
        if len(m.inputs) != 1:
            raise ModelShapeError(f"the {who} has {len(m.inputs)} inputs; distill supports one input",
                                  hint=_PAIR_HINT)
    t_out, s_out = _shape(teacher.outputs[0]), _shape(student.outputs[0])
    if t_out != s_out:
        raise ModelShapeError(f"the teacher's output shape {t_out} differs from the student's {s_out}",
                              hint=_PAIR_HINT)
    t_in, s_in = _shape(teacher.inputs[0]), _shape(student.inputs[0])
    if not _fits(t_in, s_in):
        raise ModelShapeError(f"the teacher's input shape {t_in} differs from the student's {s_in}",
                              hint=_PAIR_HINT)
    if x is not None and not _fits(s_in, list(x.shape[1:])):
        raise TrainingDataError(f"training samples have shape {list(x.shape[1:])}, the models take {s_in}",
                               hint="pass samples shaped like the model input")


def distill(teacher: Any, student: Any, x: np.ndarray, y: np.ndarray | None = None, *,
            temperature: float = 4.0, alpha: float = 0.1, epochs: int = 10, batch_size: int = 32, lr: float = 1e-3,
            seed: int = 0, strategy: Any = None, progress: Callable[[dict], None] | None = None,
            callbacks: list | None = None, val: tuple[np.ndarray, np.ndarray | None] | None = None,
            ) -> tuple[Any, dict[str, Any]]:
    """Distill ``teacher`` into a copy of ``student`` made under the strategy; return (trained student, info).

    ``progress`` is called after every epoch with that epoch's row (``epoch``, ``loss``, ``agreement`` with the
    teacher, ``accuracy`` when labelled, ``seconds``). ``strategy`` is a ``tf.distribute`` strategy (default: the
    current one). ``info`` holds the options, ``alpha_effective``, the history and the final agreement.
    """
    opts = DistillOptions(temperature, alpha, epochs, batch_size, lr, seed)
    from ..keras_bridge import to_tf_keras

    x = np.asarray(x, dtype=np.float32)
    check_pair(teacher, student, x)
    if len(x) < 2:
        raise TrainingDataError(f"distill needs at least 2 training samples, got {len(x)}",
                               hint="pass more training data")
    soft_teacher = _logits_fn(teacher, x[:16])
    student = to_tf_keras(student)
    import tensorflow as tf
    import tf_keras

    t_out = _predict(teacher, x, batch_size)
    t_logits = t_out if soft_teacher else np.log(np.clip(t_out, 1e-7, 1.0))
    classes = t_logits.shape[-1]
    labelled = y is not None
    if labelled:
        y = np.asarray(y)
        if y.shape != t_logits.shape[:-1]:
            raise TrainingDataError(f"labels have shape {list(y.shape)}, expected {list(t_logits.shape[:-1])}")
        if y.min() < 0 or y.max() >= classes:
            raise TrainingDataError(f"labels must be in 0..{classes - 1}, found {int(y.min())}..{int(y.max())}",
                                   hint="labels are class indices of the model's output")
    a = opts.alpha if labelled else 0.0
    targets = np.concatenate([_softmax(t_logits / opts.temperature),
                              (y if labelled else np.full(t_logits.shape[:-1], -1)).astype(np.float32)[..., None]],
                             axis=-1).astype(np.float32)
    s_from_logits = _logits_fn(student, x[:16])
    loss, metrics = _loss_and_metrics(tf, classes, opts.temperature, a, s_from_logits, labelled)

    tf_keras.utils.set_random_seed(opts.seed)
    strategy = strategy or tf.distribute.get_strategy()
    with strategy.scope():
        # the student's variables must live under the strategy; the caller's model is left untouched
        trained = tf_keras.models.clone_model(student)
        trained.set_weights(student.get_weights())
        student = trained
        student.compile(optimizer=tf_keras.optimizers.Adam(opts.lr), loss=loss, metrics=metrics)
    history: list[dict[str, Any]] = []
    recorder = _recorder(tf_keras, history, progress)
    train = _dataset(tf, x, targets, opts.batch_size, opts.seed, shuffle=True)
    val_ds = None
    if val is not None:
        vx = np.asarray(val[0], dtype=np.float32)
        vt = _predict(teacher, vx, batch_size)
        vt = vt if soft_teacher else np.log(np.clip(vt, 1e-7, 1.0))
        vy = val[1] if labelled and val[1] is not None else np.full(vt.shape[:-1], -1)
        val_ds = _dataset(tf, vx, np.concatenate([_softmax(vt / opts.temperature),
                                                  np.asarray(vy, np.float32)[..., None]], -1).astype(np.float32),
                          opts.batch_size, opts.seed, shuffle=False)
    student.fit(train, epochs=opts.epochs, validation_data=val_ds, verbose=0,
                callbacks=[*(callbacks or []), recorder])
    bad = [row for row in history if not math.isfinite(row.get("loss", 0.0))]
    if bad:
        raise TrainingError(f"distill: the loss became {bad[0]['loss']} in epoch {bad[0]['epoch']}",
                              hint="lower the learning rate or the temperature")
    s_out = _predict(student, x, batch_size)
    agreement = float(np.mean(np.argmax(s_out, -1) == np.argmax(t_logits, -1)))
    info = {"temperature": opts.temperature, "alpha": opts.alpha, "alpha_effective": a, "labelled": labelled,
            "epochs": opts.epochs, "batch_size": opts.batch_size, "lr": opts.lr, "seed": opts.seed,
            "teacher_outputs": "logits" if soft_teacher else "probabilities",
            "student_outputs": "logits" if s_from_logits else "probabilities",
            "train_agreement": round(agreement, 6), "history": history}
    return student, info


# --- pieces ----------------------------------------------------------------------------------------------------------


def _loss_and_metrics(tf, classes: int, temperature: float, alpha: float, from_logits: bool, labelled: bool):
    t2 = temperature * temperature

    def split(y_true, y_pred):
        soft, label = y_true[..., :classes], y_true[..., classes]
        logits = y_pred if from_logits else tf.math.log(tf.clip_by_value(y_pred, 1e-7, 1.0))
        return soft, label, logits

    def distill_loss(y_true, y_pred):
        soft, label, logits = split(y_true, y_pred)
        log_p = tf.nn.log_softmax(logits / temperature, axis=-1)
        kl = tf.reduce_sum(soft * (tf.math.log(tf.clip_by_value(soft, 1e-12, 1.0)) - log_p), axis=-1) * t2
        if alpha == 0.0:
            return kl
        ce = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=tf.cast(tf.maximum(label, 0), tf.int32),
                                                            logits=logits)
        return alpha * ce + (1.0 - alpha) * kl

    def agreement(y_true, y_pred):
        soft, _, logits = split(y_true, y_pred)
        return tf.cast(tf.equal(tf.argmax(soft, -1), tf.argmax(logits, -1)), tf.float32)

    def accuracy(y_true, y_pred):
        _, label, logits = split(y_true, y_pred)
        return tf.cast(tf.equal(tf.cast(label, tf.int64), tf.argmax(logits, -1)), tf.float32)

    return distill_loss, [agreement, accuracy] if labelled else [agreement]


def _recorder(tf_keras, history: list, progress):
    class Recorder(tf_keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.t0 = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            row = {"epoch": epoch + 1, **{k: float(v) for k, v in (logs or {}).items()},
                   "seconds": round(time.perf_counter() - self.t0, 3)}
            history.append(row)
            if progress is not None:
                progress(row)
            if not math.isfinite(row.get("loss", 0.0)):
                self.model.stop_training = True

    return Recorder()


def _dataset(tf, x, targets, batch: int, seed: int, shuffle: bool):
    ds = tf.data.Dataset.from_tensor_slices((x, targets))
    if shuffle:
        ds = ds.shuffle(len(x), seed=seed, reshuffle_each_iteration=True)
    opts = tf.data.Options()
    opts.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    opts.deterministic = True
    return ds.batch(batch).with_options(opts)


def _predict(model, x: np.ndarray, batch: int) -> np.ndarray:
    outs = [np.asarray(model(x[i:i + max(batch, 64)], training=False)) for i in range(0, len(x), max(batch, 64))]
    return np.concatenate(outs).astype(np.float32)


def _logits_fn(model, sample: np.ndarray) -> bool:
    """True when the model outputs logits, False when its outputs already are probabilities (a final softmax)."""
    y = np.asarray(model(sample, training=False), dtype=np.float64)
    flat = y.reshape(-1, y.shape[-1])
    return not (flat.min() >= 0.0 and np.allclose(flat.sum(axis=1), 1.0, atol=1e-3))


def _softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def _shape(t) -> list:
    return [None if d is None else int(d) for d in list(t.shape)[1:]]


def _fits(a: list, b: list) -> bool:
    return len(a) == len(b) and all(p is None or q is None or p == q for p, q in zip(a, b))
