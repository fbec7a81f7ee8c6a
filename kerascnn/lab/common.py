"""What the lab experiments share: the seed, the check that an experiment reads no data, labeled
images from ``--data``, tf.data batches, kerascnn's normalisation, accuracy and its noise margin."""

from __future__ import annotations

import math

import numpy as np

from ..errors import ConfigError
from ..evaluate import predict_arrays
from ..runs import pyplot  # the shared pyplot (Agg backend, imported on first use)

__all__ = [
    "DEFAULT_DATA",
    "EAGER_STEPS",
    "SEED",
    "array_batches",
    "labeled_images",
    "noise_margin",
    "normalized",
    "pyplot",
    "require_no_data",
    "top1_accuracy",
]

SEED = 0
DEFAULT_DATA = "fashion_mnist"  # what the experiments that train read without --data
EAGER_STEPS = 10  # runs this short train eagerly: no graph to trace


def require_no_data(name: str, data: str | None) -> None:
    if data is not None:
        raise ConfigError(f"--data: experiment '{name}' uses random inputs and reads no dataset")


def labeled_images(data: str, size: int, n_train: int, n_test: int, seed: int, experiment: str):
    """(train images, labels, test images, labels, class names), uint8 (N, size, size, 1): the dataset's
    own test split when it has one, else a held-out part of its images."""
    from .. import data as kdata

    source = kdata.open_images(data, (size, size), 1)
    rng = np.random.default_rng(seed)
    try:
        test = kdata.open_images(data, (size, size), 1, split="test")
    except kdata.DataError:
        test = None
    order = rng.permutation(len(source.ids))
    if test is None:  # no test split: hold out the last part of a shuffled order
        n_test = min(n_test, len(order) // 5)
        train_pos, test_pos, test = (
            order[: len(order) - n_test][:n_train],
            order[len(order) - n_test :],
            source,
        )
    else:
        train_pos, test_pos = order[:n_train], rng.permutation(len(test.ids))[:n_test]
    x, kept, _ = source.read(sorted(train_pos.tolist()))
    y = source.labels[kept]
    xt, kept_t, _ = test.read(sorted(test_pos.tolist()))
    yt = test.labels[kept_t]
    if min(y.min(initial=0), yt.min(initial=0)) < 0 or not source.class_names:
        raise ConfigError(f"--data {data}: {experiment} needs labeled images (class folders or a built-in)")
    return x, y, xt, yt, list(source.class_names)


def array_batches(x: np.ndarray, y: np.ndarray, batch: int, shuffle: bool):
    """A tf.data pipeline over arrays with kerascnn's options (no autotuning: see
    kerascnn.data.pipeline_options; Keras' own array adapter autotunes)."""
    import tensorflow as tf

    from ..data import PREFETCH_BATCHES, pipeline_options

    ds = tf.data.Dataset.from_tensor_slices((x, y))
    if shuffle:
        ds = ds.shuffle(len(x), seed=SEED, reshuffle_each_iteration=True)
    return ds.batch(batch).prefetch(PREFETCH_BATCHES).with_options(pipeline_options())


def normalized(images: np.ndarray) -> np.ndarray:
    """uint8 pixels as model inputs, by kerascnn's default normalisation ((p - 127.5) / 127.5)."""
    from ..data import Normalization

    return Normalization().numpy(images)


def top1_accuracy(model, x: np.ndarray, y: np.ndarray) -> float:
    """Top-1 accuracy of ``model`` on input arrays ``x`` with integer labels ``y``, to 4 places."""
    return round(float((predict_arrays(model, x).argmax(1) == y).mean()), 4)


def noise_margin(p: float, n: int) -> float:
    """Two standard errors of an accuracy ``p`` measured on ``n`` test images: a smaller difference
    between two runs is noise (floored so that a perfect score still has a margin)."""
    return 2 * math.sqrt(max(p * (1 - p), 1e-4) / n)
