"""Lab experiments: small, self-checking demonstrations of the claims the zoo is built on.

``kerascnn lab NAME --out DIR [--quick] [--data DATA]`` runs one of :data:`EXPERIMENTS` through
:func:`run_experiment`, which writes ``DIR/NAME.json`` (the numbers, with a ``"budget"`` entry that says
what ``--quick`` or the full run measured) and ``DIR/NAME.png`` (one figure), both atomically, and
prints a one-line verdict.

* ``receptive-field``: three stacked 3x3 convolutions see what one 7x7 convolution sees (Simonyan &
  Zisserman 2015, sec. 2.3) with 27 instead of 49 weights per input-output channel pair. The receptive
  field (RF) from :mod:`kerascnn.analysis` is set against the one measured with gradients: the input
  pixels on which the centre output depends are those where the gradient of that output is non-zero.
  The same measurement runs on the last convolution of each stage of a zoo model (VGG-11).
* ``separable``: a 3x3 depthwise-separable convolution (depthwise 3x3 + pointwise 1x1) against the
  standard 3x3 convolution it replaces, C -> C channels: parameters and MACs from the built Keras layers
  and from the :mod:`kerascnn.analysis` formulas, whose ratio is ``1/C + 1/9`` (Howard et al. 2017,
  MobileNets, eq. 5), and the measured CPU latency, which does not shrink by as much.
* ``gap-shift``: one backbone with a Flatten and with a global-average-pooling head (Network in
  Network), trained on centred images, tested with the images shifted on a larger canvas.
* ``degradation``: plain20, plain56, resnet20, resnet56 trained alike (He et al. 2016): training error.
* ``augmentation``: no augmentation, the ``standard`` preset, mixup, on 1%, 5% and 20% of the data.
* ``transfer``: from scratch, fine-tuned and frozen backbone + new head on 1% of a second task (the
  dataset's classes split in two, as Yosinski et al. 2014 split ImageNet).

The experiments that train read ``--data`` (default ``fashion_mnist``); ``--quick`` keeps each under 5
minutes on 2 CPU cores, and the tests pass a smaller ``budget`` still.

The measured RF is exact, not a threshold on a heat map, because the weights are replaced by positive
random values (``U(0.5, 1.5) / fan_in``, zero biases) and the inputs are positive: every ReLU is then
open and no two paths through the network can cancel, so a gradient is zero exactly where the output
does not depend on the pixel. Max pooling passes the gradient to one input of each window only, so the
measured field is the union over several random inputs. Neither experiment reads a dataset.
"""

from __future__ import annotations

import math
import os
import statistics
import time
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path

import numpy as np

from .errors import ConfigError
from .evaluate import predict_arrays
from .runs import atomic_save_figure, atomic_write_json, pyplot

__all__ = ["EXPERIMENTS", "receptive_field_experiment", "run_experiment", "separable_experiment"]

FIGURE_DPI = 150
SEED = 0


def run_experiment(
    name: str, out: str | Path, quick: bool = False, data: str | None = None, say: Callable = print,
    budget: dict | None = None,
) -> dict:  # fmt: skip
    """Run the experiment ``name``, write ``out/NAME.json`` and ``out/NAME.png``, say its verdict.

    ``quick`` runs a smaller budget (seconds on a laptop CPU; the JSON's ``"budget"`` says what it
    covered). Returns the JSON's dict, whose ``"verdict"`` is the line given to ``say``.
    """
    experiment = EXPERIMENTS.get(name)
    if experiment is None:
        raise ConfigError(f"unknown experiment {name!r}; choose one of: {', '.join(EXPERIMENTS)}")
    if budget:
        sizes = BUDGETS.get(name)
        if sizes is None:
            raise ConfigError(f"{name} has no budget to override; these do: {', '.join(BUDGETS)}")
        unknown = sorted(set(budget) - set(sizes["quick"]))
        if unknown:
            raise ConfigError(
                f"{name}: unknown budget key(s) {', '.join(unknown)}; its keys: {', '.join(sizes['quick'])}"
            )
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out: '{out}' exists and is not a folder")
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    result, fig = experiment(quick=quick, data=data, **({"budget": budget} if budget else {}))
    result["budget"]["seconds"] = round(time.perf_counter() - start, 1)
    atomic_save_figure(fig, out / f"{name}.png", dpi=FIGURE_DPI)
    atomic_write_json(out / f"{name}.json", result, indent=2)
    say(result["verdict"])
    return result


