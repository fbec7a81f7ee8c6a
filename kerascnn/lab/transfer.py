"""``transfer``: from scratch, fine-tuned and frozen backbone + new head on 1% of a second task (the
dataset's classes split in two, as Yosinski et al. 2014 split ImageNet)."""

from __future__ import annotations

import numpy as np

from ..errors import ConfigError
from .common import (
    DEFAULT_DATA,
    EAGER_STEPS,
    SEED,
    array_batches,
    labeled_images,
    noise_margin,
    normalized,
    pyplot,
    top1_accuracy,
)

TRANSFER_VARIANTS = ("scratch", "fine-tuned", "frozen")
TRANSFER_MODEL = "resnet20"  # a zoo net, at 32x32: what ``kerascnn train --weights RUN`` would fine-tune
TRANSFER_BATCH = 64
TRANSFER_LR = 2e-3  # Adam, cosine to zero; fine-tuning at a quarter of it
TRANSFER_BUDGETS = {  # pretraining steps, share of task B's images, steps per run, test images, tested every
    "quick": {"pretrain_steps": 400, "fraction": 0.01, "steps": 150, "test_images": 4000, "eval_every": 25},
    "full": {"pretrain_steps": 2000, "fraction": 0.01, "steps": 400, "test_images": 10000, "eval_every": 50},
}


