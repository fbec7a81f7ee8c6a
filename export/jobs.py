"""The caller's side of QAT and pruning: a job is one worker run, checked (:func:`qat_job` and
:func:`prune_job` make a :class:`~kerascnn.export.options.FineTuneJob`); :func:`run_jobs` runs many in
ONE worker process (``python -m kerascnn.export.quantize``), streams its log and returns the reports.
Imports nothing of tfmot or tf_keras: the worker does (:mod:`.worker`)."""

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

from .options import FineTuneJob


class QuantizeError(KerascnnError, RuntimeError):
    """QAT or pruning failed; the message names the model, layer or option at fault."""


def qat_job(model_file, data: str, out_tflite, **options) -> FineTuneJob:
    """The job :func:`qat_export` runs, checked, for :func:`run_jobs` (same arguments: the fields of
    :class:`FineTuneJob`)."""
    return FineTuneJob(command="qat", model_file=model_file, data=data, out=out_tflite, **options).check()


def prune_job(model_file, data: str, out_keras, *, sparsity: float, **options) -> FineTuneJob:
    """The job :func:`prune_export` runs, checked, for :func:`run_jobs` (same arguments: the fields of
    :class:`FineTuneJob`)."""
    return FineTuneJob(
        command="prune", model_file=model_file, data=data, out=out_keras, sparsity=sparsity, **options
    ).check()


def raise_on_error(report: dict) -> dict:
    """The report of a job, or the :class:`QuantizeError` it failed with."""
    if "error" in report:
        raise QuantizeError(report["error"])
    return report


def run_jobs(jobs: Sequence[FineTuneJob], *, log: Callable[[str], None] | None = print) -> list[dict]:
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
            argv = [*job.argv(), "--report", str(report)]
            if job.probe_images is not None:
                probe = Path(tmp) / f"probe{i}.npy"
                np.save(probe, np.asarray(job.probe_images))
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
