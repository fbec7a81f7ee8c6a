"""Images that stay on disk: decoded from their files, or read from a disk cache, a batch at a time.

:class:`LazyImages` (and its :class:`FileImages`, :class:`DiskImages`) are the array-likes the pipeline,
evaluation and calibration read a batch at a time; ``--cache auto|ram|disk|none`` picks between them and
arrays in memory (:func:`resolve_cache`, :func:`images_of`); the disk cache is keyed on the files, their
sizes and times, the image size and channels (:func:`cache_dir`).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from .decode import DataError, ImageReadError, decode_many, open_image

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
        for i, (arr, err) in enumerate(decode_many(files, self.size, self.channels, workers=4)):
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


def find_disk_cache(files: list[Path], size, channels: int, paths=None):
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
        found = find_disk_cache(files, size, channels, paths)
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
        from ..runs import atomic_write_json

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
        for i, (arr, err) in enumerate(decode_many(part, size, channels)):
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
    found = find_disk_cache(files, size, channels) if cache == "stream" else None
    if cache == "disk" or found is not None:
        return _disk_cached(files, size, channels, skipped, say, found)
    problems = _openable(files)
    kept = [i for i, p in enumerate(problems) if p is None]
    skipped.extend((str(files[i]), p) for i, p in enumerate(problems) if p is not None)
    return FileImages([files[i] for i in kept], size, channels), kept
