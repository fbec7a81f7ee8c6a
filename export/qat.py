"""The QAT scheme (worker process only): the QuantizeConfig classes, which layers need one and why
(:func:`build_qat_model`: a BatchNormalization that follows no convolution becomes a 1x1
DepthwiseConv2D, AveragePooling keeps its input's scale, an unsupported layer gets an output-only
8-bit config), reloading a QAT ``.h5``, and its conversion to a full-integer TFLite file, checked op
by op."""

from __future__ import annotations

import re
import tempfile

import numpy as np

from kerascnn.keras_internals import inbound_nodes, node_in_model, outbound_nodes, producer

from .finetune import at_layer, import_tfmot
from .jobs import QuantizeError
from .tflite import float_ops, no_debug_info_reload

_CONFIG_CLASSES: dict = {}


def _quantize_config_classes() -> dict:
    """The worker's QuantizeConfig classes (built on first use: tfmot must not be imported at import)."""
    if _CONFIG_CLASSES:
        return _CONFIG_CLASSES
    tfmot = import_tfmot()
    quantizers = tfmot.quantization.keras.quantizers

    class OutputQuantizeConfig(tfmot.quantization.keras.QuantizeConfig):
        """8-bit fake quantization of a layer's output only (or of nothing, ``quantize_output=False``):
        for layers the default 8-bit registry has no rule for, and for AveragePooling, whose int8
        output must keep its input's scale."""

        def __init__(self, quantize_output: bool = True):
            self.quantize_output = quantize_output

        def get_weights_and_quantizers(self, layer):
            return []

        def get_activations_and_quantizers(self, layer):
            return []

        def set_quantize_weights(self, layer, quantize_weights):
            pass

        def set_quantize_activations(self, layer, quantize_activations):
            pass

        def get_output_quantizers(self, layer):
            if not self.quantize_output:
                return []
            return [
                quantizers.MovingAverageQuantizer(
                    num_bits=8, per_axis=False, symmetric=False, narrow_range=False
                )
            ]

        def get_config(self):
            return {"quantize_output": self.quantize_output}

    _CONFIG_CLASSES["OutputQuantizeConfig"] = OutputQuantizeConfig
    return _CONFIG_CLASSES


def _quantize_scope():
    tfmot = import_tfmot()
    return tfmot.quantization.keras.quantize_scope(dict(_quantize_config_classes()))


def load_qat_model(path):
    """Reload a QAT ``.h5`` written by the worker (worker process only: imports tfmot)."""
    import tf_keras

    with _quantize_scope():
        return tf_keras.models.load_model(path, compile=False)


_FOLDABLE_INTO = ("Conv2D", "DepthwiseConv2D", "Dense")
# TFLite's int8 AVERAGE_POOL_2D needs the same scale on input and output; the default 8-bit registry
# quantizes the output on its own, and the converter then fails ("quantization parameters violate the
# same scale constraint") whenever the two learnt ranges differ, as after DenseNet's transition conv.
_SAME_SCALE = ("AveragePooling1D", "AveragePooling2D", "AveragePooling3D")
_SUPPORTED_ACTIVATIONS = {"relu", "relu6", "swish", "gelu", "linear", "softmax", "sigmoid", "tanh"}


def _activation_name(layer) -> str | None:
    activation = getattr(layer, "activation", None)
    if activation is None:
        return None
    return getattr(activation, "__name__", type(activation).__name__)


def _inbound_layers(model, layer) -> list:
    """The layers feeding ``layer`` in ``model`` (a layer can have calls in other models too, as after
    ``strip_pruning``); [] unless it is called exactly once in ``model``."""
    nodes = [n for n in inbound_nodes(layer) if node_in_model(model, n)]
    if len(nodes) != 1:
        return []
    inbound = nodes[0].inbound_layers
    return list(inbound) if isinstance(inbound, list | tuple) else [inbound]


def _consumers(model, layer) -> int:
    """How many calls in ``model`` take ``layer``'s output, plus one if it is a model output."""
    count = sum(1 for node in outbound_nodes(layer) if node_in_model(model, node))
    return count + sum(1 for t in model.outputs if producer(t) is layer)


