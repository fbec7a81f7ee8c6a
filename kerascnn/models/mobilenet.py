"""MobileNet v1 and v2, layer for layer as ``keras.applications`` builds them.

Both builders mirror ``keras/src/applications/mobilenet.py`` and ``mobilenet_v2.py`` with the same layer
names (``conv1``, ``conv_dw_1``, ``conv_pw_1_bn``, ``block_1_expand``, ``Conv_1``, ``conv_preds``,
``predictions`` ...), so Keras' ImageNet weight files map onto them by name and the parameter counts are
exactly those of keras.applications (4,253,864 and 3,538,984 at alpha 1.0 with 1000 classes). Unlike
keras.applications, any ``alpha > 0`` and any input size from the registered minimum up are accepted:
the restrictions there only exist for the pretrained ImageNet files.

The only layers keras leaves unnamed get deterministic names here: the input (``input``) and the
global pooling of the head (``avg_pool`` / ``max_pool``).
"""

from __future__ import annotations

import keras
from keras import layers

from . import pretrained
from .blocks import (
    check_common_args,
    classifier,
    finish,
    global_pool,
    model_input,
    model_inputs,
    pooled_features,
    resolve_input_shape,
)
from .registry import register_model

# Five stride-2 stages; a stride-2 depthwise block pads (0, 1) and needs at least 2x2 in. Working back from
# a 1x1 output: 2 <- 4 <- 8 <- 16 <- 31 (the first conv is "same", ceil(31 / 2) = 16). Also the minimum of
# a MobileNetV2 with input_shape=(None, None, 3), where the padding cannot depend on the size.
MIN_SIZE = 31
DEFAULT_SHAPE = (224, 224, 3)
_V2_BN = {"epsilon": 1e-3, "momentum": 0.999}

# MobileNet v1 (Howard et al. 2017, Table 1): (pointwise filters, stride) of the 13 separable blocks.
_V1_BLOCKS = (
    (64, 1),
    (128, 2),
    (128, 1),
    (256, 2),
    (256, 1),
    (512, 2),
    (512, 1),
    (512, 1),
    (512, 1),
    (512, 1),
    (512, 1),
    (1024, 2),
    (1024, 1),
)

# MobileNetV2 (Sandler et al. 2018, Table 2): (expansion t, output channels c, repeats n, first stride s).
_V2_STAGES = (
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)


def _check_alpha(model_name: str, alpha) -> float:
    if isinstance(alpha, bool) or not isinstance(alpha, int | float) or not alpha > 0:
        raise ValueError(f"{model_name}: alpha (the width multiplier) must be a number > 0, got {alpha!r}")
    return float(alpha)


