"""``kerascnn export``: one table of formats drives conversion, the sidecars and the printed summary.

A source is a run folder of ``kerascnn train`` (its best model, normalization, class names and
training data) or a user's ``.keras``/``.h5`` file of standard layers (normalization and labels from
options). Every file is written atomically; a variant that fails is reported and the others go on. The
folder's record (:mod:`kerascnn.export.folder`) says which files an earlier export wrote: only those are
replaced (others need ``force``), and those this export does not make are removed once it is done.
"""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from kerascnn.errors import KerascnnError
from kerascnn.keras_internals import run_through_graph
from kerascnn.runs import (
    ModelFileError,
    Run,
    RunFileError,
    atomic_save_model,
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_text,
    image_input_shape,
)

from . import folder as kfolder
from . import metadata as md
from . import sensitivity as sens
from .finetune import gzip_size  # light at import: tfmot loads on first use
from .formats import FORMAT_BY_KEY, FORMATS, QUANTIZE, Format
from .options import ExportOptions  # defined there (light, the CLI reads it); imported from here too


class ExportError(KerascnnError, ValueError):
    """The export cannot start (bad source or options); the message names the file or option."""


@dataclass
class Source:
    model_file: Path
    metadata: md.ModelMetadata
    data: str | None = None  # the training data, for calibration and QAT
    val_split: float = 0.1
    seed: int = 0
    run_dir: Path | None = None


def _kerascnn_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("kerascnn")
    except PackageNotFoundError:
        return ""


def resolve_source(path, mean=None, std=None, labels=None, model=None) -> Source:
    """Where the model, its normalization and its labels come from: a run folder, or a model file
    (with a run folder's config.json beside it, or ``mean``/``std``/``labels`` given by the user)."""
    from kerascnn.graph import GraphError, is_identity

    try:
        run = Run.open(path)
        model = run.load_model(model)
        height, width, channels = image_input_shape(model, run.model_file)
    except (RunFileError, ModelFileError, GraphError) as e:
        raise ExportError(str(e)) from None
    model_file = run.model_file
    classes = int(model.output_shape[-1])
    if run.preprocessing is not None and (mean is not None or std is not None):
        given_mean, given_std = mean if mean is not None else (0.0,), std if std is not None else (1.0,)
        if not is_identity(given_mean, given_std):
            raise ExportError(
                f"--mean {_values(given_mean)} --std {_values(given_std)} contradict {model_file}: the model "
                f"normalizes its input itself ({run.preprocessing.describe(model)}), so it takes raw pixels "
                "0-255; give no --mean/--std (or --mean 0 --std 1)"
            )
    mean, std = run.normalization(mean, std)
    if labels is not None:
        labels = list(labels)
    elif run.class_names:
        labels = run.class_names
    else:
        labels = [str(i) for i in range(classes)]
    if len(labels) != classes:
        raise ExportError(f"{model_file} predicts {classes} classes but {len(labels)} labels were given")
    output = "probabilities" if _ends_with_softmax(model) else "logits"
    from kerascnn.retrieval import model_fingerprint

    meta = md.ModelMetadata(
        model_name=model.name,
        labels=labels,
        input_size=[height, width],
        channels=channels,
        mean=list(mean),
        std=list(std),
        output=output,
        source=str(model_file),
        model_version=model_fingerprint(model)[:16],
        kerascnn_version=_kerascnn_version(),
    )
    source = Source(model_file, meta, run.data, run.val_split, run.seed, run.folder)
    source.model = model
    source.preprocessing = run.preprocessing
    return source


def _values(values) -> str:
    return ",".join(f"{v:g}" for v in values)


LUMA = (0.299, 0.587, 0.114)  # ITU-R 601-2, the weights of Pillow's convert("L")


