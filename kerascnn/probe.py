"""The linear probe of ``kerascnn train``'s transfer schedule: LP-FT (Kumar et al. 2022, "Fine-Tuning
can Distort Pretrained Features"). The new head is fitted on the frozen backbone's features, computed
once per image, to convergence; fine-tuning then starts from that head, so its first steps do not push
a random head's large gradients into the pretrained features.

Computing the features once is what makes it fast: ten frozen epochs run the backbone over every image
ten times (with augmentation), the probe once (BENCHMARKS.md "Your photos": the frozen phase's time).
The head (the layers from the global pooling on, :func:`kerascnn.transfer.head_layer_names`) is called
on the features as a model of its own, sharing its layers (and so its weights) with the network.

A head that is one affine map and a softmax (the zoo's: a Dense, or MobileNet v1's 1x1 convolution, with
dropout and reshapes around it) is fitted as what it is, a multinomial logistic regression with an L2
penalty: scikit-learn's ``LogisticRegression()`` objective and defaults (C=1, L-BFGS to its tolerance),
solved with SciPy's L-BFGS (scikit-learn is not a dependency). Fitted with Adam and early stopping on the
validation features instead (as before), the head scored 2.4 points lower on the same features (76.8%
against 79.2%, 192 px, five splits); C chosen by 5-fold cross-validation instead of 1 gained nothing
(79.0% against 79.4%, 224 px): BENCHMARKS.md "Your photos". Any other head (hidden layers) is trained
with Adam, early-stopped on the validation features.
"""

from __future__ import annotations

import time

import keras
import numpy as np

from .errors import KerascnnError
from .transfer import head_layer_names

PROBE_LR = 1e-3  # Adam on the features (a head that is not one affine map)
PROBE_BATCH = 32
PROBE_MAX_EPOCHS = 300  # passes over the cached features (each a few milliseconds)
PROBE_PATIENCE = 30  # stop when val_loss has not gone lower for this many passes; keep the best
PROBE_C = 1.0  # the L2 penalty's inverse strength: scikit-learn's default
LBFGS_TOL = 1e-4  # scikit-learn's tol: the largest gradient entry of the objective below, at the end
LBFGS_MAX_ITER = 1000


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


_SHAPE_ONLY = (keras.layers.Dropout, keras.layers.Reshape, keras.layers.Flatten, keras.layers.Identity)


def affine_layer(head: keras.Model):
    """The one Dense (or 1x1 Conv2D) of a head that is an affine map of the features and a softmax
    (dropout, reshapes and flattens around it), else None."""
    layers = [layer for layer in head.layers if not isinstance(layer, keras.layers.InputLayer)]
    weighted = [layer for layer in layers if layer.weights]
    if len(weighted) != 1 or not getattr(weighted[0], "use_bias", False):
        return None
    dense = weighted[0]
    if isinstance(dense, keras.layers.Conv2D) and not isinstance(dense, keras.layers.DepthwiseConv2D):
        if tuple(dense.kernel_size) != (1, 1) or dense.groups != 1:
            return None
    elif type(dense) is not keras.layers.Dense:
        return None
    after = layers[layers.index(dense) + 1 :]
    softmax_in_dense = dense.activation is keras.activations.softmax
    if not softmax_in_dense and dense.activation is not keras.activations.linear:
        return None
    tail = [layer for layer in after if not isinstance(layer, _SHAPE_ONLY)]
    ends_in_softmax = len(tail) == 1 and (
        isinstance(tail[0], keras.layers.Softmax)
        or (isinstance(tail[0], keras.layers.Activation) and tail[0].activation is keras.activations.softmax)
    )
    if not (softmax_in_dense and not tail) and not (not softmax_in_dense and ends_in_softmax):
        return None
    before = layers[: layers.index(dense)]
    if any(not isinstance(layer, _SHAPE_ONLY) for layer in before):
        return None
    return dense


