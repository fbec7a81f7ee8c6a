"""Golden fixtures shared with the phone front ends: mobile_demo/android/core (Kotlin), mobile_demo/web (JS).

The Python preprocessing that `kerascnn validate` applies (``kerascnn.data.decode_image``: Pillow decode,
``viewable`` (16-bit samples to 8 bits, transparency composited over white), ``convert("L"|"RGB")``,
bilinear resize to the input size; then the file's metadata: ``(x - mean) / std`` in float32 and, for
int8/uint8 inputs, ``round_half_even(x / scale) + zero_point`` clipped) is run on sample PNGs for several
input configurations. The resulting input tensors are the fixtures; the Kotlin and JS tests must produce
the same bytes from the same pixels. So that neither needs Pillow's decoder, each image's decoded pixels
are given too, before the composite, as Android's ``Bitmap.getPixels`` returns them: one little-endian
32-bit ARGB int per pixel (not premultiplied), row-major.

Postprocessing fixtures (dequantize, softmax for logits, top-3) and the metadata embedded in the demo
models' ``.tflite`` files are written alongside, and ``tflite/flatten_dynamic_batch.tflite``, a tiny
model whose Flatten the GPU delegate does not take (the Kotlin core's GpuCompatibilityTest).

The fixtures are committed in ``mobile_demo/fixtures``. This test regenerates them and fails if the
committed ones differ (stale); ``KERASCNN_UPDATE_FIXTURES=1`` writes them instead.
"""

from __future__ import annotations

import contextlib
import functools
import io
import json
import os
import tempfile
from pathlib import Path

import numpy as np
from kerascnn.export.metadata import (
    ModelMetadata,
    associated_files,
    read_metadata,
    read_standard_metadata,
    standard_metadata_json,
)
from kerascnn.export.runtime import dequantize, quantize
from PIL import Image

from kerascnn.data import decode_image

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "mobile_demo" / "fixtures"
MODELS = ROOT / "mobile_demo" / "models"
UPDATE = os.environ.get("KERASCNN_UPDATE_FIXTURES") == "1"

# Input configurations: the demo model's (RGB, float), a grayscale model with non-trivial normalization,
# ImageNet-style per-channel normalization into an int8 input, and camera bytes into a uint8 input.
CONFIGS = {
    "rgb32_float": dict(input_size=[32, 32], channels=3, mean=[127.5], std=[127.5], input_dtype="float32"),
    "gray28_float": dict(input_size=[28, 28], channels=1, mean=[72.94], std=[90.02], input_dtype="float32"),
    "rgb24x40_int8": dict(
        input_size=[24, 40],
        channels=3,
        mean=[123.675, 116.28, 103.53],
        std=[58.395, 57.12, 57.375],
        input_dtype="int8",
        input_quantization={"scale": 0.018658447265625, "zero_point": -14},
    ),  # fmt: skip
    "rgb32_uint8": dict(
        input_size=[32, 32],
        channels=3,
        mean=[0.0],
        std=[255.0],
        input_dtype="uint8",
        input_quantization={"scale": 0.003921568859368563, "zero_point": 0},
    ),  # fmt: skip
}


