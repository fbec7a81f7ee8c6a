"""The callbacks ``kerascnn train`` gives ``model.fit``, one job each, as Keras gives its own
(keras/src/callbacks/: TerminateOnNaN, EarlyStopping, CSVLogger): each works in anyone's ``fit``.

* :class:`PreciseBatchNorm`: before each validation, the BatchNorm statistics measured on training
  images under the epoch's weights (:func:`recompute_bn_statistics`).
* :class:`ResumableEarlyStopping`: stop when val_loss has not gone lower for ``patience`` epochs,
  counting the epochs of a resumed run too; its decision is committed with the epoch by
* :class:`EpochCommit`: after each epoch, unless it diverged (:func:`divergence`: then training stops and
  nothing is saved), the checkpoint, the last and best inference models and state.json committed
  together into a run folder (:func:`kerascnn.runs.commit_epoch`), then history.csv
  (:func:`write_history`, state.json's history as a table).

Order them as ``kerascnn train`` does: ``[PreciseBatchNorm, ResumableEarlyStopping, EpochCommit]``
(Keras calls callbacks in list order, and the commit asks the stopper what it decided this epoch).
"""

from __future__ import annotations

import csv
import math
from collections.abc import Callable
from io import StringIO
from pathlib import Path

import keras
import numpy as np

from .runs import atomic_write_text, commit_epoch, initial_state, write_or_stop

BN_STAT_IMAGES, BN_STAT_BATCH = 1024, 256  # training images the BatchNorm statistics are measured on


def recompute_bn_statistics(model, images, batch_size: int = BN_STAT_BATCH, normalize=None) -> int:
    """Set the moving mean and variance of every trainable BatchNormalization layer to the statistics
    of ``images`` (normalised, unaugmented) under the model's current weights, averaged over batches in
    training mode ("precise BN", as in pycls); returns how many layers.

    Why: the moving averages start at mean 0 and variance 1, and after t steps at momentum m the 1 still
    weighs m**t, while a fresh net's activations have variances of ~0.01 and less: after one epoch of 16
    steps (0.9**16 = 0.19) mobilenet_v1's first BN divides by a variance 20x too large, every later layer
    compounds it, and in inference mode the net predicts one class for everything (a first validation at
    chance level after a working training epoch; the same weights score like the training epoch with
    the statistics measured). Called before each validation, the validation and the saved models use
    statistics that belong to their weights. Frozen layers (--freeze-backbone) keep theirs."""
    layers = [
        layer
        for layer in model.layers
        if isinstance(layer, keras.layers.BatchNormalization) and layer.trainable
    ]
    if not layers or not len(images):
        return 0
    momenta = [layer.momentum for layer in layers]
    try:
        for i, start in enumerate(range(0, len(images), batch_size)):
            for layer in layers:  # moving = the running mean of the batches' statistics
                layer.momentum = i / (i + 1)
            batch = images[start : start + batch_size]
            model(normalize(batch) if normalize is not None else batch, training=True)
    finally:
        for layer, momentum in zip(layers, momenta, strict=True):
            layer.momentum = momentum
    return len(layers)


class PreciseBatchNorm(keras.callbacks.Callback):
    """Before each evaluation (the validation of each epoch, inside ``fit``): the BatchNorm statistics of
    ``images`` under the current weights (:func:`recompute_bn_statistics`). ``images``: training images
    as an array, unaugmented; ``normalize``: what makes a batch of them the model's input (None: as
    they are)."""

    def __init__(self, images, normalize: Callable | None = None, batch_size: int = BN_STAT_BATCH):
        super().__init__()
        self.images, self.normalize, self.batch_size = images, normalize, batch_size

    def on_test_begin(self, logs=None):
        recompute_bn_statistics(self.model, self.images, self.batch_size, normalize=self.normalize)