def _needs_custom_config(model, layer, registry) -> str | None:
    """Why ``layer`` needs the output-only config (None when the default 8-bit scheme handles it)."""
    kind = type(layer).__name__
    if kind == "InputLayer":
        return None
    if kind in _SAME_SCALE:
        return f"{kind} must keep its input's int8 scale in TFLite, so its output is not re-quantized"
    if registry.supports(layer):
        if kind == "Activation" and _activation_name(layer) not in _SUPPORTED_ACTIVATIONS:
            return f"activation '{_activation_name(layer)}' has no 8-bit rule"
        return None
    if kind in ("BatchNormalization", "SyncBatchNormalization"):
        # the ones that cannot fold were rewritten by build_qat_model; quantize_apply reports a miss
        inbound = _inbound_layers(model, layer)
        if len(inbound) == 1 and type(inbound[0]).__name__ in _FOLDABLE_INTO:
            return None  # folded into the convolution by the default 8-bit transforms
    return f"{kind} has no rule in the default 8-bit registry: output-only 8-bit"


def _annotate(model, custom: dict[str, str]):
    """Annotate every layer for QAT; layers in ``custom`` get the output-only config."""
    import tf_keras

    tfmot = import_tfmot()
    qk = tfmot.quantization.keras
    output_config = _quantize_config_classes()["OutputQuantizeConfig"]

    def annotate(layer):
        if isinstance(layer, tf_keras.Model):
            raise QuantizeError(f"layer '{layer.name}' is a nested model; flatten it before QAT")
        if layer.name in custom:
            config = output_config(quantize_output=type(layer).__name__ not in _SAME_SCALE)
            return qk.quantize_annotate_layer(layer, quantize_config=config)
        return qk.quantize_annotate_layer(layer)

    with _quantize_scope():
        return tf_keras.models.clone_model(model, clone_function=annotate)


def _standalone_batchnorms(model) -> dict[str, str]:
    """BatchNormalization layers the default 8-bit transforms cannot fold into a convolution, with the
    reason: they would convert to a float MUL + ADD pair (the product has no int8 range)."""
    out = {}
    for layer in model.layers:
        if type(layer).__name__ not in ("BatchNormalization", "SyncBatchNormalization"):
            continue
        inbound = _inbound_layers(model, layer)
        if (
            len(inbound) == 1
            and type(inbound[0]).__name__ in _FOLDABLE_INTO
            and _activation_name(inbound[0]) == "linear"
            and _consumers(model, inbound[0]) == 1
        ):
            continue  # folded into the convolution by the default 8-bit transforms
        axis = (
            layer.axis if isinstance(layer.axis, int) else (layer.axis[0] if len(layer.axis) == 1 else None)
        )
        rank = len(layer.input_shape) if isinstance(layer.input_shape, tuple) else 0
        if rank != 4 or axis not in (-1, 3):
            continue  # left as it is: the full-int8 check names it if it stays float
        if len(inbound) == 1:
            source = f"{inbound[0].name} ({type(inbound[0]).__name__})"
            if type(inbound[0]).__name__ in _FOLDABLE_INTO:
                source += " which feeds other layers too" if _consumers(model, inbound[0]) > 1 else ""
        else:
            source = "several inputs"
        out[layer.name] = (
            f"BatchNormalization after {source}, no convolution to fold into: runs as a 1x1 "
            "DepthwiseConv2D with its moving statistics frozen (int8 per-channel scale)"
        )
    return out


def _affine_preprocessing(model) -> dict[str, tuple[str, np.ndarray, np.ndarray]]:
    """Rescaling and Normalization layers on 4-D maps (a user's model normalizes its input with them),
    as ``{name: (reason, scale, offset)}``: each computes ``x * scale + offset`` per channel. Kept as
    they are, QAT gives them an output-only config and TFLite keeps their MUL and ADD in float."""
    out = {}
    for layer in model.layers:
        kind = type(layer).__name__
        shape = layer.input_shape if isinstance(layer.input_shape, tuple) else ()
        if kind not in ("Rescaling", "Normalization") or len(shape) != 4 or shape[-1] is None:
            continue
        channels = int(shape[-1])
        if kind == "Rescaling":
            scale = np.broadcast_to(np.asarray(layer.scale, np.float32), (channels,))
            offset = np.broadcast_to(np.asarray(layer.offset, np.float32), (channels,))
        else:
            if layer.invert or tuple(layer.axis) not in ((-1,), (3,)):
                continue
            weights = layer.get_weights()
            if len(weights) < 2:
                continue
            mean, variance = (np.asarray(w, np.float32).reshape(-1) for w in weights[:2])
            scale = 1.0 / np.maximum(np.sqrt(variance), 1e-7)
            scale = np.broadcast_to(scale, (channels,))
            offset = np.broadcast_to(-mean * scale, (channels,))
        out[layer.name] = (
            f"{kind} (input normalization) runs as a 1x1 DepthwiseConv2D with the same scale and offset "
            "(int8 per-channel)",
            np.array(scale, np.float32),
            np.array(offset, np.float32),
        )
    return out


