"""Phone runtimes, measured: every exported .tflite through MediaPipe Tasks next to LiteRT, on the full
Fashion-MNIST test set (10,000 images), for the committed demo model and (``--readme-run``) the README's
recipe model.

    .venv/bin/python bench/phone_runtimes.py --readme-run runs/fashion_resnet20 --out /tmp/phone_bench

For each model: ``kerascnn export`` (float32, dynamic, float16, int8, and int8 with uint8 tensors in and
out; ``--rgb-input`` for the grayscale README model) then ``kerascnn validate`` of the whole folder:
top-1, drop, agreement with Keras and ms/image per row; a MediaPipe row per .tflite (the file alone,
fed the 28x28 test images as RGB frames, its own resizing). ms/image: LiteRT times the interpreter call
on a prepared tensor; MediaPipe times ``classify`` on a frame, its preprocessing included.

Then the resize finding on the demo model (32x32 input, so every 28x28 frame is resized): the agreement
of MediaPipe with LiteRT when LiteRT is fed (a) kerascnn's resize (TF bilinear, half-pixel centres, as in
training) and (b) OpenCV's ``warpAffine`` mapping pixel indices (corner-aligned) with INTER_LINEAR and
BORDER_REPLICATE, which is what MediaPipe's CPU ImageToTensorCalculator does.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "mobile_demo" / "models"
VARIANTS = ("none", "dynamic", "float16", "int8")


def export(source, out: Path, rgb_input: bool, labels=None, calibration=None):
    from kerascnn.export.pipeline import ExportOptions, export_model, resolve_source

    src = resolve_source(source, labels=labels)
    for folder, opts in (
        (out, ExportOptions(tflite=VARIANTS, rgb_input=rgb_input, calibration_data=calibration)),
        (
            out / "uint8_io",
            ExportOptions(
                tflite=("int8",), io_type="uint8", rgb_input=rgb_input, calibration_data=calibration
            ),
        ),
    ):
        results = export_model(src, folder, opts, log=lambda *_: None)
        failed = [r for r in results if r.status != "ok"]
        if failed:
            sys.exit(f"export failed: {failed}")
    return [out, out / "uint8_io" / next(p.name for p in (out / "uint8_io").glob("*_int8.tflite"))]


def validate_table(paths, title: str):
    from kerascnn.export.validate import format_rows, validate

    t0 = time.time()
    rows, summary = validate(paths, "fashion_mnist", latency_runs=50, log=lambda *_: None)
    print(f"\n### {title} ({summary['images']} test images, {time.time() - t0:.0f} s)\n")
    print(format_rows(rows))
    return rows


def resize_finding(float_tflite: Path, n: int = 10000):
    import cv2
    import numpy as np
    from kerascnn.export.runtime import MediaPipePredictor, load_predictor

    from kerascnn.data import load_builtin, load_dataset

    (_, _), (native, _) = load_builtin("fashion_mnist")
    native = native[:n]
    ours = load_dataset("fashion_mnist", (32, 32), 3, val_split=0.0).test.images[:n]
    lite = load_predictor(float_tflite)
    mp = MediaPipePredictor(float_tflite, lite.metadata)
    try:
        mp_top = mp.predict(native[..., None]).argmax(1)
    finally:
        mp.close()
    h, w = native.shape[1:3]
    warp = np.float32([[w / 32, 0, 0], [0, h / 32, 0]])
    corner = np.stack(
        [
            cv2.warpAffine(
                im,
                warp,
                (32, 32),
                flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                borderMode=cv2.BORDER_REPLICATE,
            )
            for im in native
        ]
    )
    corner = np.repeat(corner[..., None], 3, -1)
    lite_ours = lite.predict(ours).argmax(1)
    lite_corner = lite.predict(corner).argmax(1)
    agree = {
        "ours": (lite_ours == mp_top).mean() * 100,
        "corner": (lite_corner == mp_top).mean() * 100,
        "corner_vs_ours": (lite_corner == lite_ours).mean() * 100,
        "pixels": np.abs(corner.astype(float) - ours).mean(),
    }
    print(f"\n### Where MediaPipe's {n} resized frames differ (demo model, float32)\n")
    print("| LiteRT fed | agreement with MediaPipe | agreement with LiteRT on kerascnn's resize |")
    print("|---|---|---|")
    print(f"| kerascnn's resize (TF bilinear, half-pixel centres) | {agree['ours']:.2f}% | 100% |")
    print(
        "| cv2.warpAffine, corner-aligned, INTER_LINEAR, BORDER_REPLICATE "
        f"| {agree['corner']:.2f}% | {agree['corner_vs_ours']:.2f}% |"
    )
    print(f"\nmean |pixel difference| between the two resizes: {agree['pixels']:.2f} (0-255)")


def main():
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--readme-run",
        default=None,
        help="run folder of the README's Fashion-MNIST recipe, or another 28x28x1 Fashion-MNIST .keras",
    )
    parser.add_argument("--skip-demo", action="store_true", help="only the --readme-run model")
    parser.add_argument("--out", default="/tmp/phone_bench")
    args = parser.parse_args()
    from kerascnn import quiet

    quiet.quiet_python_libraries()
    quiet.import_tensorflow()
    from kerascnn.export.metadata import read_labels_txt

    print(f"machine: {platform.platform()}, {os.cpu_count()} CPUs, python {platform.python_version()}")
    out = Path(args.out)
    labels = read_labels_txt(DEMO / "labels.txt")  # Fashion-MNIST's classes
    if args.readme_run:
        gray = export(args.readme_run, out / "readme", True, labels=labels, calibration="fashion_mnist")
        validate_table(gray, f"{args.readme_run} (28x28x1, exported with --rgb-input)")
    if not args.skip_demo:
        demo = export(
            DEMO / "mobilenet_v2.keras", out / "demo", False, labels=labels, calibration="fashion_mnist"
        )
        validate_table(demo, "demo model (mobile_demo/models/mobilenet_v2.keras)")
        resize_finding(out / "demo" / "mobilenet_v2_float32.tflite")


if __name__ == "__main__":
    main()
