"""Why some training runs are slow, and whether every run is fast now: kerascnn's resnet20 (32x32x3,
batch 128, SGD, in-memory tensors; the model and data of bench/train_speed.py) in N fresh processes,
each next to a run of the same network in plain PyTorch (bench/torch_resnet20.py), alternating, so
that both see the same machine. For each kerascnn run: images/s, and per training step the minor page
faults and the involuntary context switches of the process (getrusage), the evidence of what a slow
run spends its time on. Each run times one whole ``fit`` call, from the call to its return: what a
user waits for (a fit's iterator is destroyed before fit returns; see kerascnn.data.pipeline_options).

    .venv/bin/python bench/speed_runs.py --runs 5 --torch-python /tmp/torchenv/bin/python
    .venv/bin/python bench/speed_runs.py --runs 5 --env BENCH_AUTOTUNE=1   # tf.data autotuning on

Prints one JSON line per run, then min/median/max per framework and the per-run ratios.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path


def steady_malloc() -> None:
    """glibc malloc with fixed thresholds: blocks of any size come from the heap and freed memory is
    kept (mallopt M_MMAP_THRESHOLD and M_TRIM_THRESHOLD), instead of the dynamic mmap threshold that
    maps, faults in and unmaps large tensors on every step until it adapts."""
    import ctypes

    libc = ctypes.CDLL("libc.so.6")
    m_trim_threshold, m_mmap_threshold = -1, -3
    ok = libc.mallopt(m_mmap_threshold, 32 << 20)  # glibc's maximum (64-bit): 32 MiB
    ok &= libc.mallopt(m_trim_threshold, (1 << 31) - 1)
    if not ok:
        raise OSError("mallopt refused the thresholds")


def child(batch: int, steps: int) -> dict:
    import resource

    if os.environ.get("BENCH_STEADY_MALLOC"):
        steady_malloc()

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras
    import numpy as np
    import tensorflow as tf

    from kerascnn import data as kdata
    from kerascnn.models import build
    from kerascnn.optim import compile_options

    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, (batch * 4, 32, 32, 3)).astype("float32")
    y = keras.utils.to_categorical(rng.integers(0, 10, batch * 4), 10)
    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(batch).cache()
    if os.environ.get("BENCH_AUTOTUNE"):  # tf.data's defaults, as kerascnn had them before
        ds = ds.prefetch(tf.data.AUTOTUNE)
    else:  # kerascnn's pipeline settings (kerascnn.data.make_dataset)
        ds = ds.prefetch(kdata.PREFETCH_BATCHES).with_options(kdata.pipeline_options())
    model = build("resnet20", input_shape=(32, 32, 3), num_classes=10)
    model.compile(keras.optimizers.SGD(0.1, momentum=0.9, nesterov=True, weight_decay=5e-4),
                  loss="categorical_crossentropy", **compile_options())  # fmt: skip
    model.fit(ds.repeat(), steps_per_epoch=5, epochs=1, verbose=0)  # trace and warm up
    before, t0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    model.fit(ds.repeat(), steps_per_epoch=steps, epochs=1, verbose=0)
    seconds, after = time.perf_counter() - t0, resource.getrusage(resource.RUSAGE_SELF)
    return {
        "images_per_s": round(steps * batch / seconds, 1),
        "minflt_per_step": round((after.ru_minflt - before.ru_minflt) / steps),
        "nivcsw_per_step": round((after.ru_nivcsw - before.ru_nivcsw) / steps),
        "nvcsw_per_step": round((after.ru_nvcsw - before.ru_nvcsw) / steps),
    }


def main():
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--torch-python", default=None)
    parser.add_argument("--env", action="append", default=[], help="NAME=VALUE for the kerascnn runs.")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.batch_size, args.steps)))
        return
    env = dict(os.environ, **dict(e.split("=", 1) for e in args.env))
    torch_script = Path(__file__).with_name("torch_resnet20.py")
    rows = []
    for i in range(args.runs):
        cmd = [
            sys.executable,
            __file__,
            "--child",
            "--steps",
            str(args.steps),
            "--batch-size",
            str(args.batch_size),
        ]
        out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True).stdout
        row = {"run": i + 1, "kerascnn": json.loads(out.strip().splitlines()[-1])}
        if args.torch_python:
            cmd = [
                args.torch_python,
                str(torch_script),
                "--batch-size",
                str(args.batch_size),
                "--steps",
                str(args.steps),
            ]
            out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
            row["torch"] = json.loads(out.strip().splitlines()[-1])["images_per_s"]
            row["ratio"] = round(row["kerascnn"]["images_per_s"] / row["torch"], 2)
        rows.append(row)
        print(json.dumps(row), flush=True)
    ours = [r["kerascnn"]["images_per_s"] for r in rows]
    summary = {"env": args.env, "kerascnn_min_median_max": [min(ours), statistics.median(ours), max(ours)]}
    if args.torch_python:
        theirs = [r["torch"] for r in rows]
        ratios = [r["ratio"] for r in rows]
        summary["torch_min_median_max"] = [min(theirs), statistics.median(theirs), max(theirs)]
        summary["ratio_min_median_max"] = [min(ratios), statistics.median(ratios), max(ratios)]
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
