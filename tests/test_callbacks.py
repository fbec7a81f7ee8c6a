"""kerascnn.callbacks, each on its own in a plain ``model.fit`` (a tiny model, a few numpy samples): the
BatchNorm statistics it measures, the epoch it stops at, the files and state it commits."""

from __future__ import annotations

import json

import keras
import numpy as np
import pytest

from kerascnn.callbacks import (
    EpochCommit,
    PreciseBatchNorm,
    ResumableEarlyStopping,
    write_history,
)
from kerascnn.runs import RunError


def _data(n=32, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 4)).astype("float32")
    y = keras.utils.to_categorical((x[:, 0] > 0).astype(int), 2)
    return x, y


def _model(lr=0.05, bn=False):
    keras.utils.set_random_seed(0)
    layers = [keras.Input((4,)), keras.layers.Dense(3, name="fc")]
    if bn:
        layers.append(keras.layers.BatchNormalization(momentum=0.99, name="bn"))
    model = keras.Sequential([*layers, keras.layers.Dense(2, activation="softmax", name="head")])
    loss = "categorical_crossentropy"
    model.compile(keras.optimizers.SGD(lr), loss, metrics=["accuracy"], jit_compile=False)
    return model


def test_precise_batchnorm_sets_the_statistics_of_the_images_under_the_last_weights():
    x, y = _data()
    images = np.random.default_rng(1).uniform(0, 255, (40, 4)).astype("float32")  # "pixels"
    model = _model(bn=True)
    callback = PreciseBatchNorm(images, normalize=lambda batch: batch / 127.5 - 1, batch_size=16)
    model.fit(x, y, validation_data=(x, y), epochs=2, batch_size=16, verbose=0, callbacks=[callback])
    fc, bn = model.get_layer("fc"), model.get_layer("bn")
    batches = [images[i : i + 16] / 127.5 - 1 for i in range(0, 40, 16)]  # 16, 16 and 8 images
    inputs = [b @ np.asarray(fc.kernel) + np.asarray(fc.bias) for b in batches]
    # the mean of the three batches' statistics, measured before the last validation (the last change
    # to the weights): not the moving averages of training at momentum 0.99
    np.testing.assert_allclose(bn.moving_mean, np.mean([a.mean(0) for a in inputs], 0), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(bn.moving_variance, np.mean([a.var(0) for a in inputs], 0), rtol=1e-3)
    assert bn.momentum == 0.99  # restored


def test_early_stopping_counts_epochs_without_a_lower_val_loss():
    x, y = _data()
    model = _model(lr=0.0)  # the weights never change: every val_loss equals the first
    stopper = ResumableEarlyStopping(patience=2)
    history = model.fit(x, y, validation_data=(x, y), epochs=10, verbose=0, callbacks=[stopper])
    assert len(history.history["loss"]) == 3  # epoch 1 is the best; 2 and 3 are not lower
    first = history.history["val_loss"][0]
    assert stopper.stopped == {
        "epoch": 3,
        "best_val_loss_epoch": 1,
        "patience": 2,
        "reason": f"val_loss has not gone below {first:.4f} (epoch 1) for 2 epochs (--patience 2)",
    }


def test_early_stopping_counts_on_a_resumed_history_and_never_at_the_last_epoch():
    x, y = _data()
    model = _model(lr=0.0)
    # epochs 1 and 2 trained before (a lower val_loss at epoch 1): the first epoch of this fit is the 2nd
    # without a lower one
    stopper = ResumableEarlyStopping(patience=2, val_losses=[0.01, 9.0])
    history = model.fit(
        x, y, validation_data=(x, y), epochs=10, initial_epoch=2, verbose=0, callbacks=[stopper]
    )
    assert len(history.history["loss"]) == 1
    assert (stopper.stopped["epoch"], stopper.stopped["best_val_loss_epoch"]) == (3, 1)
    assert "below 0.0100 (epoch 1) for 2 epochs" in stopper.stopped["reason"]
    # patience 1 would fire at epoch 2, the last one: the run ends there anyway, no decision recorded
    stopper = ResumableEarlyStopping(patience=1)
    history = model.fit(x, y, validation_data=(x, y), epochs=2, verbose=0, callbacks=[stopper])
    assert len(history.history["loss"]) == 2 and stopper.stopped is None


def _leftovers(run_dir):
    return sorted(p.name for p in run_dir.iterdir() if p.name.startswith("."))


def test_epoch_commit_writes_the_run_folder_of_each_epoch(tmp_path):
    x, y = _data()
    model = _model()
    lines = []
    commit = EpochCommit(tmp_path / "run", num_classes=2, log=lambda m, echo=True: lines.append((m, echo)))
    history = model.fit(
        x, y, validation_data=(x, y), epochs=3, batch_size=16, verbose=0, callbacks=[commit]
    ).history
    run = tmp_path / "run"
    state = json.loads((run / "state.json").read_text())
    assert state == commit.state
    assert (state["epoch"], state["phase"], state["optimizer_steps"]) == (3, "train", 3 * 2)
    assert state["best"] == max(history["val_accuracy"])
    assert [row["epoch"] for row in state["history"]] == [0, 1, 2]
    assert [row["loss"] for row in state["history"]] == pytest.approx(history["loss"])
    assert all(row["lr"] == pytest.approx(0.05) for row in state["history"])
    checkpoint = keras.saving.load_model(run / "checkpoint.keras")
    assert int(checkpoint.optimizer.iterations.numpy()) == 6
    last = keras.saving.load_model(run / "model_last.keras")
    np.testing.assert_allclose(last.predict(x, verbose=0), model.predict(x, verbose=0), rtol=1e-6)
    assert (run / "model_best.keras").exists() and _leftovers(run) == []
    table = (run / "history.csv").read_text().splitlines()
    assert table[0].split(",")[:3] == ["epoch", "phase", "lr"] and len(table) == 4
    first = (
        f"epoch 1: loss {history['loss'][0]:.4f}, val_accuracy {history['val_accuracy'][0]:.4f}, "
        f"val_loss {history['val_loss'][0]:.4f} (best)"
    )
    assert lines[0] == (first, False)  # run.log only: Keras' progress bar shows the epoch
    assert len(lines) == 3


def test_epoch_commit_keeps_nothing_of_a_diverged_epoch(tmp_path):
    x, y = _data()
    model = _model()

    def poison(epoch, logs):  # NaN weights after a finite loss, in the 2nd epoch
        if epoch == 1:
            kernel = model.get_layer("fc").kernel
            kernel.assign(np.full(kernel.shape, np.nan, "float32"))

    lines = []
    commit = EpochCommit(tmp_path, num_classes=2, log=lambda m, echo=True: lines.append(m))
    callbacks = [keras.callbacks.LambdaCallback(on_epoch_end=poison), commit]
    history = model.fit(x, y, validation_data=(x, y), epochs=5, verbose=0, callbacks=callbacks)
    assert len(history.history["loss"]) == 2  # stopped
    assert commit.diverged.startswith("the weights hold NaN after epoch 2 (layer 'fc', kernel)")
    assert lines[-1] == f"epoch 2: {commit.diverged}; stopping, nothing saved for this epoch"
    state = json.loads((tmp_path / "state.json").read_text())
    assert state["epoch"] == 1 and commit.state == state
    for name in ("checkpoint.keras", "model_last.keras", "model_best.keras"):
        saved = keras.saving.load_model(tmp_path / name, compile=False)
        assert all(np.isfinite(np.asarray(w)).all() for w in saved.weights), name
    assert len((tmp_path / "history.csv").read_text().splitlines()) == 2


def test_epoch_commit_records_the_early_stop_with_the_epoch(tmp_path):
    x, y = _data()
    model = _model(lr=0.0)
    lines = []
    stopper = ResumableEarlyStopping(patience=1)
    commit = EpochCommit(
        tmp_path, 2, stopped_early=lambda: stopper.stopped, log=lambda m, echo=True: lines.append(m)
    )
    model.fit(x, y, validation_data=(x, y), epochs=5, verbose=0, callbacks=[stopper, commit])
    state = json.loads((tmp_path / "state.json").read_text())
    assert state["epoch"] == 2 and state["stopped_early"] == stopper.stopped
    assert stopper.stopped["epoch"] == 2
    assert lines[-1] == (
        f"early stop after epoch 2 of 5: {stopper.stopped['reason']}; model_best.keras is epoch "
        f"{state['best_epoch']}, the best by val_accuracy ({state['best']:.4f})"
    )


def _scripted(values):
    """A callback, placed before EpochCommit, that replaces each epoch's validation scores by ``values``
    (epoch -> {key: value}): Keras hands every callback the same logs."""

    def script(epoch, logs):
        logs.update(values[epoch])

    return keras.callbacks.LambdaCallback(on_epoch_end=script)


# A small validation split's scores: val_accuracy jumps by whole images, val_loss falls steadily
NOISY = [
    {"val_accuracy": 0.71, "val_loss": 0.90},
    {"val_accuracy": 0.84, "val_loss": 0.70},  # the best val_accuracy: a lucky epoch
    {"val_accuracy": 0.76, "val_loss": 0.60},
    {"val_accuracy": 0.79, "val_loss": 0.50},
    {"val_accuracy": 0.82, "val_loss": 0.45},  # the last and lowest val_loss
]


@pytest.mark.parametrize(("best_by", "epoch"), [("val_accuracy", 2), ("val_loss", 5)])
def test_epoch_commit_keeps_the_best_epoch_by_its_criterion(tmp_path, best_by, epoch):
    """On noisy val_accuracy, val_loss keeps the later, better-loss epoch (what kerascnn train picks for a
    small validation split); the file model_best.keras is that epoch's model."""
    x, y = _data()
    model = _model()
    saved = {}
    keep = keras.callbacks.LambdaCallback(
        on_epoch_end=lambda e, logs: saved.update({e + 1: model.get_weights()})
    )
    commit = EpochCommit(tmp_path, 2, best_by=best_by, log=lambda m, echo=True: None)
    model.fit(x, y, validation_data=(x, y), epochs=5, verbose=0, callbacks=[_scripted(NOISY), keep, commit])
    state = json.loads((tmp_path / "state.json").read_text())
    assert (state["best_by"], state["best_epoch"]) == (best_by, epoch)
    assert state["best"] == pytest.approx(NOISY[epoch - 1][best_by])
    best = keras.saving.load_model(tmp_path / "model_best.keras", compile=False)
    for have, want in zip(best.get_weights(), saved[epoch], strict=True):
        np.testing.assert_array_equal(have, want)


def test_epoch_commit_gives_a_tie_to_the_later_epoch(tmp_path):
    x, y = _data()
    tie = [{"val_accuracy": 0.75, "val_loss": 0.5}, {"val_accuracy": 0.75, "val_loss": 0.5}]
    for best_by in ("val_accuracy", "val_loss"):
        commit = EpochCommit(tmp_path / best_by, 2, best_by=best_by, log=lambda m, echo=True: None)
        _model().fit(x, y, validation_data=(x, y), epochs=2, verbose=0, callbacks=[_scripted(tie), commit])
        assert commit.state["best_epoch"] == 2, best_by
    with pytest.raises(ValueError, match="best_by: choose one of val_accuracy, val_loss"):
        EpochCommit(tmp_path, 2, best_by="accuracy")


def test_epoch_commit_that_cannot_write_says_where_and_keeps_the_last_epoch(tmp_path):
    x, y = _data()
    (tmp_path / "file").write_text("not a folder")
    commit = EpochCommit(tmp_path / "file" / "run", num_classes=2, log=lambda m, echo=True: None)
    with pytest.raises(
        RunError, match=r"could not write to the run folder '.*file/run'.*no epoch had finished"
    ):
        _model().fit(x, y, validation_data=(x, y), epochs=2, verbose=0, callbacks=[commit])
    assert commit.state["epoch"] == 0


def test_write_history_has_a_column_for_every_key(tmp_path):
    path = tmp_path / "history.csv"
    write_history([{"epoch": 0, "loss": 1.5}, {"epoch": 1, "loss": 1.25, "val_loss": 2.0}], path)
    assert path.read_text().splitlines() == ["epoch,loss,val_loss", "0,1.5,", "1,1.25,2.0"]
    assert _leftovers(tmp_path) == []
