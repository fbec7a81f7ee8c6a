"""LeNet-5 (LeCun et al., 1998, "Gradient-based learning applied to document recognition").

Classic layout: C1 conv 6@5x5 -> S2 avg-pool 2 -> C3 conv 16@5x5 -> S4 avg-pool 2 -> C5 conv 120@5x5
-> F6 dense 84 -> output dense. At 32x32x1 and 10 classes that is 61,706 parameters. C3 is fully
connected to S2 (the paper's partial connection table is a hardware-era detail and not reproduced).
At 28x28 (MNIST without the paper's 2-pixel border) C1 uses "same" padding so C5 still sees 5x5.
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


@register_model(
    family="lenet",
    input_shape=(32, 32, 1),
    num_classes=10,
    min_size=28,
    reference="LeCun et al. 1998: 61,706",
    params=61_706,
)
def lenet5(
    input_shape=None,
    num_classes: int = 10,
    include_top: bool = True,
    pooling=None,
    weights=None,
    classifier_activation="softmax",
    input_tensor=None,
    activation: str = "tanh",
):
    """LeNet-5: 6-16-120-84 with average-pool subsampling (32x32 or 28x28 input)."""
    name = "lenet5"
    check_common_args(name, include_top, pooling, num_classes, weights)
    input_shape = resolve_input_shape(name, input_shape, (32, 32, 1), min_size=28, input_tensor=input_tensor)
    img_input = model_input(input_shape, input_tensor)
    # 28x28 inputs get the 2-pixel border the paper added to MNIST, as "same" padding in C1.
    c1_padding = "same" if input_shape[0] < 32 or input_shape[1] < 32 else "valid"

    x = layers.Conv2D(6, 5, padding=c1_padding, activation=activation, name="c1_conv")(img_input)
    x = layers.AveragePooling2D(2, name="s2_pool")(x)
    x = layers.Conv2D(16, 5, activation=activation, name="c3_conv")(x)
    x = layers.AveragePooling2D(2, name="s4_pool")(x)
    x = layers.Conv2D(120, 5, activation=activation, name="c5_conv")(x)
    if include_top:
        if pooling is None:
            x = layers.Flatten(name="flatten")(x)
        else:
            x = pooled_features(x, pooling)
        x = layers.Dense(84, activation=activation, name="f6")(x)
        x = classifier(x, num_classes, classifier_activation)
    else:
        x = pooled_features(x, pooling)
    return finish(name, model_inputs(img_input, input_tensor), x, weights)
