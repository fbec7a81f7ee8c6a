"""Which layer breaks int8, and an int8 file that keeps just those layers in float (``--quantize mixed``).

The library is TensorFlow Lite's ``QuantizationDebugger`` (``tf.lite.experimental``), chosen over
ai-edge-quantizer because:

- it calibrates with the converter that writes kerascnn's ``_int8.tflite`` (same calibration images,
  same quantizer), so the report describes the file that ships, and a mixed file with no float layer
  gives that file's outputs exactly (tested);
- its NumericVerify ops run every quantized op next to its float twin on the *same* (quantized)
  inputs, so each row is the error that op adds, not the error piled up before it;
- its ``denylisted_nodes`` re-quantizes the one calibrated model with any set of ops left in float in
  milliseconds (``mlir_quantize``), which is what the search for the fewest float layers needs;
- it is in the TensorFlow already pinned: nothing new to install. ai-edge-quantizer quantizes a float
  ``.tflite`` with its own algorithms, so its int8 file is not the converter's: its report would
  describe another file than the one ``--quantize int8`` writes.

Per op the report gives what users of both ecosystems read: the debugger's ``rmse/scale`` (the TFLite
tutorial's metric: about 0.29, i.e. 1/sqrt(12), is plain rounding), the tensor SQNR in dB (ONNX
Runtime's ``qdq_loss_debug``), and the **channel SQNR**, by which layers are ranked: the median over
output channels of each channel's SQNR. One int8 scale serves a whole activation tensor and is set by
its widest channel; when one channel's range is 100x the others' (common in depthwise and
unnormalized layers: Nagel et al. 2019, "Data-Free Quantization"), the narrow channels are rounded
to a few levels while the tensor SQNR, dominated by the wide channel, still looks fine (and
``rmse/scale`` stays at 0.29: the rounding is "normal" for that scale).

Keeping a layer in float keeps its **output tensor** in float: an op left in float whose readers are
still int8 would have its output quantized again, with the same scale. So a layer goes to float with
the ops that read its output, following ops that must share their input's scale (pooling, reshape,
concatenation: the converter gives them their input's scale) to the first ops with a scale of their
own. The search (``mixed``) keeps the top-k ranked layers in float, k found by doubling then bisection
on held-back calibration images, then drops any layer the gate does not need.
"""

from __future__ import annotations

import json
import math
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from kerascnn.errors import KerascnnError

from .tflite import (
    keras_layers_of,  # noqa: F401 - re-exported: the report reads names with it
    no_debug_info_reload,
)

_IO_OPS = ("QUANTIZE", "DEQUANTIZE")


class MixedPrecisionError(KerascnnError, ValueError):
    """No mixed file can pass the gate (even with every quantized layer in float), or bad options."""


# ------------------------------------------------------------------------------------------------
# Per-op metrics (called by the debugger once per op and image; averaged over the images)
# ------------------------------------------------------------------------------------------------


def _dequantized(q, scale, zero_point):
    return (np.asarray(q, np.float32) - np.float32(zero_point)) * np.float32(scale)


def _noise_to_signal(f, q, scale, zero_point):
    f = np.asarray(f, np.float64)
    noise = np.sum((_dequantized(q, scale, zero_point) - f) ** 2)
    signal = np.sum(f**2)
    return float(noise / max(signal, 1e-30))


def _channel_noise_to_signal(f, q, scale, zero_point):
    """Median over the last axis (channels) of noise power / signal power; the tensor's ratio when a
    channel has fewer than 4 values (a Dense output at batch 1)."""
    f = np.asarray(f, np.float64)
    if f.ndim < 2 or f.size // f.shape[-1] < 4:
        return _noise_to_signal(f, q, scale, zero_point)
    d = _dequantized(q, scale, zero_point).reshape(-1, f.shape[-1])
    f = f.reshape(-1, f.shape[-1])
    signal = np.mean(f**2, axis=0)
    noise = np.mean((d - f) ** 2, axis=0)
    live = (signal > 0) | (noise > 0)  # a channel that is 0 in both says nothing
    if not live.any():
        return 0.0
    floor = 1e-8 * float(signal.mean()) + 1e-30
    return float(np.median(noise[live] / np.maximum(signal[live], floor)))


