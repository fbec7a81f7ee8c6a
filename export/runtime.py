"""One predictor over ``.keras``/``.h5``, ``.tflite`` and ``.onnx``: the same pixels in, float outputs out.

Every predictor takes 0-255 pixels (N, H, W, C) and prepares them with *its own file's* metadata
(normalization, then quantization for int8/uint8 inputs), exactly as a phone would. That is what lets
``kerascnn validate`` catch an export whose metadata is wrong.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from .metadata import MetadataError, ModelMetadata, read_metadata

FORMATS = {".keras": "keras", ".h5": "keras", ".tflite": "tflite", ".onnx": "onnx"}


class RuntimeLoadError(RuntimeError):
    """A model file cannot be loaded or run; the message names the file."""


def file_format(path) -> str:
    suffix = Path(path).suffix.lower()
    if suffix not in FORMATS:
        raise RuntimeLoadError(f"{path}: unknown model format '{suffix}' (expected {', '.join(FORMATS)})")
    return FORMATS[suffix]


def quantize(x: np.ndarray, params: dict, dtype: str) -> np.ndarray:
    info = np.iinfo(np.dtype(dtype))
    q = np.round(x / np.float32(params["scale"])) + int(params["zero_point"])
    return np.clip(q, info.min, info.max).astype(dtype)


def dequantize(q: np.ndarray, params: dict) -> np.ndarray:
    return ((q.astype(np.float32) - np.float32(params["zero_point"])) * np.float32(params["scale"])).astype(
        np.float32
    )


class Predictor:
    """``predict(pixels)`` -> float32 outputs (N, classes). ``metadata`` describes the file."""

    format = "?"

    def __init__(self, path, metadata: ModelMetadata | None, threads: int | None = None):
        self.path = Path(path)
        self.metadata = metadata
        self.threads = threads

    @property
    def size_bytes(self) -> int:
        return self.path.stat().st_size

    def prepare(self, pixels: np.ndarray) -> np.ndarray:
        if self.metadata is None:
            raise MetadataError(f"{self.path}: no metadata (normalization unknown); export it with kerascnn")
        x = self.metadata.normalize(pixels)
        if self.metadata.input_dtype in ("int8", "uint8"):
            x = quantize(x, self.metadata.input_quantization, self.metadata.input_dtype)
        return x

    def run(self, x: np.ndarray) -> np.ndarray:  # model input -> raw output
        raise NotImplementedError

    def finish(self, out: np.ndarray) -> np.ndarray:
        if self.metadata is not None and self.metadata.output_dtype in ("int8", "uint8"):
            return dequantize(out, self.metadata.output_quantization)
        return np.asarray(out, np.float32)

    def predict(self, pixels: np.ndarray, batch_size: int = 64) -> np.ndarray:
        outs = []
        for start in range(0, len(pixels), batch_size):
            outs.append(self.finish(self.run(self.prepare(pixels[start : start + batch_size]))))
        return np.concatenate(outs) if outs else np.zeros((0, 0), np.float32)

    def latency_ms(self, pixels: np.ndarray, batch_size: int = 1, runs: int = 30, warmup: int = 3) -> float:
        """Median wall time of one call on a ``batch_size`` batch (input preparation excluded)."""
        x = self.prepare(np.resize(pixels, (batch_size, *pixels.shape[1:])))
        for _ in range(warmup):
            self.run(x)
        times = []
        for _ in range(runs):
            t0 = time.perf_counter()
            self.run(x)
            times.append(time.perf_counter() - t0)
        return float(np.median(times) * 1000)


class KerasPredictor(Predictor):
    format = "keras"

    def __init__(self, path, metadata, threads=None):
        super().__init__(path, metadata, threads)
        import keras

        try:
            self.model = keras.saving.load_model(self.path, compile=False)
        except Exception as e:  # noqa: BLE001 - any load failure is reported with the file
            raise RuntimeLoadError(
                f"{self.path}: cannot load the Keras model ({type(e).__name__}: {e})"
            ) from e
        self._fn = None

    def run(self, x):
        import tensorflow as tf

        if self._fn is None:
            self._fn = tf.function(lambda t: self.model(t, training=False), reduce_retracing=True)
        return np.asarray(self._fn(tf.convert_to_tensor(x)))


class TFLitePredictor(Predictor):
    format = "tflite"

    def __init__(self, path, metadata, threads=None):
        super().__init__(path, metadata, threads)
        from ai_edge_litert.interpreter import Interpreter

        try:
            self.interpreter = Interpreter(model_path=str(self.path), num_threads=threads)
            self.interpreter.allocate_tensors()
        except Exception as e:  # noqa: BLE001
            raise RuntimeLoadError(f"{self.path}: LiteRT cannot load it ({type(e).__name__}: {e})") from e
        self.input = self.interpreter.get_input_details()[0]
        self.output = self.interpreter.get_output_details()[0]
        self._batch = int(self.input["shape"][0])

    def run(self, x):
        if x.shape[0] != self._batch:
            self.interpreter.resize_tensor_input(self.input["index"], list(x.shape), strict=False)
            self.interpreter.allocate_tensors()
            self._batch = x.shape[0]
        self.interpreter.set_tensor(self.input["index"], x.astype(self.input["dtype"], copy=False))
        self.interpreter.invoke()
        return self.interpreter.get_tensor(self.output["index"]).copy()


class OnnxPredictor(Predictor):
    format = "onnx"

    def __init__(self, path, metadata, threads=None):
        super().__init__(path, metadata, threads)
        import onnxruntime as ort

        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
        try:
            self.session = ort.InferenceSession(str(self.path), options, providers=["CPUExecutionProvider"])
        except Exception as e:  # noqa: BLE001
            raise RuntimeLoadError(
                f"{self.path}: onnxruntime cannot load it ({type(e).__name__}: {e})"
            ) from e
        self.input_name = self.session.get_inputs()[0].name

    def run(self, x):
        return self.session.run(None, {self.input_name: x})[0]


_PREDICTORS = {"keras": KerasPredictor, "tflite": TFLitePredictor, "onnx": OnnxPredictor}


def load_predictor(path, threads: int | None = None, metadata: ModelMetadata | None = None) -> Predictor:
    """A predictor for ``path``; its metadata is read from the file (or its folder's model.json)."""
    path = Path(path)
    if not path.exists():
        raise RuntimeLoadError(f"{path} does not exist")
    kind = file_format(path)
    if metadata is None:
        metadata = read_metadata(path)
    return _PREDICTORS[kind](path, metadata, threads)
