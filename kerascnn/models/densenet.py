"""DenseNet (Huang et al. 2017): the ImageNet models of keras.applications and DenseNet-BC for small images.

``densenet121/169/201`` are layer for layer ``keras.applications.DenseNet121/169/201`` with the same layer
names (``conv1_conv``, ``conv2_block1_0_bn``, ``pool2_conv``, ``bn``, ``relu``, ``avg_pool``,
``predictions``), so Keras' weight files map onto them by name and the parameter counts are exact.
``densenet_bc`` is the CIFAR network of the paper (Section 3, "Implementation Details"): a 3x3 stem, three
dense blocks of bottleneck layers and two compressing transitions. Both are built by one family builder,
:func:`_densenet`, from the same blocks.
"""

from __future__ import annotations

import keras
from keras import layers

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
from .registry import register_variant

IMAGENET_SHAPE = (224, 224, 3)
CIFAR_SHAPE = (32, 32, 3)
# ImageNet stem: 7x7/2 conv and 3x3/2 max pool, both padded, take H to ceil(ceil(H / 2) / 2); then three
# 2x2/2 average pools need 8 -> 4 -> 2 -> 1, so ceil(H / 2) >= 15, H >= 29.
IMAGENET_MIN_SIZE = 29
# CIFAR stem keeps the size; two 2x2/2 average pools need 4 -> 2 -> 1.
CIFAR_MIN_SIZE = 4
_BN_EPSILON = 1.001e-5  # keras.applications' value (Torch's 1e-5 plus a margin for cuDNN)


def _bn_relu(x, name: str):
    x = layers.BatchNormalization(epsilon=_BN_EPSILON, name=f"{name}_bn")(x)
    return layers.Activation("relu", name=f"{name}_relu")(x)


def _conv_block(x, growth_rate: int, name: str, kernel_initializer):
    """Bottleneck layer: BN-ReLU-1x1 conv (4k) - BN-ReLU-3x3 conv (k), concatenated to its input."""
    x1 = _bn_relu(x, f"{name}_0")
    x1 = layers.Conv2D(
        4 * growth_rate, 1, use_bias=False, kernel_initializer=kernel_initializer, name=f"{name}_1_conv"
    )(x1)
    x1 = _bn_relu(x1, f"{name}_1")
    x1 = layers.Conv2D(
        growth_rate,
        3,
        padding="same",
        use_bias=False,
        kernel_initializer=kernel_initializer,
        name=f"{name}_2_conv",
    )(x1)
    return layers.Concatenate(name=f"{name}_concat")([x, x1])


def _dense_block(x, num_layers: int, growth_rate: int, name: str, kernel_initializer):
    for i in range(num_layers):
        x = _conv_block(x, growth_rate, f"{name}_block{i + 1}", kernel_initializer)
    return x


def _transition_block(x, compression: float, name: str, kernel_initializer):
    """BN-ReLU-1x1 conv to ``int(channels * compression)`` channels, then 2x2/2 average pooling."""
    filters = int(x.shape[-1] * compression)
    x = _bn_relu(x, name)
    x = layers.Conv2D(filters, 1, use_bias=False, kernel_initializer=kernel_initializer, name=f"{name}_conv")(
        x
    )
    return layers.AveragePooling2D(2, strides=2, name=f"{name}_pool")(x)


def _imagenet_stem(x, kernel_initializer):
    x = layers.ZeroPadding2D(padding=((3, 3), (3, 3)), name="conv1_pad")(x)
    x = layers.Conv2D(
        64, 7, strides=2, use_bias=False, kernel_initializer=kernel_initializer, name="conv1_conv"
    )(x)
    x = _bn_relu(x, "conv1")
    x = layers.ZeroPadding2D(padding=((1, 1), (1, 1)), name="pool1_pad")(x)
    return layers.MaxPooling2D(3, strides=2, name="pool1")(x)


def _densenet(
    model_name: str,
    blocks,
    growth_rate: int,
    stem: str,
    compression: float,
    *,
    default_shape,
    min_size: int,
    input_shape=None,
    num_classes: int = 1000,
    include_top: bool = True,
    pooling=None,
    weights=None,
    classifier_activation="softmax",
    input_tensor=None,
):
    """The family builder: a stem, dense blocks with a transition between each pair, BN-ReLU, the head.

    ``stem="imagenet"``: 7x7/2 conv (64) and 3x3/2 max pool, glorot init (keras.applications).
    ``stem="cifar"``: one 3x3 conv with ``2 * growth_rate`` filters, he_normal init (the paper's CIFAR code).
    Dense blocks are named ``conv2``, ``conv3``, ... and transitions ``pool2``, ``pool3``, ... as in keras.
    """
    check_common_args(model_name, include_top, pooling, num_classes, weights)
    if not 0 < compression <= 1:
        raise ValueError(f"{model_name}: compression must be in (0, 1], got {compression!r}")
    input_shape = resolve_input_shape(
        model_name, input_shape, default_shape, min_size, allow_none=True, input_tensor=input_tensor
    )

    img_input = model_input(input_shape, input_tensor)
    if stem == "imagenet":
        init = "glorot_uniform"
        x = _imagenet_stem(img_input, init)
    else:
        init = "he_normal"
        x = layers.Conv2D(
            2 * growth_rate, 3, padding="same", use_bias=False, kernel_initializer=init, name="conv1_conv"
        )(img_input)

    for i, num_layers in enumerate(blocks):
        x = _dense_block(x, num_layers, growth_rate, f"conv{i + 2}", init)
        if i < len(blocks) - 1:
            x = _transition_block(x, compression, f"pool{i + 2}", init)

    x = layers.BatchNormalization(epsilon=_BN_EPSILON, name="bn")(x)
    x = layers.Activation("relu", name="relu")(x)
    if include_top:
        x = global_pool(x, pooling, name="avg_pool")
        x = classifier(x, num_classes, classifier_activation)
    else:
        x = pooled_features(x, pooling)
    return finish(model_name, model_inputs(img_input, input_tensor), x, weights)