def _rmse_over_scale(f, q, scale, zero_point):
    d = _dequantized(q, scale, zero_point)
    return float(np.sqrt(np.mean((d - np.asarray(f, np.float32)) ** 2)) / max(float(scale), 1e-30))


def _db(noise_to_signal: float) -> float:
    return float(-10 * np.log10(max(noise_to_signal, 1e-30)))


# ------------------------------------------------------------------------------------------------
# Names: TFLite tensor -> Keras layers
# ------------------------------------------------------------------------------------------------


# ------------------------------------------------------------------------------------------------
# The graph of a quantized model: scale groups and what must stay in float together
# ------------------------------------------------------------------------------------------------


@dataclass
class _Graph:
    ops: list[dict]  # {"name", "inputs", "outputs"}
    tensors: dict[int, dict]  # index -> {"name", "dtype", "scale", "zero_point", "scales": how many}
    producer: dict[int, int]
    consumers: dict[int, list[int]]

    @classmethod
    def of(cls, model_content: bytes) -> _Graph:
        from ai_edge_litert.interpreter import Interpreter

        from kerascnn.quiet import native_quiet

        with native_quiet():
            interpreter = Interpreter(model_content=bytes(model_content))
        tensors = {}
        for t in interpreter.get_tensor_details():
            q = t.get("quantization_parameters") or {}
            scales, zeros = q.get("scales", ()), q.get("zero_points", ())
            tensors[int(t["index"])] = {
                "name": t["name"],
                "dtype": np.dtype(t["dtype"]).name,
                "scale": float(scales[0]) if len(scales) == 1 else None,
                "zero_point": int(zeros[0]) if len(zeros) == 1 else None,
                "scales": len(scales),
            }
        ops, producer, consumers = [], {}, {}
        for op in interpreter._get_ops_details():  # noqa: SLF001 - the only op/tensor graph LiteRT exposes
            index = len(ops)
            inputs = [int(i) for i in op["inputs"] if int(i) >= 0]
            outputs = [int(i) for i in op["outputs"]]
            ops.append({"name": op["op_name"], "inputs": inputs, "outputs": outputs})
            for t in outputs:
                producer[t] = index
            for t in inputs:
                consumers.setdefault(t, []).append(index)
        graph = cls(ops, tensors, producer, consumers)
        graph.graph_inputs = {int(d["index"]) for d in interpreter.get_input_details()}
        return graph

    def activations(self, op: dict) -> list[int]:
        return [t for t in op["inputs"] if t in self.producer or t in self.graph_inputs]

    def same_scale(self, op: dict) -> bool:
        """Does the op give its output its input's int8 scale (pooling, reshape, concatenation...)?"""
        if op["name"] in _IO_OPS or not op["outputs"]:
            return False
        out = self.tensors[op["outputs"][0]]
        ins = [self.tensors[t] for t in self.activations(op)]
        return (
            out["scale"] is not None
            and bool(ins)
            and all((t["scale"], t["zero_point"]) == (out["scale"], out["zero_point"]) for t in ins)
        )

    def float_group(self, tensor: int) -> list[int]:
        """The ops that must run in float for ``tensor`` to stay in float: the tensors tied to it by
        same-scale ops, their producers and their readers (QUANTIZE/DEQUANTIZE excluded)."""
        group, todo = {tensor}, [tensor]
        while todo:
            t = todo.pop()
            linked = [self.producer[t]] if t in self.producer else []
            linked += self.consumers.get(t, [])
            for index in linked:
                op = self.ops[index]
                if self.same_scale(op):
                    for other in [*self.activations(op), *op["outputs"]]:
                        if other not in group:
                            group.add(other)
                            todo.append(other)
        ops = set()
        for t in group:
            if t in self.producer:
                ops.add(self.producer[t])
            ops.update(self.consumers.get(t, []))
        return sorted(i for i in ops if self.ops[i]["name"] not in _IO_OPS)

    def tensor_index(self, name: str) -> int | None:
        return next((i for i, t in self.tensors.items() if t["name"] == name), None)


