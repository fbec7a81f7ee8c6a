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
import math
import zipfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

from kerascnn.errors import KerascnnError

SCHEMA = "kerascnn.metadata/1"
ZIP_ENTRY = "metadata.json"
ONNX_KEY = "kerascnn"


class MetadataError(KerascnnError, ValueError):
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
    quantization: str = "none"  # none | dynamic | float16 | int8 | int16x8 | mixed | qat_int8
    input_dtype: str = "float32"
    output_dtype: str = "float32"
    input_quantization: dict | None = None  # {"scale": s, "zero_point": z} for int8/uint8 tensors
    output_quantization: dict | None = None
    source: str = ""
    model_version: str = ""  # sha256 of the source model's weights (first 16 hex digits)
    kerascnn_version: str = ""
    schema: str = SCHEMA
    float_layers: list[str] | None = None  # mixed: the Keras layers kept in float (else absent)
    gate: str | None = None  # mixed: the verdict it was written on ("passed ...", "not judged (...)")
    weights: str | None = None  # "per-tensor" for an integer file made with --per-tensor (else per-channel)

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
        raw = asdict(self)
        for optional in ("float_layers", "gate", "weights"):  # only some files have them; the rest stay
            if raw[optional] is None:
                del raw[optional]
        return json.dumps(raw, indent=1, ensure_ascii=False)

    @classmethod
    def from_dict(cls, raw: dict, where: str = "metadata") -> ModelMetadata:
        """The metadata of a file, each field's type checked: a wrong one is named with the file."""
        if not isinstance(raw, dict):
            raise MetadataError(f"{where}: the metadata is not a JSON object")
        known = set(cls.__dataclass_fields__)
        missing = {"model_name", "labels", "input_size", "channels"} - set(raw)
        if missing:
            raise MetadataError(f"{where}: metadata lacks {', '.join(sorted(missing))}")
        fields = {k: v for k, v in raw.items() if k in known}
        for name, value in fields.items():
            check = _FIELD_CHECKS.get(name, _is_str)
            if value is not None and not check(value) or value is None and name not in _OPTIONAL:
                raise MetadataError(
                    f"{where}: metadata field '{name}' has a wrong type or value: {value!r:.80}"
                )
        try:
            return cls(**fields)
        except MetadataError as e:
            raise MetadataError(f"{where}: {e}") from None

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
        if self.float_layers is not None:
            lines.append(f"in float     {', '.join(self.float_layers) or 'no layer (full int8)'}")
        if self.gate is not None:
            lines.append(f"gate         {self.gate}")
        if self.weights is not None:
            lines.append(f"weights      {self.weights} scales")
        if self.source:
            lines.append(f"source       {self.source}")
        return "\n".join(lines)


def _is_str(v) -> bool:
    return isinstance(v, str)


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _is_list(item_check, lengths=None):
    return lambda v: (
        isinstance(v, list) and (lengths is None or len(v) in lengths) and all(map(item_check, v))
    )


def _is_quantization(v) -> bool:
    return isinstance(v, dict) and _is_number(v.get("scale")) and _is_int(v.get("zero_point"))


_OPTIONAL = {"input_quantization", "output_quantization", "float_layers", "gate", "weights"}
_FIELD_CHECKS = {
    "labels": _is_list(_is_str),
    "input_size": lambda v: _is_list(_is_int, (2,))(v) and min(v) >= 1,
    "channels": lambda v: v in (1, 3) and _is_int(v),
    "mean": _is_list(_is_number, (1, 3)),
    "std": _is_list(_is_number, (1, 3)),
    "input_quantization": _is_quantization,
    "output_quantization": _is_quantization,
    "float_layers": _is_list(_is_str),
    "gate": _is_str,
}


def _fmt(values) -> str:
    return str(values[0]) if len(values) == 1 else "[" + ", ".join(f"{v:g}" for v in values) + "]"


# ------------------------------------------------------------------------------------------------
# TFLite: the standard TFLite Metadata, and its associated files in an uncompressed zip
# ------------------------------------------------------------------------------------------------

LABELS_ENTRY = "labels.txt"
MAX_ENTRY_BYTES = 16 << 20  # an associated file larger than this is refused, not read into memory


