"""``separable``: a 3x3 depthwise-separable convolution (depthwise 3x3 + pointwise 1x1) against the
standard 3x3 convolution it replaces, C -> C channels: parameters and MACs from the built Keras layers
and from the :mod:`kerascnn.analysis` formulas, whose ratio is ``1/C + 1/9`` (Howard et al. 2017,
MobileNets, eq. 5), and the measured CPU latency, which does not shrink by as much. It reads no
dataset.
"""

from __future__ import annotations

import os
import statistics
import time
from fractions import Fraction

import numpy as np

from .common import SEED, pyplot, require_no_data


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
    require_no_data("separable", data)
    import keras
    import tensorflow as tf

    from ..analysis import (
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
