"""Lab experiments: small, self-checking demonstrations of the claims the zoo is built on.

``kerascnn lab NAME --out DIR [--quick] [--data DATA]`` runs one of :data:`EXPERIMENTS` through
:func:`run_experiment`, which writes ``DIR/NAME.json`` (the numbers, with a ``"budget"`` entry that says
what ``--quick`` or the full run measured) and ``DIR/NAME.png`` (one figure), both atomically, and
prints a one-line verdict.

One module per experiment, each with its ``*_experiment(quick, data[, budget])`` function returning
(the JSON dict, the figure) and its quick/full budgets; :mod:`.common` holds what they share (the seed,
labeled images from ``--data``, batches, normalisation, accuracy and its noise margin). Adding an
experiment is one module and one row of :data:`EXPERIMENTS` (and of :data:`BUDGETS` if its sizes can be
overridden):

* :mod:`.receptive_field`, ``receptive-field``: three stacked 3x3 convolutions see what one 7x7 sees
  with 27 instead of 49 weights per channel pair (Simonyan & Zisserman 2015), the RF measured with
  gradients against :mod:`kerascnn.analysis`, on conv stacks and VGG-11's stages;
* :mod:`.separable`, ``separable``: depthwise-separable vs standard 3x3 convolution, parameters, MACs
  (``1/C + 1/9``, Howard et al. 2017) and measured CPU latency;
* :mod:`.gap_shift`, ``gap-shift``: a Flatten head against a global-average-pooling head (Network in
  Network), tested on shifted images;
* :mod:`.degradation`, ``degradation``: plain20, plain56, resnet20, resnet56 trained alike (He et al.
  2016): training error;
* :mod:`.augmentation`, ``augmentation``: no augmentation, the ``standard`` preset, mixup, on 1%, 5% and
  20% of the data;
* :mod:`.transfer`, ``transfer``: from scratch, fine-tuned and frozen backbone + new head on 1% of a
  second task (the dataset's classes split in two, as Yosinski et al. 2014 split ImageNet).

The experiments that train read ``--data`` (default ``fashion_mnist``); ``--quick`` keeps each under 5
minutes on 2 CPU cores, and the tests pass a smaller ``budget`` still. ``receptive-field`` and
``separable`` use random inputs and read no dataset.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from ..errors import ConfigError
from ..runs import atomic_save_figure, atomic_write_json
from .augmentation import AUGMENT_BUDGETS, augmentation_experiment
from .degradation import DEGRADATION_BUDGETS, degradation_experiment
from .gap_shift import GAP_BUDGETS, gap_shift_experiment
from .receptive_field import receptive_field_experiment
from .separable import separable_experiment
from .transfer import TRANSFER_BUDGETS, transfer_experiment

__all__ = ["EXPERIMENTS", "receptive_field_experiment", "run_experiment", "separable_experiment"]

FIGURE_DPI = 150

EXPERIMENTS: dict[str, Callable[..., tuple[dict, object]]] = {
    "receptive-field": receptive_field_experiment,
    "separable": separable_experiment,
    "gap-shift": gap_shift_experiment,
    "degradation": degradation_experiment,
    "augmentation": augmentation_experiment,
    "transfer": transfer_experiment,
}
BUDGETS: dict[str, dict[str, dict]] = {  # the experiments whose sizes a ``budget`` dict can override
    "gap-shift": GAP_BUDGETS,
    "degradation": DEGRADATION_BUDGETS,
    "augmentation": AUGMENT_BUDGETS,
    "transfer": TRANSFER_BUDGETS,
}


def run_experiment(
    name: str, out: str | Path, quick: bool = False, data: str | None = None, say: Callable = print,
    budget: dict | None = None,
) -> dict:  # fmt: skip
    """Run the experiment ``name``, write ``out/NAME.json`` and ``out/NAME.png``, say its verdict.

    ``quick`` runs a smaller budget (seconds on a laptop CPU; the JSON's ``"budget"`` says what it
    covered). Returns the JSON's dict, whose ``"verdict"`` is the line given to ``say``.
    """
    experiment = EXPERIMENTS.get(name)
    if experiment is None:
        raise ConfigError(f"unknown experiment {name!r}; choose one of: {', '.join(EXPERIMENTS)}")
    if budget:
        sizes = BUDGETS.get(name)
        if sizes is None:
            raise ConfigError(f"{name} has no budget to override; these do: {', '.join(BUDGETS)}")
        unknown = sorted(set(budget) - set(sizes["quick"]))
        if unknown:
            raise ConfigError(
                f"{name}: unknown budget key(s) {', '.join(unknown)}; its keys: {', '.join(sizes['quick'])}"
            )
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out: '{out}' exists and is not a folder")
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    result, fig = experiment(quick=quick, data=data, **({"budget": budget} if budget else {}))
    result["budget"]["seconds"] = round(time.perf_counter() - start, 1)
    atomic_save_figure(fig, out / f"{name}.png", dpi=FIGURE_DPI)
    atomic_write_json(out / f"{name}.json", result, indent=2)
    say(result["verdict"])
    return result
