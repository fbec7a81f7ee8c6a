"""Pieces shared by the model families: argument checks, the input, the classifier head, weights.

Blocks are small functions that take a tensor and return a tensor; layer names are passed in so every
model has deterministic, hierarchical names (``conv2_block1_1_conv``).
"""

from __future__ import annotations

import os

import keras
from keras import layers

from kerascnn.errors import KerascnnError

POOLINGS = (None, "avg", "max")


class InputShapeError(KerascnnError, ValueError):
    """The input shape cannot go through the architecture."""


def resolve_input_shape(
    model_name: str, input_shape, default_shape, min_size: int, allow_none: bool = False, input_tensor=None
):
    """Check ``input_shape`` against the architecture and return it as a tuple (H, W, C).

    ``min_size`` is the smallest height/width that survives all the downsampling of the network.
    Without ``input_shape``, the shape of ``input_tensor`` (if given) is checked, else the default.
    """
    if input_shape is None and input_tensor is not None:
        input_shape = tuple(input_tensor.shape[1:])
    if input_shape is None:
        return tuple(default_shape)
    try:
        shape = tuple(None if d is None else int(d) for d in input_shape)
    except (TypeError, ValueError):
        raise InputShapeError(
            f"{model_name}: input_shape must be (height, width, channels), got {input_shape!r}"
        ) from None
    if len(shape) != 3:
        raise InputShapeError(
            f"{model_name}: input_shape must be (height, width, channels) in channels-last order, got {shape}"
        )
    h, w, c = shape
    if c is None or c < 1:
        raise InputShapeError(f"{model_name}: the number of channels must be a positive integer, got {c}")
    if (h is None or w is None) and not allow_none:
        raise InputShapeError(
            f"{model_name}: needs a fixed input size (its head flattens the feature map); got {shape}. "
            f"Pass e.g. input_shape={tuple(default_shape)}"
        )
    for side, v in (("height", h), ("width", w)):
        if v is not None and v < min_size:
            raise InputShapeError(
                f"{model_name}: input {side} {v} is too small for the downsampling of this network; "
                f"the minimum input size is {min_size}x{min_size} (got {h}x{w})"
            )
    return shape


def check_common_args(model_name: str, include_top: bool, pooling, num_classes: int, weights):
    if pooling not in POOLINGS:
        raise ValueError(f"{model_name}: pooling must be one of None, 'avg', 'max'; got {pooling!r}")
    if include_top and (not isinstance(num_classes, int) or num_classes < 1):
        raise ValueError(f"{model_name}: num_classes must be a positive integer, got {num_classes!r}")
    if weights not in (None, "imagenet") and not (
        isinstance(weights, str | os.PathLike) and os.path.exists(weights)
    ):
        raise ValueError(
            f"{model_name}: weights must be None, 'imagenet' or the path to a weights file "
            f"(.weights.h5 or .keras); '{weights}' does not exist"
        )
    if weights == "imagenet":  # as keras.applications: the published files, with their 1000 classes
        from .pretrained import family

        family(model_name)  # a model without published weights: ValueError naming those with them
        if include_top and num_classes != 1000:
            raise ValueError(
                f"{model_name}: weights='imagenet' with include_top=True is the 1000-class ImageNet "
                f"classifier; num_classes={num_classes} needs include_top=False (and a head of your own), "
                "or `kerascnn train --weights imagenet`, which adds one"
            )


def model_input(input_shape, input_tensor=None, name: str = "input"):
    """The model's Input, or the user's tensor (as keras.applications does)."""
    if input_tensor is None:
        return layers.Input(shape=input_shape, name=name)
    if not keras.backend.is_keras_tensor(input_tensor):
        return layers.Input(tensor=input_tensor, shape=input_shape, name=name)
    return input_tensor


def model_inputs(img_input, input_tensor=None):
    """What to pass as ``keras.Model(inputs=...)``: the source of ``input_tensor`` when one was given."""
    if input_tensor is not None:
        return keras.utils.get_source_inputs(input_tensor)
    return img_input


def global_pool(x, pooling: str | None, name: str = "avg_pool", keepdims: bool = False):
    if pooling == "max":
        return layers.GlobalMaxPooling2D(name=name.replace("avg", "max"), keepdims=keepdims)(x)
    return layers.GlobalAveragePooling2D(name=name, keepdims=keepdims)(x)


def pooled_features(x, pooling: str | None):
    """The head of an ``include_top=False`` model: the feature map, or its global average/max."""
    if pooling is None:
        return x
    return global_pool(x, pooling, name="avg_pool" if pooling == "avg" else "max_pool")


def classifier(x, num_classes: int, classifier_activation, name: str = "predictions"):
    """Dense classifier. ``classifier_activation=None`` returns logits."""
    return layers.Dense(num_classes, activation=classifier_activation, name=name)(x)


def finish(model_name: str, inputs, outputs, weights=None, alpha: float = 1.0) -> keras.Model:
    """The model; ``weights``: a file (:func:`load_weights`) or ``"imagenet"`` (the published weights of
    the keras.applications twin, at width ``alpha``: :func:`kerascnn.models.pretrained.load_imagenet`)."""
    model = keras.Model(inputs, outputs, name=model_name)
    if weights == "imagenet":
        from .pretrained import load_imagenet

        load_imagenet(model, model_name, alpha)
    elif weights is not None:
        load_weights(model, weights)
    return model


def load_weights(model: keras.Model, path) -> None:
    """Load weights from a ``.weights.h5`` file or a whole ``.keras`` model file."""
    path = os.fspath(path)
    try:
        if path.endswith(".keras"):
            src = keras.saving.load_model(path, compile=False)
            model.set_weights(src.get_weights())
        else:
            model.load_weights(path)
    except Exception as e:  # noqa: BLE001 - re-raised with the file named
        raise ValueError(f"{model.name}: could not load weights from '{path}': {e}") from e


def bn_relu(x, name: str, bn_epsilon: float = 1e-5, bn_momentum: float = 0.9):
    """BatchNormalization -> ReLU (the pre-activation of ResNet v2, Wide ResNet and DenseNet)."""
    x = layers.BatchNormalization(epsilon=bn_epsilon, momentum=bn_momentum, name=f"{name}_bn")(x)
    return layers.Activation("relu", name=f"{name}_relu")(x)
