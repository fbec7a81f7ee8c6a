"""``kerascnn validate`` (accuracy parity of every exported file against the Keras model) and
``kerascnn benchmark`` (latency and size per format), printed as one table each.

Each file is run by :mod:`kerascnn.export.runtime` with the preprocessing its *own* metadata describes,
and its labels are checked against the sidecar ``labels.txt`` and mapped by name onto the data's classes: a
wrong normalization or a swapped label file shows up as lost accuracy or a failed check. In a folder with
an export record (:mod:`kerascnn.export.folder`), a file of another model than the recorded export's, or
one no export wrote, is a ``stale`` row, named and not run; named on its own, it is validated.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from kerascnn.errors import KerascnnError
from kerascnn.evaluate import format_interval, wilson_interval

from . import folder as kfolder
from . import metadata as md
from .formats import KIND_BY_SUFFIX, KINDS
from .runtime import RuntimeLoadError, file_format, load_predictor


class ValidateError(KerascnnError, ValueError):
    pass


@dataclass
class Row:
    format: str
    file: str
    status: str = "ok"
    size_mb: float | None = None
    top1: float | None = None
    drop_pp: float | None = None
    agreement: float | None = None  # % of images whose argmax equals the Keras model's
    max_abs_diff: float | None = None  # max |output - Keras output| (probabilities for softmax models)
    ms_per_image: float | None = None
    error: str | None = None
    agreement_ci95: list[float] | None = None  # Wilson 95% interval of the agreement, in %
    note: str | None = None  # what the row found beyond its figures (the float16 row's diagnosis)
    accelerators: dict | None = None  # .tflite: GPU delegate and integer/NNAPI readiness (delegates.py)


def collect_files(paths) -> list[Path]:
    """Model files from export folders and/or files, Keras first, then TFLite, then ONNX."""
    files = []
    for p in map(Path, paths):
        if p.is_dir():
            found = [
                f
                for f in sorted(p.iterdir())
                if f.suffix.lower() in KIND_BY_SUFFIX and not f.name.startswith(".")
            ]
            if not found:
                raise ValidateError(f"{p}: no .keras/.h5/.tflite/.onnx file in this folder")
            files.extend(found)
        elif p.exists():
            files.append(p)
        else:
            raise ValidateError(f"{p} does not exist")
    unique = list(dict.fromkeys(files))
    return sorted(unique, key=lambda f: (KINDS.index(file_format(f)), f.name))


def _variant(path: Path, meta: md.ModelMetadata | None) -> str:
    kind = file_format(path)
    if meta is None or kind == "keras":
        return kind
    variant = f"{kind} {meta.quantization if meta.quantization != 'none' else 'float32'}"
    if meta.weights:
        variant += f" {meta.weights}"
    if meta.float_layers and meta.quantization != "mixed":  # --float-layers
        variant += f" ({len(meta.float_layers)} float layer(s))"
    if meta.input_dtype != "float32":
        variant += f" ({meta.input_dtype} io)"
    return variant


@dataclass
class EvalData:
    pixels: np.ndarray  # uint8 (N, H, W, C), decoded and resized by kerascnn (or LazyImages, as big)
    labels: np.ndarray | None  # None: unlabeled
    class_names: list[str] | None
    description: str
    frames: object = None  # the same images as a camera gives them: RGB at their own size (a sequence)


class FileFrames:
    """The images of ``paths`` as RGB uint8 (H, W, 3) at their own size, decoded when asked for."""

    def __init__(self, paths):
        self.paths = [str(p) for p in paths]

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, index):
        from kerascnn.data import viewable_image

        if isinstance(index, slice):
            return FileFrames(self.paths[index])
        # as a camera app shows it: HEIC's primary image, EXIF orientation applied, alpha over white
        return np.asarray(viewable_image(self.paths[index]).convert("RGB"), np.uint8)


def load_eval_data(data: str, meta: md.ModelMetadata, limit: int | None = None, seed: int = 0) -> EvalData:
    """The images of ``data`` a model is scored on, at the model's size: its test split (val when there
    is none), a folder of class folders whole (:func:`kerascnn.data.load_eval_set`); or, for a folder
    of images without class folders, those images unlabeled. ``limit``: a random subset of that many."""
    from kerascnn import data as kdata

    size, channels = tuple(meta.input_size), meta.channels
    try:
        images = kdata.open_images(data, size, channels)
    except kdata.DataError as e:
        raise ValidateError(str(e)) from None
    if not images.labeled:
        files = images.files[: limit or None]
        pixels = kdata.FileImages(files, size, channels)
        if kdata.resolve_cache("auto", len(files), size, channels) == "ram":
            pixels = np.asarray(pixels)  # every runtime reads them: decode once when they fit
        return EvalData(pixels, None, None, f"{len(pixels)} unlabeled images from {data}", FileFrames(files))
    try:  # a folder of class folders is scored whole; else its test split (kdata.load_eval_set)
        scored = kdata.load_eval_set(data, size, channels, seed=seed)
    except kdata.DataError as e:
        raise ValidateError(str(e)) from None
    split = scored.split
    idx = np.arange(len(split))
    source = scored.source
    if limit and limit < len(split):
        idx = np.sort(np.random.default_rng(seed).permutation(len(split))[:limit])
        source = f"{len(idx):,d} of the {source} (--limit {limit})"
    if split.paths is not None:
        frames = FileFrames([split.paths[i] for i in idx])
    elif data in kdata.BUILTINS:  # its test images at their own size (the test split is never resampled)
        native = kdata.load_builtin(data)[1][0]
        frames = native[idx][..., None] if native.ndim == 3 else native[idx]
    else:  # a TFDS dataset: its images as loaded, at the model's size
        frames = split.images[idx]
    pixels = split.subset(idx).images
    if not split.in_memory and kdata.resolve_cache("auto", len(idx), size, channels) == "ram":
        pixels = np.asarray(pixels)  # every runtime reads them: decode once when they fit
    return EvalData(pixels, split.labels[idx], scored.class_names, source, frames)


def _label_map(file_labels: list[str], class_names: list[str], where: str) -> np.ndarray:
    """Index of each of the file's labels in the data's classes: by name, or by position when either
    side is unnamed (digit class folders, or a model exported without --labels)."""
    if sorted(file_labels) == sorted(class_names):
        return np.array([class_names.index(label) for label in file_labels])
    unnamed = all(c.isdigit() for c in class_names) or file_labels == [
        str(i) for i in range(len(file_labels))
    ]
    if len(file_labels) == len(class_names) and unnamed:
        return np.arange(len(class_names))
    raise ValidateError(
        f"{where}: its labels ({', '.join(file_labels)}) are not the classes of the data "
        f"({', '.join(class_names)})"
    )


def validate(
    paths,
    data: str,
    max_drop: float = 1.0,
    min_agreement: float = 90.0,
    limit: int | None = None,
    threads: int | None = None,
    latency_runs: int = 20,
    mediapipe: bool = True,
    log=print,
) -> tuple[list[Row], dict]:
    """Run every file on the same images; returns (rows, summary). A row fails when its file cannot be
    loaded or run, its labels disagree with labels.txt or the data, or it loses more than ``max_drop``
    points of top-1 against the Keras model (unlabeled data: argmax agreement below ``min_agreement``%).

    With ``mediapipe``, every ``.tflite`` gets a second row: the file alone through MediaPipe Tasks'
    ImageClassifier (the runtime of the Android/iOS/web apps), fed the images as a camera gives them
    (RGB, at their own size); its category names must equal the file's labels. A file MediaPipe cannot
    run by design (grayscale or int8 input) gets status ``n/a`` with what to do, and does not fail."""
    files = collect_files(paths)
    stale = _stale_files(paths, log)
    if stale:
        log(f"not validating {len(stale)} stale file(s): {', '.join(p.name for p in stale)} (see the notes)")
    entries: list[tuple[Row, object]] = []  # (row, predictor or None)
    mediapipe_note = None
    for f in files:
        if f in stale:
            entries.append((Row(file_format(f), f.name, STALE, f.stat().st_size / 1e6, error=stale[f]), None))
            continue
        try:
            pred = load_predictor(f, threads=threads)
            if pred.metadata is None:
                raise md.MetadataError(f"{f}: no kerascnn metadata (embedded, or in model.json beside it)")
            _check_sidecar_labels(f, pred.metadata)
            entries.append((Row(_variant(f, pred.metadata), f.name, size_mb=f.stat().st_size / 1e6), pred))
        except Exception as e:  # noqa: BLE001 - one bad file is a FAIL row; the others go on
            pred = None
            error = str(e) if isinstance(e, KerascnnError) else f"{f}: {type(e).__name__}: {e}"
            entries.append((Row(file_format(f), f.name, "FAIL", f.stat().st_size / 1e6, error=error), None))
        if file_format(f) == "tflite" and pred is not None:
            _read_accelerators(entries[-1][0], f, pred, entries)
        if file_format(f) == "tflite" and pred is not None and pred.metadata.quantization in FLOAT_FILES:
            entries.append(_float16_entry(f, pred, entries))
        if mediapipe and file_format(f) == "tflite" and mediapipe_note is None:
            row, mp_pred, mediapipe_note = _mediapipe_entry(f, pred)
            if row is not None:
                entries.append((row, mp_pred))
    metas = [p.metadata for _, p in entries if p is not None and p.format != "mediapipe"]
    if not metas:
        return [r for r, _ in entries], {"data": data, "images": 0, "passed": False, "stale": _names(stale)}
    sizes = {(tuple(m.input_size), m.channels) for m in metas}
    if len(sizes) > 1:
        raise ValidateError(
            f"the files have different input sizes {sorted(sizes)}: validate one model at a time"
        )
    eval_data = load_eval_data(data, metas[0], limit)
    log(f"validating {len(files)} file(s) on {eval_data.description}")

    ref_probs = ref_top1 = None
    for row, pred in entries:
        if pred is None:
            continue
        try:
            if pred.format == "mediapipe":
                probs = pred.predict(eval_data.frames)
                _check_mediapipe_names(pred)
                file_labels = pred.names
            else:
                probs = pred.predict(eval_data.pixels)
                file_labels = pred.metadata.labels
            if probs.shape != (len(eval_data.pixels), len(file_labels)):
                raise ValidateError(f"output shape {probs.shape}, expected (N, {len(file_labels)})")
            if eval_data.labels is not None:
                mapping = _label_map(file_labels, eval_data.class_names, row.file)
                predicted = mapping[probs.argmax(1)]
                row.top1 = float((predicted == eval_data.labels).mean() * 100)
                # Outputs in the data's class order, so files with permuted labels compare fairly.
                aligned = np.zeros_like(probs)
                aligned[:, mapping] = probs
                probs = aligned
            if ref_probs is None and pred.format == "keras":
                ref_probs, ref_top1 = probs, row.top1
            if ref_probs is not None:
                agree = int((probs.argmax(1) == ref_probs.argmax(1)).sum())
                row.agreement = agree / len(probs) * 100
                row.agreement_ci95 = list(wilson_interval(agree, len(probs)))
                row.max_abs_diff = float(np.abs(probs - ref_probs).max())
                if row.top1 is not None and ref_top1 is not None:
                    row.drop_pp = ref_top1 - row.top1
            if pred.format == "gpu float16":
                _judge_float16(row, pred, probs, eval_data.pixels, min_agreement)
            sample = eval_data.frames[:1] if pred.format == "mediapipe" else eval_data.pixels[:1]
            row.ms_per_image = pred.latency_ms(sample, batch_size=1, runs=latency_runs)
        except Exception as e:  # noqa: BLE001 - one failing file never stops the table
            if pred.format == "gpu float16":  # the simulation's limit, not the file's fault
                row.status, row.error = NOT_APPLICABLE, f"float16 simulation failed ({type(e).__name__}: {e})"
                continue
            row.status, row.error = "FAIL", f"{type(e).__name__}: {e}"
            continue
        finally:
            if pred.format == "mediapipe":
                pred.close()
        if row.status == "FAIL":
            continue
        if row.drop_pp is not None and row.drop_pp > max_drop:
            row.status, row.error = "FAIL", f"loses {row.drop_pp:.2f} points > --max-drop {max_drop}"
        elif eval_data.labels is None and row.agreement is not None and row.agreement < min_agreement:
            row.status, row.error = "FAIL", f"agrees with Keras on {row.agreement:.1f}% < {min_agreement}%"
    rows = [r for r, _ in entries]
    summary = {
        "data": data,
        "images": len(eval_data.pixels),
        "labeled": eval_data.labels is not None,
        "reference": "keras" if ref_probs is not None else None,
        "max_drop": max_drop,
        "mediapipe": mediapipe_note or ("on" if mediapipe else "off"),
        "passed": all(r.status in ("ok", NOT_APPLICABLE, STALE) for r in rows),
        "stale": _names(stale),
    }
    return rows, summary


NOT_APPLICABLE = "n/a"
STALE = "stale"  # a file of a folder that its export record does not give to the folder's model


def _stale_files(paths, log) -> dict[Path, str]:
    """The stale files of the folders in ``paths`` (:func:`kerascnn.export.folder.stale_files`), with
    why; a file also named on its own is validated."""
    named = {Path(p) for p in paths if not Path(p).is_dir()}
    stale = {}
    for folder in (Path(p) for p in paths if Path(p).is_dir()):
        try:
            found = kfolder.stale_files(folder)
        except kfolder.RecordError as e:
            log(f"{e}: its files are validated without it")
            continue
        stale |= {folder / name: why for name, why in found.items() if folder / name not in named}
    return stale


def _names(stale: dict[Path, str]) -> list[str]:
    return [str(p) for p in stale]


FLOAT_FILES = ("none", "float16")  # the quantizations the GPU delegate runs in float16 by default


def _read_accelerators(row: Row, path: Path, pred, entries) -> None:
    """The file's GPU-delegate and integer readings (:func:`kerascnn.export.delegates.accelerators`),
    its ops named by the layers of the Keras model validated with it."""
    from .delegates import accelerators

    keras_pred = next((p for _, p in entries if p is not None and p.format == "keras"), None)
    names = [layer.name for layer in keras_pred.model.layers] if keras_pred is not None else None
    found = accelerators(path, pred.metadata.quantization, names)
    row.accelerators = {k: v for k, v in found.items() if k != "lines"}
    row.note = "; ".join(found["lines"])


def _float16_entry(path: Path, pred, entries) -> tuple[Row, object]:
    """The ``gpu float16`` row of a float ``.tflite``: simulated from the Keras model validated with it
    (:mod:`kerascnn.export.float16`)."""
    from kerascnn.graph import layer_paths

    from .float16 import Float16Predictor

    file_kind = _variant(path, pred.metadata).removeprefix("tflite ")
    row = Row(f"gpu float16 ({file_kind} file)", path.name)
    keras_pred = next((p for _, p in entries if p is not None and p.format == "keras"), None)
    if keras_pred is None:
        row.status = NOT_APPLICABLE
        row.error = "the float16 simulation runs the Keras model: validate the .keras file with it"
        return row, None
    try:
        return row, Float16Predictor(path, pred.metadata, keras_pred.model, layer_paths(keras_pred.model))
    except Exception as e:  # noqa: BLE001 - a model the simulation cannot rebuild: the row says so
        row.status, row.error = NOT_APPLICABLE, f"float16 simulation unavailable ({type(e).__name__}: {e})"
        return row, None


def _judge_float16(row: Row, pred, probs: np.ndarray, pixels: np.ndarray, min_agreement: float) -> None:
    """FAIL on inf/NaN or below ``min_agreement``; the note names the layer float16 hurts most."""
    diagnosis = pred.diagnose(pixels)
    row.note = diagnosis.describe()
    if not np.isfinite(probs).all():
        row.status, row.error = "FAIL", f"inf/NaN outputs in float16; {row.note}"
    elif row.agreement is not None and row.agreement < min_agreement:
        row.status = "FAIL"
        row.error = f"agrees with Keras on {row.agreement:.1f}% < {min_agreement}% in float16; {row.note}"


def _mediapipe_entry(path: Path, pred) -> tuple[Row | None, object, str | None]:
    """(row, predictor, note) for the MediaPipe Tasks run of a ``.tflite``; the note (and no row) when
    MediaPipe is not installed."""
    from .runtime import MediaPipePredictor, MediaPipeUnavailable, mediapipe_limit

    variant = _variant(path, pred.metadata if pred is not None else None).replace("tflite", "mediapipe", 1)
    row = Row(variant, path.name, size_mb=path.stat().st_size / 1e6)
    try:
        mp_pred = MediaPipePredictor(path, pred.metadata if pred is not None else None)
    except MediaPipeUnavailable as e:
        return None, None, f"no MediaPipe Tasks rows: {e}"
    except RuntimeLoadError as e:
        advice = mediapipe_limit(str(e))
        row.status = NOT_APPLICABLE if advice else "FAIL"
        row.error = f"{e}" + (f" ({advice})" if advice else "")
        return row, None, None
    if pred is None:
        row.status, row.error = "FAIL", "its LiteRT row failed (see above)"
        mp_pred.close()
        return row, None, None
    return row, mp_pred, None


def _check_mediapipe_names(pred):
    """MediaPipe names the classes from the labels file of the standard metadata: they must be the labels
    kerascnn's metadata gives, in the same order, or a phone app shows the wrong names."""
    names, labels = pred.names or [], pred.metadata.labels
    if not any(names):
        raise ValidateError(
            "MediaPipe Tasks returned categories without names: the file's TFLite Metadata has no labels "
            "file (TENSOR_AXIS_LABELS); re-export it with kerascnn"
        )
    if names != labels:
        wrong = (
            next(i for i, (a, b) in enumerate(zip(names, labels, strict=False)) if a != b)
            if len(names) == len(labels)
            else None
        )
        detail = (
            f"class {wrong} is '{names[wrong]}' for MediaPipe, '{labels[wrong]}' in the file's labels"
            if wrong is not None
            else f"{len(names)} names for {len(labels)} labels"
        )
        raise ValidateError(f"MediaPipe's category names are not the file's labels: {detail}")


