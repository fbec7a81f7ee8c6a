"""The QAT and pruning worker's commands (``python -m kerascnn.export.quantize {qat,prune,batch}``
runs :func:`main`): load the Keras 3 model, rebuild it in tf_keras, fine-tune, write the files and the
JSON report. Worker process only: it imports tfmot."""

from __future__ import annotations

import argparse
import gzip
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from kerascnn.evaluate import predict_arrays
from kerascnn.runs import atomic_path

from .finetune import (
    fine_tune,
    gzip_size,
    import_tfmot,
    load_training_data,
    log_line,
    steps_per_epoch,
    train_dataset,
)
from .formats import IO_TYPES
from .jobs import QuantizeError
from .options import FineTuneJob, default_qat_model
from .pruning import prune_model, pruned_kernels, sparsity_report
from .qat import build_qat_model, convert_int8, load_qat_model
from .tflite import PHONE_BATCH, run_tflite, tflite_int8_sparsity

# the first line of kerascnn.export.quantize's docstring, as `--help` printed it when the worker lived there
DESCRIPTION = (
    "Quantization-aware training (QAT) and pruning for any zoo model, to int8 TFLite and pruned ``.keras``."
)


def _load_keras3(path: str):
    import keras

    if not os.path.exists(path):
        raise QuantizeError(f"model file '{path}' does not exist")
    try:
        return keras.saving.load_model(path, compile=False)
    except Exception as err:
        raise QuantizeError(f"cannot load '{path}' as a Keras 3 model: {err}") from err


def _model_shape(model, opts) -> tuple[tuple[int, int, int], int]:
    shape = tuple(model.input_shape[1:])
    if len(shape) != 3 or any(d is None for d in shape):
        raise QuantizeError(
            f"model '{opts.model}' has input shape {model.input_shape}; QAT and pruning need a fixed "
            "(height, width, channels) input"
        )
    out = model.output_shape
    if isinstance(out, list) or len(out) != 2:
        raise QuantizeError(f"model '{opts.model}' must have one (batch, classes) output, has {out}")
    return shape, int(out[-1])


def _prepare(opts):
    """Common start of both commands: the Keras 3 model, its tf_keras twin, the data."""
    from kerascnn.export.legacy import to_tf_keras

    started = time.time()
    model = _load_keras3(opts.model)
    input_shape, num_classes = _model_shape(model, opts)
    log_line(f"[load] {opts.model}: {model.name}, input {input_shape}, {num_classes} classes")
    tfk_model = to_tf_keras(model)
    data, norm = load_training_data(opts, input_shape, num_classes)
    steps = steps_per_epoch(len(data.train), opts.batch_size, opts.max_steps)
    log_line(f"[data] {opts.data}: {len(data.train)} training images, {steps} steps per epoch")
    ds = train_dataset(data.train, num_classes, norm, opts.batch_size, opts.seed)
    report = {
        "model": str(opts.model),
        "model_name": model.name,
        "input_shape": list(input_shape),
        "num_classes": num_classes,
        "class_names": list(data.class_names),
        "data": opts.data,
        "train_images": len(data.train),
        "steps_per_epoch": steps,
        "mean": list(opts.mean),
        "std": list(opts.std),
    }
    return model, tfk_model, data, norm, ds, steps, report, started


def cmd_prune(opts) -> dict:
    import keras
    from kerascnn.export.legacy import from_tf_keras_weights

    model, tfk_model, data, norm, ds, steps, report, started = _prepare(opts)
    out = Path(opts.out)
    with tempfile.TemporaryDirectory(dir=out.parent) as tmp:
        baseline = Path(tmp) / "unpruned.keras"
        keras.saving.save_model(model, baseline)
        report["baseline_bytes"] = baseline.stat().st_size
        report["baseline_gzip_bytes"] = gzip_size(baseline)
    stripped, metrics = prune_model(tfk_model, ds, opts, opts.sparsity, steps, opts.epochs)
    from_tf_keras_weights(model, stripped)
    with atomic_path(out) as tmp:
        keras.saving.save_model(model, tmp)
    sparsity = sparsity_report(pruned_kernels(model))
    log_line(
        f"[prune] sparsity {sparsity['sparsity']:.4f} over {sparsity['weights']} conv/dense weights -> {out}"
    )
    report.update(
        out=str(out),
        target_sparsity=opts.sparsity,
        sparsity=sparsity["sparsity"],
        sparsity_detail=sparsity,
        bytes=out.stat().st_size,
        gzip_bytes=gzip_size(out),
        train_loss=metrics.get("loss"),
        train_accuracy=metrics.get("accuracy"),
        epochs=opts.epochs,
        elapsed_s=time.time() - started,
    )
    return report


