"""The zoo at its default input sizes: parameters, MACs, and CPU latency of one forward pass.

    .venv/bin/python bench/zoo.py [PATTERN] > /tmp/zoo.md

Prints a Markdown table for BENCHMARKS.md. Latency is the median of ``--repeats`` calls of the
compiled ``model(x, training=False)`` at batch 1 after two warm-up calls, in one process, so the
models compare with each other as ratios on the same machine.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from kerascnn import analysis  # noqa: E402
from kerascnn.models import get_entry, list_models  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("pattern", nargs="?", default="*")
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args()

    print(
        f"Machine: {platform.machine()}, {os.cpu_count()} CPU cores, TensorFlow {tf.__version__}, batch 1\n"
    )
    rows = []
    for name in list_models(args.pattern):
        entry = get_entry(name)
        model = entry.fn()
        result = analysis.analyze(model)
        x = tf.constant(np.random.default_rng(0).uniform(size=(1, *entry.input_shape)).astype("float32"))
        forward = tf.function(lambda t, m=model: m(t, training=False))
        for _ in range(2):
            forward(x)
        times = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            forward(x).numpy()
            times.append((time.perf_counter() - start) * 1e3)
        rows.append(
            (name, entry.input_shape, result.total_params, result.total_macs, statistics.median(times))
        )

    base = min(row[4] for row in rows)
    print("| model | input | params | MACs | ms / image | x fastest |")
    print("|---|---|---:|---:|---:|---:|")
    for name, shape, params, macs, ms in rows:
        shape = "x".join(str(d) for d in shape)
        print(f"| {name} | {shape} | {params:,d} | {analysis.human(macs)} | {ms:.2f} | {ms / base:.1f} |")


if __name__ == "__main__":
    main()
