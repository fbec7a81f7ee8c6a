"""The ``kerascnn weights`` group: ImageNet weights for the zoo's keras.applications twins (fetch, add,
list), through kerascnn.models.pretrained."""

from __future__ import annotations

from pathlib import Path

import click

from .options import OUT_DIR


@click.group("weights")
def weights_group():
    """ImageNet weights for the zoo's keras.applications twins, in Keras' cache (KERAS_HOME/models):
    fetch them on a machine with internet, add them on one without, list what is cached."""


@weights_group.command("fetch")
@click.argument("model")
@click.option("--alpha", type=float, default=1.0, show_default=True, help="Width (MobileNets).")
@click.option("--input-size", type=int, default=224, show_default=True, help="Input side (MobileNets).")
@click.option("--include-top", is_flag=True, help="Also the file with the 1000-class ImageNet classifier.")
@click.option(
    "--out", default="imagenet-weights", show_default=True, type=OUT_DIR, help="The folder to write."
)
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
        checked = f" ({pretrained.hash_status(f)})" if f.cached() else ""
        click.echo(f"{f.name:<68} {size}  {f.describe()}{checked}")
    if not files:
        click.echo("no ImageNet weights cached: kerascnn weights fetch MODEL (with internet), then add")