def cmd_qat(opts) -> dict:
    import keras
    from kerascnn.export.legacy import from_tf_keras_weights

    model, tfk_model, data, norm, ds, steps, report, started = _prepare(opts)
    scheme = None
    if opts.prune is not None:
        epochs = opts.prune_epochs or opts.epochs
        if steps * epochs < 2:  # the schedule needs 2 steps; a small set has 1 per epoch
            epochs = 2
            log_line(f"[prune] {steps} step(s) per epoch: {epochs} epochs (the schedule needs 2 steps)")
        tfk_model, metrics = prune_model(tfk_model, ds, opts, opts.prune, steps, epochs)
        report["prune_train_accuracy"] = metrics.get("accuracy")
        report["pruned_sparsity"] = sparsity_report(pruned_kernels(tfk_model))["sparsity"]
        if opts.pruned_model:
            from_tf_keras_weights(model, tfk_model)
            with atomic_path(Path(opts.pruned_model)) as tmp:
                keras.saving.save_model(model, tmp)
            report["pruned_model"] = str(opts.pruned_model)
        scheme = import_tfmot().experimental.combine.Default8BitPrunePreserveQuantizeScheme()
    qat_model, custom = build_qat_model(tfk_model, scheme)
    for name, reason in custom.items():
        log_line(f"[qat] {name}: {reason}")
    metrics = fine_tune(qat_model, ds, opts, steps, opts.epochs, "qat")

    qat_path = Path(opts.qat_model)
    with atomic_path(qat_path) as tmp:
        qat_model.save(tmp, include_optimizer=False)
    reloaded = load_qat_model(qat_path)
    tflite = convert_int8(reloaded, opts.io_type, batch=None if opts.dynamic_batch else PHONE_BATCH)
    out = Path(opts.out)
    with atomic_path(out) as tmp:
        tmp.write_bytes(tflite)

    check = data.eval_split if data.eval_split is not None else data.train
    x = norm.numpy(check.images[: opts.check_images])
    keras_probs = predict_arrays(reloaded, x, 32)
    lite_probs = run_tflite(tflite, x)
    agreement = float(np.mean(keras_probs.argmax(-1) == lite_probs.argmax(-1)))
    log_line(
        f"[qat] int8 TFLite {out} ({len(tflite)} bytes): argmax agreement with the QAT model {agreement:.3f}"
    )
    report.update(
        out=str(out),
        qat_model=str(qat_path),
        io_type=opts.io_type,
        special_layers=custom,
        bytes=len(tflite),
        gzip_bytes=len(gzip.compress(tflite, compresslevel=9)),
        train_loss=metrics.get("loss"),
        train_accuracy=metrics.get("accuracy"),
        epochs=opts.epochs,
        check={
            "images": len(x),
            "argmax_agreement": agreement,
            "max_abs_diff": float(np.max(np.abs(keras_probs - lite_probs))),
            "qat_accuracy": float(np.mean(keras_probs.argmax(-1) == check.labels[: len(x)])),
            "tflite_accuracy": float(np.mean(lite_probs.argmax(-1) == check.labels[: len(x)])),
        },
    )
    if opts.prune is not None:
        report["target_sparsity"] = opts.prune
        report["sparsity"] = tflite_int8_sparsity(tflite)["sparsity"]
    if opts.probe:
        probe = norm.numpy(np.load(opts.probe))
        report["probe_qat"] = predict_arrays(reloaded, probe, 32).tolist()
    report["elapsed_s"] = time.time() - started
    return report


def _floats(text: str) -> list[float]:
    return [float(v) for v in text.split(",") if v.strip()]