def _affine_as_depthwise(model, affine):
    """A copy of the tf_keras ``model`` where each layer in ``affine`` ({name: (_, scale, offset)}) is
    ``DepthwiseConv2D(1)`` with kernel ``scale`` and bias ``offset``, under the same name."""
    import tf_keras

    def clone(layer):
        if layer.name in affine:
            return tf_keras.layers.DepthwiseConv2D(1, use_bias=True, name=layer.name)
        return layer.__class__.from_config(layer.get_config())

    new = tf_keras.models.clone_model(model, clone_function=clone)
    for layer in model.layers:
        target = new.get_layer(layer.name)
        if layer.name in affine:
            _, scale, offset = affine[layer.name]
            target.set_weights([scale.reshape(1, 1, -1, 1), offset])
        else:
            target.set_weights(layer.get_weights())
    return new


def _batchnorm_as_depthwise(model, names):
    """A copy of the tf_keras ``model`` where each BatchNormalization in ``names`` is the equivalent
    inference-mode affine map, ``DepthwiseConv2D(1)`` with kernel ``gamma / sqrt(var + eps)`` and bias
    ``beta - mean * kernel``, under the same name. Every other layer keeps its weights."""
    import tf_keras

    def clone(layer):
        if layer.name in names:
            return tf_keras.layers.DepthwiseConv2D(
                1, use_bias=True, name=layer.name, dtype=layer.dtype_policy
            )
        return layer.__class__.from_config(layer.get_config())

    new = tf_keras.models.clone_model(model, clone_function=clone)
    for layer in model.layers:
        target = new.get_layer(layer.name)
        if layer.name not in names:
            target.set_weights(layer.get_weights())
            continue
        variance = np.asarray(layer.moving_variance)
        scale = 1.0 / np.sqrt(variance + layer.epsilon)
        if layer.gamma is not None:
            scale = scale * np.asarray(layer.gamma)
        bias = -np.asarray(layer.moving_mean) * scale
        if layer.beta is not None:
            bias = bias + np.asarray(layer.beta)
        target.set_weights([scale.reshape(1, 1, -1, 1).astype(np.float32), bias.astype(np.float32)])
    return new


def build_qat_model(tfk_model, scheme=None):
    """``quantize_apply`` over an annotated copy of ``tfk_model``; returns (qat_model, special) where
    ``special`` maps the layers handled differently from the default 8-bit scheme to the reason.

    * A BatchNormalization the scheme cannot fold into a convolution (after Concatenate, pooling, Add,
      or a convolution that feeds two layers) becomes a 1x1 DepthwiseConv2D with the same numbers:
      an output-only QuantizeConfig would leave TFLite a float MUL + ADD.
    * A Rescaling or Normalization layer (a user's input normalization) becomes a 1x1 DepthwiseConv2D
      with its per-channel scale and offset, for the same reason.
    * AveragePooling keeps its input's scale (TFLite requires it), through a QuantizeConfig without
      output quantization.
    * Any other layer the registry has no rule for (or that ``quantize_apply`` rejects) gets an
      output-only 8-bit QuantizeConfig; if it still converts to a float op, the full-int8 check
      after conversion names it.
    """
    tfmot = import_tfmot()
    qk = tfmot.quantization.keras
    registry = qk.default_8bit.Default8BitQuantizeRegistry()
    special = _standalone_batchnorms(tfk_model)
    if special:
        tfk_model = _batchnorm_as_depthwise(tfk_model, set(special))
    affine = _affine_preprocessing(tfk_model)
    if affine:
        tfk_model = _affine_as_depthwise(tfk_model, affine)
        special |= {name: reason for name, (reason, _, _) in affine.items()}
    custom = {}
    for layer in tfk_model.layers:
        reason = _needs_custom_config(tfk_model, layer, registry)
        if reason:
            custom[layer.name] = reason
    names = {layer.name: type(layer).__name__ for layer in tfk_model.layers}
    for _ in range(len(tfk_model.layers)):
        annotated = _annotate(tfk_model, custom)
        try:
            with _quantize_scope():
                if scheme is None:
                    return qk.quantize_apply(annotated), {**special, **custom}
                return qk.quantize_apply(annotated, scheme), {**special, **custom}
        except (RuntimeError, ValueError) as err:
            match = re.search(r"Layer (\S+?):<class", str(err))
            if match and match.group(1) in names and match.group(1) not in custom:
                custom[match.group(1)] = (
                    f"{names[match.group(1)]} rejected by quantize_apply: output-only 8-bit"
                )
                continue
            culprit = at_layer(str(err), names)
            raise QuantizeError(f"cannot prepare the model for QAT{culprit}: {err}") from err
    raise QuantizeError("cannot prepare the model for QAT: quantize_apply keeps rejecting layers")


