"""``receptive-field``: three stacked 3x3 convolutions see what one 7x7 convolution sees (Simonyan &
Zisserman 2015, sec. 2.3) with 27 instead of 49 weights per input-output channel pair.

The receptive field (RF) from :mod:`kerascnn.analysis` is set against the one measured with gradients:
the input pixels on which the centre output depends are those where the gradient of that output is
non-zero. The same measurement runs on the last convolution of each stage of a zoo model (VGG-11).

The measured RF is exact, not a threshold on a heat map, because the weights are replaced by positive
random values (``U(0.5, 1.5) / fan_in``, zero biases) and the inputs are positive: every ReLU is then
open and no two paths through the network can cancel, so a gradient is zero exactly where the output
does not depend on the pixel. Max pooling passes the gradient to one input of each window only, so the
measured field is the union over several random inputs. It reads no dataset.
"""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np

from .common import SEED, pyplot, require_no_data

RF_CHANNELS = 64  # C of the C -> C conv stacks
RF_ZOO_MODEL = "vgg11"


def _set_positive_weights(model, rng: np.random.Generator) -> None:
    """Kernels ``U(0.5, 1.5) / fan_in``; biases and BN shifts 0, BN scales and variances 1.

    With positive inputs every activation is then positive (each ReLU is open), activations keep their
    scale through any depth, and a gradient is zero only where there is no path from the pixel.
    """
    import keras

    for layer in model.layers:
        depthwise_layer = isinstance(layer, keras.layers.DepthwiseConv1D | keras.layers.DepthwiseConv2D)
        for w in layer.weights:
            shape = tuple(int(d) for d in w.shape)
            depthwise = depthwise_layer or w.name == "depthwise_kernel"  # SeparableConv's first kernel
            if len(shape) >= 2:
                spatial_and_in = shape[:-2] if depthwise else shape[:-1]
                fan_in = math.prod(spatial_and_in)
                value = rng.uniform(0.5, 1.5, shape) / fan_in
            elif w.name in ("gamma", "moving_variance"):
                value = np.ones(shape)
            else:  # biases, BN beta and moving mean
                value = np.zeros(shape)
            w.assign(value.astype(w.dtype))


