"""A loaded dataset (:class:`ImageData` of :class:`Split`), and what is done to its splits: the
stratified validation split and train subsets, and resizing arrays to the model's input."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .cache import LazyImages
from .decode import DataError


@dataclass
class Split:
    images: np.ndarray  # uint8, (N, H, W, C); or LazyImages (read a batch at a time)
    labels: np.ndarray  # int32, (N,)
    paths: list[str] | None = None  # source file of each image, for folder datasets

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, indices) -> Split:
        paths = None if self.paths is None else [self.paths[i] for i in indices]
        images = self.images.take(indices) if isinstance(self.images, LazyImages) else self.images[indices]
        return Split(images, self.labels[indices], paths)

    @property
    def in_memory(self) -> bool:
        return isinstance(self.images, np.ndarray)


@dataclass
class ImageData:
    """A loaded dataset: uint8 splits at one image size, with the class names and what was skipped."""

    name: str
    class_names: list[str]
    train: Split
    val: Split | None
    test: Split | None
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def eval_split(self) -> Split:
        """The split to report final metrics on: test if there is one, else val."""
        return self.test if self.test is not None else self.val


def _stratified_pick(labels: np.ndarray, fraction: float, seed: int, leave_one: bool = False) -> np.ndarray:
    """Sorted indices of a random ``fraction`` of every class (at least one image per class; with
    ``leave_one``, never every image of a class)."""
    rng = np.random.default_rng(seed)
    picked = []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        rng.shuffle(idx)
        n = max(1, round(len(idx) * fraction))
        picked.extend(idx[: min(n, len(idx) - 1) if leave_one else n])
    return np.sort(np.asarray(picked, dtype=np.int64))


def split_validation(split: Split, fraction: float, seed: int = 0) -> tuple[Split, Split | None]:
    """Stratified hold-out: ``fraction`` of every class goes to validation."""
    if not 0 <= fraction < 1:
        raise DataError(f"--val-split must be in [0, 1), got {fraction}")
    if fraction == 0:
        return split, None
    mask = np.zeros(len(split), bool)
    mask[_stratified_pick(split.labels, fraction, seed, leave_one=True)] = True
    return split.subset(np.flatnonzero(~mask)), split.subset(np.flatnonzero(mask))


def train_val_test(splits: dict, val_split: float, seed: int) -> tuple[Split, Split, Split | None]:
    """(train, val, test) of a source's loaded splits: ``all`` (one folder or list) split for validation;
    else ``train``, ``val`` and ``test``, the validation split taken from train when there is none."""
    if "all" in splits:
        train, val = split_validation(splits["all"], val_split, seed)
        return train, val, None
    train, val, test = splits["train"], splits.get("val"), splits.get("test")
    if val is None:
        train, val = split_validation(train, val_split, seed)
    return train, val, test


def stratified_fraction(split: Split, fraction: float, seed: int = 0) -> Split:
    """Keep ``fraction`` of each class (at least one image per class): for few-data experiments."""
    if fraction >= 1:
        return split
    return split.subset(_stratified_pick(split.labels, fraction, seed))


def adapt_images(images: np.ndarray, size, channels: int) -> np.ndarray:
    """uint8 (N, H, W, C) to the model's (height, width) and channel count, in batches."""
    if images.ndim == 3:
        images = images[..., None]
    if images.shape[-1] != channels:
        if channels == 3 and images.shape[-1] == 1:
            images = np.repeat(images, 3, axis=-1)
        elif channels == 1 and images.shape[-1] == 3:  # ITU-R 601-2 luma, as Pillow's convert("L")
            luma = images.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
            images = np.clip(np.rint(luma), 0, 255).astype(np.uint8)[..., None]
        else:
            raise DataError(f"cannot adapt {images.shape[-1]}-channel images to a {channels}-channel model")
    if tuple(images.shape[1:3]) == tuple(size):
        return images
    import tensorflow as tf

    out = np.empty((len(images), size[0], size[1], images.shape[-1]), np.uint8)
    for start in range(0, len(images), 4096):
        batch = tf.image.resize(images[start : start + 4096], size, method="bilinear", antialias=True)
        out[start : start + 4096] = np.clip(np.rint(batch.numpy()), 0, 255).astype(np.uint8)
    return out
