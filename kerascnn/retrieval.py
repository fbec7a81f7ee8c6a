"""Image retrieval in a trained network's latent space: embed, index, search, evaluate.

A trained classifier's penultimate features (the global-pooling output by default) place perceptually
similar images close together. ``build_index`` embeds a dataset with a model's feature extractor,
L2-normalizes the vectors and stores them with each image's source and label in one ``.npz`` file.
``search`` finds the k nearest gallery images of query images (cosine similarity, reported as the
Euclidean distance between unit vectors, sqrt(2 - 2 cos)). Exact search runs in NumPy; FAISS
(``pip install kerascnn[faiss]``, an exact inner-product index) takes over for large galleries.

The index records the identity of the model that made it (a hash of its weights, the layer, the
input size and the normalization), so queries embedded by another model are refused rather than
silently compared in a different space. It records each file's size, mtime and content hash (blake2b)
too: appending to an index re-embeds the files whose content changed and drops those deleted since, and
``search`` marks a hit whose file is gone (``missing``) or changed (``stale``) since it was indexed.

    >>> from kerascnn import retrieval
    >>> extractor = retrieval.load_extractor("runs/fashion_resnet20")
    >>> index, report = retrieval.build_index(extractor, "fashion_mnist", "fashion.npz")
    >>> results = retrieval.search(index, ["shoe.png", "fashion_mnist:test:0"], k=5)
    >>> results[0].hits[0].item, results[0].hits[0].distance
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np

from kerascnn import data as kdata
from kerascnn.data.decode import decode_many
from kerascnn.errors import KerascnnError
from kerascnn.keras_internals import producer
from kerascnn.lock import WriteLock
from kerascnn.runs import (
    ModelFileError,
    Run,
    RunFileError,
    atomic_write_bytes,
    file_digest,
    image_input_shape,
)

INDEX_FORMAT = 1
FAISS_THRESHOLD = 100_000  # "auto" uses FAISS (when installed) from this many gallery vectors on
BACKENDS = ("auto", "numpy", "faiss")
_BUILTIN_ID = re.compile(r"^(?P<name>[a-z_]+):(?P<split>train|test):(?P<index>\d+)$")
_POOLING = ("GlobalAveragePooling2D", "GlobalMaxPooling2D", "GlobalAveragePooling1D", "GlobalMaxPooling1D")
# A file modified this close to when its mtime was read may change again within the same mtime tick (a
# coarse file system clock): its mtime is not trusted (recorded as _UNSURE) and its hash decides instead.
_RACY_NS = 2_000_000_000
_UNKNOWN, _UNSURE = -1, -2  # the size/mtime of an item that is not a file, or of an index made before them
_SAME_VECTOR = 1e-3  # re-embedded within this distance of its old vector: the same image


class RetrievalError(KerascnnError, ValueError):
    """The index, model, data or query cannot be used as given; the message names which and why."""


# ------------------------------------------------------------------------------------------------
# Feature extractor
# ------------------------------------------------------------------------------------------------


@dataclass
class Extractor:
    """A model cut at an embedding layer, with the preprocessing it was trained with."""

    model_file: Path
    model_name: str
    layer: str
    input_shape: tuple  # (H, W, C)
    mean: tuple
    std: tuple
    fingerprint: str  # sha256 of the weights (names, shapes, values)
    feature_model: object = field(repr=False, default=None)
    _fn: object = field(repr=False, default=None)

    def identity(self) -> dict:
        """What an index records about the model and compares on every query and append."""
        return {
            "model_name": self.model_name,
            "model_file": str(self.model_file),
            "fingerprint": self.fingerprint,
            "layer": self.layer,
            "input_shape": list(self.input_shape),
            "mean": list(self.mean),
            "std": list(self.std),
        }

    @property
    def dim(self) -> int:
        return int(self.feature_model.output.shape[-1])  # spatial outputs are averaged over positions

    def embed(self, images: np.ndarray, batch_size: int = 256) -> np.ndarray:
        """uint8 (N, H, W, C) images at the model's input size -> L2-normalized float32 (N, D)."""
        import tensorflow as tf

        if self._fn is None:
            model = self.feature_model
            self._fn = tf.function(lambda x: model(x, training=False), reduce_retracing=True)
        norm = kdata.Normalization(tuple(self.mean), tuple(self.std))
        out = []
        for start in range(0, len(images), batch_size):
            features = np.asarray(self._fn(tf.constant(norm.numpy(images[start : start + batch_size]))))
            if features.ndim > 2:  # a spatial layer: average over its positions, as global pooling does
                features = features.reshape(len(features), -1, features.shape[-1]).mean(axis=1)
            out.append(features.astype(np.float32))
        if not out:
            return np.zeros((0, self.dim), np.float32)
        return l2_normalize(np.concatenate(out))


