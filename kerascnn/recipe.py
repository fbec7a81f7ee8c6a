"""The default recipe: what ``kerascnn train`` chooses, from the data, for the options the user left out.

Two pure functions, testable without training, and one peek at the files:

* :func:`choose_model` (before the data is loaded, from a peek at the images): with no ``--model``,
  small grayscale images (at most 32 px a side) train ``lenet5`` at 32x32; small colour ones, images
  holding at most 48 px of detail and sets of at most 10,000 images ``resnet20`` at 32x32; larger
  sets of larger images ``mobilenet_v1`` with ``alpha=0.5`` at the side their detail needs, up to
  128 px; never upscaled to 224; grayscale data (also saved as RGB) gets 1 channel.
* :func:`choose_schedule` (once the data is loaded): a step budget instead of a fixed epoch count, a
  smaller batch on small sets, a warm-up over the first few hundred steps, early stopping on val_loss;
  a run given fewer epochs than that (``--epochs 3``) is a short run: :func:`scale_augment` and the
  schedule scale augmentation, warm-up and the peak lr to its share of the budget.

Every option the user gave (``given``: TrainConfig field -> option name, from the command line) wins;
:func:`apply_model_choice` and :func:`apply_recipe` (what ``kerascnn.train`` calls) write the choices
into the config's own fields (so ``--resume`` continues the same run and never derives again) and into
``TrainConfig.recipe`` (the values chosen and a one-line reason, kept in config.json).
The numbers below come from the measurements of BENCHMARKS.md ("The default recipe against hand-tuned
commands", 2 CPU cores).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .config import TrainConfig

SMALL_SIDE = 32  # images up to this side train a small net at 32x32
SMALL_MODEL = "lenet5"  # small grayscale images (digits, letters): a net of 0.4M MACs suffices
SMALL_COLOUR_MODEL = "resnet20"  # small colour images and low-detail ones: the CIFAR net at its 32x32
LOW_DETAIL_SIDE = 48  # images holding at most this much detail train SMALL_COLOUR_MODEL at 32x32
SMALL_SET = 10_000  # so do sets of at most this many images (trained from scratch)
MEDIUM_MODEL, MEDIUM_OPTIONS = "mobilenet_v1", {"alpha": 0.5}
MEDIUM_MAX_SIDE = 128  # larger images are downscaled to this (cost grows with the square of the side)
STEP_BUDGET = 4000  # optimizer steps a run from scratch gets (a hand-tuned lenet5 on 4,500 digits: ~4,200)
MIN_EPOCHS, MAX_EPOCHS = 10, 40
BATCH_PER_IMAGES = 128  # about one batch per 128 training images: 4,500 -> 32, >= 16,384 -> 128
MIN_BATCH, MAX_BATCH = 32, 128
WARMUP_STEPS = 300  # linear warm-up over the first few hundred steps (at most 20% of the run)
# A short run (--epochs below the recipe's own count): augmentation strength and warm-up shrink with the
# budget's share, and the peak lr grows by its inverse, up to SHORT_LR_BOOST (lenet5, 3 of 29 epochs on
# 4,500 digits: 86.6% -> 95%; BENCHMARKS.md "Short budgets")
SHORT_LR_BOOST = 5.0
# and, when neither --optimizer nor --lr is given, trains with SGD (Nesterov momentum 0.9) instead of
# AdamW: lenet5 at 3 epochs on those digits 95.4% against 94.6% (medians of 3 seeds), resnet20 on 900
# fashion photos 72.8% against 71.0% (BENCHMARKS.md "Short runs")
SHORT_OPTIMIZER = "sgd"
SAMPLE_FILES = 64  # image headers peeked at to learn the native size
DETAIL_SAMPLE = 16  # of them decoded to tell grayscale saved as RGB, and how much detail they hold
DETAIL_LOSS = 0.08  # halving the input side is kept while it loses less than this (see detail_side)

_COLOUR_MODES = {"RGB", "RGBA", "RGBX", "CMYK", "YCbCr", "LAB", "HSV", "P", "PA"}


@dataclass(frozen=True)
class NativeSize:
    """The images' own size: the median height and width of a sample, 3 channels when any is colour
    (colour files whose channels are all equal, grayscale saved as RGB, count as 1), and ``detail``:
    the smallest input side (halving from the model's side, down to 32) that keeps the images' detail,
    None when it was not measured."""

    height: int
    width: int
    channels: int
    sampled: int  # how many files were looked at (0 for a built-in)
    detail: int | None = None
    files: int = 0  # how many image files the data lists (0: not counted)

    def __str__(self) -> str:
        return f"{self.height}x{self.width}x{self.channels}"


_EXIF_ORIENTATION = 0x0112  # the EXIF tag phones set instead of rotating the pixels
_QUARTER_TURNS = (5, 6, 7, 8)  # its values that turn the image a quarter: width and height swap


def peek_native_size(data: str, sample: int = SAMPLE_FILES) -> NativeSize | None:
    """The native size of ``data``'s images, from the headers of up to ``sample`` files spread over the
    listing (Pillow reads the size and mode without decoding), and from ``DETAIL_SAMPLE`` of them
    decoded: whether colour files hold colour, and how much detail they hold (:func:`detail_side`).
    None when it cannot be told (tfds:, no readable file)."""
    from . import data as kdata

    if data in kdata.BUILTINS:
        return NativeSize(28, 28, 1, 0)
    if kdata.is_tfds(data):
        return None
    try:
        files = kdata.list_data(data)[0]
    except kdata.DataError:
        return None  # the loader says what is wrong with --data, with its own message
    step = max(1, len(files) // sample)
    sizes, colour, decoded = [], False, []
    from PIL import ImageOps

    for path in files[::step][:sample]:
        try:
            with kdata.open_image(Path(path)) as im:  # HEIC too; the size as the photo is shown
                w, h = im.size
                sizes.append((h, w) if im.getexif().get(_EXIF_ORIENTATION, 1) in _QUARTER_TURNS else (w, h))
                colour |= im.mode in _COLOUR_MODES
                if len(decoded) < DETAIL_SAMPLE:
                    decoded.append(ImageOps.exif_transpose(im).convert("RGB"))
        except Exception:  # noqa: BLE001, S112 - an unreadable file is reported by the loader later
            continue
    if not sizes:
        return None
    if colour and decoded and all(_grey_rgb(im) for im in decoded):
        colour = False
    widths, heights = sorted(s[0] for s in sizes), sorted(s[1] for s in sizes)
    mid = len(sizes) // 2
    h, w = heights[mid], widths[mid]
    detail = detail_side(decoded, _medium_side(min(h, w))) if max(h, w) > SMALL_SIDE and decoded else None
    return NativeSize(h, w, 3 if colour else 1, len(sizes), detail, len(files))


def _grey_rgb(im) -> bool:
    """A colour image whose channels are equal up to JPEG's rounding: grayscale saved as RGB."""
    import numpy as np

    rgb = np.asarray(im, np.int16)
    return float(np.abs(rgb[..., 0] - rgb[..., 1]).mean() + np.abs(rgb[..., 1] - rgb[..., 2]).mean()) < 2.0


def _medium_side(side: int) -> int:
    """The medium model's input side for images of ``side``: their own, at most MEDIUM_MAX_SIDE, a
    multiple of 16, at least the 32 the nets need (never upscaled beyond that)."""
    return max(SMALL_SIDE, min(side, MEDIUM_MAX_SIDE) // 16 * 16)


def detail_side(images, side: int) -> int:
    """The smallest input side, halving from ``side`` (never under SMALL_SIDE), at which ``images``
    (PIL images) keep their detail: halving is kept while shrinking the images (at the current side)
    by 2 and enlarging them back changes them by less than DETAIL_LOSS of their contrast (RMS error /
    standard deviation, the median over the images). Upscaled images (a 28 px garment saved at 96 px)
    lose nothing at half size; photos do (measured: 0.04 for Fashion-MNIST upscaled 28 -> 96 at half
    size, 0.13 at a quarter; 0.13 for a 512 px photo; 0.34 for 28 px images at their own size)."""
    import numpy as np
    from PIL import Image

    greys = [im.convert("L").resize((side, side), Image.BOX) for im in images]
    while side // 2 >= SMALL_SIDE:
        losses = []
        for g in greys:
            a = np.asarray(g, np.float32)
            half = g.resize((side // 2, side // 2), Image.BOX)
            back = np.asarray(half.resize((side, side), Image.BICUBIC), np.float32)
            losses.append(np.sqrt(np.mean((a - back) ** 2)) / (a.std() + 1e-6))
        if float(np.median(losses)) >= DETAIL_LOSS:
            break
        side //= 2
        greys = [g.resize((side, side), Image.BOX) for g in greys]
    return side


@dataclass
class ModelChoice:
    model: str
    model_options: dict
    input_shape: tuple
    reason: str


def choose_model(
    native: NativeSize | None, given: dict, input_shape: tuple | None = None
) -> ModelChoice | None:
    """The model and input shape for data of ``native`` size when ``--model`` was not given (else None:
    the model's own input shape, or ``--input-shape``, as always). ``--model-kwargs`` without ``--model``
    are options of the documented default model, so the choice is left alone then too."""
    if "model" in given or "model_options" in given:
        return None
    if input_shape is not None:  # --input-shape without --model: a model for that size
        h, w, c = input_shape
        if min(h, w) <= SMALL_SIDE:
            return ModelChoice(_small_model(c), {}, tuple(input_shape), f"--input-shape {h},{w},{c}")
        return ModelChoice(
            MEDIUM_MODEL, dict(MEDIUM_OPTIONS), tuple(input_shape), f"--input-shape {h},{w},{c}"
        )
    if native is None:
        return None
    c, small = native.channels, (SMALL_SIDE, SMALL_SIDE, native.channels)
    if max(native.height, native.width) <= SMALL_SIDE:
        return ModelChoice(_small_model(c), {}, small, f"{native} images")
    side, why = _medium_side(min(native.height, native.width)), f"{native} images"  # never upscaled
    if native.detail and native.detail < side:  # saved larger than taken: the input holds their detail
        side, why = native.detail, f"{native} images with the detail of {native.detail} px"
    if side <= LOW_DETAIL_SIDE:  # the CIFAR net at its own 32x32 learns more from them than a MobileNet
        return ModelChoice(SMALL_COLOUR_MODEL, {}, small, why)
    if 0 < native.files <= SMALL_SET:  # from scratch on a few thousand images, so does the small net
        return ModelChoice(SMALL_COLOUR_MODEL, {}, small, f"{why}, {native.files:,d} of them: a small set")
    return ModelChoice(MEDIUM_MODEL, dict(MEDIUM_OPTIONS), (side, side, c), why)


TRANSFER_MODEL = "mobilenet_v2"  # colour photos: fine-tuned from ImageNet, as MediaPipe Model Maker does
# Every zoo family with ImageNet weights, phone-sized first (by MACs at 224x224: kerascnn models):
# the recipe fine-tunes the first whose file is cached (a file whose md5 is not Keras' is passed over)
TRANSFER_MODELS = (
    "mobilenet_v2", "mobilenet_v1", "densenet121", "resnet50", "densenet169", "resnet101", "densenet201",
    "resnet152", "vgg16", "vgg19",
)  # fmt: skip
TRANSFER_SIZES = (224, 192, 160, 128, 96)  # the input sides its weights are published for
TRANSFER_EPOCHS = 10  # the new head on the frozen backbone (Model Maker's default epochs)
TRANSFER_FINE_TUNE_EPOCHS = 10  # then the whole network but its BatchNorm, at a hundredth of the lr:
# after the linear probe, a tenth (AdamW 2e-4) raised MobileNet v1's training loss from 0.08 to 1.93 in
# the first fine-tuning epoch (the features distorted; 69.8% test at the end), a hundredth to 0.11 (75.4%)
# (BENCHMARKS.md "Your photos", real ImageNet weights, 224 px; the Keras guide fine-tunes at 1e-5)
TRANSFER_FINE_TUNE_LR = 0.01  # of the head's lr


@dataclass
class TransferChoice:
    """The pretrained backbone the recipe chose (``choice``), or the line saying what one would give."""

    choice: ModelChoice | None
    fields: dict  # the TrainConfig fields it sets (weights, freeze_backbone, fine_tune_epochs)
    hint: str | None = None
    given_model: bool = False  # --model ... --weights imagenet: the user's model, the transfer schedule

    @property
    def transfer(self) -> bool:
        """The run fine-tunes ImageNet weights with the transfer schedule."""
        return self.choice is not None or self.given_model


def _online() -> bool:
    """Keras' weights store is reachable (a 3 s TCP connect); never with KERASCNN_OFFLINE=1."""
    import os
    import socket

    if os.environ.get("KERASCNN_OFFLINE") == "1":
        return False
    try:
        socket.create_connection(("storage.googleapis.com", 443), timeout=3).close()
        return True
    except OSError:
        return False


def choose_transfer(
    native: NativeSize | None, given: dict, online=_online, weights: str | None = None
) -> TransferChoice | None:
    """For colour photos with the detail of more than LOW_DETAIL_SIDE px, when none of --model,
    --model-kwargs and --input-shape was given (and --weights, if given, is imagenet): a zoo family
    fine-tuned from its ImageNet weights at :func:`transfer_size` of the images' side. The first of
    TRANSFER_MODELS (phone-sized first) whose file is in the Keras cache (and, where Keras publishes an
    md5, matches it): the file of that size at width 1.0, else the cached one of the nearest size (the
    widest nearest 1.0). None cached, TRANSFER_MODEL's file is downloaded when Keras' store is
    reachable. Otherwise None, with ``hint`` set: what a pretrained backbone would have been and how to
    bring its weights. The reason says whether the file's hash was checked ("cached, no published hash"
    for the MobileNets)."""
    from .models import pretrained

    if native is None or native.channels != 3 or not native.sampled:
        return None
    if {"model", "model_options", "input_shape"} & set(given):
        return None
    if "weights" in given and weights != "imagenet":  # --weights imagenet alone: the recipe's backbone
        return None
    if min(native.height, native.width, native.detail or native.height) <= LOW_DETAIL_SIDE:
        return None
    want = transfer_size(min(native.height, native.width))
    preferred = pretrained.weights_file(TRANSFER_MODEL, 1.0, want)
    pick, how = None, None
    for model in TRANSFER_MODELS:  # phone-sized first: the first family with a cached file
        status = {f: pretrained.hash_status(f) for f in pretrained.cached(model, top=False)}  # read once
        have = [f for f, checked in status.items() if checked != "md5 mismatch"]
        if have:
            exact = pretrained.weights_file(model, 1.0, want)
            pick = exact if exact in have else min(have, key=lambda f: _nearest(f, want))
            how = f"cached, {status[pick]}"
            break
    if pick is None and online():
        pick, how = preferred, "downloaded from Keras' weights store"
    elif pick is None:
        return TransferChoice(
            None, {},
            f"for these photos the recipe would fine-tune {TRANSFER_MODEL} at {want}x{want} from ImageNet, "
            f"but its weights ({preferred.name}) are not in the Keras cache and cannot be downloaded "
            f"here; {pretrained.fetch_commands(preferred)}",
        )  # fmt: skip
    size = min(pick.size or want, want)
    fields = {"weights": "imagenet", "freeze_backbone": True, **_probe(given)}
    fields.update({} if "fine_tune_epochs" in given else {"fine_tune_epochs": TRANSFER_FINE_TUNE_EPOCHS})
    fields = {k: v for k, v in fields.items() if k not in given}
    why = (
        f"{native} colour photos: fine-tuned from ImageNet ({pick.name}, {how}), the new head on the "
        f"frozen backbone first"
    )
    options = {"alpha": pick.alpha} if pick.alpha not in (None, 1.0) else {}
    return TransferChoice(ModelChoice(pick.model, options, (size, size, 3), why), fields)


def transfer_size(side: int) -> int:
    """The input side a pretrained backbone is fine-tuned at for images of ``side`` px: the smallest of
    TRANSFER_SIZES that holds them whole (rounded up, never shrunk below their own size; 224 for larger
    images). Not the detail measure of :func:`choose_model`, which is what a network trained from scratch
    needs: pretrained features are tuned to ImageNet's object scale. Measured on 175-px photos (the
    linear probe of MobileNet v1's features, five splits): 75.9% at 128, 78.6% at 160, 79.5% at 192,
    79.0% at 224 (BENCHMARKS.md "Your photos")."""
    return next((s for s in reversed(TRANSFER_SIZES) if s >= side), TRANSFER_SIZES[0])


def _nearest(f, want: int) -> tuple:
    """The cached file nearest ``want`` px (a MobileNet's trained size), then the widest nearest 1.0."""
    alpha = f.alpha or 1.0
    return abs((f.size or want) - want), abs(alpha - 1.0), -alpha


def imagenet_transfer(cfg: TrainConfig, given: dict) -> TransferChoice | None:
    """``--model X --weights imagenet``: the transfer schedule the recipe's own pretrained choice gets (the
    head on the frozen backbone, then TRANSFER_FINE_TUNE_EPOCHS of fine-tuning), unless the user set
    --freeze-backbone or --fine-tune-epochs (then their choice stands). None without ImageNet weights."""
    if cfg.weights != "imagenet" or {"freeze_backbone", "fine_tune_epochs"} & set(given):
        return None
    fields = {"freeze_backbone": True, "fine_tune_epochs": TRANSFER_FINE_TUNE_EPOCHS, **_probe(given)}
    return TransferChoice(None, fields, given_model=True)


def _probe(given: dict) -> dict:
    """The head as a linear probe (kerascnn.probe), unless --epochs asks for frozen epochs over the
    images or --linear-probe/--no-linear-probe was given."""
    return {} if {"epochs", "linear_probe"} & set(given) else {"linear_probe": True}


def _small_model(channels: int) -> str:
    return SMALL_MODEL if channels == 1 else SMALL_COLOUR_MODEL


def choose_augment(native: NativeSize | None, given: dict) -> tuple[dict, str] | None:
    """Augmentation overrides for the data when neither ``--augment`` nor an op option was given (with
    ``--model`` given, for a folder of images): small grayscale images (at most 32 px) are not flipped,
    since digits and characters, what such datasets mostly hold, become other glyphs when mirrored
    (measured on 20x20 digits: 96.1% with the flip, 97.3% without; BENCHMARKS.md)."""
    if native is None or "augment" in given or "augment_overrides" in given:
        return None
    if native.channels == 1 and max(native.height, native.width) <= SMALL_SIDE:
        return {"flip": "none"}, "no flip (small grayscale images: mirrored glyphs are other glyphs)"
    return None


@dataclass
class Schedule:
    epochs: int
    batch_size: int
    lr: float
    warmup_epochs: float
    patience: int
    steps_per_epoch: int
    chosen: list[str]  # the fields the recipe set (the others were given)
    budget: float = 1.0  # the run's share of the recipe's own epochs (< 1: a short run)
    full_epochs: int = 0  # the recipe's own epoch count for this data
    optimizer: str = "adamw"


def choose_schedule(
    train_images: int,
    *,
    epochs: int,
    batch_size: int,
    optimizer: str,
    lr: float | None,
    warmup_epochs: float,
    schedule: str,
    patience: int,
    given: dict,
    fine_tune: bool = False,
    transfer: bool = False,
    probe: bool = False,
) -> Schedule:
    """Epochs, batch size, peak lr, warm-up and early-stopping patience for ``train_images`` training
    images; each value passed in that ``given`` names is kept as it is.

    * batch: about one per 128 images, a power of two in [32, 128] (4,500 images -> 32): small sets
      get more, noisier steps, which is what they need;
    * epochs: enough for a budget of ~4,000 optimizer steps, in [10, 40] epochs (a large set gets 10);
    * lr: the optimizer's default peak for Adam/AdamW (their step size does not grow with the batch),
      scaled linearly with the batch from 128 for SGD (the batch a step really sees: a --batch-size
      beyond the training images counts as their number);
    * warm-up: the first ~300 steps (at most a fifth of the run; none with --schedule step);
    * a short run, ``--epochs`` below the epochs derived above (``budget``: their ratio; not when
      fine-tuning): SGD (SHORT_OPTIMIZER) unless ``--optimizer`` or ``--lr`` was given, the peak lr
      times 1/budget (at most SHORT_LR_BOOST), the warm-up times budget;
    * ``transfer`` (the recipe chose a pretrained backbone): TRANSFER_EPOCHS epochs for the new head;
    * patience: stop after max(3, epochs/5) epochs without a lower val_loss (off with fine-tuning, and
      when --epochs is given: the user asked for that many).
    """
    from .config import DEFAULT_LR

    chosen = []
    if "batch_size" not in given:
        b = 2 ** round(math.log2(max(1, train_images) / BATCH_PER_IMAGES)) if train_images else MIN_BATCH
        batch_size = int(min(MAX_BATCH, max(MIN_BATCH, b)))
        chosen.append("batch_size")
    steps = max(1, math.ceil(train_images / batch_size))
    full_epochs = int(min(MAX_EPOCHS, max(MIN_EPOCHS, math.ceil(STEP_BUDGET / steps))))
    if transfer:  # a pretrained backbone the recipe chose: a head trains in a few epochs
        full_epochs = 1 if probe else TRANSFER_EPOCHS  # the probe: one pass of the backbone
    if "epochs" not in given:
        epochs = full_epochs
        chosen.append("epochs")
    budget = 1.0 if fine_tune else min(1.0, epochs / full_epochs)  # fine-tuning is short by design
    if budget < 1.0 and not {"optimizer", "lr"} & set(given) and optimizer != SHORT_OPTIMIZER:
        optimizer = SHORT_OPTIMIZER
        chosen.append("optimizer")
    if "lr" not in given and lr is None:
        used = min(batch_size, train_images) if train_images else batch_size  # a step sees at most them all
        lr = DEFAULT_LR[optimizer] * (used / 128 if optimizer == "sgd" else 1.0)
        lr *= min(SHORT_LR_BOOST, 1.0 / budget)
        chosen.append("lr")
    if "warmup_epochs" not in given:
        if schedule == "step":
            warmup_epochs = 0.0
        else:
            warmup_epochs = min(WARMUP_STEPS * budget / steps, 0.2 * epochs)
            warmup_epochs = math.floor(warmup_epochs * 10) / 10  # tenths of an epoch, < epochs
        chosen.append("warmup_epochs")
    if "patience" not in given:
        # --epochs N asks for N epochs: early stopping belongs to the derived step budget
        patience = 0 if fine_tune or "epochs" in given else max(3, math.ceil(epochs / 5))
        if patience >= epochs:
            patience = 0  # it could never fire before the end
        chosen.append("patience")
    return Schedule(
        epochs, batch_size, lr, warmup_epochs, patience, steps, chosen, budget, full_epochs, optimizer
    )


def scale_augment(augment, sched: Schedule, given: dict) -> tuple[dict, str] | None:
    """For a short run (``sched.budget`` < 1), augmentation overrides with every op's strength scaled by
    the budget's share (flips stay as they are), when neither ``--augment`` nor an op option was given:
    augmentation that pays over the recipe's full schedule only slows a run a tenth as long (lenet5, 3
    epochs on 4,500 digits: train accuracy 82% under val). ``augment``: the AugmentConfig in effect."""
    if sched.budget >= 1.0 or "augment" in given or "augment_overrides" in given:
        return None
    ops = {op: round(getattr(augment, op) * sched.budget, 4) for op in augment.active_ops() if op != "flip"}
    if not ops:
        return None
    return ops, f"augmentation x{sched.budget:.2f}"


def describe(
    train_images: int, classes: int, native: NativeSize | None, model: str, model_options: dict,
    input_shape, sched: Schedule, model_reason: str | None, augment: str | None = None,
) -> str:  # fmt: skip
    """The one line the run log prints: what was chosen, and from what."""
    what = f"{train_images:,d} train images, {classes} classes"
    if native is not None:
        what += f", {native}"
    net = model + "".join(f" {k}={v}" for k, v in model_options.items())
    shape = "x".join(str(s) for s in input_shape)
    parts = [f"{net} at {shape}" + (f" ({model_reason})" if model_reason else " (given)")]
    total = sched.epochs * sched.steps_per_epoch
    parts.append(f"batch {sched.batch_size}{'' if 'batch_size' in sched.chosen else ' (given)'}")
    parts.append(f"{sched.epochs} epochs (~{total:,d} steps){'' if 'epochs' in sched.chosen else ' (given)'}")
    parts.append(f"lr {sched.lr:g}{'' if 'lr' in sched.chosen else ' (given)'}")
    warm = f"warm-up {sched.warmup_epochs:g} epochs" if sched.warmup_epochs else "no warm-up"
    parts.append(warm + ("" if "warmup_epochs" in sched.chosen else " (given)"))
    stop = (
        f"early stop after {sched.patience} epochs without a lower val_loss"
        if sched.patience
        else "no early stopping"
    )
    parts.append(stop + ("" if "patience" in sched.chosen else " (given)"))
    if augment:
        parts.append(augment)
    if sched.budget < 1.0:
        scaled = [w for f, w in (("lr", f"lr x{min(SHORT_LR_BOOST, 1 / sched.budget):.1f}"),
                                 ("warmup_epochs", "warm-up")) if f in sched.chosen]  # fmt: skip
        sgd = ["SGD with momentum instead of AdamW"] if "optimizer" in sched.chosen else []
        if scaled or sgd:
            parts.append(
                f"a short run ({sched.epochs} of the {sched.full_epochs} epochs the recipe gives this data): "
                + ", ".join(sgd + ([" and ".join(scaled) + " scaled to it"] if scaled else []))
            )
    return f"recipe: {what} -> {', '.join(parts)}; set any of them to override"


# ------------------------------------------------------------------------------------------------
# The choices, written into a TrainConfig (what kerascnn.train calls)
# ------------------------------------------------------------------------------------------------


def apply_model_choice(
    cfg: TrainConfig, given: dict
) -> tuple[NativeSize | None, str | None, TransferChoice | None]:
    """(native size, reason, pretrained): with no --model, the model and input shape from the images'
    native size (:func:`choose_model`, or :func:`choose_transfer`'s pretrained backbone with the fields it
    sets), written into ``cfg``; with --model, only the native size of a folder (the augmentation rule
    reads it)."""
    native = peek_native_size(cfg.data)
    if "model" in given or "model_options" in given:
        # the images still say what augmentation fits them (a folder of digits is not flipped)
        pretrained = imagenet_transfer(cfg, given)
        for name, value in (pretrained.fields if pretrained else {}).items():
            setattr(cfg, name, value)
        return (native if native is not None and native.sampled else None), None, pretrained
    choice = choose_model(native, given, cfg.input_shape)
    pretrained = choose_transfer(native, given, weights=cfg.weights) if choice is not None else None
    if pretrained is not None and pretrained.choice is not None:  # colour photos, ImageNet weights at hand
        choice = pretrained.choice
        for name, value in pretrained.fields.items():
            setattr(cfg, name, value)
    if choice is None:
        return native, None, None
    cfg.model, cfg.model_options, cfg.input_shape = choice.model, choice.model_options, choice.input_shape
    return native, choice.reason, pretrained


def apply_recipe(
    cfg: TrainConfig, train_images: int, classes: int, given: dict, native: NativeSize | None,
    model_reason: str | None, pretrained: TransferChoice | None,
) -> str:  # fmt: skip
    """Epochs, batch size, lr, warm-up, patience and augmentation derived from the loaded data
    (``train_images`` in ``classes``) for the fields the command line left out (:func:`choose_schedule`,
    :func:`choose_augment`, :func:`scale_augment`), written into ``cfg`` (so that --resume continues the
    same run) and recorded in ``cfg.recipe``; returns the line for the log. ``native``, ``model_reason``
    and ``pretrained``: what :func:`apply_model_choice` returned."""
    from . import augment as kaug

    transfer = pretrained is not None and pretrained.transfer
    sched = choose_schedule(
        train_images, epochs=cfg.epochs, batch_size=cfg.batch_size, optimizer=cfg.optimizer,
        lr=cfg.lr, warmup_epochs=cfg.warmup_epochs, schedule=cfg.schedule, patience=cfg.patience,
        given=given, fine_tune=bool(cfg.fine_tune_epochs or cfg.freeze_backbone), transfer=transfer,
        probe=cfg.linear_probe,
    )  # fmt: skip
    cfg.epochs, cfg.batch_size, cfg.lr = sched.epochs, sched.batch_size, sched.lr
    cfg.optimizer = sched.optimizer
    cfg.warmup_epochs, cfg.patience = sched.warmup_epochs, sched.patience
    reasons = []
    for rule in (
        lambda: choose_augment(native, given),
        lambda: scale_augment(kaug.augment_config(cfg.augment, **cfg.augment_overrides), sched, given),
    ):
        augment = rule()
        if augment:
            cfg.augment_overrides = {**cfg.augment_overrides, **augment[0]}
            reasons.append(augment[1])
    line = describe(
        train_images, classes, native, cfg.model, cfg.model_options, cfg.input_shape, sched, model_reason,
        ", ".join(reasons) or None,
    )  # fmt: skip
    chosen = [*sched.chosen, *(["model", "model_options", "input_shape"] if model_reason else [])]
    chosen += list(pretrained.fields) if transfer else []
    if transfer and cfg.fine_tune_epochs and "fine_tune_lr" not in given and cfg.fine_tune_lr is None:
        cfg.fine_tune_lr = cfg.lr * TRANSFER_FINE_TUNE_LR
        chosen.append("fine_tune_lr")
    if cfg.linear_probe:  # the frozen phase is no run of epochs: say what it is
        line = re.sub(
            r"1 epochs \(~[\d,]+ steps\)( \(given\))?",
            "the new head fitted on the frozen backbone's features, computed once (a linear probe)",
            line,
        )
    if cfg.fine_tune_epochs and ("fine_tune_epochs" in chosen or transfer):
        tuned = f"then {cfg.fine_tune_epochs} epochs fine-tuning at lr {cfg.fine_tune_lr or cfg.lr / 10:g}"
        line = line.replace("; set any", f", {tuned}; set any")
    chosen += ["augment_overrides"] if reasons else []
    cfg.recipe = {
        "chosen": chosen,
        "train_images": train_images,
        "classes": classes,
        "native_size": str(native) if native else None,
        **{name: getattr(cfg, name) for name in chosen},
        "reason": line,
        **({"pretrained_hint": pretrained.hint} if pretrained is not None and pretrained.hint else {}),
    }
    cfg.check()
    return line
