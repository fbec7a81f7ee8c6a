"""The ``kerascnn`` command line: click commands only. Each parses its options, calls one library
function, and prints; everything here is also reachable from Python under the same names."""

from __future__ import annotations

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before TensorFlow is first imported

import click  # noqa: E402


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
        import keras

        return keras.saving.load_model(model, compile=False)
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


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="kerascnn")
def main():
    """kerascnn: classic CNNs in Keras 3, from idea to phone."""


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
@click.option("--num-classes", type=int, default=None, help="Number of classes of the head.")
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


def run():  # pragma: no cover - console entry for `python -m kerascnn.cli`
    sys.exit(main())


if __name__ == "__main__":  # pragma: no cover
    run()
