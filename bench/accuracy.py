"""Accuracy benchmarks of `kerascnn train`: the recipes the README recommends, timed end to end
(data loading, training, final evaluation) on this machine.

    .venv/bin/python bench/accuracy.py lenet5_mnist      # target: >= 99.0% test top-1 in <= 5 min
    .venv/bin/python bench/accuracy.py fashion_mnist --tta 2   # target: >= 94.0% test top-1 in <= 30 min

Each recipe is exactly the `kerascnn train` command printed with its result.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

RECIPES = {
    "lenet5_mnist": (
        ["--model", "lenet5", "--data", "mnist", "--input-shape", "32,32,1", "--epochs", "24",
         "--batch-size", "128", "--optimizer", "adamw", "--lr", "3e-3", "--schedule", "cosine",
         "--augment", "none", "--shift", "0.1", "--rotation", "8", "--val-split", "0.05"],
        0.990, 5 * 60,
    ),
    "fashion_mnist": (  # with test-time augmentation: run it with --tta 2
        ["--model", "resnet20", "--data", "fashion_mnist", "--input-shape", "28,28,1", "--epochs", "20",
         "--batch-size", "128", "--optimizer", "sgd", "--lr", "0.1", "--schedule", "cosine",
         "--warmup-epochs", "1", "--weight-decay", "5e-4", "--label-smoothing", "0.1", "--augment", "light",
         "--val-split", "0.05"],
        0.940, 30 * 60,
    ),
}  # fmt: skip


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("recipe", choices=sorted(RECIPES))
    parser.add_argument("--output", default=None)
    parser.add_argument(
        "--tta", type=int, default=1, help="Also evaluate with N-copy test-time augmentation."
    )
    args = parser.parse_args()
    argv, target, budget = RECIPES[args.recipe]
    out = Path(args.output or f"runs/bench_{args.recipe}")
    shutil.rmtree(out, ignore_errors=True)
    cmd = [sys.executable, "-m", "kerascnn.cli", "train", *argv, "--quiet", "--output", str(out)]
    start = time.perf_counter()
    subprocess.run(cmd, check=True, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
    train_minutes = (time.perf_counter() - start) / 60
    metrics = json.loads((out / "metrics.json").read_text())
    result = {
        "recipe": args.recipe,
        "command": "kerascnn train " + " ".join(argv),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "test_top1": metrics["top1"],
        "train_minutes": train_minutes,
    }
    if args.tta > 1:  # the recipe's evaluation with test-time augmentation, timed with the training
        tta_json = out / f"metrics_tta{args.tta}.json"
        subprocess.run(
            [sys.executable, "-m", "kerascnn.cli", "evaluate", str(out), "--tta", str(args.tta),
             "--json", str(tta_json)],
            check=True, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"), stdout=subprocess.DEVNULL,
        )  # fmt: skip
        result[f"test_top1_tta{args.tta}"] = json.loads(tta_json.read_text())["top1"]
    elapsed = time.perf_counter() - start
    best = max(v for k, v in result.items() if k.startswith("test_top1"))
    result.update(
        target_top1=target,
        minutes=elapsed / 60,
        budget_minutes=budget / 60,
        met=best >= target and elapsed <= budget,
    )
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