def _images() -> dict[str, Image.Image]:
    """Sample images covering the decode paths: grayscale, RGB downscaled (with Pillow's antialiasing
    support) and upscaled, non-square, RGBA with every level of alpha and a palette image with a tRNS
    chunk (both composited over white), and a 16-bit grayscale image (its most significant byte)."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:47, 0:61]
    photo = np.stack([xx * 4, yy * 5, (xx + yy) * 2], -1) + rng.integers(0, 40, (47, 61, 3))
    gray = (np.add.outer(np.arange(28) * 9, np.arange(28) * 3) % 256).astype(np.uint8)
    gray[8:20, 10:18] = 255 - gray[8:20, 10:18]
    small = rng.integers(0, 256, (15, 20, 3), dtype=np.uint8)
    rgba = np.concatenate(
        [rng.integers(0, 256, (40, 40, 3)), np.tile(np.arange(40) * 6, (40, 1))[..., None]], -1
    )
    palette = Image.fromarray(np.clip(photo[5:32, 10:43], 0, 255).astype(np.uint8), "RGB").quantize(16)
    # alpha per palette entry: opaque, fully transparent and partial; the last entries have none (255)
    palette.info["transparency"] = bytes([255, 0, 128, 30, 200, 0, 77, 255, 10, 250, 64, 180])
    wide = np.add.outer(np.arange(30) * 1800, np.arange(26) * 500) + rng.integers(0, 256, (30, 26))
    return {
        "gray_28x28": Image.fromarray(gray, "L"),
        "photo_61x47": Image.fromarray(np.clip(photo, 0, 255).astype(np.uint8), "RGB"),
        "small_20x15": Image.fromarray(small, "RGB"),
        "rgba_40x40": Image.fromarray(rgba.astype(np.uint8), "RGBA"),
        "palette_trns_33x27": palette,
        "gray16_26x30": Image.fromarray(wide.astype(np.uint16)),  # mode I;16
    }


def _argb(png: bytes) -> bytes:
    """The PNG's decoded pixels as Android's Bitmap.getPixels gives them: 0xAARRGGBB ints, not
    premultiplied, little-endian. Alpha from the alpha channel or tRNS chunk; 16-bit samples as the 8-bit
    values ``viewable`` takes (the most significant byte)."""
    with Image.open(io.BytesIO(png)) as image:
        if image.mode == "I;16":
            image = Image.fromarray((np.asarray(image) >> 8).astype(np.uint8), "L")
        rgba = np.asarray(image.convert("RGBA"), np.uint32)
    argb = (rgba[..., 3] << 24) | (rgba[..., 0] << 16) | (rgba[..., 1] << 8) | rgba[..., 2]
    return argb.astype("<u4").tobytes()


def _input_tensor(png: Path, config: dict) -> np.ndarray:
    """Exactly what kerascnn validate feeds a model with this metadata (runtime.Predictor.prepare)."""
    meta = ModelMetadata(model_name="fixture", labels=["a"], **config)
    pixels = decode_image(png, tuple(meta.input_size), meta.channels)[None]
    x = meta.normalize(pixels)
    if meta.input_dtype in ("int8", "uint8"):
        x = quantize(x, meta.input_quantization, meta.input_dtype)
    return x


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x.astype(np.float64) - x.max())
    return (e / e.sum()).astype(np.float32)


def _postprocess_case(name: str, output: str, raw: np.ndarray, q: dict | None, labels: list[str]) -> dict:
    """What the app shows for a raw output tensor: dequantized (int8/uint8), softmax (logits), top-3
    (ties: the lower class index first)."""
    values = dequantize(raw, q) if q is not None else raw.astype(np.float32)
    scores = _softmax(values) if output == "logits" else values
    order = sorted(range(len(scores)), key=lambda i: (-scores[i], i))[:3]
    return {
        "name": name, "output": output, "output_dtype": str(raw.dtype), "output_quantization": q,
        "raw": raw.tolist(), "scores": scores.tolist(), "labels": labels,
        "top3": [{"index": i, "label": labels[i], "score": float(scores[i])} for i in order],
    }  # fmt: skip


def _postprocess_cases() -> list[dict]:
    labels = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
              "Ankle boot"]  # fmt: skip
    rng = np.random.default_rng(1)
    tie = rng.integers(0, 256, 10).astype(np.uint8)
    tie[[2, 7]] = 250
    return [
        _postprocess_case("float_probabilities", "probabilities",
                          _softmax(rng.normal(0, 3, 10).astype(np.float32)), None, labels),
        _postprocess_case("float_logits", "logits", rng.normal(0, 4, 10).astype(np.float32), None, labels),
        _postprocess_case("int8_probabilities", "probabilities", rng.integers(-128, 128, 10).astype(np.int8),
                          {"scale": 0.00390625, "zero_point": -128}, labels),
        _postprocess_case("int8_logits", "logits", rng.integers(-128, 128, 10).astype(np.int8),
                          {"scale": 0.1372549, "zero_point": 3}, labels),
        _postprocess_case("uint8_probabilities_tie", "probabilities", tie,
                          {"scale": 0.00390625, "zero_point": 0}, labels),
    ]  # fmt: skip


@functools.cache  # both tests generate
def _flatten_tflite() -> bytes:
    """Conv2D -> Flatten -> Dense (8x8x1 -> 3, 4.5 KB, fixed weights) converted with a dynamic batch
    (``TFLiteConverter.from_keras_model``): its Flatten becomes SHAPE, STRIDED_SLICE, PACK and a RESHAPE
    whose shape is computed at run time, as in kerascnn's LeNet-5. The bytes are stable for one TF version."""
    import keras
    import tensorflow as tf

    model = keras.Sequential([
        keras.Input((8, 8, 1), name="image"),
        keras.layers.Conv2D(4, 3, activation="relu", name="conv"),
        keras.layers.Flatten(name="flatten"),
        keras.layers.Dense(3, activation="softmax", name="dense"),
    ], name="flatnet")  # fmt: skip
    rng = np.random.default_rng(2)
    model.set_weights([rng.normal(0, 0.3, w.shape).astype(np.float32) for w in model.get_weights()])
    with contextlib.redirect_stdout(io.StringIO()):  # "Saved artifact at ..."
        return tf.lite.TFLiteConverter.from_keras_model(model).convert()