def _takes_no_data(name: str, data: str | None) -> None:
    if data is not None:
        raise ConfigError(f"--data: experiment '{name}' uses random inputs and reads no dataset")


# ------------------------------------------------------------------------------------------------
# receptive-field
# ------------------------------------------------------------------------------------------------

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

    from . import models
    from .analysis import analyze

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
    _takes_no_data("receptive-field", data)
    from .analysis import analyze, conv_params, receptive_field

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


# ------------------------------------------------------------------------------------------------
# separable
# ------------------------------------------------------------------------------------------------


def _median_latencies_ms(fns: list, x, warmup: int, repeats: int) -> list[float]:
    """Median wall time of each ``fn(x)`` (to the result in host memory), the calls interleaved so that
    a change in machine load hits all of them alike."""
    for fn in fns:
        for _ in range(warmup):
            fn(x).numpy()
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(repeats):
        for fn, ts in zip(fns, times, strict=True):
            t0 = time.perf_counter()
            fn(x).numpy()
            ts.append(time.perf_counter() - t0)
    return [statistics.median(ts) * 1e3 for ts in times]


def separable_experiment(quick: bool = False, data: str | None = None) -> tuple[dict, object]:
    """Standard 3x3 conv vs depthwise-separable 3x3, C -> C, for several C: (JSON dict, figure)."""
    _takes_no_data("separable", data)
    import keras
    import tensorflow as tf

    from .analysis import (
        analyze,
        conv_macs,
        conv_params,
        depthwise_params,
        separable_conv_macs,
        separable_conv_params,
    )

    widths = (32, 64, 128, 256) if quick else (32, 64, 128, 256, 512)
    size = 16 if quick else 28
    batch, warmup, repeats = 8, 3, (15 if quick else 30)
    rng = np.random.default_rng(SEED)
    L = keras.layers
    rows = []
    with tf.device("/CPU:0"):
        for c in widths:
            std = keras.Sequential(
                [
                    keras.Input((size, size, c)),
                    L.Conv2D(c, 3, padding="same", use_bias=False, name="conv3x3"),
                ],
                name=f"standard_{c}",
            )
            sep = keras.Sequential(
                [
                    keras.Input((size, size, c)),
                    L.DepthwiseConv2D(3, padding="same", use_bias=False, name="depthwise3x3"),
                    L.Conv2D(c, 1, use_bias=False, name="pointwise1x1"),
                ],
                name=f"separable_{c}",
            )
            counted = {"standard": std.count_params(), "separable": sep.count_params()}
            formulas = {
                "standard": conv_params(3, c, c, use_bias=False),
                "separable": separable_conv_params(3, c, c, use_bias=False),
            }
            pieces = depthwise_params(3, c, use_bias=False) + conv_params(1, c, c, use_bias=False)
            if counted != formulas or pieces != formulas["separable"]:
                raise RuntimeError(
                    f"C={c}: Keras counts {counted} parameters, the formulas give {formulas} "
                    f"(depthwise + pointwise: {pieces})"
                )
            macs = {
                "standard": conv_macs(size, size, 3, c, c),
                "separable": separable_conv_macs(size, size, 3, c, c),
            }
            graph_macs = {"standard": analyze(std).total_macs, "separable": analyze(sep).total_macs}
            if graph_macs != macs:
                raise RuntimeError(f"C={c}: analyze() counts {graph_macs} MACs, the formulas give {macs}")
            formula_ratio = Fraction(1, c) + Fraction(1, 9)
            ratio_params = Fraction(counted["separable"], counted["standard"])
            ratio_macs = Fraction(macs["separable"], macs["standard"])
            if ratio_params != formula_ratio or ratio_macs != formula_ratio:
                raise RuntimeError(
                    f"C={c}: ratios params {ratio_params}, MACs {ratio_macs}, 1/C + 1/9 = {formula_ratio}"
                )

            x = tf.constant(rng.uniform(0.0, 1.0, (batch, size, size, c)).astype("float32"))
            fns = [tf.function(lambda t, m=m: m(t, training=False)) for m in (std, sep)]
            lat_std, lat_sep = _median_latencies_ms(fns, x, warmup, repeats)
            rows.append(
                {
                    "channels": c,
                    "size": size,
                    "standard": {
                        "params": counted["standard"],
                        "macs": macs["standard"],
                        "latency_ms": round(lat_std, 4),
                    },
                    "separable": {
                        "params": counted["separable"],
                        "params_depthwise": depthwise_params(3, c, use_bias=False),
                        "params_pointwise": conv_params(1, c, c, use_bias=False),
                        "macs": macs["separable"],
                        "latency_ms": round(lat_sep, 4),
                    },
                    "ratio_params": float(ratio_params),
                    "ratio_macs": float(ratio_macs),
                    "formula_ratio": float(formula_ratio),
                    "ratio_latency": round(lat_sep / lat_std, 4),
                }
            )

    first, last = rows[0], rows[-1]
    verdict = (
        f"separable: a depthwise-separable 3x3 needs {first['ratio_macs']:.1%} (C={first['channels']}) to "
        f"{last['ratio_macs']:.1%} (C={last['channels']}) of the weights and MACs (= 1/C + 1/9) but takes "
        f"{first['ratio_latency']:.0%} to {last['ratio_latency']:.0%} of the CPU time"
    )
    result = {
        "experiment": "separable",
        "verdict": verdict,
        "use_bias": False,
        "note": (
            "C -> C channels, stride 1, 'same' padding, no biases (each conv would be followed by "
            "BatchNorm, as in MobileNet); separable = DepthwiseConv2D 3x3 + Conv2D 1x1; MACs at output "
            "resolution; ratios are separable / standard"
        ),
        "rows": rows,
        "budget": {
            "mode": "quick" if quick else "full",
            "widths": list(widths),
            "size": size,
            "batch": batch,
            "warmup_calls": warmup,
            "timed_calls": repeats,
            "device": "CPU",
            "cpu_count": os.cpu_count(),
            "what": (
                f"widths {', '.join(map(str, widths))} at {size}x{size}; latency = median of {repeats} "
                f"calls of a tf.function on a batch of {batch} after {warmup} warm-up calls, "
                "standard and separable interleaved"
            ),
        },
    }
    return result, _plot_separable(result)


