"""``kerascnn train`` (TrainConfig's options, its defaults shown) and ``kerascnn evaluate``."""

from __future__ import annotations

import click

from kerascnn import augment as kaug  # light: the presets and ops, no Keras
from kerascnn import best_by as kbest_by  # light: the rule behind --best-by auto, which the help states
from kerascnn import config as kconfig  # light: TrainConfig's defaults and choices
from kerascnn import recipe as krecipe  # light: the recipe's rules, which the help text states

from .options import (
    NON_NEGATIVE_FLOAT,
    OUT_DIR,
    OUT_FILE,
    POSITIVE_FLOAT,
    POSITIVE_INT,
    TRAIN_DEFAULTS,
    parse_exclude,
    parse_kwargs,
    parse_shape,
)

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
        explicit = ctx.get_parameter_source(param.name) == ParameterSource.COMMANDLINE
        if param.name not in ("resume", "overwrite", "check_first") and explicit:
            given.setdefault(_TRAIN_FIELD.get(param.name, param.name), param.opts[0])
    return given


@click.command("train")
@click.option(
    "--model",
    default=TRAIN_DEFAULTS.model,
    help="A registered model (kerascnn models) [default: from the images: "
    f"{krecipe.SMALL_MODEL} at 32x32 for grayscale up to {krecipe.SMALL_SIDE} px; colour photos with more "
    f"than {krecipe.LOW_DETAIL_SIDE} px of detail: the first of "
    f"{', '.join(krecipe.TRANSFER_MODELS[:2])}, ... whose ImageNet weights are cached (phone-sized "
    f"first), at the smallest of {'/'.join(map(str, sorted(krecipe.TRANSFER_SIZES)))} px that holds "
    "the images, fitted by a linear probe then fine-tuned; "
    f"else {krecipe.SMALL_COLOUR_MODEL} at 32x32 for colour up to {krecipe.SMALL_SIDE} px, images with at "
    f"most {krecipe.LOW_DETAIL_SIDE} px of detail or sets of at most {krecipe.SMALL_SET:,d} images, else "
    f"{krecipe.MEDIUM_MODEL} alpha={krecipe.MEDIUM_OPTIONS['alpha']} at the side their detail needs, up to "
    f"{krecipe.MEDIUM_MAX_SIDE}; see README 'The default recipe'].",
)
@click.option("--model-kwargs", multiple=True, help="KEY=VALUE family option, e.g. alpha=0.5 (repeatable).")
@click.option(
    "--data",
    default=TRAIN_DEFAULTS.data,
    show_default=True,
    help="fashion_mnist, mnist, a folder of class sub-folders (or train/ val/ test/), a .csv/.tsv "
    "of path,label[,split] rows, or tfds:NAME.",
)
@click.option("--output", default=None, type=OUT_DIR, help="Run folder [default: runs/MODEL].")
@click.option(
    "--epochs",
    type=POSITIVE_INT,
    default=TRAIN_DEFAULTS.epochs,
    help="[default: ~4,000 steps' worth, 10 to 40]",
)
@click.option(
    "--batch-size",
    type=POSITIVE_INT,
    default=TRAIN_DEFAULTS.batch_size,
    help="[default: ~train images/128, 32 to 128]",
)
@click.option(
    "--optimizer", type=click.Choice(kconfig.OPTIMIZERS), default=TRAIN_DEFAULTS.optimizer, show_default=True
)
@click.option(
    "--lr",
    type=POSITIVE_FLOAT,
    default=None,
    help=f"Peak learning rate [{', '.join(f'{k} {v:g}' for k, v in kconfig.DEFAULT_LR.items())}; sgd scaled "
    "with the batch from 128].",
)
@click.option(
    "--schedule", type=click.Choice(kconfig.SCHEDULES), default=TRAIN_DEFAULTS.schedule, show_default=True
)
@click.option(
    "--warmup-epochs",
    type=NON_NEGATIVE_FLOAT,
    default=TRAIN_DEFAULTS.warmup_epochs,
    help="[default: the first ~300 steps, at most a fifth of the run]",
)
@click.option(
    "--patience",
    type=click.IntRange(min=0),
    default=TRAIN_DEFAULTS.patience,
    help="Stop after N epochs without a lower val_loss; 0: off [default: max(3, epochs/5) when the "
    "epochs are derived, off with --epochs].",
)
@click.option(
    "--best-by",
    type=click.Choice(kconfig.BEST_BY),
    default=TRAIN_DEFAULTS.best_by,
    show_default=True,
    help="What picks model_best.keras (a tie goes to the later epoch); auto: val_accuracy on at least "
    f"{kbest_by.ACCURACY_MIN_VAL} validation images, else val_loss (on a few dozen, one image moves "
    "val_accuracy by points).",
)
@click.option(
    "--weight-decay", type=NON_NEGATIVE_FLOAT, default=TRAIN_DEFAULTS.weight_decay, show_default=True
)
@click.option(
    "--clip-norm",
    type=POSITIVE_FLOAT,
    default=None,
    help="Clip the gradients' global norm to this (a run that diverges: try 1.0).",
)
@click.option(
    "--label-smoothing",
    type=click.FloatRange(0, 1, max_open=True),
    default=TRAIN_DEFAULTS.label_smoothing,
    show_default=True,
)
@click.option(
    "--bn-momentum",
    type=float,
    default=TRAIN_DEFAULTS.bn_momentum,
    show_default=True,
    help="BatchNorm moving-average momentum for the run (the architectures' own: pass -1).",
)
@click.option(
    "--augment",
    type=click.Choice(list(kaug.PRESETS)),
    default=TRAIN_DEFAULTS.augment,
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
    "--mixup",
    type=NON_NEGATIVE_FLOAT,
    default=TRAIN_DEFAULTS.mixup,
    show_default=True,
    help="Mixup alpha (0 = off).",
)
@click.option("--balance", type=click.Choice(kconfig.BALANCE_MODES), default=TRAIN_DEFAULTS.balance)
@click.option(
    "--val-split",
    type=click.FloatRange(0, 1, max_open=True),
    default=TRAIN_DEFAULTS.val_split,
    show_default=True,
)
@click.option(
    "--train-fraction",
    type=click.FloatRange(0, 1, min_open=True),
    default=TRAIN_DEFAULTS.train_fraction,
    show_default=True,
    help="Train on this fraction of each class (few-data experiments).",
)
@click.option(
    "--eval-fraction",
    type=click.FloatRange(0, 1, min_open=True),
    default=TRAIN_DEFAULTS.eval_fraction,
    show_default=True,
    help="Validate and test on this fraction of each class (quick experiments on large splits).",
)
@click.option(
    "--cache",
    type=click.Choice(kconfig.CACHE_MODES),
    default=TRAIN_DEFAULTS.cache,
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
@click.option("--seed", type=int, default=TRAIN_DEFAULTS.seed, show_default=True)
@click.option(
    "--precision",
    type=click.Choice(kconfig.PRECISIONS),
    default=TRAIN_DEFAULTS.precision,
    show_default=True,
)
@click.option(
    "--strategy",
    type=click.Choice(kconfig.STRATEGIES),
    default=TRAIN_DEFAULTS.strategy,
    show_default=True,
    help="auto: MirroredStrategy when TensorFlow sees several GPUs.",
)
@click.option("--weights", default=None, help="Start from a .keras file or run folder, or 'imagenet'.")
@click.option("--freeze-backbone", is_flag=True, help="Train only the new head first.")
@click.option(
    "--fine-tune-epochs",
    type=click.IntRange(min=0),
    default=TRAIN_DEFAULTS.fine_tune_epochs,
    show_default=True,
)
@click.option("--fine-tune-lr", type=POSITIVE_FLOAT, default=None)
@click.option(
    "--linear-probe/--no-linear-probe",
    default=TRAIN_DEFAULTS.linear_probe,
    help="With --freeze-backbone: fit the new head on the backbone's features, computed once, instead of "
    "--epochs frozen epochs [default: on when ImageNet weights load and --epochs is not given].",
)
@click.option("--freeze-until", default=None, help="Layer name: keep it and the layers before it frozen.")
@click.option("--resume", is_flag=True, help="Continue the run in --output from its last finished epoch.")
@click.option(
    "--overwrite",
    is_flag=True,
    help="Start a new run in --output even though it holds a run: the earlier run is deleted (nothing of "
    "it is kept) once the new one's data and model are ready. A folder of other files is never deleted.",
)
@click.option("--quiet", is_flag=True, help="One log line per epoch instead of progress bars.")
@click.option(
    "--check",
    "check_first",
    is_flag=True,
    help="Run `kerascnn check` on DATA first (duplicates, leaks, bad files, likely label errors) and print "
    "its table [default: only the cheap exact-duplicate and leak check, a one-line warning].",
)
@click.pass_context
def train_cmd(ctx, **opts):
    """Train MODEL on DATA into a run folder (models, config, history, plots, metrics)."""
    from kerascnn import models
    from kerascnn.train import TrainConfig, train

    given = _given_train_fields(ctx)
    overrides = {op: opts.pop(op) for op in kaug.AugmentConfig.OPS}
    exclude = parse_exclude(opts.pop("no_aug_for"))
    if exclude:
        overrides["exclude"] = exclude
    resume, overwrite, check_first = opts.pop("resume"), opts.pop("overwrite"), opts.pop("check_first")
    shape = parse_shape(opts.pop("input_shape"))
    if shape is not None and len(shape) == 2:
        raise click.BadParameter("give H,W,C", param_hint="--input-shape")
    model_options = parse_kwargs(opts.pop("model_kwargs"))
    if opts["bn_momentum"] < 0:
        opts["bn_momentum"] = None
    cfg = TrainConfig(
        **opts,
        input_shape=shape,
        model_options=model_options,
        augment_overrides={k: v for k, v in overrides.items() if v is not None},
    )
    if not resume:
        _look_at_data(cfg.data, check_first)
    try:
        train(cfg, resume=resume, given=given, overwrite=overwrite)
    except models.UnknownModelError as e:
        raise click.BadParameter(str(e), param_hint="--model") from None


@click.command("evaluate")
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
@click.option("--json", "json_path", default=None, type=OUT_FILE, help="Write the metrics here.")
@click.option("--confusion", default=None, type=OUT_FILE, help="Write the confusion matrix PNG here.")
@click.option(
    "--class-map",
    "class_map",
    multiple=True,
    help="DATA_NAME=MODEL_NAME, repeatable: the data's class folder DATA_NAME holds the model's class "
    "MODEL_NAME (classes are otherwise matched by name, as validate does, ignoring case when unambiguous).",
)
def evaluate_cmd(run_or_model, data, tta, batch_size, json_path, confusion, class_map):
    """Top-1, top-5 and per-class accuracy of a run folder or model file on DATA's test split."""
    import dataclasses

    import numpy as np

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
    held_out = data is None or _same_data(data, run.data)  # the run's own data: the split it held out
    data = data or run.data
    if data is None:
        raise click.BadParameter("give --data for a model file", param_hint="--data")
    mapping = _parse_class_map(class_map)
    scored = kdata.load_eval_set(data, (h, w), c, held_out=held_out, val_split=run.val_split, seed=run.seed)
    classes = model.output_shape[-1]
    names = run.class_names or [str(i) for i in range(classes)]
    if classes != len(names):
        raise click.ClickException(f"{model_file} predicts {classes} classes but its run names {len(names)}")
    try:
        index, note = kevaluate.match_classes(names, scored.class_names, "the model", mapping)
    except kevaluate.ClassMatchError as e:
        raise click.ClickException(f"--data {data}: {e}") from None
    if note:
        click.echo(f"--data {data}: {note}")
    split = dataclasses.replace(scored.split, labels=index[scored.split.labels].astype(np.int32))
    normalize = kdata.Normalization(tuple(mean), tuple(std))
    metrics = kevaluate.evaluate(model, split, normalize, names, batch_size=batch_size, tta=tta)
    metrics["images"] = scored.source
    topk = next(k for k in metrics if k.startswith("top") and k != "top1")
    click.echo(f"{model_file}: {scored.source}, tta {tta}")
    click.echo(f"top-1 {metrics['top1']:.4f}   {topk} {metrics[topk]:.4f}")
    last = run.last_epoch_file()
    if last is not None:  # model_best.keras is another epoch than the last: best against last
        other = kevaluate.evaluate(
            Run.open(last).load_model(), split, normalize, names, batch_size=batch_size, tta=tta
        )
        metrics["last"] = {"file": str(last), "top1": other["top1"], topk: other[topk]}
        click.echo(f"{last.name}: top-1 {other['top1']:.4f}   {topk} {other[topk]:.4f}   ({run.best_note()})")
    for name, acc in metrics["per_class_accuracy"].items():
        click.echo(f"  {name:<24} {'-' if acc is None else f'{acc:.4f}'}")
    if json_path:
        kevaluate.write_json(metrics, json_path)
    if confusion:
        kevaluate.plot_confusion(metrics["confusion_matrix"], names, confusion)
    if run.folder is not None and model_file.name == "model_best.keras":
        refresh_report(run.folder, model=model)


def refresh_report(run_dir, **kwargs) -> None:
    """Rewrite RUN/report.html (kerascnn.report); a page that cannot be written is said, not fatal."""
    from kerascnn.errors import KerascnnError
    from kerascnn.report import write_report

    try:
        write_report(run_dir, say=click.echo, **kwargs)
    except KerascnnError as e:
        click.echo(f"run report not written: {e}", err=True)


def _look_at_data(data: str, full: bool) -> None:
    """Before a new run: the full ``kerascnn check`` of DATA (``--check``), else its cheap exact-duplicate
    and leak check, said in one line when it finds something. Bad DATA is left for train to name."""
    from kerascnn import check as kcheck
    from kerascnn.data import DataError

    try:
        if full:
            click.echo(kcheck.check_data(data, say=lambda line: click.echo(line, err=True)).table())
        else:
            warning = kcheck.quick_check(data)
            if warning:
                click.echo(warning, err=True)
    except DataError:
        pass


def _parse_class_map(values) -> dict:
    """--class-map red=Red --class-map x=a -> {"red": "Red", "x": "a"}."""
    mapping = {}
    for value in values:
        data_name, sep, model_name = value.partition("=")
        if not sep or not data_name.strip() or not model_name.strip():
            raise click.BadParameter(
                f"expected DATA_NAME=MODEL_NAME such as red=Red; got '{value}'", param_hint="--class-map"
            )
        if data_name.strip() in mapping:
            raise click.BadParameter(f"'{data_name.strip()}' is mapped twice", param_hint="--class-map")
        mapping[data_name.strip()] = model_name.strip()
    return mapping


def _same_data(data: str, run_data: str | None) -> bool:
    """``data`` names what the run trained on (the same built-in, or the same folder or file)."""
    import os

    if run_data is None:
        return False
    if data == run_data:
        return True
    return os.path.exists(data) and os.path.exists(run_data) and os.path.samefile(data, run_data)
