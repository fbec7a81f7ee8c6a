"""``kerascnn check``'s options and their defaults, in one dataclass (light: no NumPy, no Keras), read by
the CLI, the Python API (:func:`kerascnn.check.run_check`) and ``kerascnn train --check``."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from kerascnn.errors import ConfigError

OUT = "check"  # the default --out folder (check.json, check.png)
MIN_SIDE = 16  # tiny: a side under this (px): too little to learn from (MNIST's digits have 28)
MAX_ASPECT = 5.0  # extreme: the longer side over this many times the shorter (a square resize crushes it)
FEW_IMAGES = 10  # a class with fewer images (in the training split) is listed as "few"
EMBEDDINGS = ("auto", "backbone", "pixels")
FOLDS = 5  # the probe's stratified folds (out-of-fold probabilities for confident learning)
SHOW = 5  # examples per section on the terminal


@dataclass(frozen=True)
class CheckConfig:
    min_side: int = MIN_SIDE
    max_aspect: float = MAX_ASPECT
    embedding: str = "auto"  # auto: a cached pretrained backbone for colour photos, else pixels
    folds: int = FOLDS
    label_issues: bool = True  # False: skip the probe and confident learning (faster)
    seed: int = 0  # the folds' shuffle
    show: int = SHOW

    def __post_init__(self):
        if self.embedding not in EMBEDDINGS:
            raise ConfigError(f"--embedding {self.embedding}: expected one of {', '.join(EMBEDDINGS)}")
        if self.min_side < 1:
            raise ConfigError(f"--min-side {self.min_side}: expected a positive number of pixels")
        if self.max_aspect < 1:
            raise ConfigError(f"--max-aspect {self.max_aspect:g}: expected a ratio of 1 or more")
        if self.folds < 2:
            raise ConfigError(f"--folds {self.folds}: out-of-fold probabilities need at least 2 folds")

    def as_dict(self) -> dict:
        return asdict(self)
