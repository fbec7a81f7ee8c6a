"""Quantization-aware training (QAT) and pruning for any zoo model, to int8 TFLite and pruned ``.keras``.

tensorflow-model-optimization (tfmot) only takes legacy Keras (tf_keras) models, and importing it
switches ``tf.keras`` to tf_keras for the whole process. So the work runs in a worker subprocess,
``python -m kerascnn.export.quantize {qat,prune} ...`` (or ``batch JOBS.json`` for many jobs in one process);
the public functions here (:func:`qat_export`, :func:`prune_export`, :func:`run_jobs`) only start
that worker, stream its log and return its report. Nothing in the caller's process imports tfmot or
tf_keras.

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
"""

from __future__ import annotations

import argparse
import collections
import gzip
import json
import math
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from kerascnn.errors import KerascnnError
from kerascnn.evaluate import predict_arrays
from kerascnn.runs import atomic_path

from .formats import IO_TYPES

__all__ = [
    "IO_TYPES",
    "QuantizeError",
    "prune_export",
    "prune_job",
    "qat_export",
    "qat_job",
    "run_jobs",
]


class QuantizeError(KerascnnError, RuntimeError):
    """QAT or pruning failed; the message names the model, layer or option at fault."""


# ================================================================================================
# Public API: runs in the caller's process, never imports tfmot or tf_keras
# ================================================================================================


def qat_export(
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
    log: Callable[[str], None] | None = print,
) -> dict:
    """Quantization-aware fine-tuning of a Keras 3 model, exported as a full-integer int8 TFLite file.

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
    job = qat_job(
        model_file, data, out_tflite, epochs=epochs, lr=lr, batch_size=batch_size, mean=mean, std=std,
        io_type=io_type, prune=prune, prune_epochs=prune_epochs, qat_model_file=qat_model_file,
        pruned_model_file=pruned_model_file, train_fraction=train_fraction, val_split=val_split,
        max_steps=max_steps, check_images=check_images, probe_images=probe_images, seed=seed,
    )  # fmt: skip
    return _raise_on_error(run_jobs([job], log=log)[0])


def prune_export(
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
    log: Callable[[str], None] | None = print,
) -> dict:
    """Magnitude pruning of the Conv2D/Dense kernels of a Keras 3 model to ``sparsity``, fine-tuned on
    ``data`` and saved as a Keras 3 ``out_keras`` (``.keras``) for the normal export pipeline.

    Returns the report: achieved sparsity over the pruned kernels (overall and per layer), sizes of the
    pruned and of the unpruned model (plain and gzip), train loss/accuracy, elapsed seconds. Raises
    :class:`QuantizeError` when the worker fails.
    """
    job = prune_job(
        model_file, data, out_keras, sparsity=sparsity, epochs=epochs, lr=lr, batch_size=batch_size,
        mean=mean, std=std, train_fraction=train_fraction, val_split=val_split, max_steps=max_steps,
        seed=seed,
    )  # fmt: skip
    return _raise_on_error(run_jobs([job], log=log)[0])


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


# ================================================================================================
# Worker: runs in the subprocess, imports tfmot (which switches tf.keras to tf_keras)
# ================================================================================================


def _log(message: str) -> None:
    print(message, flush=True)


def _gzip_size(path: Path) -> int:
    return len(gzip.compress(Path(path).read_bytes(), compresslevel=9))


def _tfmot():
    import tensorflow_model_optimization as tfmot

    return tfmot


_CONFIG_CLASSES: dict = {}


def _quantize_config_classes() -> dict:
    """The worker's QuantizeConfig classes (built on first use: tfmot must not be imported at import)."""
    if _CONFIG_CLASSES:
        return _CONFIG_CLASSES
    tfmot = _tfmot()
    quantizers = tfmot.quantization.keras.quantizers

    class OutputQuantizeConfig(tfmot.quantization.keras.QuantizeConfig):
        """8-bit fake quantization of a layer's output only (or of nothing, ``quantize_output=False``):
        for layers the default 8-bit registry has no rule for, and for AveragePooling, whose int8
        output must keep its input's scale."""

        def __init__(self, quantize_output: bool = True):
            self.quantize_output = quantize_output

        def get_weights_and_quantizers(self, layer):
            return []

        def get_activations_and_quantizers(self, layer):
            return []

        def set_quantize_weights(self, layer, quantize_weights):
            pass

        def set_quantize_activations(self, layer, quantize_activations):
            pass

        def get_output_quantizers(self, layer):
            if not self.quantize_output:
                return []
            return [
                quantizers.MovingAverageQuantizer(
                    num_bits=8, per_axis=False, symmetric=False, narrow_range=False
                )
            ]

        def get_config(self):
            return {"quantize_output": self.quantize_output}

    _CONFIG_CLASSES["OutputQuantizeConfig"] = OutputQuantizeConfig
    return _CONFIG_CLASSES


def _quantize_scope():
    tfmot = _tfmot()
    return tfmot.quantization.keras.quantize_scope(dict(_quantize_config_classes()))