def _check_sidecar_labels(path: Path, meta: md.ModelMetadata):
    labels_file = path.parent / "labels.txt"
    if labels_file.exists():
        sidecar = md.read_labels_txt(labels_file)
        if sidecar != meta.labels:
            raise ValidateError(
                f"{labels_file} ({', '.join(sidecar)}) disagrees with the labels embedded in {path.name} "
                f"({', '.join(meta.labels)}): a phone reading labels.txt would name the wrong classes"
            )


def _fmt(value, spec):
    return "-" if value is None else format(value, spec)


def format_rows(rows: list[Row]) -> str:
    table = [
        ("format", "file", "status", "size MB", "top-1 %", "drop pp")
        + ("agree %", "95% CI", "max|diff|", "ms/img")
    ]
    for r in rows:
        table.append(
            (
                r.format,
                r.file,
                r.status,
                _fmt(r.size_mb, ".3f"),
                _fmt(r.top1, ".2f"),
                _fmt(r.drop_pp, "+.2f"),
                _fmt(r.agreement, ".2f"),
                format_interval(r.agreement_ci95) if r.agreement_ci95 else "-",
                _fmt(r.max_abs_diff, ".2e"),
                _fmt(r.ms_per_image, ".2f"),
            )
        )
    text = format_table(table)
    errors = [
        f"  {r.file}: {r.error}" if r.error else f"  {r.file} ({r.format}): {r.note}"
        for r in rows
        if r.error or r.note
    ]
    return text + ("\n" + "\n".join(errors) if errors else "")