def l2_normalize(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def model_fingerprint(model) -> str:
    """sha256 over every weight's path, shape and values: equal for the same model saved twice."""
    digest = hashlib.sha256()
    for weight in model.weights:
        value = np.ascontiguousarray(np.asarray(weight.numpy()))
        digest.update(f"{weight.path}:{value.shape}:{value.dtype}".encode())
        digest.update(value.tobytes())
    return digest.hexdigest()


def _default_layer(model):
    """(layer name, tensor): the last global-pooling output, else the input of the last Dense layer."""
    for layer in reversed(model.layers):
        if type(layer).__name__ in _POOLING:
            return layer.name, layer.output
    for layer in reversed(model.layers):
        if type(layer).__name__ == "Dense":
            tensor = layer.input
            made_by = producer(tensor)
            name = made_by.name if made_by is not None else f"input of {layer.name}"
            return name, tensor
    raise RetrievalError(
        f"model '{model.name}' has no global pooling or Dense layer to take embeddings from; "
        "choose one with --layer NAME (kerascnn summary lists the layers)"
    )


def load_extractor(run_or_model, layer: str | None = None, mean=None, std=None, model=None) -> Extractor:
    """The feature extractor of a run folder (its best model and normalization) or a model file
    (``mean``/``std`` in pixel units, default 127.5, as in training)."""
    import keras

    from .graph import GraphError, layer_path, resolve_layer

    try:
        run = Run.open(run_or_model)
        model = run.load_model(model)
        input_shape = image_input_shape(model, run.model_file)
    except (RunFileError, ModelFileError, GraphError) as e:
        raise RetrievalError(str(e)) from None
    model_file = run.model_file
    mean, std = run.normalization(mean, std)
    if layer is None:
        layer, tensor = _default_layer(model)
    else:  # a layer name, or its path inside a nested model
        try:
            tensor = resolve_layer(model, layer).output
        except GraphError:
            names = [layer_path(model, x.name) for x in model.layers]
            raise RetrievalError(
                f"--layer: model '{model.name}' has no layer '{layer}' (its last layers: "
                f"{', '.join(names[-8:])})"
            ) from None
    feature_model = keras.Model(model.inputs, tensor, name=f"{model.name}_features")
    return Extractor(
        model_file=Path(model_file).resolve(),
        model_name=model.name,
        layer=layer,
        input_shape=input_shape,
        mean=mean,
        std=std,
        fingerprint=model_fingerprint(model),
        feature_model=feature_model,
    )


# ------------------------------------------------------------------------------------------------
# Images: gallery sources and single queries
# ------------------------------------------------------------------------------------------------


def load_image(item: str, size, channels: int) -> np.ndarray:
    """One image by its index id: a file path, or ``NAME:SPLIT:I`` for a built-in dataset's image."""
    stamp = None  # the file's size and mtime are part of the cache key: a file rewritten is decoded again
    if not _BUILTIN_ID.match(item):
        try:
            st = os.stat(item)
            stamp = st.st_size, st.st_mtime_ns
        except OSError:
            pass
    return _load_image(item, tuple(size), channels, stamp)


@lru_cache(maxsize=2)
def _load_image(item: str, size, channels: int, stamp) -> np.ndarray:
    match = _BUILTIN_ID.match(item)
    if match and match["name"] in kdata.BUILTINS:
        images = kdata.builtin_splits(match["name"])[match["split"]][0]
        i = int(match["index"])
        if i >= len(images):
            raise RetrievalError(f"{item}: {match['name']} {match['split']} has {len(images)} images")
        return kdata.adapt_images(images[i : i + 1], tuple(size), channels)[0]
    if not Path(item).is_file():
        raise RetrievalError(f"{item}: no such image file")
    try:
        return kdata.decode_image(item, tuple(size), channels)
    except kdata.ImageReadError as e:  # it names the file and what is wrong
        raise RetrievalError(str(e)) from None
    except Exception as e:  # noqa: BLE001 - any decoder failure means "not an image we can read"
        raise RetrievalError(f"{item}: cannot decode the image ({type(e).__name__}: {e})") from None


Source = kdata.ImageSource  # what to embed


def open_source(data: str, size, channels: int, split: str | None = None) -> Source:
    """:func:`kerascnn.data.open_images`, its errors as :class:`RetrievalError`."""
    try:
        return kdata.open_images(data, size, channels, split)
    except kdata.DataError as e:
        raise RetrievalError(str(e)) from None


# ------------------------------------------------------------------------------------------------
# Index
# ------------------------------------------------------------------------------------------------


@dataclass
class Hit:
    rank: int
    item: str
    label: str | None
    distance: float  # Euclidean between unit vectors: sqrt(2 - 2 cos)
    similarity: float  # cosine
    missing: bool = False  # the file was deleted since it was indexed
    stale: bool = False  # the file's content changed since it was indexed (its vector is of the old one)


@dataclass
class QueryResult:
    query: str
    hits: list[Hit] | None = None
    error: str | None = None
    grid: str | None = None


def is_file_item(item: str) -> bool:
    """A file's (absolute, resolved) path, rather than a built-in dataset's ``NAME:SPLIT:I``."""
    return os.path.isabs(item)


def file_hash(path) -> str | None:
    """blake2b (128-bit) of the file's bytes, None when it cannot be read."""
    try:
        return file_digest(path, "blake2b", digest_size=16)
    except OSError:
        return None


def file_record(item: str) -> tuple[int, int, str]:
    """(size, mtime_ns, hash) of a file item as it is now; (-1, -1, "") for a built-in item or a file
    that cannot be read. An mtime within _RACY_NS of now is recorded as _UNSURE (the hash decides)."""
    if not is_file_item(item):
        return _UNKNOWN, _UNKNOWN, ""
    try:
        st = os.stat(item)
    except OSError:
        return _UNKNOWN, _UNKNOWN, ""
    digest = file_hash(item)
    if digest is None:
        return _UNKNOWN, _UNKNOWN, ""
    mtime = st.st_mtime_ns if time.time_ns() - st.st_mtime_ns > _RACY_NS else _UNSURE
    return st.st_size, mtime, digest


class Index:
    """L2-normalized vectors with their items (paths or built-in ids), labels and model identity, and
    per item: its file's size, mtime_ns and content hash when it was embedded (-1, -1, "" when not a
    file or unknown) and the ``meta["sources"]`` entry (the DATA and split) that listed it last."""

    def __init__(self, vectors, ids, labels, class_names, meta, path=None, records=None, origins=None):
        self.vectors = np.ascontiguousarray(vectors, np.float32)
        self.ids = list(ids)
        self.labels = np.asarray(labels, np.int32)
        self.class_names = list(class_names)
        self.meta = dict(meta)
        self.path = Path(path) if path is not None else None
        n = len(self.ids)
        sizes, mtimes, hashes = records if records is not None else ([_UNKNOWN] * n, [_UNKNOWN] * n, [""] * n)
        self.sizes = np.asarray(sizes, np.int64).reshape(n)
        self.mtimes = np.asarray(mtimes, np.int64).reshape(n)
        self.hashes = [str(h) for h in hashes]
        self.origins = np.asarray(origins if origins is not None else [-1] * n, np.int32).reshape(n)
        self._backends: dict = {}

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def identity(self) -> dict:
        return self.meta["model"]

    def label_name(self, label: int) -> str | None:
        return self.class_names[label] if 0 <= label < len(self.class_names) else None

    @classmethod
    def load(cls, path) -> Index:
        path = Path(path)
        if not path.is_file():
            raise RetrievalError(f"index '{path}' does not exist (make one with kerascnn index)")
        try:
            with np.load(path, allow_pickle=False) as z:
                meta = json.loads(str(z["meta"]))
                if meta.get("format") != INDEX_FORMAT:
                    raise RetrievalError(f"{path}: index format {meta.get('format')} is not {INDEX_FORMAT}")
                ids, class_names = z["ids"].tolist(), z["class_names"].tolist()
                records = origins = None
                # an index written before kerascnn recorded files has no sizes/mtimes/hashes/origins: its
                # items are "unknown", re-checked (re-embedded) on the next append
                if {"sizes", "mtimes", "hashes", "origins"} <= set(z.files) and len(z["sizes"]) == len(ids):
                    records = z["sizes"], z["mtimes"], z["hashes"].tolist()
                    origins = z["origins"]
                return cls(z["vectors"], ids, z["labels"], class_names, meta, path, records, origins)
        except RetrievalError:
            raise
        except Exception as e:  # noqa: BLE001 - a truncated or foreign file
            raise RetrievalError(f"{path}: not a kerascnn index ({type(e).__name__}: {e})") from None

    def save(self, path=None) -> Path:
        """Write atomically (a hidden temporary file, then rename): an old index is never half-replaced."""
        path = Path(path or self.path)
        buffer = io.BytesIO()
        np.savez(
            buffer,
            vectors=self.vectors,
            ids=np.asarray(self.ids, dtype=str),
            labels=self.labels,
            class_names=np.asarray(self.class_names, dtype=str),
            meta=np.asarray(json.dumps(self.meta)),
            sizes=self.sizes,
            mtimes=self.mtimes,
            hashes=np.asarray(self.hashes, dtype=str).reshape(len(self.hashes)),
            origins=self.origins,
        )
        try:
            atomic_write_bytes(path, buffer.getvalue())
        except OSError as e:  # a full disk: the old index (if any) is whole, no temporary file is left
            raise RetrievalError(
                f"cannot write the index {path}: {e.strerror or e} (it is unchanged)"
            ) from None
        self.path = path
        return path

    @property
    def unknown(self) -> int:
        """How many file items have no size/mtime/hash record (an index made by an older kerascnn)."""
        return sum(1 for p, item in enumerate(self.ids) if self.sizes[p] < 0 and is_file_item(item))

    def file_status(self, p: int) -> str:
        """The file of item ``p`` against its record: "same", "touched" (same content, another mtime),
        "changed", "missing", "unknown" (no record: an older index), or "not a file" (a built-in's)."""
        item = self.ids[p]
        if not is_file_item(item):
            return "not a file"
        try:
            st = os.stat(item)
        except OSError:
            return "missing"
        size, mtime = int(self.sizes[p]), int(self.mtimes[p])
        if size < 0:
            return "unknown"
        if st.st_size != size:
            return "changed"
        if st.st_mtime_ns == mtime:
            return "same"
        return "touched" if file_hash(item) == self.hashes[p] else "changed"

    def check_model(self, extractor: Extractor) -> None:
        """Refuse a query or append embedded by a different model, layer, input size or normalization."""
        mine, theirs = self.identity, extractor.identity()
        for key, what in (
            ("fingerprint", "weights"),
            ("layer", "embedding layer"),
            ("input_shape", "input size"),
            ("mean", "normalization mean"),
            ("std", "normalization std"),
        ):
            if mine[key] != theirs[key]:
                raise RetrievalError(
                    f"index {self.path or ''} was built with model '{mine['model_name']}' "
                    f"({mine['model_file']}, layer {mine['layer']}, input {_shape(mine['input_shape'])}, "
                    f"weights {mine['fingerprint'][:12]}); the query model '{theirs['model_name']}' "
                    f"({theirs['model_file']}) differs in its {what} ({_short(mine[key])} != "
                    f"{_short(theirs[key])}): query with the index's model, or rebuild the index"
                )

    def backend(self, name: str = "auto"):
        if name not in BACKENDS:
            raise RetrievalError(f"--backend: unknown backend '{name}' (choose from {', '.join(BACKENDS)})")
        if name == "auto":
            name = "faiss" if len(self) >= FAISS_THRESHOLD and faiss_available() else "numpy"
        if name not in self._backends:
            self._backends[name] = (FaissSearch if name == "faiss" else ExactSearch)(self.vectors)
        return self._backends[name]

    def search_vectors(self, queries: np.ndarray, k: int = 5, backend: str = "auto"):
        """(similarities, positions), each (Q, min(k, N)), best first."""
        if k < 1:
            raise RetrievalError(f"-k must be at least 1 (got {k})")
        queries = np.atleast_2d(np.asarray(queries, np.float32))
        if queries.shape[1] != self.vectors.shape[1]:
            dims = queries.shape[1], self.vectors.shape[1]
            raise RetrievalError(f"query vectors have {dims[0]} dimensions, the index {dims[1]}")
        return self.backend(backend).search(queries, min(k, len(self)))

    def hits(self, similarities, positions) -> list[Hit]:
        """The hits, each file checked now: deleted since indexing (``missing``) or changed (``stale``)."""
        hits = []
        for r, (s, p) in enumerate(zip(similarities, positions, strict=True)):
            status = self.file_status(int(p))
            hits.append(
                Hit(
                    rank=r + 1,
                    item=self.ids[p],
                    label=self.label_name(int(self.labels[p])),
                    distance=float(np.sqrt(max(0.0, 2.0 - 2.0 * float(s)))),
                    similarity=float(s),
                    missing=status == "missing",
                    stale=status == "changed",
                )
            )
        return hits


def _shape(shape) -> str:
    return "x".join(str(s) for s in shape)


def _short(value) -> str:
    return value[:12] if isinstance(value, str) and len(value) == 64 else str(value)


class ExactSearch:
    """Exact top-k by inner product in NumPy (one matrix product, then a partial sort)."""

    def __init__(self, vectors: np.ndarray):
        self.vectors = vectors

    def search(self, queries: np.ndarray, k: int):
        scores = queries @ self.vectors.T  # (Q, N)
        if k < scores.shape[1]:
            top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
        else:
            top = np.broadcast_to(np.arange(scores.shape[1]), scores.shape).copy()
        top_scores = np.take_along_axis(scores, top, axis=1)
        order = np.lexsort((top, -top_scores), axis=1)  # by score, ties by position (as FAISS)
        return np.take_along_axis(top_scores, order, axis=1), np.take_along_axis(top, order, axis=1)


def faiss_available() -> bool:
    try:
        import faiss  # noqa: F401
    except ImportError:
        return False
    return True


class FaissSearch:
    """FAISS ``IndexFlatIP``: exact inner-product search with FAISS' blocked, multi-threaded kernels."""

    def __init__(self, vectors: np.ndarray):
        try:
            import faiss
        except ImportError:
            raise RetrievalError("--backend faiss needs faiss-cpu: pip install 'kerascnn[faiss]'") from None
        self.index = faiss.IndexFlatIP(vectors.shape[1])
        self.index.add(np.ascontiguousarray(vectors, np.float32))

    def search(self, queries: np.ndarray, k: int):
        scores, positions = self.index.search(np.ascontiguousarray(queries, np.float32), k)
        return scores, positions


def _batches(n: int, size: int) -> Iterator[list[int]]:
    for start in range(0, n, size):
        yield list(range(start, min(n, start + size)))


def build_index(
    extractor: Extractor,
    data: str,
    out,
    split: str | None = None,
    batch_size: int = 256,
    overwrite: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[Index, dict]:
    """Embed ``data`` into the index file ``out``: a new one, or appended to an existing one (made by
    the same model). Appending compares each file with its record: unchanged ones (same size and mtime,
    or same content hash) are kept without embedding them again, changed ones are embedded again (their
    vector replaced), those deleted or no longer listed by ``data`` are dropped, new ones added.

    Returns the index and a report: the counts ``added``, ``changed``, ``removed``, ``unchanged``
    (``total`` = added + changed + unchanged), ``rechecked`` (file items of an index made before kerascnn
    recorded files, embedded again to compare), ``removed_items`` and ``skipped`` ([(item, reason)]).
    The index file is locked from reading the old one to writing the new one: a second ``kerascnn
    index`` into the same file is refused at once (else one of the two would silently drop the other's
    images). It is written to a temporary file, then renamed: a failure leaves the old one whole."""
    with WriteLock.for_file(out):
        return _build_index(extractor, data, Path(out), split, batch_size, overwrite, progress)


def source_key(data: str, split: str | None) -> str:
    """What ``data`` and ``split`` name, however spelled: the folder's or list's real path (or the
    dataset's name) and the split."""
    path = Path(data)
    if path.exists():
        split = split or ("train" if (path / "train").is_dir() else "")
        return f"{os.path.realpath(path)}|{split}"
    return f"{data}|{split or 'train'}"


def _listing_root(data: str, split: str | None) -> str | None:
    """The folder whose files ``data`` lists (None for a built-in or a file list): an item of an older
    index (which did not record what listed it) under it, that ``data`` no longer lists, was removed."""
    path = Path(data)
    if not path.is_dir():
        return None
    if (path / "train").is_dir():
        path = path / (split or "train")
    return os.path.join(os.path.realpath(path), "")


def _build_index(extractor, data, out: Path, split, batch_size, overwrite, progress) -> tuple[Index, dict]:
    old = None
    if out.exists() and not overwrite:
        old = Index.load(out)
        old.check_model(extractor)
    size, channels = extractor.input_shape[:2], extractor.input_shape[2]
    source = open_source(data, size, channels, split)
    sources = list(old.meta.get("sources", [])) if old is not None else []
    key, origin = source_key(data, split), len(sources)
    class_names = list(old.class_names) if old is not None else []
    remap = []
    for name in source.class_names:  # merge the class names; labels index into the merged list
        if name not in class_names:
            class_names.append(name)
        remap.append(class_names.index(name))
    remap = np.asarray(remap + [-1], np.int32)  # label -1 (unknown) stays -1
    listed = {item: i for i, item in enumerate(source.ids)}

    # the old items: kept (positions into old), and which of them to embed again
    kept, removed, again, status = [], [], [], {}
    if old is not None:
        root = _listing_root(data, split)
        for p, item in enumerate(old.ids):
            status[p] = old.file_status(p)
            o = int(old.origins[p])
            if o >= 0:
                ours = o < len(sources) and sources[o].get("key") == key
            else:  # an older index: what listed the item is not recorded
                ours = root is not None and item.startswith(root)
            if status[p] == "missing":
                removed.append((item, "deleted"))
            elif item not in listed and ours and is_file_item(item):
                removed.append((item, f"no longer in {data}"))
            else:
                kept.append(p)
                if status[p] in ("changed", "unknown"):
                    again.append(p)
    known = set(old.ids) if old is not None else set()
    new = [i for i, item in enumerate(source.ids) if item not in known]

    # embed: the new items, then the changed and unknown old ones (read through the source when it
    # lists them, else decoded from their files)
    jobs = [(i, source.ids[i]) for i in new] + [(listed.get(old.ids[p]), old.ids[p]) for p in again]
    vectors, records, skipped = {}, {}, []
    done = 0
    for numbers in _batches(len(jobs), batch_size):
        got_images, got = [], []
        for n, rec in zip(numbers, _map(file_record, [jobs[n][1] for n in numbers]), strict=True):
            records[n] = rec  # read before the image, so a later change shows as another mtime
        by_source = {jobs[n][0]: n for n in numbers if jobs[n][0] is not None}
        if by_source:
            images, good, bad = source.read(list(by_source))
            skipped += bad
            got_images.append(images)
            got += [by_source[g] for g in good]
        others = [n for n in numbers if jobs[n][0] is None]
        decoded = decode_many([jobs[n][1] for n in others], size, channels) if others else []
        for n, (image, reason) in zip(others, decoded, strict=True):
            if image is None:
                skipped.append((jobs[n][1], reason))
            else:
                got_images.append(image[None])
                got.append(n)
        if got:
            for n, vector in zip(got, extractor.embed(np.concatenate(got_images), batch_size), strict=True):
                vectors[n] = vector
        done += len(numbers)
        if progress:
            progress(done, len(jobs))

    redo = {p: len(new) + j for j, p in enumerate(again)}  # old position -> its job number
    rows, ids, labels, sizes, mtimes, hashes, origins = [], [], [], [], [], [], []
    changed = unchanged = 0
    for p in kept:
        item, vector, record = old.ids[p], old.vectors[p], None
        if p in redo:
            n = redo[p]
            if n not in vectors:  # it no longer reads: its old vector would be of another image
                removed.append((item, "unreadable now"))
                continue
            record = records[n]
            if status[p] == "unknown" and np.linalg.norm(vectors[n] - vector) < _SAME_VECTOR:
                unchanged += 1
            else:
                vector = vectors[n]
                changed += 1
        else:
            unchanged += 1
            if status[p] == "touched":
                record = file_record(item)  # the same bytes: record the mtime now
        record = record or (old.sizes[p], old.mtimes[p], old.hashes[p])
        i = listed.get(item)
        label = remap[source.labels[i]] if i is not None and source.labels[i] >= 0 else old.labels[p]
        rows.append(vector)
        ids.append(item)
        labels.append(label)
        sizes.append(record[0])
        mtimes.append(record[1])
        hashes.append(record[2])
        origins.append(origin if i is not None else old.origins[p])
    added = [n for n in range(len(new)) if n in vectors]
    for n in added:
        rows.append(vectors[n])
        ids.append(jobs[n][1])
        labels.append(remap[source.labels[jobs[n][0]]])
        sizes.append(records[n][0])
        mtimes.append(records[n][1])
        hashes.append(records[n][2])
        origins.append(origin)
    if not ids and old is None:
        raise RetrievalError(f"--data '{data}': none of its {len(source.ids)} images could be read")
    counts = {"added": len(added), "changed": changed, "removed": len(removed), "unchanged": unchanged}
    meta = old.meta if old is not None else {"format": INDEX_FORMAT, "model": extractor.identity()}
    meta["sources"] = [*sources, {"data": data, "split": split, "key": key, **counts}]
    matrix = np.stack(rows) if rows else np.zeros((0, extractor.dim), np.float32)
    index = Index(matrix, ids, labels, class_names, meta, out, (sizes, mtimes, hashes), origins)
    index.save(out)
    report = {**counts, "rechecked": sum(status[p] == "unknown" for p in again), "total": len(index),
              "removed_items": removed, "skipped": skipped}  # fmt: skip
    return index, report


def _map(fn, items: list) -> list:
    """``fn`` over ``items`` on a few threads (hashing files: the reads overlap)."""
    if len(items) < 8 or not is_file_item(items[0]):  # a built-in's items: nothing to read
        return [fn(x) for x in items]
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=8) as pool:
        return list(pool.map(fn, items))


def search(
    index: Index | str | Path,
    queries: Sequence[str],
    k: int = 5,
    extractor: Extractor | None = None,
    backend: str = "auto",
    grid_dir=None,
) -> list[QueryResult]:
    """The ``k`` nearest gallery images of each query (a file path or ``NAME:SPLIT:I``). A query that
    cannot be read gets an ``error`` and the others still run. ``extractor`` defaults to the index's
    own model file; another model is refused. ``grid_dir``: write a PNG grid per query there.
    Each hit's file is checked now: ``missing`` when it was deleted since it was indexed, ``stale``
    when its content changed (:func:`hits_warning` says so in one line)."""
    if not isinstance(index, Index):
        index = Index.load(index)
    if extractor is None:
        model_file = index.identity["model_file"]
        if not Path(model_file).is_file():
            raise RetrievalError(
                f"index {index.path}: its model {model_file} no longer exists; pass the model (--model)"
            )
        ident = index.identity
        extractor = load_extractor(model_file, layer=ident["layer"], mean=ident["mean"], std=ident["std"])
    index.check_model(extractor)
    size, channels = extractor.input_shape[:2], extractor.input_shape[2]
    results = [QueryResult(q) for q in queries]
    images = []
    for result in results:
        try:
            images.append(load_image(result.query, size, channels))
        except RetrievalError as e:
            result.error = str(e)
    good = [r for r in results if r.error is None]
    if good:
        vectors = extractor.embed(np.stack(images))
        similarities, positions = index.search_vectors(vectors, k, backend)
        for result, sims, pos in zip(good, similarities, positions, strict=True):
            result.hits = index.hits(sims, pos)
    if grid_dir is not None:
        for i, result in enumerate(results):
            if result.hits is not None:
                name = re.sub(r"[^\w.-]+", "_", Path(result.query).stem)[:60]
                result.grid = str(write_grid(result, Path(grid_dir) / f"{i:03d}_{name}.png", size, channels))
    return results


def hits_warning(results: list[QueryResult], index_path=None) -> str | None:
    """One line when hits point at files deleted or changed since they were indexed, else None."""
    hits = [h for r in results if r.hits for h in r.hits]
    missing = sorted({h.item for h in hits if h.missing})
    stale = sorted({h.item for h in hits if h.stale})
    if not missing and not stale:
        return None
    parts = []
    if missing:
        parts.append(f"{len(missing)} hit file(s) were deleted since indexing (marked missing)")
    if stale:
        parts.append(f"{len(stale)} changed since indexing (marked stale: ranked by their old content)")
    command = f"kerascnn index MODEL --data GALLERY --out {index_path or 'INDEX'}"
    return f"warning: {' and '.join(parts)}; re-run `{command}` to refresh it"


def write_grid(result: QueryResult, path: Path, size, channels: int, tile: int = 112) -> Path:
    """One row: the query, then its neighbours, each captioned (rank, distance, label). A neighbour
    whose file is gone is a tile saying MISSING; one whose file changed is shown with a CHANGED band."""
    from PIL import Image, ImageDraw

    red = (220, 40, 40)

    def thumb(item, mark):
        try:
            if mark == "MISSING":
                raise RetrievalError(item)
            arr = load_image(item, size, channels)
            im = Image.fromarray(arr[..., 0] if channels == 1 else arr).convert("RGB")
        except RetrievalError:
            im = Image.new("RGB", (tile, tile), (200, 200, 200))
            mark = mark or "UNREADABLE"
        scale = tile / max(im.size)
        width, height = max(1, round(im.width * scale)), max(1, round(im.height * scale))
        im = im.resize((width, height), Image.Resampling.NEAREST)
        if mark:  # a label on the tile itself: a grey tile alone does not say why
            draw = ImageDraw.Draw(im)
            draw.rectangle([0, 0, width - 1, 13], fill=red)
            draw.text((3, 1), mark, fill="white")
            if mark == "MISSING":
                draw.text((6, height // 2 - 12), "deleted since\nit was indexed", fill=(90, 90, 90))
            draw.rectangle([0, 0, width - 1, height - 1], outline=red, width=2)
        return im

    caption = 30
    cells = [(result.query, ["query", Path(result.query).name[-16:]], None)]
    cells += [
        (
            h.item,
            [f"#{h.rank} d={h.distance:.3f}", (h.label or "")[:16]],
            "MISSING" if h.missing else "CHANGED" if h.stale else None,
        )
        for h in result.hits
    ]
    grid = Image.new("RGB", (len(cells) * (tile + 4) + 4, tile + caption + 8), "white")
    draw = ImageDraw.Draw(grid)
    for i, (item, lines, mark) in enumerate(cells):
        x = 4 + i * (tile + 4)
        grid.paste(thumb(item, mark), (x, 4))
        for j, line in enumerate(lines):
            draw.text((x + 2, tile + 6 + 12 * j), line, fill="black")
        if i == 0:
            draw.rectangle([x - 2, 2, x + tile + 1, tile + 5], outline=red, width=2)
    buffer = io.BytesIO()
    grid.save(buffer, format="PNG")
    atomic_write_bytes(path, buffer.getvalue())
    return path


# ------------------------------------------------------------------------------------------------
# Evaluation: precision@k and mAP, latent space against raw pixels
# ------------------------------------------------------------------------------------------------


def retrieval_metrics(
    gallery: np.ndarray,
    gallery_labels: np.ndarray,
    queries: np.ndarray,
    query_labels: np.ndarray,
    ks: Sequence[int] = (1, 5, 10),
    chunk: int = 128,
    self_index: np.ndarray | None = None,
) -> dict:
    """precision@k (the fraction of the k nearest that share the query's label) and mAP (mean over
    queries of the average precision over the whole ranked gallery), ranking by inner product.

    ``self_index`` (leave-one-out: the queries are gallery images) gives each query's own position in
    the gallery; it is left out of its ranking, so each image queries all the others."""
    gallery = np.asarray(gallery, np.float32)
    n = len(gallery) - (self_index is not None)
    ranks = np.arange(1, n + 1, dtype=np.float64)
    hits_at = dict.fromkeys(ks, 0.0)
    ap_sum = 0.0
    for start in range(0, len(queries), chunk):
        q, ql = queries[start : start + chunk], query_labels[start : start + chunk]
        scores = q @ gallery.T
        if self_index is not None:  # ranked last, then cut off
            scores[np.arange(len(q)), self_index[start : start + chunk]] = -np.inf
        order = np.argsort(-scores, axis=1, kind="stable")[:, :n]
        relevant = gallery_labels[order] == ql[:, None]
        for k in ks:
            hits_at[k] += relevant[:, :k].mean(axis=1).sum()
        precision = np.cumsum(relevant, axis=1) / ranks
        ap_sum += ((precision * relevant).sum(axis=1) / np.maximum(relevant.sum(axis=1), 1)).sum()
    count = max(len(queries), 1)
    return {**{f"P@{k}": hits_at[k] / count for k in ks}, "mAP": ap_sum / count}


def pixel_vectors(images: np.ndarray, max_side: int = 64) -> np.ndarray:
    """The raw-pixel baseline: pixels scaled to [0, 1], flattened and L2-normalized (images larger
    than ``max_side`` are first shrunk to it, to keep the baseline's memory bounded)."""
    h, w = images.shape[1:3]
    if max(h, w) > max_side:
        scale = max_side / max(h, w)
        small = (max(1, round(h * scale)), max(1, round(w * scale)))
        images = kdata.adapt_images(images, small, images.shape[3])
    return l2_normalize(images.reshape(len(images), -1).astype(np.float32) / 255.0)


def evaluate(
    extractor: Extractor,
    data: str,
    index: Index | None = None,
    ks: Sequence[int] = (1, 5, 10),
    max_queries: int | None = None,
    seed: int = 0,
    batch_size: int = 256,
) -> dict:
    """Precision@k and mAP in the latent space and in raw pixels. With a test split (the built-ins, a
    folder with train/ and test/), its images query the train split as gallery; without one (a folder
    of class folders), leave-one-out over the gallery: each image queries all the others, as retrieval
    benchmarks (CUB, SOP) do. The report's "protocol" says which. Gallery vectors are taken from
    ``index`` when it holds them (no re-embedding)."""
    size, channels = extractor.input_shape[:2], extractor.input_shape[2]
    try:
        gallery = open_source(data, size, channels, "train")
        test = open_source(data, size, channels, "test")
    except RetrievalError:
        gallery = test = open_source(data, size, channels)  # no splits: leave-one-out
    leave_one_out = test is gallery
    if not gallery.class_names:
        raise RetrievalError(f"--eval: '{data}' is unlabeled; precision needs labels (class folders)")
    g_images, g_good, _ = gallery.read(list(range(len(gallery.ids))))
    g_labels = gallery.labels[g_good]
    picks = np.arange(len(g_good) if leave_one_out else len(test.ids))
    if max_queries is not None and max_queries < len(picks):
        picks = np.sort(np.random.default_rng(seed).choice(picks, max_queries, replace=False))
    if leave_one_out:  # the queries are gallery images (positions into the decoded gallery)
        q_images, q_labels, self_index = g_images[picks], g_labels[picks], picks
    else:
        q_images, q_good, _ = test.read(list(picks))
        q_labels, self_index = _map_labels(test, gallery.class_names)[q_good], None
    rows = None
    if index is not None:
        where = {item: i for i, item in enumerate(index.ids)}
        rows = [where.get(gallery.ids[g]) for g in g_good]
    if rows is not None and None not in rows:
        g_latent = index.vectors[rows]
    else:
        g_latent = extractor.embed(g_images, batch_size)
    q_latent = g_latent[picks] if leave_one_out else extractor.embed(q_images, batch_size)
    g_pixels = pixel_vectors(g_images)
    q_pixels = g_pixels[picks] if leave_one_out else pixel_vectors(q_images)
    return {
        "data": data,
        "protocol": "leave-one-out" if leave_one_out else "test queries, train gallery",
        "queries": len(q_images),
        "gallery": len(g_good),
        "layer": extractor.layer,
        "dim": int(q_latent.shape[1]),
        "latent": retrieval_metrics(g_latent, g_labels, q_latent, q_labels, ks, self_index=self_index),
        "pixels": retrieval_metrics(g_pixels, g_labels, q_pixels, q_labels, ks, self_index=self_index),
    }


def _map_labels(source: Source, class_names: list[str]) -> np.ndarray:
    # a class the gallery lacks maps to -2, which matches no gallery label; unknown (-1) stays -1
    mapping = [class_names.index(c) if c in class_names else -2 for c in source.class_names]
    mapping = np.asarray(mapping + [-1])
    return mapping[source.labels]


def format_evaluation(report: dict) -> str:
    keys = list(report["latent"])
    lines = [
        (
            f"retrieval on {report['data']}, leave-one-out: each of {report['queries']} images queries the "
            f"{report['gallery'] - 1} others"
            if report.get("protocol") == "leave-one-out"
            else f"retrieval on {report['data']}: {report['queries']} test queries, {report['gallery']} "
            "train images as gallery"
        )
        + f"; latent = layer {report['layer']} ({report['dim']}-d), cosine",
        f"{'':<12}" + "".join(f"{k:>9}" for k in keys),
    ]
    for name in ("latent", "pixels"):
        lines.append(f"{name:<12}" + "".join(f"{report[name][k]:>9.4f}" for k in keys))
    return "\n".join(lines)


def results_json(results: list[QueryResult]) -> list[dict]:
    return [asdict(r) for r in results]