def parser() -> argparse.ArgumentParser:
    """The worker's command line, as :meth:`FineTuneJob.argv` writes it; its defaults are the job's."""
    defaults = FineTuneJob  # its fields' defaults, as class attributes
    cli = argparse.ArgumentParser(prog="python -m kerascnn.export.quantize", description=DESCRIPTION)
    sub = cli.add_subparsers(dest="command", required=True)
    for name, help_ in (
        ("qat", "quantization-aware training to int8 TFLite"),
        ("prune", "magnitude pruning"),
    ):
        p = sub.add_parser(name, help=help_)
        p.add_argument("model", help="Keras 3 model file (.keras or .h5)")
        p.add_argument("--data", required=True, help="fashion_mnist, mnist or a folder of class folders")
        p.add_argument("--out", required=True, help=".tflite (qat) or .keras (prune) to write")
        p.add_argument("--epochs", type=int, default=defaults.epochs)
        p.add_argument("--lr", type=float, default=defaults.lr)
        p.add_argument("--batch-size", type=int, default=defaults.batch_size)
        p.add_argument(
            "--mean", type=_floats, default=list(defaults.mean), help="per-channel pixel mean, e.g. 127.5"
        )
        p.add_argument(
            "--std", type=_floats, default=list(defaults.std), help="per-channel pixel std, e.g. 127.5"
        )
        p.add_argument("--train-fraction", type=float, default=defaults.train_fraction)
        p.add_argument("--val-split", type=float, default=defaults.val_split)
        p.add_argument("--max-steps", type=int, default=defaults.max_steps, help="cap on the steps per epoch")
        p.add_argument("--seed", type=int, default=defaults.seed)
        p.add_argument("--report", default=None, help="write the JSON report here")
        p.add_argument("--probe", default=None, help=argparse.SUPPRESS)
        if name == "qat":
            p.add_argument(
                "--qat-model", default=defaults.qat_model_file, help="QAT model .h5 (default: <out>.qat.h5)"
            )
            p.add_argument("--io-type", choices=IO_TYPES, default=defaults.io_type)
            p.add_argument("--dynamic-batch", action="store_true", help="a free batch (default: 1)")
            p.add_argument("--prune", type=float, default=defaults.prune, help="prune to this sparsity first")
            p.add_argument("--prune-epochs", type=int, default=defaults.prune_epochs)
            p.add_argument(
                "--pruned-model",
                default=defaults.pruned_model_file,
                help="also save the pruned float model (.keras)",
            )
            p.add_argument("--check-images", type=int, default=defaults.check_images)
        else:
            p.add_argument("--sparsity", type=float, required=True)
    return cli


def _run_one(argv: list[str], keep_going: bool) -> int:
    """Run one qat/prune command line in this (worker) process; the report (or the error) goes to
    its ``--report`` file. Returns the exit code."""
    import traceback

    from kerascnn.export.legacy import LegacyConversionError

    from kerascnn.data import DataError

    opts = parser().parse_args(argv)
    opts.model = str(opts.model)
    if opts.command == "qat" and not opts.qat_model:
        opts.qat_model = str(default_qat_model(opts.out))
    try:
        report = cmd_qat(opts) if opts.command == "qat" else cmd_prune(opts)
        code = 0
    except (QuantizeError, LegacyConversionError, DataError) as err:
        report, code = {"error": f"{opts.model}: {err}"}, 2
    except Exception as err:
        if not keep_going:
            raise
        traceback.print_exc()
        report, code = {"error": f"{opts.model}: {type(err).__name__}: {err}"}, 1
    if "error" in report:
        print(f"error: {report['error']}", file=sys.stderr, flush=True)
    if opts.report:
        with atomic_path(Path(opts.report)) as tmp:
            tmp.write_text(json.dumps(report, indent=2))
    elif code == 0:
        print(json.dumps({k: v for k, v in report.items() if k != "probe_qat"}, indent=2))
    return code


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    # tfmot first: it sets TF_USE_LEGACY_KERAS before anything touches tf.keras.
    import_tfmot()
    if argv[:1] == ["batch"]:
        if len(argv) != 2:
            print("usage: python -m kerascnn.export.quantize batch JOBS.json", file=sys.stderr)
            return 2
        import tf_keras

        jobs = json.loads(Path(argv[1]).read_text())
        codes = []
        for i, job in enumerate(jobs, start=1):
            log_line(f"[batch] job {i}/{len(jobs)}: {job[0]} {job[1]}")
            codes.append(_run_one(job, keep_going=True))
            tf_keras.backend.clear_session()
        return 0 if not any(codes) else 3
    return _run_one(argv, keep_going=False)
