"""``augmentation``: no augmentation, the ``standard`` preset, and mixup, each on 1%, 5% and 20% of
the data: which recipe pays at which size."""

from __future__ import annotations

import math

import numpy as np

from .common import DEFAULT_DATA, SEED, labeled_images, noise_margin, normalized, pyplot, top1_accuracy
from .gap_shift import gap_shift_model

AUGMENT_VARIANTS = ("none", "augmented", "mixup")  # no augmentation, the standard preset, mixup alone
AUGMENT_MIXUP_ALPHA = 0.4
AUGMENT_BUDGETS = {  # shares of the training set, optimizer steps per run, test images
    "quick": {"fractions": [0.01, 0.05, 0.2], "steps": 3000, "test_images": 10000},
    "full": {"fractions": [0.01, 0.05, 0.2], "steps": 6000, "test_images": 10000},
}
AUGMENT_BATCH = 64
AUGMENT_WIDTHS, AUGMENT_HIDDEN = (16, 32, 64), 256  # a head that over-fits a small set (LeNet's, AlexNet's)
STEPS_PER_CALL = 50  # optimizer steps per compiled call: fewer calls into Keras, 15% less time for this net


def augmentation_experiment(quick: bool = False, data: str | None = None, budget: dict | None = None):
    """Test accuracy of one small CNN (the gap-shift backbone, narrower, with a Flatten + fully connected
    head: the head that over-fits a small set) trained on 1%, 5% and 20% of a dataset without
    augmentation, with the ``standard`` preset (shift, rotation, zoom, flip, brightness, contrast:
    kerascnn.augment) and with mixup alone, each run the same number of steps: (JSON dict, figure)."""
    import keras

    from .. import augment as kaug
    from .. import data as kdata

    data = data or DEFAULT_DATA
    b = {**AUGMENT_BUDGETS["quick" if quick else "full"], **(budget or {})}
    size = 28
    x, y, xt, yt, classes = labeled_images(data, size, 10**9, b["test_images"], SEED, "augmentation")
    x_test = normalized(xt)
    rng = np.random.default_rng(SEED)
    accuracy, counts = {}, {}
    for fraction in b["fractions"]:
        key = f"{fraction:.0%}" if fraction >= 0.01 else f"{fraction:.1%}"
        pick = np.sort(rng.permutation(len(x))[: max(len(classes), round(fraction * len(x)))])
        split = kdata.Split(x[pick], y[pick].astype(np.int32))
        counts[key] = len(split)
        accuracy[key] = {}
        for variant in AUGMENT_VARIANTS:
            keras.utils.set_random_seed(SEED)
            augmenter = kaug.Augmenter(kaug.augment_config("standard"), len(classes), SEED)
            ds = kdata.make_dataset(
                split, len(classes), min(AUGMENT_BATCH, len(split)), kdata.Normalization(), training=True,
                augmenter=augmenter if variant == "augmented" else None,
                mixup_alpha=AUGMENT_MIXUP_ALPHA if variant == "mixup" else 0.0, seed=SEED,
            ).repeat()  # fmt: skip
            model = gap_shift_model((size, size, 1), len(classes), "flatten", AUGMENT_WIDTHS, AUGMENT_HIDDEN)
            schedule = keras.optimizers.schedules.CosineDecay(2e-3, b["steps"])
            model.compile(
                keras.optimizers.Adam(schedule),
                "categorical_crossentropy",
                steps_per_execution=min(STEPS_PER_CALL, b["steps"]),
            )
            model.fit(ds, steps_per_epoch=b["steps"], epochs=1, verbose=0, shuffle=False)
            accuracy[key][variant] = top1_accuracy(model, x_test, yt)
    smallest, largest = next(iter(accuracy)), list(accuracy)[-1]
    gain = {k: round(max(v["augmented"], v["mixup"]) - v["none"], 4) for k, v in accuracy.items()}
    gains = {  # each recipe's gain over no augmentation, per share
        variant: {k: round(v[variant] - v["none"], 4) for k, v in accuracy.items()}
        for variant in ("augmented", "mixup")
    }
    names = {"augmented": "the standard preset", "mixup": "mixup"}
    base = accuracy[smallest]["none"]  # two standard errors on this many test images: less is noise
    margin = noise_margin(base, len(yt))
    helping = [
        f"{names[variant]} (+{g[smallest]:.1%} at {smallest}, {g[largest]:+.1%} at {largest})"
        for variant, g in gains.items()
        if g[smallest] > margin and g[smallest] > g[largest]
    ]
    verdict = (
        "augmentation: test accuracy without / with augmentation / with mixup: "
        + "; ".join(
            f"{k} ({counts[k]:,d} images) {v['none']:.1%} / {v['augmented']:.1%} / {v['mixup']:.1%}"
            for k, v in accuracy.items()
        )
        + (
            f": helps most with the least data: {' and '.join(helping)}"
            if helping
            else f": no gain above the noise ({margin:.1%}) that shrinks with more data at this budget"
        )
    )
    result = {
        "experiment": "augmentation",
        "verdict": verdict,
        "data": data,
        "accuracy": accuracy,
        "train_images": counts,
        "gain": gain,
        "gains": gains,
        "noise_margin": round(margin, 4),
        "budget": {
            "mode": "quick" if quick else "full",
            **b,
            "batch": AUGMENT_BATCH,
            "what": (
                f"a 3-stage CNN ({'/'.join(map(str, AUGMENT_WIDTHS))} filters) with a Flatten + "
                f"{AUGMENT_HIDDEN}-unit fully connected head, {b['steps']} Adam steps of {AUGMENT_BATCH} "
                f"per run (lr 2e-3, cosine), on "
                f"{', '.join(f'{k} ({n:,d} images)' for k, n in counts.items())} of {data}; tested on "
                f"{len(yt):,d} images; mixup alpha {AUGMENT_MIXUP_ALPHA}"
            ),
        },
    }
    return result, _plot_augmentation(result)


def _plot_augmentation(result: dict):
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(8, 4))
    keys = list(result["accuracy"])
    width = 0.8 / len(AUGMENT_VARIANTS)
    labels = {"none": "no augmentation", "augmented": "standard augmentation", "mixup": "mixup"}
    for i, variant in enumerate(AUGMENT_VARIANTS):
        values = [100 * result["accuracy"][k][variant] for k in keys]
        xs = [j + (i - 1) * width for j in range(len(keys))]
        bars = ax.bar(xs, values, width, label=labels[variant])
        ax.bar_label(bars, fmt="%.1f", fontsize=7)
    ax.set_xticks(range(len(keys)), [f"{k}\n({result['train_images'][k]:,d} images)" for k in keys])
    lowest = min(min(v.values()) for v in result["accuracy"].values())
    ax.set_ylim(max(0, math.floor(100 * lowest / 5) * 5 - 5), 100)  # the differences, not the bars' feet
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(f"augmentation against the amount of data ({result['data']})", fontsize=10)
    ax.legend(fontsize=8, loc="upper left", ncol=3)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return fig