def rgb_input_model(model):
    """A 1-channel model that takes RGB images: a fixed 1x1 convolution with the luma weights of Pillow's
    ``convert("L")`` in front of the same layers (shared, not copied). The weights sum to 1, so it commutes
    with the normalization: ``sum_c w_c (p_c - mean) / std = (luma - mean) / std``. Phone cameras give RGB
    frames, and MediaPipe Tasks classifies RGB images only."""
    import keras

    shape = model.input_shape
    if isinstance(shape, list) or len(shape) != 4 or shape[-1] != 1:
        raise ExportError(f"--rgb-input applies to models of 1-channel input; {model.name} takes {shape}")
    image = keras.Input(shape=(*shape[1:3], 3), name="rgb_image")
    to_gray = keras.layers.Conv2D(1, 1, use_bias=False, trainable=False, name="rgb_to_gray")
    gray = to_gray(image)
    to_gray.set_weights([np.array(LUMA, np.float32).reshape(1, 1, 3, 1)])
    # The model's layers, applied in order to the gray tensor: one flat functional model (not nested).
    outputs = run_through_graph(model, [gray], lambda layer: layer)
    from kerascnn.graph import carry_paths

    return carry_paths(keras.Model(image, outputs, name=model.name), model)


def _ends_with_softmax(model) -> bool:
    last = model.layers[-1]
    act = getattr(last, "activation", None)
    return getattr(act, "__name__", "") == "softmax" or type(last).__name__ == "Softmax"


# ------------------------------------------------------------------------------------------------
# Calibration data
# ------------------------------------------------------------------------------------------------


def calibration_images(meta: md.ModelMetadata, data: str, steps: int, seed: int = 0, val_split=0.1):
    """``steps`` 0-255 images at the model's size from the training split of ``data`` (a built-in, a
    class-folder dataset, or a folder of unlabeled images), drawn across classes at random."""
    return calibration_split(meta, data, steps, 0, seed, val_split)[0]


