"""Transfer learning for ``kerascnn train --weights``: where the weights come from, which layers they
fill, the normalization they bring, and which layers train while the backbone is frozen.

``--weights imagenet`` copies the published keras.applications weights of the zoo model
(:mod:`kerascnn.models.pretrained`: every layer by name and shape, or nothing, and "Layers copied: N of
M"), and the run takes the input normalization they were trained with. ``--weights PATH`` (a ``.keras``
file or a run folder) copies every layer whose name and shape match, except the classifier head, and a
run folder's normalization comes with it.
"""

from __future__ import annotations

import keras

from kerascnn.config import TrainConfig
from kerascnn.errors import ConfigError, KerascnnError

from .runs import resolve_model_file


class TransferError(KerascnnError, RuntimeError):
    """The weights of ``--weights`` do not fit the model; the message names the source."""


def source_normalization(cfg: TrainConfig) -> tuple[tuple, tuple] | None:
    """The (mean, std) the ``--weights`` source was trained with, in pixel units; None for a source
    that records none (a bare ``.keras`` file: the run's default stays)."""
    if cfg.weights == "imagenet":
        from .models import pretrained

        _check_imagenet(cfg)
        return pretrained.normalization(cfg.model)
    if cfg.weights:
        from pathlib import Path

        from .runs import Run

        if (Path(cfg.weights) / "config.json").is_file():
            return Run.open(cfg.weights).normalization()
    return None


def _check_imagenet(cfg: TrainConfig) -> None:
    from .models import pretrained

    if cfg.model not in pretrained.FAMILIES:
        raise ConfigError(
            f"--weights imagenet: only the keras.applications backbones have ImageNet weights "
            f"({', '.join(pretrained.FAMILIES)}); '{cfg.model}' does not"
        )


def copy_weights(cfg: TrainConfig, model) -> tuple[list[str], str]:
    """Fill ``model`` from ``cfg.weights``; returns (the layers left new, the line for the run log)."""
    if cfg.weights == "imagenet":
        from .models import pretrained

        _check_imagenet(cfg)
        if model.input_shape[-1] != 3:
            raise ConfigError("--weights imagenet needs 3-channel input; pass --input-shape H,W,3")
        try:
            alpha = pretrained.check_alpha(cfg.model, cfg.model_options.get("alpha", 1.0))
        except ValueError as e:
            raise ConfigError(f"--weights imagenet --model-kwargs alpha=...: {e}") from None
        loaded = pretrained.load_imagenet(model, cfg.model, alpha, top=False)
        return loaded.new, loaded.line()
    from .models import transfer_weights

    if str(cfg.weights).lower().endswith(".weights.h5"):
        return _load_weights_file(cfg, model)
    source = _load_source(cfg.weights)
    copied = transfer_weights(model, source, skip=set(head_layer_names(model)))
    if not copied:
        raise TransferError(f"--weights {cfg.weights}: no layer of '{cfg.model}' matches the source model")
    new = [layer.name for layer in model.layers if layer.weights and layer.name not in copied]
    return new, f"--weights {cfg.weights}: {len(copied)} layers copied, new: {', '.join(new)}"


def _load_source(weights: str):
    """The model ``--weights`` names (a run folder, a ``.keras`` or ``.h5`` model file), or a
    :class:`TransferError` saying what the file is not."""
    import zipfile

    file = resolve_model_file(weights)
    what = f"--weights {weights}"
    if file.suffix.lower() not in (".keras", ".h5"):
        raise TransferError(
            f"{what}: not a model file (.keras or .h5), a .weights.h5 file, a run folder, or 'imagenet'"
        )
    if file.suffix.lower() == ".keras" and not zipfile.is_zipfile(file):
        raise TransferError(f"{what}: not a .keras model (a .keras file is a zip archive; truncated?)")
    try:
        return keras.saving.load_model(file, compile=False)
    except Exception as e:  # noqa: BLE001 - a text file, a weights-only .h5, a custom layer
        raise TransferError(f"{what}: cannot load the Keras model ({type(e).__name__}: {e})") from None


def _load_weights_file(cfg: TrainConfig, model) -> tuple[list[str], str]:
    """``--weights FILE.weights.h5`` (``model.save_weights``): every layer, into the same architecture."""
    file = resolve_model_file(cfg.weights)
    try:
        model.load_weights(file)
    except Exception as e:  # noqa: BLE001 - not HDF5, another architecture or class count
        raise TransferError(
            f"--weights {cfg.weights}: cannot load these weights into '{cfg.model}' ({type(e).__name__}: "
            f"{str(e).splitlines()[0] if str(e) else ''}); a .weights.h5 file loads only into the model it "
            "was saved from (the same --model, --model-kwargs and classes): for another, give its .keras"
        ) from None
    return [], f"--weights {cfg.weights}: every layer's weights loaded"


def set_backbone_trainable(model, trainable: bool, new_layers=(), freeze_until: str | None = None):
    """Freeze/unfreeze everything but the head: the layers after the global pooling / flatten and the
    ``new_layers`` that did not come from the pretrained model.

    BatchNormalization layers of the backbone stay frozen even when it is unfrozen for fine-tuning, as
    in the Keras transfer-learning guide: in Keras 3 a frozen BN runs in inference mode, so the
    pretrained statistics are kept instead of being overwritten by a few small batches."""

    head = set(head_layer_names(model)) | set(new_layers)
    names = [layer.name for layer in model.layers]
    if freeze_until is not None and freeze_until not in names:
        raise ConfigError(f"--freeze-until: model '{model.name}' has no layer '{freeze_until}'")
    frozen_prefix = names.index(freeze_until) + 1 if freeze_until else 0
    for i, layer in enumerate(model.layers):
        if layer.name in head:
            layer.trainable = True
        elif isinstance(layer, keras.layers.BatchNormalization):
            layer.trainable = False
        else:
            layer.trainable = trainable and i >= frozen_prefix


def head_layer_names(model) -> list[str]:
    """The classifier head: the layers from the last global pooling or flatten on (else the last)."""

    names = [layer.name for layer in model.layers]
    for i in range(len(model.layers) - 1, -1, -1):
        if isinstance(
            model.layers[i],
            keras.layers.GlobalAveragePooling2D | keras.layers.GlobalMaxPooling2D | keras.layers.Flatten,
        ):
            return names[i:]
    return names[-1:]
