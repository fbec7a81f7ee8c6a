"""``kerascnn train``'s configuration: every option, its default and its choices, in one dataclass.

Light on purpose (no Keras, no TensorFlow): the CLI reads its defaults and choices from here, and a
run folder's ``config.json`` is this dataclass as JSON (what ``--resume`` continues).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from kerascnn.errors import ConfigError

OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULES = ("cosine", "step", "constant")
PRECISIONS = ("float32", "mixed_float16", "mixed_bfloat16")
STRATEGIES = ("auto", "default", "mirrored", "multiworker")
BALANCE_MODES = ("oversample", "weights")  # --balance
CACHE_MODES = ("auto", "ram", "disk", "none")  # --cache (kerascnn.data.CACHE_MODES)
BEST_BY = ("auto", "val_accuracy", "val_loss")  # --best-by: what picks model_best.keras
DEFAULT_MODEL = "mobilenet_v1"
DEFAULT_LR = {"sgd": 0.05, "adam": 1e-3, "adamw": 2e-3}  # peak learning rate per optimizer


@dataclass
class TrainConfig:
    model: str = DEFAULT_MODEL
    data: str = "fashion_mnist"
    output: str | None = None
    epochs: int = 10
    batch_size: int = 128
    optimizer: str = "adamw"
    lr: float | None = None  # default per optimizer
    schedule: str = "cosine"
    warmup_epochs: float = 0.0
    weight_decay: float = 5e-4
    clip_norm: float | None = None  # clip the gradients' global norm to this (None: no clipping)
    momentum: float = 0.9
    label_smoothing: float = 0.0
    bn_momentum: float | None = 0.9  # None keeps each architecture's own (MobileNetV2: 0.999)
    augment: str = "light"
    augment_overrides: dict = field(default_factory=dict)
    mixup: float = 0.0
    balance: str | None = None  # None | "oversample" | "weights"
    val_split: float = 0.1
    train_fraction: float = 1.0
    eval_fraction: float = 1.0  # of each class of the validation and test splits (quick experiments)
    cache: str = "auto"  # decoded images: in RAM, in a disk cache, or none (streamed from the files)
    input_shape: tuple | None = None
    model_options: dict = field(default_factory=dict)
    mean: tuple = (127.5,)
    std: tuple = (127.5,)
    seed: int = 0
    precision: str = "float32"
    strategy: str = "auto"
    weights: str | None = None
    freeze_backbone: bool = False
    fine_tune_epochs: int = 0
    fine_tune_lr: float | None = None
    freeze_until: str | None = None
    # The frozen phase as a linear probe (LP-FT, kerascnn.probe): the head fitted on the backbone's
    # features computed once, instead of `epochs` epochs over the images; set by the transfer schedule.
    linear_probe: bool = False
    quiet: bool = False
    # Early stopping: stop after this many epochs without a lower val_loss (0: off); the best epoch's
    # model is model_best.keras. `kerascnn train` derives it (kerascnn.recipe) unless --patience is given.
    patience: int = 0
    # What picks model_best.keras among the epochs (a tie goes to the later one): auto chooses from the
    # size of the validation split when the run starts (kerascnn.best_by.choose_best_by).
    best_by: str = "auto"
    # What the default recipe chose for the options left out (kerascnn.recipe), with its reason; {} when
    # nothing was derived (a Python caller that set every field, or a run from before the recipe).
    recipe: dict = field(default_factory=dict)

    def default_lr(self) -> float:
        return DEFAULT_LR[self.optimizer]

    def check(self, recipe_may_freeze: bool = False):
        """ConfigError naming the first bad option. ``recipe_may_freeze``: no --model was given, so the
        recipe may still choose a frozen pretrained backbone (--fine-tune-epochs then needs no
        --freeze-backbone); the caller checks again once it has chosen."""

        def bad(option, msg):
            raise ConfigError(f"{option}: {msg}")

        if self.epochs < 1:
            bad("--epochs", f"must be >= 1, got {self.epochs}")
        if self.batch_size < 1:
            bad("--batch-size", f"must be >= 1, got {self.batch_size}")
        if self.optimizer not in OPTIMIZERS:
            bad("--optimizer", f"choose one of {', '.join(OPTIMIZERS)}")
        if self.schedule not in SCHEDULES:
            bad("--schedule", f"choose one of {', '.join(SCHEDULES)}")
        if self.precision not in PRECISIONS:
            bad("--precision", f"choose one of {', '.join(PRECISIONS)}")
        if self.strategy not in STRATEGIES:
            bad("--strategy", f"choose one of {', '.join(STRATEGIES)}")
        if self.cache not in CACHE_MODES:
            bad("--cache", f"choose one of {', '.join(CACHE_MODES)}")
        if self.best_by not in BEST_BY:
            bad("--best-by", f"choose one of {', '.join(BEST_BY)}")
        if self.balance not in (None, *BALANCE_MODES):
            bad("--balance", f"choose one of {', '.join(BALANCE_MODES)}")
        if self.clip_norm is not None and not self.clip_norm > 0:
            bad("--clip-norm", f"must be > 0, got {self.clip_norm}")
        if self.mixup < 0:
            bad("--mixup", f"alpha must be >= 0, got {self.mixup}")
        if not 0 <= self.label_smoothing < 1:
            bad("--label-smoothing", f"must be in [0, 1), got {self.label_smoothing}")
        if self.warmup_epochs < 0 or self.warmup_epochs >= self.epochs:
            bad("--warmup-epochs", f"must be in [0, epochs), got {self.warmup_epochs}")
        if not 0 < self.train_fraction <= 1:
            bad("--train-fraction", f"must be in (0, 1], got {self.train_fraction}")
        if not 0 < self.eval_fraction <= 1:
            bad("--eval-fraction", f"must be in (0, 1], got {self.eval_fraction}")
        for option, value in (("--lr", self.lr), ("--fine-tune-lr", self.fine_tune_lr)):
            if value is not None and not 0 < value < float("inf"):
                bad(option, f"must be a positive number, got {value}")
        if not 0 <= self.weight_decay < float("inf"):
            bad("--weight-decay", f"must be >= 0, got {self.weight_decay}")
        if not 0 <= self.momentum < 1:
            bad("--momentum", f"must be in [0, 1), got {self.momentum}")
        if self.bn_momentum is not None and not 0 < self.bn_momentum < 1:
            bad(
                "--bn-momentum",
                f"must be in (0, 1) (or -1 for the architecture's own), got {self.bn_momentum}",
            )
        if not 0 <= self.val_split < 1:
            bad("--val-split", f"must be in [0, 1), got {self.val_split}")
        if self.patience < 0:
            bad("--patience", f"must be >= 0 (0: no early stopping), got {self.patience}")
        if self.fine_tune_epochs < 0:
            bad("--fine-tune-epochs", f"must be >= 0, got {self.fine_tune_epochs}")
        if self.linear_probe and not self.freeze_backbone and not recipe_may_freeze:
            bad("--linear-probe", "needs --freeze-backbone (the probe fits the head on the frozen backbone)")
        if self.fine_tune_epochs and not self.freeze_backbone and not recipe_may_freeze:
            bad("--fine-tune-epochs", "needs --freeze-backbone (train the new head first, then fine-tune)")