def _make_divisible(v, divisor: int = 8, min_value: int | None = None) -> int:
    """Round ``v`` to a multiple of ``divisor`` without going below 90% of it (as keras and the paper)."""
    min_value = divisor if min_value is None else min_value
    new_v = max(min_value, int(v + divisor / 2) // divisor * divisor)
    if new_v < 0.9 * v:
        new_v += divisor
    return new_v


def _correct_pad(x, kernel_size: int):
    """Zero padding that makes a stride-2 "valid" conv behave like TF "same" (keras' ``correct_pad``).

    An even side gets (k//2 - 1, k//2), an odd side (k//2, k//2). A side unknown at build time (None)
    gets the even-side padding, as in keras.
    """
    correct = kernel_size // 2
    pads = []
    for size in x.shape[1:3]:
        adjust = 1 if size is None else 1 - size % 2
        pads.append((correct - adjust, correct))
    return tuple(pads)


# --------------------------------------------------------------------------------------------- v1


def _v1_conv_block(x, filters: int, strides=2):
    """The stem: 3x3 conv, BN, ReLU6 (``conv1``, ``conv1_bn``, ``conv1_relu``)."""
    x = layers.Conv2D(filters, 3, padding="same", use_bias=False, strides=strides, name="conv1")(x)
    x = layers.BatchNormalization(name="conv1_bn")(x)
    return layers.ReLU(6.0, name="conv1_relu")(x)


def _v1_depthwise_block(x, filters: int, depth_multiplier: int, strides: int, block_id: int):
    """Depthwise 3x3 conv - BN - ReLU6 - pointwise 1x1 conv - BN - ReLU6.

    Written as two layers instead of ``SeparableConv2D`` because the paper (and the keras weights) put a
    BatchNormalization and a ReLU6 between the depthwise and the pointwise convolution, which a
    ``SeparableConv2D`` layer cannot hold.
    """
    if strides == 1:
        padding = "same"
    else:  # TF "same" pads the bottom/right; keras pads explicitly and uses "valid"
        x = layers.ZeroPadding2D(((0, 1), (0, 1)), name=f"conv_pad_{block_id}")(x)
        padding = "valid"
    x = layers.DepthwiseConv2D(
        3,
        padding=padding,
        depth_multiplier=depth_multiplier,
        strides=strides,
        use_bias=False,
        name=f"conv_dw_{block_id}",
    )(x)
    x = layers.BatchNormalization(name=f"conv_dw_{block_id}_bn")(x)
    x = layers.ReLU(6.0, name=f"conv_dw_{block_id}_relu")(x)
    x = layers.Conv2D(filters, 1, padding="same", use_bias=False, strides=1, name=f"conv_pw_{block_id}")(x)
    x = layers.BatchNormalization(name=f"conv_pw_{block_id}_bn")(x)
    return layers.ReLU(6.0, name=f"conv_pw_{block_id}_relu")(x)


@register_model(
    family="mobilenet",
    input_shape=DEFAULT_SHAPE,
    num_classes=1000,
    min_size=MIN_SIZE,
    reference="Howard et al. 2017, MobileNets (arXiv:1704.04861); counts = keras.applications.MobileNet",
)
def mobilenet_v1(
    input_shape=None,
    num_classes: int = 1000,
    include_top: bool = True,
    pooling=None,
    weights=None,
    classifier_activation="softmax",
    input_tensor=None,
    alpha: float = 1.0,
    depth_multiplier: int = 1,
    dropout: float = 1e-3,
) -> keras.Model:
    """MobileNet v1: depthwise separable convolutions (4.25M params at alpha 1.0, 1000 classes).

    Layer for layer ``keras.applications.MobileNet``: a 3x3 stem, 13 depthwise separable blocks
    (``DepthwiseConv2D`` + BN + ReLU6 + 1x1 ``Conv2D`` + BN + ReLU6; not ``SeparableConv2D``, which cannot
    hold the BN and ReLU6 between its two convolutions), then global average pooling (kept 1x1), dropout, a
    1x1 conv classifier ``conv_preds``, a reshape and the activation ``predictions``.

    Args:
        alpha: width multiplier; every layer has ``int(filters * alpha)`` filters. Any value > 0 that
            leaves the stem at least one filter (alpha >= 1/32).
        depth_multiplier: channels per input channel of the depthwise convolutions (the paper's
            "resolution multiplier" in keras' naming).
        dropout: dropout rate before the classifier.
        pooling: with ``include_top=True``, ``"max"`` replaces the global average pooling of the head.
    """
    model_name = mobilenet_v1.model_name
    check_common_args(model_name, include_top, pooling, num_classes, weights)
    alpha = _check_alpha(model_name, alpha)
    if weights == "imagenet":
        pretrained.check_alpha(model_name, alpha)  # a width Keras publishes weights for
    if int(32 * alpha) < 1:
        raise ValueError(
            f"{model_name}: alpha={alpha} leaves the 32-filter stem with no filter; use alpha >= 1/32"
        )
    if weights == "imagenet" and depth_multiplier != 1:
        raise ValueError(f"{model_name}: ImageNet weights are published for depth_multiplier 1 only")
    if isinstance(depth_multiplier, bool) or not isinstance(depth_multiplier, int) or depth_multiplier < 1:
        raise ValueError(
            f"{model_name}: depth_multiplier must be a positive integer, got {depth_multiplier!r}"
        )
    if not 0 <= dropout < 1:
        raise ValueError(f"{model_name}: dropout must be in [0, 1), got {dropout!r}")
    input_shape = resolve_input_shape(
        model_name, input_shape, DEFAULT_SHAPE, MIN_SIZE, allow_none=True, input_tensor=input_tensor
    )

    img_input = model_input(input_shape, input_tensor)
    x = _v1_conv_block(img_input, int(32 * alpha), strides=2)
    for block_id, (filters, strides) in enumerate(_V1_BLOCKS, start=1):
        x = _v1_depthwise_block(x, int(filters * alpha), depth_multiplier, strides, block_id)

    if include_top:
        x = global_pool(x, pooling, name="avg_pool", keepdims=True)
        x = layers.Dropout(dropout, name="dropout")(x)
        x = layers.Conv2D(num_classes, 1, padding="same", name="conv_preds")(x)
        x = layers.Reshape((num_classes,), name="reshape_2")(x)
        x = layers.Activation(classifier_activation, name="predictions")(x)
    else:
        x = pooled_features(x, pooling)
    return finish(model_name, model_inputs(img_input, input_tensor), x, weights, alpha)


# --------------------------------------------------------------------------------------------- v2


def _inverted_res_block(x, expansion: int, stride: int, alpha: float, filters: int, block_id: int):
    """Inverted residual: 1x1 expand - BN - ReLU6 - 3x3 depthwise - BN - ReLU6 - 1x1 linear project - BN.

    Block 0 has no expansion and is named ``expanded_conv_*`` (as in keras); a residual ``Add`` joins
    input and output when the stride is 1 and the channel counts agree.
    """
    inputs = x
    in_channels = x.shape[-1]
    pointwise_filters = _make_divisible(int(filters * alpha), 8)
    prefix = f"block_{block_id}_"
    if block_id:
        x = layers.Conv2D(expansion * in_channels, 1, padding="same", use_bias=False, name=f"{prefix}expand")(
            x
        )
        x = layers.BatchNormalization(**_V2_BN, name=f"{prefix}expand_BN")(x)
        x = layers.ReLU(6.0, name=f"{prefix}expand_relu")(x)
    else:
        prefix = "expanded_conv_"
    if stride == 2:
        x = layers.ZeroPadding2D(padding=_correct_pad(x, 3), name=f"{prefix}pad")(x)
    x = layers.DepthwiseConv2D(
        3,
        strides=stride,
        use_bias=False,
        padding="same" if stride == 1 else "valid",
        name=f"{prefix}depthwise",
    )(x)
    x = layers.BatchNormalization(**_V2_BN, name=f"{prefix}depthwise_BN")(x)
    x = layers.ReLU(6.0, name=f"{prefix}depthwise_relu")(x)
    x = layers.Conv2D(pointwise_filters, 1, padding="same", use_bias=False, name=f"{prefix}project")(x)
    x = layers.BatchNormalization(**_V2_BN, name=f"{prefix}project_BN")(x)
    if in_channels == pointwise_filters and stride == 1:
        return layers.Add(name=f"{prefix}add")([inputs, x])
    return x


@register_model(
    family="mobilenet",
    input_shape=DEFAULT_SHAPE,
    num_classes=1000,
    min_size=MIN_SIZE,
    reference="Sandler et al. 2018, MobileNetV2 (arXiv:1801.04381); counts = keras.applications.MobileNetV2",
)
def mobilenet_v2(
    input_shape=None,
    num_classes: int = 1000,
    include_top: bool = True,
    pooling=None,
    weights=None,
    classifier_activation="softmax",
    input_tensor=None,
    alpha: float = 1.0,
) -> keras.Model:
    """MobileNetV2: inverted residuals with linear bottlenecks (3.54M params at alpha 1.0, 1000 classes).

    Layer for layer ``keras.applications.MobileNetV2``: a 3x3 stride-2 stem ``Conv1``, 17 inverted residual
    blocks (expand 1x1 - depthwise 3x3 - linear project 1x1, each followed by BN; ReLU6 after the first
    two), a 1x1 conv ``Conv_1`` to 1280 channels (``1280 * alpha`` when alpha > 1), global average pooling
    and the dense classifier ``predictions``. Depthwise and pointwise convolutions are separate layers
    (not ``SeparableConv2D``, which cannot hold the BN and ReLU6 between them).

    Stride-2 depthwise convolutions pad explicitly as keras' ``correct_pad`` does, so with a fixed input
    size the network builds down to 1x1 inputs; the registered minimum (31) is the one that also holds for
    ``input_shape=(None, None, 3)``, where the padding has to assume even sides.

    Args:
        alpha: width multiplier; channel counts are ``alpha`` times the paper's, rounded to multiples of 8.
        pooling: with ``include_top=True``, ``"max"`` replaces the global average pooling of the head.
    """
    model_name = mobilenet_v2.model_name
    check_common_args(model_name, include_top, pooling, num_classes, weights)
    alpha = _check_alpha(model_name, alpha)
    if weights == "imagenet":
        pretrained.check_alpha(model_name, alpha)  # a width Keras publishes weights for
    input_shape = resolve_input_shape(
        model_name, input_shape, DEFAULT_SHAPE, MIN_SIZE, allow_none=True, input_tensor=input_tensor
    )

    img_input = model_input(input_shape, input_tensor)
    x = layers.Conv2D(
        _make_divisible(32 * alpha, 8), 3, strides=2, padding="same", use_bias=False, name="Conv1"
    )(img_input)
    x = layers.BatchNormalization(**_V2_BN, name="bn_Conv1")(x)
    x = layers.ReLU(6.0, name="Conv1_relu")(x)

    block_id = 0
    for expansion, filters, repeats, first_stride in _V2_STAGES:
        for i in range(repeats):
            stride = first_stride if i == 0 else 1
            x = _inverted_res_block(x, expansion, stride, alpha, filters, block_id)
            block_id += 1

    last_block_filters = _make_divisible(1280 * alpha, 8) if alpha > 1.0 else 1280
    x = layers.Conv2D(last_block_filters, 1, use_bias=False, name="Conv_1")(x)
    x = layers.BatchNormalization(**_V2_BN, name="Conv_1_bn")(x)
    x = layers.ReLU(6.0, name="out_relu")(x)

    if include_top:
        x = global_pool(x, pooling, name="avg_pool")
        x = classifier(x, num_classes, classifier_activation)
    else:
        x = pooled_features(x, pooling)
    return finish(model_name, model_inputs(img_input, input_tensor), x, weights, alpha)
