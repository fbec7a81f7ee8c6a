"""The standard TFLite Metadata (``metadata_schema.fbs``, file identifier ``M001``) that MediaPipe Tasks,
ML Kit and Android Studio's ML Model Binding read from a ``.tflite``: encoded and decoded from plain
dicts with the ``flatbuffers`` runtime, table by table as the schema declares them.

Only the tables an image classifier needs are declared (their fields in schema order: a field's slot is
its position, a union takes two slots, ``<name>_type`` then the value). Reading tables of the schema that
are not declared here is not needed: a field this module does not know is skipped, as any FlatBuffers
reader skips fields newer than its schema. The generated Python of the schema ships only with
``mediapipe`` (an optional dependency here), so the writer cannot rely on it; the tests read every
exported file back with that generated reader.

A model carries the encoded table as the buffer of its ``Model.metadata`` entry named
``TFLITE_METADATA``, and the files the metadata names (labels, kerascnn's JSON) in an uncompressed ZIP
archive appended to the flatbuffer, which is how the schema's own ``MetadataPopulator`` packs them.
"""

from __future__ import annotations

import struct

import flatbuffers
import numpy as np
from flatbuffers import number_types as N
from flatbuffers.table import Table

from kerascnn.errors import KerascnnError

FILE_IDENTIFIER = b"M001"
METADATA_NAME = "TFLITE_METADATA"
# The fields used here all exist since the schema's first version, so readers from 1.0.0 on parse it
# (mediapipe/tasks/cc/metadata/metadata_version.cc raises the version only for later members).
MIN_PARSER_VERSION = "1.0.0"

# enums
ASSOCIATED_FILE_TYPE = {
    "UNKNOWN": 0,
    "DESCRIPTIONS": 1,
    "TENSOR_AXIS_LABELS": 2,
    "TENSOR_VALUE_LABELS": 3,
    "TENSOR_AXIS_SCORE_CALIBRATION": 4,
    "VOCABULARY": 5,
    "SCANN_INDEX_FILE": 6,
}
COLOR_SPACE = {"UNKNOWN": 0, "RGB": 1, "GRAYSCALE": 2}

# unions: member tables in declaration order (type value = index + 1; 0 is NONE)
UNIONS = {
    "ContentProperties": ("FeatureProperties", "ImageProperties", "BoundingBoxProperties", "AudioProperties"),
    "ProcessUnitOptions": (
        "NormalizationOptions",
        "ScoreCalibrationOptions",
        "ScoreThresholdingOptions",
        "BertTokenizerOptions",
        "SentencePieceTokenizerOptions",
        "RegexTokenizerOptions",
    ),
}

