"""``kerascnn predict``: a model's top-k labels for image files, folders, globs and file lists.

The model is a run folder (its best model, with the run's normalization and class names), a ``.keras``/
``.h5`` file (its export folder's ``model.json``, its run folder's ``config.json``, or ``mean``/``std``/
``labels`` given by the user), or an exported ``.tflite``/``.onnx`` file read with its own metadata. Each
runs through :mod:`kerascnn.export.runtime`, the predictors ``kerascnn validate`` runs, so a file is fed
here exactly as it is there: 0-255 pixels prepared by *its own* metadata. ``runtime="mediapipe"`` runs a
``.tflite`` alone through MediaPipe Tasks' ImageClassifier, fed RGB frames at their own size, as a phone
app does.

Images are decoded as everywhere else (:func:`kerascnn.data.viewable_image`: EXIF rotation, 16-bit,
alpha over white, HEIC, CMYK...), ``batch_size`` at a time, so a folder of 10,000 photos never sits in
memory. An input that cannot be read (missing, not an image, damaged) is named and skipped; the others
are still predicted.
"""

from __future__ import annotations

import csv
import glob
import io
import os
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from kerascnn.errors import KerascnnError

from . import metadata as md
from .runtime import KerasPredictor, Predictor, RuntimeLoadError, check_single_io, file_format, load_predictor

RUNTIMES = ("auto", "mediapipe")  # auto: the file's own runtime (Keras, LiteRT, onnxruntime)
TOP_K = 3
BATCH_SIZE = 32
OUT_SUFFIXES = (".csv", ".json")
MEDIAPIPE_BATCH = 8  # MediaPipe takes frames at their own size (a 12 MP photo is 36 MB): fewer at a time
_GLOB_CHARS = frozenset("*?[")


class PredictError(KerascnnError, ValueError):
    """The model or an option cannot be used for predictions; the message names the file or option."""


# ------------------------------------------------------------------------------------------------
# The model
# ------------------------------------------------------------------------------------------------


@dataclass
class Classifier:
    """A model ready to classify images: its predictor, its labels and the images it takes."""

    predictor: Predictor
    labels: list[str]
    size: tuple[int, int]  # (height, width)
    channels: int
    name: str  # the model as the user named it
    description: str  # "keras", "tflite float32", "mediapipe int8"...
    logits: bool = False  # the model ends without a softmax: its outputs are turned into probabilities
    notes: list[str] = field(default_factory=list)  # what was assumed about the model, said once

    @property
    def takes_frames(self) -> bool:
        """MediaPipe Tasks resizes and normalizes itself: it takes RGB frames at their own size."""
        return self.predictor.format == "mediapipe"

    def scores(self, batch) -> np.ndarray:
        """Class probabilities (N, classes) of a batch (uint8 (N, H, W, C), or a list of frames)."""
        try:
            out = self.predictor.predict(batch, batch_size=len(batch))
        except KerascnnError:
            raise
        except Exception as e:  # noqa: BLE001 - a runtime's own failure, reported with the model
            raise PredictError(f"{self.name}: {self.description} failed ({type(e).__name__}: {e})") from None
        names = getattr(self.predictor, "names", None)
        if names and any(names):  # MediaPipe's category names: what a phone app shows
            self.labels = list(names)
        if out.ndim != 2 or out.shape[1] != len(self.labels):
            raise PredictError(
                f"{self.name}: outputs of shape {out.shape[1:]} for {len(self.labels)} labels "
                f"({', '.join(self.labels[:5])}{', ...' if len(self.labels) > 5 else ''})"
            )
        return softmax(out) if self.logits else out

    def close(self) -> None:
        close = getattr(self.predictor, "close", None)
        if close is not None:
            close()


def softmax(x: np.ndarray) -> np.ndarray:
    z = np.exp(x - x.max(axis=1, keepdims=True))
    return (z / z.sum(axis=1, keepdims=True)).astype(np.float32)