# ------------------------------------------------------------------------------------------------
# The session: calibrate once, report, re-quantize with any ops in float
# ------------------------------------------------------------------------------------------------


@dataclass
class LayerError:
    rank: int
    layer: str  # the first Keras layer fused into the op (the one holding the weights)
    layers: list[str]  # every Keras layer fused into the op, in the model's order
    op: str  # TFLite builtin op
    tensor: str  # the op's output tensor (what denylisted_nodes takes)
    channel_sqnr_db: float  # the ranking: median channel SQNR (low = bad)
    sqnr_db: float
    rmse_scale: float
    scale: float | None
    zero_point: int | None
    float_with: list[str] = field(default_factory=list)  # Keras layers that go to float with it


class Int8Session:
    """One calibration of a SavedModel (the int8 converter's own), then reports and quantized files."""

    def __init__(
        self, saved_model_dir, representative, layer_names, io_type: str = "float32", paths=None,
        per_tensor: bool = False,
    ):  # fmt: skip
        """``layer_names``: the Keras layers, in order, whose names the converter records in tensor
        names; ``paths``: layer name -> the name to report it by (its path inside a nested model);
        ``per_tensor``: every file quantizes weights with one scale per tensor."""
        import tensorflow as tf

        from kerascnn.quiet import native_quiet

        self.layer_names = list(layer_names)
        self.paths = dict(paths or {})
        self.io_type = io_type
        self.per_tensor = per_tensor
        self.calibration_images = sum(1 for _ in representative())
        converter = tf.lite.TFLiteConverter.from_saved_model(str(saved_model_dir))
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = representative
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        options = tf.lite.experimental.QuantizationDebugOptions(
            layer_direct_compare_metrics={
                "nsr": _noise_to_signal,
                "channel_nsr": _channel_noise_to_signal,
                "rmse_scale": _rmse_over_scale,
            }
        )
        with warnings.catch_warnings(), native_quiet(), no_debug_info_reload():
            warnings.simplefilter("ignore")  # tf.lite.Interpreter's deprecation notice
            # Calibrate with the converter; then measure on the debug model given as content: only that
            # path keeps intermediate tensors (experimental_preserve_all_tensors), which the direct
            # float/int8 comparisons read. The converter path's interpreter reuses their memory, so it
            # would compare whatever a later op wrote there.
            calibrating = tf.lite.experimental.QuantizationDebugger(
                converter=converter, debug_dataset=representative
            )
            self.calibrated_model = calibrating.calibrated_model
            self.debugger = tf.lite.experimental.QuantizationDebugger(
                quant_debug_model_content=calibrating.get_debug_quantized_model(),
                debug_dataset=representative,
                debug_options=options,
            )
            self.debugger.run()
        self.plain = self.quantize(())
        self.graph = _Graph.of(self.plain)
        self._denylist_names = self._calibrated_names()
        self.layers = self._rank()

    def quantize(self, float_tensors) -> bytes:
        """The int8 file with the ops writing ``float_tensors`` (names) left in float."""
        import tensorflow as tf
        from tensorflow.lite.python import convert

        from kerascnn.quiet import native_quiet

        io = getattr(tf, self.io_type)
        with native_quiet():
            return bytes(
                convert.mlir_quantize(
                    self.calibrated_model,
                    disable_per_channel=self.per_tensor,
                    input_data_type=io,
                    output_data_type=io,
                    denylisted_nodes=list(float_tensors) or None,
                )
            )

    def _calibrated_names(self) -> dict[int, str]:
        """Plain model op index -> the name ``denylisted_nodes`` knows that op by: its output's name in
        the calibrated (float) model, before quantization inserted QUANTIZE/DEQUANTIZE ops and renamed
        tensors (the model's last op loses its name to the output DEQUANTIZE). The calibrated model's
        ops are the plain model's, in order, without those."""
        calibrated = _Graph.of(self.calibrated_model)
        ours = [i for i, op in enumerate(self.graph.ops) if op["name"] not in _IO_OPS]
        theirs = [op for op in calibrated.ops if op["name"] not in _IO_OPS]
        if [self.graph.ops[i]["name"] for i in ours] != [op["name"] for op in theirs]:
            raise RuntimeError("the calibrated model's ops differ from the int8 model's")
        return {i: calibrated.tensors[op["outputs"][0]]["name"] for i, op in zip(ours, theirs, strict=True)}

    def _debug_to_plain(self) -> dict[int, int]:
        """Debug model tensor index -> plain model tensor index, for the outputs the debugger verified.

        The debug model is the plain one with a float twin and a NumericVerify op added after each
        quantized op, and its tensor names get counters appended, so names do not match; the verified
        ops, in the debug model's order, are the plain model's quantized ops in order (aligned by op
        type, skipping plain ops that were not verified)."""
        debug = self.debugger._quant_interpreter  # noqa: SLF001 - as layer_statistics_dump reads it
        defining = self.debugger._defining_op  # noqa: SLF001
        verified = sorted(
            (int(defining[d["inputs"][0]]), int(d["inputs"][0]))
            for d in self.debugger._numeric_verify_op_details.values()  # noqa: SLF001
        )
        plain = [
            (op["name"], op["outputs"][0])
            for op in self.graph.ops
            if op["name"] not in _IO_OPS
            and op["outputs"]
            and self.graph.tensors[op["outputs"][0]]["dtype"] in ("int8", "int16")
        ]
        mapping, start = {}, 0
        for op_index, tensor in verified:
            op_name = debug._get_op_details(op_index)["op_name"]  # noqa: SLF001
            for k in range(start, len(plain)):
                if plain[k][0] == op_name:
                    mapping[tensor], start = plain[k][1], k + 1
                    break
        return mapping

    def _layers_of_op(self, index: int, seen=()) -> list[str]:
        op = self.graph.ops[index]
        names = keras_layers_of(self.graph.tensors[op["outputs"][0]]["name"], self.layer_names)
        if names or index in seen:
            return names
        # An op whose name records no layer (the model's last op is named after the signature):
        # it belongs to the layer that feeds it (a Dense's softmax activation).
        for t in self.graph.activations(op):
            if t in self.graph.producer:
                return self._layers_of_op(self.graph.producer[t], (*seen, index))
        return []

    def _rank(self) -> list[LayerError]:
        stats = self.debugger.layer_statistics or {}
        rows = []
        twins = self._debug_to_plain()
        for key, metrics in stats.items():
            # The NumericVerify op's first input is the quantized op's output (layer_statistics_dump).
            verified = self.debugger._numeric_verify_op_details[key]["inputs"][0]  # noqa: SLF001
            index = twins.get(verified)
            if index is None:
                continue
            tensor_name = self.graph.tensors[index]["name"]
            op_index = self.graph.producer[index]
            layers = self._layers_of_op(op_index)
            if not layers:
                continue
            tensor = self.graph.tensors[index]
            with_ops = self.graph.float_group(index)
            float_with = []
            for i in with_ops:
                float_with += [n for n in self._layers_of_op(i) if n not in float_with]
            layers, float_with = self._named(layers), self._named(float_with)
            rows.append(
                LayerError(
                    rank=0,
                    layer=layers[0],
                    layers=layers,
                    op=self.graph.ops[op_index]["name"],
                    tensor=tensor_name,
                    channel_sqnr_db=_db(float(metrics["channel_nsr"])),
                    sqnr_db=_db(float(metrics["nsr"])),
                    rmse_scale=float(metrics["rmse_scale"]),
                    scale=tensor["scale"],
                    zero_point=tensor["zero_point"],
                    float_with=float_with,
                )
            )
        rows.sort(key=lambda r: (r.channel_sqnr_db, r.sqnr_db))
        for i, row in enumerate(rows, 1):
            row.rank = i
        return rows

    def float_tensors(self, layers: list[LayerError]) -> tuple[list[str], list[str]]:
        """(tensor names to denylist, Keras layers in float) for keeping ``layers`` in float."""
        ops = set()
        for row in layers:
            index = self.graph.tensor_index(row.tensor)
            ops.update(self.graph.float_group(index))
        return self._float_ops(ops)

    def float_tensors_of_layers(self, layer_names: list[str]) -> tuple[list[str], list[str]]:
        """(tensor names to denylist, Keras layers in float) for keeping the named Keras layers (flat
        names) in float: exactly the ops that compute them (the converter puts QUANTIZE/DEQUANTIZE
        around them). Raises MixedPrecisionError for a layer that has no op of its own in the int8 file."""
        wanted = set(layer_names)
        ops, found = set(), set()
        for i, op in enumerate(self.graph.ops):
            if op["name"] in _IO_OPS or i not in self._denylist_names:
                continue
            hit = wanted & set(self._layers_of_op(i))
            if hit:
                found |= hit
                ops.add(i)
        missing = [n for n in layer_names if n not in found]
        if missing:
            computing = sorted({n for i in self._denylist_names for n in self._layers_of_op(i)})
            raise MixedPrecisionError(
                f"--float-layers {', '.join(self._named(missing))}: no op of the int8 file computes "
                "this layer (it has no weights, or the converter fused it into its neighbour); the layers "
                f"with ops are {', '.join(self._named(sorted(computing, key=self.layer_names.index)))}"
            )
        return self._float_ops(ops)

    def _float_ops(self, ops) -> tuple[list[str], list[str]]:
        """(tensor names to denylist, Keras layers in float, in the model's order) for plain-model ops."""
        tensors = [self._denylist_names[i] for i in sorted(ops)]
        keras_names = []
        for i in sorted(ops):
            keras_names += [n for n in self._layers_of_op(i) if n not in keras_names]
        order = {n: i for i, n in enumerate(self.layer_names)}
        return tensors, self._named(sorted(keras_names, key=lambda n: order.get(n, len(order))))

    def _named(self, layer_names: list[str]) -> list[str]:
        """Layer names as the report gives them: their paths inside nested models."""
        return [self.paths.get(n, n) for n in layer_names]

    def report(self, model_name: str, file_name: str) -> dict:
        return {
            "model": model_name,
            "file": file_name,
            "method": (
                "TFLite QuantizationDebugger (NumericVerify): each int8 op against its float twin on the "
                "same quantized inputs, averaged over the calibration images"
            ),
            "ranked_by": "channel_sqnr_db (median over output channels of the SQNR; lowest first)",
            "calibration_images": self.calibration_images,
            "layers": [asdict(row) for row in self.layers],
        }


