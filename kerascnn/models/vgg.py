"""VGG (Simonyan & Zisserman, 2015): configurations A, B, D and E as vgg11, vgg13, vgg16, vgg19.

Stacks of 3x3 convolutions (two 3x3 see what one 5x5 sees, three see a 7x7, with fewer weights and
more non-linearities), five 2x2 max pools, and three dense layers. Layer names and parameter counts
match keras.applications VGG16/VGG19 (138,357,544 and 143,667,240 at 224x224x3, 1000 classes), so
their weights load by name. ``batch_norm=True`` inserts BatchNormalization after every convolution
(the ``vgg16_bn`` of later work); ``dropout`` (0.5 in the paper) follows fc1 and fc2.
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
from .registry import register_variant

CONFIGS = {
    "vgg11": (1, 1, 2, 2, 2),
    "vgg13": (2, 2, 2, 2, 2),
    "vgg16": (2, 2, 3, 3, 3),
    "vgg19": (2, 2, 4, 4, 4),
}
WIDTHS = (64, 128, 256, 512, 512)


def _vgg_block(x, convs: int, filters: int, block: int, batch_norm: bool):
    for i in range(1, convs + 1):
        name = f"block{block}_conv{i}"
        if batch_norm:
            x = layers.Conv2D(filters, 3, padding="same", name=name)(x)
            x = layers.BatchNormalization(name=f"{name}_bn")(x)
            x = layers.Activation("relu", name=f"{name}_relu")(x)
        else:
            x = layers.Conv2D(filters, 3, padding="same", activation="relu", name=name)(x)
    return layers.MaxPooling2D(2, strides=2, name=f"block{block}_pool")(x)


def VGG(
    model_name: str,
    convs_per_block,
    input_shape=None,
    num_classes: int = 1000,
    include_top: bool = True,
    pooling=None,
    weights=None,
    classifier_activation="softmax",
    input_tensor=None,
    batch_norm: bool = False,
    dropout: float = 0.5,
    default_shape=(224, 224, 3),
    min_size: int = 32,
):
    """Generic VGG builder: ``convs_per_block`` gives the number of 3x3 convs in each of 5 blocks."""
    check_common_args(model_name, include_top, pooling, num_classes, weights)
    input_shape = resolve_input_shape(
        model_name, input_shape, default_shape, min_size, input_tensor=input_tensor
    )
    img_input = model_input(input_shape, input_tensor)
    x = img_input
    for block, (convs, filters) in enumerate(zip(convs_per_block, WIDTHS, strict=True), start=1):
        x = _vgg_block(x, convs, filters, block, batch_norm)

    if include_top:
        x = layers.Flatten(name="flatten")(x) if pooling is None else pooled_features(x, pooling)
        x = layers.Dense(4096, activation="relu", name="fc1")(x)
        if dropout:
            x = layers.Dropout(dropout, name="drop1")(x)
        x = layers.Dense(4096, activation="relu", name="fc2")(x)
        if dropout:
            x = layers.Dropout(dropout, name="drop2")(x)
        x = classifier(x, num_classes, classifier_activation)
    else:
        x = pooled_features(x, pooling)
    return finish(model_name, model_inputs(img_input, input_tensor), x, weights)


def _variant(name: str, config_letter: str):
    return register_variant(
        VGG,
        name,
        family="vgg",
        input_shape=(224, 224, 3),
        num_classes=1000,
        min_size=32,
        reference=f"Simonyan & Zisserman 2015, configuration {config_letter}",
        doc=f"{name.upper()} (configuration {config_letter}): {sum(CONFIGS[name]) + 3} weight layers.",
        convs_per_block=CONFIGS[name],
    )


vgg11 = _variant("vgg11", "A")
vgg13 = _variant("vgg13", "B")
vgg16 = _variant("vgg16", "D")
vgg19 = _variant("vgg19", "E")