class _LoadedKerasPredictor(KerasPredictor):
    """A :class:`KerasPredictor` of a model already loaded (by :func:`resolve_source`), not read twice."""

    def __init__(self, path, metadata, model, threads=None):
        Predictor.__init__(self, path, metadata, threads)
        check_single_io(path, len(model.inputs), len(model.outputs))
        self.model = model
        self._fn = None


def open_classifier(
    model,
    runtime: str = "auto",
    mean=None,
    std=None,
    labels: list[str] | None = None,
    threads: int | None = None,
) -> Classifier:
    """The model ``model`` (a run folder or a .keras/.h5/.tflite/.onnx file) ready to classify.
    ``mean``/``std`` (pixel units) and ``labels`` are for a run folder or a Keras file (a user's own
    model); an exported file carries its own. ``runtime="mediapipe"``: a .tflite through MediaPipe
    Tasks. Raises :class:`PredictError` (or the runtime's error) naming the model or the option."""
    if runtime not in RUNTIMES:
        raise PredictError(f"--runtime {runtime}: expected one of {', '.join(RUNTIMES)}")
    path = Path(model).expanduser()
    if not path.exists():
        raise PredictError(
            f"{model} does not exist (expected a run folder or a .keras, .h5, .tflite or .onnx file)"
        )
    kind = "keras" if path.is_dir() else file_format(path)
    if runtime == "mediapipe" and kind != "tflite":
        what = "a run folder" if path.is_dir() else f"a {path.suffix} file"
        raise PredictError(
            f"--runtime mediapipe runs a .tflite file through MediaPipe Tasks' ImageClassifier; {model} is "
            f"{what} (export it with kerascnn export --tflite, then predict the .tflite)"
        )
    given = [
        name for name, value in (("--mean", mean), ("--std", std), ("--labels", labels)) if value is not None
    ]
    if kind == "keras":
        meta = None if path.is_dir() else md.read_metadata(path)  # a .keras of an export folder: model.json
        if meta is None:
            return _keras_classifier(path, str(model), mean, std, labels, threads)
        meta = replace(meta, mean=mean or meta.mean, std=std or meta.std, labels=labels or meta.labels)
        predictor = load_predictor(path, threads, meta)
        classes = int(predictor.model.output_shape[-1])
        if classes != len(meta.labels):
            raise PredictError(
                f"{model} predicts {classes} classes but {len(meta.labels)} labels were given (--labels)"
            )
        return _classifier(str(model), predictor, meta, "keras")
    if given:
        raise PredictError(
            f"{', '.join(given)}: {model} carries its own normalization and labels in its metadata; these "
            "options are for a run folder or a .keras/.h5 model"
        )
    meta = md.read_metadata(path)
    if meta is None:
        raise PredictError(
            f"{model}: no kerascnn metadata, so its normalization and labels are unknown: export the model "
            "with kerascnn export (or predict its .keras file with --mean/--std/--labels)"
        )
    if runtime == "mediapipe":
        return _mediapipe_classifier(path, str(model), meta)
    return _classifier(str(model), load_predictor(path, threads, meta), meta, _variant(kind, meta))


def _variant(kind: str, meta: md.ModelMetadata) -> str:
    if kind == "keras":
        return kind
    return f"{kind} {meta.quantization if meta.quantization != 'none' else 'float32'}"


def _classifier(name: str, predictor: Predictor, meta: md.ModelMetadata, description: str, notes=None):
    return Classifier(
        predictor,
        list(meta.labels),
        tuple(meta.input_size),
        meta.channels,
        name,
        description,
        logits=meta.output == "logits",
        notes=list(notes or []),
    )


