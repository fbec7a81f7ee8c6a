"""Metadata that travels with an exported model: labels, input size, channel order, normalization,
quantization of the input/output tensors, model name.

Where it lives, per format (read back by :func:`read_metadata` and ``kerascnn inspect``):

- ``.tflite``: a ``metadata.json`` entry of an uncompressed ZIP archive appended to the flatbuffer (the
  way Ultralytics does it). The TFLite runtime ignores the trailing bytes; any ZIP reader (Python's
  ``zipfile``, ``java.util.zip``, a few lines of JavaScript) finds the entry from the end of the file.
- ``.onnx``: ``metadata_props`` key ``kerascnn`` (the same JSON), plus ``labels`` for generic tools.
- ``.keras``/``.h5`` and every export folder: sidecar ``model.json`` (the same fields, plus a ``files``
  table) and ``labels.txt`` (one label per line, in class-index order).

The phone computes ``model_input = (pixel - mean) / std`` per channel, on 0-255 pixels in
``channel_order``, then, for an int8/uint8 input, ``q = round(model_input / scale) + zero_point``.
"""

from __future__ import annotations

import io
import json
import zipfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

SCHEMA = "kerascnn.metadata/1"
ZIP_ENTRY = "metadata.json"
ONNX_KEY = "kerascnn"


class MetadataError(ValueError):
    """An exported file's metadata is missing or inconsistent; the message names the file."""


@dataclass
class ModelMetadata:
    model_name: str
    labels: list[str]
    input_size: list[int]  # [H, W]
    channels: int
    mean: list[float] = field(default_factory=lambda: [127.5])
    std: list[float] = field(default_factory=lambda: [127.5])
    channel_order: str = ""  # "RGB" or "GRAY" (derived from channels when empty)
    layout: str = "NHWC"
    output: str = "probabilities"  # or "logits"
    format: str = "keras"  # keras | tflite | onnx
    quantization: str = "none"  # none | dynamic | float16 | int8 | qat_int8
    input_dtype: str = "float32"
    output_dtype: str = "float32"
    input_quantization: dict | None = None  # {"scale": s, "zero_point": z} for int8/uint8 tensors
    output_quantization: dict | None = None
    source: str = ""
    kerascnn_version: str = ""
    schema: str = SCHEMA

    def __post_init__(self):
        self.input_size = [int(v) for v in self.input_size]
        self.mean = [float(v) for v in self.mean]
        self.std = [float(v) for v in self.std]
        self.labels = [str(label) for label in self.labels]
        if not self.channel_order:
            self.channel_order = "GRAY" if self.channels == 1 else "RGB"
        if any(s == 0 for s in self.std):
            raise MetadataError(f"normalization std must not be 0, got {self.std}")
        for name, values in (("mean", self.mean), ("std", self.std)):
            if len(values) not in (1, self.channels):
                raise MetadataError(
                    f"normalization {name} has {len(values)} values for {self.channels} channel(s)"
                )

    @property
    def num_classes(self) -> int:
        return len(self.labels)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1, ensure_ascii=False)

    @classmethod
    def from_dict(cls, raw: dict, where: str = "metadata") -> ModelMetadata:
        known = set(cls.__dataclass_fields__)
        missing = {"model_name", "labels", "input_size", "channels"} - set(raw)
        if missing:
            raise MetadataError(f"{where}: metadata lacks {', '.join(sorted(missing))}")
        return cls(**{k: v for k, v in raw.items() if k in known})

    def normalize(self, pixels):
        """0-255 pixels (N, H, W, C) -> float32 model input, by this metadata's mean/std."""
        import numpy as np

        return ((np.asarray(pixels, np.float32) - np.float32(self.mean)) / np.float32(self.std)).astype(
            np.float32
        )

    def describe(self) -> str:
        lines = [
            f"model        {self.model_name} ({self.format}, quantization {self.quantization})",
            f"input        {self.layout} {self.input_size[0]}x{self.input_size[1]}x{self.channels} "
            f"{self.channel_order}, {self.input_dtype}",
            f"normalize    (pixel - {_fmt(self.mean)}) / {_fmt(self.std)}",
        ]
        if self.input_quantization:
            q = self.input_quantization
            lines.append(f"input quant  scale {q['scale']:.8g}, zero point {q['zero_point']}")
        lines.append(f"output       {self.output}, {self.output_dtype}")
        if self.output_quantization:
            q = self.output_quantization
            lines.append(f"output quant scale {q['scale']:.8g}, zero point {q['zero_point']}")
        lines.append(f"labels       {len(self.labels)}: {', '.join(self.labels)}")
        if self.source:
            lines.append(f"source       {self.source}")
        return "\n".join(lines)


def _fmt(values) -> str:
    return str(values[0]) if len(values) == 1 else "[" + ", ".join(f"{v:g}" for v in values) + "]"


