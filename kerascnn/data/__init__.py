"""Datasets into tf.data: image folders, file lists, TFDS and the built-in datasets, offline first.

A dataset is loaded once into uint8 arrays at the model's input size (decoding, resizing and the
grayscale/RGB adaptation happen there, once, like a cache), or kept on disk and decoded a batch at a
time, then served by a tf.data pipeline that shuffles, batches, augments on the fly and prefetches.
One module per room, lowest first (each imports only the ones above it):

* :mod:`.decode`: the photo formats Pillow and pillow-heif open (:func:`image_extensions`), the one
  decoder every command uses (:func:`decode_image`, :func:`viewable`), and the package's errors;
* :mod:`.cache`: images that stay on disk (:class:`LazyImages`, :class:`FileImages`,
  :class:`DiskImages`), ``--cache auto|ram|disk|none`` and the disk cache's keys;
* :mod:`.splits`: :class:`Split` and :class:`ImageData`, the stratified validation split and train
  subsets, resizing arrays to the model's input;
* :mod:`.sources`: what DATA means: the built-ins, class folders, TFDS, CSV/TSV file lists, and the
  entries that open any of them (:func:`load_dataset`, :func:`open_images`, :func:`list_data`);
* :mod:`.pipeline`: :func:`make_dataset`, :class:`Normalization` and the tf.data options.

Every name other modules use is imported here, so ``from kerascnn.data import X`` and
``kerascnn.data.X`` mean what they did when this was one module.
"""

from __future__ import annotations

from .cache import (
    CACHE_MODES,
    RAM_SHARE,
    DiskImages,
    FileImages,
    LazyImages,
    available_memory,
    cache_dir,
    images_of,
    resolve_cache,
)
from .decode import (
    HEIF_EXTENSIONS,
    DataError,
    ImageReadError,
    decode_image,
    describe_extensions,
    image_extensions,
    image_from_array,
    open_image,
    viewable,
    viewable_image,
)
from .pipeline import PREFETCH_BATCHES, Normalization, make_dataset, pipeline_options
from .sources import (
    BUILTINS,
    DEBIAN_FASHION_MNIST,
    FASHION_MNIST_CLASSES,
    IDX_FILES,
    LIST_SUFFIXES,
    MNIST_CLASSES,
    SPLITS,
    TFDS_PREFIX,
    EvalSet,
    FileList,
    ImageSource,
    builtin_at_size,
    builtin_splits,
    is_file_list,
    is_tfds,
    is_unlabeled_folder,
    list_data,
    list_unlabeled_images,
    load_builtin,
    load_dataset,
    load_eval_set,
    load_file_list,
    load_folder,
    load_tfds,
    named_split,
    open_images,
    read_file_list,
    read_idx,
)
from .splits import (
    ImageData,
    Split,
    adapt_images,
    split_validation,
    stratified_fraction,
)

__all__ = [
    "EvalSet",
    "load_eval_set",
    "named_split",
    "BUILTINS",
    "CACHE_MODES",
    "DEBIAN_FASHION_MNIST",
    "DataError",
    "DiskImages",
    "FASHION_MNIST_CLASSES",
    "FileImages",
    "FileList",
    "HEIF_EXTENSIONS",
    "IDX_FILES",
    "ImageData",
    "ImageReadError",
    "ImageSource",
    "LIST_SUFFIXES",
    "LazyImages",
    "MNIST_CLASSES",
    "Normalization",
    "PREFETCH_BATCHES",
    "RAM_SHARE",
    "SPLITS",
    "Split",
    "TFDS_PREFIX",
    "adapt_images",
    "available_memory",
    "builtin_at_size",
    "builtin_splits",
    "cache_dir",
    "decode_image",
    "describe_extensions",
    "image_extensions",
    "image_from_array",
    "images_of",
    "is_file_list",
    "is_tfds",
    "is_unlabeled_folder",
    "list_data",
    "list_unlabeled_images",
    "load_builtin",
    "load_dataset",
    "load_file_list",
    "load_folder",
    "load_tfds",
    "make_dataset",
    "open_image",
    "open_images",
    "pipeline_options",
    "read_file_list",
    "read_idx",
    "resolve_cache",
    "split_validation",
    "stratified_fraction",
    "viewable",
    "viewable_image",
]


def __getattr__(name: str):
    if name == "IMAGE_EXTENSIONS":  # computed on first use (Pillow's plugins are imported then)
        return image_extensions()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