def _keras_classifier(path: Path, name: str, mean, std, labels, threads) -> Classifier:
    """A run folder or Keras file: its metadata made as ``kerascnn export`` makes it (:func:`resolve_source`:
    the run's normalization and class names, or the user's), then the same predictor as an export's."""
    from .pipeline import ExportError, resolve_source

    try:
        source = resolve_source(path, mean, std, labels)
    except ExportError as e:
        raise PredictError(str(e)) from None
    meta = source.metadata
    notes = []
    if source.run_dir is None and mean is None and std is None and source.preprocessing is None:
        notes.append(
            f"{name}: no run folder or kerascnn metadata beside it: pixels are normalized as "
            f"(pixel - {_values(meta.mean)}) / {_values(meta.std)}; give --mean/--std if it was trained "
            "otherwise"
        )
    if labels is None and meta.labels == [str(i) for i in range(len(meta.labels))]:
        notes.append(f"{name}: no class names known: labels are class indices (give --labels labels.txt)")
    predictor = _LoadedKerasPredictor(source.model_file, meta, source.model, threads)
    return _classifier(name, predictor, meta, "keras", notes)


def _values(values) -> str:
    return ",".join(f"{v:g}" for v in values)


def _mediapipe_classifier(path: Path, name: str, meta: md.ModelMetadata) -> Classifier:
    from .runtime import MediaPipePredictor, MediaPipeUnavailable, mediapipe_limit

    try:
        predictor = MediaPipePredictor(path, meta)
    except MediaPipeUnavailable:
        raise
    except RuntimeLoadError as e:
        advice = mediapipe_limit(str(e))
        raise PredictError(f"--runtime mediapipe: {e}" + (f" ({advice})" if advice else "")) from None
    return _classifier(name, predictor, meta, _variant("mediapipe", meta))


# ------------------------------------------------------------------------------------------------
# The inputs
# ------------------------------------------------------------------------------------------------


@dataclass
class Item:
    """One image to predict, and its label when a file list gave one."""

    path: Path
    truth: str | None = None


@dataclass
class Skipped:
    """An input that was not predicted, and why."""

    path: str
    reason: str

    def __str__(self) -> str:
        return f"{self.path}: {self.reason}"


def collect_inputs(inputs: Iterable[str], say: Callable[[str], None] | None = None):
    """(items, skipped): the image files of ``inputs`` (files; folders, recursively; glob patterns the
    shell did not expand; CSV/TSV file lists of ``path,label[,split]``), each file once, in order."""
    from kerascnn import data as kdata

    items: dict[str, Item] = {}
    skipped: list[Skipped] = []

    def add(path: Path, truth: str | None = None) -> None:
        items.setdefault(os.path.normcase(os.path.realpath(path)), Item(path, truth))

    for text in inputs:
        path = Path(text).expanduser()
        if path.is_dir():
            found = kdata.list_unlabeled_images(path)
            if not found:
                skipped.append(
                    Skipped(text, f"no image files in this folder ({kdata.describe_extensions()})")
                )
            for p in found:
                add(p)
        elif path.is_file() and path.suffix.lower() in kdata.LIST_SUFFIXES:
            try:
                rows = kdata.read_file_list(path)
            except kdata.DataError as e:
                skipped.append(Skipped(text, str(e).removeprefix(f"--data {path}: ")))
                continue
            if rows.repeated and say:
                say(
                    f"{text}: {len(rows.repeated)} repeated row(s) read once ({'; '.join(rows.repeated[:3])})"
                )
            for p, label in zip(rows.paths, rows.labels, strict=True):
                add(p, label)
        elif path.exists() or path.is_symlink():
            add(path)
        elif _GLOB_CHARS & set(text):
            matches = sorted(glob.glob(os.path.expanduser(text), recursive=True))
            if not matches:
                skipped.append(Skipped(text, "no file matches this pattern"))
            for match in map(Path, matches):
                for p in kdata.list_unlabeled_images(match) if match.is_dir() else [match]:
                    add(p)
        else:
            skipped.append(Skipped(text, "does not exist"))
    return list(items.values()), skipped


def _decode(item: Item, size, channels: int, frames: bool):
    """(pixels, is_rgb) of one image: at the model's size and channels, or an RGB frame at its own size
    (MediaPipe); or (None, reason) when it cannot be read."""
    from kerascnn.data import ImageReadError, image_from_array, viewable_image

    try:
        im = viewable_image(item.path)
        if frames:
            return np.asarray(im.convert("RGB"), np.uint8), True
        return image_from_array(np.asarray(im), size, channels), im.mode == "RGB"
    except FileNotFoundError:
        return None, "does not exist"
    except ImageReadError as e:
        return None, e.reason
    except Exception as e:  # noqa: BLE001 - any decoder failure means "unreadable"
        return None, f"cannot be decoded ({type(e).__name__}: {e})"


