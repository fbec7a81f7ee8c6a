"""The tf.data pipeline: :func:`make_dataset` serves a :class:`Split` shuffled, batched, normalized
(:class:`Normalization`), augmented on the fly and prefetched, with fixed parallelism
(:func:`pipeline_options`: tf.data autotuning off) and an index source that balances classes on request
and reads lazy images a batch at a time."""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from .splits import Split


@dataclass(frozen=True)
class Normalization:
    """model_input = (pixel - mean) / std, per channel, in pixel units (0-255): travels with the model."""

    mean: tuple = (127.5,)
    std: tuple = (127.5,)

    def __call__(self, images):
        import tensorflow as tf

        return (tf.cast(images, tf.float32) - tf.constant(self.mean, tf.float32)) / tf.constant(
            self.std, tf.float32
        )

    def numpy(self, images: np.ndarray) -> np.ndarray:
        return ((images.astype(np.float32) - np.float32(self.mean)) / np.float32(self.std)).astype(np.float32)


def make_dataset(
    split: Split,
    num_classes: int,
    batch_size: int,
    normalize: Normalization,
    training: bool = False,
    augmenter=None,
    mixup_alpha: float = 0.0,
    oversample: bool = False,
    seed: int = 0,
    label_fn=None,
    shard: tuple[int, int] | None = None,
):
    """Batches of (normalised float32 images, one-hot labels) from a uint8 split.

    Training: shuffle every epoch, (optionally) draw classes uniformly (``oversample``), batch,
    augment on the fly, mixup, prefetch. Evaluation: batch, normalise, prefetch. ``label_fn`` maps the
    one-hot batch to what the model's outputs need (a dict for multi-output models).

    The pipeline shuffles and batches image indices; each batch's images are gathered from memory, or
    read (decoded, or from the disk cache) for a lazy split (:class:`LazyImages`), in parallel map
    calls, so nothing but the index list and the batches in flight is added to what the split holds.
    ``shard`` = (workers, index): this worker reads only its own equal share of the images (a
    multi-worker run).
    """
    import tensorflow as tf

    parallel = _parallel_calls()
    ds = _index_source(split, num_classes, training, oversample, seed, shard)
    ds = ds.batch(batch_size, drop_remainder=False).map(_batch_reader(split), num_parallel_calls=parallel)
    ds = ds.with_options(pipeline_options(shard=bool(shard)))

    def prepare(images, labels):
        images = tf.cast(images, tf.float32)
        if training and augmenter:
            images = augmenter(images, labels)
        x = normalize(images)
        y = tf.one_hot(tf.cast(labels, tf.int32), num_classes)
        if training and mixup_alpha > 0:
            from ..augment import mixup

            x, y = mixup(x, y, mixup_alpha)
        return x, (label_fn(y) if label_fn else y)

    return ds.map(prepare, num_parallel_calls=parallel).prefetch(PREFETCH_BATCHES)


PREFETCH_BATCHES = 2  # batches made ahead of the training step


def _parallel_calls() -> int:
    """Parallel map calls: one per core this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def pipeline_options(shard: bool = False):
    """tf.data options of every kerascnn pipeline. Autotuning is off (fixed parallelism and prefetch):
    with it on, destroying an iterator that a ``tf.function`` read from (Keras does so at every epoch
    and at the end of ``fit``/``evaluate``) waits for the autotune thread's next wake-up, 10 * (2^k - 1)
    ms after the iterator was made, so an epoch of 20.5 s could last 41 s (BENCHMARKS.md, "Every run
    fast"). ``shard``: this worker reads its own share; tf.data's auto-sharding is off."""
    import tensorflow as tf

    options = tf.data.Options()
    options.autotune.enabled = False
    if shard:
        options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.OFF
    return options


def _index_source(split: Split, num_classes: int, training: bool, oversample: bool, seed: int, shard):
    """Image indices (int64) of ``split`` in the order of an epoch; with ``shard``, this worker's share
    (every worker the same count, so that their steps line up)."""
    import tensorflow as tf

    indices = np.arange(len(split), dtype=np.int64)
    if shard:
        workers, index = shard
        indices = indices[index::workers][: len(split) // workers]
    labels = split.labels[indices]
    if training and oversample:
        per_class = []
        for c in range(num_classes):
            idx = indices[labels == c]
            if len(idx):
                sub = tf.data.Dataset.from_tensor_slices(idx)
                per_class.append(sub.shuffle(len(idx), seed=seed + c).repeat())
        return tf.data.Dataset.sample_from_datasets(per_class, seed=seed).take(len(indices))
    ds = tf.data.Dataset.from_tensor_slices(indices)
    if training:
        return ds.shuffle(len(indices), seed=seed, reshuffle_each_iteration=True)
    return ds


def _batch_reader(split: Split):
    """The map function from a batch of indices to (uint8 images, labels): the images are gathered from
    the split's array (never copied into a tensor or a shuffle buffer: --cache ram holds the images
    once), or read by ``split.images.read`` (Pillow, the same decoder as every other path, or the disk
    cache); an image that fails to decode is dropped from its batch."""
    import tensorflow as tf

    store = split.images
    if split.in_memory:

        def gather(indices):
            return store[indices], np.ones(len(indices), bool)

    else:
        gather = store.read
    labels = tf.constant(split.labels, tf.int32)
    shape = store.shape[1:]

    def read(indices):
        images, decoded = tf.numpy_function(gather, [indices], [tf.uint8, tf.bool], stateful=False)
        images.set_shape([None, *shape])
        decoded.set_shape([None])
        return tf.boolean_mask(images, decoded), tf.boolean_mask(tf.gather(labels, indices), decoded)

    return read
