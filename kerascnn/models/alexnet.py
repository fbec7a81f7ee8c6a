"""AlexNet (Krizhevsky, Sutskever & Hinton, 2012).

Five convolutions (96-256-384-384-256) with overlapping 3x3/2 max pooling, then two 4096-unit dense
layers with dropout. ``groups=2`` reproduces the paper's two-GPU split as grouped convolutions in
conv2, conv4 and conv5 (the layers that only saw their own GPU's feature maps): 60,965,224 parameters
at 224x224x3 and 1000 classes, the paper's "60 million". ``groups=1`` is the single-tower variant
(62,378,344). Local response normalisation is not a standard Keras layer and is left out, as in
most modern re-implementations; ``batch_norm=True`` puts BatchNormalization after each conv instead.
"""

from __future__ import annotations

from keras import layers

from .blocks import (
    check_common_args,
    classifier,
    finish,
    model_input,
    model_inputs,
    pooled_features,
    resolve_input_shape,
)
from .registry import register_model


def _conv(x, filters, kernel_size, name, strides=1, padding="same", groups=1, batch_norm=False):
    x = layers.Conv2D(
        filters,
        kernel_size,
        strides=strides,
        padding=padding,
        groups=groups,
        use_bias=not batch_norm,
        name=name,
    )(x)
    if batch_norm:
        x = layers.BatchNormalization(name=f"{name}_bn")(x)
    return layers.Activation("relu", name=f"{name}_relu")(x)


@register_model(
    family="alexnet",
    input_shape=(224, 224, 3),
    num_classes=1000,
    min_size=63,
    reference="Krizhevsky et al. 2012: ~60M (groups=2: 60,965,224)",
    params=62_378_344,  # one group; the paper's two-GPU split (groups=2) has 60,965,224
)
def alexnet(
    input_shape=None,
    num_classes: int = 1000,
    include_top: bool = True,
    pooling=None,
    weights=None,
    classifier_activation="softmax",
    input_tensor=None,
    groups: int = 1,
    dropout: float = 0.5,
    batch_norm: bool = False,
):
    """AlexNet: 5 convs + 3 dense layers; ``groups=2`` for the original two-GPU split."""
    name = "alexnet"
    check_common_args(name, include_top, pooling, num_classes, weights)
    if groups not in (1, 2):
        raise ValueError(f"{name}: groups must be 1 or 2 (the paper's two-GPU split), got {groups}")
    input_shape = resolve_input_shape(
        name, input_shape, (224, 224, 3), min_size=63, input_tensor=input_tensor
    )
    img_input = model_input(input_shape, input_tensor)

    x = layers.ZeroPadding2D(2, name="conv1_pad")(img_input)  # 224 -> 55 as in the paper's 227 crop
    x = _conv(x, 96, 11, "conv1", strides=4, padding="valid", batch_norm=batch_norm)
    x = layers.MaxPooling2D(3, strides=2, name="pool1")(x)
    x = _conv(x, 256, 5, "conv2", groups=groups, batch_norm=batch_norm)
    x = layers.MaxPooling2D(3, strides=2, name="pool2")(x)
    x = _conv(x, 384, 3, "conv3", batch_norm=batch_norm)
    x = _conv(x, 384, 3, "conv4", groups=groups, batch_norm=batch_norm)
    x = _conv(x, 256, 3, "conv5", groups=groups, batch_norm=batch_norm)
    x = layers.MaxPooling2D(3, strides=2, name="pool5")(x)

    if include_top:
        x = layers.Flatten(name="flatten")(x) if pooling is None else pooled_features(x, pooling)
        x = layers.Dropout(dropout, name="drop6")(x)
        x = layers.Dense(4096, activation="relu", name="fc6")(x)
        x = layers.Dropout(dropout, name="drop7")(x)
        x = layers.Dense(4096, activation="relu", name="fc7")(x)
        x = classifier(x, num_classes, classifier_activation)
    else:
        x = pooled_features(x, pooling)
    return finish(name, model_inputs(img_input, input_tensor), x, weights)
