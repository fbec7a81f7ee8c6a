"""``kerascnn lab``: reproduce a claim an architecture was built on (kerascnn.lab runs it)."""

from __future__ import annotations

from pathlib import Path

import click

from .options import OUT_DIR


@click.command("lab")
@click.argument("name")
@click.option(
    "--out", default="lab", show_default=True, type=OUT_DIR, help="Folder for NAME.json and NAME.png."
)
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