# ------------------------------------------------------------------------------------------------
# The search for the fewest float layers
# ------------------------------------------------------------------------------------------------


@dataclass
class Gate:
    """What the mixed file must reach on the held-back images, against the Keras model."""

    min_agreement: float = 99.0  # % of top-1 agreement (used when max_drop is None)
    max_drop: float | None = None  # top-1 points (labeled held-back images)

    def describe(self) -> str:
        if self.max_drop is not None:
            return f"top-1 drop <= {self.max_drop} points"
        return f"top-1 agreement >= {self.min_agreement}%"

    @property
    def min_images(self) -> int:
        """The fewest held-back images the gate judges on: 100, and enough that one image weighs no more
        than the gate's margin (100 - min_agreement, or max_drop, in points); at most 1,000."""
        margin = self.max_drop if self.max_drop is not None else 100.0 - self.min_agreement
        return max(100, math.ceil(100.0 / max(margin, 0.1) - 1e-9))

    def check(self, holdout) -> None:
        """Raises MixedPrecisionError when ``holdout`` cannot answer the gate (a drop needs labels)."""
        if self.max_drop is not None and holdout.labels is None:
            raise MixedPrecisionError(
                "--max-drop needs labeled calibration data (a dataset or class folders); for a folder of "
                "unlabeled images use --min-agreement"
            )

    def not_judged(self, held: int) -> str:
        return (
            f"not judged ({held} images held back; give at least {self.min_images} with --calibration-data)"
        )

    def interval(self, agreement: float, drop: float | None, held: int, holdout) -> tuple[float, float]:
        """The 95% interval of what the gate reads: the agreement's Wilson interval (in %), or for
        --max-drop the drop's (Keras' top-1 on these images less the Wilson interval of the file's)."""
        if self.max_drop is None or drop is None:
            return agreement_interval(agreement, held)
        keras_top1 = float(np.mean(holdout.keras_top1 == holdout.labels) * 100)
        low, high = agreement_interval(keras_top1 - drop, held)  # the file's top-1
        return keras_top1 - high, keras_top1 - low

    def interval_text(self, agreement: float, drop: float | None, held: int, holdout) -> str:
        from kerascnn.evaluate import format_interval

        what = "drop" if self.max_drop is not None and drop is not None else "agreement"
        return f"{what} 95% CI {format_interval(self.interval(agreement, drop, held, holdout))}"

    def side(self, agreement: float, drop: float | None, held: int, holdout) -> str:
        """Where the interval lies against the target: ``passes`` (all of it meets the gate), ``fails``
        (none of it does) or ``straddles``. The interval decides, not a count of images: 60 held back at
        80% agreement (95% CI [68.2, 88.2]) is known to fail a 99% gate."""
        low, high = self.interval(agreement, drop, held, holdout)
        if self.max_drop is not None and drop is not None:
            passes, fails = high <= self.max_drop, low > self.max_drop
        else:
            passes, fails = low >= self.min_agreement, high < self.min_agreement
        return "passes" if passes else "fails" if fails else "straddles"


