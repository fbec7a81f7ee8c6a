"""The transfer schedule's linear probe (kerascnn.probe, LP-FT): the head fitted on features computed once,
then fine-tuning from it; on a tiny backbone (LeNet-5 on a slice of Fashion-MNIST)."""

from __future__ import annotations

import json

import keras
import numpy as np
import pytest

from kerascnn.probe import ProbeError, split_at_head
from kerascnn.train import TrainConfig, train


def test_split_at_head_shares_the_layers_and_gives_the_same_outputs():
    from kerascnn import models

    model = models.get_entry("mobilenet_v1").fn(input_shape=(32, 32, 3), num_classes=4, alpha=0.25)
    features, head = split_at_head(model)
    x = np.random.default_rng(0).uniform(-1, 1, (2, 32, 32, 3)).astype("float32")
    np.testing.assert_allclose(
        head.predict(features.predict(x, verbose=0), verbose=0), model.predict(x, verbose=0), atol=1e-6
    )  # the same network
    assert {id(w) for w in head.weights} <= {id(w) for w in model.weights}  # fitting it fits the model's
    inputs = keras.Input((8, 8, 3))
    pooled = keras.layers.GlobalAveragePooling2D()(inputs)
    branches = keras.layers.Add()([keras.layers.Dense(3)(pooled), keras.layers.Dense(3)(pooled)])
    with pytest.raises(ProbeError, match="not one chain"):
        split_at_head(keras.Model(inputs, keras.layers.Softmax()(branches)))


def test_the_probe_fits_the_head_on_the_frozen_backbone_then_fine_tuning_starts_from_it(tmp_path):
    out = tmp_path / "run"
    cfg = TrainConfig(
        model="lenet5", input_shape=(32, 32, 1), train_fraction=0.02, eval_fraction=0.05, batch_size=64,
        augment="none", freeze_backbone=True, linear_probe=True, fine_tune_epochs=1, output=str(out),
        quiet=True,
    )  # fmt: skip
    keras.utils.set_random_seed(cfg.seed)
    train(cfg)
    state = json.loads((out / "state.json").read_text())
    assert [row["phase"] for row in state["history"]] == ["probe", "fine_tune"]
    probe = state["history"][0]
    # the random backbone's features already separate garments: the head alone is far above chance
    assert probe["val_accuracy"] > 0.5 and probe["probe_passes"] >= 2
    log = (out / "run.log").read_text()
    assert "phase probe: the head as a linear probe" in log and "linear probe: features of 1080 + " in log
    assert "phase fine_tune: 1 epochs" in log
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["epochs"] == 2 and metrics["top1"] > 0.5


def test_affine_heads_are_recognised_and_others_are_not():
    from kerascnn import models
    from kerascnn.probe import affine_layer

    v1 = models.get_entry("mobilenet_v1").fn(input_shape=(32, 32, 3), num_classes=4, alpha=0.25)
    assert affine_layer(split_at_head(v1)[1]).name == "conv_preds"  # dropout, 1x1 conv, reshape, softmax
    lenet = models.get_entry("lenet5").fn(input_shape=(32, 32, 1), num_classes=10)
    assert affine_layer(split_at_head(lenet)[1]) is None  # hidden layers: Adam
    inputs = keras.Input((8,))
    relu = keras.Model(inputs, keras.layers.Dense(3, activation="relu")(inputs))
    assert affine_layer(relu) is None  # not a softmax of an affine map
    assert affine_layer(keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(inputs))) is not None


def test_the_logistic_regression_is_scikit_learns_optimum():
    from kerascnn.probe import LBFGS_TOL, fit_logistic

    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 5))
    y = (x[:, 0] + 0.5 * rng.normal(size=60) > 0).astype(int) + (x[:, 1] > 1).astype(int)
    for c in (0.1, 1.0, 10.0):
        w, b = fit_logistic(x, y, 3, c)
        z = x @ w + b
        p = np.exp(z - z.max(1, keepdims=True))
        p /= p.sum(1, keepdims=True)
        residual = (p - np.eye(3)[y]) / 60
        # the gradient of mean cross-entropy + ||W||^2 / (2 C n) vanishes (to the solver's tolerance): the
        # optimum of scikit-learn's objective, the bias unpenalised
        assert np.abs(x.T @ residual + w / (c * 60)).max() <= LBFGS_TOL * 1.01
        assert np.abs(residual.sum(0)).max() <= LBFGS_TOL * 1.01
    small, large = (np.abs(fit_logistic(x, y, 3, c)[0]).sum() for c in (0.1, 10.0))
    assert small < large / 3  # the penalty shrinks the weights


def test_an_affine_head_is_fitted_as_a_logistic_regression(tmp_path):
    import tensorflow as tf

    from kerascnn import models
    from kerascnn.probe import fit_head, fit_logistic

    model = models.get_entry("mobilenet_v1").fn(input_shape=(32, 32, 3), num_classes=3, alpha=0.25)
    model.compile("adam", "categorical_crossentropy", metrics=["accuracy"])
    rng = np.random.default_rng(1)
    labels = np.repeat(np.arange(3), 12)
    images = rng.uniform(-1, 1, (36, 32, 32, 3)).astype("float32")
    images[..., 0] += labels[:, None, None] * 0.6 - 0.6  # a hue per class
    ds = tf.data.Dataset.from_tensor_slices((images, np.eye(3)[labels].astype("float32"))).batch(8)
    lines = []
    logs = fit_head(model, ds, ds, labels, labels, 3, log=lines.append)
    assert "logistic regression (L2, C 1; L-BFGS)" in lines[0]
    features, _ = split_at_head(model)
    pooled = features.predict(images, verbose=0).reshape(36, -1)  # (MobileNet v1 keeps the 1x1 dims)
    w, b = fit_logistic(pooled, labels, 3)
    z = pooled @ w + b
    expected = np.exp(z - z.max(1, keepdims=True))
    np.testing.assert_allclose(model.predict(images, verbose=0), expected / expected.sum(1, keepdims=True),
                               atol=1e-4)  # fmt: skip
    assert logs["accuracy"] == np.mean(z.argmax(1) == labels) and 0 <= logs["val_accuracy"] <= 1