def standard_metadata(meta: ModelMetadata) -> dict:
    """The TFLite Metadata of an exported image classifier, as MediaPipe Model Maker's image classifier
    writer lays it out: model name/description/version/author; the input image's color space, its
    normalization (mean/std per channel in pixel units: the schema gives a quantized model the same
    normalization as its float model, its tensor's own scale and zero point do the rest) and value
    range; the output's labels as a ``TENSOR_AXIS_LABELS`` file. kerascnn's JSON is one more file."""
    from . import tflite_metadata as tm

    h, w = meta.input_size
    gray = meta.channels == 1
    image = {
        "name": "image",
        "description": (
            f"Input image, {w}x{h} {'grayscale' if gray else 'RGB'}, pixels normalized as "
            f"(pixel - mean) / std per channel"
            + (f", then quantized to {meta.input_dtype}" if meta.input_quantization else "")
            + "."
        ),
        "content": {
            "content_properties": (
                "ImageProperties",
                {
                    "color_space": tm.COLOR_SPACE["GRAYSCALE" if gray else "RGB"],
                    "default_size": {"width": w, "height": h},
                },
            )
        },
        "process_units": [{"options": ("NormalizationOptions", {"mean": meta.mean, "std": meta.std})}],
        "stats": _tensor_range(meta.input_dtype, meta.input_quantization, meta.mean, meta.std),
    }
    probabilities = meta.output == "probabilities"
    scores = {
        "name": "probability" if probabilities else "logits",
        "description": (
            "Probability of each label" if probabilities else "Logit (unnormalized score) of each label"
        )
        + (f", quantized to {meta.output_dtype}." if meta.output_quantization else "."),
        "content": {"content_properties": ("FeatureProperties", {})},
        "associated_files": [
            {
                "name": LABELS_ENTRY,
                "description": "Labels for categories that the model can recognize.",
                "type": tm.ASSOCIATED_FILE_TYPE["TENSOR_AXIS_LABELS"],
            }
        ],
    }
    output_range = _tensor_range(meta.output_dtype, meta.output_quantization) if not probabilities else None
    if probabilities:
        output_range = _tensor_range(meta.output_dtype, meta.output_quantization, [0.0], [1.0], 0.0, 1.0)
    if output_range:
        scores["stats"] = output_range
    quant = {"none": "float32"}.get(meta.quantization, meta.quantization)
    if meta.float_layers:
        quant += f"; in float: {', '.join(meta.float_layers)}"
    elif meta.quantization == "mixed":
        quant += "; no layer in float"
    if meta.gate:
        quant += f"; gate {meta.gate}"
    return {
        "name": meta.model_name,
        "description": (
            f"Image classifier of {meta.num_classes} classes for {w}x{h} "
            f"{'grayscale' if gray else 'RGB'} images ({quant})."
        ),
        "version": meta.model_version or "1",
        "author": "kerascnn" + (f" {meta.kerascnn_version}" if meta.kerascnn_version else ""),
        "subgraph_metadata": [{"input_tensor_metadata": [image], "output_tensor_metadata": [scores]}],
        "associated_files": [
            {
                "name": ZIP_ENTRY,
                "description": "kerascnn metadata (JSON): layout, channel order, normalization, "
                "quantization, source model and kerascnn version.",
                "type": tm.ASSOCIATED_FILE_TYPE["UNKNOWN"],
            }
        ],
        "min_parser_version": tm.MIN_PARSER_VERSION,
    }


def _tensor_range(dtype, quantization, mean=None, std=None, low=0.0, high=255.0) -> dict | None:
    """Stats (per-channel min/max in the tensor's own units) of values ``low..high`` normalized by
    mean/std and, for int8/uint8 tensors, quantized."""
    import numpy as np

    if mean is None:
        if dtype == "uint8":
            return {"min": [0.0], "max": [255.0]}
        if dtype == "int8":
            return {"min": [-128.0], "max": [127.0]}
        return None
    lo = (low - np.float32(mean)) / np.float32(std)
    hi = (high - np.float32(mean)) / np.float32(std)
    if quantization:
        info = np.iinfo(np.dtype(dtype))
        scale, zero = quantization["scale"], quantization["zero_point"]
        lo = np.clip(np.round(lo / np.float32(scale)) + zero, info.min, info.max)
        hi = np.clip(np.round(hi / np.float32(scale)) + zero, info.min, info.max)
    return {"min": [float(v) for v in lo], "max": [float(v) for v in hi]}


