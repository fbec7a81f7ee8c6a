"""Network in Network (Lin, Chen & Yan, 2014).

Each MLPconv block is a k x k convolution followed by two 1x1 convolutions (a small MLP slid over
every position). The last block's final 1x1 convolution outputs one feature map per class, and global
average pooling turns the maps straight into class scores: there is no Dense layer, and because no
layer depends on the spatial size, the model accepts any input size (``input_shape=(None, None, C)``).

``nin`` is the CIFAR-10 network of the paper (192-160-96 / 192-192-192 / 192-192-classes);
``nin_imagenet`` is the four-block ImageNet model of the authors' Caffe release.
"""

from __future__ import annotations

from keras import layers

from .blocks import (
    check_common_args,
    finish,
    global_pool,
    model_input,
    model_inputs,
    pooled_features,
    resolve_input_shape,
)
from .registry import register_variant

# (kernel, stride, (filters of the k x k conv, 1x1, 1x1), pooling after the block: (type, size, stride))
CIFAR_BLOCKS = (
    (5, 1, (192, 160, 96), ("max", 3, 2)),
    (5, 1, (192, 192, 192), ("avg", 3, 2)),
    (3, 1, (192, 192, None), None),  # None: the class maps
)
IMAGENET_BLOCKS = (
    (11, 4, (96, 96, 96), ("max", 3, 2)),
    (5, 1, (256, 256, 256), ("max", 3, 2)),
    (3, 1, (384, 384, 384), ("max", 3, 2)),
    (3, 1, (1024, 1024, None), None),
)


def _mlpconv(x, kernel_size, strides, filters, block: int, padding: str):
    """k x k conv + two 1x1 convs, each with ReLU. Returns the tensor before the class conv if any."""
    x = layers.Conv2D(
        filters[0],
        kernel_size,
        strides=strides,
        padding=padding,
        activation="relu",
        name=f"block{block}_conv",
    )(x)
    x = layers.Conv2D(filters[1], 1, activation="relu", name=f"block{block}_mlp1")(x)
    if filters[2] is not None:
        x = layers.Conv2D(filters[2], 1, activation="relu", name=f"block{block}_mlp2")(x)
    return x


def NiN(
    model_name: str,
    blocks,
    first_padding: str = "same",
    input_shape=None,
    num_classes: int = 10,
    include_top: bool = True,
    pooling=None,
    weights=None,
    classifier_activation="softmax",
    input_tensor=None,
    dropout: float = 0.5,
    default_shape=(32, 32, 3),
    min_size: int = 1,
):
    """Generic Network in Network builder over a tuple of MLPconv ``blocks``."""
    check_common_args(model_name, include_top, pooling, num_classes, weights)
    input_shape = resolve_input_shape(
        model_name, input_shape, default_shape, min_size, allow_none=True, input_tensor=input_tensor
    )
    img_input = model_input(input_shape, input_tensor)
    x = img_input
    for block, (kernel, stride, filters, pool) in enumerate(blocks, start=1):
        padding = first_padding if block == 1 else "same"
        x = _mlpconv(x, kernel, stride, filters, block, padding)
        if pool is not None:
            kind, size, pstride = pool
            pool_layer = layers.MaxPooling2D if kind == "max" else layers.AveragePooling2D
            x = pool_layer(size, strides=pstride, padding="same", name=f"block{block}_pool")(x)
            if dropout:
                x = layers.Dropout(dropout, name=f"block{block}_dropout")(x)

    if include_top:
        # One 1x1 conv map per class, averaged over the image: the GAP head, no Dense layer.
        x = layers.Conv2D(num_classes, 1, name="class_conv")(x)
        x = global_pool(x, pooling, name="avg_pool")
        x = layers.Activation(classifier_activation or "linear", name="predictions")(x)
    else:
        x = pooled_features(x, pooling)
    return finish(model_name, model_inputs(img_input, input_tensor), x, weights)


nin = register_variant(
    NiN,
    "nin",
    family="nin",
    input_shape=(32, 32, 3),
    num_classes=10,
    min_size=1,
    reference="Lin et al. 2014, CIFAR-10 model",
    doc="Network in Network (CIFAR): three MLPconv blocks, global-average-pooled class maps, no Dense.",
    blocks=CIFAR_BLOCKS,
)
nin_imagenet = register_variant(
    NiN,
    "nin_imagenet",
    family="nin",
    input_shape=(224, 224, 3),
    num_classes=1000,
    min_size=11,
    reference="Lin et al. 2014, ImageNet model of the Caffe release",
    doc="Network in Network (ImageNet): four MLPconv blocks, GAP class maps, no Dense.",
    blocks=IMAGENET_BLOCKS,
    first_padding="valid",
)
