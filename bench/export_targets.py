"""Export targets, measured: int8 size, int8 speed-up, parity with stock keras.applications, accuracy.

    .venv/bin/python bench/export_targets.py mobilenet_v2      # latency + size at 224x224x3
    .venv/bin/python bench/export_targets.py fashion RUN_DIR   # PTQ/QAT/ONNX accuracy of a trained run

``mobilenet_v2``: the zoo's mobilenet_v2 and stock ``keras.applications.MobileNetV2(weights=None)``
(same graph; no ImageNet weights offline, and latency does not depend on weight values) go through the
same ``kerascnn export`` path to float32 and int8 TFLite. Latency: LiteRT, batch 1, ``--threads`` (2),
median of ``--runs`` invokes per round, the four files interleaved round-robin for ``--rounds`` rounds
so that machine drift hits all of them alike; the medians over rounds are compared as ratios.

``fashion``: exports RUN_DIR (float32, int8, ONNX, and QAT int8) and validates every file on the full
Fashion-MNIST test set (10,000 images) with ``kerascnn validate``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402


def _calibration_folder(folder: Path, shape, n: int = 32) -> str:
    """Fashion-MNIST test images, upscaled to ``shape``, as PNGs (calibration only sets ranges)."""
    from PIL import Image

    from kerascnn.data import load_dataset

    data = load_dataset("fashion_mnist", shape[:2], shape[2], val_split=0.0)
    folder.mkdir(parents=True, exist_ok=True)
    for i, img in enumerate(data.test.images[:n]):
        Image.fromarray(img if shape[2] == 3 else img[..., 0]).save(folder / f"{i}.png")
    return str(folder)


def mobilenet_v2(args):
    import keras
    from kerascnn.export.pipeline import ExportOptions, export_model, resolve_source
    from kerascnn.export.runtime import load_predictor

    from kerascnn.models import build

    shape = (224, 224, 3)
    tmp = Path(tempfile.mkdtemp(prefix="bench-export-"))
    calib = _calibration_folder(tmp / "calib", shape)
    models = {
        "kerascnn mobilenet_v2": build("mobilenet_v2", input_shape=shape, num_classes=1000),
        "keras.applications MobileNetV2": keras.applications.MobileNetV2(weights=None, input_shape=shape),
    }
    files = {}
    for label, model in models.items():
        path = tmp / f"{model.name}.keras"
        model.save(path)
        out = tmp / label.split()[0]
        opts = ExportOptions(tflite=("none", "int8"), calibration_data=calib, calibration_steps=32)
        results = export_model(resolve_source(path), out, opts, log=lambda *_: None)
        for r in results:
            if r.format in ("float32", "int8"):
                assert r.status == "ok", r
                files[f"{label} {r.format}"] = out / r.file
    predictors = {k: load_predictor(f, threads=args.threads) for k, f in files.items()}
    pixels = np.random.default_rng(0).integers(0, 256, (1, *shape), np.uint8)
    rounds = {k: [] for k in predictors}
    for _ in range(args.rounds):
        for key, pred in predictors.items():
            rounds[key].append(pred.latency_ms(pixels, 1, runs=args.runs, warmup=3))
    ms = {k: statistics.median(v) for k, v in rounds.items()}
    size = {k: f.stat().st_size for k, f in files.items()}
    print(f"Machine: {platform.machine()}, {os.cpu_count()} cores; LiteRT, batch 1, {args.threads} threads, "
          f"median of {args.runs} invokes x {args.rounds} interleaved rounds\n")  # fmt: skip
    print("| file | size MB | ms / image |")
    print("|---|---:|---:|")
    for key in files:
        print(f"| {key} | {size[key] / 1e6:.2f} | {ms[key]:.2f} |")
    ours, stock = "kerascnn mobilenet_v2", "keras.applications MobileNetV2"
    result = {
        "int8_size_ratio": size[f"{ours} int8"] / size[f"{ours} float32"],
        "int8_speedup": ms[f"{ours} float32"] / ms[f"{ours} int8"],
        "ours_vs_stock_float32": ms[f"{ours} float32"] / ms[f"{stock} float32"],
        "ours_vs_stock_int8": ms[f"{ours} int8"] / ms[f"{stock} int8"],
        "stock_int8_speedup": ms[f"{stock} float32"] / ms[f"{stock} int8"],
    }
    print("\n" + json.dumps(result, indent=1))


def fashion(args):
    run = Path(args.run)
    out = Path(args.out or f"{run}_export")
    cmd = [sys.executable, "-m", "kerascnn.cli"]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    t0 = time.perf_counter()
    export = [
        *cmd,
        "export",
        str(run),
        "--out",
        str(out),
        "--quantize",
        "none",
        "--quantize",
        "int8",
        "--onnx",
    ]
    if not args.no_qat:
        export += ["--qat", "--qat-epochs", str(args.qat_epochs)]
    subprocess.run(export, check=True, env=env)
    minutes = (time.perf_counter() - t0) / 60
    report = out / "validate.json"
    subprocess.run(
        [*cmd, "validate", str(out), "--data", "fashion_mnist", "--json", str(report), "--threads", "2"],
        env=env,
    )
    table = json.loads(report.read_text())
    print(f"\nexport took {minutes:.1f} min")
    print("| file | top-1 % | drop pp | agree % | max abs diff | MB |")
    print("|---|---:|---:|---:|---:|---:|")
    for r in table["rows"]:
        drop = "-" if r["drop_pp"] is None else f"{r['drop_pp']:+.2f}"
        print(f"| {r['file']} | {r['top1']:.2f} | {drop} | {r['agreement']:.2f} | {r['max_abs_diff']:.2e} "
              f"| {r['size_mb']:.2f} |")  # fmt: skip


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="what", required=True)
    m = sub.add_parser("mobilenet_v2")
    m.add_argument("--threads", type=int, default=2)
    m.add_argument("--runs", type=int, default=20)
    m.add_argument("--rounds", type=int, default=5)
    f = sub.add_parser("fashion")
    f.add_argument("run")
    f.add_argument("--out", default=None)
    f.add_argument("--qat-epochs", type=int, default=1)
    f.add_argument("--no-qat", action="store_true")
    args = parser.parse_args()
    {"mobilenet_v2": mobilenet_v2, "fashion": fashion}[args.what](args)


if __name__ == "__main__":
    main()