def _measure_rf(model, n_inputs: int, rng: np.random.Generator) -> tuple[dict, np.ndarray]:
    """The input region on which the centre output of ``model`` (all its channels) depends.

    Returns ``({"extent": [h, w], "rows": [first, last], "cols": [...], "touches_border", ...}, map)``
    where ``map`` is the ``|gradient|`` summed over channels and averaged over the ``n_inputs`` random
    inputs (an H x W array).
    """
    import tensorflow as tf

    h_in, w_in, c_in = (int(d) for d in model.input_shape[1:])
    x = tf.constant(rng.uniform(0.0, 1.0, (n_inputs, h_in, w_in, c_in)).astype("float32"))
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = model(x, training=False)
        centre = (int(y.shape[1]) // 2, int(y.shape[2]) // 2)
        target = tf.reduce_sum(y[:, centre[0], centre[1], :])
    grad = np.abs(tape.gradient(target, x).numpy()).sum(axis=3)  # (n, H, W)
    support = (grad > 0).any(axis=0)
    rows, cols = np.flatnonzero(support.any(axis=1)), np.flatnonzero(support.any(axis=0))
    if rows.size == 0:
        raise RuntimeError(f"{model.name}: the centre output has a zero gradient everywhere")
    extent = [int(rows[-1] - rows[0] + 1), int(cols[-1] - cols[0] + 1)]
    info = {
        "extent": extent,
        "rows": [int(rows[0]), int(rows[-1])],
        "cols": [int(cols[0]), int(cols[-1])],
        "output_centre": list(centre),
        # a field that reaches the border may be cut by it: the input was too small to measure it
        "touches_border": bool(rows[0] == 0 or cols[0] == 0 or rows[-1] == h_in - 1 or cols[-1] == w_in - 1),
        # share of the field's box with a non-zero gradient (max pooling routes it to one pixel per window)
        "nonzero_fraction": round(float(support.sum()) / (extent[0] * extent[1]), 4),
    }
    return info, grad.mean(axis=0)


def _conv_stack(name: str, kernels: list[int], size: int, channels: int):
    import keras

    layers = [
        keras.layers.Conv2D(channels, k, padding="same", use_bias=False, activation="relu", name=f"conv{i}")
        for i, k in enumerate(kernels, start=1)
    ]
    return keras.Sequential([keras.Input((size, size, channels)), *layers], name=name)


def _stage_ends(analysis) -> list:
    """The rows of the last convolution before each downsampling, and of the last convolution.

    Read from the jumps :func:`kerascnn.analysis.analyze` reports: a row whose jump is larger than the
    largest so far downsamples, and the convolution seen last before it ends a stage.
    """
    conv_types = ("Conv2D", "DepthwiseConv2D", "SeparableConv2D")
    ends, last_conv, jump = [], None, 1
    for row in analysis.rows:
        if row.jump is None:
            break  # global pooling / flatten: the head
        if row.jump > jump:
            if last_conv is not None and last_conv not in ends:
                ends.append(last_conv)
            jump = row.jump
        if row.class_name in conv_types:
            last_conv = row
    if last_conv is not None and last_conv not in ends:
        ends.append(last_conv)
    return ends


def _zoo_measurements(model_name: str, stages: int | None, n_inputs: int, rng) -> dict:
    """Theoretical (kerascnn.analysis) and measured RF at the end of each stage of a zoo model."""
    import keras

    from .. import models
    from ..analysis import analyze

    entry = models.get_entry(model_name)
    probe = models.build(model_name, input_shape=(*(max(entry.min_size, 32),) * 2, 3), include_top=False)
    probed = analyze(probe)
    ends = _stage_ends(probed)
    total_stages = len(ends)
    ends = ends[:stages] if stages else ends
    max_jump = max((r.jump for r in probed.rows if r.jump is not None), default=1)
    # The centre output's field must fit inside the input with a margin: RF + 2 jumps, rounded up to
    # the network's total stride so that every downsampling divides evenly.
    need = max(r.receptive_field + 2 * r.jump for r in ends)
    size = max(entry.min_size, int(math.ceil(need / max_jump) * max_jump))
    model = models.build(model_name, input_shape=(size, size, 3), include_top=False)
    _set_positive_weights(model, rng)
    analysis = analyze(model)
    layers = []
    for stage, end in enumerate(ends, start=1):
        row = analysis.row(end.name)
        sub = keras.Model(model.inputs, model.get_layer(end.name).output, name=f"{model_name}_to_{end.name}")
        info, _ = _measure_rf(sub, n_inputs, rng)
        layers.append(
            {
                "stage": stage,
                "layer": row.name,
                "theoretical": row.receptive_field,
                "jump": row.jump,
                "empirical": info["extent"],
                "equal": info["extent"] == [row.receptive_field] * 2,
                **{k: info[k] for k in ("rows", "cols", "touches_border", "nonzero_fraction")},
            }
        )
    return {
        "model": model_name,
        "input_shape": [size, size, 3],
        "stages_measured": len(ends),
        "stages_total": total_stages,
        "layers": layers,
    }


def receptive_field_experiment(quick: bool = False, data: str | None = None) -> tuple[dict, object]:
    """Three 3x3 convs vs one 7x7 conv, and the per-stage RF of VGG-11: (JSON dict, figure)."""
    require_no_data("receptive-field", data)
    from ..analysis import analyze, conv_params, receptive_field

    rng = np.random.default_rng(SEED)
    n_inputs = 8 if quick else 16
    c = RF_CHANNELS
    stacks, maps = {}, {}
    for key, kernels in (("3x3x3", [3, 3, 3]), ("7x7", [7])):
        theory, _ = receptive_field(kernels, [1] * len(kernels))
        size = 2 * theory + 1  # 'same' padding, odd size: the centre output's field is centred and whole
        model = _conv_stack(f"stack_{key}", kernels, size, c)
        _set_positive_weights(model, rng)
        analysed = analyze(model)
        if analysed.receptive_field != theory:
            raise RuntimeError(
                f"{key}: analyze() gives RF {analysed.receptive_field}, the recurrence {theory}"
            )
        params = model.count_params()
        formula = sum(conv_params(k, c, c, use_bias=False) for k in kernels)
        if params != formula:
            raise RuntimeError(f"{key}: Keras counts {params} parameters, conv_params() {formula}")
        info, maps[key] = _measure_rf(model, n_inputs, rng)
        stacks[key] = {
            "kernels": kernels,
            "theoretical": theory,
            "empirical": info["extent"],
            "input_size": size,
            "params": params,
            "params_formula": formula,
            "params_with_bias": sum(conv_params(k, c, c, use_bias=True) for k in kernels),
            "nonzero_fraction": info["nonzero_fraction"],
        }
    ratio = Fraction(stacks["3x3x3"]["params"], stacks["7x7"]["params"])
    zoo = _zoo_measurements(RF_ZOO_MODEL, 3 if quick else None, n_inputs, rng)

    same = all(s["empirical"] == [s["theoretical"]] * 2 for s in stacks.values())
    zoo_text = ", ".join(f"{e['empirical'][0]}/{e['theoretical']}" for e in zoo["layers"])
    rf7 = stacks["7x7"]["theoretical"]
    verdict = (
        f"receptive-field: 3x3x3 and 7x7 both see {rf7}x{rf7}"
        f" ({'measured equal' if same else 'MEASURED DIFFERENT'}) with {ratio.numerator}/{ratio.denominator}"
        f" of the weights; {zoo['model']} stage ends measured/theoretical: {zoo_text}"
    )
    size = zoo["input_shape"][0]
    stages_text = (
        f"all {zoo['stages_total']} stages"
        if zoo["stages_measured"] == zoo["stages_total"]
        else f"the first {zoo['stages_measured']} of its {zoo['stages_total']} stages"
    )
    result = {
        "experiment": "receptive-field",
        "verdict": verdict,
        "channels": c,
        "use_bias": False,
        "stacks": stacks,
        "params_ratio": float(ratio),
        "params_ratio_fraction": f"{ratio.numerator}/{ratio.denominator}",
        "zoo": zoo,
        "method": (
            "gradient of the sum over channels of the centre output w.r.t. the input; weights "
            "U(0.5, 1.5)/fan_in, zero biases, inputs U(0, 1): a gradient is non-zero exactly where the "
            f"output depends on the pixel; the field is the union over {n_inputs} random inputs"
        ),
        "budget": {
            "mode": "quick" if quick else "full",
            "random_inputs": n_inputs,
            "stack_channels": c,
            "zoo_input": f"{size}x{size}",
            "zoo_stages": f"{zoo['stages_measured']} of {zoo['stages_total']}",
            "what": (
                f"3x3x3 and 7x7 stacks at C={c} on {2 * 7 + 1}x{2 * 7 + 1} inputs; {zoo['model']} at "
                f"{size}x{size}, {stages_text}; "
                f"union over {n_inputs} random inputs"
            ),
        },
    }
    return result, _plot_receptive_field(result, maps)


def _plot_receptive_field(result: dict, maps: dict):
    plt = pyplot()
    from matplotlib.patches import Rectangle

    fig = plt.figure(figsize=(14, 5))
    grid = fig.add_gridspec(1, 3, width_ratios=[1, 1.2, 1.8])
    c = result["channels"]
    titles = {"3x3x3": "three 3x3 convs", "7x7": "one 7x7 conv"}
    weights = {"3x3x3": f"3·9·C² = {27 * c * c:,}", "7x7": f"49·C² = {49 * c * c:,}"}
    cmap = plt.get_cmap("magma").with_extremes(bad="#d9d9d9")  # zero gradient: outside the field
    for i, key in enumerate(("3x3x3", "7x7")):
        ax = fig.add_subplot(grid[0, i])
        grad = np.ma.masked_equal(maps[key] / maps[key].max(), 0.0)
        im = ax.imshow(grad, cmap=cmap, vmin=0, vmax=1, interpolation="nearest")
        s = result["stacks"][key]
        n = grad.shape[0]
        lo = (n - s["theoretical"]) / 2 - 0.5
        ax.add_patch(
            Rectangle((lo, lo), s["theoretical"], s["theoretical"], fill=False, ec="cyan", lw=1.2, ls="--")
        )
        h, w = s["empirical"]
        ax.set_title(
            f"{titles[key]}\nRF {s['theoretical']}, measured {h}x{w}\n{weights[key]} weights", fontsize=10
        )
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_xlabel(f"{n}x{n} input; grey: zero gradient\ndashed: theoretical field", fontsize=8)
        if i == 1:
            fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="|∂ centre output / ∂ input| (max = 1)")

    ax = fig.add_subplot(grid[0, 2])
    zoo = result["zoo"]["layers"]
    x = np.arange(len(zoo))
    theory = [e["theoretical"] for e in zoo]
    measured = [max(e["empirical"]) for e in zoo]
    b1 = ax.bar(x - 0.2, theory, 0.4, label="theoretical (kerascnn.analysis)", color="#4c72b0")
    b2 = ax.bar(x + 0.2, measured, 0.4, label="measured (non-zero gradient)", color="#dd8452")
    ax.bar_label(b1, fontsize=8)
    ax.bar_label(b2, fontsize=8)
    ax.set_xticks(x, [f"stage {e['stage']}\n{e['layer']}" for e in zoo], fontsize=8)
    ax.set_ylabel("receptive field (pixels)")
    size = result["zoo"]["input_shape"][0]
    ax.set_title(f"{result['zoo']['model']} at {size}x{size}: at the end of each stage", fontsize=10)
    ax.legend(loc="upper left", fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    fig.suptitle(
        f"Receptive field: theory (kerascnn.analysis) vs gradient measurement (C={c} channels, no biases)"
    )
    fig.tight_layout()
    return fig
