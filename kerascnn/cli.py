"""The ``kerascnn`` command line: click commands only. Each parses its options, calls one library
function, and prints; everything here is also reachable from Python under the same names."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before TensorFlow is first imported

import click  # noqa: E402

from kerascnn import augment as kaug  # noqa: E402 - light: the presets and ops, no Keras
from kerascnn import config as kconfig  # noqa: E402 - light: TrainConfig's defaults and choices
from kerascnn.errors import KerascnnError  # noqa: E402
from kerascnn.export import formats  # noqa: E402 - the format table (light: no TensorFlow)

# numeric option types: a value out of range is refused by click, naming the option
POSITIVE_INT = click.IntRange(min=1)
POSITIVE_FLOAT = click.FloatRange(min=0, min_open=True)
NON_NEGATIVE_FLOAT = click.FloatRange(min=0)
PERCENT = click.FloatRange(0, 100)


def _parse_shape(value: str | None, param_hint: str = "--input-shape"):
    """'224,224,3', '224x224x3' or '224,224' (channels from the model's default)."""
    if value is None:
        return None
    parts = value.lower().replace("x", ",").split(",")
    try:
        dims = tuple(int(p) for p in parts if p.strip())
    except ValueError:
        raise click.BadParameter(
            f"expected H,W,C integers such as 224,224,3; got '{value}'", param_hint=param_hint
        ) from None
    if len(dims) not in (2, 3) or min(dims) < 1:
        raise click.BadParameter(
            f"expected H,W,C (or H,W) positive integers; got '{value}'", param_hint=param_hint
        )
    return dims


def _load_or_build(model: str, input_shape, num_classes, include_top: bool, pooling):
    """A registered model name, or the path of a saved Keras model file."""
    from kerascnn import models

    if model.endswith((".keras", ".h5")):
        if not os.path.exists(model):
            raise click.BadParameter(f"no such model file: {model}", param_hint="MODEL")
        from kerascnn.runs import load_keras_model

        return load_keras_model(model)  # a damaged file: a ModelFileError naming it and why
    try:
        entry = models.get_entry(model)
    except models.UnknownModelError as e:
        raise click.BadParameter(str(e), param_hint="MODEL") from None
    if input_shape is not None and len(input_shape) == 2:
        input_shape = (*input_shape, entry.input_shape[2])
    kwargs = dict(include_top=include_top, pooling=pooling)
    if num_classes is not None:
        kwargs["num_classes"] = num_classes
    try:
        return entry.fn(input_shape=input_shape, **kwargs)
    except models.InputShapeError as e:
        raise click.BadParameter(str(e), param_hint="--input-shape") from None


class _Commands(click.Group):
    """The kerascnn group: a :class:`KerascnnError` from any command is printed as ``Error: message``
    (exit 1) without a traceback; the message names the file, option or layer. Anything else is a bug
    and keeps its traceback."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except KerascnnError as e:
            raise click.ClickException(str(e)) from None


@click.group(cls=_Commands, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="kerascnn")
@click.option(
    "--verbose",
    is_flag=True,
    help="Show the libraries' own logs and warnings (TensorFlow, the TFLite converter, LiteRT, "
    "MediaPipe); also KERASCNN_VERBOSE=1.",
)
def main(verbose: bool):
    """kerascnn: classic CNNs in Keras 3, from idea to phone."""
    from kerascnn import quiet

    if verbose:
        quiet.set_verbose(True)
    quiet.quiet_python_libraries()
    if not {"-h", "--help"} & set(sys.argv):
        quiet.import_tensorflow()


@main.command("models")
@click.argument("pattern", default="*")
@click.option("--family", default=None, help="Only this family (lenet, vgg, resnet, ...).")
@click.option(
    "--stats/--no-stats",
    default=True,
    show_default=True,
    help="Build each model to count parameters and MACs at its default input.",
)
def models_cmd(pattern: str, family: str | None, stats: bool):
    """List the registered models (shell PATTERN such as 'resnet*'), with params and MACs."""
    from kerascnn import analysis, models

    names = models.list_models(pattern, family=family)
    if not names:
        raise click.ClickException(
            f"no model matches '{pattern}'"
            + (f" in family '{family}'" if family else "")
            + f"; families: {', '.join(models.list_families())}"
        )
    header = f"{'model':<20} {'family':<13} {'input':<13} {'classes':>7}"
    if stats:
        header += f" {'params':>12} {'MACs':>9}"
    click.echo(header + "  reference")
    click.echo("-" * (len(header) + 30))
    for name in names:
        entry = models.get_entry(name)
        shape = "x".join("?" if d is None else str(d) for d in entry.input_shape)
        line = f"{name:<20} {entry.family:<13} {shape:<13} {entry.num_classes:>7}"
        if stats:
            shape_for_macs = tuple(224 if d is None else d for d in entry.input_shape)
            model = entry.fn(input_shape=shape_for_macs)
            result = analysis.analyze(model)
            line += f" {result.total_params:>12,d} {analysis.human(result.total_macs):>9}"
            del model
        click.echo(f"{line}  {entry.reference}")


@main.command("summary")
@click.argument("model")
@click.option("--input-shape", default=None, help="H,W,C (or H,W), e.g. 32,32,3. Default: the model's own.")
@click.option("--num-classes", type=POSITIVE_INT, default=None, help="Number of classes of the head.")
@click.option(
    "--include-top/--no-top", default=True, show_default=True, help="With or without the classifier."
)
@click.option("--pooling", type=click.Choice(["avg", "max"]), default=None, help="Global pooling head.")
def summary_cmd(model: str, input_shape: str | None, num_classes, include_top: bool, pooling):
    """Per-layer output shape, params, MACs, receptive field and jump of MODEL (a registered name or a
    .keras file), with totals."""
    from kerascnn import analysis

    shape = _parse_shape(input_shape)
    keras_model = _load_or_build(model, shape, num_classes, include_top, pooling)
    if shape is not None and model.endswith((".keras", ".h5")) and len(shape) == 2:
        shape = (*shape, keras_model.input_shape[-1])
    try:
        result = analysis.analyze(
            keras_model, input_shape=shape if model.endswith((".keras", ".h5")) else None
        )
    except ValueError as e:
        raise click.ClickException(f"{model}: {e}") from None
    click.echo(analysis.format_summary(result))


def _parse_exclude(values) -> dict:
    """--no-aug-for flip=5,7 -> {"flip": [5, 7]}."""
    result: dict[str, list[int]] = {}
    for value in values:
        op, _, classes = value.partition("=")
        try:
            result.setdefault(op.strip(), []).extend(int(c) for c in classes.split(",") if c.strip())
        except ValueError:
            raise click.BadParameter(
                f"expected OP=CLASS[,CLASS...] such as flip=5,7; got '{value}'", param_hint="--no-aug-for"
            ) from None
    return result


def _parse_kwargs(values) -> dict:
    """--model-kwargs alpha=0.5 --model-kwargs shortcut=B -> {"alpha": 0.5, "shortcut": "B"}."""
    result = {}
    for value in values:
        key, sep, raw = value.partition("=")
        if not sep or not key.strip():
            raise click.BadParameter(
                f"expected KEY=VALUE such as alpha=0.5; got '{value}'", param_hint="--model-kwargs"
            )
        try:
            result[key.strip()] = json.loads(raw)
        except json.JSONDecodeError:
            result[key.strip()] = raw  # a plain string such as shortcut=B
    return result


_TRAIN = kconfig.TrainConfig()  # the defaults `kerascnn train` shows
# train options that set another TrainConfig field than their own name
_TRAIN_FIELD = {
    "model_kwargs": "model_options",
    "no_aug_for": "augment_overrides",
    **{op: "augment_overrides" for op in kaug.AugmentConfig.OPS},
}


def _given_train_fields(ctx: click.Context) -> dict[str, str]:
    """The TrainConfig fields the command line set explicitly, with the option that set them."""
    from click.core import ParameterSource

    given = {}
    for param in ctx.command.params:
        if param.name != "resume" and ctx.get_parameter_source(param.name) == ParameterSource.COMMANDLINE:
            given.setdefault(_TRAIN_FIELD.get(param.name, param.name), param.opts[0])
    return given


def retrieval_backends() -> tuple[str, ...]:
    from kerascnn.retrieval import BACKENDS

    return BACKENDS


@main.command("train")
@click.option(
    "--model",
    default=_TRAIN.model,
    help="A registered model (kerascnn models) [default: from the images: lenet5 at 32x32 for grayscale up "
    "to 32 px, resnet20 at 32x32 for colour up to 32 px, images with at most 48 px of detail or sets of at "
    "most 10,000 images, else mobilenet_v1 alpha=0.5 at the side their detail needs, up to 128; see README "
    "'The default recipe'].",
)
@click.option("--model-kwargs", multiple=True, help="KEY=VALUE family option, e.g. alpha=0.5 (repeatable).")
@click.option(
    "--data",
    default=_TRAIN.data,
    show_default=True,
    help="fashion_mnist, mnist, a folder of class sub-folders (or train/ val/ test/), a .csv/.tsv "
    "of path,label[,split] rows, or tfds:NAME.",
)
@click.option("--output", default=None, help="Run folder [default: runs/MODEL].")
@click.option(
    "--epochs", type=POSITIVE_INT, default=_TRAIN.epochs, help="[default: ~4,000 steps' worth, 10 to 40]"
)
@click.option(
    "--batch-size",
    type=POSITIVE_INT,
    default=_TRAIN.batch_size,
    help="[default: ~train images/128, 32 to 128]",
)
@click.option(
    "--optimizer", type=click.Choice(kconfig.OPTIMIZERS), default=_TRAIN.optimizer, show_default=True
)
@click.option(
    "--lr",
    type=POSITIVE_FLOAT,
    default=None,
    help=f"Peak learning rate [{', '.join(f'{k} {v:g}' for k, v in kconfig.DEFAULT_LR.items())}; sgd scaled "
    "with the batch from 128].",
)
@click.option("--schedule", type=click.Choice(kconfig.SCHEDULES), default=_TRAIN.schedule, show_default=True)
@click.option(
    "--warmup-epochs",
    type=NON_NEGATIVE_FLOAT,
    default=_TRAIN.warmup_epochs,
    help="[default: the first ~300 steps, at most a fifth of the run]",
)
@click.option(
    "--patience",
    type=click.IntRange(min=0),
    default=_TRAIN.patience,
    help="Stop after N epochs without a lower val_loss; 0: off [default: max(3, epochs/5) when the "
    "epochs are derived, off with --epochs].",
)
@click.option("--weight-decay", type=NON_NEGATIVE_FLOAT, default=_TRAIN.weight_decay, show_default=True)
@click.option(
    "--clip-norm",
    type=POSITIVE_FLOAT,
    default=None,
    help="Clip the gradients' global norm to this (a run that diverges: try 1.0).",
)
@click.option(
    "--label-smoothing",
    type=click.FloatRange(0, 1, max_open=True),
    default=_TRAIN.label_smoothing,
    show_default=True,
)
@click.option(
    "--bn-momentum",
    type=float,
    default=_TRAIN.bn_momentum,
    show_default=True,
    help="BatchNorm moving-average momentum for the run (the architectures' own: pass -1).",
)
@click.option(
    "--augment",
    type=click.Choice(list(kaug.PRESETS)),
    default=_TRAIN.augment,
    show_default=True,
    help="Augmentation preset; the options below override single ops.",
)
@click.option("--shift", type=NON_NEGATIVE_FLOAT, default=None)
@click.option("--rotation", type=NON_NEGATIVE_FLOAT, default=None, help="Degrees.")
@click.option("--shear", type=NON_NEGATIVE_FLOAT, default=None)
@click.option("--zoom", type=NON_NEGATIVE_FLOAT, default=None)
@click.option("--flip", type=click.Choice(kaug.FLIP_MODES), default=None)
@click.option("--perspective", type=NON_NEGATIVE_FLOAT, default=None)
@click.option(
    "--noise",
    type=NON_NEGATIVE_FLOAT,
    default=None,
    help="Gaussian noise std as a fraction of the value range.",
)
@click.option("--brightness", type=NON_NEGATIVE_FLOAT, default=None)
@click.option("--contrast", type=NON_NEGATIVE_FLOAT, default=None)
@click.option(
    "--no-aug-for", "no_aug_for", multiple=True, help="OP=CLASSES: skip an op for these class indices."
)
@click.option(
    "--mixup", type=NON_NEGATIVE_FLOAT, default=_TRAIN.mixup, show_default=True, help="Mixup alpha (0 = off)."
)
@click.option("--balance", type=click.Choice(kconfig.BALANCE_MODES), default=_TRAIN.balance)
@click.option(
    "--val-split", type=click.FloatRange(0, 1, max_open=True), default=_TRAIN.val_split, show_default=True
)
@click.option(
    "--train-fraction",
    type=click.FloatRange(0, 1, min_open=True),
    default=_TRAIN.train_fraction,
    show_default=True,
    help="Train on this fraction of each class (few-data experiments).",
)
@click.option(
    "--eval-fraction",
    type=click.FloatRange(0, 1, min_open=True),
    default=_TRAIN.eval_fraction,
    show_default=True,
    help="Validate and test on this fraction of each class (quick experiments on large splits).",
)
@click.option(
    "--cache",
    type=click.Choice(kconfig.CACHE_MODES),
    default=_TRAIN.cache,
    show_default=True,
    help="Decoded images of a folder or file list: in RAM, once into a disk cache (reused by later "
    "runs, evaluate, validate), or none (decoded from the files each epoch); auto: RAM when they fit "
    "in a quarter of the available memory, else none.",
)
@click.option(
    "--input-shape",
    default=None,
    help="H,W,C [default: with --model, the model's; without, from the images (never upscaled)].",
)
@click.option("--seed", type=int, default=_TRAIN.seed, show_default=True)
@click.option(
    "--precision",
    type=click.Choice(kconfig.PRECISIONS),
    default=_TRAIN.precision,
    show_default=True,
)
@click.option(
    "--strategy",
    type=click.Choice(kconfig.STRATEGIES),
    default=_TRAIN.strategy,
    show_default=True,
    help="auto: MirroredStrategy when TensorFlow sees several GPUs.",
)
@click.option("--weights", default=None, help="Start from a .keras file or run folder, or 'imagenet'.")
@click.option("--freeze-backbone", is_flag=True, help="Train only the new head first.")
@click.option(
    "--fine-tune-epochs", type=click.IntRange(min=0), default=_TRAIN.fine_tune_epochs, show_default=True
)
@click.option("--fine-tune-lr", type=POSITIVE_FLOAT, default=None)
@click.option("--freeze-until", default=None, help="Layer name: keep it and the layers before it frozen.")
@click.option("--resume", is_flag=True, help="Continue the run in --output from its last finished epoch.")
@click.option("--quiet", is_flag=True, help="One log line per epoch instead of progress bars.")
@click.pass_context
def train_cmd(ctx, **opts):
    """Train MODEL on DATA into a run folder (models, config, history, plots, metrics)."""
    from kerascnn import models
    from kerascnn.train import TrainConfig, train

    given = _given_train_fields(ctx)
    overrides = {op: opts.pop(op) for op in kaug.AugmentConfig.OPS}
    exclude = _parse_exclude(opts.pop("no_aug_for"))
    if exclude:
        overrides["exclude"] = exclude
    resume = opts.pop("resume")
    shape = _parse_shape(opts.pop("input_shape"))
    if shape is not None and len(shape) == 2:
        raise click.BadParameter("give H,W,C", param_hint="--input-shape")
    model_options = _parse_kwargs(opts.pop("model_kwargs"))
    if opts["bn_momentum"] < 0:
        opts["bn_momentum"] = None
    cfg = TrainConfig(
        **opts,
        input_shape=shape,
        model_options=model_options,
        augment_overrides={k: v for k, v in overrides.items() if v is not None},
    )
    try:
        train(cfg, resume=resume, given=given)
    except models.UnknownModelError as e:
        raise click.BadParameter(str(e), param_hint="--model") from None


@main.command("evaluate")
@click.argument("run_or_model")
@click.option("--data", default=None, help="Dataset [default: the run's].")
@click.option(
    "--tta",
    type=POSITIVE_INT,
    default=1,
    show_default=True,
    help="Average the posteriors of N augmented copies.",
)
@click.option("--batch-size", type=POSITIVE_INT, default=256, show_default=True)
@click.option("--json", "json_path", default=None, help="Write the metrics here.")
@click.option("--confusion", default=None, help="Write the confusion matrix PNG here.")
def evaluate_cmd(run_or_model, data, tta, batch_size, json_path, confusion):
    """Top-1, top-5 and per-class accuracy of a run folder or model file on DATA's test split."""
    from kerascnn import data as kdata
    from kerascnn import evaluate as kevaluate
    from kerascnn.runs import ModelFileError, Run, RunFileError, image_input_shape

    try:
        run = Run.open(run_or_model)
        model = run.load_model()
        h, w, c = image_input_shape(model, run.model_file)
    except (RunFileError, ModelFileError) as e:
        raise click.BadParameter(str(e), param_hint="RUN_OR_MODEL") from None
    model_file = run.model_file
    mean, std = run.normalization()
    val_split = run.val_split
    data = data or run.data
    if data is None:
        raise click.BadParameter("give --data for a model file", param_hint="--data")
    dataset = kdata.load_dataset(data, (h, w), c, val_split=val_split, cache="stream")
    classes = model.output_shape[-1]
    if classes != dataset.num_classes:
        raise click.ClickException(
            f"{model_file} predicts {classes} classes but --data {data} has {dataset.num_classes} "
            f"({', '.join(dataset.class_names)})"
        )
    split = dataset.eval_split
    metrics = kevaluate.evaluate(
        model,
        split,
        kdata.Normalization(tuple(mean), tuple(std)),
        dataset.class_names,
        batch_size=batch_size,
        tta=tta,
    )
    topk = next(k for k in metrics if k.startswith("top") and k != "top1")
    click.echo(f"{model_file}: {metrics['samples']} images, tta {tta}")
    click.echo(f"top-1 {metrics['top1']:.4f}   {topk} {metrics[topk]:.4f}")
    for name, acc in metrics["per_class_accuracy"].items():
        click.echo(f"  {name:<24} {'-' if acc is None else f'{acc:.4f}'}")
    if json_path:
        kevaluate.write_json(metrics, json_path)
    if confusion:
        kevaluate.plot_confusion(metrics["confusion_matrix"], dataset.class_names, confusion)


def _floats(value: str | None, param_hint: str):
    if value is None:
        return None
    try:
        return [float(v) for v in value.split(",") if v.strip()]
    except ValueError:
        raise click.BadParameter(
            f"expected comma-separated numbers, got '{value}'", param_hint=param_hint
        ) from None


@main.command("export")
@click.argument("run_or_model")
@click.option("--out", required=True, help="Export folder (created; files in it are replaced atomically).")
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
@click.option("--opset", type=click.IntRange(min=7), default=17, show_default=True)
@click.option(
    "--calibration-data", default=None, help="Images for int8 calibration [default: the run's data]."
)
@click.option(
    "--calibration-steps", type=POSITIVE_INT, default=200, show_default=True, help="Calibration images."
)
@click.option(
    "--holdout",
    type=POSITIVE_INT,
    default=500,
    show_default=True,
    help="--quantize mixed: images held back from calibration to check the file on.",
)
@click.option(
    "--min-agreement",
    type=PERCENT,
    default=99.0,
    show_default=True,
    help="--quantize mixed: least top-1 agreement with Keras on the held-back images, in %.",
)
@click.option(
    "--max-drop",
    type=NON_NEGATIVE_FLOAT,
    default=None,
    help="--quantize mixed, labeled data: allowed top-1 loss in points (replaces --min-agreement).",
)
@click.option(
    "--io-type",
    type=click.Choice(formats.IO_TYPES),
    default="float32",
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
@click.option("--qat-epochs", type=POSITIVE_INT, default=1, show_default=True)
@click.option("--qat-lr", type=POSITIVE_FLOAT, default=1e-4, show_default=True)
@click.option(
    "--prune",
    type=click.FloatRange(0, 1, min_open=True, max_open=True),
    default=None,
    help="Target sparsity in (0, 1) (polynomial schedule).",
)
@click.option("--prune-epochs", type=POSITIVE_INT, default=2, show_default=True)
@click.option(
    "--train-fraction",
    type=click.FloatRange(0, 1, min_open=True),
    default=_TRAIN.train_fraction,
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
def export_cmd(run_or_model, out, tflite, quantize, onnx, labels, mean, std, android, **opts):
    """Export a run folder or a .keras/.h5 model to TFLite and/or ONNX, with embedded metadata."""
    from kerascnn.export import metadata as md
    from kerascnn.export.pipeline import (
        ExportError,
        ExportOptions,
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
        source = resolve_source(run_or_model, _floats(mean, "--mean"), _floats(std, "--std"), label_list)
        float_layers = tuple(n.strip() for n in (opts.pop("float_layers") or "").split(",") if n.strip())
        options = ExportOptions(tflite=variants, onnx=onnx, float_layers=float_layers, **opts)
        click.echo(f"exporting {source.model_file} ({source.metadata.model_name}) to {out}")
        if android:
            check_android_project(android)
            if not variants:
                raise ExportError("--android needs a .tflite export (add --tflite or --quantize)")
        results = export_model(source, out, options, log=click.echo)
        click.echo(format_results(results))
        if android:
            install_android_assets(out, results, android, log=click.echo)
    except FileNotFoundError as e:  # (kerascnn's own errors are reported by the group)
        raise click.ClickException(str(e)) from None
    failed = [r.format for r in results if r.status != "ok"]
    if failed:
        raise click.ClickException(f"{len(failed)} format(s) failed: {', '.join(failed)} (see above)")


@main.command("inspect")
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


@main.command("validate")
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
@click.option("--json", "json_path", default=None, help="Write the table as JSON here.")
@click.option(
    "--mediapipe/--no-mediapipe",
    default=True,
    show_default=True,
    help="Also run each .tflite alone through MediaPipe Tasks' ImageClassifier (as phone apps do).",
)
def validate_cmd(paths, data, max_drop, min_agreement, limit, threads, json_path, mediapipe):
    """Accuracy parity: the Keras model and every exported file on the same images, one table."""
    from kerascnn.export import validate as kvalidate

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
    if not summary["passed"]:
        failed = [r.file for r in rows if r.status != "ok"]
        raise click.ClickException(f"validation failed for {', '.join(failed)}")


@main.command("benchmark")
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


@main.command("index")
@click.argument("run_or_model")
@click.option("--data", required=True, help="Built-in dataset, folder of class folders, or folder of images.")
@click.option("--out", required=True, help="Index file (.npz). An existing index is appended to.")
@click.option("--layer", default=None, help="Embedding layer [default: the global-pooling output].")
@click.option("--split", default=None, help="train or test (built-in data, train/test folders) [train].")
@click.option("--mean", default=None, help="Normalization mean(s), pixel units [the run's, 127.5].")
@click.option("--std", default=None, help="Normalization std(s), pixel units [the run's, 127.5].")
@click.option("--batch-size", type=POSITIVE_INT, default=256, show_default=True)
@click.option("--overwrite", is_flag=True, help="Start a new index instead of appending to --out.")
@click.option("--eval", "evaluate", is_flag=True, help="precision@k and mAP: test queries, train gallery.")
@click.option("--eval-k", default="1,5,10", show_default=True, help="The k of precision@k.")
@click.option(
    "--eval-queries", type=POSITIVE_INT, default=None, help="Evaluate on a random subset of the test split."
)
@click.option("--json", "json_path", default=None, help="Write the evaluation here.")
def index_cmd(run_or_model, data, out, layer, split, mean, std, batch_size, overwrite, evaluate, **opts):
    """Embed DATA with a model's feature extractor into a searchable index (L2-normalized vectors)."""
    from kerascnn import retrieval

    try:
        ks = [int(k) for k in opts["eval_k"].split(",") if k.strip()]
        if not ks or min(ks) < 1:
            raise ValueError
    except ValueError:
        message = f"'{opts['eval_k']}' is not a list of positive integers"
        raise click.BadParameter(message, param_hint="--eval-k") from None
    norm = _floats(mean, "--mean"), _floats(std, "--std")
    extractor = retrieval.load_extractor(run_or_model, layer, *norm)
    click.echo(f"embedding {data} with {extractor.model_file} (layer {extractor.layer})", err=True)
    with click.progressbar(length=1, label="embedding", file=sys.stderr) as bar:

        def progress(done, total):
            bar.length = max(total, 1)
            bar.update(done - bar.pos)

        index, report = retrieval.build_index(
            extractor, data, out, split, batch_size, overwrite=overwrite, progress=progress
        )
    for item, reason in report["skipped"]:
        click.echo(f"skipped {item}: {reason}", err=True)
    click.echo(
        f"{out}: {report['total']} images ({report['added']} added, {report['already_indexed']} already "
        f"indexed, {len(report['skipped'])} unreadable), {index.vectors.shape[1]}-d"
    )
    if evaluate:
        queries = opts["eval_queries"]
        result = retrieval.evaluate(extractor, data, index, ks, queries, batch_size=batch_size)
        click.echo(retrieval.format_evaluation(result))
        if opts["json_path"]:
            from kerascnn.runs import atomic_write_json

            atomic_write_json(opts["json_path"], result)


@main.command("search")
@click.argument("index")
@click.argument("images", nargs=-1, required=True)
@click.option("-k", type=POSITIVE_INT, default=5, show_default=True, help="Neighbours per query.")
@click.option("--model", default=None, help="Run folder or model file [default: the index's own].")
@click.option("--backend", type=click.Choice(retrieval_backends()), default="auto", show_default=True)
@click.option("--out", default="search_results", show_default=True, help="Folder for one PNG grid per query.")
@click.option("--no-grid", is_flag=True, help="Do not write the PNG grids.")
@click.option("--json", "json_path", default=None, help="Write the results here.")
def search_cmd(index, images, k, model, backend, out, no_grid, json_path):
    """The K nearest indexed images of each IMAGE (a file, or NAME:SPLIT:I of a built-in dataset)."""
    from kerascnn import retrieval

    loaded = retrieval.Index.load(index)
    extractor = None
    if model is not None:
        ident = loaded.identity
        extractor = retrieval.load_extractor(model, ident["layer"], ident["mean"], ident["std"])
    results = retrieval.search(loaded, images, k, extractor, backend, None if no_grid else out)
    for result in results:
        if result.error:
            click.echo(f"error: {result.error}", err=True)
            continue
        click.echo(f"{result.query}" + (f"  (grid: {result.grid})" if result.grid else ""))
        for hit in result.hits:
            click.echo(f"  {hit.rank:>3}  {hit.distance:.4f}  {hit.label or '-':<14} {hit.item}")
    if json_path:
        from kerascnn.runs import atomic_write_json

        atomic_write_json(json_path, retrieval.results_json(results))
    if any(r.error for r in results):
        sys.exit(1)


@main.command("lab")
@click.argument("name")
@click.option("--out", default="lab", show_default=True, help="Folder for NAME.json and NAME.png.")
@click.option("--quick", is_flag=True, help="A small budget (seconds to minutes on 2 CPU cores).")
@click.option("--data", default=None, help="The dataset, for the experiments that train.")
def lab_cmd(name, out, quick, data):
    """Reproduce a claim an architecture was built on: NAME is one of receptive-field (three 3x3 convs
    vs one 7x7, and a zoo model's stages, theory against gradients), separable (standard vs
    depthwise-separable conv: parameters, MACs, latency), gap-shift (a Flatten vs a global average
    pooling head, trained centred, tested shifted), degradation (plain20/56 and resnet20/56 trained
    alike: training-error curves), augmentation (none / standard / mixup on 1%, 5%, 20% of the data)
    or transfer (scratch / fine-tuned / frozen backbone on 1% of a second task); the last four train
    on --data (default fashion_mnist). Writes OUT/NAME.json and OUT/NAME.png and prints a verdict."""
    from kerascnn import lab

    result = lab.run_experiment(name, out, quick=quick, data=data, say=click.echo)
    click.echo(f"{Path(out) / name}.json, {Path(out) / name}.png ({result['budget']['seconds']} s)")


@main.command("explain")
@click.argument("model")
@click.argument("images", nargs=-1, required=True)
@click.option("--out", default="explain", show_default=True, help="Folder for the heatmaps.")
@click.option(
    "--layer", default=None, help="The spatial layer to explain [default: the last one of 2x2 or more]."
)
@click.option(
    "--class", "class_spec", default=None, help="Class name or index [default: the predicted class]."
)
@click.option("--features", is_flag=True, help="Also write the most active feature maps of each stage.")
def explain_cmd(model, images, out, layer, class_spec, features):
    """Grad-CAM: where MODEL (a run folder or a model file) looks in each IMAGE. Writes
    OUT/<stem>_gradcam.png (the image, the heatmap over it, the top-3 classes) and OUT/<stem>_gradcam.npy
    (the heatmap, H x W at the model's input size, in [0, 1])."""
    from kerascnn import explain

    for item in explain.explain_files(model, list(images), out, layer, class_spec, features):
        top = ", ".join(f"{name} {score:.3f}" for name, score in item.top)
        click.echo(f"{item.image}: {top}; Grad-CAM of '{item.explained_class}' -> {item.heatmap_png}")
        if item.features_png:
            click.echo(f"  feature maps -> {item.features_png}")


def run():  # pragma: no cover - console entry for `python -m kerascnn.cli`
    sys.exit(main())


if __name__ == "__main__":  # pragma: no cover
    run()


@main.group("weights")
def weights_group():
    """ImageNet weights for the zoo's keras.applications twins, in Keras' cache (KERAS_HOME/models):
    fetch them on a machine with internet, add them on one without, list what is cached."""


@weights_group.command("fetch")
@click.argument("model")
@click.option("--alpha", type=float, default=1.0, show_default=True, help="Width (MobileNets).")
@click.option("--input-size", type=int, default=224, show_default=True, help="Input side (MobileNets).")
@click.option("--include-top", is_flag=True, help="Also the file with the 1000-class ImageNet classifier.")
@click.option("--out", default="imagenet-weights", show_default=True, help="The folder to write.")
@click.option("--from", "base_url", default=None, help="A mirror holding the files under their names.")
def weights_fetch_cmd(model, alpha, input_size, include_top, out, base_url):
    """Download MODEL's ImageNet weights file(s) into OUT, with a manifest `weights add` checks."""
    from kerascnn.models import pretrained

    try:
        files = [pretrained.weights_file(model, alpha, input_size, top) for top in (False, True)]
    except ValueError as e:
        raise click.BadParameter(str(e), param_hint="MODEL / --alpha") from None
    pretrained.fetch(files if include_top else files[:1], out, base_url)
    for f in files if include_top else files[:1]:
        click.echo(f"{Path(out) / f.name}  ({f.describe()})")
    click.echo(f"on the machine without internet: kerascnn weights add {out}")


@weights_group.command("add")
@click.argument("source")
def weights_add_cmd(source):
    """Put the weights of SOURCE (a folder `weights fetch` wrote, or .h5 files under their published
    names) into Keras' cache, where `kerascnn train --weights imagenet` and the recipe find them."""
    from kerascnn.models import pretrained

    for f in pretrained.add(source):
        click.echo(f"{f.path()}  ({f.describe()})")


@weights_group.command("list")
@click.option("--all", "show_all", is_flag=True, help="Every published file, cached or not.")
def weights_list_cmd(show_all):
    """The ImageNet weights files in Keras' cache (KERAS_HOME/models), with the model each is for."""
    from kerascnn.models import pretrained

    files = pretrained.published() if show_all else pretrained.cached()
    click.echo(f"cache: {pretrained.cache_dir()}")
    for f in files:
        size = f"{f.path().stat().st_size / 1e6:8.1f} MB" if f.cached() else "  not cached"
        click.echo(f"{f.name:<68} {size}  {f.describe()}")
    if not files:
        click.echo("no ImageNet weights cached: kerascnn weights fetch MODEL (with internet), then add")
