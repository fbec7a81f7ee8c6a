"""The pretrained recipe's budget on a photo folder: what `kerascnn train --data PHOTOS` spends when it
fine-tunes mobilenet_v2 from ImageNet, and the sizes of the files `kerascnn export` then writes.

This machine has no internet and no ImageNet weights, so the weights file the recipe finds in the Keras
cache is written here with random values (keras.applications' own MobileNetV2 with ``weights=None``,
saved in the legacy HDF5 layout of the published file, as the tests do). Time, steps and file sizes do
not depend on the values of the weights; accuracy does, so none is reported.

    .venv/bin/python bench/pretrained_recipe.py --work /tmp/pretrained-bench
    .venv/bin/python bench/pretrained_recipe.py --work /tmp/pp --per-class 10 --train-args --epochs 1 \\
        --fine-tune-epochs 1                                # a smoke run

Not a test: the full run takes about ten minutes on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import csv
import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def _shapes():
    """bench/recipe.py's drawn-shapes photos (colour, noisy backgrounds)."""
    spec = importlib.util.spec_from_file_location("bench_recipe", HERE / "recipe.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module._save_shapes


def publish_random_weights(keras_home: Path, size: int) -> Path:
    """mobilenet_v2 alpha 1.0 at ``size``, random, under the name keras.applications asks for."""
    os.environ["KERAS_HOME"] = str(keras_home)
    import h5py
    import keras
    from keras.src.legacy.saving.legacy_h5_format import save_weights_to_hdf5_group

    from kerascnn.models import pretrained

    wanted = pretrained.weights_file("mobilenet_v2", 1.0, size)
    if not wanted.cached():
        net = keras.applications.MobileNetV2(weights=None, include_top=False, input_shape=(size, size, 3))
        wanted.path().parent.mkdir(parents=True, exist_ok=True)
        with h5py.File(wanted.path(), "w") as f:
            save_weights_to_hdf5_group(f, net)
    return wanted.path()


def timed(cmd: list[str], log: Path, env: dict) -> float:
    start = time.perf_counter()
    with open(log, "w") as f:
        subprocess.run(cmd, check=True, stdout=f, stderr=subprocess.STDOUT, env=env)
    return time.perf_counter() - start


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", type=Path, required=True)
    ap.add_argument("--per-class", type=int, default=100, help="photos per class (4 classes)")
    ap.add_argument("--side", type=int, default=256, help="the photos' side in pixels")
    ap.add_argument("--size", type=int, default=224, help="the weights file's input size to cache")
    ap.add_argument("--train-args", nargs=argparse.REMAINDER, default=[], help="extra train options")
    args = ap.parse_args()
    work = args.work
    photos = work / "photos"
    if not (photos / ".done").exists():
        _shapes()(photos, 4 * args.per_class, seed=7, side=args.side)
        (photos / ".done").touch()
    weights = publish_random_weights(work / "keras_home", args.size)
    env = {**os.environ, "KERAS_HOME": str(work / "keras_home"), "KERASCNN_OFFLINE": "1"}
    kerascnn = [sys.executable, "-m", "kerascnn.cli"]
    run, exp = work / "run", work / "export"
    train_s = timed(
        [*kerascnn, "train", "--data", str(photos), "--output", str(run), "--quiet", *args.train_args],
        work / "train.log", env,
    )  # fmt: skip
    export_s = timed(
        [*kerascnn, "export", str(run), "--out", str(exp), "--tflite", "--quantize", "none",
         "--quantize", "int8", "--onnx"],
        work / "export.log", env,
    )  # fmt: skip
    cfg = json.loads((run / "config.json").read_text())["train"]
    with open(run / "history.csv") as f:
        epochs = len(list(csv.DictReader(f)))
    recipe = next(line for line in (run / "run.log").read_text().splitlines() if "recipe: " in line)
    train_images = cfg["recipe"]["train_images"]
    steps = epochs * -(-train_images // cfg["batch_size"])
    print(f"machine: {os.cpu_count()} CPU cores; weights file {weights.name} (random values)")
    print(f"photos: {4 * args.per_class} {args.side}x{args.side} JPEGs, 4 classes ({train_images} train)")
    print(f"recipe: {recipe.split('recipe: ', 1)[1]}")
    print()
    print("| model | epochs run (frozen + fine-tune) | optimizer steps | train minutes | export minutes |")
    print("|---|---:|---:|---:|---:|")
    phases = f"{epochs} ({cfg['epochs']} + {cfg['fine_tune_epochs']})"
    print(
        f"| {cfg['model']} {cfg['model_options']} at {'x'.join(map(str, cfg['input_shape']))} "
        f"| {phases} | {steps} | {train_s / 60:.1f} | {export_s / 60:.1f} |"
    )
    print()
    print("| file | MB |")
    print("|---|---:|")
    for path in [run / "model_best.keras", *sorted(exp.glob("*.tflite")), *sorted(exp.glob("*.onnx"))]:
        print(f"| {path.name} | {path.stat().st_size / 1e6:.2f} |")


if __name__ == "__main__":
    main()