def load_qat_model(path):
    """Reload a QAT ``.h5`` written by the worker (worker process only: imports tfmot)."""
    import tf_keras

    with _quantize_scope():
        return tf_keras.models.load_model(path, compile=False)


# ------------------------------------------------------------------------------------------------
# Which layers need a custom QuantizeConfig
# ------------------------------------------------------------------------------------------------

_FOLDABLE_INTO = ("Conv2D", "DepthwiseConv2D", "Dense")
# TFLite's int8 AVERAGE_POOL_2D needs the same scale on input and output; the default 8-bit registry
# quantizes the output on its own, and the converter then fails ("quantization parameters violate the
# same scale constraint") whenever the two learnt ranges differ, as after DenseNet's transition conv.
_SAME_SCALE = ("AveragePooling1D", "AveragePooling2D", "AveragePooling3D")
_SUPPORTED_ACTIVATIONS = {"relu", "relu6", "swish", "gelu", "linear", "softmax", "sigmoid", "tanh"}


def _activation_name(layer) -> str | None:
    activation = getattr(layer, "activation", None)
    if activation is None:
        return None
    return getattr(activation, "__name__", type(activation).__name__)


def _node_key(layer, node) -> str:
    return f"{layer.name}_ib-{layer._inbound_nodes.index(node)}"


def _inbound_layers(model, layer) -> list:
    """The layers feeding ``layer`` in ``model`` (a layer can have calls in other models too, as after
    ``strip_pruning``); [] unless it is called exactly once in ``model``."""
    nodes = [n for n in layer._inbound_nodes if _node_key(layer, n) in model._network_nodes]
    if len(nodes) != 1:
        return []
    inbound = nodes[0].inbound_layers
    return list(inbound) if isinstance(inbound, list | tuple) else [inbound]


def _consumers(model, layer) -> int:
    """How many calls in ``model`` take ``layer``'s output, plus one if it is a model output."""
    count = sum(
        1 for node in layer._outbound_nodes if _node_key(node.outbound_layer, node) in model._network_nodes
    )
    return count + sum(1 for t in model.outputs if t._keras_history.layer is layer)


def _needs_custom_config(model, layer, registry) -> str | None:
    """Why ``layer`` needs the output-only config (None when the default 8-bit scheme handles it)."""
    kind = type(layer).__name__
    if kind == "InputLayer":
        return None
    if kind in _SAME_SCALE:
        return f"{kind} must keep its input's int8 scale in TFLite, so its output is not re-quantized"
    if registry.supports(layer):
        if kind == "Activation" and _activation_name(layer) not in _SUPPORTED_ACTIVATIONS:
            return f"activation '{_activation_name(layer)}' has no 8-bit rule"
        return None
    if kind in ("BatchNormalization", "SyncBatchNormalization"):
        # the ones that cannot fold were rewritten by build_qat_model; quantize_apply reports a miss
        inbound = _inbound_layers(model, layer)
        if len(inbound) == 1 and type(inbound[0]).__name__ in _FOLDABLE_INTO:
            return None  # folded into the convolution by the default 8-bit transforms
    return f"{kind} has no rule in the default 8-bit registry: output-only 8-bit"


def _annotate(model, custom: dict[str, str]):
    """Annotate every layer for QAT; layers in ``custom`` get the output-only config."""
    import tf_keras

    tfmot = _tfmot()
    qk = tfmot.quantization.keras
    output_config = _quantize_config_classes()["OutputQuantizeConfig"]

    def annotate(layer):
        if isinstance(layer, tf_keras.Model):
            raise QuantizeError(f"layer '{layer.name}' is a nested model; flatten it before QAT")
        if layer.name in custom:
            config = output_config(quantize_output=type(layer).__name__ not in _SAME_SCALE)
            return qk.quantize_annotate_layer(layer, quantize_config=config)
        return qk.quantize_annotate_layer(layer)

    with _quantize_scope():
        return tf_keras.models.clone_model(model, clone_function=annotate)


def _standalone_batchnorms(model) -> dict[str, str]:
    """BatchNormalization layers the default 8-bit transforms cannot fold into a convolution, with the
    reason: they would convert to a float MUL + ADD pair (the product has no int8 range)."""
    out = {}
    for layer in model.layers:
        if type(layer).__name__ not in ("BatchNormalization", "SyncBatchNormalization"):
            continue
        inbound = _inbound_layers(model, layer)
        if (
            len(inbound) == 1
            and type(inbound[0]).__name__ in _FOLDABLE_INTO
            and _activation_name(inbound[0]) == "linear"
            and _consumers(model, inbound[0]) == 1
        ):
            continue  # folded into the convolution by the default 8-bit transforms
        axis = (
            layer.axis if isinstance(layer.axis, int) else (layer.axis[0] if len(layer.axis) == 1 else None)
        )
        rank = len(layer.input_shape) if isinstance(layer.input_shape, tuple) else 0
        if rank != 4 or axis not in (-1, 3):
            continue  # left as it is: the full-int8 check names it if it stays float
        if len(inbound) == 1:
            source = f"{inbound[0].name} ({type(inbound[0]).__name__})"
            if type(inbound[0]).__name__ in _FOLDABLE_INTO:
                source += " which feeds other layers too" if _consumers(model, inbound[0]) > 1 else ""
        else:
            source = "several inputs"
        out[layer.name] = (
            f"BatchNormalization after {source}, no convolution to fold into: runs as a 1x1 "
            "DepthwiseConv2D with its moving statistics frozen (int8 per-channel scale)"
        )
    return out


