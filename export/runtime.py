"""One predictor over ``.keras``/``.h5``, ``.tflite`` and ``.onnx``: the same pixels in, float outputs out.

Every predictor takes 0-255 pixels (N, H, W, C) and prepares them with *its own file's* metadata
(normalization, then quantization for int8/uint8 inputs), exactly as a phone would. That is what lets
``kerascnn validate`` catch an export whose metadata is wrong.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from kerascnn.errors import KerascnnError

from .formats import KIND_BY_SUFFIX
from .metadata import MetadataError, ModelMetadata, read_metadata
from .tflite import in_chunks, static_batch


class RuntimeLoadError(KerascnnError, RuntimeError):
    """A model file cannot be loaded or run; the message names the file."""


def file_format(path) -> str:
    """The runtime kind of a model file (keras, tflite, onnx), from its suffix (the format table's)."""
    suffix = Path(path).suffix.lower()
    if suffix not in KIND_BY_SUFFIX:
        expected = ", ".join(KIND_BY_SUFFIX)
        raise RuntimeLoadError(f"{path}: unknown model format '{suffix}' (expected {expected})")
    return KIND_BY_SUFFIX[suffix]


def quantize(x: np.ndarray, params: dict, dtype: str) -> np.ndarray:
    info = np.iinfo(np.dtype(dtype))
    q = np.round(x / np.float32(params["scale"])) + int(params["zero_point"])
    return np.clip(q, info.min, info.max).astype(dtype)


def dequantize(q: np.ndarray, params: dict) -> np.ndarray:
    return ((q.astype(np.float32) - np.float32(params["zero_point"])) * np.float32(params["scale"])).astype(
        np.float32
    )


def check_single_io(path, inputs: int, outputs: int) -> None:
    """kerascnn runs image classifiers: one image input, one scores output."""
    if inputs != 1 or outputs != 1:
        raise RuntimeLoadError(
            f"{path}: the model has {inputs} input(s) and {outputs} output(s); kerascnn runs image "
            "classifiers with one image input and one scores output"
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
        from kerascnn.runs import ModelFileError, load_keras_model

        try:
            self.model = load_keras_model(self.path)
        except ModelFileError as e:  # any load failure, reported with the file
            raise RuntimeLoadError(str(e)) from None
        check_single_io(self.path, len(self.model.inputs), len(self.model.outputs))
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

        from kerascnn.quiet import native_quiet

        try:
            with native_quiet():
                self.interpreter = Interpreter(model_path=str(self.path), num_threads=threads)
                self.interpreter.allocate_tensors()
        except Exception as e:  # noqa: BLE001
            raise RuntimeLoadError(f"{self.path}: LiteRT cannot load it ({type(e).__name__}: {e})") from e
        inputs, outputs = self.interpreter.get_input_details(), self.interpreter.get_output_details()
        check_single_io(self.path, len(inputs), len(outputs))
        self.input, self.output = inputs[0], outputs[0]
        self._batch = int(self.input["shape"][0])
        self._fixed = static_batch(self.interpreter)  # a phone file's batch: fed that many at a time

    def run(self, x):
        if self._fixed is not None and x.shape[0] != self._fixed:
            return in_chunks(self.run, x, self._fixed)
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
        check_single_io(self.path, len(self.session.get_inputs()), len(self.session.get_outputs()))
        self.input_name = self.session.get_inputs()[0].name
        first = self.session.get_inputs()[0].shape[0]
        self._fixed = first if isinstance(first, int) and first > 0 else None  # else a named (free) batch

    def run(self, x):
        if self._fixed is None or x.shape[0] == self._fixed:
            return self.session.run(None, {self.input_name: x})[0]
        return in_chunks(self.run, x, self._fixed)


class MediaPipeUnavailable(RuntimeLoadError):
    """The optional ``mediapipe`` package is not installed."""


MEDIAPIPE_INSTALL = (
    "pip install --no-deps mediapipe==1.2.2 && pip install opencv-contrib-python sounddevice "
    "(what .ci/setup does; --no-deps: mediapipe pins absl-py~=2.3, tensorflow-model-optimization ~=1.2)"
)

# What MediaPipe Tasks' ImageClassifier cannot run, by the start of its own message, and what to do.
MEDIAPIPE_LIMITS = (
    (
        "Only RGB color space",
        "MediaPipe Tasks classifies RGB images only; export a grayscale model with --rgb-input",
    ),
    (
        "The input tensor should have dimensions",
        "MediaPipe Tasks classifies RGB images only; export a grayscale model with --rgb-input",
    ),
    ("Type mismatch for input tensor", "MediaPipe Tasks takes uint8 or float32 input: use --io-type uint8"),
    (
        "Per-channel image normalization",
        "MediaPipe Tasks takes one mean/std for all channels: train with one value (or normalize per "
        "channel in the app and run the file with the LiteRT Interpreter)",
    ),
)


def mediapipe_limit(message: str) -> str | None:
    """The advice for a MediaPipe refusal that is a documented limit of its ImageClassifier, else None."""
    return next((advice for start, advice in MEDIAPIPE_LIMITS if start in message), None)


class MediaPipePredictor(Predictor):
    """The ``.tflite`` file alone (no labels.txt, no model.json) through MediaPipe Tasks' ImageClassifier,
    the C++ core of the Android/iOS/web tasks: it reads the normalization and labels from the file's
    standard TFLite Metadata and resizes the frames itself. ``predict`` takes frames of any size
    (H, W, 1|3) and returns every class's score in class-index order; ``names`` are its category names."""

    format = "mediapipe"

    def __init__(self, path, metadata=None, threads=None):
        super().__init__(path, metadata, threads)
        from kerascnn.quiet import native_quiet

        try:
            with native_quiet():
                import mediapipe as mp
                from mediapipe.tasks.python import vision
                from mediapipe.tasks.python.core.base_options import BaseOptions
        except ImportError as e:
            raise MediaPipeUnavailable(
                f"MediaPipe Tasks is not installed ({e}): {MEDIAPIPE_INSTALL}"
            ) from None
        self._mp = mp
        options = vision.ImageClassifierOptions(
            base_options=BaseOptions(model_asset_buffer=self.path.read_bytes()), max_results=-1
        )
        try:
            with native_quiet():
                self.classifier = vision.ImageClassifier.create_from_options(options)
        except Exception as e:  # noqa: BLE001 - MediaPipe raises ValueError/RuntimeError/FileNotFoundError
            raise RuntimeLoadError(f"{self.path}: MediaPipe Tasks refuses it: {e}") from e
        self.names: list[str] | None = None

    def prepare(self, pixels):  # MediaPipe preprocesses itself: frames go in as they are
        return pixels

    def classify(self, frame: np.ndarray) -> np.ndarray:
        """One uint8 frame (H, W, C) -> scores (num_classes,) in class-index order."""
        frame = np.asarray(frame, np.uint8)
        if frame.ndim == 2:
            frame = frame[..., None]
        if frame.shape[-1] == 1:  # a camera gives RGB: a gray picture is three equal channels
            frame = np.repeat(frame, 3, axis=-1)
        image = self._mp.Image(image_format=self._mp.ImageFormat.SRGB, data=np.ascontiguousarray(frame))
        categories = self.classifier.classify(image).classifications[0].categories
        scores = np.zeros(len(categories), np.float32)
        names = [""] * len(categories)
        for c in categories:
            if 0 <= c.index < len(categories):
                scores[c.index] = c.score
                names[c.index] = c.category_name or ""
        if self.names is None:
            self.names = names
        return scores

    def run(self, x):
        return np.stack([self.classify(frame) for frame in x])

    def finish(self, out):
        return np.asarray(out, np.float32)

    def latency_ms(self, frames, batch_size: int = 1, runs: int = 30, warmup: int = 3) -> float:
        """Median wall time of classifying ``batch_size`` frames one by one (MediaPipe's own resizing and
        normalization included: that is the call an app makes)."""
        frame = np.asarray(frames[0], np.uint8)
        for _ in range(warmup):
            self.classify(frame)
        times = []
        for _ in range(runs):
            t0 = time.perf_counter()
            for _ in range(batch_size):
                self.classify(frame)
            times.append(time.perf_counter() - t0)
        return float(np.median(times) * 1000)

    def close(self):
        classifier, self.classifier = getattr(self, "classifier", None), None
        if classifier is not None:
            classifier.close()

    def __del__(self):
        try:
            self.close()
        except Exception:  # noqa: BLE001 - never raise from a finalizer
            pass


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
