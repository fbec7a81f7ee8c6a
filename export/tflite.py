"""Keras model -> TFLite flatbuffer, builtin ops only (the phone runtime has no Flex delegate).

The path is the one TensorFlow documents for Keras 3: ``keras.export.ExportArchive`` -> SavedModel ->
``TFLiteConverter.from_saved_model``. (``from_concrete_functions(..., trackable_obj=...)`` converts
silently to wrong numbers on TF 2.21, so it is never used.)
"""

from __future__ import annotations

import contextlib
import re
import types
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np

from kerascnn.errors import KerascnnError
from kerascnn.keras_internals import input_signature

from .formats import IO_TYPES

QUANTIZE_MODES = ("none", "dynamic", "float16", "int8", "int16x8")


class ConversionError(KerascnnError, RuntimeError):
    """The model cannot be converted with builtin ops; the message names the layer(s) and op(s)."""


PHONE_BATCH = 1  # the batch of every .tflite unless --dynamic-batch: a fixed shape, as phones expect


def write_saved_model(model, folder, batch: int | None = PHONE_BATCH) -> str:
    """The model's inference function (training=False) as a SavedModel with a ``serve`` endpoint, its
    input batch fixed at ``batch`` (None: free).

    A fixed batch is what the phone runtimes expect (the MobileNets of TF Hub, MediaPipe and ML Kit have
    a batch of 1): with a free batch, a ``Reshape`` or ``Flatten`` converts to SHAPE, STRIDED_SLICE, PACK
    and a RESHAPE whose shape is computed at run time, which the GPU delegate and NNAPI reject (the graph
    is split, and every frame crosses between GPU and CPU memory). With it, every shape is a constant."""
    import functools

    import keras

    folder = str(folder)
    archive = keras.export.ExportArchive()
    archive.track(model)
    signature = input_signature(model)
    if not isinstance(signature, (list, tuple)):
        signature = [signature]
    if batch is not None:
        signature = [_with_batch(spec, batch) for spec in signature]
    archive.add_endpoint(
        "serve", functools.partial(model.__call__, training=False), input_signature=signature
    )
    from kerascnn.quiet import native_quiet

    with native_quiet():
        archive.write_out(folder, verbose=False)
    return folder


def _with_batch(spec, batch: int):
    """An input spec (a Keras InputSpec or a tf.TensorSpec; a nested structure of them) at ``batch``."""
    import tensorflow as tf

    if isinstance(spec, dict):
        return {k: _with_batch(v, batch) for k, v in spec.items()}
    if isinstance(spec, (list, tuple)):
        return type(spec)(_with_batch(v, batch) for v in spec)
    shape = tuple(spec.shape)
    return tf.TensorSpec((batch, *shape[1:]), spec.dtype or "float32", name=getattr(spec, "name", None))


def static_batch(interpreter) -> int | None:
    """The fixed batch of a LiteRT interpreter's first input (None when the file's batch is free)."""
    details = interpreter.get_input_details()[0]
    signature = details.get("shape_signature")
    if signature is not None and len(signature) and int(signature[0]) == -1:
        return None
    return int(details["shape"][0]) if len(details["shape"]) else None


@contextlib.contextmanager
def no_debug_info_reload():
    """Inside it, a SavedModel converter's ``convert()`` does not load the whole SavedModel a second time.

    TF 2.21's ``TFLiteSavedModelConverterV2.convert()`` calls ``tf.saved_model.load`` (every function
    and variable, again: ``from_saved_model`` already did) only to read the ``graph_debug_info`` of the
    loaded object, which is the SavedModel's debug file, empty when the SavedModel was saved without
    ``save_debug_info`` (as every SavedModel kerascnn writes). Inside this block that load returns the
    same empty debug info without loading: a third less conversion time (MobileNetV2 at 32x32: 4.5 s ->
    3.3 s), byte-identical files (tests/export/test_export.py). A SavedModel that has a debug file, or
    a TensorFlow without the private ``lite._load``, converts as before."""
    from tensorflow.lite.python import lite

    real = getattr(lite, "_load", None)
    if real is None:
        yield
        return

    def load(export_dir, tags=None, *args, **kwargs):
        if Path(export_dir, "debug", "saved_model_debug_info.pb").exists():
            return real(export_dir, tags, *args, **kwargs)
        from tensorflow.core.framework import graph_debug_info_pb2

        return types.SimpleNamespace(graph_debug_info=graph_debug_info_pb2.GraphDebugInfo())

    lite._load = load  # noqa: SLF001 - convert() reads this module global; restored below
    try:
        yield
    finally:
        lite._load = real  # noqa: SLF001