def agreement_interval(agreement: float, n: int) -> tuple[float, float]:
    """The 95% Wilson interval of an agreement (in %) measured on ``n`` images."""
    from kerascnn.evaluate import wilson_interval

    return wilson_interval(round(agreement * n / 100), n)


@dataclass
class Trial:
    culprits: list[str]  # the ranked layers asked to stay in float
    float_layers: list[str]  # every Keras layer in float (with the readers of their outputs)
    agreement: float
    drop: float | None
    passed: bool


class Holdout:
    """Held-back images (model input, float) with the Keras model's top-1 and, if labeled, labels."""

    def __init__(self, inputs: np.ndarray, keras_top1: np.ndarray, labels: np.ndarray | None = None):
        self.inputs, self.keras_top1, self.labels = inputs, keras_top1, labels

    def measure(self, model_content: bytes) -> tuple[float, float | None]:
        from kerascnn.quiet import native_quiet

        from .tflite import run_tflite

        with native_quiet():
            top1 = run_tflite(model_content, self.inputs).argmax(1)
        agreement = float(np.mean(top1 == self.keras_top1) * 100)
        drop = None
        if self.labels is not None:
            drop = float((np.mean(self.keras_top1 == self.labels) - np.mean(top1 == self.labels)) * 100)
        return agreement, drop


