"""int8 that keeps accuracy, measured: float32, int8, int16x8 and mixed files of (a) a model where plain int8
loses accuracy and (b) ``--also`` models, e.g. the committed demo MobileNetV2 (int8 keeps its accuracy),
on the full Fashion-MNIST test set.

    .venv/bin/python bench/int8_sensitivity.py --also mobile_demo/models/mobilenet_v2.keras --out /tmp/i8

(a) is LeNet-5 with ReLU trained here (8 epochs, all 60,000 training images), then given an outlier
channel (tests/export/outliers.py: c1_conv's channel 0 scaled 300x, c3_conv ignoring it): per-tensor
int8 activations then round c1_conv's other channels to a few levels. For each model: ``kerascnn export
--quantize none --quantize int8 --quantize int16x8 --quantize mixed --onnx`` (200 calibration images,
500 held back for mixed, gate: 99% agreement), then ``kerascnn validate`` on the 10,000 test images
(top-1, drop, agreement with Keras), then ``kerascnn benchmark --threads 2`` at batch 1: the files
interleaved, ``--rounds`` rounds, the median of each file's per-round medians.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # tests/export/outliers.py
VARIANTS = ("none", "int8", "int16x8", "mixed")


def outlier_model(folder: Path, epochs: int) -> tuple[Path, float]:
    import keras
    import numpy as np

    from kerascnn.data import load_builtin
    from kerascnn.models.lenet import lenet5
    from tests.export.outliers import with_outlier_channel

    (x, y), (xt, yt) = load_builtin("fashion_mnist")
    norm = lambda a: (a[..., None].astype("float32") - 127.5) / 127.5  # noqa: E731
    keras.utils.set_random_seed(0)
    model = lenet5(input_shape=(28, 28, 1), activation="relu")
    model.compile(optimizer=keras.optimizers.Adam(3e-3), loss="sparse_categorical_crossentropy")
    t0 = time.time()
    model.fit(norm(x), y, batch_size=128, epochs=epochs, verbose=0)
    trained = float(np.mean(model.predict(norm(xt), verbose=0).argmax(1) == yt) * 100)
    print(
        f"relu LeNet-5: {epochs} epochs in {time.time() - t0:.0f} s, "
        f"test top-1 {trained:.2f}% before the outlier"
    )
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "lenet5_outlier.keras"
    with_outlier_channel(model, "c1_conv", "c3_conv", factor=300.0).save(path)
    return path, trained


def export(source, out: Path, labels=None):
    from kerascnn.export.pipeline import ExportOptions, export_model, resolve_source

    src = resolve_source(source, labels=labels)
    options = ExportOptions(tflite=VARIANTS, onnx=True, calibration_data="fashion_mnist")
    t0 = time.time()
    results = export_model(src, out, options, log=lambda *_: None)
    failed = [r for r in results if r.status != "ok"]
    if failed:
        sys.exit(f"export failed: {failed}")
    mixed = next(r for r in results if r.format == "mixed").notes
    kept = mixed["float_layers"] or "nothing"
    print(f"\nexport of {source}: {time.time() - t0:.0f} s; mixed keeps in float: {kept} (held-back "
          f"agreement {mixed['agreement']:.2f}%, full int8 {mixed['int8_agreement']:.2f}%)")  # fmt: skip
    report = json.loads(next(out.glob("*_int8_report.json")).read_text())
    top = ", ".join(f"{r['layer']} ({r['op']}, {r['channel_sqnr_db']:.1f} dB)" for r in report["layers"][:3])
    print(f"report, most error first: {top}")


def measure(out: Path, title: str, rounds: int):
    from kerascnn.export.validate import benchmark, collect_files, validate

    files = [f for f in collect_files([out]) if f.suffix in (".keras", ".tflite", ".onnx")]
    rows, summary = validate(files, "fashion_mnist", threads=2, mediapipe=False, log=lambda *_: None)
    timings: dict[str, list[float]] = {}
    for _ in range(rounds):
        for f in files:
            bench, _ = benchmark([f], batch_size=1, threads=2, runs=50, mediapipe=False)
            timings.setdefault(f.name, []).append(bench[0].ms_batch1)
    ms = {name: statistics.median(v) for name, v in timings.items()}
    print(f"\n### {title} ({summary['images']} test images)\n")
    print("| file | top-1 % | drop pp | agree % | MB | ms/img (b=1, 2 threads) |")
    print("|---|---:|---:|---:|---:|---:|")
    sizes = {}
    for r in rows:
        sizes[r.file] = r.size_mb
        cells = (r.file, f"{r.top1:.2f}", f"{r.drop_pp:+.2f}", f"{r.agreement:.2f}", f"{r.size_mb:.3f}")
        print(f"| {' | '.join(cells)} | {ms[r.file]:.3f} |")
    name = next(f.name for f in files if f.name.endswith("_int8.tflite")).removesuffix("_int8.tflite")
    i8, mx, i16 = f"{name}_int8.tflite", f"{name}_mixed.tflite", f"{name}_int16x8.tflite"
    print(f"\nmixed / int8: size {sizes[mx] / sizes[i8]:.2f}x, speed {ms[i8] / ms[mx]:.2f}x; "
          f"int16x8 / int8: speed {ms[i8] / ms[i16]:.2f}x")  # fmt: skip
    failing = [r.file for r in rows if r.status != "ok"]
    print(f"validate: {'all pass' if not failing else 'FAIL: ' + ', '.join(failing)}")


def main():
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--also",
        action="append",
        default=[],
        help="another run folder or .keras model of Fashion-MNIST to measure the same way (repeatable)",
    )
    parser.add_argument("--skip-outlier", action="store_true", help="only the --also models")
    parser.add_argument("--out", default="/tmp/int8_bench")
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    from kerascnn import quiet

    quiet.quiet_python_libraries()
    quiet.import_tensorflow()
    print(f"machine: {platform.platform()}, {os.cpu_count()} CPUs, python {platform.python_version()}")
    out = Path(args.out)
    if not args.skip_outlier:
        model, _ = outlier_model(out / "models", args.epochs)
        export(model, out / "outlier")
        measure(out / "outlier", "LeNet-5 (ReLU) with an outlier channel", args.rounds)
    for i, other in enumerate(args.also):
        export(other, out / f"also{i}")
        measure(out / f"also{i}", str(other), args.rounds)


if __name__ == "__main__":
    main()