_OP_RE = re.compile(r"'(tf\.[A-Za-z0-9_]+)' op is neither a custom op nor a flex op")


def _explain(error: Exception, layer_names: Iterable[str]) -> str:
    text = str(error)
    ops = sorted(set(_OP_RE.findall(text)))
    # The converter's locations carry the Keras layer path: "model_1/my_layer_1/op/OpName@__inference...".
    names = set(layer_names)
    found = set()
    for path in re.findall(r'"([^"@]+/[^"@]+)@__inference', text):
        parts = path.split("/")
        if len(parts) > 2:
            segment = parts[1]
            found |= {c for c in (segment, re.sub(r"_\d+$", "", segment)) if c in names}
    found = sorted(found)
    if ops:
        where = f" in layer(s) {', '.join(found)}" if found else ""
        return (
            f"op(s) {', '.join(op[3:] for op in ops)}{where} have no TFLite builtin kernel "
            "(Flex/SELECT_TF_OPS is not used: phones lack it); replace the layer or move the "
            "computation out of the model"
        )
    first = next((line for line in text.splitlines() if "error" in line.lower()), text.splitlines()[0])
    return f"the TFLite converter failed: {first.strip()}"


def convert(
    saved_model_dir,
    quantize: str = "none",
    representative: Callable[[], Iterable] | None = None,
    io_type: str = "float32",
    layer_names: Iterable[str] = (),
    per_tensor: bool = False,
) -> bytes:
    """Convert a SavedModel to a TFLite flatbuffer.

    ``quantize``: none (float32), dynamic (int8 weights, float activations), float16 (float16 weights),
    int8 (full integer: per-channel int8 weights, int8 activations calibrated on ``representative``,
    a callable returning an iterable of ``[batch]`` lists), int16x8 (int8 weights, int16 activations,
    calibrated the same way; float input/output; an op without a 16x8 kernel stays in float).
    ``io_type`` (int8 only): the input/output tensor type; int8/uint8 lets a phone feed camera bytes
    after one affine map. ``per_tensor``: one scale per weight tensor instead of one per output channel
    (DSPs and NPUs without per-channel kernels), for the quantized modes.
    """
    import tensorflow as tf

    if quantize not in QUANTIZE_MODES:
        raise ValueError(f"--quantize: unknown mode '{quantize}' (choose from {', '.join(QUANTIZE_MODES)})")
    if io_type not in IO_TYPES:
        raise ValueError(f"--io-type: unknown type '{io_type}' (choose from {', '.join(IO_TYPES)})")
    converter = tf.lite.TFLiteConverter.from_saved_model(str(saved_model_dir))
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    if quantize != "none":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if quantize == "float16":
        converter.target_spec.supported_types = [tf.float16]
    if per_tensor:
        converter._experimental_disable_per_channel = True  # noqa: SLF001 - the converter's only switch
    if quantize in ("int8", "int16x8"):
        if representative is None:
            raise ValueError(f"{quantize} quantization needs calibration data (--calibration-data)")
        converter.representative_dataset = representative
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    if quantize == "int16x8":
        converter.target_spec.supported_ops = [
            tf.lite.OpsSet.EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8,
            tf.lite.OpsSet.TFLITE_BUILTINS,
        ]
    elif quantize == "int8":
        if io_type != "float32":
            converter.inference_input_type = getattr(tf, io_type)
            converter.inference_output_type = getattr(tf, io_type)
    from kerascnn.quiet import native_quiet

    try:
        with native_quiet(), no_debug_info_reload():
            return bytes(converter.convert())
    except Exception as e:  # noqa: BLE001 - ConverterError and friends: explain with the layer names
        raise ConversionError(_explain(e, layer_names)) from e


