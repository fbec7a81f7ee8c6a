"""What the QAT and pruning worker shares (worker process only): tfmot, imported on first use
(it switches ``tf.keras`` to tf_keras), the log lines the caller streams, the training data at the
model's input size, the fine-tuning loop, and the layer an error message names."""

from __future__ import annotations

import gzip
import math
import re
from pathlib import Path

import numpy as np

from .jobs import QuantizeError


def log_line(message: str) -> None:
    """One progress line on stdout, flushed (the caller streams the worker's lines as they come)."""
    print(message, flush=True)


def gzip_size(path: Path) -> int:
    """The size in bytes of the file gzipped at level 9 (what pruning saves, once compressed)."""
    return len(gzip.compress(Path(path).read_bytes(), compresslevel=9))


def import_tfmot():
    """The ``tensorflow_model_optimization`` module, imported now (it switches ``tf.keras`` to tf_keras)."""
    import tensorflow_model_optimization as tfmot

    return tfmot


def at_layer(message: str, names: dict[str, str]) -> str:
    """' at layer 'x' (Class)' for the longest layer name that appears in ``message``."""
    found = [n for n in names if re.search(rf"(?<![\w]){re.escape(n)}(?![\w])", message)]
    if not found:
        return ""
    name = max(found, key=len)
    return f" at layer '{name}' ({names[name]})"


def load_training_data(opts, input_shape, num_classes):
    """(ImageData, Normalization): ``opts.data`` at the model's input size, checked against its classes."""
    from kerascnn.data import Normalization, load_dataset

    h, w, c = input_shape
    data = load_dataset(
        opts.data,
        image_size=(h, w),
        channels=c,
        val_split=opts.val_split,
        train_fraction=opts.train_fraction,
        seed=opts.seed,
    )
    if data.num_classes != num_classes:
        raise QuantizeError(
            f"'{opts.data}' has {data.num_classes} classes but the model '{opts.model}' outputs "
            f"{num_classes}; use the data the model was trained on"
        )
    norm = Normalization(mean=tuple(opts.mean), std=tuple(opts.std))
    return data, norm


def train_dataset(split, num_classes, norm, batch_size, seed):
    """The normalized split with one-hot labels, shuffled, batched and repeated (steps are counted)."""
    import tensorflow as tf

    x = norm.numpy(split.images)
    y = np.eye(num_classes, dtype=np.float32)[split.labels]
    ds = tf.data.Dataset.from_tensor_slices((x, y)).shuffle(len(x), seed=seed, reshuffle_each_iteration=True)
    return ds.batch(batch_size).repeat().prefetch(2)


def steps_per_epoch(n_images: int, batch_size: int, max_steps: int | None) -> int:
    """Batches in one pass over ``n_images`` (at least 1), capped at ``max_steps`` when given."""
    steps = max(1, math.ceil(n_images / batch_size))
    return min(steps, max_steps) if max_steps else steps


class _LogCallback:
    """Per-epoch progress lines on stdout (the caller streams them)."""

    def __new__(cls, tag: str, epochs: int):
        import tf_keras

        class Callback(tf_keras.callbacks.Callback):
            def on_epoch_end(self, epoch, logs=None):
                logs = logs or {}
                log_line(
                    f"[{tag}] epoch {epoch + 1}/{epochs}: loss {logs.get('loss', float('nan')):.4f}, "
                    f"accuracy {logs.get('accuracy', float('nan')):.4f}"
                )

        return Callback()


# Tracing the training step of a QAT or pruning model costs 5-15 s (tfmot wraps every layer); a step
# run eagerly costs ~0.5 s. Runs this short (smoke tests, tiny data) are cheaper eagerly.
EAGER_MAX_STEPS = 16


def fine_tune(model, ds, opts, steps, epochs, tag, callbacks=()):
    """Compile the tf_keras ``model`` (Adam at ``opts.lr``) and fit it, a line per epoch tagged ``tag``;
    returns the last epoch's metrics."""
    import tf_keras

    model.compile(
        optimizer=tf_keras.optimizers.Adam(learning_rate=opts.lr),
        loss=tf_keras.losses.CategoricalCrossentropy(),
        metrics=["accuracy"],
        run_eagerly=steps * epochs <= EAGER_MAX_STEPS,
    )
    history = model.fit(
        ds, epochs=epochs, steps_per_epoch=steps, verbose=0, callbacks=[*callbacks, _LogCallback(tag, epochs)]
    )
    return {k: float(v[-1]) for k, v in history.history.items()}