def calibration_split(meta: md.ModelMetadata, data: str, steps: int, holdout: int, seed=0, val_split=0.1):
    """(calibration images, held-back images, their labels or None): the same random draw as
    ``calibration_images`` for the first ``steps``, then ``holdout`` more that calibration never sees.
    When ``data`` has fewer than ``steps + holdout`` images, calibration keeps its ``steps`` and the
    rest is held back, but at least a quarter (and one image) is held back, the rest calibrating."""
    from kerascnn import data as kdata

    size, channels = tuple(meta.input_size), meta.channels
    rng = np.random.default_rng(seed)
    try:
        images = kdata.open_images(data, size, channels)
    except kdata.DataError as e:
        raise ExportError(f"--calibration-data: {e}") from None
    if not images.labeled:
        files = images.files
        n, labels = len(files), None
    else:
        dataset = kdata.load_dataset(data, size, channels, val_split=val_split, seed=seed, cache="stream")
        n, labels = len(dataset.train), dataset.train.labels
    perm = rng.permutation(n)
    if holdout and n < steps + holdout:
        if n < 2:
            raise ExportError(
                f"--calibration-data {data}: {n} image(s); --quantize mixed needs at least 2 (one to "
                "calibrate, one held back to check the file)"
            )
        holdout = max(min(holdout, n - steps), max(1, n // 4))
        steps = min(steps, n - holdout)
    calib, held = perm[:steps], perm[steps : steps + holdout]
    if labels is None:
        decode = lambda idx: np.stack([kdata.decode_image(files[i], size, channels) for i in idx])  # noqa: E731
        return decode(calib), (decode(held) if len(held) else None), None
    calib = np.sort(calib)
    return (
        dataset.train.images[calib],
        dataset.train.images[held] if len(held) else None,
        labels[held] if len(held) else None,
    )


# ------------------------------------------------------------------------------------------------
# The export
# ------------------------------------------------------------------------------------------------


@dataclass
class Result:
    format: str
    file: str | None
    status: str  # ok | failed
    seconds: float = 0.0
    size_bytes: int | None = None
    error: str | None = None
    notes: dict = field(default_factory=dict)


def _write_tflite(
    path: Path, flatbuffer: bytes, meta: md.ModelMetadata, quantization: str, **fields
) -> md.ModelMetadata:

    from .tflite import io_details

    file_meta = md.ModelMetadata(
        **{**asdict(meta), "format": "tflite", "quantization": quantization, **fields}
    )
    details = io_details(flatbuffer)
    details.pop("input_shape")
    for key, value in details.items():
        setattr(file_meta, key, value)
    atomic_write_bytes(path, md.embed_tflite_metadata(flatbuffer, file_meta))
    return file_meta


def _write_onnx(path: Path, proto, meta: md.ModelMetadata) -> md.ModelMetadata:

    md.embed_onnx_metadata(proto, meta)
    atomic_write_bytes(path, proto.SerializeToString())
    return meta


@dataclass
class _Job:
    """One export in progress: what every format's writer reads, and what they have written."""

    source: Source
    options: ExportOptions
    out: Path
    model: object  # the Keras model every format is made from (RGB-input or pruned when asked)
    meta: md.ModelMetadata
    log: Callable = print
    keras_file: Path | None = None  # the reference written into the folder (QAT starts from it)
    saved_model: Path | None = None  # the SavedModel every TFLite variant is converted from
    calibration: np.ndarray | None = None  # 0-255 images at the model's size
    held: np.ndarray | None = None  # held back from calibration (--quantize mixed checks on them)
    held_labels: np.ndarray | None = None
    mixed_summary: dict = field(default_factory=dict)
    float_layer_names: list[str] = field(default_factory=list)  # --float-layers, as flat layer names
    results: list[Result] = field(default_factory=list)
    files: dict[str, dict] = field(default_factory=dict)
    _session: sens.Int8Session | None = None

    @property
    def name(self) -> str:
        return self.meta.model_name

    def path(self, fmt: Format) -> Path:
        return self.out / f"{self.name}{fmt.suffix}"

    @property
    def layer_names(self) -> list[str]:
        """The Keras layer names, so converter and debugger report ops under them."""
        return [layer.name for layer in self.model.layers]

    def written(self, key: str) -> bool:
        return any(r.format == key and r.status == "ok" for r in self.results)

    def representative(self):
        from . import tflite as ktflite

        return ktflite.representative_from(self.calibration, self.meta.normalize, len(self.calibration))

    def session(self) -> sens.Int8Session:
        """The int8 calibration, made once and shared by the report and the mixed search."""
        if self._session is None:
            from kerascnn.graph import layer_paths

            self._session = sens.Int8Session(
                self.saved_model,
                self.representative(),
                self.layer_names,
                self.options.io_type,
                paths=layer_paths(self.model),
                per_tensor=self.options.per_tensor,
            )
        return self._session

    def run(self, fmt: Format) -> Path | None:
        """Write ``fmt`` with its writer; a failure is reported (and the other formats go on)."""
        path = self.path(fmt)
        t0 = time.perf_counter()
        try:
            file_meta, notes = WRITERS[fmt.writer](self, fmt, path)
        except Exception as e:  # noqa: BLE001 - one failed variant never stops the others
            self.results.append(
                Result(fmt.key, path.name, "failed", time.perf_counter() - t0, error=_one_line(e))
            )
            self.log(f"  {fmt.key:<14} FAILED: {_one_line(e)}")
            return None
        result = Result(fmt.key, path.name, "ok", time.perf_counter() - t0, path.stat().st_size, notes=notes)
        self.results.append(result)
        self.files[path.name] = {**notes, "format": fmt.key, "kind": fmt.kind, "bytes": result.size_bytes}
        self.files[path.name]["metadata"] = _file_fields(file_meta)
        self.log(f"  {fmt.key:<14} {path.name} ({result.size_bytes / 1e6:.2f} MB, {result.seconds:.1f} s)")
        return path


# ------------------------------------------------------------------------------------------------
# The writers: one per row kind of the format table, each returns (the file's metadata, notes)
# ------------------------------------------------------------------------------------------------


def _write_keras(job: _Job, fmt: Format, path: Path):
    atomic_save_model(job.model, path)
    return job.meta, {}


def _write_pruned(job: _Job, fmt: Format, path: Path):
    from . import quantize as kquant

    options = job.options
    with tempfile.TemporaryDirectory(prefix="kerascnn-prune-") as tmp:
        start = Path(tmp) / f"{job.name}.keras"  # the flat graph (nested models inlined), as exported
        atomic_save_model(job.model, start)
        report = kquant.prune_export(
            str(start),
            _training_data(job.source, options),
            str(path),
            sparsity=options.prune,
            epochs=options.prune_epochs,
            **_worker_args(job),
        )
    return job.meta, {"pruned": True, **report}


def _worker_args(job: _Job) -> dict:
    """What the pruning and QAT workers both take: the training batch, normalization and data split."""
    options = job.options
    return {
        "batch_size": options.batch_size,
        "mean": job.meta.mean,
        "std": job.meta.std,
        "train_fraction": options.train_fraction,
        "val_split": job.source.val_split,
        "seed": options.seed,
        "log": job.log,
    }


def _write_tflite_variant(job: _Job, fmt: Format, path: Path):
    from . import tflite as ktflite

    mode = fmt.quantize
    io_type = job.options.io_type if "io_type" in fmt.reads else "float32"
    rep = job.representative() if fmt.calibrated else None
    per_tensor = job.options.per_tensor and "per_tensor" in fmt.reads
    fields = {"weights": "per-tensor"} if per_tensor else {}
    notes = {"quantization": fmt.quantization, **fields}
    if mode == "int8" and job.options.float_layers:  # the --quantize mixed mechanism, layers named
        tensors, kept = job.session().float_tensors_of_layers(job.float_layer_names)
        flat = job.session().quantize(tensors)
        fields["float_layers"] = notes["float_layers"] = kept
        job.log(f"  int8: layers in float (--float-layers): {', '.join(kept)}")
    else:
        flat = ktflite.convert(job.saved_model, mode, rep, io_type, job.layer_names, per_tensor=per_tensor)
    if fmt.calibrated:
        notes["calibration_images"] = len(job.calibration)
    if mode == "int16x8":
        from .tflite import float_ops

        notes["float_ops"] = len(float_ops(flat))
    return _write_tflite(path, flat, job.meta, fmt.quantization, **fields), notes


def _write_mixed(job: _Job, fmt: Format, path: Path):
    from kerascnn.evaluate import format_interval, predict_arrays

    options, held = job.options, job.held
    inputs = job.meta.normalize(held)
    keras_top1 = predict_arrays(job.model, inputs, batch_size=64).argmax(-1)
    gate = sens.Gate(options.min_agreement, options.max_drop)
    holdout = sens.Holdout(inputs, keras_top1, job.held_labels)
    flat, summary = sens.mixed_file(job.session(), holdout, gate, log=job.log)
    if not summary["judged"]:  # too few images to tell a pass from a fail: the full int8 file
        agreement, ci = summary["agreement"], format_interval(summary["agreement_ci95"])
        job.log(
            f"  mixed: {summary['verdict']}: writing the full int8 file (agreement {agreement:.1f}% "
            f"on {len(held)}, 95% CI {ci})"
        )
    job.mixed_summary.update(summary)
    weights = {"weights": "per-tensor"} if options.per_tensor else {}
    kept, verdict = summary["float_layers"], summary["verdict"]
    file_meta = _write_tflite(path, flat, job.meta, "mixed", float_layers=kept, gate=verdict, **weights)
    notes = {
        "quantization": "mixed",
        "calibration_images": len(job.calibration),
        "held_back_images": len(held),
        "judged": summary["judged"],
        "gate": summary["verdict"],
        "float_layers": summary["float_layers"],
        "agreement": summary["agreement"],
        "agreement_ci95": summary["agreement_ci95"],
        "int8_agreement": summary["int8_agreement"],
        **weights,
    }
    if summary["drop"] is not None:
        notes |= {"drop": summary["drop"], "int8_drop": summary["int8_drop"]}
    if summary["judged"]:
        kept = summary["float_layers"]
        shown = ", ".join(kept[:8]) + (f" and {len(kept) - 8} more" if len(kept) > 8 else "")
        shown = shown or "none: the file passes in full int8"
        job.log(f"  mixed: layers in float: {shown} ({summary['verdict']})")
    return file_meta, notes


def _write_qat(job: _Job, fmt: Format, path: Path):
    from . import quantize as kquant

    options = job.options
    with tempfile.TemporaryDirectory(prefix="kerascnn-qat-") as tmp:
        raw = Path(tmp) / "qat.tflite"
        report = kquant.qat_export(
            str(job.keras_file),
            _training_data(job.source, options),
            str(raw),
            epochs=options.qat_epochs,
            lr=options.qat_lr,
            io_type=options.io_type,
            dynamic_batch=options.dynamic_batch,
            # Pruning-preserving QAT: the model is already pruned; the worker re-applies the
            # (reached) sparsity for one short epoch and fine-tunes with the scheme that keeps zeros.
            prune=options.prune,
            prune_epochs=1 if options.prune else None,
            qat_model_file=str(_qat_model_path(job.out, job.name)),
            **_worker_args(job),
        )
        flat = raw.read_bytes()
    return _write_tflite(path, flat, job.meta, "qat_int8"), {"quantization": "qat_int8", **report}


def _write_onnx_float(job: _Job, fmt: Format, path: Path):
    from . import onnx as konnx

    proto = konnx.keras_to_onnx(job.model, job.options.opset)
    meta = md.ModelMetadata(**{**asdict(job.meta), "format": "onnx"})
    return _write_onnx(path, proto, meta), {"opset": job.options.opset}


def _write_onnx_from_tflite(job: _Job, fmt: Format, path: Path):
    from . import onnx as konnx

    tfl = job.path(FORMAT_BY_KEY[fmt.source])
    proto = konnx.tflite_to_onnx(tfl, job.options.opset)
    meta = md.ModelMetadata(**{**asdict(md.read_tflite_metadata(tfl)), "format": "onnx"})
    return _write_onnx(path, proto, meta), {"opset": job.options.opset, "from": tfl.name}


WRITERS = {
    "keras": _write_keras,
    "pruned": _write_pruned,
    "tflite": _write_tflite_variant,
    "mixed": _write_mixed,
    "qat": _write_qat,
    "onnx": _write_onnx_float,
    "onnx_from_tflite": _write_onnx_from_tflite,
}
assert {f.writer for f in FORMATS} <= set(WRITERS), "a format without a writer"


def _write_int8_report(job: _Job) -> dict:
    """The per-layer int8 report beside the files; its failure is logged, never costs the int8 file."""
    try:
        report = job.session().report(job.name, job.path(FORMAT_BY_KEY["int8"]).name)
        report["weights"] = "per-tensor" if job.options.per_tensor else "per-channel"
        if job.float_layer_names:  # the int8 file beside it keeps these in float: the report says so
            report["float_layers"] = list(job.float_layer_names)
        if job.mixed_summary:
            report["mixed"] = job.mixed_summary
        paths = sens.write_report(report, job.out, job.name)
    except Exception as e:  # noqa: BLE001 - the report never costs the user the int8 file
        job.log(f"  int8 report    FAILED: {_one_line(e)}")
        return {"error": _one_line(e)}
    worst = "; ".join(f"{r['layer']} ({r['op']}) {r['channel_sqnr_db']:.1f} dB" for r in report["layers"][:3])
    job.log(f"  int8 report    {paths['txt'].name} (+ .json, .png); most error: {worst}")
    return {k: p.name for k, p in paths.items()}


def export_model(
    source: Source, out, options: ExportOptions, log=print, *, force: bool = False, keep_stale: bool = False
) -> list[Result]:
    """Export ``source`` into folder ``out``; returns one Result per requested format (failed ones too).

    The order: the reference ``.keras`` (or the pruned model, which then replaces the source), the
    TFLite variants in the order asked, the int8 report, QAT, then ONNX: float, and one converted from
    each integer TFLite file that was written.

    The folder's record (``.kerascnn-export.json``) is kept: a file this export would replace that no
    export wrote (or that changed since) stops it before it writes anything, unless ``force``; once the
    files are written, what an earlier export wrote and this one did not is removed (unchanged files
    only; ``keep_stale`` keeps them), and the log names it."""
    from . import tflite as ktflite

    options = _check_options(source, options)
    if Path(out).exists() and not Path(out).is_dir():
        raise ExportError(f"--out {out}: is a file, not a folder; give a folder for the exported files")
    meta, model = source.metadata, source.model
    if options.rgb_input:
        model = rgb_input_model(model)
        meta = md.ModelMetadata(**{**asdict(meta), "channels": 3, "channel_order": "RGB"})
    preprocessing = getattr(source, "preprocessing", None)
    if preprocessing is not None:
        log(f"the model normalizes its input itself: {preprocessing.describe(model)}; files take raw pixels")
    model, meta = _fold_normalization(model, meta, options, log)
    job = _Job(source, options, Path(out), model, meta, log)
    job.float_layer_names = _resolve_float_layers(model, options.float_layers)
    record = _claim_folder(job, force)
    job.out.mkdir(parents=True, exist_ok=True)
    record.begin(_planned(job), _identity(source), _kerascnn_version())

    first = FORMAT_BY_KEY["pruned" if options.prune else "keras"]
    job.keras_file = job.run(first)
    if options.prune:  # the pruned model is what every format below is made from
        if job.keras_file is None:
            record.abandon()  # nothing was made: the folder and its record as they were
            return job.results
        import keras

        from kerascnn.graph import carry_paths

        job.model = carry_paths(keras.saving.load_model(job.keras_file, compile=False), job.model)
    job.keras_file = job.path(first)

    variants = [QUANTIZE[mode] for mode in options.tflite]
    if any(fmt.calibrated for fmt in variants):
        job.calibration, job.held, job.held_labels = calibration_split(
            meta,
            options.calibration_data or source.data,
            options.calibration_steps,
            options.holdout if "mixed" in options.tflite else 0,
            options.seed,
            source.val_split,
        )
        if len(job.calibration) < MIN_CALIBRATION:
            log(
                f"  warning: int8 calibration on {len(job.calibration)} image(s), fewer than "
                f"{MIN_CALIBRATION}: "
                "the activation ranges are estimated from few images, so the int8 files may clip or waste "
                f"range on the images they will see; give --calibration-data with at least {MIN_CALIBRATION}"
            )
    report_files = None
    with tempfile.TemporaryDirectory(prefix="kerascnn-export-") as tmp:
        if variants:
            from .rewrite import phone_pooling

            batch = None if options.dynamic_batch else ktflite.PHONE_BATCH
            phone, rewritten = phone_pooling(job.model)  # pools XNNPACK leaves to LiteRT's own kernels
            if rewritten:
                listed = ", ".join(rewritten)
                job.log(f"  tflite: as depthwise convolutions, which every phone delegate takes: {listed}")
            job.saved_model = ktflite.write_saved_model(phone, Path(tmp) / "saved_model", batch)
        for fmt in variants:
            job.run(fmt)
        if {"int8", "mixed"} & set(options.tflite):
            report_files = _write_int8_report(job)
    if options.qat:
        job.run(FORMAT_BY_KEY["qat_int8"])
    if options.onnx:
        for fmt in FORMATS:
            if fmt.kind == "onnx" and (fmt.source is None or job.written(fmt.source)):
                job.run(fmt)
    _write_sidecars(job, report_files)
    written = [r.file for r in job.results if r.status == "ok"] + ["labels.txt", "model.json"]
    written += [name for key, name in (report_files or {}).items() if key != "error"]
    if job.written("qat_int8"):
        written.append(f"{QAT_FOLDER}/{job.name}_qat.h5")
    for line in record.finish(written, keep_stale).lines():
        log(line)
    return job.results


def _planned(job: _Job) -> list[str]:
    """Every file this export may write, relative to its folder (the names of the folder's record)."""
    options = job.options
    formats = [FORMAT_BY_KEY["pruned" if options.prune else "keras"], *(QUANTIZE[q] for q in options.tflite)]
    formats += [FORMAT_BY_KEY["qat_int8"]] if options.qat else []
    made = {f.key for f in formats}
    if options.onnx:
        formats += [f for f in FORMATS if f.kind == "onnx" and (f.source is None or f.source in made)]
    names = [job.path(f).name for f in formats] + ["labels.txt", "model.json"]
    if {"int8", "mixed"} & set(options.tflite):
        names += [p.name for p in sens.report_paths(job.out, job.name).values()]
    if options.qat:
        names.append(f"{QAT_FOLDER}/{job.name}_qat.h5")
    return names


def _claim_folder(job: _Job, force: bool) -> kfolder.ExportRecord:
    """The folder's record, once no file this export would replace is someone else's (or ``force``)."""
    try:
        record = kfolder.ExportRecord.read(job.out)
    except kfolder.RecordError as e:
        if not force:
            raise ExportError(f"{e}; pass --force to start a new record (and replace the files)") from None
        job.log(f"  --force: {e}; starting a new record")
        record = kfolder.ExportRecord(job.out)
    conflicts = record.conflicts(_planned(job))
    if conflicts and not force:
        raise ExportError(record.conflict_message(conflicts, job.source.model_file))
    if conflicts:
        job.log(f"  --force: replacing {', '.join(conflicts)} (not as kerascnn export wrote them)")
    return record


def _identity(source: Source) -> dict:
    meta = source.metadata
    return kfolder.model_identity(source.model_file, meta.model_name, meta.model_version, source.run_dir)


MIN_CALIBRATION = 100  # int8 calibration images below which export warns


def _resolve_float_layers(model, names) -> list[str]:
    """The flat layer names of ``--float-layers`` (names or paths inside nested models); an unknown
    one stops the export before anything is written, naming the closest and the valid names."""
    import difflib

    from kerascnn.graph import GraphError, layer_path, resolve_layer

    flat = []
    for name in names:
        try:
            flat.append(resolve_layer(model, name, "--float-layers").name)
        except GraphError:
            valid = [layer_path(model, layer.name) for layer in model.layers if layer.weights]
            close = difflib.get_close_matches(name, valid, n=3, cutoff=0.5)
            raise ExportError(
                f"--float-layers {name}: no such layer in {model.name}"
                + (f" (did you mean {' or '.join(close)}?)" if close else "")
                + f"; the layers with weights are {', '.join(valid)}"
            ) from None
    return list(dict.fromkeys(flat))


def _fold_normalization(model, meta: md.ModelMetadata, options: ExportOptions, log):
    """(model, metadata) with the normalization in the graph, when it is per-channel (MediaPipe Tasks
    and the TFLite Metadata's consumers take one mean/std for all channels) or ``--fold-normalization``:
    a Normalization layer in front, and the files then take raw pixels (mean 0, std 1)."""
    from kerascnn.graph import fold_normalization, is_identity

    per_channel = len(set(meta.mean)) > 1 or len(set(meta.std)) > 1
    if is_identity(meta.mean, meta.std) or not (per_channel or options.fold_normalization):
        return model, meta
    model = fold_normalization(model, meta.mean, meta.std)
    log(
        f"normalization (mean {_values(meta.mean)}, std {_values(meta.std)}) folded into the graph: "
        "the files take raw pixels"
    )
    return model, md.ModelMetadata(**{**asdict(meta), "mean": [0.0], "std": [1.0]})


def _write_sidecars(job: _Job, report_files: dict | None) -> None:
    """``labels.txt`` and ``model.json`` (the metadata, every file with its sizes, what failed)."""
    for name, entry in job.files.items():
        entry["gzip_bytes"] = gzip_size(job.out / name)
    atomic_write_text(job.out / "labels.txt", md.labels_txt(job.meta.labels))
    sidecar = {
        "model": json.loads(job.meta.to_json()),
        "files": job.files,
        **({"int8_report": report_files} if report_files else {}),
        "failed": {r.format: r.error for r in job.results if r.status != "ok"},
        "options": asdict(job.options),
    }
    atomic_write_json(job.out / "model.json", sidecar)


QAT_FOLDER = "qat"


def _qat_model_path(out: Path, name: str) -> Path:
    """The fake-quantized tf_keras model (reloads from .h5 only), kept for further QAT; in a sub-folder
    so that ``validate`` does not take it for a Keras 3 model."""
    folder = out / QAT_FOLDER
    folder.mkdir(exist_ok=True)
    return folder / f"{name}_qat.h5"


_FILE_FIELDS = (
    "format",
    "quantization",
    "input_dtype",
    "output_dtype",
    "input_quantization",
    "output_quantization",
)


def _file_fields(meta: md.ModelMetadata) -> dict:
    return {k: getattr(meta, k) for k in _FILE_FIELDS}


def _one_line(e: Exception) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0] if text else ''}"[:400]