def compact(flatbuffer: bytes, metadata: dict[str, bytes] | None = None) -> bytes:
    """The same model, re-serialized with identical quantization vectors stored once; ``metadata`` sets
    (or replaces) ``Model.metadata`` entries, each name -> the bytes of its buffer (``TFLITE_METADATA``).

    Per-channel int8 stores, for every weight and bias tensor, a float scale and an int64 zero point
    per output channel. The zero points are all 0 and a kernel and its bias have the same channel
    count, so the converter writes the same vectors hundreds of times (about 6% of an int8 MobileNetV2).
    FlatBuffers lets tables share a vector: each distinct vector is written once and referenced
    wherever it occurs. Every tensor, operator, buffer, signature and metadata entry is kept as it
    is (outputs are bit-identical, tested); buffer data stays 16-byte aligned for mmap and SIMD loads.
    """
    from ai_edge_litert import schema_py_generated as schema
    from ai_edge_litert.tools import flatbuffer_utils

    model = flatbuffer_utils.read_model_from_bytearray(bytearray(flatbuffer))
    vectors: dict = {}
    for subgraph in model.subgraphs or ():
        for tensor in subgraph.tensors or ():
            if tensor.quantization is not None:
                tensor.quantization = _SharedQuantization(tensor.quantization, vectors, schema)
    for name, data in (metadata or {}).items():
        _set_metadata(model, name, data, schema)
    model.buffers = [_AlignedBuffer(b, schema) for b in model.buffers or ()]
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))


def _set_metadata(model, name: str, data: bytes, schema):
    """Point the ``Model.metadata`` entry ``name`` at a buffer holding ``data`` (as the TFLite Metadata
    populator does: an existing entry's buffer is replaced, a new entry gets a new last buffer)."""
    buffer = schema.BufferT()
    buffer.data = np.frombuffer(data, np.uint8)
    model.buffers = list(model.buffers or [])
    model.metadata = list(model.metadata or [])
    for entry in model.metadata:
        entry_name = entry.name.decode("utf-8") if isinstance(entry.name, bytes) else entry.name
        if entry_name == name:
            model.buffers[entry.buffer] = buffer
            return
    entry = schema.MetadataT()
    entry.name = name
    entry.buffer = len(model.buffers)
    model.buffers.append(buffer)
    model.metadata.append(entry)


class _SharedQuantization:
    """Packs a ``QuantizationParametersT`` reusing already-written vectors with the same content."""

    def __init__(self, params, vectors: dict, schema):
        self.params, self.vectors, self.schema = params, vectors, schema

    def _vector(self, builder, values, dtype):
        if values is None:
            return None
        array = np.asarray(values, dtype=dtype).reshape(-1)
        key = (array.dtype.str, array.tobytes())
        if key not in self.vectors:
            self.vectors[key] = builder.CreateNumpyVector(array)
        return self.vectors[key]

    def Pack(self, builder):  # noqa: N802 - the FlatBuffers object-API name
        q, s = self.params, self.schema
        fields = (
            (s.QuantizationParametersAddMin, self._vector(builder, q.min, "<f4")),
            (s.QuantizationParametersAddMax, self._vector(builder, q.max, "<f4")),
            (s.QuantizationParametersAddScale, self._vector(builder, q.scale, "<f4")),
            (s.QuantizationParametersAddZeroPoint, self._vector(builder, q.zeroPoint, "<i8")),
        )
        details = q.details.Pack(builder) if q.details is not None else None
        s.QuantizationParametersStart(builder)
        for add, offset in fields:
            if offset is not None:
                add(builder, offset)
        s.QuantizationParametersAddDetailsType(builder, q.detailsType)
        if details is not None:
            s.QuantizationParametersAddDetails(builder, details)
        s.QuantizationParametersAddQuantizedDimension(builder, q.quantizedDimension)
        return s.QuantizationParametersEnd(builder)