# ------------------------------------------------------------------------------------------------
# Predictions
# ------------------------------------------------------------------------------------------------


@dataclass
class Prediction:
    """One image's top-k labels with their probabilities, best first."""

    path: str
    labels: list[str]
    scores: list[float]
    truth: str | None = None  # the file list's label

    def line(self) -> str:
        """``photo.jpg  cat 0.910  dog 0.070  owl 0.010``"""
        pairs = zip(self.labels, self.scores, strict=True)
        return "  ".join([self.path, *(f"{name} {score:.3f}" for name, score in pairs)])


@dataclass
class Accuracy:
    """Top-1 on the images a file list labeled."""

    correct: int
    labeled: int

    @property
    def percent(self) -> float:
        return 100.0 * self.correct / self.labeled if self.labeled else 0.0

    def line(self) -> str:
        from kerascnn.evaluate import format_interval, wilson_interval

        interval = format_interval(wilson_interval(self.correct, self.labeled))
        return f"top-1 {self.percent:.2f}% ({self.correct}/{self.labeled} labeled images, 95% CI {interval})"


@dataclass
class Results:
    """What :func:`predict` found."""

    model: str
    runtime: str
    labels: list[str]
    top_k: int
    predictions: list[Prediction] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)
    accuracy: Accuracy | None = None

    def to_dict(self) -> dict:
        return {
            "model": self.model,
            "runtime": self.runtime,
            "top_k": self.top_k,
            "labels": self.labels,
            "images": len(self.predictions),
            "predictions": [
                {
                    "path": p.path,
                    "top": [
                        {"label": n, "score": round(s, 6)} for n, s in zip(p.labels, p.scores, strict=True)
                    ],
                    **({"truth": p.truth} if p.truth is not None else {}),
                }
                for p in self.predictions
            ],
            "skipped": [{"path": s.path, "reason": s.reason} for s in self.skipped],
            **(
                {"accuracy": {"top1": round(self.accuracy.percent, 4), "correct": self.accuracy.correct,
                              "labeled": self.accuracy.labeled}}
                if self.accuracy
                else {}
            ),
        }  # fmt: skip

    def to_csv(self) -> str:
        """One row per predicted image: path, label_1, score_1, ... (and truth when a file list gave it)."""
        with_truth = any(p.truth is not None for p in self.predictions)
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        header = ["path"] + [f"{what}_{i}" for i in range(1, self.top_k + 1) for what in ("label", "score")]
        writer.writerow(header + (["truth"] if with_truth else []))
        for p in self.predictions:
            cells = [p.path] + [v for n, s in zip(p.labels, p.scores, strict=True) for v in (n, f"{s:.6f}")]
            writer.writerow(cells + ([p.truth or ""] if with_truth else []))
        return buffer.getvalue()


def check_out(out) -> None:
    """``out`` is a .csv or .json file name (the folder checks are the CLI's OUT_FILE)."""
    if Path(out).suffix.lower() not in OUT_SUFFIXES:
        raise PredictError(f"--out {out}: the suffix says the format: .csv or .json (such as results.csv)")


def write_results(results: Results, out) -> None:
    """``results`` as CSV or JSON by ``out``'s suffix, written atomically."""
    from kerascnn.runs import atomic_write_json, atomic_write_text

    check_out(out)
    if Path(out).suffix.lower() == ".json":
        atomic_write_json(out, results.to_dict())
    else:
        atomic_write_text(out, results.to_csv())


