"""The linear probe of ``kerascnn train``'s transfer schedule: LP-FT (Kumar et al. 2022, "Fine-Tuning
can Distort Pretrained Features"). The new head is fitted on the frozen backbone's features, computed
once per image, to convergence; fine-tuning then starts from that head, so its first steps do not push
a random head's large gradients into the pretrained features.

Computing the features once is what makes it fast: ten frozen epochs run the backbone over every image
ten times (with augmentation), the probe once (BENCHMARKS.md "Your photos": the frozen phase's time).
The head (the layers from the global pooling on, :func:`kerascnn.transfer.head_layer_names`) is called
on the features as a model of its own, sharing its layers (and so its weights) with the network.
"""

from __future__ import annotations

import time

import keras
import numpy as np

from .errors import KerascnnError
from .transfer import head_layer_names

PROBE_LR = 1e-3  # Adam on the features
PROBE_BATCH = 32
PROBE_MAX_EPOCHS = 300  # passes over the cached features (each a few milliseconds)
PROBE_PATIENCE = 30  # stop when val_loss has not gone lower for this many passes; keep the best


class ProbeError(KerascnnError, ValueError):
    """The model's head cannot be fitted on features (it is not a chain after the pooling)."""


def split_at_head(model) -> tuple[keras.Model, keras.Model]:
    """(features, head): the network up to its global pooling, and the layers after it as a model on
    the pooled features (sharing the network's layers). ProbeError when the head is not a chain."""
    names = head_layer_names(model)
    pool = model.get_layer(names[0])
    features = keras.Model(model.inputs, pool.output, name=f"{model.name}_features")
    inputs = keras.Input(tuple(pool.output.shape[1:]), name="features")
    x, chain = inputs, True
    try:
        for name in names[1:]:
            x = model.get_layer(name)(x)
        head = keras.Model(inputs, x, name=f"{model.name}_head")
        chain = tuple(head.output.shape) == tuple(model.outputs[0].shape)
    except Exception:  # noqa: BLE001 - a layer that takes several inputs (Add, Concatenate)
        chain = False
    if not chain:
        raise ProbeError(
            f"--linear-probe: {model.name}'s layers after '{names[0]}' are not one chain to the output; "
            "train the head in epochs (--no-linear-probe)"
        )
    return features, head


def fit_head(model, train_ds, val_ds, train_labels, val_labels, num_classes, label_smoothing=0.0,
             seed: int = 0, log=print) -> dict:  # fmt: skip
    """Fit ``model``'s head on the features of ``train_ds`` (batches of normalised images, unaugmented),
    early-stopped on the val_loss of ``val_ds``'s features (the best pass kept). Returns the logs of an
    epoch: the kept pass's loss and accuracy, the whole network's scores on ``val_ds`` (val_loss,
    val_accuracy, as ``model`` is compiled), and how many passes and seconds the probe took."""
    features, head = split_at_head(model)
    started = time.perf_counter()
    x_train = features.predict(train_ds.map(lambda x, y: x), verbose=0)
    x_val = features.predict(val_ds.map(lambda x, y: x), verbose=0)
    featured = time.perf_counter() - started
    y_train = keras.utils.to_categorical(train_labels, num_classes)
    y_val = keras.utils.to_categorical(val_labels, num_classes)
    keras.utils.set_random_seed(seed)
    head.compile(
        keras.optimizers.Adam(PROBE_LR),
        keras.losses.CategoricalCrossentropy(label_smoothing=label_smoothing),
        metrics=[keras.metrics.CategoricalAccuracy(name="accuracy")],
    )
    stop = keras.callbacks.EarlyStopping(
        "val_loss", patience=PROBE_PATIENCE, restore_best_weights=True, start_from_epoch=0
    )
    history = head.fit(
        x_train, y_train, batch_size=PROBE_BATCH, epochs=PROBE_MAX_EPOCHS, validation_data=(x_val, y_val),
        callbacks=[stop], verbose=0, shuffle=True,
    ).history  # fmt: skip
    best = int(np.argmin(history["val_loss"]))
    fitted = time.perf_counter() - started - featured
    log(
        f"linear probe: features of {len(x_train)} + {len(x_val)} images in {featured:.1f} s, the head "
        f"fitted in {len(history['loss'])} passes ({fitted:.1f} s), kept pass {best + 1}: val_loss "
        f"{history['val_loss'][best]:.4f}, val_accuracy {history['val_accuracy'][best]:.4f}"
    )
    scores = model.evaluate(val_ds, verbose=0, return_dict=True)
    return {
        "loss": float(history["loss"][best]),
        "accuracy": float(history["accuracy"][best]),
        **{f"val_{k}": float(v) for k, v in scores.items()},
        "probe_passes": len(history["loss"]),
        "probe_seconds": round(featured + fitted, 2),
    }
