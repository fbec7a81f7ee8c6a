"""Phone files before and after issue 42: a free batch with the converter's pools (before) against a fixed
batch of 1 with the pooling rewrites (after, what `kerascnn export` writes), for every zoo family at the
small input shapes of the tests (tests/export/test_quantize.py FAMILIES, random weights, 8 calibration
images): the ops the GPU delegate, XNNPACK and (int8) NNAPI take, and ms/image on this machine's XNNPACK
(1 thread, batch 1, median of 200 invokes after 20 warm-up), float32 and int8. Then the cost of running a
fixed-batch file on many images (validate's way: one invoke per image) against a free-batch file resized
to 64, on 512 images.

    .venv/bin/python bench/phone_graph.py [--families lenet resnet_cifar ...]

Prints markdown tables. Not a test: about 3 minutes on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402


def _ms_per_image(content: bytes, x: np.ndarray, runs: int = 200) -> float:
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=content, num_threads=1)
    interpreter.allocate_tensors()
    inp = interpreter.get_input_details()[0]
    if inp["dtype"] != np.float32:
        scale, zero = inp["quantization"]
        x = np.clip(np.round(x / scale + zero), -128, 127).astype(inp["dtype"])
    times = []
    for i in range(runs + 20):
        interpreter.set_tensor(inp["index"], x[:1])
        started = time.perf_counter()
        interpreter.invoke()
        if i >= 20:
            times.append(time.perf_counter() - started)
    return float(np.median(times) * 1000)


def _coverage(path: Path, names, mode: str) -> str:
    from kerascnn.export.delegates import gpu_compatibility, integer_readiness, xnnpack_coverage

    gpu = gpu_compatibility(path, names)
    cpu = xnnpack_coverage(path, names, threads=1)
    cells = [f"{gpu.supported_ops}/{gpu.ops}", f"{cpu.xnnpack_ops}/{cpu.ops}"]
    if mode == "int8":
        integer = integer_readiness(path, names)
        cells.append(f"{integer.nnapi_ops}/{integer.ops}")
    return " / ".join(cells)


def main() -> None:
    import keras
    from kerascnn.export import tflite as ktflite
    from kerascnn.export.rewrite import phone_pooling

    from tests.export.test_quantize import FAMILIES

    p = argparse.ArgumentParser()
    p.add_argument("--families", nargs="*", default=list(FAMILIES))
    args = p.parse_args()
    print("| family | float32: GPU / XNNPACK ops, before -> after | ms before -> after "
          "| int8: GPU / XNNPACK / NNAPI ops, before -> after | ms before -> after |")  # fmt: skip
    print("|---|---|---|---|---|")
    batch_rows = []
    for name in args.families:
        keras.utils.set_random_seed(0)
        model = FAMILIES[name]()
        names = [layer.name for layer in model.layers]
        x = np.random.default_rng(0).uniform(0, 1, (8, *model.input_shape[1:])).astype("float32")
        cells = {}
        with tempfile.TemporaryDirectory() as tmp:
            variants = {
                "before": ktflite.write_saved_model(model, Path(tmp) / "before", batch=None),
                "after": ktflite.write_saved_model(phone_pooling(model)[0], Path(tmp) / "after"),
            }
            contents = {}
            for mode in ("none", "int8"):
                rep = (lambda x=x: ([im[None]] for im in x)) if mode == "int8" else None
                for when, saved in variants.items():
                    content = ktflite.convert(saved, mode, rep)
                    contents[(mode, when)] = content
                    path = Path(tmp) / f"{mode}_{when}.tflite"
                    path.write_bytes(content)
                    cells[(mode, when)] = (_coverage(path, names, mode), _ms_per_image(content, x))
            many = np.random.default_rng(1).uniform(0, 1, (512, *model.input_shape[1:])).astype("float32")
            timed = {}
            for when in ("before", "after"):
                started = time.perf_counter()
                ktflite.run_tflite(contents[("none", when)], many, batch=64)
                timed[when] = time.perf_counter() - started
            batch_rows.append((name, timed["before"], timed["after"]))
        row = [name]
        for mode in ("none", "int8"):
            (cb, mb), (ca, ma) = cells[(mode, "before")], cells[(mode, "after")]
            row += [f"{cb} -> {ca}", f"{mb:.3f} -> {ma:.3f} ({ma / mb:.2f}x)"]
        print("| " + " | ".join(row) + " |", flush=True)
    print("\n| family | 512 images, float32: free batch resized to 64 | fixed batch, one invoke per image "
          "| ratio |")  # fmt: skip
    print("|---|---:|---:|---:|")
    for name, before, after in batch_rows:
        print(f"| {name} | {before:.2f} s | {after:.2f} s | {after / before:.2f}x |")


if __name__ == "__main__":
    main()