def divergence(epoch: int, logs: dict, model, num_classes: int) -> str | None:
    """What is wrong with an epoch that must not be kept, or None: a training or validation loss that is
    NaN, inf or over 1000x that of a uniform guess (a diverged run), or weights that are not finite."""
    bound = 1000 * math.log(max(2, num_classes))
    for key, what in (("loss", "training loss"), ("val_loss", "validation loss")):
        if key not in logs:
            continue
        value = float(logs[key])
        if not math.isfinite(value):
            return f"the {what} became {'NaN' if math.isnan(value) else 'inf'} in epoch {epoch}"
        if value > bound:
            return (
                f"the {what} reached {value:.3g} in epoch {epoch} (a uniform guess scores {bound / 1000:.2f})"
            )
    for layer in model.layers:
        for variable in layer.weights:
            values = np.asarray(variable)
            if not np.isfinite(values).all():
                kind = "NaN" if np.isnan(values).any() else "inf"
                return (
                    f"the weights hold {kind} after epoch {epoch} (layer '{layer.name}', {variable.name}), "
                    "although the loss was finite"
                )
    return None


class ResumableEarlyStopping(keras.callbacks.Callback):
    """Stop training when val_loss has not gone below its lowest for ``patience`` epochs in a row, counted
    over ``val_losses`` (those of the epochs trained before: a resumed run's committed history, so it
    counts on where it was) and the epochs of this ``fit``; never at the last epoch (the run ends there
    anyway). An epoch without val_loss (None) turns it off.

    ``stopped``: the decision, None until it stops, then ``{"epoch", "best_val_loss_epoch" (counted from
    the first of ``val_losses``), "patience", "reason"}``; :class:`EpochCommit` commits it with the epoch
    (state.json's ``stopped_early``), so a resumed run knows the run is over."""

    def __init__(self, patience: int, val_losses=()):
        super().__init__()
        self.patience, self.val_losses = patience, list(val_losses)
        self.stopped: dict | None = None

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        self.val_losses.append(float(logs["val_loss"]) if "val_loss" in logs else None)
        if self.patience and epoch + 1 < self.params.get("epochs", math.inf):
            self.stopped = self._decision(epoch + 1)
        if self.stopped:
            self.model.stop_training = True

    def _decision(self, epoch: int) -> dict | None:
        losses, patience = self.val_losses, self.patience
        if not losses or any(v is None for v in losses):
            return None
        best = min(range(len(losses)), key=lambda i: (losses[i], i))
        since = len(losses) - 1 - best
        if since < patience:
            return None
        return {
            "epoch": epoch,
            "best_val_loss_epoch": best + 1,
            "patience": patience,
            "reason": (
                f"val_loss has not gone below {losses[best]:.4f} (epoch {best + 1}) for {since} epochs "
                f"(--patience {patience})"
            ),
        }


def _val_accuracy(logs: dict) -> float | None:
    for key in ("val_accuracy", "val_predictions_accuracy"):
        if key in logs:
            return float(logs[key])
    return None


def _val_loss(logs: dict) -> float | None:
    for key in ("val_predictions_loss", "val_loss"):  # GoogLeNet: the main head's, not the aux heads'
        if key in logs:
            return float(logs[key])
    return None


# What model_best.keras is chosen by: the logged value, and whether a higher one is better
BEST_BY = {"val_accuracy": (_val_accuracy, True), "val_loss": (_val_loss, False)}


def better(value: float | None, best: float | None, best_by: str) -> bool:
    """``value`` is at least as good as ``best`` by ``best_by`` (a tie goes to the later epoch: with a
    small validation split equal scores are common, and the later epoch has trained longer)."""
    if value is None:
        return False
    if best is None:
        return True
    return value >= best if BEST_BY[best_by][1] else value <= best


def _print(message: str, echo: bool = True) -> None:
    if echo:
        print(message, flush=True)