def fit_logistic(x: np.ndarray, y: np.ndarray, k: int, c: float = PROBE_C) -> tuple[np.ndarray, np.ndarray]:
    """Multinomial logistic regression as scikit-learn's ``LogisticRegression(C=c)`` fits it: the mean
    cross-entropy plus ``||W||^2 / (2 C n)`` (the bias not penalised), by L-BFGS from zeros to a largest
    gradient entry of LBFGS_TOL: (W [d, k], b [k])."""
    from scipy.optimize import minimize
    from threadpoolctl import threadpool_limits

    x = np.asarray(x, np.float64)
    n, d = x.shape
    onehot = np.eye(k)[y]
    penalty = 1.0 / (c * n)

    def objective(w):
        weights, bias = w[: d * k].reshape(d, k), w[d * k :]
        z = x @ weights + bias
        z -= z.max(1, keepdims=True)
        log_p = z - np.log(np.exp(z).sum(1, keepdims=True))
        g = (np.exp(log_p) - onehot) / n
        value = -np.sum(onehot * log_p) / n + 0.5 * penalty * np.sum(weights * weights)
        return value, np.concatenate([(x.T @ g + penalty * weights).ravel(), g.sum(0)])

    options = {"maxiter": LBFGS_MAX_ITER, "gtol": LBFGS_TOL, "ftol": 64 * np.finfo(float).eps}
    with threadpool_limits(1):  # BLAS threads on these small products: 6x slower on 2 cores than one
        w = minimize(objective, np.zeros(d * k + k), jac=True, method="L-BFGS-B", options=options).x
    return w[: d * k].reshape(d, k), w[d * k :]


def _log_loss(x, y, weights, bias) -> float:
    z = np.asarray(x, np.float64) @ weights + bias
    z -= z.max(1, keepdims=True)
    log_p = z - np.log(np.exp(z).sum(1, keepdims=True))
    return float(-np.mean(log_p[np.arange(len(y)), y]))


def _set_affine(dense, weights: np.ndarray, bias: np.ndarray) -> None:
    kernel = dense.kernel
    dense.kernel.assign(weights.reshape(tuple(kernel.shape)).astype(kernel.dtype))
    dense.bias.assign(bias.astype(dense.bias.dtype))


def fit_head(model, train_ds, val_ds, train_labels, val_labels, num_classes, label_smoothing=0.0,
             seed: int = 0, log=print) -> dict:  # fmt: skip
    """Fit ``model``'s head on the features of ``train_ds`` (batches of normalised images, unaugmented):
    a logistic regression (L2, C=1, L-BFGS) when the head is one affine map and a softmax,
    else Adam early-stopped on the val_loss of ``val_ds``'s features (the best pass kept). Returns the
    logs of an epoch: the fitted head's loss and accuracy on the training features, the whole network's
    scores on ``val_ds`` (val_loss, val_accuracy, as ``model`` is compiled), and how the probe went."""
    features, head = split_at_head(model)
    dense = affine_layer(head)
    started = time.perf_counter()
    x_train = features.predict(train_ds.map(lambda x, y: x), verbose=0)
    # the validation features only early-stop Adam; the whole network scores val_ds below either way
    x_val = None if dense is not None else features.predict(val_ds.map(lambda x, y: x), verbose=0)
    featured = time.perf_counter() - started
    train_labels = np.asarray(train_labels, int)
    flat = x_train.reshape(len(x_train), -1)
    if dense is not None:
        weights, bias = fit_logistic(flat, train_labels, num_classes)
        _set_affine(dense, weights, bias)
        loss = _log_loss(flat, train_labels, weights, bias)
        accuracy = float(np.mean((flat @ weights + bias).argmax(1) == train_labels))
        extra = {}
        what = f"a logistic regression (L2, C {PROBE_C:g}; L-BFGS)"
    else:
        loss, accuracy, passes = _fit_adam(head, x_train, x_val, train_labels, val_labels, num_classes,
                                           label_smoothing, seed)  # fmt: skip
        extra = {"probe_passes": passes}
        what = f"Adam, {passes} passes"
    fitted = time.perf_counter() - started - featured
    scores = model.evaluate(val_ds, verbose=0, return_dict=True)
    log(
        f"linear probe: features of {len(x_train)}{'' if x_val is None else f' + {len(x_val)}'} images in "
        f"{featured:.1f} s, the head "
        f"fitted as {what} in {fitted:.1f} s: loss {loss:.4f}, val_loss {scores['loss']:.4f}, "
        f"val_accuracy {scores.get('accuracy', float('nan')):.4f}"
    )
    return {
        "loss": float(loss),
        "accuracy": float(accuracy),
        **{f"val_{k}": float(v) for k, v in scores.items()},
        **extra,
        "probe_seconds": round(featured + fitted, 2),
    }


def _fit_adam(head, x_train, x_val, train_labels, val_labels, num_classes, label_smoothing, seed):
    """A head with hidden layers: Adam on the features, early-stopped on their val_loss (the best pass
    kept). (loss, accuracy, passes)."""
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
    return float(history["loss"][best]), float(history["accuracy"][best]), len(history["loss"])
