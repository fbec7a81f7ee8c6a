"""The caller's side of QAT and pruning: a job is the checked command line of one worker run
(:func:`qat_job`, :func:`prune_job`); :func:`run_jobs` runs many in ONE worker process
(``python -m kerascnn.export.quantize``), streams its log and returns the reports. Imports nothing of
tfmot or tf_keras: the worker does (:mod:`.worker`)."""

from __future__ import annotations

import collections
import json
import os
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from kerascnn.errors import KerascnnError

from .formats import IO_TYPES


class QuantizeError(KerascnnError, RuntimeError):
    """QAT or pruning failed; the message names the model, layer or option at fault."""


def qat_job(
    model_file,
    data: str,
    out_tflite,
    *,
    epochs: int = 1,
    lr: float = 1e-4,
    batch_size: int = 64,
    mean: Sequence[float] = (127.5,),
    std: Sequence[float] = (127.5,),
    io_type: str = "float32",
    prune: float | None = None,
    prune_epochs: int | None = None,
    qat_model_file=None,
    pruned_model_file=None,
    train_fraction: float = 1.0,
    val_split: float = 0.1,
    max_steps: int | None = None,
    check_images: int = 64,
    probe_images: np.ndarray | None = None,
    seed: int = 0,
) -> dict:
    """The job :func:`qat_export` runs, checked, for :func:`run_jobs` (same arguments)."""
    if io_type not in IO_TYPES:
        raise ValueError(f"io_type must be one of {', '.join(IO_TYPES)}; got {io_type!r}")
    if prune is not None and not 0 < prune < 1:
        raise ValueError(f"prune must be a sparsity between 0 and 1 (e.g. 0.5), got {prune!r}")
    out_tflite = Path(out_tflite)
    if out_tflite.suffix != ".tflite":
        raise ValueError(f"out_tflite must end in .tflite, got '{out_tflite}'")
    qat_model_file = Path(qat_model_file) if qat_model_file else out_tflite.with_suffix(".qat.h5")
    if qat_model_file.suffix != ".h5":
        raise ValueError(
            f"qat_model_file must end in .h5 (QAT models reload from .h5), got '{qat_model_file}'"
        )
    if pruned_model_file is not None and Path(pruned_model_file).suffix != ".keras":
        raise ValueError(f"pruned_model_file must end in .keras, got '{pruned_model_file}'")
    args = [
        str(model_file), "--data", str(data), "--out", str(out_tflite),
        "--qat-model", str(qat_model_file), "--io-type", io_type,
    ]  # fmt: skip
    if prune is not None:
        args += ["--prune", repr(float(prune))]
        if prune_epochs is not None:
            args += ["--prune-epochs", str(int(prune_epochs))]
        if pruned_model_file is not None:
            args += ["--pruned-model", str(pruned_model_file)]
    args += _common_args(epochs, lr, batch_size, mean, std, train_fraction, val_split, max_steps, seed)
    args += ["--check-images", str(int(check_images))]
    return {"command": "qat", "args": args, "probe": probe_images}


def prune_job(
    model_file,
    data: str,
    out_keras,
    *,
    sparsity: float,
    epochs: int = 1,
    lr: float = 1e-4,
    batch_size: int = 64,
    mean: Sequence[float] = (127.5,),
    std: Sequence[float] = (127.5,),
    train_fraction: float = 1.0,
    val_split: float = 0.1,
    max_steps: int | None = None,
    seed: int = 0,
) -> dict:
    """The job :func:`prune_export` runs, checked, for :func:`run_jobs` (same arguments)."""
    if not 0 < sparsity < 1:
        raise ValueError(f"sparsity must be between 0 and 1 (e.g. 0.5), got {sparsity!r}")
    out_keras = Path(out_keras)
    if out_keras.suffix != ".keras":
        raise ValueError(f"out_keras must end in .keras, got '{out_keras}'")
    args = [
        str(model_file),
        "--data",
        str(data),
        "--out",
        str(out_keras),
        "--sparsity",
        repr(float(sparsity)),
    ]
    args += _common_args(epochs, lr, batch_size, mean, std, train_fraction, val_split, max_steps, seed)
    return {"command": "prune", "args": args, "probe": None}


