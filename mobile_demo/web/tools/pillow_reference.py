"""Reference input tensors for the web tests: what `kerascnn validate` feeds a model.

Reads a JSON job list on stdin: [{"png": path, "config": {input_size, channels, mean, std, input_dtype,
input_quantization}}, ...] and prints one JSON list: for each job the tensor bytes (base64, little-endian),
dtype and shape, computed exactly as tests/mobile/test_golden_fixtures.py does: kerascnn.data.decode_image
(Pillow) then ModelMetadata.normalize and, for int8/uint8 inputs, kerascnn.export.runtime.quantize.
Also, for {"write_png": path, "mode": ..., "size": [w, h], "seed": n, "transparent": bool} jobs, writes a
random image of that Pillow mode with Pillow's own PNG encoder first (so the page's decoder is checked on
Pillow-written files; "transparent": with a tRNS chunk, see write_png), and for {"write_jpeg": path, "from":
png, "size": [w, h], "quality": q, "subsampling": s} jobs, a JPEG made from a PNG (for the browser-decoder
path of the e2e tests); for {"write_webp": path, "from": png, "size": [w, h], "lossless": bool, "quality": q,
"alpha": bool} jobs, a WebP made from a PNG (RGB, or RGBA with a gradient alpha); and for {"decoded": path}
jobs, the RGB pixels `kerascnn.data.decode_image` gives at the file's own size (base64, width, height).
"""

from __future__ import annotations

import base64
import json
import sys

import numpy as np
from PIL import Image

from kerascnn.data import decode_image
from kerascnn.export.metadata import ModelMetadata
from kerascnn.export.runtime import quantize


def write_png(path: str, mode: str, size, seed: int, transparent: bool = False) -> None:
    """A random image; ``transparent``: with a tRNS chunk, a random alpha per palette entry for "P", else
    the first pixel's value as the colour key (so that at least one pixel matches it)."""
    rng = np.random.default_rng(seed)
    w, h = size
    if mode == "I;16":
        image = Image.fromarray(rng.integers(0, 65536, (h, w), dtype=np.uint16))  # mode I;16
    elif mode == "1":
        image = Image.fromarray(rng.integers(0, 2, (h, w), dtype=np.uint8) * 255, "L").convert("1")
    elif mode == "P":
        image = Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8), "RGB").quantize(64)
    else:
        bands = Image.getmodebands(mode)
        shape = (h, w) if bands == 1 else (h, w, bands)
        image = Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode)
    options = {}
    if transparent:
        if mode == "P":
            options["transparency"] = rng.integers(0, 256, 64, dtype=np.uint8).tobytes()
        else:
            options["transparency"] = image.getpixel((0, 0))
    image.save(path, format="PNG", **options)


def write_webp(job: dict) -> None:
    """A WebP from a PNG, resized; lossless or lossy at ``quality``; ``alpha``: with an alpha gradient."""
    with Image.open(job["from"]) as image:
        image = image.convert("RGB").resize(tuple(job["size"]), Image.Resampling.BILINEAR)
    if job.get("alpha"):
        w, h = image.size
        ramp = np.tile(np.linspace(0, 255, w).round().astype(np.uint8), (h, 1))
        image.putalpha(Image.fromarray(ramp, "L"))
    options = {"lossless": True} if job.get("lossless") else {"quality": job.get("quality", 80)}
    image.save(job["write_webp"], format="WEBP", **options)


def decoded(path: str) -> dict:
    with Image.open(path) as image:
        w, h = image.size
    rgb = decode_image(path, (h, w), 3)
    return {"width": w, "height": h, "data": base64.b64encode(rgb.tobytes()).decode()}


def tensor(png: str, config: dict) -> dict:
    meta = ModelMetadata(model_name="reference", labels=["a"], **config)
    pixels = decode_image(png, tuple(meta.input_size), meta.channels)[None]
    x = meta.normalize(pixels)
    if meta.input_dtype in ("int8", "uint8"):
        x = quantize(x, meta.input_quantization, meta.input_dtype)
    data = np.ascontiguousarray(x).astype(x.dtype.newbyteorder("<")).tobytes()
    return {"dtype": str(x.dtype), "shape": list(x.shape), "data": base64.b64encode(data).decode()}


def main() -> None:
    jobs = json.load(sys.stdin)
    out = []
    for job in jobs:
        if "write_jpeg" in job:
            with Image.open(job["from"]) as image:
                image = image.convert("RGB").resize(tuple(job["size"]), Image.Resampling.BILINEAR)
                image.save(
                    job["write_jpeg"], format="JPEG", quality=job["quality"], subsampling=job["subsampling"]
                )
            out.append({"written": job["write_jpeg"]})
        elif "write_webp" in job:
            write_webp(job)
            out.append({"written": job["write_webp"]})
        elif "decoded" in job:
            out.append(decoded(job["decoded"]))
        elif "write_png" in job:
            write_png(job["write_png"], job["mode"], job["size"], job["seed"], job.get("transparent", False))
            out.append({"written": job["write_png"]})
        else:
            out.append(tensor(job["png"], job["config"]))
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