def _affine_preprocessing(model) -> dict[str, tuple[str, np.ndarray, np.ndarray]]:
    """Rescaling and Normalization layers on 4-D maps (a user's model normalizes its input with them),
    as ``{name: (reason, scale, offset)}``: each computes ``x * scale + offset`` per channel. Kept as
    they are, QAT gives them an output-only config and TFLite keeps their MUL and ADD in float."""
    out = {}
    for layer in model.layers:
        kind = type(layer).__name__
        shape = layer.input_shape if isinstance(layer.input_shape, tuple) else ()
        if kind not in ("Rescaling", "Normalization") or len(shape) != 4 or shape[-1] is None:
            continue
        channels = int(shape[-1])
        if kind == "Rescaling":
            scale = np.broadcast_to(np.asarray(layer.scale, np.float32), (channels,))
            offset = np.broadcast_to(np.asarray(layer.offset, np.float32), (channels,))
        else:
            if layer.invert or tuple(layer.axis) not in ((-1,), (3,)):
                continue
            weights = layer.get_weights()
            if len(weights) < 2:
                continue
            mean, variance = (np.asarray(w, np.float32).reshape(-1) for w in weights[:2])
            scale = 1.0 / np.maximum(np.sqrt(variance), 1e-7)
            scale = np.broadcast_to(scale, (channels,))
            offset = np.broadcast_to(-mean * scale, (channels,))
        out[layer.name] = (
            f"{kind} (input normalization) runs as a 1x1 DepthwiseConv2D with the same scale and offset "
            "(int8 per-channel)",
            np.array(scale, np.float32),
            np.array(offset, np.float32),
        )
    return out


def _affine_as_depthwise(model, affine):
    """A copy of the tf_keras ``model`` where each layer in ``affine`` ({name: (_, scale, offset)}) is
    ``DepthwiseConv2D(1)`` with kernel ``scale`` and bias ``offset``, under the same name."""
    import tf_keras

    def clone(layer):
        if layer.name in affine:
            return tf_keras.layers.DepthwiseConv2D(1, use_bias=True, name=layer.name)
        return layer.__class__.from_config(layer.get_config())

    new = tf_keras.models.clone_model(model, clone_function=clone)
    for layer in model.layers:
        target = new.get_layer(layer.name)
        if layer.name in affine:
            _, scale, offset = affine[layer.name]
            target.set_weights([scale.reshape(1, 1, -1, 1), offset])
        else:
            target.set_weights(layer.get_weights())
    return new


def _batchnorm_as_depthwise(model, names):
    """A copy of the tf_keras ``model`` where each BatchNormalization in ``names`` is the equivalent
    inference-mode affine map, ``DepthwiseConv2D(1)`` with kernel ``gamma / sqrt(var + eps)`` and bias
    ``beta - mean * kernel``, under the same name. Every other layer keeps its weights."""
    import tf_keras

    def clone(layer):
        if layer.name in names:
            return tf_keras.layers.DepthwiseConv2D(
                1, use_bias=True, name=layer.name, dtype=layer.dtype_policy
            )
        return layer.__class__.from_config(layer.get_config())

    new = tf_keras.models.clone_model(model, clone_function=clone)
    for layer in model.layers:
        target = new.get_layer(layer.name)
        if layer.name not in names:
            target.set_weights(layer.get_weights())
            continue
        variance = np.asarray(layer.moving_variance)
        scale = 1.0 / np.sqrt(variance + layer.epsilon)
        if layer.gamma is not None:
            scale = scale * np.asarray(layer.gamma)
        bias = -np.asarray(layer.moving_mean) * scale
        if layer.beta is not None:
            bias = bias + np.asarray(layer.beta)
        target.set_weights([scale.reshape(1, 1, -1, 1).astype(np.float32), bias.astype(np.float32)])
    return new


