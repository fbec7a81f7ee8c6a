"""``kerascnn predict``: the top-k labels of images by a run folder or a model file
(:mod:`kerascnn.export.predict` does the work)."""

from __future__ import annotations

import sys

import click

from kerascnn.export import predict as kpredict  # light: the defaults and choices (no TensorFlow)

from .options import OUT_FILE, POSITIVE_INT, parse_floats


class _Progress:
    """``done/total images`` on one line of a terminal's stderr, cleared before other lines are printed;
    nothing at all when stderr is not a terminal (a pipe, a file, a test)."""

    def __init__(self, enabled: bool):
        self.enabled, self.shown = enabled, False

    def clear(self) -> None:
        if self.shown:
            click.echo("\r\x1b[K", err=True, nl=False)
            self.shown = False

    def show(self, done: int, total: int) -> None:
        if self.enabled and done < total:
            click.echo(f"\r\x1b[K{done}/{total} images ({100 * done // total}%)", err=True, nl=False)
            self.shown = True


@click.command("predict")
@click.argument("model")
@click.argument("inputs", nargs=-1, required=True)
@click.option(
    "--top-k",
    type=POSITIVE_INT,
    default=kpredict.TOP_K,
    show_default=True,
    help="Labels per image, best first (at most the model's classes).",
)
@click.option(
    "--out",
    default=None,
    type=OUT_FILE,
    help="Also write the results here, as CSV (.csv: path, label_1, score_1, ...) or JSON (.json: with "
    "the skipped inputs and the accuracy); replaced atomically.",
)
@click.option(
    "--batch-size",
    type=POSITIVE_INT,
    default=kpredict.BATCH_SIZE,
    show_default=True,
    help="Images decoded and run at a time (only these are in memory).",
)
@click.option(
    "--runtime",
    type=click.Choice(kpredict.RUNTIMES),
    default=kpredict.RUNTIMES[0],
    show_default=True,
    help="auto: the file's own (Keras, LiteRT, onnxruntime); mediapipe: a .tflite alone through MediaPipe "
    "Tasks' ImageClassifier, fed RGB images at their own size, as a phone app runs it.",
)
@click.option(
    "--mean",
    default=None,
    help="Run folder or .keras/.h5 file: normalization mean(s) in pixel units [default: the run's or the "
    "export's; none (0) for a model with Rescaling/Normalization at its input; else 127.5].",
)
@click.option(
    "--std", default=None, help="Normalization std(s) in pixel units [default: as --mean, 1 or 127.5]."
)
@click.option(
    "--labels", default=None, help="labels.txt (one per line) for a .keras/.h5 model outside a run folder."
)
@click.option(
    "--threads", type=POSITIVE_INT, default=None, help="Threads for TFLite/ONNX [default: runtime's]."
)
@click.option(
    "--quiet", "-q", is_flag=True, help="No line per image (with --out: just the file and the summary)."
)
def predict_cmd(model, inputs, top_k, out, batch_size, runtime, mean, std, labels, threads, quiet):
    """The top-k labels of images, by MODEL: a run folder (its best model, the run's normalization and class
    names) or a .keras, .h5, .tflite or .onnx file (an exported file's own metadata).

    INPUTS are image files, folders (searched recursively), glob patterns ('photos/**/*.jpg', quoted: expanded
    here) and CSV/TSV file lists (path,label[,split]: their labels give a top-1 line at the end). Prints one
    line per image, 'photo.jpg  cat 0.910  dog 0.070  owl 0.010' (probabilities; a softmax of the outputs
    of a model without one). An input that cannot be read (missing, not an image, damaged) is named on
    stderr and skipped, the others are still predicted; the exit status is then 1 (0 when every input
    was predicted)."""
    from kerascnn.export import metadata as md

    try:
        label_list = md.read_labels_txt(labels) if labels else None
    except OSError as e:
        raise click.BadParameter(
            f"{labels}: cannot be read ({e.strerror or e})", param_hint="--labels"
        ) from None
    if out is not None:
        kpredict.check_out(out)
    progress = _Progress(sys.stderr.isatty())

    def say(text: str) -> None:
        progress.clear()
        click.echo(text, err=True)

    def on_skip(skipped) -> None:
        say(f"skipped {skipped}")

    def on_batch(predictions, done: int, total: int) -> None:
        progress.clear()
        if not quiet:
            for p in predictions:
                click.echo(p.line())
        if total > batch_size:  # a bar for more than one batch
            progress.show(done, total)

    try:
        results = kpredict.predict(
            model,
            inputs,
            top_k=top_k,
            batch_size=batch_size,
            runtime=runtime,
            mean=parse_floats(mean, "--mean"),
            std=parse_floats(std, "--std"),
            labels=label_list,
            threads=threads,
            out=out,
            on_batch=on_batch,
            on_skip=on_skip,
            say=say,
        )
    finally:
        progress.clear()
    if results.accuracy is not None:
        click.echo(results.accuracy.line())
    if out is not None:
        click.echo(f"wrote {out}", err=True)
    if results.skipped:
        predicted, skipped = len(results.predictions), len(results.skipped)
        click.echo(f"{predicted} image(s) predicted, {skipped} input(s) skipped (named above)", err=True)
        sys.exit(1)