def transfer_experiment(quick: bool = False, data: str | None = None, budget: dict | None = None):
    """The dataset's classes split at random in two tasks (as Yosinski et al. 2014 split ImageNet): a
    ResNet-20 is pretrained on task A; on 1% of task B's images, from scratch against fine-tuned from A's
    weights (all layers, a 4x lower learning rate) against A's frozen backbone with a new head (what
    ``kerascnn train --weights RUN [--freeze-backbone]`` does: the layers copied by name, the head new).
    (JSON dict, figure)"""
    import keras

    from ..models import build, transfer_weights

    data = data or DEFAULT_DATA
    b = {**TRANSFER_BUDGETS["quick" if quick else "full"], **(budget or {})}
    size = 32
    x, y, xt, yt, classes = labeled_images(data, size, 10**9, 10**9, SEED, "transfer")
    if len(classes) < 4:
        raise ConfigError(f"--data {data}: transfer splits the classes into two tasks and needs at least 4")
    rng = np.random.default_rng(SEED)
    order = rng.permutation(len(classes))
    ids_a, ids_b = np.sort(order[: len(classes) // 2]), np.sort(order[len(classes) // 2 :])
    task_a, task_b = [classes[i] for i in ids_a], [classes[i] for i in ids_b]
    to_a, to_b = np.full(len(classes), -1), np.full(len(classes), -1)
    to_a[ids_a], to_b[ids_b] = np.arange(len(ids_a)), np.arange(len(ids_b))

    in_a, in_b, test_a, test_b = to_a[y] >= 0, to_b[y] >= 0, to_a[yt] >= 0, to_b[yt] >= 0
    xb, yb = x[in_b], to_b[y[in_b]]
    pick = np.sort(rng.permutation(len(xb))[: max(len(task_b), round(b["fraction"] * len(xb)))])
    xb, yb = normalized(xb[pick]), yb[pick]
    test_pick = rng.permutation(int(test_b.sum()))[: b["test_images"]]
    xt_b, yt_b = normalized(xt[test_b][test_pick]), to_b[yt[test_b]][test_pick]

    def trained(model, x_, y_, steps, lr, curve=None):
        """Train ``steps`` steps; with ``curve`` (a list), append [step, test accuracy on B] every
        ``eval_every`` steps (Keras epochs of that many steps: one schedule over all of them)."""
        model.compile(
            keras.optimizers.Adam(keras.optimizers.schedules.CosineDecay(lr, steps)),
            "sparse_categorical_crossentropy",
            run_eagerly=steps <= EAGER_STEPS,
        )
        ds = array_batches(x_, y_, min(TRANSFER_BATCH, len(x_)), True).repeat()
        chunk = b["eval_every"] if curve is not None and steps % b["eval_every"] == 0 else steps
        tester = keras.callbacks.LambdaCallback(
            on_epoch_end=lambda epoch, logs: curve.append(
                [(epoch + 1) * chunk, top1_accuracy(model, xt_b, yt_b)]
            )
        )
        callbacks = [tester] if curve is not None else []
        model.fit(
            ds, steps_per_epoch=chunk, epochs=steps // chunk, verbose=0, shuffle=False, callbacks=callbacks
        )
        return model

    shape = (size, size, 1)
    keras.utils.set_random_seed(SEED)
    xa, ya = normalized(x[in_a]), to_a[y[in_a]]
    source = build(TRANSFER_MODEL, input_shape=shape, num_classes=len(task_a))
    trained(source, xa, ya, b["pretrain_steps"], TRANSFER_LR)
    source_accuracy = top1_accuracy(source, normalized(xt[test_a]), to_a[yt[test_a]])

    accuracy, trainable, curves = {}, {}, {}
    for variant in TRANSFER_VARIANTS:
        keras.utils.set_random_seed(SEED)
        model = build(TRANSFER_MODEL, input_shape=shape, num_classes=len(task_b))
        if variant != "scratch":
            transfer_weights(model, source, skip={"predictions"})  # as `train --weights RUN` does
            if variant == "frozen":
                for layer in model.layers:
                    layer.trainable = layer.name == "predictions"
        lr = TRANSFER_LR / 4 if variant == "fine-tuned" else TRANSFER_LR
        trainable[variant] = int(sum(np.prod(w.shape) for w in model.trainable_weights))
        curves[variant] = []
        trained(model, xb, yb, b["steps"], lr, curves[variant])
        accuracy[variant] = curves[variant][-1][1]
    scratch = accuracy["scratch"]
    # two standard errors of the scratch accuracy on this many test images: a smaller gain is noise
    margin = noise_margin(scratch, len(yt_b))
    reached = {  # the first tested step at which each run is as accurate as scratch at the end
        v: next((step for step, a in curves[v] if a >= scratch - margin), None) for v in TRANSFER_VARIANTS
    }
    best = max(("fine-tuned", "frozen"), key=accuracy.get)
    faster = reached["fine-tuned"] is not None and reached["fine-tuned"] <= b["steps"] // 2
    better = accuracy[best] > scratch + margin
    reasons = [f"{best} is {accuracy[best] - scratch:+.1%} more accurate"] if better else []
    if faster:
        reasons.append(
            f"fine-tuned is as accurate as scratch's end after {reached['fine-tuned']} of {b['steps']} steps"
        )
    verdict = (
        f"transfer: on {len(xb)} images of task B ({', '.join(task_b)}), from scratch "
        f"{scratch:.1%}, fine-tuned {accuracy['fine-tuned']:.1%}, frozen backbone + new head "
        f"{accuracy['frozen']:.1%} (pretrained on task A: {source_accuracy:.1%}): "
        + (
            f"pretraining helps: {'; '.join(reasons)}"
            if reasons
            else f"pretraining did NOT help at this budget (within {margin:.1%})"
        )
    )
    result = {
        "experiment": "transfer",
        "verdict": verdict,
        "data": data,
        "model": TRANSFER_MODEL,
        "task_a": task_a,
        "task_b": task_b,
        "accuracy": accuracy,
        "curves": curves,
        "steps_to_scratch_accuracy": reached,
        "noise_margin": round(margin, 4),
        "pretrained_accuracy_on_a": source_accuracy,
        "trainable_parameters": trainable,
        "task_b_train_images": len(xb),
        "budget": {
            "mode": "quick" if quick else "full",
            **b,
            "batch": TRANSFER_BATCH,
            "what": (
                f"{TRANSFER_MODEL} at {size}x{size}x1 pretrained {b['pretrain_steps']} Adam steps on task A "
                f"({len(xa):,d} images); {b['steps']} steps per run (lr {TRANSFER_LR:g}, fine-tuning "
                f"{TRANSFER_LR / 4:g}, cosine) on {len(xb)} images of task B; tested on {len(yt_b):,d} "
                "task-B images"
            ),
        },
    }
    return result, _plot_transfer(result)


def _plot_transfer(result: dict):
    plt = pyplot()
    fig, (ax0, ax1) = plt.subplots(1, 2, figsize=(11, 4), gridspec_kw={"width_ratios": [1, 1.4]})
    labels = {"scratch": "from scratch", "fine-tuned": "fine-tuned", "frozen": "frozen backbone\n+ new head"}
    colors = {"scratch": "#999999", "fine-tuned": "#1f77b4", "frozen": "#ff7f0e"}
    values = [100 * result["accuracy"][v] for v in TRANSFER_VARIANTS]
    bars = ax0.bar(
        [labels[v] for v in TRANSFER_VARIANTS], values, color=[colors[v] for v in TRANSFER_VARIANTS]
    )
    ax0.bar_label(bars, fmt="%.1f")
    ax0.set_ylabel("test accuracy on task B (%)")
    ax0.set_ylim(0, 100)
    ax0.set_title(f"after {result['budget']['steps']} steps", fontsize=9)
    ax0.grid(axis="y", alpha=0.3)
    for v in TRANSFER_VARIANTS:
        if result["curves"][v]:
            steps, acc = zip(*result["curves"][v], strict=True)
            ax1.plot(steps, [100 * a for a in acc], "o-", color=colors[v], label=labels[v].replace("\n", " "))
    ax1.set_xlabel("training steps on task B")
    ax1.set_ylim(0, 100)
    ax1.grid(alpha=0.3)
    ax1.legend(fontsize=8, loc="lower right")
    ax1.set_title("test accuracy while training", fontsize=9)
    fig.suptitle(
        f"{result['task_b_train_images']} images of task B; {result['model']} pretrained on task A "
        f"({result['data']})",
        fontsize=10,
    )
    fig.tight_layout()
    return fig
