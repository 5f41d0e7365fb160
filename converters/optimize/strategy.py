"""The tf.distribute strategy fine-tuning runs under: default on CPU, Mirrored on GPUs, MultiWorkerMirrored with
``--workers host:port,...`` (written to ``TF_CONFIG``).

:func:`parse_workers` is pure and runs before anything is loaded; :func:`make_strategy` imports TensorFlow.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

from .errors import RecipeError

WorkersError = RecipeError  # a bad --workers is a usage error like a bad --recipe


@dataclass(frozen=True)
class Cluster:
    workers: tuple[str, ...]
    index: int

    @property
    def chief(self) -> bool:
        return self.index == 0

    def tf_config(self) -> str:
        return json.dumps({"cluster": {"worker": list(self.workers)}, "task": {"type": "worker", "index": self.index}})


def parse_workers(text: str | None, index: int | None) -> Cluster | None:
    if not text:
        if index is not None:
            raise WorkersError("--worker-index needs --workers", hint="pass --workers host:port,host:port")
        return None
    workers = tuple(w.strip() for w in text.split(","))
    for w in workers:
        host, sep, port = w.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise WorkersError(f"--workers entry {w!r} is not host:port",
                               hint="e.g. --workers 10.0.0.5:12345,10.0.0.6:12345")
    if len(set(workers)) != len(workers):
        raise WorkersError("--workers lists a worker twice", hint="give each host:port once")
    if index is None:
        raise WorkersError("--workers needs --worker-index (this machine's position in the list, 0 is the chief)",
                           hint="run the same command on every worker with its own --worker-index")
    if not 0 <= index < len(workers):
        raise WorkersError(f"--worker-index {index} is outside 0..{len(workers) - 1}")
    return Cluster(workers, index)


def make_strategy(cluster: Cluster | None):
    """(strategy, description). Must be called before any other TensorFlow op runs in a multi-worker process."""
    import tensorflow as tf

    if cluster is not None:
        os.environ["TF_CONFIG"] = cluster.tf_config()
        options = tf.distribute.experimental.CommunicationOptions(
            implementation=tf.distribute.experimental.CommunicationImplementation.RING)
        strategy = tf.distribute.MultiWorkerMirroredStrategy(communication_options=options)
        return strategy, {"name": "MultiWorkerMirroredStrategy", "workers": list(cluster.workers),
                          "index": cluster.index, "replicas": strategy.num_replicas_in_sync}
    gpus = tf.config.list_logical_devices("GPU")
    if gpus:
        strategy = tf.distribute.MirroredStrategy()
        return strategy, {"name": "MirroredStrategy", "gpus": len(gpus), "replicas": strategy.num_replicas_in_sync}
    strategy = tf.distribute.get_strategy()
    return strategy, {"name": "default", "replicas": 1}