# tables: (field, kind) in schema order. kinds: str, [str], [float], [uint], byte, ubyte, int, uint, float,
# a table name, [table name], union:<Union> (the slot before it holds the union's type).
TABLES: dict[str, tuple[tuple[str, str], ...]] = {
    "ModelMetadata": (
        ("name", "str"),
        ("description", "str"),
        ("version", "str"),
        ("subgraph_metadata", "[SubGraphMetadata]"),
        ("author", "str"),
        ("license", "str"),
        ("associated_files", "[AssociatedFile]"),
        ("min_parser_version", "str"),
    ),
    "SubGraphMetadata": (
        ("name", "str"),
        ("description", "str"),
        ("input_tensor_metadata", "[TensorMetadata]"),
        ("output_tensor_metadata", "[TensorMetadata]"),
        ("associated_files", "[AssociatedFile]"),
        ("input_process_units", "[ProcessUnit]"),
        ("output_process_units", "[ProcessUnit]"),
    ),
    "TensorMetadata": (
        ("name", "str"),
        ("description", "str"),
        ("dimension_names", "[str]"),
        ("content", "Content"),
        ("process_units", "[ProcessUnit]"),
        ("stats", "Stats"),
        ("associated_files", "[AssociatedFile]"),
    ),
    "Content": (
        ("content_properties_type", "ubyte"),
        ("content_properties", "union:ContentProperties"),
        ("range", "ValueRange"),
    ),
    "FeatureProperties": (),
    "ImageProperties": (("color_space", "byte"), ("default_size", "ImageSize")),
    "ImageSize": (("width", "uint"), ("height", "uint")),
    "BoundingBoxProperties": (("index", "[uint]"), ("type", "byte"), ("coordinate_type", "byte")),
    "AudioProperties": (("sample_rate", "uint"), ("channels", "uint")),
    "ValueRange": (("min", "int"), ("max", "int")),
    "ProcessUnit": (("options_type", "ubyte"), ("options", "union:ProcessUnitOptions")),
    "NormalizationOptions": (("mean", "[float]"), ("std", "[float]")),
    "ScoreCalibrationOptions": (("score_transformation", "byte"), ("default_score", "float")),
    "ScoreThresholdingOptions": (("global_score_threshold", "float"),),
    "BertTokenizerOptions": (("vocab_file", "[AssociatedFile]"),),
    "SentencePieceTokenizerOptions": (
        ("sentencePiece_model", "[AssociatedFile]"),
        ("vocab_file", "[AssociatedFile]"),
    ),
    "RegexTokenizerOptions": (("delim_regex_pattern", "str"), ("vocab_file", "[AssociatedFile]")),
    "Stats": (("max", "[float]"), ("min", "[float]")),
    "AssociatedFile": (
        ("name", "str"),
        ("description", "str"),
        ("type", "byte"),
        ("locale", "str"),
        ("version", "str"),
    ),
}

_SCALARS = {
    "byte": (N.Int8Flags, "PrependInt8Slot"),
    "ubyte": (N.Uint8Flags, "PrependUint8Slot"),
    "int": (N.Int32Flags, "PrependInt32Slot"),
    "uint": (N.Uint32Flags, "PrependUint32Slot"),
    "float": (N.Float32Flags, "PrependFloat32Slot"),
}
_NUMERIC_VECTORS = {"[float]": ("<f4", N.Float32Flags), "[uint]": ("<u4", N.Uint32Flags)}


class SchemaError(KerascnnError, ValueError):
    """A metadata dict that does not fit the schema, or a buffer that is not TFLite Metadata."""


def _offsets_vector(builder, offsets) -> int:
    builder.StartVector(4, len(offsets), 4)
    for offset in reversed(offsets):
        builder.PrependUOffsetTRelative(offset)
    return builder.EndVector()


def _encode(builder, table: str, obj: dict) -> int:
    fields = TABLES[table]
    unknown = set(obj) - {name for name, _ in fields}
    if unknown:
        raise SchemaError(f"{table} has no field(s) {', '.join(sorted(unknown))}")
    offsets, scalars = {}, {}
    for slot, (name, kind) in enumerate(fields):
        value = obj.get(name)
        if value is None:
            continue
        if kind == "str":
            offsets[slot] = builder.CreateString(str(value))
        elif kind == "[str]":
            offsets[slot] = _offsets_vector(builder, [builder.CreateString(str(v)) for v in value])
        elif kind in _NUMERIC_VECTORS:
            offsets[slot] = builder.CreateNumpyVector(np.asarray(value, _NUMERIC_VECTORS[kind][0]))
        elif kind.startswith("union:"):
            member, content = value
            members = UNIONS[kind[6:]]
            if member not in members:
                raise SchemaError(f"{table}.{name}: {member} is not a member of {kind[6:]}")
            offsets[slot] = _encode(builder, member, content)
            scalars[slot - 1] = members.index(member) + 1  # the <name>_type slot
        elif kind.startswith("["):
            offsets[slot] = _offsets_vector(builder, [_encode(builder, kind[1:-1], v) for v in value])
        elif kind in TABLES:
            offsets[slot] = _encode(builder, kind, value)
        elif slot not in scalars:
            scalars[slot] = value
    builder.StartObject(len(fields))
    for slot, (_, kind) in enumerate(fields):
        if slot in offsets:
            builder.PrependUOffsetTRelativeSlot(slot, offsets[slot], 0)
        elif slot in scalars:
            getattr(builder, _SCALARS[kind][1])(slot, scalars[slot], 0)
    return builder.EndObject()


