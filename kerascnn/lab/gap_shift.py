"""``gap-shift``: one backbone with a Flatten and with a global-average-pooling head (Network in
Network), trained on centred images, tested with the images shifted on a larger canvas. The backbone
(:func:`gap_shift_model`) is also the augmentation experiment's net.
"""

from __future__ import annotations

import numpy as np

from .common import DEFAULT_DATA, SEED, array_batches, labeled_images, normalized, pyplot, top1_accuracy

GAP_BATCH = 64
GAP_BUDGETS = {  # training images, epochs, test images, largest shift (pixels), shift step
    "quick": {"train_images": 6000, "epochs": 4, "test_images": 1000, "max_shift": 8, "step": 2},
    "full": {"train_images": 20000, "epochs": 6, "test_images": 10000, "max_shift": 12, "step": 2},
}


def _on_canvas(images: np.ndarray, margin: int, dy: int = 0, dx: int = 0) -> np.ndarray:
    """Each image on a blank canvas ``margin`` pixels larger on every side, moved by (dy, dx)."""
    n, h, w, c = images.shape
    canvas = np.zeros((n, h + 2 * margin, w + 2 * margin, c), images.dtype)
    canvas[:, margin + dy : margin + dy + h, margin + dx : margin + dx + w] = images
    return canvas


def gap_shift_model(shape: tuple, classes: int, head: str, widths=(32, 64, 128), hidden: int = 0):
    """The same small backbone (three 3x3 conv + ReLU + max-pool stages of ``widths`` filters) with a
    Flatten + Dense head or a global average pooling + Dense head (Lin et al. 2014, Network in Network);
    ``hidden``: a fully connected ReLU layer of that many units before the classifier (the LeNet/AlexNet
    head)."""
    import keras

    inputs = keras.Input(shape)
    x = inputs
    for stage, filters in enumerate(widths, start=1):  # named, so weights transfer by name
        x = keras.layers.Conv2D(filters, 3, padding="same", activation="relu", name=f"stage{stage}_conv")(x)
        x = keras.layers.MaxPooling2D(name=f"stage{stage}_pool")(x)
    if head == "flatten":
        x = keras.layers.Flatten(name="flatten")(x)
    else:
        x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
    if hidden:
        x = keras.layers.Dense(hidden, activation="relu", name="fc")(x)
    outputs = keras.layers.Dense(classes, activation="softmax", name="scores")(x)
    return keras.Model(inputs, outputs, name=f"backbone_{head}")


def gap_shift_experiment(quick: bool = False, data: str | None = None, budget: dict | None = None):
    """One backbone with a Flatten and with a GAP head, trained on centred images and tested with the
    image shifted by 0..S pixels on a larger canvas: (JSON dict, figure). ``budget`` overrides the
    quick/full sizes (the tests use a tiny one)."""
    import keras

    data = data or DEFAULT_DATA
    b = {**GAP_BUDGETS["quick" if quick else "full"], **(budget or {})}
    size, margin = 28, b["max_shift"]
    x, y, xt, yt, classes = labeled_images(data, size, b["train_images"], b["test_images"], SEED, "gap-shift")
    x_train = normalized(_on_canvas(x, margin))
    rng = np.random.default_rng(SEED)
    shifts = list(range(0, b["max_shift"] + 1, b["step"]))
    # each test image moves by s pixels in one of 8 directions (a random one per image, the same for
    # both heads): the object stays whole on the canvas
    directions = np.array([(1, 0), (-1, 0), (0, 1), (0, -1), (1, 1), (1, -1), (-1, 1), (-1, -1)])
    picks = directions[rng.integers(0, len(directions), len(xt))]
    accuracy, params = {}, {}
    for head in ("flatten", "gap"):
        keras.utils.set_random_seed(SEED)
        model = gap_shift_model(x_train.shape[1:], len(classes), head)
        model.compile(keras.optimizers.Adam(2e-3), "sparse_categorical_crossentropy")
        model.fit(
            array_batches(x_train, y, GAP_BATCH, shuffle=True), epochs=b["epochs"], verbose=0, shuffle=False
        )
        params[head] = int(model.count_params())
        accuracy[head] = {}
        for s in shifts:
            moved = np.zeros((len(xt), size + 2 * margin, size + 2 * margin, xt.shape[-1]), xt.dtype)
            for dy, dx in directions:  # the images that move this way, at once
                those = (picks == (dy, dx)).all(axis=1)
                moved[those] = _on_canvas(xt[those], margin, int(dy) * s, int(dx) * s)
            accuracy[head][str(s)] = top1_accuracy(model, normalized(moved), yt)
    last = str(shifts[-1])
    gap_wins = accuracy["gap"][last] > accuracy["flatten"][last]
    verdict = (
        f"gap-shift: shifted {last} px, the GAP head keeps {accuracy['gap'][last]:.1%} "
        f"(centred {accuracy['gap']['0']:.1%}), the Flatten head {accuracy['flatten'][last]:.1%} "
        f"(centred {accuracy['flatten']['0']:.1%}): "
        + ("GAP tolerates the shift" if gap_wins else "the claim did NOT show at this budget")
    )
    result = {
        "experiment": "gap-shift",
        "verdict": verdict,
        "data": data,
        "accuracy": accuracy,
        "params": params,
        "canvas": [size + 2 * margin, size + 2 * margin],
        "budget": {
            "mode": "quick" if quick else "full",
            **b,
            "what": (
                f"{len(x)} {data} training images centred on a {size + 2 * margin}x{size + 2 * margin} "
                f"canvas, {b['epochs']} epochs per head; {len(xt)} test images moved by 0..{last} px in "
                "one of 8 directions"
            ),
        },
    }
    return result, _plot_gap_shift(result, xt[0], picks[0], margin)


def _plot_gap_shift(result: dict, example: np.ndarray, direction, margin: int):
    plt = pyplot()
    fig, (ax0, ax1) = plt.subplots(1, 2, figsize=(10, 4), gridspec_kw={"width_ratios": [1, 2]})
    shifts = [int(s) for s in result["accuracy"]["gap"]]
    strip = np.concatenate(
        [
            _on_canvas(example[None], margin, int(direction[0]) * s, int(direction[1]) * s)[0, ..., 0]
            for s in shifts
        ],
        axis=1,
    )
    ax0.imshow(strip, cmap="gray")
    ax0.set_title(f"a test image shifted by {', '.join(map(str, shifts))} px", fontsize=9)
    ax0.axis("off")
    for head, label in (("flatten", "Flatten + Dense head"), ("gap", "global average pooling head")):
        acc = [result["accuracy"][head][str(s)] for s in shifts]
        ax1.plot(shifts, acc, "o-", label=f"{label} ({result['params'][head]:,d} parameters)")
    ax1.set_xlabel("shift (pixels)")
    ax1.set_ylabel("test accuracy")
    ax1.set_ylim(0, 1)
    ax1.set_title("trained on centred images, tested shifted", fontsize=10)
    ax1.grid(alpha=0.3)
    ax1.legend(fontsize=8)
    fig.tight_layout()
    return fig
