"""The ``kerascnn weights`` group: ImageNet weights for the zoo's keras.applications twins (fetch, add,
list), through kerascnn.models.pretrained (which checks every file before it enters the cache or a fetch
folder, and bounds every download with a connect and a read timeout)."""

from __future__ import annotations

from pathlib import Path

import click

from .options import OUT_DIR


class _PretrainedHelp(click.Option):
    """An option whose help names defaults of kerascnn.models.pretrained (``{CONNECT_TIMEOUT}``): read
    there, where they are defined once, only when the help is shown (that module imports Keras)."""

    def get_help_record(self, ctx):
        from kerascnn.models import pretrained

        template = self.help
        self.help = template.format(
            **{k: f"{v:g}" for k, v in vars(pretrained).items() if k.isupper() and isinstance(v, float)}
        )
        try:
            return super().get_help_record(ctx)
        finally:
            self.help = template


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
@click.option(
    "--timeout",
    cls=_PretrainedHelp,
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    metavar="SECONDS",
    help="Seconds to wait for a connection, and then for the answer and each next byte, before giving up "
    "and removing what came [default: {CONNECT_TIMEOUT} s to connect, {READ_TIMEOUT} s between bytes, or "
    "the environment's KERASCNN_CONNECT_TIMEOUT / KERASCNN_READ_TIMEOUT].",
)
def weights_fetch_cmd(model, alpha, input_size, include_top, out, base_url, timeout):
    """Download MODEL's ImageNet weights file(s) into OUT, with a manifest `weights add` checks. Each file
    is checked (Keras' md5, or every layer's shapes against the model it is for) before OUT changes; a
    stalled download ends at the timeout and leaves nothing behind."""
    from kerascnn.models import pretrained

    try:
        files = [pretrained.weights_file(model, alpha, input_size, top) for top in (False, True)]
    except ValueError as e:
        raise click.BadParameter(str(e), param_hint="MODEL / --alpha") from None
    pretrained.fetch(files if include_top else files[:1], out, base_url, timeout)
    for f in files if include_top else files[:1]:
        click.echo(f"{Path(out) / f.name}  ({f.describe()})")
    click.echo(f"on the machine without internet: kerascnn weights add {out}")


@weights_group.command("add")
@click.argument("source")
@click.option("--force", is_flag=True, help="Replace a cached file that is good but different.")
def weights_add_cmd(source, force):
    """Put the weights of SOURCE (a folder `weights fetch` wrote, or .h5 files under their published
    names) into Keras' cache, where `kerascnn train --weights imagenet` and the recipe find them. Each
    file is checked first (Keras' md5, or every layer's shapes against the model it is named for): a
    wrong one is refused and the cache left as it was."""
    from kerascnn.models import pretrained

    for added in pretrained.add(source, force=force):
        click.echo(f"{added.file.path()}  ({added.file.describe()}): {added.status}")


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
