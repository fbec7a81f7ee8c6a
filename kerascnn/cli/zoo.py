"""The zoo's commands: ``kerascnn models`` (the registry, with params and MACs) and ``kerascnn summary``
(one model layer by layer)."""

from __future__ import annotations

import os

import click

from .options import POSITIVE_INT, parse_shape


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


@click.command("models")
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


@click.command("summary")
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

    shape = parse_shape(input_shape)
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
