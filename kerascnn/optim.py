"""What training optimizes with: the learning-rate schedule, the optimizer, and the model compiled with
them (loss, metrics, XLA where it pays), each from the run's TrainConfig."""

from __future__ import annotations

from typing import TYPE_CHECKING

import keras

from .errors import ConfigError

if TYPE_CHECKING:
    from .config import TrainConfig


def make_schedule(cfg: TrainConfig, steps_per_epoch: int, epochs: int, lr: float):
    """The learning rate over ``epochs`` of ``steps_per_epoch`` steps, peaking at ``lr``: ``cfg.schedule``
    (cosine, constant or step), after a linear warm-up of ``cfg.warmup_epochs`` (not with step)."""
    total = max(1, steps_per_epoch * epochs)
    warmup = int(round(cfg.warmup_epochs * steps_per_epoch))
    if cfg.schedule == "step":  # x0.1 at 50% and 75% of training, after the warm-up
        if warmup:
            raise ConfigError("--warmup-epochs: not available with --schedule step; use cosine or constant")
        bounds = [int(total * 0.5), int(total * 0.75)]
        return keras.optimizers.schedules.PiecewiseConstantDecay(bounds, [lr, lr * 0.1, lr * 0.01])
    alpha = 1.0 if cfg.schedule == "constant" else 0.0
    if warmup:
        return keras.optimizers.schedules.CosineDecay(
            0.0, max(1, total - warmup), alpha=alpha, warmup_target=lr, warmup_steps=warmup
        )
    if cfg.schedule == "constant":
        return lr
    return keras.optimizers.schedules.CosineDecay(lr, total, alpha=alpha)


def make_optimizer(cfg: TrainConfig, schedule):
    """``cfg.optimizer`` (SGD with Nesterov momentum, Adam or AdamW) on ``schedule``, with ``cfg``'s
    weight decay and gradient clipping."""
    clip = {"global_clipnorm": cfg.clip_norm} if cfg.clip_norm else {}
    if cfg.optimizer == "sgd":
        return keras.optimizers.SGD(
            schedule, momentum=cfg.momentum, nesterov=True, weight_decay=cfg.weight_decay, **clip
        )
    if cfg.optimizer == "adam":
        return keras.optimizers.Adam(schedule, **clip)
    return keras.optimizers.AdamW(schedule, weight_decay=cfg.weight_decay, **clip)


def compile_options() -> dict:
    """XLA where it pays: on GPUs. On CPUs XLA-compiled training is about 3x slower (measured on the
    2-core machine of BENCHMARKS.md), so ``fit`` runs the plain TensorFlow graph there."""
    import tensorflow as tf

    return {"jit_compile": bool(tf.config.list_logical_devices("GPU"))}


def compile_model(model, optimizer, cfg: TrainConfig, num_classes: int) -> None:
    """Compile ``model`` with ``optimizer``, the loss (label smoothing from ``cfg``) and the metrics
    (accuracy, and top-5 when there are more than 5 classes), XLA where it pays; GoogLeNet's auxiliary
    heads get their loss weights."""
    loss = keras.losses.CategoricalCrossentropy(label_smoothing=cfg.label_smoothing)
    metrics = [keras.metrics.CategoricalAccuracy(name="accuracy")]
    # Top-5 during training only in float32 (tf.math.in_top_k rejects float16/bfloat16 predictions);
    # the final metrics.json always has it.
    if num_classes > 5 and keras.mixed_precision.global_policy().compute_dtype == "float32":
        metrics.append(keras.metrics.TopKCategoricalAccuracy(k=5, name="top5"))
    if len(model.outputs) > 1:  # GoogLeNet with its auxiliary heads
        from .models.inception import googlenet_loss_weights

        weights = googlenet_loss_weights()
        model.compile(
            optimizer,
            loss={name: loss for name in weights},
            loss_weights=weights,
            metrics={"predictions": metrics},
            **compile_options(),
        )
    else:
        model.compile(optimizer, loss=loss, metrics=metrics, **compile_options())
