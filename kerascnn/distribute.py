"""Where training runs: the tf.distribute strategy, the multi-worker cluster from TF_CONFIG (which
process is the chief, which share of the data each worker reads), and the one place training reaches
into Keras' private API: :func:`prebuild_for_multiworker`, because ``fit`` under
MultiWorkerMirroredStrategy does not work in Keras 3.15 as released (keras-team/keras#20585) and no
public API builds the model or sets the log reduction another way."""

from __future__ import annotations

import json
import os


def make_strategy(name: str):
    """The tf.distribute strategy ``--strategy`` names: ``multiworker`` (configured by TF_CONFIG),
    ``mirrored``, or ``auto`` (mirrored over several GPUs, else the default strategy)."""
    import tensorflow as tf

    if name == "multiworker":  # before anything initialises the TensorFlow context
        return tf.distribute.MultiWorkerMirroredStrategy()
    gpus = tf.config.list_logical_devices("GPU")
    if name == "mirrored" or (name == "auto" and len(gpus) > 1):
        return tf.distribute.MirroredStrategy()
    return tf.distribute.get_strategy()


def cluster_task() -> tuple[dict, dict]:
    """(cluster, this process's task) of a multi-worker run, from TF_CONFIG; ({}, {}) without one."""
    tf_config = json.loads(os.environ.get("TF_CONFIG") or "{}")
    return tf_config.get("cluster") or {}, tf_config.get("task") or {}


def is_chief() -> bool:
    """In a multi-worker run only the chief (worker 0) writes the run folder."""
    cluster, task = cluster_task()
    if not task or task.get("type") == "chief":
        return True
    return task.get("type") == "worker" and task.get("index", 0) == 0 and "chief" not in cluster


def worker_shard(strategy) -> tuple[int, int] | None:
    """(workers, this worker's index) in a multi-worker run, from TF_CONFIG: which share of a streamed
    dataset this worker reads (None in a single-process run)."""
    import tensorflow as tf

    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return None
    cluster, task = cluster_task()
    chiefs = len(cluster.get("chief", []))
    workers = chiefs + len(cluster.get("worker", []))
    index = 0 if task.get("type") == "chief" else chiefs + int(task.get("index", 0))
    return (workers, index) if workers > 1 else None


def prebuild_for_multiworker(model, strategy, dataset):
    """Work around keras-team/keras#20585 (open since Keras 3.0): ``fit`` under
    MultiWorkerMirroredStrategy fails twice in Keras 3.15.

    1. It builds the model from a cross-worker mean of the first distributed batch, an eager collective
       reduce that fails ("Attempt to convert a value (PerReplica...)"): build the model, loss, metrics
       and optimizer from a local batch instead, so that ``fit`` has nothing left to build.
    2. It reduces the scalar logs across workers with ``strategy.reduce("MEAN", v, axis=0)``, which
       fails on scalars ("Invalid reduction dimension 0"): reduce the logs over the local replica
       instead. Gradients are still all-reduced across workers by the strategy, so every worker applies
       the same update (the test checks the weights end identical); only the printed loss/metrics are
       each worker's own.
    """
    from .keras_internals import reduce_logs_locally, symbolic_build

    batch = next(iter(dataset))
    with strategy.scope():
        symbolic_build(model, batch)
    reduce_logs_locally()