def _common_args(epochs, lr, batch_size, mean, std, train_fraction, val_split, max_steps, seed) -> list[str]:
    if int(epochs) < 1:
        raise ValueError(f"epochs must be at least 1, got {epochs!r}")
    if not 0 < train_fraction <= 1:
        raise ValueError(f"train_fraction must be in (0, 1], got {train_fraction!r}")
    if max_steps is not None and int(max_steps) < 1:
        raise ValueError(f"max_steps must be at least 1, got {max_steps!r}")
    args = [
        "--epochs", str(int(epochs)), "--lr", repr(float(lr)), "--batch-size", str(int(batch_size)),
        "--mean", ",".join(repr(float(m)) for m in _seq(mean)),
        "--std", ",".join(repr(float(s)) for s in _seq(std)),
        "--train-fraction", repr(float(train_fraction)), "--val-split", repr(float(val_split)),
        "--seed", str(int(seed)),
    ]  # fmt: skip
    if max_steps is not None:
        args += ["--max-steps", str(int(max_steps))]
    return args


def _seq(value) -> list[float]:
    return [float(v) for v in (value if isinstance(value, list | tuple | np.ndarray) else [value])]


def _raise_on_error(report: dict) -> dict:
    if "error" in report:
        raise QuantizeError(report["error"])
    return report


def run_jobs(jobs: Sequence[dict], *, log: Callable[[str], None] | None = print) -> list[dict]:
    """Run :func:`qat_job` / :func:`prune_job` jobs one after the other in ONE worker process (one
    TensorFlow start-up for many models, as a benchmark over the zoo wants). Returns one report per
    job, in order; a job that failed has an ``"error"`` entry instead of raising, so the others still
    run. The worker's stdout is streamed to ``log``; if the worker itself dies, :class:`QuantizeError`
    carries the last lines of its stderr.
    """
    with tempfile.TemporaryDirectory(prefix="kerascnn-quantize-") as tmp:
        argvs, reports = [], []
        for i, job in enumerate(jobs):
            report = Path(tmp) / f"report{i}.json"
            argv = [job["command"], *job["args"], "--report", str(report)]
            if job.get("probe") is not None:
                probe = Path(tmp) / f"probe{i}.npy"
                np.save(probe, np.asarray(job["probe"]))
                argv += ["--probe", str(probe)]
            argvs.append(argv)
            reports.append(report)
        if len(argvs) == 1:
            command = argvs[0]
        else:
            jobs_file = Path(tmp) / "jobs.json"
            jobs_file.write_text(json.dumps(argvs))
            command = ["batch", str(jobs_file)]
        code, tail = _run_worker(command, log)
        results = []
        for argv, report in zip(argvs, reports, strict=True):
            if report.exists():
                results.append(json.loads(report.read_text()))
                continue
            errors = [t[len("error: ") :] for t in tail if t.startswith("error: ")]
            detail = errors[-1] if errors and len(argvs) == 1 else "\n".join(tail)
            message = f"{argv[0]} worker failed (exit code {code}) on '{argv[1]}': {detail}"
            if code != 0 and len(argvs) > 1 and not errors:
                raise QuantizeError(message)  # the worker died: no job after this one ran
            results.append({"error": message})
        return results


def _run_worker(command: list[str], log) -> tuple[int, list[str]]:
    """Run ``python -m kerascnn.export.quantize <command>``, stream its stdout to ``log``; returns the exit
    code and the last lines of its stderr."""
    argv = [sys.executable, "-m", "kerascnn.export.quantize", *command]
    env = dict(os.environ)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    env.setdefault("PYTHONUNBUFFERED", "1")
    env.pop("TF_USE_LEGACY_KERAS", None)  # the worker sets it itself, after loading the Keras 3 model
    tail: collections.deque[str] = collections.deque(maxlen=40)
    proc = subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, bufsize=1
    )

    def drain_stderr():
        for line in proc.stderr:
            tail.append(line.rstrip("\n"))

    reader = threading.Thread(target=drain_stderr, daemon=True)
    reader.start()
    try:
        for line in proc.stdout:
            if log is not None:
                log(line.rstrip("\n"))
        code = proc.wait()
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    reader.join(timeout=10)
    return code, list(tail)
