"""What Python gives for exported models on sample images: the reference the web e2e tests compare with.

    .venv/bin/python mobile_demo/web/tools/reference.py MODEL [MODEL ...] --images PNG [PNG ...]

For every model file (.tflite via the LiteRT interpreter, .onnx via onnxruntime) and image, runs exactly the
`kerascnn validate` path: ``kerascnn.export.runtime.load_predictor(path).predict(pixels)`` with
``pixels = kerascnn.data.decode_image(png, (H, W), C)[None]`` (H, W, C from the file's own metadata), and
prints JSON: {model_file_name: {image_file_name: {"scores": [...float32 values...], "top1": i}}}.
Scores are the float32 outputs written as Python floats, so JSON round-trips them exactly.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from kerascnn.data import decode_image
from kerascnn.export.runtime import load_predictor


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="+", type=Path)
    parser.add_argument("--images", nargs="+", type=Path, required=True)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    out: dict[str, dict] = {}
    for model in args.models:
        predictor = load_predictor(model, threads=args.threads)
        meta = predictor.metadata
        results = {}
        for image in args.images:
            pixels = decode_image(image, tuple(meta.input_size), meta.channels)[None]
            scores = predictor.predict(pixels)[0]
            results[image.name] = {"scores": [float(s) for s in scores], "top1": int(scores.argmax())}
        out[model.name] = results
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