def _generate() -> dict[str, bytes]:
    files: dict[str, bytes] = {}
    cases = []
    for name, image in _images().items():
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        files[f"images/{name}.png"] = buffer.getvalue()
        files[f"pixels/{name}.argb"] = _argb(files[f"images/{name}.png"])
    with tempfile.TemporaryDirectory() as tmp:
        for name, image in _images().items():
            png = Path(tmp) / f"{name}.png"
            png.write_bytes(files[f"images/{name}.png"])
            for config_name, config in CONFIGS.items():
                x = _input_tensor(png, config)
                key = f"tensors/{name}__{config_name}.bin"
                files[key] = np.ascontiguousarray(x).astype(x.dtype.newbyteorder("<")).tobytes()
                cases.append({
                    "image": f"images/{name}.png", "pixels": f"pixels/{name}.argb",
                    "width": image.width, "height": image.height, "config": config_name,
                    "tensor": key, "dtype": str(x.dtype), "shape": list(x.shape),
                })  # fmt: skip
    models, standard = {}, {}
    for path in sorted(MODELS.glob("*.tflite")):
        meta = read_metadata(path)
        models[path.name] = json.loads(meta.to_json())
        standard[path.name] = {
            "metadata": standard_metadata_json(read_standard_metadata(path)),
            "packed_files": sorted(associated_files(path.read_bytes())),
        }
    manifest = {
        "about": "Golden fixtures written by tests/mobile/test_golden_fixtures.py; see its docstring.",
        "configs": CONFIGS,
        "preprocess": cases,
        "postprocess": _postprocess_cases(),
        "tflite_metadata": models,
        # the standard TFLite Metadata (TFLITE_METADATA buffer) of the same files, in the JSON form of
        # the schema's displayer, and the names of the files packed in their appended zip
        "standard_metadata": standard,
    }
    files["tflite/flatten_dynamic_batch.tflite"] = _flatten_tflite()
    files["manifest.json"] = (json.dumps(manifest, indent=1, ensure_ascii=False) + "\n").encode()
    return files


def test_golden_fixtures_are_current():
    files = _generate()
    if UPDATE:
        for name, data in files.items():
            (FIXTURES / name).parent.mkdir(parents=True, exist_ok=True)
            (FIXTURES / name).write_bytes(data)
    stale = [
        name
        for name, data in files.items()
        if not (FIXTURES / name).is_file() or (FIXTURES / name).read_bytes() != data
    ]
    assert not stale, (
        f"stale golden fixtures {stale}: regenerate with KERASCNN_UPDATE_FIXTURES=1 pytest {__file__}"
    )
    extra = {p.relative_to(FIXTURES).as_posix() for p in FIXTURES.rglob("*") if p.is_file()} - set(files)
    assert not extra, f"fixtures no test writes: {sorted(extra)}"


def test_fixtures_cover_resizing_quantization_and_the_demo_models():
    manifest = json.loads(_generate()["manifest.json"])
    sizes = {(c["width"], c["height"]) for c in manifest["preprocess"]}
    assert (61, 47) in sizes and (20, 15) in sizes  # downscale and upscale
    assert {c["dtype"] for c in manifest["preprocess"]} == {"float32", "int8", "uint8"}
    assert any(name.endswith("_int8.tflite") for name in manifest["tflite_metadata"])