def _appended_zip(data: bytes) -> tuple[int, zipfile.ZipFile] | None:
    """(offset of the first local header, the archive) of a zip appended to ``data``, or None. Works for
    archives written with offsets relative to their start and with absolute offsets (Python's zipfile
    writes the latter when it appends, as the TFLite Metadata populator does)."""
    if not zipfile.is_zipfile(io.BytesIO(data)):
        return None
    try:
        zf = zipfile.ZipFile(io.BytesIO(data))
    except (zipfile.BadZipFile, OSError, ValueError):
        return None
    infos = zf.infolist()
    start = min((info.header_offset for info in infos), default=-1)
    if start <= 0 or data[start : start + 4] != b"PK\x03\x04":
        zf.close()
        return None
    return start, zf


def _zip_start(data: bytes) -> int | None:
    """Offset where an appended zip archive starts (its first local header), or None."""
    found = _appended_zip(data)
    if found is None:
        return None
    found[1].close()
    return found[0]


def strip_tflite_metadata(data: bytes) -> bytes:
    """The flatbuffer alone: ``data`` without its appended archive of associated files."""
    start = _zip_start(data)
    return data if start is None else data[:start]


def associated_files(data: bytes, where: str = "model") -> dict[str, bytes]:
    """The files packed after a ``.tflite`` flatbuffer (name -> bytes); empty when there are none."""
    found = _appended_zip(data)
    if found is None:
        return {}
    _, zf = found
    files = {}
    with zf:
        for info in zf.infolist():
            if info.file_size > MAX_ENTRY_BYTES:
                raise MetadataError(
                    f"{where}: the packed file {info.filename} is {info.file_size} bytes "
                    f"(more than {MAX_ENTRY_BYTES >> 20} MB); refusing to read it"
                )
            try:
                with zf.open(info) as entry:  # read at most the cap, whatever the header claims
                    content = entry.read(MAX_ENTRY_BYTES + 1)
            except (zipfile.BadZipFile, OSError, ValueError, EOFError, NotImplementedError) as e:
                raise MetadataError(
                    f"{where}: the packed file {info.filename} cannot be read ({e})"
                ) from None
            if len(content) > MAX_ENTRY_BYTES:
                raise MetadataError(
                    f"{where}: the packed file {info.filename} inflates to more than "
                    f"{MAX_ENTRY_BYTES >> 20} MB; refusing to read it"
                )
            files[info.filename] = content
    return files


def embed_tflite_metadata(flatbuffer: bytes, meta: ModelMetadata) -> bytes:
    """The TFLite model with ``meta`` as standard TFLite Metadata (the ``TFLITE_METADATA`` buffer) and its
    associated files, ``labels.txt`` and kerascnn's ``metadata.json``, in one stored (uncompressed) zip
    appended to the flatbuffer. Earlier metadata and files are replaced, never stacked; the model is
    re-serialized with its quantization vectors shared (:func:`kerascnn.export.tflite.compact`). Reproducible:
    the same model and metadata give the same bytes."""
    from . import tflite_metadata as tm
    from .tflite import compact

    flat = compact(strip_tflite_metadata(flatbuffer), {tm.METADATA_NAME: tm.encode(standard_metadata(meta))})
    buf = io.BytesIO()
    buf.write(flat)
    with zipfile.ZipFile(buf, "a", zipfile.ZIP_STORED) as zf:
        for name, text in ((LABELS_ENTRY, labels_txt(meta.labels)), (ZIP_ENTRY, meta.to_json())):
            entry = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))  # reproducible bytes
            zf.writestr(entry, text.encode("utf-8"), compress_type=zipfile.ZIP_STORED)
    return buf.getvalue()