def search_mixed(session: Int8Session, holdout: Holdout, gate: Gate, log=None) -> tuple[bytes, dict]:
    """The int8 file with the fewest ranked layers in float that passes ``gate`` on ``holdout``; with
    the search's trials. Raises MixedPrecisionError when even every layer in float fails."""
    gate.check(holdout)
    ranked = session.layers
    trials: list[Trial] = []
    cache: dict[tuple, tuple[bytes, Trial]] = {}

    def attempt(culprits: tuple[int, ...]):
        key = tuple(sorted(culprits))
        if key not in cache:
            rows = [ranked[i] for i in key]
            tensors, keras_names = session.float_tensors(rows)
            content = session.quantize(tensors) if rows else session.plain
            agreement, drop = holdout.measure(content)
            ok = drop <= gate.max_drop if gate.max_drop is not None else agreement >= gate.min_agreement
            trial = Trial([r.layer for r in rows], keras_names, agreement, drop, ok)
            trials.append(trial)
            cache[key] = (content, trial)
            if log:
                from kerascnn.evaluate import format_interval

                what = f"{len(rows)} ranked layer(s) in float" if rows else "full int8"
                shown = f", drop {drop:+.2f} pp" if drop is not None else ""
                ci = format_interval(agreement_interval(agreement, len(holdout.inputs)))
                log(
                    f"  mixed: {what}: agreement {agreement:.2f}% (95% CI {ci}){shown} -> "
                    f"{'pass' if ok else 'fail'}"
                )
        return cache[key]

    n = len(ranked)
    content, trial = attempt(())
    if not trial.passed:
        _, everything = attempt(tuple(range(n)))
        if not everything.passed:
            raise MixedPrecisionError(
                f"no mixed file passes ({gate.describe()} on {len(holdout.inputs)} held-back images): even "
                f"with all {n} quantized layers in float it reaches agreement {everything.agreement:.2f}%"
                + (f", drop {everything.drop:+.2f} pp" if everything.drop is not None else "")
                + "; keep the float32 file, or relax the gate"
            )
        low, high = 0, n  # low fails, high passes
        k = 1
        while k < n:
            if attempt(tuple(range(k)))[1].passed:
                high = k
                break
            low = k
            k *= 2
        while high - low > 1:
            mid = (low + high) // 2
            if attempt(tuple(range(mid)))[1].passed:
                high = mid
            else:
                low = mid
        chosen = list(range(high))
        # Drop any of them the gate does not need (the ranking is a guide, not a proof).
        if len(chosen) <= 12:
            for i in reversed(list(chosen)):
                rest = tuple(c for c in chosen if c != i)
                if rest and attempt(rest)[1].passed:
                    chosen = list(rest)
        content, trial = attempt(tuple(chosen))
    summary = {
        "gate": gate.describe(),
        "held_back_images": int(len(holdout.inputs)),
        "labeled": holdout.labels is not None,
        "culprits": trial.culprits,
        "float_layers": trial.float_layers,
        "agreement": trial.agreement,
        "agreement_ci95": list(agreement_interval(trial.agreement, len(holdout.inputs))),
        "drop": trial.drop,
        "int8_agreement": trials[0].agreement,
        "int8_drop": trials[0].drop,
        "trials": [asdict(t) for t in trials],
    }
    return content, summary