def build_qat_model(tfk_model, scheme=None):
    """``quantize_apply`` over an annotated copy of ``tfk_model``; returns (qat_model, special) where
    ``special`` maps the layers handled differently from the default 8-bit scheme to the reason.

    * A BatchNormalization the scheme cannot fold into a convolution (after Concatenate, pooling, Add,
      or a convolution that feeds two layers) becomes a 1x1 DepthwiseConv2D with the same numbers:
      an output-only QuantizeConfig would leave TFLite a float MUL + ADD.
    * A Rescaling or Normalization layer (a user's input normalization) becomes a 1x1 DepthwiseConv2D
      with its per-channel scale and offset, for the same reason.
    * AveragePooling keeps its input's scale (TFLite requires it), through a QuantizeConfig without
      output quantization.
    * Any other layer the registry has no rule for (or that ``quantize_apply`` rejects) gets an
      output-only 8-bit QuantizeConfig; if it still converts to a float op, the full-int8 check
      after conversion names it.
    """
    tfmot = _tfmot()
    qk = tfmot.quantization.keras
    registry = qk.default_8bit.Default8BitQuantizeRegistry()
    special = _standalone_batchnorms(tfk_model)
    if special:
        tfk_model = _batchnorm_as_depthwise(tfk_model, set(special))
    affine = _affine_preprocessing(tfk_model)
    if affine:
        tfk_model = _affine_as_depthwise(tfk_model, affine)
        special |= {name: reason for name, (reason, _, _) in affine.items()}
    custom = {}
    for layer in tfk_model.layers:
        reason = _needs_custom_config(tfk_model, layer, registry)
        if reason:
            custom[layer.name] = reason
    names = {layer.name: type(layer).__name__ for layer in tfk_model.layers}
    for _ in range(len(tfk_model.layers)):
        annotated = _annotate(tfk_model, custom)
        try:
            with _quantize_scope():
                if scheme is None:
                    return qk.quantize_apply(annotated), {**special, **custom}
                return qk.quantize_apply(annotated, scheme), {**special, **custom}
        except (RuntimeError, ValueError) as err:
            match = re.search(r"Layer (\S+?):<class", str(err))
            if match and match.group(1) in names and match.group(1) not in custom:
                custom[match.group(1)] = (
                    f"{names[match.group(1)]} rejected by quantize_apply: output-only 8-bit"
                )
                continue
            culprit = _name_layer(str(err), names)
            raise QuantizeError(f"cannot prepare the model for QAT{culprit}: {err}") from err
    raise QuantizeError("cannot prepare the model for QAT: quantize_apply keeps rejecting layers")


def _name_layer(message: str, names: dict[str, str]) -> str:
    """' at layer 'x' (Class)' for the longest layer name that appears in ``message``."""
    found = [n for n in names if re.search(rf"(?<![\w]){re.escape(n)}(?![\w])", message)]
    if not found:
        return ""
    name = max(found, key=len)
    return f" at layer '{name}' ({names[name]})"


# ------------------------------------------------------------------------------------------------
# Data, training
# ------------------------------------------------------------------------------------------------


def _load_data(opts, input_shape, num_classes):
    from kerascnn.data import Normalization, load_dataset

    h, w, c = input_shape
    data = load_dataset(
        opts.data,
        image_size=(h, w),
        channels=c,
        val_split=opts.val_split,
        train_fraction=opts.train_fraction,
        seed=opts.seed,
    )
    if data.num_classes != num_classes:
        raise QuantizeError(
            f"'{opts.data}' has {data.num_classes} classes but the model '{opts.model}' outputs "
            f"{num_classes}; use the data the model was trained on"
        )
    norm = Normalization(mean=tuple(opts.mean), std=tuple(opts.std))
    return data, norm


def _train_dataset(split, num_classes, norm, batch_size, seed):
    import tensorflow as tf

    x = norm.numpy(split.images)
    y = np.eye(num_classes, dtype=np.float32)[split.labels]
    ds = tf.data.Dataset.from_tensor_slices((x, y)).shuffle(len(x), seed=seed, reshuffle_each_iteration=True)
    return ds.batch(batch_size).repeat().prefetch(2)


def _steps_per_epoch(n_images: int, batch_size: int, max_steps: int | None) -> int:
    steps = max(1, math.ceil(n_images / batch_size))
    return min(steps, max_steps) if max_steps else steps


class _LogCallback:
    """Per-epoch progress lines on stdout (the caller streams them)."""

    def __new__(cls, tag: str, epochs: int):
        import tf_keras

        class Callback(tf_keras.callbacks.Callback):
            def on_epoch_end(self, epoch, logs=None):
                logs = logs or {}
                _log(
                    f"[{tag}] epoch {epoch + 1}/{epochs}: loss {logs.get('loss', float('nan')):.4f}, "
                    f"accuracy {logs.get('accuracy', float('nan')):.4f}"
                )

        return Callback()


# Tracing the training step of a QAT or pruning model costs 5-15 s (tfmot wraps every layer); a step
# run eagerly costs ~0.5 s. Runs this short (smoke tests, tiny data) are cheaper eagerly.
_EAGER_MAX_STEPS = 16


def _fit(model, ds, opts, steps, epochs, tag, callbacks=()):
    import tf_keras

    model.compile(
        optimizer=tf_keras.optimizers.Adam(learning_rate=opts.lr),
        loss=tf_keras.losses.CategoricalCrossentropy(),
        metrics=["accuracy"],
        run_eagerly=steps * epochs <= _EAGER_MAX_STEPS,
    )
    history = model.fit(
        ds, epochs=epochs, steps_per_epoch=steps, verbose=0, callbacks=[*callbacks, _LogCallback(tag, epochs)]
    )
    return {k: float(v[-1]) for k, v in history.history.items()}


# ------------------------------------------------------------------------------------------------
# Pruning
# ------------------------------------------------------------------------------------------------


