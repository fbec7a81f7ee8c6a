"""The GPU delegate's default arithmetic, simulated: float16 weights and every layer's output rounded to
float16, for ``kerascnn validate``'s ``gpu float16`` row of each float ``.tflite``.

The LiteRT GPU delegate (OpenCL/OpenGL on Android, Metal on iOS, WebGPU) runs a float model in half
precision unless the app asks for float32 (``GpuDelegate.Options().setPrecisionLossAllowed(false)``,
LiteRT's ``GpuOptions`` precision ``FP32``). Activations beyond 65,504 become inf, and NaN after the
next op (LiteRT#9249); smaller ones lose digits (LiteRT#2537, #8619).

How: the file's own Keras model (the ``.keras`` reference beside it, which the ``tflite float32`` row
proves the file computes) is cloned with float16-rounded weights, and each layer's output is rounded to
float16 (values past 65,504 become inf), the inputs too; inside a layer the arithmetic stays float32.
So it models the storage precision and the range of every tensor between ops, which is what breaks
in practice, and not half-precision accumulation inside one op (a 3x3x512 convolution summing 4,608
products in float16); a BatchNormalization's input is rounded although the converter folds it into
the convolution before it (a little pessimistic). Chosen over running the TFLite graph op by op: the
LiteRT interpreter cannot round between ops, and the Keras graph gives the layer names directly.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from kerascnn.keras_internals import run_through_graph

FLOAT16_MAX = 65504.0
SAMPLE = 32  # images for the per-layer diagnosis (every layer's activations, float32 and float16)
ADVICE = (
    "run the file on the GPU delegate in float32 precision (Android: GpuDelegate.Options()"
    ".setPrecisionLossAllowed(false); LiteRT: GpuOptions precision FP32), or ship --quantize int8 "
    "(integer arithmetic has no float16 range to leave)"
)


def _round(w: np.ndarray) -> np.ndarray:
    return w.astype(np.float16).astype(np.float32) if w.dtype == np.float32 else w


def _round_tensor(t):
    import keras

    if keras.backend.standardize_dtype(t.dtype) != "float32":
        return t
    return keras.ops.cast(keras.ops.cast(t, "float16"), "float32")


@dataclass
class Diagnosis:
    """Where float16 hurts most: the first layer whose activations leave its range, else the layer of
    largest relative error; with what to do."""

    layer: str | None
    peak: float  # max |activation| of that layer in float32
    relative_error: float  # ||float16 - float32|| / ||float32|| of that layer's output
    overflow: bool

    def describe(self) -> str:
        if self.layer is None:
            return "float16: no layer to diagnose"
        if self.overflow:
            return (
                f"float16 overflow: layer {self.layer}'s activations reach {self.peak:.3g}, beyond float16's "
                f"{FLOAT16_MAX:,.0f} (inf/NaN on a GPU): {ADVICE}"
            )
        return f"float16: largest error at layer {self.layer} (relative {self.relative_error:.2g})"


class Float16Simulation:
    """A Keras model computed as the GPU delegate computes by default (see the module docstring)."""

    def __init__(self, model, paths: dict | None = None):
        import keras

        self.paths = dict(paths or {})
        clone = keras.models.clone_model(model)
        clone.set_weights([_round(w) for w in model.get_weights()])
        recorded: list[tuple[str, object]] = []

        def rounded(layer):
            def call(*args, **kwargs):
                out = keras.tree.map_structure(_round_tensor, layer(*args, **kwargs))
                recorded.append((layer.name, out))
                return out

            return call

        inputs = [_round_tensor(t) for t in clone.inputs]
        output = run_through_graph(clone, inputs, rounded)
        output = output[0] if isinstance(output, (list, tuple)) else output
        single = [(name, t) for name, t in recorded if not isinstance(t, (list, tuple, dict))]
        self.layers = [name for name, _ in single]
        self.model = keras.Model(clone.inputs, output)
        self._probe = keras.Model(clone.inputs, [t for _, t in single])
        self._reference = keras.Model(model.inputs, [model.get_layer(name).output for name in self.layers])
        self._fn = None

    def predict(self, x: np.ndarray, batch_size: int = 64) -> np.ndarray:
        import tensorflow as tf

        if self._fn is None:
            self._fn = tf.function(lambda t: self.model([t], training=False), reduce_retracing=True)
        step = batch_size
        outs = [np.asarray(self._fn(tf.constant(x[i : i + step]))) for i in range(0, len(x), step)]
        return np.concatenate(outs).astype(np.float32) if outs else np.zeros((0, 0), np.float32)

    def diagnose(self, x: np.ndarray) -> Diagnosis:
        """On the first :data:`SAMPLE` images of ``x`` (model input): the first layer whose float32
        activations pass 65,504 (or whose float16 ones are inf/NaN), else the largest relative error."""
        x = x[:SAMPLE]
        sim = self._probe([x], training=False)
        ref = self._reference([x], training=False)
        sim, ref = (sim, ref) if isinstance(sim, list) else ([sim], [ref])
        worst = None
        for name, s, r in zip(self.layers, sim, ref, strict=True):
            s, r = np.asarray(s, np.float64), np.asarray(r, np.float64)
            peak = float(np.abs(r).max()) if r.size else 0.0
            if peak > FLOAT16_MAX or not np.isfinite(s).all():
                return Diagnosis(self.paths.get(name, name), peak, float("inf"), True)
            error = float(np.linalg.norm(s - r) / (np.linalg.norm(r) + 1e-12))
            if worst is None or error > worst.relative_error:
                worst = Diagnosis(self.paths.get(name, name), peak, error, False)
        return worst or Diagnosis(None, 0.0, 0.0, False)


class Float16Predictor:
    """The ``gpu float16`` row's runtime: a float ``.tflite`` (``path``, ``metadata``) computed as the GPU
    delegate computes it, from the Keras model the file was made from (``keras_model``)."""

    format = "gpu float16"

    def __init__(self, path, metadata, keras_model, paths: dict | None = None):
        from pathlib import Path

        self.path, self.metadata = Path(path), metadata
        self.simulation = Float16Simulation(keras_model, paths)

    def predict(self, pixels: np.ndarray, batch_size: int = 64) -> np.ndarray:
        from kerascnn.quiet import native_quiet

        with native_quiet():  # oneDNN's "supports DT_HALF only on platforms with AVX-512" line
            return self.simulation.predict(self.metadata.normalize(pixels), batch_size)

    def diagnose(self, pixels: np.ndarray) -> Diagnosis:
        from kerascnn.quiet import native_quiet

        with native_quiet():
            return self.simulation.diagnose(self.metadata.normalize(pixels[:SAMPLE]))

    def latency_ms(self, *args, **kwargs) -> None:
        return None  # a simulation on the CPU says nothing of a GPU's speed
