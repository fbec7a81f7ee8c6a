"""Augmentation ops, per-class exclusion, mixup, class weights and TTA."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from kerascnn import augment as aug


def test_presets_and_overrides():
    assert aug.augment_config("none").active_ops() == []
    strong = aug.augment_config("strong")
    assert set(strong.active_ops()) == set(aug.AugmentConfig.OPS)
    cfg = aug.augment_config("light", rotation=20, flip="none")
    assert cfg.rotation == 20 and "flip" not in cfg.active_ops()
    with pytest.raises(ValueError, match="unknown augmentation preset 'heavy'"):
        aug.augment_config("heavy")
    with pytest.raises(ValueError, match="--no-aug-for .*: no such augmentation op"):
        aug.augment_config("light", exclude={"spin": [1]})


def test_flip_can_be_disabled_per_class():
    images = tf.constant(np.tile(np.arange(8, dtype=np.float32)[None, None, :, None], (64, 8, 1, 1)))
    labels = tf.constant([0, 1] * 32)
    cfg = aug.AugmentConfig(flip="horizontal", exclude={"flip": [1]})
    out = aug.Augmenter(cfg, num_classes=2, seed=3)(images, labels).numpy()
    flipped = [not np.array_equal(out[i], images[i].numpy()) for i in range(64)]
    assert not any(flipped[1::2]), "class 1 is never flipped"
    assert 8 <= sum(flipped[0::2]) <= 24, "class 0 is flipped about half the time"
    for i in range(0, 64, 2):
        assert np.array_equal(out[i], images[i].numpy()) or np.array_equal(out[i], images[i].numpy()[:, ::-1])


def test_shifts_move_by_whole_pixels():
    """A shift alone is an exact translation (no bilinear blur): every output is the input moved by
    whole pixels, zero-filled, and the shifts vary."""
    rng = np.random.default_rng(1)
    images = rng.integers(1, 256, (32, 12, 12, 1)).astype("float32")
    out = aug.Augmenter(aug.AugmentConfig(shift=0.25), num_classes=2, seed=0)(
        tf.constant(images), tf.zeros([32], tf.int32)
    ).numpy()
    moves = set()
    for image, moved in zip(images, out, strict=True):
        padded = np.pad(image, ((3, 3), (3, 3), (0, 0)))
        match = [
            (dy, dx)
            for dy in range(-3, 4)
            for dx in range(-3, 4)
            if np.array_equal(moved, padded[3 - dy : 15 - dy, 3 - dx : 15 - dx])
        ]
        assert match, "a shifted image is the input translated by whole pixels"
        moves.add(match[0])
    assert len(moves) > 5


def test_every_op_changes_images_and_stays_in_range():
    rng = np.random.default_rng(0)
    images = tf.constant(rng.uniform(0, 255, (4, 16, 16, 3)).astype("float32"))
    for op in aug.AugmentConfig.OPS:
        value = "horizontal" if op == "flip" else (10.0 if op == "rotation" else 0.3)
        augmenter = aug.Augmenter(aug.AugmentConfig(**{op: value}), num_classes=1, seed=1)
        out = np.concatenate([augmenter(images, tf.zeros([4], tf.int32)).numpy() for _ in range(3)])
        assert out.min() >= 0 and out.max() <= 255, op
        assert not np.allclose(out, np.concatenate([images.numpy()] * 3)), op


def test_mixup_mixes_different_classes_with_convex_weights():
    n = 64
    labels = np.arange(n) % 4
    onehot = tf.one_hot(labels, 4)
    images = tf.constant(np.repeat(labels.astype("float32"), 4).reshape(n, 2, 2, 1))
    x, y = aug.mixup(images, onehot, alpha=0.4, seed=5)
    y = y.numpy()
    np.testing.assert_allclose(y.sum(axis=1), 1.0, rtol=1e-6)
    assert ((y > 0).sum(axis=1) <= 2).all()
    mixed = (y > 0).sum(axis=1) == 2
    assert mixed.mean() > 0.9, "almost every sample has a partner of another class"
    # the image is the same convex combination as the label
    expected = y @ np.arange(4, dtype="float32")
    np.testing.assert_allclose(x.numpy()[:, 0, 0, 0], expected, rtol=1e-5, atol=1e-5)


def test_class_weights_balance():
    w = aug.class_weights(np.array([0] * 90 + [1] * 10), 2)
    assert w[0] * 90 == pytest.approx(w[1] * 10)
    assert (w[0] * 90 + w[1] * 10) / 100 == pytest.approx(1.0)


def test_tta_with_one_copy_is_plain_prediction():
    import keras

    model = keras.Sequential(
        [keras.Input((8, 8, 1)), keras.layers.Flatten(), keras.layers.Dense(3, "softmax")]
    )
    images = np.random.default_rng(0).integers(0, 255, (5, 8, 8, 1)).astype(np.uint8)
    norm = lambda x: x / 255.0  # noqa: E731
    plain = model.predict(images / 255.0, verbose=0)
    np.testing.assert_allclose(aug.tta_predict(model, images, 1, norm), plain, rtol=1e-5)
    tta = aug.tta_predict(model, images, 4, norm)
    np.testing.assert_allclose(tta.sum(axis=1), 1.0, rtol=1e-5)
    assert not np.allclose(tta, plain)


def test_fused_geometry_rotates_about_the_centre_and_skips_exactly():
    img = np.zeros((33, 33, 1), "float32")
    img[16, 26] = 255.0  # 10 pixels right of the centre
    images = tf.constant(np.repeat(img[None], 16, axis=0))
    out = aug.Augmenter(aug.AugmentConfig(rotation=180), num_classes=2, seed=0)(
        images, tf.zeros([16], tf.int32)
    )
    ys, xs = np.mgrid[0:33, 0:33]
    for o in out.numpy()[..., 0]:
        w = o / o.sum()
        cy, cx = (w * ys).sum(), (w * xs).sum()
        assert abs(np.hypot(cy - 16, cx - 16) - 10) < 0.75  # a rotation keeps the distance
    cfg = aug.AugmentConfig(
        shift=0.2,
        rotation=30,
        shear=0.2,
        zoom=0.2,
        flip="horizontal",
        exclude={op: [1] for op in ("shift", "rotation", "shear", "zoom", "flip")},
    )
    same = aug.Augmenter(cfg, num_classes=2, seed=0)(images, tf.ones([16], tf.int32))
    np.testing.assert_array_equal(same.numpy(), images.numpy())  # every op skipped: identity
