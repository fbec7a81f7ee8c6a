"""``kerascnn explain``: Grad-CAM heatmaps and feature maps (kerascnn.explain makes them)."""

from __future__ import annotations

import click

from .options import OUT_DIR


@click.command("explain")
@click.argument("model")
@click.argument("images", nargs=-1, required=True)
@click.option("--out", default="explain", show_default=True, type=OUT_DIR, help="Folder for the heatmaps.")
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