def _plot_separable(result: dict):
    plt = pyplot()

    rows = result["rows"]
    cs = np.array([r["channels"] for r in rows])
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    grid_c = np.geomspace(cs.min() / 1.5, cs.max() * 1.5, 200)
    ax1.plot(grid_c, 1 / grid_c + 1 / 9, color="gray", label="1/C + 1/9 (MobileNet eq. 5)")
    ax1.axhline(1 / 9, color="gray", ls=":", lw=1, label="1/9 (limit for large C)")
    ax1.plot(cs, [r["ratio_params"] for r in rows], "o", ms=8, mfc="none", label="parameters (Keras layers)")
    ax1.plot(cs, [r["ratio_macs"] for r in rows], "x", ms=7, label="MACs (kerascnn.analysis)")
    ax1.set_xscale("log", base=2)
    ax1.set_xticks(cs, [str(c) for c in cs])
    ax1.set_ylim(0, None)
    ax1.set_xlabel("channels C (in = out)")
    ax1.set_ylabel("separable / standard")
    ax1.set_title("3x3 conv vs depthwise 3x3 + pointwise 1x1: cost ratio")
    ax1.legend(fontsize=8)
    ax1.grid(alpha=0.3)

    ax2.plot(cs, [r["ratio_latency"] for r in rows], "o-", label="measured CPU latency")
    ax2.plot(cs, [r["ratio_macs"] for r in rows], "x--", color="gray", label="MACs")
    ax2.axhline(1, color="black", lw=0.8)
    ax2.set_xscale("log", base=2)
    ax2.set_xticks(cs, [str(c) for c in cs])
    ax2.set_ylim(0, max(1.1, max(r["ratio_latency"] for r in rows) * 1.1))
    ax2.set_xlabel("channels C (in = out)")
    ax2.set_ylabel("separable / standard")
    b = result["budget"]
    ax2.set_title(
        f"latency ratio ({b['size']}x{b['size']}, batch {b['batch']}, median of {b['timed_calls']})"
    )
    for r in rows:
        ax2.annotate(
            f"{r['standard']['latency_ms']:.3g} → {r['separable']['latency_ms']:.3g} ms",
            (r["channels"], r["ratio_latency"]),
            textcoords="offset points",
            xytext=(0, 7),
            ha="center",
            fontsize=7,
        )
    ax2.margins(x=0.12)
    ax2.legend(title="labels: standard → separable", title_fontsize=8, fontsize=8)
    ax2.grid(alpha=0.3)
    fig.tight_layout()
    return fig