def convert_int8(qat_model, io_type: str, batch: int | None = 1) -> bytes:
    """Full-integer TFLite from the QAT model: the fake-quantization ranges learnt in training give
    every tensor its int8 scale, so no representative dataset (and no calibration) is involved.

    ``supported_ops`` stays the builtin set: TF 2.21's converter rejects ``TFLITE_BUILTINS_INT8``
    without a representative dataset even for QAT models (its metrics pass checks for one before it
    has seen the graph), and a representative dataset would re-calibrate the QAT ranges. Instead,
    :func:`_check_full_integer` verifies afterwards that every op runs in int8.
    """
    import tensorflow as tf

    with tempfile.TemporaryDirectory(prefix="kerascnn-qat-savedmodel-") as saved_model:
        _save_inference_function(qat_model, saved_model, batch)
        converter = tf.lite.TFLiteConverter.from_saved_model(saved_model)
        return _convert(converter, qat_model, io_type)


def _save_inference_function(model, folder: str, batch: int | None = 1) -> None:
    """A SavedModel with one serving function, ``model(x, training=False)``, and the model's variables.

    Saving the tf_keras model itself (what ``from_keras_model`` does) also traces and saves every
    layer's call functions: 4-5x slower for the same TFLite file. The input and output keep the Keras
    names (``input`` -> ``predictions``; the QAT wrapper's ``quant_`` prefix dropped).
    """
    import tensorflow as tf

    input_name = model.inputs[0].name.split(":")[0]
    output_name = model.output_names[0]
    output_name = output_name[len("quant_") :] if output_name.startswith("quant_") else output_name
    spec = tf.TensorSpec([batch, *model.input_shape[1:]], tf.float32, name=input_name)  # 1: a phone file
    module = tf.Module()
    module.model_variables = list(model.variables)
    module.serve = tf.function(lambda x: {output_name: model(x, training=False)}, input_signature=[spec])
    tf.saved_model.save(module, folder, signatures={"serving_default": module.serve})


def _convert(converter, qat_model, io_type: str) -> bytes:
    import tensorflow as tf

    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    dtype = {"float32": tf.float32, "int8": tf.int8, "uint8": tf.uint8}[io_type]
    converter.inference_input_type = dtype
    converter.inference_output_type = dtype
    names = {}
    for layer in qat_model.layers:
        inner = getattr(layer, "layer", layer)
        names[layer.name] = type(inner).__name__
        names[inner.name] = type(inner).__name__
    try:
        with no_debug_info_reload():
            tflite = converter.convert()
    except Exception as err:  # the converter raises ConverterError and friends
        raise QuantizeError(f"int8 TFLite conversion failed{at_layer(str(err), names)}: {err}") from err
    in_float = float_ops(tflite)
    if in_float:
        op, tensor = in_float[0]
        raise QuantizeError(
            f"the TFLite model is not fully int8{at_layer(tensor, names)}: {len(in_float)} op(s) still "
            f"run in float, first {op} on tensor '{tensor}'; that layer needs a QuantizeConfig"
        )
    return tflite