def encode(metadata: dict) -> bytes:
    """A ``ModelMetadata`` dict -> the metadata flatbuffer (identifier ``M001``), byte-reproducible.
    Unions are ``(member table name, dict)``; the ``<name>_type`` fields are filled in from them."""
    builder = flatbuffers.Builder(1024)
    builder.Finish(_encode(builder, "ModelMetadata", metadata), FILE_IDENTIFIER)
    return bytes(builder.Output())


def _decode(buf, pos: int, table: str) -> dict:
    t = Table(buf, pos)
    out: dict = {}
    types: dict[int, int] = {}
    for slot, (name, kind) in enumerate(TABLES[table]):
        o = t.Offset(4 + 2 * slot)
        if not o:
            continue
        if kind == "str":
            out[name] = t.String(o + t.Pos).decode("utf-8")
        elif kind == "[str]":
            start = t.Vector(o)
            out[name] = [t.String(start + 4 * i).decode("utf-8") for i in range(t.VectorLen(o))]
        elif kind in _NUMERIC_VECTORS:
            out[name] = t.GetVectorAsNumpy(_NUMERIC_VECTORS[kind][1], o).tolist()
        elif kind.startswith("union:"):
            members = UNIONS[kind[6:]]
            member = types.get(slot - 1, 0)
            if 1 <= member <= len(members):
                out[name] = (members[member - 1], _decode(buf, t.Indirect(o + t.Pos), members[member - 1]))
        elif kind.startswith("["):
            start = t.Vector(o)
            out[name] = [_decode(buf, t.Indirect(start + 4 * i), kind[1:-1]) for i in range(t.VectorLen(o))]
        elif kind in TABLES:
            out[name] = _decode(buf, t.Indirect(o + t.Pos), kind)
        else:
            value = t.Get(_SCALARS[kind][0], o + t.Pos)
            types[slot] = value
            if not name.endswith("_type"):
                out[name] = value
    return out


def decode(data: bytes) -> dict:
    """The metadata flatbuffer -> a ``ModelMetadata`` dict (unions as ``(member, dict)``)."""
    data = bytes(data)
    if len(data) < 8 or data[4:8] != FILE_IDENTIFIER:
        raise SchemaError("not a TFLite Metadata buffer (file identifier M001 missing)")
    try:
        root = flatbuffers.encode.Get(N.UOffsetTFlags.packer_type, data, 0)
        return _decode(data, root, "ModelMetadata")
    except (IndexError, UnicodeDecodeError, ValueError, struct.error) as e:
        raise SchemaError(f"malformed TFLite Metadata buffer ({e})") from None


def model_metadata_buffer(flatbuffer: bytes, name: str = METADATA_NAME) -> bytes | None:
    """The bytes of the TFLite model's ``Model.metadata`` entry called ``name`` (None when absent)."""
    from ai_edge_litert import schema_py_generated as schema

    model = schema.Model.GetRootAs(flatbuffer, 0)
    for i in range(model.MetadataLength()):
        entry = model.Metadata(i)
        if entry.Name() is not None and entry.Name().decode("utf-8") == name:
            buffer = model.Buffers(entry.Buffer())
            if buffer is None:
                return None
            if buffer.Offset() > 1:  # a model over 2 GB keeps buffers after the flatbuffer
                return bytes(flatbuffer[buffer.Offset() : buffer.Offset() + buffer.Size()])
            return buffer.DataAsNumpy().tobytes() if buffer.DataLength() else None
    return None
