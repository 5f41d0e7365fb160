"""The fine-tuning loop of the ``train`` step: Adam on the mean sparse categorical cross-entropy, in a custom loop
over ``strategy.run`` so that the same code runs under the default strategy, ``MirroredStrategy`` and
``MultiWorkerMirroredStrategy``.

Keras 3's ``Model.fit`` cannot run under ``MultiWorkerMirroredStrategy`` (it reduces the first data batch and every
metric across workers with ``strategy.reduce``, which that strategy rejects: keras-team/keras#20585), while Keras 3
models, optimizers and losses work in a ``tf.distribute`` custom training loop. Every worker shuffles the whole
training split with the same seed each epoch and takes its share of every global batch (``AutoShardPolicy.DATA``),
so the workers step in lockstep; a last partial batch is dropped so that no worker waits for a batch the others
lack. Imports TensorFlow: called only from inside a step.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def fine_tune(model: Any, strategy: Any, x: np.ndarray, y: np.ndarray, *, epochs: int, batch_size: int,
              seed: int) -> list[float]:
    """Train ``model`` (compiled in ``strategy.scope()`` with its optimizer) in place; the mean loss per epoch."""
    import keras
    import tensorflow as tf

    with strategy.scope():
        loss_fn = keras.losses.SparseCategoricalCrossentropy(reduction=None)
    optimizer = model.optimizer
    batches = max(1, len(x) // batch_size)
    drop = len(x) >= batch_size
    ds = (tf.data.Dataset.from_tensor_slices((x, y))
          .shuffle(len(x), seed=seed, reshuffle_each_iteration=True)
          .batch(batch_size, drop_remainder=drop))
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    dist = strategy.experimental_distribute_dataset(ds.with_options(options))
    global_batch = batch_size if drop else len(x)

    def replica_step(xb, yb):
        with tf.GradientTape() as tape:
            per_example = loss_fn(yb, model(xb, training=True))
            loss = tf.nn.compute_average_loss(per_example, global_batch_size=global_batch)
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables))
        return loss

    @tf.function
    def train_step(batch):
        return strategy.reduce("SUM", strategy.run(replica_step, args=batch), axis=None)

    history = []
    for _ in range(epochs):
        total = 0.0
        for batch in dist:
            total += float(train_step(batch))
        history.append(total / batches)
    return history
