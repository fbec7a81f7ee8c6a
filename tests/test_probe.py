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
