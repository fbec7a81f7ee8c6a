"""The default recipe against hand-tuned commands, on folder datasets a new user could have.

Builds two folder datasets (class folders under train/ and a held-out test/):

* ``mnist20``: 5,000 MNIST training digits downscaled to 20x20 grayscale PNGs (+1,000 test digits);
* ``fashion96``: a Fashion-MNIST subset upscaled to 96x96 RGB JPEGs (--fashion-train, 1,000 by
  default, +500 test);
* ``shapes64``: 1,500 64x64 colour JPEGs of four drawn shapes (+500 test), held out: made after the
  recipe's rules were set, to check them on data they were not tuned on;

then runs ``kerascnn train --data DIR`` with every default, and the hand-tuned commands below, one at a
time, and prints a markdown table: dataset, command, test top-1 (metrics.json of the best model) and
wall-clock minutes of the whole command (loading, training, the test evaluation).

    .venv/bin/python bench/recipe.py --work /tmp/recipe-bench            # everything
    .venv/bin/python bench/recipe.py --work /tmp/recipe-bench --only mnist20 --runs defaults
    .venv/bin/python bench/recipe.py --work /tmp/recipe-bench --only mnist20 --seeds 0 1 2 \\
        --runs "lenet5, 3 epochs" "lenet5, default epochs"                # short budgets, 3 seeds

Not a test: it takes tens of minutes on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

# (name, extra arguments) per dataset; "defaults" is `--data DIR` alone
RUNS = {
    "mnist20": [
        ("defaults", []),
        ("defaults, flip on", ["--flip", "horizontal"]),  # the recipe before it chose the augmentation
        # short budgets (issue 26): the model named, the epochs given or derived
        ("lenet5, 3 epochs", ["--model", "lenet5", "--epochs", "3"]),
        ("lenet5, 1 epoch", ["--model", "lenet5", "--epochs", "1"]),
        ("lenet5, 10 epochs", ["--model", "lenet5", "--epochs", "10"]),
        ("lenet5, default epochs", ["--model", "lenet5"]),
        ("3 epochs", ["--epochs", "3"]),
        (
            "old defaults, lenet5",
            ["--model", "lenet5", "--batch-size", "128", "--epochs", "10", "--patience", "0"],
        ),
        (
            "hand-tuned",
            "--model lenet5 --epochs 30 --batch-size 32 --lr 3e-3 --augment none --shift 0.1 --rotation 8 "
            "--warmup-epochs 0 --patience 0".split(),
        ),
    ],
    "fashion96": [
        ("defaults", []),
        (
            "hand-tuned",
            "--model mobilenet_v1 --model-kwargs alpha=0.5 --input-shape 96,96,3 --epochs 15 --batch-size 32 "
            "--lr 2e-3 --warmup-epochs 1 --patience 0".split(),
        ),
        (
            "hand-tuned, downscaled",
            "--model resnet20 --input-shape 32,32,1 --epochs 20 --batch-size 32 --lr 2e-3 --warmup-epochs 1 "
            "--patience 0".split(),
        ),
    ],
    "shapes64": [  # held out: added after the recipe's rules were set, to check them on other data
        ("defaults", []),
        (
            "hand-tuned",
            "--model resnet20 --input-shape 32,32,3 --epochs 20 --batch-size 32 --lr 2e-3 --warmup-epochs 1 "
            "--patience 0".split(),
        ),
    ],
}


def _save_folder(root: Path, images: np.ndarray, labels: np.ndarray, classes, size, mode: str, ext: str):
    from PIL import Image

    for name in classes:
        (root / name).mkdir(parents=True, exist_ok=True)
    for i, (img, y) in enumerate(zip(images, labels, strict=True)):
        im = Image.fromarray(img, "L").resize(size, Image.BILINEAR).convert(mode)
        im.save(root / classes[int(y)] / f"{i:05d}.{ext}", **({"quality": 90} if ext == "jpg" else {}))


SHAPES = ("circle", "square", "triangle", "cross")


def _save_shapes(root: Path, n: int, seed: int, side: int = 64):
    """``n`` 64x64 colour JPEGs of one shape each (the class), at a random place, size and colour, on
    a random colour background with noise: a held-out set the recipe was not tuned on."""
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(seed)
    for name in SHAPES:
        (root / name).mkdir(parents=True, exist_ok=True)
    for i in range(n):
        label = i % len(SHAPES)
        bg = rng.integers(0, 256, 3)
        fg = (bg + rng.integers(80, 176, 3)) % 256  # a colour far enough from the background
        im = Image.new("RGB", (side, side), tuple(int(v) for v in bg))
        draw = ImageDraw.Draw(im)
        r = int(rng.integers(8, 20))
        cx, cy = (int(v) for v in rng.integers(r, side - r, 2))
        colour = tuple(int(v) for v in fg)
        if SHAPES[label] == "circle":
            draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=colour)
        elif SHAPES[label] == "square":
            draw.rectangle((cx - r, cy - r, cx + r, cy + r), fill=colour)
        elif SHAPES[label] == "triangle":
            draw.polygon([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], fill=colour)
        else:
            w = max(2, r // 3)
            draw.rectangle((cx - r, cy - w, cx + r, cy + w), fill=colour)
            draw.rectangle((cx - w, cy - r, cx + w, cy + r), fill=colour)
        pixels = np.asarray(im, np.int16) + rng.normal(0, 12, (side, side, 3)).astype(np.int16)
        Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(
            root / SHAPES[label] / f"{i:05d}.jpg", quality=90
        )


def _pick(labels: np.ndarray, n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.sort(rng.permutation(len(labels))[:n])


def build_datasets(work: Path, fashion_train: int) -> dict[str, Path]:
    from kerascnn import data as kdata

    out = {}
    (x, y), (xt, yt) = kdata.load_builtin("mnist")
    root = work / "mnist20"
    if not (root / ".done").exists():
        classes = [str(i) for i in range(10)]
        tr, te = _pick(y, 5000, 0), _pick(yt, 1000, 1)
        _save_folder(root / "train", x[tr], y[tr], classes, (20, 20), "L", "png")
        _save_folder(root / "test", xt[te], yt[te], classes, (20, 20), "L", "png")
        (root / ".done").touch()
    out["mnist20"] = root
    (x, y), (xt, yt) = kdata.load_builtin("fashion_mnist")
    root = work / "fashion96"
    if not (root / ".done").exists():
        classes = list(kdata.FASHION_MNIST_CLASSES)
        classes = [c.replace("/", "-").replace(" ", "_") for c in classes]
        tr, te = _pick(y, fashion_train, 2), _pick(yt, 500, 3)
        _save_folder(root / "train", x[tr], y[tr], classes, (96, 96), "RGB", "jpg")
        _save_folder(root / "test", xt[te], yt[te], classes, (96, 96), "RGB", "jpg")
        (root / ".done").touch()
    out["fashion96"] = root
    root = work / "shapes64"
    if not (root / ".done").exists():
        _save_shapes(root / "train", 1500, seed=4)
        _save_shapes(root / "test", 500, seed=5)
        (root / ".done").touch()
    out["shapes64"] = root
    return out


def run_one(data: Path, args: list[str], out: Path) -> tuple[float, float, str]:
    cmd = [sys.executable, "-m", "kerascnn.cli", "train", "--data", str(data), "--output", str(out), *args]
    shown = "kerascnn train --data DIR " + shlex.join(args)
    out.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    with open(out.with_suffix(".log"), "w") as log:
        subprocess.run(cmd, check=True, stdout=log, stderr=subprocess.STDOUT)
    minutes = (time.perf_counter() - start) / 60
    top1 = json.loads((out / "metrics.json").read_text())["top1"]
    return top1, minutes, shown


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--work", type=Path, default=Path("/tmp/recipe-bench"))
    p.add_argument("--fashion-train", type=int, default=1000)
    p.add_argument("--only", nargs="*", default=list(RUNS), help="datasets")
    p.add_argument("--runs", nargs="*", default=None, help="run names (default: all)")
    p.add_argument("--seeds", nargs="*", type=int, default=[0], help="--seed of each run (default: 0)")
    p.add_argument("--extra", default="", help="arguments added to every run (e.g. '--flip none')")
    a = p.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    folders = build_datasets(a.work, a.fashion_train)
    rows = []
    for name in a.only:
        for run, args in RUNS[name]:
            if a.runs and run not in a.runs:
                continue
            for seed in a.seeds:
                tag = f"{name}-{run.replace(' ', '').replace(',', '-')}" + (f"-seed{seed}" if seed else "")
                out = a.work / "runs" / tag
                if out.exists():
                    import shutil

                    shutil.rmtree(out)
                seeded = [*args, *shlex.split(a.extra), *(["--seed", str(seed)] if seed else [])]
                top1, minutes, shown = run_one(folders[name], seeded, out)
                rows.append((name, run, shown, top1, minutes))
                print(f"| {name} | {run} | `{shown}` | {top1 * 100:.1f}% | {minutes:.1f} |", flush=True)
    print("\n| dataset | run | command | test top-1 | minutes |\n|---|---|---|---|---|")
    for name, run, shown, top1, minutes in rows:
        print(f"| {name} | {run} | `{shown}` | {top1 * 100:.1f}% | {minutes:.1f} |")


if __name__ == "__main__":
    main()