def _training_data(source: Source, options: ExportOptions) -> str:
    data = source.data or options.calibration_data
    if data is None:
        raise ExportError("QAT and pruning fine-tune on training data: give --calibration-data DATA")
    return data


def _check_options(source: Source, options: ExportOptions) -> ExportOptions:
    bad = [q for q in options.tflite if q not in QUANTIZE]
    if bad:
        raise ExportError(f"--quantize: unknown mode(s) {', '.join(bad)} (choose from {', '.join(QUANTIZE)})")
    asked = [QUANTIZE[q] for q in options.tflite] + ([FORMAT_BY_KEY["qat_int8"]] if options.qat else [])
    if options.io_type != "float32" and not any("io_type" in f.reads for f in asked):
        takers = [f.option for f in FORMATS if "io_type" in f.reads]
        raise ExportError(f"--io-type int8/uint8 applies to integer models: add {', '.join(takers)}")
    if options.float_layers and not any("float_layers" in f.reads for f in asked):
        raise ExportError(
            "--float-layers keeps layers in float in the int8 file: add --quantize int8 "
            "(or let --quantize mixed choose the layers)"
        )
    if options.per_tensor and not any("per_tensor" in f.reads for f in asked):
        takers = [f.option for f in FORMATS if "per_tensor" in f.reads]
        raise ExportError(f"--per-tensor applies to calibrated integer files: add {' or '.join(takers)}")
    calibrated = [f.quantize for f in asked if f.calibrated]
    if calibrated and not (options.calibration_data or source.data):
        raise ExportError(
            f"--quantize {calibrated[0]} needs calibration images: {source.model_file} is not in a run "
            "folder, so give --calibration-data DATA (a dataset or a folder of images)"
        )
    if not 0 < options.min_agreement <= 100:
        raise ExportError(f"--min-agreement must be a percentage in (0, 100], got {options.min_agreement}")
    if options.max_drop is not None and options.max_drop < 0:
        raise ExportError(f"--max-drop must be >= 0 points, got {options.max_drop}")
    if options.holdout < 1:
        raise ExportError(f"--holdout must be >= 1 image, got {options.holdout}")
    if options.rgb_input and options.prune:
        raise ExportError(
            "--rgb-input with --prune: pruning would prune the RGB-to-gray weights too; export with "
            "--prune first, then export the pruned .keras with --rgb-input"
        )
    if options.prune is not None and not 0 < options.prune < 1:
        raise ExportError(f"--prune must be a sparsity in (0, 1), got {options.prune}")
    if options.calibration_steps < 1:
        raise ExportError(f"--calibration-steps must be >= 1, got {options.calibration_steps}")
    if not (options.tflite or options.onnx or options.qat):
        raise ExportError("nothing to export: give --tflite, --onnx or --qat")
    return options