def mixed_file(session: Int8Session, holdout: Holdout, gate: Gate, log=None) -> tuple[bytes, dict]:
    """The ``mixed`` file and its summary (``judged``, ``verdict``, ...): the :func:`search_mixed`
    result when ``holdout`` has enough images to judge; else the full int8 file, marked unjudged (too
    few images to tell a pass from a fail)."""
    from kerascnn.evaluate import format_interval

    gate.check(holdout)
    held = len(holdout.inputs)
    content = session.plain
    agreement, drop = holdout.measure(content)
    side = gate.side(agreement, drop, held, holdout)
    if side == "fails" or (side == "straddles" and held >= gate.min_images):
        content, summary = search_mixed(session, holdout, gate, log=log)
        ci = format_interval(summary["agreement_ci95"])
        verdict = f"passed: {summary['gate']} on {held} held-back images"
        verdict += f" ({summary['agreement']:.1f}%, 95% CI {ci})"
        if side == "fails" and held < gate.min_images:
            verdict += f"; full int8 known to fail ({gate.interval_text(agreement, drop, held, holdout)})"
        return content, summary | {"judged": True, "verdict": verdict}
    if side == "passes":
        summary = search_mixed(session, holdout, gate, log=log)[1]  # the full int8 file: one trial
        verdict = f"passed: {summary['gate']} on {held} held-back images"
        verdict += f" ({gate.interval_text(agreement, drop, held, holdout)} clears it)"
        return content, summary | {"judged": True, "verdict": verdict}
    summary = {
        "gate": gate.describe(),
        "verdict": gate.not_judged(held),
        "judged": False,
        "held_back_images": held,
        "min_held_back_images": gate.min_images,
        "float_layers": [],
        "agreement": agreement,
        "agreement_ci95": list(agreement_interval(agreement, held)),
        "drop": drop,
        "int8_agreement": agreement,
        "int8_drop": drop,
    }
    return content, summary


# ------------------------------------------------------------------------------------------------
# Writing and reading the report
# ------------------------------------------------------------------------------------------------


REPORT_SUFFIX = "_int8_report"


def report_paths(folder, model_name: str) -> dict[str, Path]:
    base = Path(folder) / f"{model_name}{REPORT_SUFFIX}"
    return {
        "json": base.with_suffix(".json"),
        "txt": base.with_suffix(".txt"),
        "png": base.with_suffix(".png"),
    }