def read_standard_metadata(path_or_bytes, where: str | None = None) -> dict | None:
    """The standard TFLite Metadata of a ``.tflite`` as a dict (:mod:`kerascnn.export.tflite_metadata`),
    or None."""
    from . import tflite_metadata as tm

    data = _read_bytes(path_or_bytes)
    if where is None:
        where = str(path_or_bytes) if not isinstance(path_or_bytes, (bytes, bytearray)) else "model"
    try:
        buffer = tm.model_metadata_buffer(strip_tflite_metadata(data))
    except Exception as e:  # noqa: BLE001 - any flatbuffer error: not a readable TFLite model
        raise MetadataError(f"{where}: not a readable TFLite flatbuffer ({type(e).__name__}: {e})") from None
    if buffer is None:
        return None
    try:
        return tm.decode(buffer)
    except tm.SchemaError as e:
        raise MetadataError(f"{where}: {e}") from None


def describe_standard(standard: dict, files: dict) -> str:
    """The standard TFLite Metadata in a few lines, as MediaPipe Tasks and ML Kit read it."""
    lines = [
        f"TFLite Metadata {standard.get('name', '?')} v{standard.get('version', '?')} by "
        f"{standard.get('author', '?')} (min parser {standard.get('min_parser_version', '?')})"
    ]
    from .tflite_metadata import COLOR_SPACE

    colors = {v: k for k, v in COLOR_SPACE.items()}
    for subgraph in standard.get("subgraph_metadata", []):
        for side, key in (("input", "input_tensor_metadata"), ("output", "output_tensor_metadata")):
            for tensor in subgraph.get(key, []):
                parts = [f"  {side:<6} {tensor.get('name', '?')}:"]
                content = tensor.get("content", {}).get("content_properties")
                if content and content[0] == "ImageProperties":
                    size = content[1].get("default_size", {})
                    parts.append(
                        f"image {colors.get(content[1].get('color_space', 0), '?')}"
                        + (f" {size.get('width')}x{size.get('height')}" if size else "")
                    )
                for unit in tensor.get("process_units", []):
                    kind, options = unit.get("options", ("?", {}))
                    if kind == "NormalizationOptions":
                        mean, std = _fmt(options.get("mean", [])), _fmt(options.get("std", []))
                        parts.append(f"normalize (x - {mean}) / {std}")
                    else:
                        parts.append(kind)
                stats = tensor.get("stats")
                if stats:
                    parts.append(f"range [{_fmt(stats.get('min', []))}, {_fmt(stats.get('max', []))}]")
                for f in tensor.get("associated_files", []):
                    count = len(read_labels_text(files[f["name"]])) if f["name"] in files else 0
                    missing = "" if f["name"] in files else " MISSING"
                    parts.append(
                        f"{f['name']} ({count} labels{missing})" if f.get("type") == 2 else f["name"]
                    )
                lines.append(" ".join(parts))
    packed = ", ".join(f"{name} ({len(data)} B)" for name, data in files.items())
    lines.append(f"  packed {packed or 'nothing'}")
    return "\n".join(lines)


def standard_metadata_json(value, key: str = ""):
    """The decoded standard metadata in the JSON form of the schema's own displayer (flatc's): a union
    as ``<name>_type`` (member name) and ``<name>``, enums by name."""
    from .tflite_metadata import ASSOCIATED_FILE_TYPE, COLOR_SPACE

    # enum fields by (table key, field): an associated file's "type", an image's "color_space"
    enums = {("content_properties", "color_space"): COLOR_SPACE}
    for files in ("associated_files", "vocab_file", "sentencePiece_model"):
        enums[files, "type"] = ASSOCIATED_FILE_TYPE
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            if isinstance(v, tuple):
                out[f"{k}_type"], out[k] = v[0], standard_metadata_json(v[1], k)
            elif (key, k) in enums and isinstance(v, int):
                out[k] = next((name for name, number in enums[key, k].items() if number == v), v)
            else:
                out[k] = standard_metadata_json(v, k)
        return out
    if isinstance(value, list):
        return [standard_metadata_json(v, key) for v in value]
    return value


def read_labels_text(data: bytes) -> list[str]:
    return [line.rstrip("\r") for line in data.decode("utf-8").split("\n") if line.strip()]