# ------------------------------------------------------------------------------------------------
# gap-shift
# ------------------------------------------------------------------------------------------------

GAP_SHIFT_DATA = "fashion_mnist"
GAP_BATCH = 64
GAP_BUDGETS = {  # training images, epochs, test images, largest shift (pixels), shift step
    "quick": {"train_images": 6000, "epochs": 4, "test_images": 1000, "max_shift": 8, "step": 2},
    "full": {"train_images": 20000, "epochs": 6, "test_images": 10000, "max_shift": 12, "step": 2},
}


def _labeled_images(data: str, size: int, n_train: int, n_test: int, seed: int, experiment: str):
    """(train images, labels, test images, labels, class names), uint8 (N, size, size, 1): the dataset's
    own test split when it has one, else a held-out part of its images."""
    from . import data as kdata

    source = kdata.open_images(data, (size, size), 1)
    rng = np.random.default_rng(seed)
    try:
        test = kdata.open_images(data, (size, size), 1, split="test")
    except kdata.DataError:
        test = None
    order = rng.permutation(len(source.ids))
    if test is None:  # no test split: hold out the last part of a shuffled order
        n_test = min(n_test, len(order) // 5)
        train_pos, test_pos, test = (
            order[: len(order) - n_test][:n_train],
            order[len(order) - n_test :],
            source,
        )
    else:
        train_pos, test_pos = order[:n_train], rng.permutation(len(test.ids))[:n_test]
    x, kept, _ = source.read(sorted(train_pos.tolist()))
    y = source.labels[kept]
    xt, kept_t, _ = test.read(sorted(test_pos.tolist()))
    yt = test.labels[kept_t]
    if min(y.min(initial=0), yt.min(initial=0)) < 0 or not source.class_names:
        raise ConfigError(f"--data {data}: {experiment} needs labeled images (class folders or a built-in)")
    return x, y, xt, yt, list(source.class_names)


def _on_canvas(images: np.ndarray, margin: int, dy: int = 0, dx: int = 0) -> np.ndarray:
    """Each image on a blank canvas ``margin`` pixels larger on every side, moved by (dy, dx)."""
    n, h, w, c = images.shape
    canvas = np.zeros((n, h + 2 * margin, w + 2 * margin, c), images.dtype)
    canvas[:, margin + dy : margin + dy + h, margin + dx : margin + dx + w] = images
    return canvas


def _gap_shift_model(shape: tuple, classes: int, head: str, widths=(32, 64, 128), hidden: int = 0):
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


def _batches(x: np.ndarray, y: np.ndarray, batch: int, shuffle: bool):
    """A tf.data pipeline over arrays with kerascnn's options (no autotuning: see
    kerascnn.data.pipeline_options; Keras' own array adapter autotunes)."""
    import tensorflow as tf

    from .data import PREFETCH_BATCHES, pipeline_options

    ds = tf.data.Dataset.from_tensor_slices((x, y))
    if shuffle:
        ds = ds.shuffle(len(x), seed=SEED, reshuffle_each_iteration=True)
    return ds.batch(batch).prefetch(PREFETCH_BATCHES).with_options(pipeline_options())


def _normalized(images: np.ndarray) -> np.ndarray:
    """uint8 pixels as model inputs, by kerascnn's default normalisation ((p - 127.5) / 127.5)."""
    from .data import Normalization

    return Normalization().numpy(images)


def _accuracy(model, x: np.ndarray, y: np.ndarray) -> float:
    """Top-1 accuracy of ``model`` on input arrays ``x`` with integer labels ``y``, to 4 places."""
    return round(float((predict_arrays(model, x).argmax(1) == y).mean()), 4)


def _noise_margin(p: float, n: int) -> float:
    """Two standard errors of an accuracy ``p`` measured on ``n`` test images: a smaller difference
    between two runs is noise (floored so that a perfect score still has a margin)."""
    return 2 * math.sqrt(max(p * (1 - p), 1e-4) / n)


def gap_shift_experiment(quick: bool = False, data: str | None = None, budget: dict | None = None):
    """One backbone with a Flatten and with a GAP head, trained on centred images and tested with the
    image shifted by 0..S pixels on a larger canvas: (JSON dict, figure). ``budget`` overrides the
    quick/full sizes (the tests use a tiny one)."""
    import keras

    data = data or GAP_SHIFT_DATA
    b = {**GAP_BUDGETS["quick" if quick else "full"], **(budget or {})}
    size, margin = 28, b["max_shift"]
    x, y, xt, yt, classes = _labeled_images(
        data, size, b["train_images"], b["test_images"], SEED, "gap-shift"
    )
    x_train = _normalized(_on_canvas(x, margin))
    rng = np.random.default_rng(SEED)
    shifts = list(range(0, b["max_shift"] + 1, b["step"]))
    # each test image moves by s pixels in one of 8 directions (a random one per image, the same for
    # both heads): the object stays whole on the canvas
    directions = np.array([(1, 0), (-1, 0), (0, 1), (0, -1), (1, 1), (1, -1), (-1, 1), (-1, -1)])
    picks = directions[rng.integers(0, len(directions), len(xt))]
    accuracy, params = {}, {}
    for head in ("flatten", "gap"):
        keras.utils.set_random_seed(SEED)
        model = _gap_shift_model(x_train.shape[1:], len(classes), head)
        model.compile(keras.optimizers.Adam(2e-3), "sparse_categorical_crossentropy")
        model.fit(_batches(x_train, y, GAP_BATCH, shuffle=True), epochs=b["epochs"], verbose=0, shuffle=False)
        params[head] = int(model.count_params())
        accuracy[head] = {}
        for s in shifts:
            moved = np.zeros((len(xt), size + 2 * margin, size + 2 * margin, xt.shape[-1]), xt.dtype)
            for dy, dx in directions:  # the images that move this way, at once
                those = (picks == (dy, dx)).all(axis=1)
                moved[those] = _on_canvas(xt[those], margin, int(dy) * s, int(dx) * s)
            accuracy[head][str(s)] = _accuracy(model, _normalized(moved), yt)
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


# ------------------------------------------------------------------------------------------------
# degradation
# ------------------------------------------------------------------------------------------------

DEGRADATION_MODELS = ("plain20", "plain56", "resnet20", "resnet56")
DEGRADATION_BUDGETS = {  # training images, their side, epochs, batch, peak learning rate, logging interval
    # --quick: 220 steps of 64 at 28x28 (~4.5 min on 2 cores). At lr 0.1, 128 steps of 128 at 32x32,
    # ResNet-56 was still behind ResNet-20 (26.6% vs 17.3%: its start is slower); at 0.02 it is ahead.
    "quick": {"train_images": 3500, "side": 28, "epochs": 4, "batch": 64, "lr": 0.02, "log_every": 8},
    # 5x the steps (18 min on 2 cores)
    "full": {"train_images": 12000, "side": 28, "epochs": 6, "batch": 64, "lr": 0.02, "log_every": 20},
}
EAGER_STEPS = 10  # runs this short train eagerly: no graph to trace


def degradation_experiment(quick: bool = False, data: str | None = None, budget: dict | None = None):
    """plain20, plain56, resnet20 and resnet56 (He et al. 2016, CIFAR nets) trained with one recipe
    (SGD, momentum 0.9, the budget's peak lr with a linear warm-up over the first 10% of steps then
    cosine, weight decay 1e-4) on the same images: the training-error curves and the final training error
    (the last epoch's, measured on the fly as the paper's curves are: in inference mode a short run's
    BatchNorm statistics would be measured instead of the net). (JSON dict, figure)"""
    import keras

    from .models import build

    data = data or GAP_SHIFT_DATA
    b = {**DEGRADATION_BUDGETS["quick" if quick else "full"], **(budget or {})}
    x, y, _, _, classes = _labeled_images(data, b["side"], b["train_images"], 0, SEED, "degradation")
    x = _normalized(x)
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
            _batches(x, y, b["batch"], shuffle=True), epochs=b["epochs"], verbose=0, shuffle=False,
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


# ------------------------------------------------------------------------------------------------
# augmentation
# ------------------------------------------------------------------------------------------------

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

    from . import augment as kaug
    from . import data as kdata

    data = data or GAP_SHIFT_DATA
    b = {**AUGMENT_BUDGETS["quick" if quick else "full"], **(budget or {})}
    size = 28
    x, y, xt, yt, classes = _labeled_images(data, size, 10**9, b["test_images"], SEED, "augmentation")
    x_test = _normalized(xt)
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
            model = _gap_shift_model((size, size, 1), len(classes), "flatten", AUGMENT_WIDTHS, AUGMENT_HIDDEN)
            schedule = keras.optimizers.schedules.CosineDecay(2e-3, b["steps"])
            model.compile(
                keras.optimizers.Adam(schedule),
                "categorical_crossentropy",
                steps_per_execution=min(STEPS_PER_CALL, b["steps"]),
            )
            model.fit(ds, steps_per_epoch=b["steps"], epochs=1, verbose=0, shuffle=False)
            accuracy[key][variant] = _accuracy(model, x_test, yt)
    smallest, largest = next(iter(accuracy)), list(accuracy)[-1]
    gain = {k: round(max(v["augmented"], v["mixup"]) - v["none"], 4) for k, v in accuracy.items()}
    gains = {  # each recipe's gain over no augmentation, per share
        variant: {k: round(v[variant] - v["none"], 4) for k, v in accuracy.items()}
        for variant in ("augmented", "mixup")
    }
    names = {"augmented": "the standard preset", "mixup": "mixup"}
    base = accuracy[smallest]["none"]  # two standard errors on this many test images: less is noise
    margin = _noise_margin(base, len(yt))
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


# ------------------------------------------------------------------------------------------------
# transfer
# ------------------------------------------------------------------------------------------------

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

    from .models import build, transfer_weights

    data = data or GAP_SHIFT_DATA
    b = {**TRANSFER_BUDGETS["quick" if quick else "full"], **(budget or {})}
    size = 32
    x, y, xt, yt, classes = _labeled_images(data, size, 10**9, 10**9, SEED, "transfer")
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
    xb, yb = _normalized(xb[pick]), yb[pick]
    test_pick = rng.permutation(int(test_b.sum()))[: b["test_images"]]
    xt_b, yt_b = _normalized(xt[test_b][test_pick]), to_b[yt[test_b]][test_pick]

    def trained(model, x_, y_, steps, lr, curve=None):
        """Train ``steps`` steps; with ``curve`` (a list), append [step, test accuracy on B] every
        ``eval_every`` steps (Keras epochs of that many steps: one schedule over all of them)."""
        model.compile(
            keras.optimizers.Adam(keras.optimizers.schedules.CosineDecay(lr, steps)),
            "sparse_categorical_crossentropy",
            run_eagerly=steps <= EAGER_STEPS,
        )
        ds = _batches(x_, y_, min(TRANSFER_BATCH, len(x_)), True).repeat()
        chunk = b["eval_every"] if curve is not None and steps % b["eval_every"] == 0 else steps
        tester = keras.callbacks.LambdaCallback(
            on_epoch_end=lambda epoch, logs: curve.append([(epoch + 1) * chunk, _accuracy(model, xt_b, yt_b)])
        )
        callbacks = [tester] if curve is not None else []
        model.fit(
            ds, steps_per_epoch=chunk, epochs=steps // chunk, verbose=0, shuffle=False, callbacks=callbacks
        )
        return model

    shape = (size, size, 1)
    keras.utils.set_random_seed(SEED)
    xa, ya = _normalized(x[in_a]), to_a[y[in_a]]
    source = build(TRANSFER_MODEL, input_shape=shape, num_classes=len(task_a))
    trained(source, xa, ya, b["pretrain_steps"], TRANSFER_LR)
    source_accuracy = _accuracy(source, _normalized(xt[test_a]), to_a[yt[test_a]])

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
    margin = _noise_margin(scratch, len(yt_b))
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


EXPERIMENTS: dict[str, Callable[..., tuple[dict, object]]] = {
    "receptive-field": receptive_field_experiment,
    "separable": separable_experiment,
    "gap-shift": gap_shift_experiment,
    "degradation": degradation_experiment,
    "augmentation": augmentation_experiment,
    "transfer": transfer_experiment,
}
BUDGETS: dict[str, dict[str, dict]] = {  # the experiments whose sizes a ``budget`` dict can override
    "gap-shift": GAP_BUDGETS,
    "degradation": DEGRADATION_BUDGETS,
    "augmentation": AUGMENT_BUDGETS,
    "transfer": TRANSFER_BUDGETS,
}
