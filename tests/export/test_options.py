"""Export's options are defined once (kerascnn.export.options): the CLI shows ExportOptions' defaults, what
reaches the QAT/pruning worker defaults to FineTuneJob's, the worker's parser takes the same defaults, and
a job's command line parses back into the job. No TensorFlow: these modules import none."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path

import numpy as np
import pytest
from kerascnn.export import jobs, quantize, worker
from kerascnn.export.options import FINE_TUNE_LR, ExportOptions, FineTuneJob, default_qat_model
from kerascnn.export.pipeline import ExportOptions as PipelineExportOptions

from kerascnn.cli.export import EXPORT_DEFAULTS, export_cmd

# ExportOptions fields the CLI fills from other options (--tflite/--quantize, --float-layers A,B), and
# those of the Python API only (the fine-tune's batch, the seed of calibration and fine-tune)
MADE_BY_THE_COMMAND = {"tflite", "float_layers"}
PYTHON_ONLY = {"batch_size", "seed"}
# the worker's destinations named otherwise than the job's fields
WORKER_NAME = {"model_file": "model", "qat_model_file": "qat_model", "pruned_model_file": "pruned_model"}
# the worker's destinations no job field becomes: the report file, the probe images' .npy (run_jobs)
WORKER_ONLY = {"report", "probe"}
REQUIRED = {"command", "model_file", "data", "out", "sparsity"}


def _field_names(cls) -> set[str]:
    return {f.name for f in fields(cls)}


def _worker_values(argv: list[str]) -> dict:
    """The worker's parse of ``argv``, under the job's field names."""
    parsed = vars(worker.parser().parse_args(argv))
    names = {v: k for k, v in WORKER_NAME.items()}
    return {names.get(k, k): v for k, v in parsed.items() if k not in WORKER_ONLY}


def _as_parsed(name: str, value):
    """A job field's value as the worker's parser gives it back."""
    if name in ("mean", "std"):
        return [float(v) for v in np.atleast_1d(value)]
    if name in ("model_file", "out", "qat_model_file", "pruned_model_file"):
        return None if value is None else str(Path(value))
    return value


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


def test_what_reaches_the_worker_defaults_to_the_job():
    export = ExportOptions()
    assert FineTuneJob.lr == FINE_TUNE_LR == export.qat_lr == 1e-4
    assert (export.qat_epochs, export.batch_size, export.train_fraction, export.seed, export.io_type) == (
        FineTuneJob.epochs,
        FineTuneJob.batch_size,
        FineTuneJob.train_fraction,
        FineTuneJob.seed,
        FineTuneJob.io_type,
    )


@pytest.mark.parametrize("command", ["qat", "prune"])
def test_the_worker_parser_takes_the_job_defaults(command):
    out = "m.tflite" if command == "qat" else "m.keras"
    argv = [command, "m.keras", "--data", "d", "--out", out] + (
        ["--sparsity", "0.5"] if command == "prune" else []
    )
    parsed = _worker_values(argv)
    job_fields = _field_names(FineTuneJob) - {"probe_images"}
    assert set(parsed) <= job_fields, set(parsed) - job_fields  # every worker option is a job field
    if command == "qat":
        assert set(parsed) == job_fields - {"sparsity"}
    for name in set(parsed) - REQUIRED:
        assert parsed[name] == _as_parsed(name, getattr(FineTuneJob, name)), name


def test_a_qat_job_round_trips_through_the_worker_command_line(tmp_path):
    job = quantize.qat_job(
        tmp_path / "m.keras", "fashion_mnist", tmp_path / "m.tflite", epochs=3, lr=3e-3, batch_size=16,
        mean=np.array([1.0, 2, 3]), std=(4, 5.5, 6), io_type="uint8", prune=0.6, prune_epochs=2,
        qat_model_file=tmp_path / "q.h5", pruned_model_file=tmp_path / "p.keras", train_fraction=0.5,
        val_split=0.2, max_steps=8, check_images=24, seed=7, probe_images=np.zeros((2, 4, 4, 1), np.uint8),
    )  # fmt: skip
    parsed = _worker_values(job.argv())
    assert set(parsed) == _field_names(FineTuneJob) - {"probe_images", "sparsity"}
    for name, value in parsed.items():
        assert value == _as_parsed(name, getattr(job, name)), name
    for name in ("epochs", "lr", "batch_size", "io_type", "prune", "check_images", "seed"):
        assert getattr(job, name) != getattr(FineTuneJob, name), name  # every value a default could hide
    plain = quantize.qat_job("m.keras", "d", "out/m.tflite")
    assert _worker_values(plain.argv())["qat_model_file"] == str(default_qat_model("out/m.tflite"))
    assert "--prune-epochs" not in plain.argv() and "--max-steps" not in plain.argv()


def test_a_prune_job_round_trips_through_the_worker_command_line():
    job = quantize.prune_job(
        "m.keras", "d", "out/p.keras", sparsity=0.25, epochs=2, lr=1e-3, batch_size=8, mean=0, std=1,
        train_fraction=0.1, val_split=0.0, max_steps=3, seed=1,
    )  # fmt: skip
    parsed = _worker_values(job.argv())
    assert parsed["command"] == "prune" and parsed["sparsity"] == 0.25
    for name, value in parsed.items():
        assert value == _as_parsed(name, getattr(job, name)), name


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: jobs.qat_job("m", "d", "m.tflite", io_type="int16"), "io_type must be one of float32"),
        (lambda: jobs.qat_job("m", "d", "m.tflite", prune=1.5), r"prune must be a sparsity .* got 1\.5"),
        (lambda: jobs.qat_job("m", "d", "m.onnx"), r"out_tflite must end in \.tflite, got 'm\.onnx'"),
        (
            lambda: jobs.qat_job("m", "d", "m.tflite", qat_model_file="q.keras"),
            r"qat_model_file .*'q\.keras'",
        ),
        (lambda: jobs.qat_job("m", "d", "m.tflite", epochs=0), "epochs must be at least 1, got 0"),
        (lambda: jobs.prune_job("m", "d", "m.keras", sparsity=1.0), r"sparsity must be between 0 and 1"),
        (lambda: jobs.prune_job("m", "d", "m.h5", sparsity=0.5), r"out_keras must end in \.keras"),
        (lambda: jobs.prune_job("m", "d", "m.keras", sparsity=0.5, max_steps=0), "max_steps must be at"),
    ],
)
def test_a_bad_job_is_refused_naming_the_argument(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_arguments_of_the_other_command_are_refused():
    with pytest.raises(TypeError, match="sparsity"):
        jobs.qat_job("m", "d", "m.tflite", sparsity=0.5)
    with pytest.raises(TypeError, match="io_type"):
        jobs.prune_job("m", "d", "m.keras", sparsity=0.5, io_type="int8")
    with pytest.raises(TypeError):
        jobs.qat_job("m", "d", "m.tflite", no_such_option=1)