class EpochCommit(keras.callbacks.Callback):
    """After each finished epoch: check it (:func:`divergence`), then commit the checkpoint (the model
    trained, with its optimizer), the last and (when its ``best_by``, val_accuracy or val_loss, is at
    least as good as the best yet, or there is none) best inference models and state.json together into
    ``run_dir`` (:func:`kerascnn.runs.commit_epoch`), then write history.csv. state.json records the
    criterion (``best_by``), its best value (``best``) and that epoch (``best_epoch``). A diverged epoch
    stops training and saves nothing, so the last good epoch's files stay as they were; ``diverged``
    says what went wrong (None while nothing did).

    ``num_classes``: the model's classes (the loss a uniform guess scores); ``state``: the run's state as
    committed last (:func:`kerascnn.runs.read_state`; None: a new run), kept up to date in ``state``;
    ``inference_model``: the model saved as model_last/model_best (None: the model trained); ``phase``:
    the name each history row and the state record; ``stopped_early``: asked before each commit, an
    early-stopping decision to commit with the epoch (:class:`ResumableEarlyStopping`'s ``stopped``,
    placed before this callback); ``log(message, echo=True)``: where the per-epoch lines go (``echo``
    False for the line Keras' progress bar shows already); ``best_by``: what picks model_best.keras
    (a key of :data:`BEST_BY`). A failed write (a full disk) raises
    :class:`kerascnn.runs.RunError` and keeps the previous epoch's files."""

    def __init__(
        self, run_dir, num_classes: int, state: dict | None = None, inference_model=None,
        phase: str = "train", stopped_early: Callable[[], dict | None] | None = None,
        log: Callable[..., None] = _print, best_by: str = "val_accuracy",
    ):  # fmt: skip
        super().__init__()
        if best_by not in BEST_BY:
            raise ValueError(f"best_by: choose one of {', '.join(BEST_BY)}, not {best_by!r}")
        self.best_by = best_by
        self.run_dir, self.num_classes = Path(run_dir), num_classes
        self.state = state if state is not None else initial_state()
        self.inference_model = inference_model
        self.phase, self.stopped_early, self.log = phase, stopped_early, log
        self.diverged: str | None = None

    def on_epoch_end(self, epoch, logs=None):
        logs = dict(logs or {})
        problem = divergence(epoch + 1, logs, self.model, self.num_classes)
        if problem is not None:
            self.diverged = problem
            self.model.stop_training = True
            self.log(f"epoch {epoch + 1}: {problem}; stopping, nothing saved for this epoch")
            return
        optimizer = self.model.optimizer
        inference = self.inference_model if self.inference_model is not None else self.model
        row = {"epoch": epoch, "phase": self.phase, "lr": float(np.asarray(optimizer.learning_rate))}
        row.update({k: float(v) for k, v in logs.items() if k != "learning_rate"})
        val = _val_accuracy(logs)
        score = BEST_BY[self.best_by][0](logs)
        best = self.state["best"]
        improved = better(score, best, self.best_by)
        # All workers save (a multi-worker save is collective); the chief's is the run's.
        models = {"checkpoint.keras": self.model, "model_last.keras": inference}
        if improved or not (self.run_dir / "model_best.keras").exists():
            models["model_best.keras"] = inference
        state = {
            **self.state,
            "epoch": epoch + 1,
            "phase": self.phase,
            "best": score if improved else best,
            "best_by": self.best_by,
            "best_epoch": epoch + 1 if improved else self.state.get("best_epoch"),
            "history": [*self.state["history"], row],
            "optimizer_steps": int(np.asarray(optimizer.iterations)),
        }
        stop = self.stopped_early() if self.stopped_early is not None else None
        if stop:  # committed with the epoch, so a resumed run knows the run is over
            state["stopped_early"] = stop
        epoch_before = int(self.state["epoch"])
        self.state = write_or_stop(
            self.run_dir, lambda: commit_epoch(self.run_dir, epoch + 1, models, state), epoch_before
        )
        history = self.state["history"]
        write_or_stop(self.run_dir, lambda: write_history(history, self.run_dir / "history.csv"), epoch + 1)
        val_loss = _val_loss(logs)
        self.log(
            f"epoch {epoch + 1}: loss {logs.get('loss', float('nan')):.4f}, val_accuracy "
            f"{val if val is not None else float('nan'):.4f}, val_loss "
            f"{val_loss if val_loss is not None else float('nan'):.4f}{' (best)' if improved else ''}",
            echo=False,  # Keras' progress bar shows the epoch already
        )
        if stop:
            self.model.stop_training = True
            self.log(
                f"early stop after epoch {epoch + 1} of {self.params.get('epochs')}: {stop['reason']}; "
                f"model_best.keras is epoch {self.state['best_epoch']}, the best by {self.best_by} "
                f"({self.state['best']:.4f})"
            )


def write_history(history: list[dict], path) -> None:
    """history.csv: one row per epoch (state.json's history), a column for every key any row has."""
    keys = []
    for row in history:
        keys.extend(k for k in row if k not in keys)
    buf = StringIO()
    writer = csv.DictWriter(buf, fieldnames=keys)
    writer.writeheader()
    writer.writerows(history)
    atomic_write_text(path, buf.getvalue())
