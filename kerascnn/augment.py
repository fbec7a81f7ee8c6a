"""Augmentation for the training pipeline: geometric and photometric ops, mixup, class balancing, TTA.

Augmentation runs in the tf.data pipeline (on the CPU, batched, overlapped with training by
prefetch), never inside the model: the saved inference model has no augmentation layer in it.
Every op is a standard Keras preprocessing layer applied to float32 pixels in [0, 255], before
normalisation. Any op can be switched off for listed classes (``exclude={"flip": [5, 7]}``), for
datasets where orientation is the label.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from kerascnn.errors import ConfigError

FLIP_MODES = ("none", "horizontal", "vertical", "horizontal_and_vertical")


@dataclass
class AugmentConfig:
    shift: float = 0.0  # fraction of the image size, both axes
    rotation: float = 0.0  # degrees, +-
    shear: float = 0.0  # shear factor, both axes
    zoom: float = 0.0  # fraction, +- (scale)
    flip: str = "none"
    perspective: float = 0.0  # corner displacement factor
    noise: float = 0.0  # std of Gaussian pixel noise, as a fraction of the value range (0.02 = 5/255)
    brightness: float = 0.0  # fraction of the value range, +-
    contrast: float = 0.0  # fraction, +-
    exclude: dict[str, list[int]] = field(default_factory=dict)  # op -> class indices it skips

    OPS = ("shift", "rotation", "shear", "zoom", "flip", "perspective", "noise", "brightness", "contrast")

    def active_ops(self) -> list[str]:
        return [op for op in self.OPS if (self.flip != "none" if op == "flip" else getattr(self, op) > 0)]


PRESETS = {
    "none": AugmentConfig(),
    "light": AugmentConfig(shift=0.05, flip="horizontal"),
    "standard": AugmentConfig(
        shift=0.1, rotation=10, zoom=0.1, flip="horizontal", brightness=0.1, contrast=0.1
    ),
    "strong": AugmentConfig(
        shift=0.125, rotation=15, shear=0.1, zoom=0.15, flip="horizontal", perspective=0.1, noise=0.025,
        brightness=0.2, contrast=0.2,
    ),
}  # fmt: skip


def augment_config(preset: str = "standard", **overrides) -> AugmentConfig:
    """A preset with some ops overridden (``None`` values are ignored)."""
    if preset not in PRESETS:
        raise ConfigError(f"unknown augmentation preset '{preset}'; choose one of {', '.join(PRESETS)}")
    overrides = {k: v for k, v in overrides.items() if v is not None}
    if "flip" in overrides and overrides["flip"] not in FLIP_MODES:
        raise ConfigError(f"flip must be one of {', '.join(FLIP_MODES)}, got '{overrides['flip']}'")
    unknown = set(overrides.get("exclude", {})) - set(AugmentConfig.OPS)
    if unknown:
        raise ConfigError(
            f"--no-aug-for {', '.join(sorted(unknown))}: no such augmentation op; the ops: "
            f"{', '.join(AugmentConfig.OPS)}"
        )
    return replace(PRESETS[preset], **overrides)


GEOMETRIC = ("shift", "rotation", "shear", "zoom", "flip")


def _layer(op: str, cfg: AugmentConfig, seed: int):
    """The Keras preprocessing layer of a non-geometric op (geometric ops are fused, see below)."""
    from keras import layers

    if op == "perspective":
        return layers.RandomPerspective(factor=1.0, scale=cfg.perspective, seed=seed)
    if op == "noise":
        return layers.GaussianNoise(cfg.noise, seed=seed)
    if op == "brightness":
        return layers.RandomBrightness(cfg.brightness, value_range=(0, 255), seed=seed)
    if op == "contrast":
        return layers.RandomContrast(cfg.contrast, value_range=(0, 255), seed=seed)
    raise ValueError(op)


def affine_transforms(batch, height, width, cfg: AugmentConfig, skip: dict):
    """One random affine map per image for all the geometric ops at once (shift, rotation, shear,
    zoom, flip), as the 8-vectors of ``ImageProjectiveTransformV3`` (output pixel -> input pixel).

    ``skip[op]`` is a boolean (batch,) tensor: True leaves that op out for that image (per-class
    exclusion). Composing the ops into one matrix costs one resampling instead of one per op.
    """
    import math

    import tensorflow as tf

    def uniform(limit, op):
        value = tf.random.uniform([batch], -limit, limit)
        return tf.where(skip[op], tf.zeros_like(value), value) if op in skip else value

    zeros, ones = tf.zeros([batch]), tf.ones([batch])
    theta = uniform(cfg.rotation * math.pi / 180.0, "rotation") if cfg.rotation else zeros
    shear_x = uniform(cfg.shear, "shear") if cfg.shear else zeros
    shear_y = uniform(cfg.shear, "shear") if cfg.shear else zeros
    zoom = 1.0 + (uniform(cfg.zoom, "zoom") if cfg.zoom else zeros)
    # whole pixels, as RandomCrop with padding shifts: a sub-pixel shift alone would blur every image
    # (bilinear resampling), which a net on small images learns as a difference from the sharp test set
    tx = tf.round((uniform(cfg.shift, "shift") if cfg.shift else zeros) * width)
    ty = tf.round((uniform(cfg.shift, "shift") if cfg.shift else zeros) * height)
    fx, fy = ones, ones
    if cfg.flip != "none":

        def coin():
            flip = tf.random.uniform([batch]) < 0.5
            if "flip" in skip:
                flip = tf.logical_and(flip, tf.logical_not(skip["flip"]))
            return tf.where(flip, -ones, ones)

        fx = coin() if "horizontal" in cfg.flip else ones
        fy = coin() if "vertical" in cfg.flip else ones
    cos, sin = tf.cos(theta), tf.sin(theta)
    # A = F . Z . Sh . R   (maps output offsets from the centre to input offsets)
    r = tf.stack([tf.stack([cos, -sin], -1), tf.stack([sin, cos], -1)], -2)
    sh = tf.stack([tf.stack([ones, shear_x], -1), tf.stack([shear_y, ones], -1)], -2)
    fz = tf.stack([tf.stack([fx * zoom, zeros], -1), tf.stack([zeros, fy * zoom], -1)], -2)
    a = fz @ sh @ r
    cx, cy = (width - 1) / 2.0, (height - 1) / 2.0
    # p_in = A (p_out - c - t) + c
    ox, oy = -cx - tx, -cy - ty
    bx = a[:, 0, 0] * ox + a[:, 0, 1] * oy + cx
    by = a[:, 1, 0] * ox + a[:, 1, 1] * oy + cy
    return tf.stack([a[:, 0, 0], a[:, 0, 1], bx, a[:, 1, 0], a[:, 1, 1], by, zeros, zeros], axis=1)


class Augmenter:
    """Callable on a batch ``(images float32 [0, 255], labels int)`` -> augmented images.

    The geometric ops are fused into one affine resampling per image; the others are Keras
    preprocessing layers. For an op with excluded classes, the images of those classes skip it.
    """

    def __init__(self, config: AugmentConfig, num_classes: int, seed: int = 0):
        self.config = config
        active = config.active_ops()
        self.geometric = [op for op in active if op in GEOMETRIC]
        self.ops = [(op, _layer(op, config, seed + i)) for i, op in enumerate(active) if op not in GEOMETRIC]
        self.masks = {}
        for op, classes in config.exclude.items():
            bad = [c for c in classes if not 0 <= c < num_classes]
            if bad:
                raise ConfigError(
                    f"--no-aug-for {op}={','.join(map(str, classes))}: class {', '.join(map(str, bad))} "
                    f"is not one of the data's {num_classes} classes (numbered 0 to {num_classes - 1}, in "
                    "the order of the class folders)"
                )
            mask = np.zeros(num_classes, bool)
            mask[classes] = True
            self.masks[op] = mask

    def __bool__(self) -> bool:
        return bool(self.ops or self.geometric)

    def _skip(self, op, labels):
        import tensorflow as tf

        return tf.gather(tf.constant(self.masks[op]), tf.cast(labels, tf.int32))

    def __call__(self, images, labels):
        import tensorflow as tf

        if self.geometric:
            shape = tf.shape(images)
            skip = {op: self._skip(op, labels) for op in self.geometric if op in self.masks}
            transforms = affine_transforms(
                shape[0], tf.cast(shape[1], tf.float32), tf.cast(shape[2], tf.float32), self.config, skip
            )
            images = tf.raw_ops.ImageProjectiveTransformV3(
                images=images, transforms=transforms, output_shape=shape[1:3], fill_value=0.0,
                interpolation="BILINEAR", fill_mode="CONSTANT",
            )  # fmt: skip
        for op, layer in self.ops:
            if op == "noise":  # GaussianNoise takes a std in [0, 1]: work in [0, 1] units
                out = layer(images / 255.0, training=True) * 255.0
            else:
                out = layer(images, training=True)
            if op in self.masks:
                out = tf.where(self._skip(op, labels)[:, None, None, None], images, out)
            images = tf.clip_by_value(out, 0.0, 255.0)
        return images


def mixup(images, onehot, alpha: float, seed=None):
    """Mixup (Zhang et al. 2018) within a batch: x = lam x_i + (1 - lam) x_j, same for the one-hot
    labels, lam ~ Beta(alpha, alpha) per sample, j a partner of a different class where the batch has
    one (a pair of the same class is left unmixed)."""
    import tensorflow as tf

    n = tf.shape(images)[0]
    labels = tf.argmax(onehot, axis=-1)
    perm = tf.random.shuffle(tf.range(n), seed=seed)
    # Try a few rotations of the shuffled order and take, per sample, the first of another class.
    partner = perm
    for shift in range(1, 4):
        candidate = tf.roll(perm, shift, axis=0)
        same = tf.equal(tf.gather(labels, partner), labels)
        partner = tf.where(same, candidate, partner)
    differs = tf.not_equal(tf.gather(labels, partner), labels)
    g1 = tf.random.gamma([n], alpha, seed=seed)
    g2 = tf.random.gamma([n], alpha, seed=None if seed is None else seed + 1)
    lam = g1 / (g1 + g2)
    lam = tf.where(differs, lam, tf.ones_like(lam))
    lam_x = tf.reshape(lam, [-1, 1, 1, 1])
    mixed_x = lam_x * images + (1.0 - lam_x) * tf.gather(images, partner)
    lam_y = tf.reshape(lam, [-1, 1])
    mixed_y = lam_y * onehot + (1.0 - lam_y) * tf.gather(onehot, partner)
    return mixed_x, mixed_y


def class_weights(labels: np.ndarray, num_classes: int) -> dict[int, float]:
    """Inverse-frequency weights normalised to mean 1 over the samples ("balanced", as scikit-learn)."""
    counts = np.bincount(labels, minlength=num_classes).astype(np.float64)
    weights = np.where(counts > 0, len(labels) / (num_classes * np.maximum(counts, 1)), 0.0)
    return {i: float(w) for i, w in enumerate(weights)}


TTA_CONFIG = AugmentConfig(shift=0.05, flip="horizontal")


def tta_predict(
    model,
    images,
    n: int,
    normalize,
    batch_size: int = 256,
    config: AugmentConfig | None = None,
    seed: int = 0,
):
    """Test-time augmentation: the mean posterior over the original image and ``n - 1`` augmented copies.

    ``images`` are uint8/float pixels (N, H, W, C); ``normalize`` maps [0, 255] pixels to model input.
    """
    import tensorflow as tf

    if n < 1:
        raise ConfigError(f"--tta must be >= 1, got {n}")
    config = config or TTA_CONFIG
    augmenter = Augmenter(config, num_classes=1, seed=seed)
    total = None
    for copy in range(n):
        outs = []
        for start in range(0, len(images), batch_size):
            x = tf.cast(images[start : start + batch_size], tf.float32)
            if copy > 0 and augmenter:
                x = augmenter(x, tf.zeros([tf.shape(x)[0]], tf.int32))
            outs.append(np.asarray(model(normalize(x), training=False)))
        probs = np.concatenate(outs)
        total = probs if total is None else total + probs
    return total / n
