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
    return proto
