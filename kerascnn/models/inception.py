"""GoogLeNet / Inception v1 (Szegedy et al. 2014, "Going Deeper with Convolutions", Table 1).

Layer names follow the paper's Caffe model with ``/`` replaced by ``_``: ``conv1_7x7_s2``,
``inception_3a_1x1``, ``inception_3a_3x3_reduce``, ``inception_3a_pool_proj``, ``inception_3a_concat``,
``aux1_fc``, ``predictions``.

Parameter count (1000 classes, no auxiliary heads): 6,998,552, of which 8,280 are biases; the tests
check it against a closed-form formula over Table 1's filter numbers. The paper's Table 1 adds up to
about 6.8M because its "params" column leaves out biases and counts in units of 1024 (conv2 has 114,688
weights = "112K", the classifier 1,024,000 = "1000K"); a few of its rows are also a little off (conv1 has
9,408 weights, listed as "2.7K").

Training with the auxiliary classifiers::

    model = googlenet(aux_logits=True)
    weights = googlenet_loss_weights()  # {"predictions": 1.0, "aux1_predictions": 0.3, ...}
    losses = {name: "sparse_categorical_crossentropy" for name in weights}  # one loss per output
    model.compile(optimizer, loss=losses, loss_weights=weights)
    model.fit(x, {name: y for name in weights})
    inference = strip_auxiliary_heads(model)  # same layers, one output
"""

from __future__ import annotations

import keras
from keras import layers

