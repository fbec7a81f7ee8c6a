"""Export's options are defined once (kerascnn.export.options): the CLI shows ExportOptions' defaults.
No TensorFlow: these modules import none."""

from __future__ import annotations

from dataclasses import fields

from kerascnn.export.options import ExportOptions
from kerascnn.export.pipeline import ExportOptions as PipelineExportOptions

from kerascnn.cli.export import EXPORT_DEFAULTS, export_cmd

# ExportOptions fields the CLI fills from other options (--tflite/--quantize, --float-layers A,B), and
# those of the Python API only (the fine-tune's batch, the seed of calibration and fine-tune)
MADE_BY_THE_COMMAND = {"tflite", "float_layers"}
PYTHON_ONLY = {"batch_size", "seed"}


def _field_names(cls) -> set[str]:
    return {f.name for f in fields(cls)}


def test_the_cli_shows_export_options_defaults():
    assert PipelineExportOptions is ExportOptions  # still importable from the pipeline
    assert EXPORT_DEFAULTS == ExportOptions()
    given = export_cmd.make_context("export", ["run", "--out", "o"]).params  # what the command gets
    shown = _field_names(ExportOptions) - MADE_BY_THE_COMMAND - PYTHON_ONLY
    assert shown <= set(given), f"ExportOptions fields without a CLI option: {shown - set(given)}"
    assert not PYTHON_ONLY & set(given)
    for name in shown:
        assert given[name] == getattr(ExportOptions(), name), name
    assert given["float_layers"] is None and ExportOptions().float_layers == ()