def format_report(report: dict, top: int | None = None) -> str:
    from .validate import format_table

    rows = [
        ("rank", "Keras layer", "op", "channel SQNR dB", "SQNR dB", "rmse/scale", "scale", "in float with it")
    ]
    for r in report["layers"][:top]:
        rows.append(
            (
                str(r["rank"]),
                r["layer"] + (f" (+{', '.join(r['layers'][1:])})" if len(r["layers"]) > 1 else ""),
                r["op"],
                f"{r['channel_sqnr_db']:.1f}",
                f"{r['sqnr_db']:.1f}",
                f"{r['rmse_scale']:.3f}",
                f"{r['scale']:.3g}" if r["scale"] is not None else "-",
                ", ".join(n for n in r["float_with"] if n not in r["layers"]) or "-",
            )
        )
    weights = f", {report['weights']} weights" if "weights" in report else ""
    head = (
        f"int8 sensitivity of {report['model']} ({report['file']}{weights}), {report['calibration_images']} "
        f"calibration images; ranked by {report['ranked_by']}\n"
    )
    text = head + format_table(rows)
    if report.get("float_layers"):
        text += (
            f"\n\n{report['file']} keeps these layers in float (--float-layers): "
            f"{', '.join(report['float_layers'])}; the rows rank every layer as the full int8 calibration "
            "quantizes it, and in this file those layers are not quantized"
        )
    mixed = report.get("mixed")
    if mixed:
        kept = ", ".join(mixed["float_layers"]) or "none"
        text += (
            f"\n\nmixed ({mixed['gate']} on {mixed['held_back_images']} held-back images): layers in float: "
            f"{kept}; agreement {mixed['agreement']:.2f}% (full int8: {mixed['int8_agreement']:.2f}%)"
        )
    return text


def write_report(report: dict, folder, model_name: str) -> dict[str, Path]:
    """The report as JSON, a text table and a bar chart, each written atomically."""
    from kerascnn.runs import atomic_write_json, atomic_write_text

    paths = report_paths(folder, model_name)
    atomic_write_json(paths["json"], report)
    atomic_write_text(paths["txt"], format_report(report) + "\n")
    _bar_chart(report, paths["png"])
    return paths


def _bar_chart(report: dict, path: Path, top: int = 25):
    from kerascnn.runs import atomic_save_figure, pyplot

    plt = pyplot()

    rows = report["layers"][:top]
    floats = set((report.get("mixed") or {}).get("float_layers", ())) | set(report.get("float_layers", ()))
    fig, ax = plt.subplots(figsize=(8, 0.3 * len(rows) + 1.5))
    labels = [f"{r['layer']} ({r['op']})" for r in rows]
    floor = -80.0  # noise 80 dB under the signal: as good as exact (rows at 300 dB are exact)
    noise = [max(-r["channel_sqnr_db"], floor) for r in rows]
    colors = ["tab:red" if r["layer"] in floats else "tab:blue" for r in rows]
    ax.barh(range(len(rows)), [v - floor for v in noise], left=floor, color=colors)
    ax.set_xlim(floor, max(5.0, max(noise, default=0) + 5))
    ax.set_yticks(range(len(rows)), labels, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("int8 noise of the op's output, dB relative to signal (median channel; longer = worse)")
    title = f"int8 sensitivity: {report['model']}"
    if floats:
        title += " (red: kept in float" + (" by --quantize mixed)" if report.get("mixed") else ")")
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    atomic_save_figure(fig, path)


def read_report(path) -> dict:
    """A report from its JSON, or the report beside an exported file (``<name>_int8_report.json``)."""
    p = Path(path)
    if p.suffix.lower() == ".json":
        candidates = [p]
    else:
        from . import metadata as md

        meta = md.read_metadata(p)
        name = meta.model_name if meta is not None else p.stem.rsplit("_", 1)[0]
        candidates = [report_paths(p.parent, name)["json"]]
    for c in candidates:
        if c.is_file():
            try:
                return json.loads(c.read_text())
            except (OSError, ValueError) as e:
                raise MixedPrecisionError(f"{c}: not a kerascnn int8 report ({e})") from None
    raise FileNotFoundError(
        f"{p}: no int8 report ({candidates[0].name}); `kerascnn export ... --quantize int8` writes it"
    )
