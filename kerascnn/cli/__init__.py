"""The ``kerascnn`` command line: click commands only. Each parses its options, calls one library
function, and prints; everything here is also reachable from Python under the same names.

The group :func:`main` (the ``kerascnn`` entry point) is here; its commands live one module per group:

* :mod:`.options`: the option types and parsers several commands share;
* :mod:`.zoo`: ``models``, ``summary``;
* :mod:`.training`: ``train``, ``evaluate``;
* :mod:`.check`: ``check`` (duplicates, leaks, bad files, class counts and label issues of a dataset);
* :mod:`.export`: ``export``, ``inspect``, ``validate``, ``benchmark``;
* :mod:`.predict`: ``predict`` (top-k labels of images, by a run folder or a model file);
* :mod:`.retrieval`: ``index``, ``search``;
* :mod:`.lab`, :mod:`.explain`: ``lab``, ``explain``;
* :mod:`.weights`: the ``weights`` group (``fetch``, ``add``, ``list``).

The command modules import only light modules at their top; the library is imported inside each command.
"""

from __future__ import annotations

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before TensorFlow is first imported

import click  # noqa: E402

from kerascnn.errors import KerascnnError  # noqa: E402

from . import check, explain, export, lab, predict, retrieval, training, weights, zoo  # noqa: E402

__all__ = ["main"]

COMMANDS = (
    zoo.models_cmd,
    zoo.summary_cmd,
    training.train_cmd,
    training.evaluate_cmd,
    check.check_cmd,
    predict.predict_cmd,
    export.export_cmd,
    export.inspect_cmd,
    export.validate_cmd,
    export.benchmark_cmd,
    retrieval.index_cmd,
    retrieval.search_cmd,
    lab.lab_cmd,
    explain.explain_cmd,
    weights.weights_group,
)


class _Commands(click.Group):
    """The kerascnn group: a :class:`KerascnnError` from any command is printed as ``Error: message``
    (exit 1) without a traceback; the message names the file, option or layer. So is an operating
    system error about a named file (a full disk, a permission, a path that is a file where a folder is
    wanted, found only while writing): ``Error: PATH: reason``. Anything else is a bug and keeps its
    traceback."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except KerascnnError as e:
            raise click.ClickException(str(e)) from None
        except OSError as e:
            if not getattr(e, "filename", None):
                raise
            raise click.ClickException(os_error_text(e)) from None


def os_error_text(e: OSError) -> str:
    """``PATH: reason`` for an OSError about a file (what went wrong, in words, with the way out for a
    full disk)."""
    import errno

    where = e.filename if not getattr(e, "filename2", None) else f"{e.filename} -> {e.filename2}"
    reason = e.strerror or type(e).__name__
    if e.errno == errno.ENOSPC:
        reason += " (free some space and run the command again; files already there were kept)"
    return f"{where}: {reason}"


@click.group(cls=_Commands, commands=COMMANDS, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="kerascnn")
@click.option(
    "--verbose",
    is_flag=True,
    help="Show the libraries' own logs and warnings (TensorFlow, the TFLite converter, LiteRT, "
    "MediaPipe); also KERASCNN_VERBOSE=1.",
)
def main(verbose: bool):
    """kerascnn: classic CNNs in Keras 3, from idea to phone."""
    from kerascnn import quiet

    if verbose:
        quiet.set_verbose(True)
    quiet.quiet_python_libraries()
    if not {"-h", "--help"} & set(sys.argv):
        quiet.import_tensorflow()