def _class_match(labels: list[str], items: list[Item], say) -> np.ndarray | None:
    """For the file lists' labels (sorted), the index of the model's class of that name; None (said)
    when they are not the model's classes."""
    from kerascnn.evaluate import ClassMatchError, match_classes

    names = sorted({i.truth for i in items if i.truth is not None})
    if not names:
        return None
    try:
        index, note = match_classes(labels, names, "the model")
    except ClassMatchError as e:
        say(f"no accuracy: {e}")
        return None
    if note:
        say(f"file list: {note}")
    return dict(zip(names, index.tolist(), strict=True))


def predict(
    model,
    inputs: Iterable[str],
    top_k: int = TOP_K,
    batch_size: int = BATCH_SIZE,
    runtime: str = "auto",
    mean=None,
    std=None,
    labels: list[str] | None = None,
    threads: int | None = None,
    out=None,
    on_batch: Callable[[list[Prediction], int, int], None] | None = None,
    on_skip: Callable[[Skipped], None] | None = None,
    say: Callable[[str], None] = print,
) -> Results:
    """The top-k labels of every image of ``inputs`` (see :func:`collect_inputs`) by ``model`` (see
    :func:`open_classifier`), decoded and run ``batch_size`` at a time. ``on_batch(predictions, done,
    total)`` after each batch, ``on_skip(skipped)`` for each input that cannot be read (named and left
    out; the others go on), ``say`` for what is said once (assumptions, a grayscale model given RGB
    images). With ``out`` (.csv or .json), the results are written there. Raises :class:`PredictError`
    when no input could be read."""
    if out is not None:
        check_out(out)
    on_skip = on_skip or (lambda s: say(f"skipped {s}"))
    classifier = open_classifier(model, runtime, mean, std, labels, threads)
    try:
        for note in classifier.notes:
            say(note)
        items, skipped = collect_inputs(inputs, say)
        for s in skipped:
            on_skip(s)
        results = Results(
            str(model), classifier.description, classifier.labels, min(top_k, len(classifier.labels))
        )
        results.skipped = list(skipped)
        mapping = _class_match(classifier.labels, items, say)
        _run(classifier, items, batch_size, results, mapping, on_batch, on_skip, say)
    finally:
        classifier.close()
    if not results.predictions:
        raise PredictError(
            f"none of the {len(items) + len(skipped)} input(s) could be read (each is named above)"
        )
    results.labels = classifier.labels
    if out is not None:
        write_results(results, out)
    return results


def _run(classifier: Classifier, items, batch_size, results: Results, mapping, on_batch, on_skip, say):
    """Decode and classify ``items`` a batch at a time (decoding in threads), into ``results``."""
    frames = classifier.takes_frames
    step = min(batch_size, MEDIAPIPE_BATCH) if frames else batch_size
    said_gray = False
    correct = labeled = 0

    def decode(item: Item):
        return _decode(item, classifier.size, classifier.channels, frames)

    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        for start in range(0, len(items), step):
            batch = items[start : start + step]
            decoded = list(pool.map(decode, batch))
            kept, pixels = [], []
            for item, (value, extra) in zip(batch, decoded, strict=True):
                if value is None:
                    results.skipped.append(Skipped(str(item.path), extra))
                    on_skip(results.skipped[-1])
                    continue
                if extra and classifier.channels == 1 and not frames and not said_gray:
                    said_gray = True
                    say(
                        f"{classifier.name} takes grayscale images: RGB images are converted to gray "
                        "(Pillow's luma, as in training)"
                    )
                kept.append(item)
                pixels.append(value)
            found = []
            if kept:
                probs = classifier.scores(pixels if frames else np.stack(pixels))
                order = np.argsort(-probs, axis=1, kind="stable")[:, : results.top_k]
                for item, p, top in zip(kept, probs, order, strict=True):
                    names = [classifier.labels[j] for j in top]
                    found.append(Prediction(str(item.path), names, [float(p[j]) for j in top], item.truth))
                    if mapping is not None and item.truth is not None:
                        labeled += 1
                        correct += int(top[0] == mapping[item.truth])
                results.predictions.extend(found)
            if on_batch is not None:
                on_batch(found, min(start + step, len(items)), len(items))
    if mapping is not None and labeled:
        results.accuracy = Accuracy(correct, labeled)