def format_table(rows) -> str:
    """Rows of cells as aligned text columns under a dashed rule (the first row is the header)."""
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(str(v).ljust(w) for v, w in zip(row, widths, strict=True)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def write_json(rows, summary, path):
    from kerascnn.runs import atomic_write_json

    atomic_write_json(path, {**summary, "rows": [asdict(r) for r in rows]})


# ------------------------------------------------------------------------------------------------
# benchmark
# ------------------------------------------------------------------------------------------------


@dataclass
class BenchRow:
    format: str
    file: str
    status: str = "ok"
    size_mb: float | None = None
    ms_batch1: float | None = None
    ms_batch: float | None = None
    images_per_s: float | None = None
    error: str | None = None
    xnnpack: dict | None = None  # .tflite: the ops XNNPACK takes and those on reference kernels
    gpu: dict | None = None  # .tflite: the ops the GPU delegate would take (delegates.gpu_compatibility)
    note: str | None = None


def benchmark(
    paths, batch_size: int = 32, threads: int | None = None, runs: int = 30, mediapipe: bool = True
) -> tuple[list[BenchRow], str | None]:
    """Latency at batch 1 and at ``batch_size`` (median of ``runs`` calls) and size of each file; with
    ``mediapipe``, a MediaPipe Tasks row after each ``.tflite`` (one ``classify`` call per image, its
    preprocessing included). Returns (rows, a note when MediaPipe is not installed)."""
    rows, note = [], None
    for f in collect_files(paths):
        row = BenchRow(file_format(f), f.name, size_mb=f.stat().st_size / 1e6)
        pred, pixels = None, None
        try:
            pred = load_predictor(f, threads=threads)
            row.format = _variant(f, pred.metadata)
            if pred.metadata is None:
                raise md.MetadataError(f"{f}: no kerascnn metadata")
            h, w = pred.metadata.input_size
            pixels = np.random.default_rng(0).integers(0, 256, (1, h, w, pred.metadata.channels), np.uint8)
            _time(row, pred, pixels, batch_size, runs)
            if file_format(f) == "tflite":
                from .delegates import gpu_compatibility, xnnpack_coverage

                coverage = xnnpack_coverage(f, threads=threads)
                row.xnnpack, row.note = coverage.to_dict(), coverage.describe()
                row.gpu = gpu_compatibility(f).to_dict()
        except Exception as e:  # noqa: BLE001
            row.status, row.error = "FAIL", f"{type(e).__name__}: {e}"
        rows.append(row)
        if mediapipe and note is None and file_format(f) == "tflite":
            mp_row, mp_pred, note = _mediapipe_entry(f, pred)
            if mp_row is None:
                continue
            bench_row = BenchRow(
                mp_row.format, mp_row.file, mp_row.status, mp_row.size_mb, error=mp_row.error
            )
            if mp_pred is not None:
                try:
                    _time(bench_row, mp_pred, pixels, batch_size, runs)
                except Exception as e:  # noqa: BLE001
                    bench_row.status, bench_row.error = "FAIL", f"{type(e).__name__}: {e}"
                finally:
                    mp_pred.close()
            rows.append(bench_row)
    return rows, note


def _time(row: BenchRow, pred, pixels, batch_size: int, runs: int):
    row.ms_batch1 = pred.latency_ms(pixels, 1, runs)
    row.ms_batch = pred.latency_ms(pixels, batch_size, max(3, runs // 3))
    row.images_per_s = batch_size / row.ms_batch * 1000


def format_bench(rows: list[BenchRow], batch_size: int) -> str:
    table = [
        (
            "format",
            "file",
            "status",
            "size MB",
            "ms b=1",
            f"ms b={batch_size}",
            "img/s",
            "XNNPACK ops",
            "GPU ops",
        )
    ]
    for r in rows:
        table.append(
            (
                r.format,
                r.file,
                r.status,
                _fmt(r.size_mb, ".3f"),
                _fmt(r.ms_batch1, ".2f"),
                _fmt(r.ms_batch, ".2f"),
                _fmt(r.images_per_s, ".0f"),
                f"{r.xnnpack['xnnpack_ops']}/{r.xnnpack['ops']}" if r.xnnpack else "-",
                f"{r.gpu['supported_ops']}/{r.gpu['ops']}" if r.gpu else "-",
            )
        )
    errors = [f"  {r.file}: {r.error}" for r in rows if r.error]
    errors += [f"  {r.file}: {r.note}" for r in rows if r.note and r.xnnpack and r.xnnpack["reference"]]
    return format_table(table) + ("\n" + "\n".join(errors) if errors else "")