# ------------------------------------------------------------------------------------------------
# TFLite: an uncompressed zip appended to the flatbuffer
# ------------------------------------------------------------------------------------------------


def _zip_start(data: bytes) -> int | None:
    """Offset where an appended zip archive starts (its first local header), or None."""
    eocd = data.rfind(b"PK\x05\x06", max(0, len(data) - 65557))
    if eocd < 0 or eocd + 22 > len(data):
        return None
    cd_size = int.from_bytes(data[eocd + 12 : eocd + 16], "little")
    cd_offset = int.from_bytes(data[eocd + 16 : eocd + 20], "little")
    start = eocd - cd_size - cd_offset  # > 0 when the archive was appended to other data
    if start < 0 or data[start : start + 4] != b"PK\x03\x04":
        # Python's zipfile writes absolute offsets when it appends: then the first header is at cd_offset.
        first = data.rfind(b"PK\x03\x04", 0, eocd - cd_size + 1)
        return first if first >= 0 else None
    return start


def strip_tflite_metadata(data: bytes) -> bytes:
    """The flatbuffer alone: ``data`` without an appended metadata archive."""
    start = _zip_start(data)
    if start is None:
        return data
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        if ZIP_ENTRY not in zf.namelist():
            return data
    return data[:start]


def embed_tflite_metadata(flatbuffer: bytes, meta: ModelMetadata) -> bytes:
    """The TFLite flatbuffer with ``meta`` appended as ``metadata.json`` in a stored (uncompressed) zip."""
    buf = io.BytesIO()
    buf.write(strip_tflite_metadata(flatbuffer))
    with zipfile.ZipFile(buf, "a", zipfile.ZIP_STORED) as zf:
        entry = zipfile.ZipInfo(ZIP_ENTRY, date_time=(1980, 1, 1, 0, 0, 0))  # reproducible bytes
        zf.writestr(entry, meta.to_json(), compress_type=zipfile.ZIP_STORED)
    return buf.getvalue()


def read_tflite_metadata(path) -> ModelMetadata | None:
    data = Path(path).read_bytes()
    if _zip_start(data) is None:
        return None
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            if ZIP_ENTRY not in zf.namelist():
                return None
            raw = json.loads(zf.read(ZIP_ENTRY))
    except (zipfile.BadZipFile, json.JSONDecodeError) as e:
        raise MetadataError(f"{path}: the embedded {ZIP_ENTRY} cannot be read ({e})") from None
    return ModelMetadata.from_dict(raw, str(path))


# ------------------------------------------------------------------------------------------------
# ONNX: metadata_props
# ------------------------------------------------------------------------------------------------


def embed_onnx_metadata(model_proto, meta: ModelMetadata):
    """Set ``metadata_props`` of an ``onnx.ModelProto`` in place (replacing earlier kerascnn keys)."""
    values = {ONNX_KEY: meta.to_json(), "labels": json.dumps(meta.labels), "model_name": meta.model_name}
    keep = [p for p in model_proto.metadata_props if p.key not in values]
    del model_proto.metadata_props[:]
    for prop in keep:
        model_proto.metadata_props.append(prop)
    for key, value in values.items():
        entry = model_proto.metadata_props.add()
        entry.key, entry.value = key, value
    return model_proto


def read_onnx_metadata(path) -> ModelMetadata | None:
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    props = {p.key: p.value for p in model.metadata_props}
    if ONNX_KEY not in props:
        return None
    try:
        raw = json.loads(props[ONNX_KEY])
    except json.JSONDecodeError as e:
        raise MetadataError(f"{path}: metadata_props['{ONNX_KEY}'] is not JSON ({e})") from None
    return ModelMetadata.from_dict(raw, str(path))


# ------------------------------------------------------------------------------------------------
# Sidecars and lookup
# ------------------------------------------------------------------------------------------------


def read_labels_txt(path) -> list[str]:
    return [
        line.rstrip("\r\n") for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()
    ]


def labels_txt(labels) -> str:
    return "".join(f"{label}\n" for label in labels)


def read_sidecar(folder) -> dict | None:
    path = Path(folder) / "model.json"
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise MetadataError(f"{path} is not valid JSON ({e})") from None


def read_metadata(path) -> ModelMetadata | None:
    """The metadata of any exported file: embedded for .tflite/.onnx, the sidecar for Keras files."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".tflite":
        return read_tflite_metadata(path)
    if suffix == ".onnx":
        return read_onnx_metadata(path)
    sidecar = read_sidecar(path.parent)
    if sidecar is None:
        return None
    entry = sidecar.get("files", {}).get(path.name)
    if entry is None:
        return None
    return ModelMetadata.from_dict({**sidecar["model"], **entry.get("metadata", {})}, str(path))