def _pruned_kernels(model) -> list[tuple[str, np.ndarray]]:
    """The kernels magnitude pruning acts on: Conv2D and Dense kernels (tfmot's pruning registry)."""
    out = []
    for layer in model.layers:
        if type(layer).__name__ in ("Conv2D", "Dense", "Conv1D", "Conv3D", "Conv2DTranspose"):
            out.append((layer.name, np.asarray(layer.get_weights()[0])))
        elif type(layer).__name__ in ("SeparableConv2D", "SeparableConv1D"):
            out.append((layer.name, np.asarray(layer.get_weights()[1])))
    return out


def _sparsity_report(kernels: list[tuple[str, np.ndarray]]) -> dict:
    zeros = sum(int(np.count_nonzero(k == 0)) for _, k in kernels)
    total = sum(int(k.size) for _, k in kernels)
    return {
        "sparsity": zeros / total if total else 0.0,
        "zeros": zeros,
        "weights": total,
        "per_layer": {name: float(np.mean(k == 0)) for name, k in kernels},
    }


def _prune_layers(tfk_model, schedule):
    """``prune_low_magnitude`` on each layer the prune registry supports; the others (Rescaling,
    Normalization: nothing to prune) stay as they are. The whole-model call refuses any model that holds
    one of them, as the input preprocessing of a user's model does."""
    import tf_keras
    from tensorflow_model_optimization.python.core.sparsity.keras.prunable_layer import PrunableLayer
    from tensorflow_model_optimization.python.core.sparsity.keras.prune_registry import PruneRegistry

    sp = _tfmot().sparsity.keras
    prunable = [
        layer.name
        for layer in tfk_model.layers
        if isinstance(layer, PrunableLayer) or (PruneRegistry.supports(layer) and layer.weights)
    ]
    if not prunable:
        raise QuantizeError(f"model '{tfk_model.name}' has no layer with weights to prune")

    def wrap(layer):
        return sp.prune_low_magnitude(layer, pruning_schedule=schedule) if layer.name in prunable else layer

    return tf_keras.models.clone_model(tfk_model, clone_function=wrap)


