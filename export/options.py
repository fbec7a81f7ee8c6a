"""``kerascnn export``'s options: every option and its default, in one place (as :mod:`kerascnn.config`
for ``kerascnn train``).

Light on purpose (no TensorFlow, no Keras): the CLI reads its defaults from :class:`ExportOptions`.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class ExportOptions:
    """Every option of ``kerascnn export`` with its default (the CLI shows these)."""

    tflite: tuple = ("none",)  # --quantize values; empty = no TFLite
    onnx: bool = False
    opset: int = 17
    calibration_data: str | None = None
    calibration_steps: int = 200
    io_type: str = "float32"
    per_tensor: bool = False  # integer files: one weight scale per tensor, not per output channel
    float_layers: tuple = ()  # --quantize int8: Keras layers (names or nested paths) kept in float
    rgb_input: bool = False  # a 1-channel model takes RGB images in every exported file
    fold_normalization: bool = False  # mean/std into the graph (always done for a per-channel one)
    qat: bool = False
    qat_epochs: int = 1
    qat_lr: float = 1e-4
    # of each class of the training data, for the QAT / pruning fine-tune
    train_fraction: float = 1.0
    prune: float | None = None
    prune_epochs: int = 2
    batch_size: int = 64
    seed: int = 0
    # --quantize mixed: the gate on images held back from calibration
    min_agreement: float = 99.0
    max_drop: float | None = None
    holdout: int = 500
