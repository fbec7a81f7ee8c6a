"""Phone-accelerator readiness of zoo models (issue 27): GPU-delegate compatibility, the float16 row,
per-tensor against per-channel int8, and XNNPACK coverage of each variant.

Each model is trained briefly on Fashion-MNIST at 32x32 (so that agreement means something; the figures
are about the files, not about accuracy), exported to float32, float16 and int8 (per-channel), and to
int8 --per-tensor in a second folder, then validated on 1,000 test images and benchmarked.

    .venv/bin/python bench/accelerators.py --work /tmp/accel-bench [--models resnet20 ...]

Prints a markdown table. Not a test: about 20 minutes on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

MODELS = {  # name: (input shape, extra train arguments)
    "mobilenet_v1": ("32,32,3", ["--model-kwargs", "alpha=0.5"]),
    "mobilenet_v2": ("32,32,3", ["--model-kwargs", "alpha=0.5"]),
    "resnet20": ("32,32,1", []),
    "densenet_bc100_k12": ("32,32,1", []),
}


def kerascnn(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "kerascnn.cli", *args], check=True, stdout=subprocess.DEVNULL)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--work", type=Path, default=Path("/tmp/accel-bench"))
    p.add_argument("--models", nargs="*", default=list(MODELS))
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--train-fraction", type=float, default=0.1)
    p.add_argument("--limit", type=int, default=1000)
    args = p.parse_args()

    from kerascnn.export.validate import benchmark, validate

    lines = [
        "| model | GPU delegate (float32 file) | gpu float16 row: agree % / max abs diff | int8 per-channel: "
        "top-1 % / KB | int8 per-tensor: top-1 % / KB | XNNPACK ops: float32 / float16 / int8 / per-tensor |",
        "|---|---|---|---|---|---|",
    ]
    for name in args.models:
        shape, extra = MODELS[name]
        run = args.work / "runs" / name
        if not (run / "model_best.keras").exists():
            kerascnn("train", "--model", name, "--data", "fashion_mnist", "--input-shape", shape,
                     "--epochs", str(args.epochs), "--train-fraction", str(args.train_fraction),
                     "--quiet", "--output", str(run), *extra)  # fmt: skip
        pc, pt = args.work / "export" / name / "per_channel", args.work / "export" / name / "per_tensor"
        kerascnn("export", str(run), "--out", str(pc), "--quantize", "none", "--quantize", "float16",
                 "--quantize", "int8", "--calibration-steps", "200")  # fmt: skip
        kerascnn("export", str(run), "--out", str(pt), "--quantize", "int8", "--per-tensor",
                 "--calibration-steps", "200")  # fmt: skip
        files = [pc, pt / f"{name}_int8.tflite"]
        rows, _ = validate(files, "fashion_mnist", limit=args.limit, mediapipe=False, log=lambda *_: None)
        by = {(r.format, r.file): r for r in rows}
        float32 = next(r for r in rows if r.format == "tflite float32")
        sim = next(r for r in rows if r.format == "gpu float16 (float32 file)")
        int8 = by[("tflite int8", f"{name}_int8.tflite")]
        per_tensor = by[("tflite int8 per-tensor", f"{name}_int8.tflite")]
        gpu = float32.accelerators["gpu"]
        gpu_text = "all ops" if gpu["fully_compatible"] else f"{gpu['supported_ops']} of {gpu['ops']} ops"
        bench, _ = benchmark(files, batch_size=8, runs=5, mediapipe=False)
        cover = {r.format: r.xnnpack for r in bench if r.xnnpack}
        xnn = " / ".join(
            f"{c['xnnpack_ops']}/{c['ops']}" if (c := cover.get(k)) else "-"
            for k in ("tflite float32", "tflite float16", "tflite int8", "tflite int8 per-tensor")
        )
        pc_text = f"{int8.top1:.1f} / {int8.size_mb * 1000:.0f}"
        pt_text = f"{per_tensor.top1:.1f} / {per_tensor.size_mb * 1000:.0f}"
        keras_top1 = next(r.top1 for r in rows if r.format == "keras")
        lines.append(
            f"| {name} ({keras_top1:.1f}% in Keras) | {gpu_text} | {sim.agreement:.1f} / "
            f"{sim.max_abs_diff:.1e} | {pc_text} | {pt_text} | {xnn} |"
        )
        print(lines[-1], flush=True)
        for r in rows + bench:
            if getattr(r, "status", "ok") not in ("ok", "n/a"):
                print(f"  {r.format} {r.file}: {r.status} {r.error}", flush=True)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
