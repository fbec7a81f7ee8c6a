"""The commands on model files: ``kerascnn export`` (TFLite, ONNX, with metadata), ``inspect`` (the
metadata), ``validate`` (accuracy parity) and ``benchmark`` (latency and size)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from kerascnn.export import formats  # the format table (light: no TensorFlow)
from kerascnn.export.options import ExportOptions  # export's options and defaults (light)

from .options import (
    NON_NEGATIVE_FLOAT,
    OUT_DIR,
    OUT_FILE,
    PERCENT,
    POSITIVE_FLOAT,
    POSITIVE_INT,
    parse_floats,
)

EXPORT_DEFAULTS = ExportOptions()  # the defaults `kerascnn export` shows


@click.command("export")
@click.argument("run_or_model")
@click.option(
    "--out",
    default=None,
    type=OUT_DIR,
    help="Export folder (created) [default: RUN/export for a run folder or a model file in one]. Its "
    ".kerascnn-export.json records what kerascnn export wrote there: those files are replaced atomically; "
    "a file it did not write (your own labels.txt or model.json) is not replaced without --force; an "
    "earlier export's files of the same model are kept, another model's are removed (see --keep-stale); "
    "other files are left alone.",
)
@click.option(
    "--force",
    is_flag=True,
    help="Replace files in --out that kerascnn export did not write or that were modified since (without "
    "it the export stops before writing anything, naming them).",
)
@click.option(
    "--remove-stale/--keep-stale",
    default=True,
    show_default=True,
    help="Remove the files an earlier export of another model wrote into --out that this one does not "
    "replace (a retrained model's folder would keep the old .onnx), once this export is done; a file "
    "modified since is kept and named.",
)
@click.option("--tflite", is_flag=True, help="Write TFLite (float32 unless --quantize says otherwise).")
@click.option(
    "--quantize",
    multiple=True,
    type=click.Choice(list(formats.QUANTIZE)),
    help=f"TFLite variant(s), repeatable: {formats.quantize_help()}.",
)
@click.option(
    "--onnx", is_flag=True, help="Write ONNX (float; plus the int8 model when int8 TFLite is made)."
)
@click.option("--opset", type=click.IntRange(min=7), default=EXPORT_DEFAULTS.opset, show_default=True)
@click.option(
    "--calibration-data",
    default=EXPORT_DEFAULTS.calibration_data,
    help="Images for int8 calibration [default: the run's data].",
)
@click.option(
    "--calibration-steps",
    type=POSITIVE_INT,
    default=EXPORT_DEFAULTS.calibration_steps,
    show_default=True,
    help="Calibration images.",
)
@click.option(
    "--holdout",
    type=POSITIVE_INT,
    default=EXPORT_DEFAULTS.holdout,
    show_default=True,
    help="--quantize mixed: images held back from calibration to check the file on.",
)
@click.option(
    "--min-agreement",
    type=PERCENT,
    default=EXPORT_DEFAULTS.min_agreement,
    show_default=True,
    help="--quantize mixed: least top-1 agreement with Keras on the held-back images, in %.",
)
@click.option(
    "--max-drop",
    type=NON_NEGATIVE_FLOAT,
    default=EXPORT_DEFAULTS.max_drop,
    help="--quantize mixed, labeled data: allowed top-1 loss in points (replaces --min-agreement).",
)
@click.option(
    "--io-type",
    type=click.Choice(formats.IO_TYPES),
    default=EXPORT_DEFAULTS.io_type,
    show_default=True,
    help="Input/output tensor type of full-integer models.",
)
@click.option(
    "--per-tensor",
    is_flag=True,
    help="Integer files: one weight scale per tensor, not per output channel (for DSPs and NPUs "
    "without per-channel kernels).",
)
@click.option(
    "--dynamic-batch",
    is_flag=True,
    help="TFLite files with a free batch (servers, batched inference) instead of a fixed batch of 1, "
    "which the phone delegates need to take every op (a free batch computes Reshape shapes at run time). "
    "ONNX files always have a free batch.",
)
@click.option(
    "--float-layers",
    default=None,
    metavar="NAME[,NAME...]",
    help="--quantize int8: keep these Keras layers (names, or paths inside a nested model) in float.",
)
@click.option(
    "--rgb-input",
    is_flag=True,
    help="1-channel models: every exported file takes RGB images (luma inside the model), as phone "
    "cameras and MediaPipe Tasks give them.",
)
@click.option(
    "--fold-normalization",
    is_flag=True,
    help="Put the mean/std into the graph so every file takes raw pixels (mean 0, std 1 in the "
    "metadata); always done for a per-channel mean/std, which MediaPipe Tasks cannot read.",
)
@click.option("--qat", is_flag=True, help="Quantization-aware fine-tuning, then int8 TFLite.")
@click.option("--qat-epochs", type=POSITIVE_INT, default=EXPORT_DEFAULTS.qat_epochs, show_default=True)
@click.option("--qat-lr", type=POSITIVE_FLOAT, default=EXPORT_DEFAULTS.qat_lr, show_default=True)
@click.option(
    "--prune",
    type=click.FloatRange(0, 1, min_open=True, max_open=True),
    default=EXPORT_DEFAULTS.prune,
    help="Target sparsity in (0, 1) (polynomial schedule).",
)
@click.option("--prune-epochs", type=POSITIVE_INT, default=EXPORT_DEFAULTS.prune_epochs, show_default=True)
@click.option(
    "--train-fraction",
    type=click.FloatRange(0, 1, min_open=True),
    default=EXPORT_DEFAULTS.train_fraction,
    show_default=True,
    help="Fraction of each class of the training data that QAT / pruning fine-tune on.",
)
@click.option(
    "--mean",
    default=None,
    help="Normalization mean(s) in pixel units [default: the run's; none (0) for a model with "
    "Rescaling/Normalization at its input; else 127.5].",
)
@click.option(
    "--std", default=None, help="Normalization std(s) in pixel units [default: as --mean, 1 or 127.5]."
)
@click.option("--labels", default=None, help="labels.txt for a model file outside a run folder.")
@click.option(
    "--android",
    default=None,
    help="Android project (mobile_demo/android): copy the int8 (else float) .tflite into its assets.",
)
def export_cmd(
    run_or_model, out, tflite, quantize, onnx, labels, mean, std, android, force, remove_stale, **opts
):
    """Export a run folder or a .keras/.h5 model to TFLite and/or ONNX, with embedded metadata."""
    from kerascnn.export import metadata as md
    from kerascnn.export.pipeline import (
        ExportError,
        check_android_project,
        export_model,
        format_results,
        install_android_assets,
        resolve_source,
    )

    if quantize and not tflite:
        tflite = True
    variants = tuple(dict.fromkeys(quantize or (("none",) if tflite else ())))
    try:
        label_list = md.read_labels_txt(labels) if labels else None
        source = resolve_source(
            run_or_model, parse_floats(mean, "--mean"), parse_floats(std, "--std"), label_list
        )
        if out is None:
            if source.run_dir is None:
                raise click.BadParameter(
                    f"{source.model_file} is not in a run folder: say where the files go", param_hint="--out"
                )
            out = str(source.run_dir / "export")
        float_layers = tuple(n.strip() for n in (opts.pop("float_layers") or "").split(",") if n.strip())
        options = ExportOptions(tflite=variants, onnx=onnx, float_layers=float_layers, **opts)
        click.echo(f"exporting {source.model_file} ({source.metadata.model_name}) to {out}")
        if android:
            check_android_project(android)
            if not variants:
                raise ExportError("--android needs a .tflite export (add --tflite or --quantize)")
        results = export_model(source, out, options, log=click.echo, force=force, keep_stale=not remove_stale)
        click.echo(format_results(results))
        if android:
            install_android_assets(out, results, android, log=click.echo)
    except FileNotFoundError as e:  # (kerascnn's own errors are reported by the group)
        raise click.ClickException(str(e)) from None
    if source.run_dir is not None and Path(out).resolve() == (Path(source.run_dir) / "export").resolve():
        from .training import refresh_report

        refresh_report(source.run_dir)  # RUN/report.html shows the run's export table
    failed = [r.format for r in results if r.status != "ok"]
    if failed:
        raise click.ClickException(f"{len(failed)} format(s) failed: {', '.join(failed)} (see above)")


@click.command("inspect")
@click.argument("files", nargs=-1, required=True)
@click.option("--json", "as_json", is_flag=True, help="Print the metadata as JSON.")
@click.option(
    "--report",
    is_flag=True,
    help="Print the int8 sensitivity report (per layer) written beside the file by the export.",
)
def inspect_cmd(files, as_json, report):
    """Print the metadata embedded in exported files (.tflite, .onnx) or beside them (model.json)."""
    from kerascnn.export import metadata as md

    if report:
        from kerascnn.export import sensitivity

        for path in files:
            try:
                click.echo(sensitivity.format_report(sensitivity.read_report(path)))
            except (sensitivity.MixedPrecisionError, md.MetadataError, OSError) as e:
                raise click.ClickException(str(e)) from None
        return
    failed = False  # a bad file is reported and the others are still printed; exit 1 at the end
    for path in files:
        try:
            meta = md.read_metadata(path)
            standard, packed = None, {}
            if meta is not None and str(path).lower().endswith(".tflite"):
                standard = md.read_standard_metadata(path)
                packed = md.associated_files(Path(path).read_bytes(), str(path))
        except (md.MetadataError, OSError) as e:
            click.echo(f"Error: {e}", err=True)
            failed = True
            continue
        if meta is None:
            click.echo(f"{path}: no kerascnn metadata", err=True)
            failed = True
            continue
        found = None
        if str(path).lower().endswith(".tflite"):
            from kerascnn.export.delegates import accelerators

            found = accelerators(path, meta.quantization)
        if as_json:
            raw = json.loads(meta.to_json())
            if standard is not None:
                raw["tflite_metadata"] = md.standard_metadata_json(standard)
            if found is not None:
                raw["accelerators"] = {k: v for k, v in found.items() if k != "lines"}
            click.echo(json.dumps(raw, indent=1, ensure_ascii=False))
            continue
        click.echo(f"{path}\n{meta.describe()}")
        if standard is not None:
            click.echo(md.describe_standard(standard, packed))
        elif str(path).lower().endswith(".tflite"):
            click.echo("TFLite Metadata: none (MediaPipe Tasks and ML Kit cannot preprocess this file)")
        for line in (found or {}).get("lines", []):
            click.echo(line)
        click.echo()
    if failed:
        sys.exit(1)


@click.command("validate")
@click.argument("paths", nargs=-1, required=True)
@click.option(
    "--data", required=True, help="Labeled dataset (its test split) or a folder of unlabeled images."
)
@click.option(
    "--max-drop",
    type=NON_NEGATIVE_FLOAT,
    default=1.0,
    show_default=True,
    help="Allowed top-1 loss in points.",
)
@click.option(
    "--min-agreement",
    type=PERCENT,
    default=90.0,
    show_default=True,
    help="Unlabeled data: least argmax agreement with Keras, in %.",
)
@click.option(
    "--limit", type=POSITIVE_INT, default=None, help="Use this many images (a seeded random subset)."
)
@click.option(
    "--threads", type=POSITIVE_INT, default=None, help="Threads for TFLite/ONNX [default: runtime's]."
)
@click.option("--json", "json_path", default=None, type=OUT_FILE, help="Write the table as JSON here.")
@click.option(
    "--mediapipe/--no-mediapipe",
    default=True,
    show_default=True,
    help="Also run each .tflite alone through MediaPipe Tasks' ImageClassifier (as phone apps do).",
)
def validate_cmd(paths, data, max_drop, min_agreement, limit, threads, json_path, mediapipe):
    """Accuracy parity: the Keras model and every exported file on the same images, one table.

    In an export folder, a file that its .kerascnn-export.json gives to another model than the last
    export's, or that no export wrote, is a "stale" row: named, not run, and no failure (name the file
    itself to validate it)."""
    from kerascnn.export import validate as kvalidate
    from kerascnn.report import run_of_export_folder, validate_json_path

    rows, summary = kvalidate.validate(
        paths,
        data,
        max_drop,
        min_agreement,
        limit=limit,
        threads=threads,
        mediapipe=mediapipe,
        log=click.echo,
    )
    click.echo(kvalidate.format_rows(rows))
    if summary.get("mediapipe", "").startswith("no MediaPipe"):
        click.echo(summary["mediapipe"], err=True)
    if json_path:
        kvalidate.write_json(rows, summary, json_path)
    run = run_of_export_folder(paths[0]) if len(paths) == 1 else None
    if run is not None:  # a run's export folder: its table goes into RUN/report.html
        from .training import refresh_report

        kvalidate.write_json(rows, summary, validate_json_path(run))
        refresh_report(run)
    if not summary["passed"]:
        failed = [r.file for r in rows if r.status not in ("ok", kvalidate.STALE)]
        raise click.ClickException(f"validation failed for {', '.join(failed)}")


@click.command("benchmark")
@click.argument("paths", nargs=-1, required=True)
@click.option("--batch", "batch_size", type=POSITIVE_INT, default=32, show_default=True)
@click.option(
    "--threads", type=POSITIVE_INT, default=None, help="Threads for TFLite/ONNX [default: runtime's]."
)
@click.option(
    "--runs", type=POSITIVE_INT, default=30, show_default=True, help="Timed calls per measurement (median)."
)
@click.option(
    "--mediapipe/--no-mediapipe",
    default=True,
    show_default=True,
    help="Also time each .tflite through MediaPipe Tasks' ImageClassifier (preprocessing included).",
)
def benchmark_cmd(paths, batch_size, threads, runs, mediapipe):
    """Latency at batch 1 and batch N, and size, of model files (.keras, .tflite, .onnx)."""
    from kerascnn.export import validate as kvalidate

    rows, note = kvalidate.benchmark(paths, batch_size, threads, runs, mediapipe=mediapipe)
    click.echo(kvalidate.format_bench(rows, batch_size))
    if note:
        click.echo(note, err=True)
    if any(r.status not in ("ok", kvalidate.NOT_APPLICABLE) for r in rows):
        sys.exit(1)
