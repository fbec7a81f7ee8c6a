"""Quantization-aware training (QAT) and pruning for any zoo model, to int8 TFLite and pruned ``.keras``.

tensorflow-model-optimization (tfmot) only takes legacy Keras (tf_keras) models, and importing it
switches ``tf.keras`` to tf_keras for the whole process. So the work runs in a worker subprocess,
``python -m kerascnn.export.quantize {qat,prune} ...`` (or ``batch JOBS.json`` for many jobs in one process);
the public functions here (:func:`qat_export`, :func:`prune_export`, and :func:`run_jobs` from
:mod:`.jobs`) only start that worker, stream its log and return its report. Nothing in the caller's
process imports tfmot or tf_keras.

In the worker, the Keras 3 model is rebuilt in tf_keras (:func:`kerascnn.export.legacy.to_tf_keras`), then:

* QAT: every layer is annotated for the default 8-bit scheme. What that scheme cannot take is
  handled instead of failing (:func:`build_qat_model`): a BatchNormalization that follows no
  convolution (DenseNet after Concatenate, WRN after Add) becomes the equivalent 1x1 DepthwiseConv2D,
  AveragePooling keeps its input's scale, any other unsupported layer gets an output-only 8-bit
  QuantizeConfig. ``quantize_apply``, fine-tune with fake quantization, save the QAT model as
  ``.h5``, convert to a full-integer TFLite file (int8 weights and activations, builtin ops only,
  checked op by op) with float32, int8 or uint8 input/output.
* Pruning: ``prune_low_magnitude`` with a polynomial decay to the target sparsity, fine-tune,
  ``strip_pruning``, copy the weights back into the Keras 3 model and save it as ``.keras`` for the
  normal export pipeline.
* Both: prune first, then QAT with the pruning-preserving scheme, so the int8 weights keep the zeros.

Every output is written under a temporary name in its folder and renamed when complete.
Modules: :mod:`.options` (:class:`FineTuneJob`: a job's arguments, defaults, checks and command line),
:mod:`.jobs` (the caller's side: jobs, the worker process, its reports), :mod:`.worker` (the
worker's commands and ``main``), :mod:`.qat` (the QAT scheme and its int8 conversion),
:mod:`.pruning`, :mod:`.finetune` (what the worker shares: tfmot, data, fine-tuning).
"""

from __future__ import annotations

import sys
from collections.abc import Callable

from .formats import IO_TYPES
from .jobs import QuantizeError, prune_job, qat_job, raise_on_error, run_jobs
from .options import FineTuneJob

__all__ = [
    "IO_TYPES",
    "FineTuneJob",
    "QuantizeError",
    "prune_export",
    "prune_job",
    "qat_export",
    "qat_job",
    "run_jobs",
]


def qat_export(
    model_file, data: str, out_tflite, *, log: Callable[[str], None] | None = print, **options
) -> dict:
    """Quantization-aware fine-tuning of a Keras 3 model, exported as a full-integer int8 TFLite file.

    ``options`` are the fields of :class:`FineTuneJob` from ``epochs`` on (``epochs``, ``lr``,
    ``batch_size``, ``mean``, ``std``, ``train_fraction``, ``val_split``, ``max_steps``, ``seed``, and
    QAT's ``io_type``, ``prune``, ``prune_epochs``, ``qat_model_file``, ``pruned_model_file``,
    ``check_images``, ``probe_images``), with its defaults.

    ``model_file`` is a ``.keras`` / ``.h5`` Keras 3 model whose input is ``(pixels - mean) / std``
    (per channel, pixel units); ``data`` a built-in dataset name (``fashion_mnist``, ``mnist``) or a
    folder of class folders, loaded at the model's input size. ``io_type`` is the TFLite input/output
    type (``float32``, ``int8`` or ``uint8``). With ``prune`` (a sparsity in (0, 1)) the model is first
    pruned to that sparsity (for ``prune_epochs``, default ``epochs``) and QAT keeps the zeros. The QAT
    model is saved as ``qat_model_file`` (default ``<out_tflite>.qat.h5``), the pruned float model as
    ``pruned_model_file`` (``.keras``) if given. ``train_fraction`` keeps that fraction of every class;
    ``max_steps`` caps the steps per epoch. ``check_images`` eval images are run through both the QAT
    model and the TFLite file. ``probe_images`` (uint8, N x H x W x C) puts the QAT model's
    probabilities for them in the report (``probe_qat``).

    Returns the report: paths, sizes (plain and gzip), train loss/accuracy of the fine-tune, the check
    (argmax agreement and largest probability difference between the QAT model and the TFLite file),
    sparsity of the int8 conv/dense weights (with ``prune``), the layers that got a custom quantize
    config and why, elapsed seconds. Raises :class:`QuantizeError` when the worker fails.
    """
    return raise_on_error(run_jobs([qat_job(model_file, data, out_tflite, **options)], log=log)[0])


def prune_export(
    model_file, data: str, out_keras, *, sparsity: float, log: Callable[[str], None] | None = print, **options
) -> dict:
    """Magnitude pruning of the Conv2D/Dense kernels of a Keras 3 model to ``sparsity``, fine-tuned on
    ``data`` and saved as a Keras 3 ``out_keras`` (``.keras``) for the normal export pipeline.
    ``options``: as :func:`qat_export`'s, QAT's own excepted.

    Returns the report: achieved sparsity over the pruned kernels (overall and per layer), sizes of the
    pruned and of the unpruned model (plain and gzip), train loss/accuracy, elapsed seconds. Raises
    :class:`QuantizeError` when the worker fails.
    """
    job = prune_job(model_file, data, out_keras, sparsity=sparsity, **options)
    return raise_on_error(run_jobs([job], log=log)[0])


if __name__ == "__main__":  # the worker: python -m kerascnn.export.quantize {qat,prune,batch} ...
    from kerascnn.export.worker import main

    sys.exit(main())
