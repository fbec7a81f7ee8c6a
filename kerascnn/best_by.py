"""What picks model_best.keras among a run's epochs (``kerascnn train --best-by``): the rule behind
``auto``, and its record in the run's config. The comparison itself (a tie goes to the later epoch) is
:class:`kerascnn.callbacks.EpochCommit`'s.

Light on purpose (no Keras): the CLI states the rule in ``train --help`` from these constants.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .config import TrainConfig

ACCURACY_MIN_VAL = 400  # validation images from which val_accuracy picks model_best (1 image: 0.25 points)


def choose_best_by(val_images: int) -> tuple[str, str]:
    """(criterion, reason): what picks model_best.keras when ``--best-by`` is auto. val_accuracy on a
    validation split of at least ACCURACY_MIN_VAL images, where one image moves it by at most 0.25
    points; else val_loss, the mean of every image's log-loss, which one image barely moves: on 38
    photos one photo is 2.6 points of val_accuracy, and noise picked an epoch 9.5 to 13.5 points below
    the last, lowest-val_loss one (issue 41; BENCHMARKS.md "Your photos"). Either way a tie goes to the
    later epoch."""
    step = 100 / max(1, val_images)
    if val_images >= ACCURACY_MIN_VAL:
        return (
            "val_accuracy",
            f"{val_images:,d} validation images: one moves val_accuracy by {step:.2f} points",
        )
    return "val_loss", (
        f"only {val_images:,d} validation images: one moves val_accuracy by {step:.1f} points, so noise "
        "would pick the epoch"
    )


def apply_best_by(cfg: TrainConfig, val_images: int, resumed_state: dict | None = None) -> str | None:
    """--best-by auto, resolved once for a new run from the validation split's size
    (:func:`choose_best_by`) and recorded in ``cfg`` (config.json) with its reason; a resumed run
    (``resumed_state``: its state.json) from before the option keeps the val_accuracy it was started
    with. Returns the line for the log (None when resuming)."""
    if cfg.best_by != "auto":
        return (
            None
            if resumed_state is not None
            else f"model_best.keras: the best epoch by {cfg.best_by} (given)"
        )
    if resumed_state is not None:
        cfg.best_by = resumed_state.get("best_by", "val_accuracy")
        return None
    cfg.best_by, why = choose_best_by(val_images)
    cfg.recipe = {
        **cfg.recipe,
        "chosen": [*cfg.recipe.get("chosen", []), "best_by"],
        "best_by": cfg.best_by,
        "best_by_reason": why,
    }
    return f"model_best.keras: the best epoch by {cfg.best_by} ({why}; a tie goes to the later epoch)"
