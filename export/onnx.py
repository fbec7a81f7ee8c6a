"""Keras model -> ONNX (Keras' own ``export(format="onnx")``, which wraps tf2onnx), and an int8 TFLite
flatbuffer -> quantized ONNX (tf2onnx's TFLite front end, QuantizeLinear/DequantizeLinear pairs)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from kerascnn.errors import KerascnnError
from kerascnn.keras_internals import patch_tf2onnx, was_called
from kerascnn.quiet import native_quiet

DEFAULT_OPSET = 17


class OnnxExportError(KerascnnError, RuntimeError):
    pass


def keras_to_onnx(model, opset: int = DEFAULT_OPSET):
    """The float ONNX ``ModelProto`` of a Keras model (NHWC input, dynamic batch)."""
    import numpy as np
    import onnx

    if not was_called(model) and len(model.inputs) == 1:
        # Keras' exporter takes only a model that has run once (a model just loaded or flattened has not)
        shape = tuple(1 if d is None else d for d in model.inputs[0].shape)
        model(np.zeros(shape, np.float32), training=False)
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "model.onnx")
        try:
            with native_quiet():
                model.export(path, format="onnx", opset_version=opset, verbose=False)
        except Exception as e:  # noqa: BLE001
            raise OnnxExportError(f"tf2onnx could not convert '{model.name}': {type(e).__name__}: {e}") from e
        return onnx.load(path)


def tflite_to_onnx(tflite_path, opset: int = DEFAULT_OPSET):
    """The ONNX ``ModelProto`` of a (quantized) TFLite file, via tf2onnx's TFLite front end."""
    import tf2onnx

    from .metadata import strip_tflite_metadata

    patch_tf2onnx()  # numpy 2 compatibility, as Keras does before calling tf2onnx
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "model.tflite"
        src.write_bytes(strip_tflite_metadata(Path(tflite_path).read_bytes()))
        try:
            with native_quiet():
                proto, _ = tf2onnx.convert.from_tflite(str(src), opset=opset)
        except Exception as e:  # noqa: BLE001
            raise OnnxExportError(f"tf2onnx could not convert {tflite_path}: {type(e).__name__}: {e}") from e
    return free_batch(proto)


def free_batch(proto, name: str = "batch"):
    """``proto`` with a free batch when it was converted from a phone file (a fixed batch of 1): the
    input's and output's first dimension named ``name``, the constant shapes of its Reshapes given -1
    for that 1, the intermediate shapes tf2onnx recorded dropped (onnxruntime infers them). Kept only
    if onnxruntime then gives, for a batch of 3 random inputs, what the fixed file gives for each alone
    (to 1e-5); else ``proto`` unchanged (its batch stays 1, which the runtimes feed image by image)."""
    import numpy as np
    import onnx
    import onnxruntime as ort
    from onnx import numpy_helper

    graph = proto.graph
    dims = [v.type.tensor_type.shape.dim for v in (*graph.input, *graph.output)]
    if not dims or any(not d or d[0].dim_value != 1 for d in dims):
        return proto
    free = onnx.ModelProto()
    free.CopyFrom(proto)
    for value in (*free.graph.input, *free.graph.output):
        value.type.tensor_type.shape.dim[0].dim_param = name
    del free.graph.value_info[:]
    inits = {init.name: init for init in free.graph.initializer}
    for node in free.graph.node:
        if node.op_type == "Reshape" and node.input[1] in inits:
            shape = numpy_helper.to_array(inits[node.input[1]])
            if shape.ndim == 1 and len(shape) and shape[0] == 1:
                freed = np.concatenate([[-1], shape[1:]]).astype(shape.dtype)
                inits[node.input[1]].CopyFrom(numpy_helper.from_array(freed, node.input[1]))
    try:
        spec = graph.input[0].type.tensor_type
        shape = [d.dim_value for d in spec.shape.dim]
        dtype = onnx.helper.tensor_dtype_to_np_dtype(spec.elem_type)
        rng = np.random.default_rng(0)
        if dtype.kind == "f":
            x = rng.uniform(-1, 1, (3, *shape[1:])).astype(dtype)
        else:
            x = rng.integers(np.iinfo(dtype).min, np.iinfo(dtype).max, (3, *shape[1:]), endpoint=True)
            x = x.astype(dtype)
        fixed = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
        batched = ort.InferenceSession(free.SerializeToString(), providers=["CPUExecutionProvider"])
        one = np.concatenate([fixed.run(None, {graph.input[0].name: x[i : i + 1]})[0] for i in range(3)])
        many = batched.run(None, {graph.input[0].name: x})[0]
    except Exception:  # noqa: BLE001 - a graph this rewrite does not fit: the fixed batch stays
        return proto
    return free if many.shape == one.shape and np.allclose(many, one, atol=1e-5, rtol=0) else proto
