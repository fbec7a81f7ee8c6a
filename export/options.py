"""``kerascnn export``'s options and a QAT/pruning job: every option, its default and its checks, in one
place (as :mod:`kerascnn.config` for ``kerascnn train``).

Light on purpose (no TensorFlow, no Keras): the CLI reads its defaults from :class:`ExportOptions`;
:class:`FineTuneJob` is one run of the QAT/pruning worker, whose command line it writes
(:meth:`FineTuneJob.argv`) and whose parser (:func:`kerascnn.export.worker.parser`) takes its defaults
from it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from .formats import IO_TYPES

FINE_TUNE_LR = 1e-4  # QAT and pruning fine-tune trained weights: a small step
COMMANDS = ("qat", "prune")  # the worker's commands, one per kind of job
QAT_ONLY = ("io_type", "prune", "prune_epochs", "qat_model_file", "pruned_model_file", "check_images")


@dataclass(kw_only=True)
class FineTuneJob:
    """One run of the worker (``python -m kerascnn.export.quantize {qat,prune}``): what
    :func:`~kerascnn.export.quantize.qat_export` and :func:`~kerascnn.export.quantize.prune_export` take.

    ``qat``: quantization-aware fine-tuning of ``model_file`` on ``data``, written as the int8 ``out``
    (``.tflite``); with ``prune`` (a sparsity) the model is pruned first (for ``prune_epochs``, default
    ``epochs``). ``prune``: pruning to ``sparsity``, written as ``out`` (``.keras``). The fields from
    ``io_type`` to ``probe_images`` are QAT's only.
    """

    command: str  # "qat" | "prune"
    model_file: str | Path
    data: str
    out: str | Path
    epochs: int = 1
    lr: float = FINE_TUNE_LR
    batch_size: int = 64
    mean: Sequence[float] = (127.5,)  # per channel, pixel units: the model takes (pixels - mean) / std
    std: Sequence[float] = (127.5,)
    train_fraction: float = 1.0  # of each class of the training data
    val_split: float = 0.1
    max_steps: int | None = None  # cap on the steps per epoch
    seed: int = 0
    sparsity: float | None = None  # prune: the target sparsity, in (0, 1)
    io_type: str = "float32"  # the TFLite file's input/output type
    dynamic_batch: bool = False  # qat: the TFLite file's batch is free (default: fixed at 1)
    prune: float | None = None  # prune to this sparsity first, then QAT that keeps the zeros
    prune_epochs: int | None = None
    qat_model_file: str | Path | None = None  # default: <out>.qat.h5
    pruned_model_file: str | Path | None = None  # also save the pruned float model (.keras)
    check_images: int = 64  # eval images run through both the QAT model and the TFLite file
    probe_images: object = field(default=None, compare=False, repr=False)  # uint8 N x H x W x C

    def check(self) -> FineTuneJob:
        """ValueError naming the first bad argument (TypeError for QAT's arguments given to pruning);
        returns the job."""
        if self.command not in COMMANDS:
            raise ValueError(f"command must be one of {', '.join(COMMANDS)}; got {self.command!r}")
        if self.command == "qat":
            self._check_qat()
        else:
            self._check_prune()
        if int(self.epochs) < 1:
            raise ValueError(f"epochs must be at least 1, got {self.epochs!r}")
        if not 0 < self.train_fraction <= 1:
            raise ValueError(f"train_fraction must be in (0, 1], got {self.train_fraction!r}")
        if self.max_steps is not None and int(self.max_steps) < 1:
            raise ValueError(f"max_steps must be at least 1, got {self.max_steps!r}")
        return self

    def _check_qat(self):
        if self.sparsity is not None:
            raise TypeError("sparsity is for prune jobs; a QAT job prunes first with prune")
        if self.io_type not in IO_TYPES:
            raise ValueError(f"io_type must be one of {', '.join(IO_TYPES)}; got {self.io_type!r}")
        if self.prune is not None and not 0 < self.prune < 1:
            raise ValueError(f"prune must be a sparsity between 0 and 1 (e.g. 0.5), got {self.prune!r}")
        if Path(self.out).suffix != ".tflite":
            raise ValueError(f"out_tflite must end in .tflite, got '{Path(self.out)}'")
        if self.qat_model_path().suffix != ".h5":
            raise ValueError(
                f"qat_model_file must end in .h5 (QAT models reload from .h5), got '{self.qat_model_path()}'"
            )
        if self.pruned_model_file is not None and Path(self.pruned_model_file).suffix != ".keras":
            raise ValueError(f"pruned_model_file must end in .keras, got '{self.pruned_model_file}'")

    def _check_prune(self):
        given = [name for name in QAT_ONLY if getattr(self, name) != getattr(FineTuneJob, name)]
        if given or self.probe_images is not None:
            raise TypeError(f"{', '.join(given or ['probe_images'])}: QAT arguments, not pruning's")
        if self.sparsity is None or not 0 < self.sparsity < 1:
            raise ValueError(f"sparsity must be between 0 and 1 (e.g. 0.5), got {self.sparsity!r}")
        if Path(self.out).suffix != ".keras":
            raise ValueError(f"out_keras must end in .keras, got '{Path(self.out)}'")

    def qat_model_path(self) -> Path:
        return Path(self.qat_model_file) if self.qat_model_file else default_qat_model(self.out)

    def argv(self) -> list[str]:
        """The worker's command line (its command first, then the model file): what
        :func:`kerascnn.export.worker.parser` parses back into these fields."""
        args = [self.command, str(self.model_file), "--data", str(self.data), "--out", str(Path(self.out))]
        if self.command == "qat":
            args += ["--qat-model", str(self.qat_model_path()), "--io-type", self.io_type]
            if self.dynamic_batch:
                args += ["--dynamic-batch"]
            if self.prune is not None:
                args += ["--prune", repr(float(self.prune))]
                if self.prune_epochs is not None:
                    args += ["--prune-epochs", str(int(self.prune_epochs))]
                if self.pruned_model_file is not None:
                    args += ["--pruned-model", str(self.pruned_model_file)]
        else:
            args += ["--sparsity", repr(float(self.sparsity))]
        args += [
            "--epochs", str(int(self.epochs)), "--lr", repr(float(self.lr)),
            "--batch-size", str(int(self.batch_size)),
            "--mean", ",".join(repr(m) for m in _as_floats(self.mean)),
            "--std", ",".join(repr(s) for s in _as_floats(self.std)),
            "--train-fraction", repr(float(self.train_fraction)), "--val-split", repr(float(self.val_split)),
            "--seed", str(int(self.seed)),
        ]  # fmt: skip
        if self.max_steps is not None:
            args += ["--max-steps", str(int(self.max_steps))]
        if self.command == "qat":
            args += ["--check-images", str(int(self.check_images))]
        return args


def default_qat_model(out) -> Path:
    """Where a QAT job keeps its QAT model (``.h5``) unless told: beside the ``.tflite``."""
    return Path(out).with_suffix(".qat.h5")


def _as_floats(value) -> list[float]:
    """A number or a sequence of numbers (list, tuple, NumPy array) as floats."""
    import numpy as np  # a job's command line is made in a process that has it loaded

    return [float(v) for v in (value if isinstance(value, list | tuple | np.ndarray) else [value])]


@dataclass
class ExportOptions:
    """Every option of ``kerascnn export`` with its default (the CLI shows these); what reaches the
    QAT/pruning worker defaults to the :class:`FineTuneJob` field it becomes."""

    tflite: tuple = ("none",)  # --quantize values; empty = no TFLite
    onnx: bool = False
    opset: int = 17
    calibration_data: str | None = None
    calibration_steps: int = 200
    io_type: str = FineTuneJob.io_type
    per_tensor: bool = False  # integer files: one weight scale per tensor, not per output channel
    dynamic_batch: bool = False  # .tflite files with a free batch (default: fixed at 1, as phones expect)
    float_layers: tuple = ()  # --quantize int8: Keras layers (names or nested paths) kept in float
    rgb_input: bool = False  # a 1-channel model takes RGB images in every exported file
    fold_normalization: bool = False  # mean/std into the graph (always done for a per-channel one)
    qat: bool = False
    qat_epochs: int = FineTuneJob.epochs
    qat_lr: float = FineTuneJob.lr
    # of each class of the training data, for the QAT / pruning fine-tune
    train_fraction: float = FineTuneJob.train_fraction
    prune: float | None = None
    prune_epochs: int = 2
    batch_size: int = FineTuneJob.batch_size
    seed: int = FineTuneJob.seed
    # --quantize mixed: the gate on images held back from calibration
    min_agreement: float = 99.0
    max_drop: float | None = None
    holdout: int = 500
