"""``kerascnn check``: know your data before training (kerascnn.check finds it)."""

from __future__ import annotations

from pathlib import Path

import click

from kerascnn import check_config as kcheck  # light: the options' defaults and choices

from .options import OUT_DIR, POSITIVE_INT

DEFAULTS = kcheck.CheckConfig()


@click.command("check")
@click.argument("data")
@click.option(
    "--out", default=kcheck.OUT, show_default=True, type=OUT_DIR, help="Folder for check.json and check.png."
)
@click.option(
    "--min-side",
    type=POSITIVE_INT,
    default=DEFAULTS.min_side,
    show_default=True,
    help="Images with a side under this many pixels are listed as tiny.",
)
@click.option(
    "--max-aspect",
    type=click.FloatRange(min=1),
    default=DEFAULTS.max_aspect,
    show_default=True,
    help="Images whose longer side is over this many times the shorter are listed (extreme aspect).",
)
@click.option(
    "--embedding",
    type=click.Choice(kcheck.EMBEDDINGS),
    default=DEFAULTS.embedding,
    show_default=True,
    help="What near-duplicates and label issues compare: auto (a pretrained MobileNet from the Keras cache "
    "for colour photos, else the pixels), backbone, or pixels.",
)
@click.option(
    "--folds",
    type=click.IntRange(min=2),
    default=DEFAULTS.folds,
    show_default=True,
    help="Stratified folds of the probe whose out-of-fold probabilities find label issues.",
)
@click.option("--no-label-issues", is_flag=True, help="Skip the probe and confident learning (faster).")
@click.option(
    "--show", type=POSITIVE_INT, default=DEFAULTS.show, show_default=True, help="Examples per section."
)
def check_cmd(data, out, min_side, max_aspect, embedding, folds, no_label_issues, show):
    """Know DATA before training: exact and near-duplicate images (mirrored, re-encoded, resized), the
    same image under two labels (a conflict) or in two splits (a leak), unreadable, truncated, tiny and
    extreme-aspect files, class counts and imbalance, and likely label errors (confident learning with
    cleanlab on out-of-fold predictions of a linear probe). DATA is anything `kerascnn train --data`
    takes; nothing is written into it. Prints a table and writes OUT/check.json (everything) and
    OUT/check.png (a contact sheet of the worst findings)."""
    from kerascnn.check import run_check

    config = kcheck.CheckConfig(
        min_side=min_side, max_aspect=max_aspect, embedding=embedding, folds=folds,
        label_issues=not no_label_issues, show=show,
    )  # fmt: skip
    report = run_check(data, out, config, say=lambda line: click.echo(line, err=True))
    click.echo(report.table(show))
    click.echo(f"\n{Path(out) / 'check.json'}, {Path(out) / 'check.png'}")