def _read_bytes(path_or_bytes) -> bytes:
    if isinstance(path_or_bytes, (bytes, bytearray)):
        return bytes(path_or_bytes)
    return Path(path_or_bytes).read_bytes()


def read_tflite_metadata(path) -> ModelMetadata | None:
    """kerascnn's metadata of a ``.tflite``: its packed ``metadata.json``; for a file made elsewhere
    (MediaPipe Model Maker, tflite_support) with only the standard metadata, built from that."""
    data = Path(path).read_bytes()
    files = associated_files(data, str(path))
    if ZIP_ENTRY in files:
        try:
            raw = json.loads(files[ZIP_ENTRY])
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise MetadataError(f"{path}: the embedded {ZIP_ENTRY} cannot be read ({e})") from None
        if not isinstance(raw, dict):
            raise MetadataError(f"{path}: the embedded {ZIP_ENTRY} is not a JSON object")
        return ModelMetadata.from_dict(raw, str(path))
    standard = read_standard_metadata(data, str(path))
    if standard is None:
        return None
    return from_standard_metadata(standard, files, data, str(path))


def from_standard_metadata(standard: dict, files: dict, flatbuffer: bytes, where: str) -> ModelMetadata:
    """kerascnn's view of a model that carries only the standard metadata (normalization, labels)."""
    from .tflite import io_details

    try:
        subgraph = standard["subgraph_metadata"][0]
        image, scores = subgraph["input_tensor_metadata"][0], subgraph["output_tensor_metadata"][0]
    except (KeyError, IndexError):
        raise MetadataError(f"{where}: its TFLite Metadata describes no input and output tensor") from None
    norm = next(
        (
            u["options"][1]
            for u in image.get("process_units", [])
            if u.get("options", ("",))[0] == "NormalizationOptions"
        ),
        {},
    )
    label_file = next((f["name"] for f in scores.get("associated_files", []) if f.get("type") == 2), None)
    if label_file is None or label_file not in files:
        raise MetadataError(f"{where}: its TFLite Metadata has no labels file (TENSOR_AXIS_LABELS)")
    labels = read_labels_text(files[label_file])
    details = io_details(strip_tflite_metadata(flatbuffer))
    shape = details.pop("input_shape")
    if len(shape) != 4:
        raise MetadataError(f"{where}: input of shape {shape}, expected one image (1, H, W, C)")
    content = image.get("content", {}).get("content_properties", ("", {}))
    color = content[1].get("color_space") if content[0] == "ImageProperties" else None
    from .tflite_metadata import COLOR_SPACE

    if color in (COLOR_SPACE["RGB"], COLOR_SPACE["GRAYSCALE"]) and (color == COLOR_SPACE["RGB"]) != (
        shape[3] == 3
    ):
        raise MetadataError(
            f"{where}: its TFLite Metadata says {'RGB' if color == COLOR_SPACE['RGB'] else 'GRAYSCALE'} "
            f"but the input tensor has {shape[3]} channel(s)"
        )
    meta = ModelMetadata(
        model_name=standard.get("name") or Path(where).stem,
        labels=labels,
        input_size=[int(shape[1]), int(shape[2])],
        channels=int(shape[3]),
        mean=norm.get("mean") or [0.0],
        std=norm.get("std") or [1.0],
        output="logits" if "logit" in scores.get("name", "").lower() else "probabilities",
        format="tflite",
        source=where,
    )
    for key, value in details.items():
        setattr(meta, key, value)
    return meta


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
    """The metadata of any exported file: embedded for .tflite/.onnx, the sidecar for Keras files.
    Whatever is wrong with the file (truncated, not a model, mistyped metadata) is a MetadataError that
    names it."""
    try:
        return _read_metadata(Path(path))
    except MetadataError:
        raise
    except Exception as e:  # noqa: BLE001 - a parser's own error on a damaged file
        if isinstance(e, OSError) and not Path(path).is_file():
            raise MetadataError(f"{path}: cannot be read ({e.strerror or e})") from None
        raise MetadataError(f"{path}: not a readable model file ({type(e).__name__}: {e})") from None


def _read_metadata(path: Path) -> ModelMetadata | None:
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