def _prune(tfk_model, ds, opts, sparsity, steps, epochs):
    """Prune-finetune-strip; returns (stripped tf_keras model, train metrics)."""
    tfmot = _tfmot()
    sp = tfmot.sparsity.keras
    total = steps * epochs
    if total < 2:
        raise QuantizeError(
            f"pruning needs at least 2 training steps to reach the sparsity schedule (got {total}); "
            "raise --epochs, --max-steps or --train-fraction"
        )
    # Masks are updated every `frequency` steps (the step counter runs 1..total); the final sparsity is
    # reached at `end_step`, a multiple of it, leaving the last ~20% of the steps to recover.
    frequency = max(1, min(100, total // 10))
    end_step = max(frequency, (int(total * 0.8) // frequency) * frequency)
    schedule = sp.PolynomialDecay(
        initial_sparsity=0.0,
        final_sparsity=float(sparsity),
        begin_step=0,
        end_step=end_step,
        frequency=frequency,
    )
    try:
        pruned = _prune_layers(tfk_model, schedule)
    except ValueError as err:
        names = {layer.name: type(layer).__name__ for layer in tfk_model.layers}
        raise QuantizeError(f"cannot prune the model{_name_layer(str(err), names)}: {err}") from err
    _log(f"[prune] {total} steps to sparsity {sparsity:.2f} (final at step {end_step}, every {frequency})")
    metrics = _fit(pruned, ds, opts, steps, epochs, "prune", callbacks=[sp.UpdatePruningStep()])
    stripped = sp.strip_pruning(pruned)
    return stripped, metrics


# ------------------------------------------------------------------------------------------------
# TFLite
# ------------------------------------------------------------------------------------------------


def _convert_int8(qat_model, io_type: str) -> bytes:
    """Full-integer TFLite from the QAT model: the fake-quantization ranges learnt in training give
    every tensor its int8 scale, so no representative dataset (and no calibration) is involved.

    ``supported_ops`` stays the builtin set: TF 2.21's converter rejects ``TFLITE_BUILTINS_INT8``
    without a representative dataset even for QAT models (its metrics pass checks for one before it
    has seen the graph), and a representative dataset would re-calibrate the QAT ranges. Instead,
    :func:`_check_full_integer` verifies afterwards that every op runs in int8.
    """
    import tensorflow as tf

    with tempfile.TemporaryDirectory(prefix="kerascnn-qat-savedmodel-") as saved_model:
        _save_inference_function(qat_model, saved_model)
        converter = tf.lite.TFLiteConverter.from_saved_model(saved_model)
        return _convert(converter, qat_model, io_type)


def _save_inference_function(model, folder: str) -> None:
    """A SavedModel with one serving function, ``model(x, training=False)``, and the model's variables.

    Saving the tf_keras model itself (what ``from_keras_model`` does) also traces and saves every
    layer's call functions: 4-5x slower for the same TFLite file. The input and output keep the Keras
    names (``input`` -> ``predictions``; the QAT wrapper's ``quant_`` prefix dropped).
    """
    import tensorflow as tf

    input_name = model.inputs[0].name.split(":")[0]
    output_name = model.output_names[0]
    output_name = output_name[len("quant_") :] if output_name.startswith("quant_") else output_name
    spec = tf.TensorSpec([None, *model.input_shape[1:]], tf.float32, name=input_name)
    module = tf.Module()
    module.model_variables = list(model.variables)
    module.serve = tf.function(lambda x: {output_name: model(x, training=False)}, input_signature=[spec])
    tf.saved_model.save(module, folder, signatures={"serving_default": module.serve})


def _convert(converter, qat_model, io_type: str) -> bytes:
    import tensorflow as tf

    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    dtype = {"float32": tf.float32, "int8": tf.int8, "uint8": tf.uint8}[io_type]
    converter.inference_input_type = dtype
    converter.inference_output_type = dtype
    names = {}
    for layer in qat_model.layers:
        inner = getattr(layer, "layer", layer)
        names[layer.name] = type(inner).__name__
        names[inner.name] = type(inner).__name__
    try:
        tflite = converter.convert()
    except Exception as err:  # the converter raises ConverterError and friends
        raise QuantizeError(f"int8 TFLite conversion failed{_name_layer(str(err), names)}: {err}") from err
    float_ops = _float_ops(tflite)
    if float_ops:
        op, tensor = float_ops[0]
        raise QuantizeError(
            f"the TFLite model is not fully int8{_name_layer(tensor, names)}: {len(float_ops)} op(s) still "
            f"run in float, first {op} on tensor '{tensor}'; that layer needs a QuantizeConfig"
        )
    return tflite


_IO_OPS = ("QUANTIZE", "DEQUANTIZE")


def _float_ops(model_content: bytes) -> list[tuple[str, str]]:
    """(op, tensor name) of the ops that compute in float; QUANTIZE/DEQUANTIZE at the float model
    input/output are not counted."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=model_content)
    tensors = {t["index"]: t for t in interpreter.get_tensor_details()}
    found = []
    for op in interpreter._get_ops_details():
        if op["op_name"] in _IO_OPS:
            continue
        for index in [*op["inputs"], *op["outputs"]]:
            tensor = tensors.get(int(index))
            if tensor is not None and tensor["dtype"] in (np.float32, np.float16):
                found.append((op["op_name"], tensor["name"]))
                break
    return found


def run_tflite(model_content: bytes | str | Path, images: np.ndarray, batch: int = 32) -> np.ndarray:
    """Float outputs of a TFLite model (any io type) for float model inputs, with ai_edge_litert."""
    from ai_edge_litert.interpreter import Interpreter

    if isinstance(model_content, str | Path):
        model_content = Path(model_content).read_bytes()
    interpreter = Interpreter(model_content=model_content, num_threads=2)
    inp = interpreter.get_input_details()[0]
    outputs = []
    for start in range(0, len(images), batch):
        x = images[start : start + batch]
        interpreter.resize_tensor_input(inp["index"], [len(x), *inp["shape"][1:]])
        interpreter.allocate_tensors()
        inp = interpreter.get_input_details()[0]
        out = interpreter.get_output_details()[0]
        if inp["dtype"] != np.float32:
            scale, zero = inp["quantization"]
            info = np.iinfo(inp["dtype"])
            x = np.clip(np.round(x / scale + zero), info.min, info.max).astype(inp["dtype"])
        interpreter.set_tensor(inp["index"], x.astype(inp["dtype"]))
        interpreter.invoke()
        y = interpreter.get_tensor(out["index"])
        if out["dtype"] != np.float32:
            scale, zero = out["quantization"]
            y = (y.astype(np.float32) - zero) * scale
        outputs.append(y.astype(np.float32))
    return np.concatenate(outputs)


def tflite_int8_sparsity(model_content: bytes) -> dict:
    """Zeros among the int8 weights of the CONV_2D / FULLY_CONNECTED ops of a TFLite model."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=model_content)
    weight_indices = set()
    for op in interpreter._get_ops_details():
        if op["op_name"] in ("CONV_2D", "FULLY_CONNECTED") and len(op["inputs"]) > 1:
            weight_indices.add(int(op["inputs"][1]))
    zeros = total = 0
    for detail in interpreter.get_tensor_details():
        if detail["index"] in weight_indices and detail["dtype"] == np.int8:
            values = interpreter.get_tensor(detail["index"])
            zeros += int(np.count_nonzero(values == 0))
            total += int(values.size)
    return {"sparsity": zeros / total if total else 0.0, "zeros": zeros, "weights": total}


# ------------------------------------------------------------------------------------------------
# Worker commands
# ------------------------------------------------------------------------------------------------


def _load_keras3(path: str):
    import keras

    if not os.path.exists(path):
        raise QuantizeError(f"model file '{path}' does not exist")
    try:
        return keras.saving.load_model(path, compile=False)
    except Exception as err:
        raise QuantizeError(f"cannot load '{path}' as a Keras 3 model: {err}") from err


def _model_shape(model, opts) -> tuple[tuple[int, int, int], int]:
    shape = tuple(model.input_shape[1:])
    if len(shape) != 3 or any(d is None for d in shape):
        raise QuantizeError(
            f"model '{opts.model}' has input shape {model.input_shape}; QAT and pruning need a fixed "
            "(height, width, channels) input"
        )
    out = model.output_shape
    if isinstance(out, list) or len(out) != 2:
        raise QuantizeError(f"model '{opts.model}' must have one (batch, classes) output, has {out}")
    return shape, int(out[-1])


def _prepare(opts):
    """Common start of both commands: the Keras 3 model, its tf_keras twin, the data."""
    from kerascnn.export.legacy import to_tf_keras

    started = time.time()
    model = _load_keras3(opts.model)
    input_shape, num_classes = _model_shape(model, opts)
    _log(f"[load] {opts.model}: {model.name}, input {input_shape}, {num_classes} classes")
    tfk_model = to_tf_keras(model)
    data, norm = _load_data(opts, input_shape, num_classes)
    steps = _steps_per_epoch(len(data.train), opts.batch_size, opts.max_steps)
    _log(f"[data] {opts.data}: {len(data.train)} training images, {steps} steps per epoch")
    ds = _train_dataset(data.train, num_classes, norm, opts.batch_size, opts.seed)
    report = {
        "model": str(opts.model),
        "model_name": model.name,
        "input_shape": list(input_shape),
        "num_classes": num_classes,
        "class_names": list(data.class_names),
        "data": opts.data,
        "train_images": len(data.train),
        "steps_per_epoch": steps,
        "mean": list(opts.mean),
        "std": list(opts.std),
    }
    return model, tfk_model, data, norm, ds, steps, report, started


def cmd_prune(opts) -> dict:
    import keras
    from kerascnn.export.legacy import from_tf_keras_weights

    model, tfk_model, data, norm, ds, steps, report, started = _prepare(opts)
    out = Path(opts.out)
    with tempfile.TemporaryDirectory(dir=out.parent) as tmp:
        baseline = Path(tmp) / "unpruned.keras"
        keras.saving.save_model(model, baseline)
        report["baseline_bytes"] = baseline.stat().st_size
        report["baseline_gzip_bytes"] = _gzip_size(baseline)
    stripped, metrics = _prune(tfk_model, ds, opts, opts.sparsity, steps, opts.epochs)
    from_tf_keras_weights(model, stripped)
    with atomic_path(out) as tmp:
        keras.saving.save_model(model, tmp)
    sparsity = _sparsity_report(_pruned_kernels(model))
    _log(
        f"[prune] sparsity {sparsity['sparsity']:.4f} over {sparsity['weights']} conv/dense weights -> {out}"
    )
    report.update(
        out=str(out),
        target_sparsity=opts.sparsity,
        sparsity=sparsity["sparsity"],
        sparsity_detail=sparsity,
        bytes=out.stat().st_size,
        gzip_bytes=_gzip_size(out),
        train_loss=metrics.get("loss"),
        train_accuracy=metrics.get("accuracy"),
        epochs=opts.epochs,
        elapsed_s=time.time() - started,
    )
    return report


def cmd_qat(opts) -> dict:
    import keras
    from kerascnn.export.legacy import from_tf_keras_weights

    model, tfk_model, data, norm, ds, steps, report, started = _prepare(opts)
    scheme = None
    if opts.prune is not None:
        tfk_model, metrics = _prune(tfk_model, ds, opts, opts.prune, steps, opts.prune_epochs or opts.epochs)
        report["prune_train_accuracy"] = metrics.get("accuracy")
        report["pruned_sparsity"] = _sparsity_report(_pruned_kernels(tfk_model))["sparsity"]
        if opts.pruned_model:
            from_tf_keras_weights(model, tfk_model)
            with atomic_path(Path(opts.pruned_model)) as tmp:
                keras.saving.save_model(model, tmp)
            report["pruned_model"] = str(opts.pruned_model)
        scheme = _tfmot().experimental.combine.Default8BitPrunePreserveQuantizeScheme()
    qat_model, custom = build_qat_model(tfk_model, scheme)
    for name, reason in custom.items():
        _log(f"[qat] {name}: {reason}")
    metrics = _fit(qat_model, ds, opts, steps, opts.epochs, "qat")

    qat_path = Path(opts.qat_model)
    with atomic_path(qat_path) as tmp:
        qat_model.save(tmp, include_optimizer=False)
    reloaded = load_qat_model(qat_path)
    tflite = _convert_int8(reloaded, opts.io_type)
    out = Path(opts.out)
    with atomic_path(out) as tmp:
        tmp.write_bytes(tflite)

    check = data.eval_split if data.eval_split is not None else data.train
    x = norm.numpy(check.images[: opts.check_images])
    keras_probs = predict_arrays(reloaded, x, 32)
    lite_probs = run_tflite(tflite, x)
    agreement = float(np.mean(keras_probs.argmax(-1) == lite_probs.argmax(-1)))
    _log(
        f"[qat] int8 TFLite {out} ({len(tflite)} bytes): argmax agreement with the QAT model {agreement:.3f}"
    )
    report.update(
        out=str(out),
        qat_model=str(qat_path),
        io_type=opts.io_type,
        special_layers=custom,
        bytes=len(tflite),
        gzip_bytes=len(gzip.compress(tflite, compresslevel=9)),
        train_loss=metrics.get("loss"),
        train_accuracy=metrics.get("accuracy"),
        epochs=opts.epochs,
        check={
            "images": len(x),
            "argmax_agreement": agreement,
            "max_abs_diff": float(np.max(np.abs(keras_probs - lite_probs))),
            "qat_accuracy": float(np.mean(keras_probs.argmax(-1) == check.labels[: len(x)])),
            "tflite_accuracy": float(np.mean(lite_probs.argmax(-1) == check.labels[: len(x)])),
        },
    )
    if opts.prune is not None:
        report["target_sparsity"] = opts.prune
        report["sparsity"] = tflite_int8_sparsity(tflite)["sparsity"]
    if opts.probe:
        probe = norm.numpy(np.load(opts.probe))
        report["probe_qat"] = predict_arrays(reloaded, probe, 32).tolist()
    report["elapsed_s"] = time.time() - started
    return report


def _floats(text: str) -> list[float]:
    return [float(v) for v in text.split(",") if v.strip()]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m kerascnn.export.quantize", description=__doc__.splitlines()[0]
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for name, help_ in (
        ("qat", "quantization-aware training to int8 TFLite"),
        ("prune", "magnitude pruning"),
    ):
        p = sub.add_parser(name, help=help_)
        p.add_argument("model", help="Keras 3 model file (.keras or .h5)")
        p.add_argument("--data", required=True, help="fashion_mnist, mnist or a folder of class folders")
        p.add_argument("--out", required=True, help=".tflite (qat) or .keras (prune) to write")
        p.add_argument("--epochs", type=int, default=1)
        p.add_argument("--lr", type=float, default=1e-4)
        p.add_argument("--batch-size", type=int, default=64)
        p.add_argument("--mean", type=_floats, default=[127.5], help="per-channel pixel mean, e.g. 127.5")
        p.add_argument("--std", type=_floats, default=[127.5], help="per-channel pixel std, e.g. 127.5")
        p.add_argument("--train-fraction", type=float, default=1.0)
        p.add_argument("--val-split", type=float, default=0.1)
        p.add_argument("--max-steps", type=int, default=None, help="cap on the steps per epoch")
        p.add_argument("--seed", type=int, default=0)
        p.add_argument("--report", default=None, help="write the JSON report here")
        p.add_argument("--probe", default=None, help=argparse.SUPPRESS)
        if name == "qat":
            p.add_argument("--qat-model", default=None, help="QAT model .h5 (default: <out>.qat.h5)")
            p.add_argument("--io-type", choices=IO_TYPES, default="float32")
            p.add_argument("--prune", type=float, default=None, help="prune to this sparsity first")
            p.add_argument("--prune-epochs", type=int, default=None)
            p.add_argument("--pruned-model", default=None, help="also save the pruned float model (.keras)")
            p.add_argument("--check-images", type=int, default=64)
        else:
            p.add_argument("--sparsity", type=float, required=True)
    return parser


def _run_one(argv: list[str], keep_going: bool) -> int:
    """Run one qat/prune command line in this (worker) process; the report (or the error) goes to
    its ``--report`` file. Returns the exit code."""
    import traceback

    from kerascnn.export.legacy import LegacyConversionError

    from kerascnn.data import DataError

    opts = _parser().parse_args(argv)
    opts.model = str(opts.model)
    if opts.command == "qat" and not opts.qat_model:
        opts.qat_model = str(Path(opts.out).with_suffix(".qat.h5"))
    try:
        report = cmd_qat(opts) if opts.command == "qat" else cmd_prune(opts)
        code = 0
    except (QuantizeError, LegacyConversionError, DataError) as err:
        report, code = {"error": f"{opts.model}: {err}"}, 2
    except Exception as err:
        if not keep_going:
            raise
        traceback.print_exc()
        report, code = {"error": f"{opts.model}: {type(err).__name__}: {err}"}, 1
    if "error" in report:
        print(f"error: {report['error']}", file=sys.stderr, flush=True)
    if opts.report:
        with atomic_path(Path(opts.report)) as tmp:
            tmp.write_text(json.dumps(report, indent=2))
    elif code == 0:
        print(json.dumps({k: v for k, v in report.items() if k != "probe_qat"}, indent=2))
    return code


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    # tfmot first: it sets TF_USE_LEGACY_KERAS before anything touches tf.keras.
    _tfmot()
    if argv[:1] == ["batch"]:
        if len(argv) != 2:
            print("usage: python -m kerascnn.export.quantize batch JOBS.json", file=sys.stderr)
            return 2
        import tf_keras

        jobs = json.loads(Path(argv[1]).read_text())
        codes = []
        for i, job in enumerate(jobs, start=1):
            _log(f"[batch] job {i}/{len(jobs)}: {job[0]} {job[1]}")
            codes.append(_run_one(job, keep_going=True))
            tf_keras.backend.clear_session()
        return 0 if not any(codes) else 3
    return _run_one(argv, keep_going=False)


if __name__ == "__main__":
    sys.exit(main())