class _AlignedBuffer:
    """Packs a ``BufferT`` with its bytes 16-byte aligned, as the converter's ``force_align: 16``."""

    def __init__(self, buffer, schema):
        self.buffer, self.schema = buffer, schema

    def Pack(self, builder):  # noqa: N802 - the FlatBuffers object-API name
        b, s = self.buffer, self.schema
        data = None
        if b.data is not None and len(b.data):
            payload = np.asarray(b.data, dtype=np.uint8).tobytes()
            builder.StartVector(1, len(payload), 16)
            builder.head -= len(payload)
            builder.Bytes[builder.head : builder.head + len(payload)] = payload
            builder.vectorNumElems = len(payload)
            data = builder.EndVector()
        s.BufferStart(builder)
        if data is not None:
            s.BufferAddData(builder, data)
        s.BufferAddOffset(builder, b.offset)
        s.BufferAddSize(builder, b.size)
        return s.BufferEnd(builder)


def representative_from(images: np.ndarray, normalize, steps: int) -> Callable[[], Iterable]:
    """A representative dataset of ``steps`` single images (0-255 pixels), through ``normalize``."""
    take = images[:steps]

    def gen():
        for i in range(len(take)):
            yield [normalize(take[i : i + 1])]

    return gen


def io_details(data: bytes) -> dict:
    """dtype and (scale, zero_point) of the first input and output of a TFLite flatbuffer, and the
    input's shape."""
    from ai_edge_litert.interpreter import Interpreter

    from kerascnn.quiet import native_quiet

    with native_quiet():
        interpreter = Interpreter(model_content=data)
    result = {}
    for key, details in (
        ("input", interpreter.get_input_details()[0]),
        ("output", interpreter.get_output_details()[0]),
    ):
        dtype = np.dtype(details["dtype"]).name
        scale, zero = details["quantization"]
        result[f"{key}_dtype"] = dtype
        result[f"{key}_quantization"] = (
            {"scale": float(scale), "zero_point": int(zero)} if dtype in ("int8", "uint8") else None
        )
    result["input_shape"] = [int(v) for v in interpreter.get_input_details()[0]["shape"]]
    return result


def builtin_op_names(path_or_bytes) -> list[str]:
    """The builtin operator names used by a TFLite model (to check no Flex/custom op slipped in)."""
    from tensorflow.lite.python import schema_py_generated as schema

    data = (
        Path(path_or_bytes).read_bytes()
        if not isinstance(path_or_bytes, (bytes, bytearray))
        else path_or_bytes
    )
    model = schema.Model.GetRootAsModel(data, 0)
    names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    ops = []
    for i in range(model.OperatorCodesLength()):
        code = model.OperatorCodes(i)
        builtin = max(code.BuiltinCode(), code.DeprecatedBuiltinCode())
        if builtin == schema.BuiltinOperator.CUSTOM:
            ops.append(f"CUSTOM:{code.CustomCode().decode()}")
        else:
            ops.append(names.get(builtin, str(builtin)))
    return sorted(set(ops))


def keras_layers_of(tensor_name: str, layer_names) -> list[str]:
    """The Keras layers whose computation a TFLite tensor's name records, in the model's order.

    The converter names an op's output after the TF ops fused into it, ';'-joined, each a path such as
    ``resnet20_1/stage1_block1_bn1_1/FusedBatchNormV3`` (model, layer call with a ``_N`` suffix, op)."""
    order = {name: i for i, name in enumerate(layer_names)}
    found = set()
    for part in tensor_name.split(";"):
        for segment in part.split("/")[1:-1] or part.split("/")[:1]:
            for candidate in (segment, re.sub(r"_\d+$", "", segment)):
                if candidate in order:
                    found.add(candidate)
                    break
    return sorted(found, key=order.get)


