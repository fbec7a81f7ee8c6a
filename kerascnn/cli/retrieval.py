"""Image retrieval: ``kerascnn index`` (embed a dataset into an index file) and ``kerascnn search``."""

from __future__ import annotations

import sys

import click

from .options import OUT_DIR, OUT_FILE, POSITIVE_INT, parse_floats


def retrieval_backends() -> tuple[str, ...]:
    """search --backend's choices, read from kerascnn.retrieval (it imports no TensorFlow)."""
    from kerascnn.retrieval import BACKENDS

    return BACKENDS


@click.command("index")
@click.argument("run_or_model")
@click.option("--data", required=True, help="Built-in dataset, folder of class folders, or folder of images.")
@click.option(
    "--out",
    required=True,
    type=OUT_FILE,
    help="Index file (.npz). An existing index is brought up to date: new files added, changed ones "
    "embedded again, deleted ones dropped.",
)
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
@click.option("--json", "json_path", default=None, type=OUT_FILE, help="Write the evaluation here.")
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
    norm = parse_floats(mean, "--mean"), parse_floats(std, "--std")
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
    removed = report["removed_items"]
    for item, reason in removed[:10]:
        click.echo(f"removed {item}: {reason}", err=True)
    if len(removed) > 10:
        click.echo(f"removed {len(removed) - 10} more", err=True)
    if report["rechecked"]:
        click.echo(
            f"note: {out} was made before kerascnn recorded each file's size, mtime and hash: its "
            f"{report['rechecked']} files were embedded again to find the changed ones (recorded now)",
            err=True,
        )
    unreadable = f", {len(report['skipped'])} unreadable" if report["skipped"] else ""
    click.echo(
        f"{out}: {report['total']} images ({report['added']} added, {report['changed']} changed, "
        f"{report['removed']} removed, {report['unchanged']} unchanged{unreadable}), "
        f"{index.vectors.shape[1]}-d"
    )
    if evaluate:
        queries = opts["eval_queries"]
        result = retrieval.evaluate(extractor, data, index, ks, queries, batch_size=batch_size)
        click.echo(retrieval.format_evaluation(result))
        if opts["json_path"]:
            from kerascnn.runs import atomic_write_json

            atomic_write_json(opts["json_path"], result)


@click.command("search")
@click.argument("index")
@click.argument("images", nargs=-1, required=True)
@click.option("-k", type=POSITIVE_INT, default=5, show_default=True, help="Neighbours per query.")
@click.option("--model", default=None, help="Run folder or model file [default: the index's own].")
@click.option("--backend", type=click.Choice(retrieval_backends()), default="auto", show_default=True)
@click.option(
    "--out",
    default="search_results",
    show_default=True,
    type=OUT_DIR,
    help="Folder for one PNG grid per query.",
)
@click.option("--no-grid", is_flag=True, help="Do not write the PNG grids.")
@click.option("--json", "json_path", default=None, type=OUT_FILE, help="Write the results here.")
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
            mark = "  [missing]" if hit.missing else "  [stale: changed since indexed]" if hit.stale else ""
            click.echo(f"  {hit.rank:>3}  {hit.distance:.4f}  {hit.label or '-':<14} {hit.item}{mark}")
    warning = retrieval.hits_warning(results, index)
    if warning:
        click.echo(warning, err=True)
    if json_path:
        from kerascnn.runs import atomic_write_json

        atomic_write_json(json_path, retrieval.results_json(results))
    if any(r.error for r in results):
        sys.exit(1)
