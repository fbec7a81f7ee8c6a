"""``degradation``: plain20, plain56, resnet20, resnet56 trained alike (He et al. 2016): the training
error curves, and whether the deeper plain net trains worse than the shallower one while the deeper
ResNet does not."""

from __future__ import annotations

import math
import time

from .common import DEFAULT_DATA, EAGER_STEPS, SEED, array_batches, labeled_images, normalized, pyplot

DEGRADATION_MODELS = ("plain20", "plain56", "resnet20", "resnet56")
DEGRADATION_BUDGETS = {  # training images, their side, epochs, batch, peak learning rate, logging interval
    # --quick: 220 steps of 64 at 28x28 (~4.5 min on 2 cores). At lr 0.1, 128 steps of 128 at 32x32,
    # ResNet-56 was still behind ResNet-20 (26.6% vs 17.3%: its start is slower); at 0.02 it is ahead.
    "quick": {"train_images": 3500, "side": 28, "epochs": 4, "batch": 64, "lr": 0.02, "log_every": 8},
    # 5x the steps (18 min on 2 cores)
    "full": {"train_images": 12000, "side": 28, "epochs": 6, "batch": 64, "lr": 0.02, "log_every": 20},
}


def degradation_experiment(quick: bool = False, data: str | None = None, budget: dict | None = None):
    """plain20, plain56, resnet20 and resnet56 (He et al. 2016, CIFAR nets) trained with one recipe
    (SGD, momentum 0.9, the budget's peak lr with a linear warm-up over the first 10% of steps then
    cosine, weight decay 1e-4) on the same images: the training-error curves and the final training error
    (the last epoch's, measured on the fly as the paper's curves are: in inference mode a short run's
    BatchNorm statistics would be measured instead of the net). (JSON dict, figure)"""
    import keras

    from ..models import build

    data = data or DEFAULT_DATA
    b = {**DEGRADATION_BUDGETS["quick" if quick else "full"], **(budget or {})}
    x, y, _, _, classes = labeled_images(data, b["side"], b["train_images"], 0, SEED, "degradation")
    x = normalized(x)
    steps = math.ceil(len(x) / b["batch"]) * b["epochs"]
    curves, final, seconds = {}, {}, {}
    for name in DEGRADATION_MODELS:
        keras.utils.set_random_seed(SEED)
        model = build(name, input_shape=x.shape[1:], num_classes=len(classes))
        warmup = max(1, steps // 10)
        schedule = keras.optimizers.schedules.CosineDecay(
            0.0, steps - warmup, warmup_target=b["lr"], warmup_steps=warmup
        )
        model.compile(
            keras.optimizers.SGD(schedule, momentum=0.9, weight_decay=1e-4),
            "sparse_categorical_crossentropy",
            metrics=["accuracy"],
            run_eagerly=steps <= EAGER_STEPS,  # tracing a 56-layer step costs more than a few steps
        )
        logger = _ErrorCurve(b["log_every"])
        start = time.perf_counter()
        model.fit(
            array_batches(x, y, b["batch"], shuffle=True), epochs=b["epochs"], verbose=0, shuffle=False,
            callbacks=[logger],
        )  # fmt: skip
        seconds[name] = round(time.perf_counter() - start, 1)
        curves[name] = logger.points
        final[name] = logger.last_epoch_error
    deeper_plain_worse = final["plain56"] > final["plain20"]
    deeper_resnet_ok = final["resnet56"] <= final["plain56"] and final["resnet56"] <= final["resnet20"] + 0.01
    verdict = (
        "degradation: final training error plain20 {plain20:.1%}, plain56 {plain56:.1%}, resnet20 "
        "{resnet20:.1%}, resnet56 {resnet56:.1%}: ".format(**final)
        + (
            "the deeper plain net trains worse"
            if deeper_plain_worse
            else "the deeper plain net did NOT train worse"
        )
        + (", the deeper ResNet does not" if deeper_resnet_ok else ", and so does the deeper ResNet")
        + " at this budget"
    )
    result = {
        "experiment": "degradation",
        "verdict": verdict,
        "data": data,
        "final_train_error": final,
        "curves": curves,
        "train_seconds": seconds,
        "budget": {
            "mode": "quick" if quick else "full",
            **b,
            "steps": steps,
            "what": (
                f"{len(x)} {data} training images at {b['side']}x{b['side']}x1, {b['epochs']} epochs "
                f"({steps} steps of {b['batch']}) per net; SGD momentum 0.9, lr {b['lr']:g} (warm-up then "
                "cosine), weight decay 1e-4"
            ),
        },
    }
    return result, _plot_degradation(result)


class _ErrorCurve:
    """A Keras callback (built lazily: keras is imported by the experiment) that keeps the training
    error of the last ``every`` steps, every ``every`` steps: [[step, error], ...] (Keras logs a running
    mean from the epoch's start; the window's mean is taken out of it), and each epoch's error."""

    def __new__(cls, every: int):
        import keras

        class ErrorCurve(keras.callbacks.Callback):
            def __init__(self):
                super().__init__()
                self.points, self.step, self.last_epoch_error = [], 0, None
                self.mark = (0, 0.0)  # (batches, correct batches' worth) at the last point this epoch

            def on_epoch_begin(self, epoch, logs=None):
                self.mark = (0, 0.0)

            def on_train_batch_end(self, batch, logs=None):
                self.step += 1
                if self.step % every == 0 and logs and "accuracy" in logs:
                    seen, correct = batch + 1, float(logs["accuracy"]) * (batch + 1)
                    window = 1.0 - (correct - self.mark[1]) / (seen - self.mark[0])
                    self.points.append([self.step, round(min(max(window, 0.0), 1.0), 4)])
                    self.mark = (seen, correct)

            def on_epoch_end(self, epoch, logs=None):
                self.last_epoch_error = round(1.0 - float(logs["accuracy"]), 4)

        return ErrorCurve()


def _plot_degradation(result: dict):
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    styles = {"20": "--", "56": "-"}
    for ax, family in zip(axes, ("plain", "resnet"), strict=True):
        for name, points in result["curves"].items():
            if not name.startswith(family) or not points:
                continue
            steps, errors = zip(*points, strict=True)
            label = f"{name} (final {result['final_train_error'][name]:.1%})"
            ax.plot(steps, [100 * e for e in errors], styles[name[-2:]], label=label)
        ax.set_title(f"{'plain' if family == 'plain' else 'residual'} networks", fontsize=10)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    axes[0].set_ylabel("training error (%), mean of each interval")
    fig.suptitle(f"degradation ({result['data']}, {result['budget']['steps']} steps per net)", fontsize=10)
    fig.tight_layout()
    return fig