_IMAGENET_REF = "Huang et al. 2017, Densely Connected Convolutional Networks (arXiv:1608.06993), Table 1"


def _imagenet_variant(depth: int, blocks, params: str):
    return register_variant(
        _densenet,
        f"densenet{depth}",
        family="densenet",
        input_shape=IMAGENET_SHAPE,
        num_classes=1000,
        min_size=IMAGENET_MIN_SIZE,
        reference=f"{_IMAGENET_REF}; counts = keras.applications.DenseNet{depth}",
        doc=f"DenseNet-{depth} (k=32, blocks {'-'.join(map(str, blocks))}; {params} params), as "
        f"keras.applications.DenseNet{depth}.",
        blocks=blocks,
        growth_rate=32,
        stem="imagenet",
        compression=0.5,
    )


densenet121 = _imagenet_variant(121, (6, 12, 24, 16), "8.06M")
densenet169 = _imagenet_variant(169, (6, 12, 32, 32), "14.3M")
densenet201 = _imagenet_variant(201, (6, 12, 48, 32), "20.2M")


def _densenet_bc(
    model_name: str, depth: int = 100, growth_rate: int = 12, compression: float = 0.5, **kwargs
) -> keras.Model:
    if isinstance(depth, bool) or not isinstance(depth, int) or depth < 10 or (depth - 4) % 6:
        raise ValueError(
            f"{model_name}: depth must be 6n + 4 with n >= 1 (40, 100, 190, 250 ...), got {depth!r}"
        )
    if isinstance(growth_rate, bool) or not isinstance(growth_rate, int) or growth_rate < 1:
        raise ValueError(f"{model_name}: growth_rate must be a positive integer, got {growth_rate!r}")
    n = (depth - 4) // 6
    return _densenet(
        model_name, (n, n, n), growth_rate=growth_rate, stem="cifar", compression=compression, **kwargs
    )


def densenet_bc(
    depth: int = 100, growth_rate: int = 12, compression: float = 0.5, model_name: str | None = None, **kwargs
) -> keras.Model:
    """DenseNet-BC for 32x32 images (CIFAR/SVHN): any depth ``L = 6n + 4`` and growth rate ``k``; the
    other arguments are keras.applications' (``input_shape``, ``num_classes``, ``include_top``, ...).

    A 3x3 conv with 2k filters, three dense blocks of ``n = (L - 4) / 6`` bottleneck layers
    (BN-ReLU-1x1 conv 4k - BN-ReLU-3x3 conv k), transitions BN-ReLU-1x1 conv (``compression``) + 2x2/2
    average pooling between them, then BN-ReLU, global average pooling and the dense classifier. No conv
    biases. Depth counts the convolutions plus the classifier: 3n bottlenecks x 2 + stem + 2 transitions +
    dense = 6n + 4. With ``compression=1.0`` the transitions keep the width (DenseNet-B).
    """
    kwargs.setdefault("num_classes", 10)
    return _densenet_bc(
        model_name or f"densenet_bc{depth}_k{growth_rate}",
        depth,
        growth_rate,
        compression,
        default_shape=CIFAR_SHAPE,
        min_size=CIFAR_MIN_SIZE,
        **kwargs,
    )


_BC_REF = "Huang et al. 2017, Densely Connected Convolutional Networks (arXiv:1608.06993), Table 2"


def _bc_variant(depth: int, growth_rate: int, paper: str, counted: str):
    return register_variant(
        _densenet_bc,
        f"densenet_bc{depth}_k{growth_rate}",
        family="densenet",
        input_shape=CIFAR_SHAPE,
        num_classes=10,
        min_size=CIFAR_MIN_SIZE,
        reference=f"{_BC_REF}: DenseNet-BC (L={depth}, k={growth_rate}), {paper} params",
        doc=f"DenseNet-BC (L={depth}, k={growth_rate}) for 32x32 images: {counted} params (Huang et al. "
        f"2017, Table 2: {paper}).",
        depth=depth,
        growth_rate=growth_rate,
    )


densenet_bc100_k12 = _bc_variant(100, 12, "0.8M", "0.77M")
densenet_bc250_k24 = _bc_variant(250, 24, "15.3M", "15.3M")
densenet_bc190_k40 = _bc_variant(190, 40, "25.6M", "25.6M")