from .blocks import (
    InputShapeError,
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

DEFAULT_SHAPE = (224, 224, 3)
# Every conv and pool is "same" padded: each of the five stride-2 layers maps H to ceil(H / 2) >= 1.
MIN_SIZE = 1
# The auxiliary heads sit at 1/16 resolution (ceil(H / 16)) and start with a "valid" 5x5 average pool.
AUX_MIN_SIZE = 65
AUX_LOSS_WEIGHT = 0.3  # "their loss is added to the total loss of the network with a discount weight" (0.3)

# Table 1: name -> (#1x1, #3x3 reduce, #3x3, #5x5 reduce, #5x5, pool proj)
INCEPTION_SPECS = {
    "3a": (64, 96, 128, 16, 32, 32),
    "3b": (128, 128, 192, 32, 96, 64),
    "4a": (192, 96, 208, 16, 48, 64),
    "4b": (160, 112, 224, 24, 64, 64),
    "4c": (128, 128, 256, 24, 64, 64),
    "4d": (112, 144, 288, 32, 64, 64),
    "4e": (256, 160, 320, 32, 128, 128),
    "5a": (256, 160, 320, 32, 128, 128),
    "5b": (384, 192, 384, 48, 128, 128),
}


def _conv(x, filters: int, kernel_size: int, name: str, batch_norm: bool, strides: int = 1):
    """Conv2D (``name``) -> [BatchNormalization (``name_bn``)] -> ReLU (``name_relu``).

    With ``batch_norm`` the conv has no bias (the BN's beta takes its place).
    """
    x = layers.Conv2D(
        filters, kernel_size, strides=strides, padding="same", use_bias=not batch_norm, name=name
    )(x)
    if batch_norm:
        x = layers.BatchNormalization(epsilon=1e-3, name=f"{name}_bn")(x)
    return layers.ReLU(name=f"{name}_relu")(x)


def _inception_module(x, spec, name: str, batch_norm: bool):
    """Four parallel branches, concatenated: 1x1; 1x1 -> 3x3; 1x1 -> 5x5; 3x3 max pool -> 1x1."""
    n1x1, n3x3_reduce, n3x3, n5x5_reduce, n5x5, pool_proj = spec
    b1 = _conv(x, n1x1, 1, f"{name}_1x1", batch_norm)
    b2 = _conv(x, n3x3_reduce, 1, f"{name}_3x3_reduce", batch_norm)
    b2 = _conv(b2, n3x3, 3, f"{name}_3x3", batch_norm)
    b3 = _conv(x, n5x5_reduce, 1, f"{name}_5x5_reduce", batch_norm)
    b3 = _conv(b3, n5x5, 5, f"{name}_5x5", batch_norm)
    b4 = layers.MaxPooling2D(3, strides=1, padding="same", name=f"{name}_pool")(x)
    b4 = _conv(b4, pool_proj, 1, f"{name}_pool_proj", batch_norm)
    return layers.Concatenate(name=f"{name}_concat")([b1, b2, b3, b4])


def _aux_head(x, num_classes: int, classifier_activation, name: str, batch_norm: bool):
    """Auxiliary classifier (Section 5): 5x5/3 avg pool, 1x1 conv 128, FC 1024, dropout 0.7, classifier."""
    x = layers.AveragePooling2D(5, strides=3, padding="valid", name=f"{name}_avg_pool")(x)
    x = _conv(x, 128, 1, f"{name}_conv", batch_norm)
    x = layers.Flatten(name=f"{name}_flatten")(x)
    x = layers.Dense(1024, activation="relu", name=f"{name}_fc")(x)
    x = layers.Dropout(0.7, name=f"{name}_dropout")(x)
    return classifier(x, num_classes, classifier_activation, name=f"{name}_predictions")


@register_model(
    family="inception",
    input_shape=DEFAULT_SHAPE,
    num_classes=1000,
    min_size=MIN_SIZE,
    reference="Szegedy et al. 2014, Going Deeper with Convolutions (arXiv:1409.4842), Table 1 "
    "(listed as 6.8M in units of 1024 without biases; 6,998,552 exact)",
)
def googlenet(
    input_shape=None,
    num_classes: int = 1000,
    include_top: bool = True,
    pooling=None,
    weights=None,
    classifier_activation="softmax",
    input_tensor=None,
    aux_logits: bool = False,
    dropout: float = 0.4,
    batch_norm: bool = False,
) -> keras.Model:
    """GoogLeNet / Inception v1: nine Inception modules, global average pooling (7.0M params).

    Table 1 of the paper: 7x7/2 conv 64, 3x3/2 max pool, 1x1 conv 64, 3x3 conv 192, 3x3/2 max pool,
    Inception 3a-3b, max pool, 4a-4e, max pool, 5a-5b, global average pooling, dropout 0.4, dense
    classifier. All convolutions are followed by ReLU; all convs and pools use "same" padding, which
    reproduces the paper's output sizes (112, 56, 28, 14, 7 at 224x224).

    The paper's local response normalization (after pool1 and after conv2) is left out: it is not a
    standard Keras layer (and converters have no common op for it). ``batch_norm=True`` instead puts a
    BatchNormalization after every convolution (and drops the conv biases), the modern way to train it.

    Args:
        aux_logits: add the two auxiliary classifiers on the outputs of 4a and 4d (for training); the
            model then returns ``[predictions, aux1_predictions, aux2_predictions]``. Compile it with
            ``loss_weights=googlenet_loss_weights()`` and drop the heads for inference with
            :func:`strip_auxiliary_heads`. Needs ``include_top=True`` and a fixed input of at least
            65x65 (the heads' 5x5 "valid" pooling at 1/16 resolution).
        dropout: dropout rate before the main classifier.
        batch_norm: BatchNormalization after every convolution.
        pooling: with ``include_top=True``, ``"max"`` replaces the global average pooling of the head.
    """
    model_name = googlenet.model_name
    check_common_args(model_name, include_top, pooling, num_classes, weights)
    if not 0 <= dropout < 1:
        raise ValueError(f"{model_name}: dropout must be in [0, 1), got {dropout!r}")
    if aux_logits and not include_top:
        raise ValueError(
            f"{model_name}: aux_logits=True adds auxiliary classifiers, which needs include_top=True; "
            "for a feature extractor use aux_logits=False"
        )
    input_shape = resolve_input_shape(
        model_name, input_shape, DEFAULT_SHAPE, MIN_SIZE, allow_none=not aux_logits, input_tensor=input_tensor
    )
    if aux_logits and min(input_shape[:2]) < AUX_MIN_SIZE:
        raise InputShapeError(
            f"{model_name}: with aux_logits=True the input must be at least {AUX_MIN_SIZE}x{AUX_MIN_SIZE} "
            f"(the auxiliary heads' 5x5 valid average pooling at 1/16 resolution); got "
            f"{input_shape[0]}x{input_shape[1]}. Use a larger input or aux_logits=False"
        )

    img_input = model_input(input_shape, input_tensor)
    x = _conv(img_input, 64, 7, "conv1_7x7_s2", batch_norm, strides=2)
    x = layers.MaxPooling2D(3, strides=2, padding="same", name="pool1_3x3_s2")(x)
    x = _conv(x, 64, 1, "conv2_3x3_reduce", batch_norm)
    x = _conv(x, 192, 3, "conv2_3x3", batch_norm)
    x = layers.MaxPooling2D(3, strides=2, padding="same", name="pool2_3x3_s2")(x)

    aux_outputs = []
    for stage, pool_name in (("3", "pool3_3x3_s2"), ("4", "pool4_3x3_s2"), ("5", None)):
        for key in (k for k in INCEPTION_SPECS if k[0] == stage):
            x = _inception_module(x, INCEPTION_SPECS[key], f"inception_{key}", batch_norm)
            if aux_logits and key in ("4a", "4d"):
                aux_name = "aux1" if key == "4a" else "aux2"
                aux_outputs.append(_aux_head(x, num_classes, classifier_activation, aux_name, batch_norm))
        if pool_name:
            x = layers.MaxPooling2D(3, strides=2, padding="same", name=pool_name)(x)

    if include_top:
        x = global_pool(x, pooling, name="avg_pool")
        if dropout > 0:
            x = layers.Dropout(dropout, name="dropout")(x)
        x = classifier(x, num_classes, classifier_activation)
    else:
        x = pooled_features(x, pooling)
    outputs = [x, *aux_outputs] if aux_logits else x
    return finish(model_name, model_inputs(img_input, input_tensor), outputs, weights)


def googlenet_loss_weights() -> dict:
    """``loss_weights`` for a ``googlenet(aux_logits=True)`` model: 1.0 for the main output, 0.3 per aux."""
    return {"predictions": 1.0, "aux1_predictions": AUX_LOSS_WEIGHT, "aux2_predictions": AUX_LOSS_WEIGHT}


def strip_auxiliary_heads(model: keras.Model) -> keras.Model:
    """The single-output inference model of a GoogLeNet trained with ``aux_logits=True``.

    The returned model shares its layers (and so its weights) with ``model``; the auxiliary heads are
    simply not on the path from the input to ``predictions``.
    """
    try:
        predictions = model.get_layer("predictions")
    except ValueError:
        raise ValueError(
            f"{model.name}: has no layer named 'predictions'; strip_auxiliary_heads needs a googlenet built "
            "with include_top=True"
        ) from None
    # ``model.input`` keeps the input structure of ``model`` (one tensor, not a one-element list), so the
    # stripped model is called exactly like the training model.
    return keras.Model(model.input, predictions.output, name=model.name)