_IO_OPS = ("QUANTIZE", "DEQUANTIZE")


def float_ops(model_content: bytes) -> list[tuple[str, str]]:
    """(op, tensor name) of the ops that compute in float; QUANTIZE/DEQUANTIZE at the float model
    input/output are not counted."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=model_content)
    tensors = {t["index"]: t for t in interpreter.get_tensor_details()}
    found = []
    for op in interpreter._get_ops_details():
        if op["op_name"] in _IO_OPS:
            continue
        for index in [*op["inputs"], *op["outputs"]]:
            tensor = tensors.get(int(index))
            if tensor is not None and tensor["dtype"] in (np.float32, np.float16):
                found.append((op["op_name"], tensor["name"]))
                break
    return found


def run_tflite(model_content: bytes | str | Path, images: np.ndarray, batch: int = 32) -> np.ndarray:
    """Float outputs of a TFLite model (any io type) for float model inputs, with ai_edge_litert."""
    from ai_edge_litert.interpreter import Interpreter

    if isinstance(model_content, str | Path):
        model_content = Path(model_content).read_bytes()
    interpreter = Interpreter(model_content=model_content, num_threads=2)
    fixed = static_batch(interpreter)  # a phone file: fed its own batch (1) at a time, never resized
    interpreter.allocate_tensors()

    def run(x):
        inp = interpreter.get_input_details()[0]
        if fixed is None and len(x) != inp["shape"][0]:
            interpreter.resize_tensor_input(inp["index"], [len(x), *inp["shape"][1:]])
            interpreter.allocate_tensors()
            inp = interpreter.get_input_details()[0]
        out = interpreter.get_output_details()[0]
        if inp["dtype"] != np.float32:
            scale, zero = inp["quantization"]
            info = np.iinfo(inp["dtype"])
            x = np.clip(np.round(x / scale + zero), info.min, info.max).astype(inp["dtype"])
        interpreter.set_tensor(inp["index"], x.astype(inp["dtype"]))
        interpreter.invoke()
        y = interpreter.get_tensor(out["index"])
        if out["dtype"] != np.float32:
            scale, zero = out["quantization"]
            y = (y.astype(np.float32) - zero) * scale
        return y.astype(np.float32)

    return in_chunks(run, images, fixed or batch, pad=fixed is not None)


def in_chunks(run, x: np.ndarray, n: int, pad: bool = True) -> np.ndarray:
    """``run`` on ``x`` in chunks of ``n`` images; with ``pad`` (a file with a fixed batch, as phone files
    have: 1) the last chunk is padded with copies of its last image and the padding's outputs dropped."""
    chunks = []
    for start in range(0, len(x), n):
        part = x[start : start + n]
        if pad and len(part) < n:
            part = np.concatenate([part, np.repeat(part[-1:], n - len(part), 0)])
        chunks.append(run(part)[: len(x) - start])
    return np.concatenate(chunks)


def tflite_int8_sparsity(model_content: bytes) -> dict:
    """Zeros among the int8 weights of the CONV_2D / FULLY_CONNECTED ops of a TFLite model."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=model_content)
    weight_indices = set()
    for op in interpreter._get_ops_details():
        if op["op_name"] in ("CONV_2D", "FULLY_CONNECTED") and len(op["inputs"]) > 1:
            weight_indices.add(int(op["inputs"][1]))
    zeros = total = 0
    for detail in interpreter.get_tensor_details():
        if detail["index"] in weight_indices and detail["dtype"] == np.int8:
            values = interpreter.get_tensor(detail["index"])
            zeros += int(np.count_nonzero(values == 0))
            total += int(values.size)
    return {"sparsity": zeros / total if total else 0.0, "zeros": zeros, "weights": total}
