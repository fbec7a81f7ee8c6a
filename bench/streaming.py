"""The streaming pipeline and --cache: peak memory and throughput of one training epoch, and the
input pipeline alone.

1. One epoch of mobilenet_v1 (alpha 0.25, 128x128x3, batch 64, the `light` augmentation) on folders of
   N JPEGs (160x160 RGB, made from Fashion-MNIST), for each --cache mode: none, disk (first run: it
   writes the cache; second run: it reads it) and ram. Each (N, mode) runs in a fresh process, so its
   peak RSS (ru_maxrss) is its own. images/s is the epoch's training throughput after its first batch
   (tracing excluded); "load s" is the time to list (and for ram, decode) before training starts.
2. Decode + augment of the pipeline alone (--cache none, 224x224x3, `light` augmentation), in
   images/s for the whole machine and per core, next to the training step's images/s of the same
   model at 224 on in-memory tensors: whether the pipeline would keep a faster accelerator fed.

    .venv/bin/python bench/streaming.py --sizes 1000,8000,32000

The JPEGs are written once under --work (default /tmp/kerascnn-bench-stream); the disk cache under
--work/cache (KERASCNN_CACHE).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

SHAPE = (128, 128, 3)
BATCH = 64


def make_jpegs(folder: Path, count: int) -> Path:
    """``count`` 160x160 RGB JPEGs in 10 class folders (Fashion-MNIST, tinted per image)."""
    import numpy as np
    from PIL import Image

    from kerascnn import data as kdata

    done = folder / ".complete"
    if done.exists():
        return folder
    (x, y), _ = kdata.load_builtin("fashion_mnist")
    rng = np.random.default_rng(0)
    for i in range(count):
        tint = rng.uniform(0.5, 1.0, 3)
        rgb = (x[i % len(x)][..., None] * tint).astype(np.uint8)
        path = folder / str(int(y[i % len(y)])) / f"{i:05d}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rgb).resize((160, 160), Image.Resampling.BILINEAR).save(path, quality=90)
    done.touch()
    return folder


def one_epoch(folder: str, cache: str) -> dict:
    """In this process: load with ``cache``, train one epoch; the figures as a dict."""
    import resource

    import keras

    from kerascnn import augment as aug
    from kerascnn import data as kdata
    from kerascnn.models import build
    from kerascnn.optim import compile_options

    keras.utils.set_random_seed(0)
    t0 = time.perf_counter()
    data = kdata.load_dataset(folder, SHAPE[:2], SHAPE[2], val_split=0.0, cache=cache)
    load_s = time.perf_counter() - t0
    norm = kdata.Normalization()
    augmenter = aug.Augmenter(aug.augment_config("light"), data.num_classes, 0)
    ds = kdata.make_dataset(data.train, data.num_classes, BATCH, norm, training=True, augmenter=augmenter)
    model = build("mobilenet_v1", input_shape=SHAPE, num_classes=data.num_classes, alpha=0.25)
    model.compile(keras.optimizers.AdamW(1e-3), loss="categorical_crossentropy", **compile_options())

    class Timer(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            if batch == 0:
                self.start = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            self.seconds = time.perf_counter() - self.start

    timer = Timer()
    model.fit(ds, epochs=1, callbacks=[timer], verbose=0)
    images = len(data.train) - BATCH
    return {
        "images": len(data.train),
        "cache": cache,
        "load_s": round(load_s, 1),
        "images_per_s": round(images / timer.seconds, 1),
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
    }


def pipeline_alone(folder: str, batches: int = 30) -> dict:
    """Decode + augment at 224x224x3 from the files (no model), and the training step alone."""
    import keras
    import numpy as np

    from kerascnn import augment as aug
    from kerascnn import data as kdata
    from kerascnn.models import build
    from kerascnn.optim import compile_options

    shape = (224, 224, 3)
    data = kdata.load_dataset(folder, shape[:2], 3, val_split=0.0, cache="none")
    augmenter = aug.Augmenter(aug.augment_config("light"), data.num_classes, 0)
    ds = kdata.make_dataset(data.train, data.num_classes, BATCH, kdata.Normalization(), training=True,
                            augmenter=augmenter)  # fmt: skip
    it = iter(ds.repeat())
    next(it)
    t0 = time.perf_counter()
    for _ in range(batches):
        next(it)
    pipe = batches * BATCH / (time.perf_counter() - t0)
    x = np.random.default_rng(0).uniform(-1, 1, (BATCH, *shape)).astype("float32")
    y = keras.utils.to_categorical(np.arange(BATCH) % 10, 10)
    model = build("mobilenet_v1", input_shape=shape, num_classes=10, alpha=0.25)
    model.compile(keras.optimizers.AdamW(1e-3), loss="categorical_crossentropy", **compile_options())
    model.train_on_batch(x, y)
    t0 = time.perf_counter()
    for _ in range(5):
        model.train_on_batch(x, y)
    step = 5 * BATCH / (time.perf_counter() - t0)
    cores = os.cpu_count()
    return {"pipeline_images_per_s": round(pipe), "per_core": round(pipe / cores), "cores": cores,
            "train_step_images_per_s": round(step)}  # fmt: skip


def main():
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", default="1000,8000,32000")
    parser.add_argument("--modes", default="none,disk,disk,ram")
    parser.add_argument("--work", default="/tmp/kerascnn-bench-stream")
    parser.add_argument("--child", nargs=2, metavar=("FOLDER", "CACHE"), help=argparse.SUPPRESS)
    parser.add_argument("--skip-pipeline", action="store_true")
    args = parser.parse_args()
    work = Path(args.work)
    os.environ["KERASCNN_CACHE"] = str(work / "cache")
    if args.child:
        print(json.dumps(one_epoch(*args.child)))
        return
    sizes = [int(s) for s in args.sizes.split(",")]
    jpegs = make_jpegs(work / f"jpegs{max(sizes)}", max(sizes))
    rows = []
    for n in sizes:
        folder = jpegs if n == max(sizes) else _subset(jpegs, work / f"jpegs{n}", n)
        seen = set()
        for mode in args.modes.split(","):
            label = mode if mode != "disk" else ("disk (writes)" if mode not in seen else "disk (reads)")
            seen.add(mode)
            child = [sys.executable, __file__, "--work", str(work), "--child", str(folder), mode]
            out = subprocess.run(child, capture_output=True, text=True, check=True)
            row = json.loads(out.stdout.strip().splitlines()[-1]) | {"cache": label}
            rows.append(row)
            print(json.dumps(row), flush=True)
    print(f"\nmachine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, no GPU")
    print("| JPEGs | --cache | load s | images/s (epoch) | peak RSS MiB |")
    print("|---:|---|---:|---:|---:|")
    for r in rows:
        rss = f"{r['peak_rss_mib']:,}"
        print(f"| {r['images']:,} | {r['cache']} | {r['load_s']} | {r['images_per_s']} | {rss} |")
    if not args.skip_pipeline:
        print(json.dumps(pipeline_alone(str(jpegs))))


def _subset(source: Path, folder: Path, n: int) -> Path:
    """The first ``n`` images of ``source`` (in name order), linked into ``folder``."""
    if (folder / ".complete").exists():
        return folder
    files = sorted(source.rglob("*.jpg"), key=lambda p: p.name)[:n]
    for f in files:
        target = folder / f.parent.name / f.name
        target.parent.mkdir(parents=True, exist_ok=True)
        if not target.exists():
            os.link(f, target)
    (folder / ".complete").touch()
    return folder


if __name__ == "__main__":
    main()