# The first one exported goes in; int16x8 last: phones run it on reference kernels (BENCHMARKS.md).
ANDROID_PREFERENCE = ("qat_int8", "mixed", "int8", "float16", "dynamic", "float32", "int16x8")
ANDROID_ASSETS = Path("app/src/main/assets")


def check_android_project(android_dir) -> Path:
    project = Path(android_dir)
    if not (project / "settings.gradle.kts").is_file() or not (project / "app").is_dir():
        raise ExportError(f"--android: '{project}' is no Android project (settings.gradle.kts, app/)")
    return project


def install_android_assets(out, results: list[Result], android_dir, log=print) -> dict[str, Path]:
    """Copy one exported ``.tflite`` into an Android project's assets as ``model.tflite``, with
    ``labels.txt`` and ``model.json`` (that file's own metadata, the JSON embedded in it). The app reads
    the embedded metadata first and the sidecars when it is missing. Prefers QAT int8, then int8."""

    project = check_android_project(android_dir)
    done = {r.format: r for r in results if r.status == "ok"}
    chosen = next((done[key] for key in ANDROID_PREFERENCE if key in done), None)
    if chosen is None:
        raise ExportError("--android: no .tflite file was exported (add --tflite or --quantize)")
    source = Path(out) / chosen.file
    meta = md.read_metadata(source)
    assets = project / ANDROID_ASSETS
    assets.mkdir(parents=True, exist_ok=True)
    written = {
        "model.tflite": assets / "model.tflite",
        "labels.txt": assets / "labels.txt",
        "model.json": assets / "model.json",
    }
    atomic_write_bytes(written["model.tflite"], source.read_bytes())
    atomic_write_text(written["labels.txt"], md.labels_txt(meta.labels))
    atomic_write_text(written["model.json"], meta.to_json() + "\n")
    log(f"android: {chosen.file} -> {written['model.tflite']} (+ labels.txt, model.json)")
    return written


def format_results(results: list[Result]) -> str:
    rows = [("format", "file", "status", "size MB", "seconds", "note")]
    for r in results:
        note = r.error or ", ".join(
            f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}"
            for k, v in r.notes.items()
            if k in ("sparsity", "calibration_images", "held_back_images")
        )
        if r.notes.get("weights"):
            note += f", {r.notes['weights']} weights"
        if r.notes.get("judged") is False:
            note += ", not judged"
        elif "float_layers" in r.notes:
            note += f", {len(r.notes['float_layers'])} float layer(s)"
        size = f"{r.size_bytes / 1e6:.3f}" if r.size_bytes else "-"
        rows.append((r.format, r.file or "-", r.status, size, f"{r.seconds:.1f}", note))
    from .validate import format_table

    return format_table(rows)
