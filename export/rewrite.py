"""Pooling the phone's CPU delegate takes: the exported graph's pools that XNNPACK (LiteRT's default CPU
delegate) leaves to LiteRT's own kernels, rewritten as depthwise convolutions every delegate takes (GPU,
NNAPI, XNNPACK), with the same numbers.

* ``MaxPooling2D`` with a 1x1 window (resnet20-110's option-A shortcut subsamples with it): XNNPACK's
  MAX_POOL_2D wants a window of more than one pixel. A 1x1 depthwise convolution with weights 1 and the
  pool's stride picks the same pixels (x * 1.0 is x, in float and in int8: 1.0 is exactly 127 steps of a
  per-channel scale of 1/127).
* ``AveragePooling2D`` with ``valid`` padding (LeNet-5's subsampling, DenseNet-BC's transitions):
  XNNPACK has no int8 AVERAGE_POOL_2D. A kxk depthwise convolution with weights 1/(k*k)
  and the pool's stride is the same mean (``same`` padding, NiN's middle pool, is left alone: the pool
  averages over the pixels inside the image only, the convolution would count the padding).

The Keras model the user exported (``.keras``, the ONNX files) is untouched; the rewrite feeds the TFLite
conversion only. The replaced layers keep their names, so reports and ``--float-layers`` name them as in
the Keras model. The tests check the float32 file against Keras (tests/export/test_accelerators.py).
"""

from __future__ import annotations

import keras


def _depthwise_for(layer):
    """The depthwise convolution that computes ``layer``, or None when it is not a pool to rewrite."""
    if getattr(layer, "data_format", "channels_last") != "channels_last":
        return None
    if isinstance(layer, keras.layers.MaxPooling2D) and tuple(layer.pool_size) == (1, 1):
        size, weight = (1, 1), 1.0
    elif isinstance(layer, keras.layers.AveragePooling2D) and layer.padding == "valid":
        size = tuple(layer.pool_size)
        weight = 1.0 / (size[0] * size[1])
    else:
        return None
    return keras.layers.DepthwiseConv2D(
        size, strides=layer.strides, padding=layer.padding, use_bias=False, name=layer.name,
        depthwise_initializer=keras.initializers.Constant(weight), dtype=layer.dtype_policy,
    )  # fmt: skip


def phone_pooling(model) -> tuple[keras.Model, list[str]]:
    """``model`` with its 1x1 max pools and valid average pools as depthwise convolutions (the other
    layers shared, not copied), and a line per rewritten layer; ``model`` itself when there is none or
    Keras cannot clone it."""
    rewritten: list[str] = []

    def clone(layer):
        depthwise = _depthwise_for(layer)
        if depthwise is None:
            return layer  # shared: the same weights
        kind = "max" if isinstance(layer, keras.layers.MaxPooling2D) else "average"
        window = "x".join(map(str, layer.pool_size))
        rewritten.append(f"{layer.name} ({kind} pool {window} -> DEPTHWISE_CONV_2D)")
        return depthwise

    if not any(_depthwise_for(layer) is not None for layer in model.layers):
        return model, []
    try:
        return keras.models.clone_model(model, clone_function=clone), rewritten
    except Exception:  # noqa: BLE001 - a model clone_model cannot rebuild (subclassed): converted as it is
        return model, []
