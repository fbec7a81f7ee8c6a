"""The default recipe (kerascnn.recipe): its choices for a few dataset shapes, explicit options winning,
config.json recording it, --resume keeping it, and one tiny `kerascnn train --data DIR` end to end."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from kerascnn import recipe
from kerascnn.cli import main
from kerascnn.config import DEFAULT_LR


def sched(n, given=(), **kw):
    args = dict(epochs=10, batch_size=128, optimizer="adamw", lr=None, warmup_epochs=0.0, schedule="cosine")
    args.update(patience=0)
    args.update(kw)
    return recipe.choose_schedule(n, given={k: f"--{k}" for k in given}, **args)


def test_small_set_gets_small_batches_and_a_step_budget():
    s = sched(4500)  # 5,000 digits less the 10% validation
    assert (s.batch_size, s.steps_per_epoch, s.epochs) == (32, 141, 29)  # ~4,100 steps
    assert s.lr == DEFAULT_LR["adamw"]
    assert s.warmup_epochs == 2.1  # the first ~300 steps
    assert s.patience == 6
    assert set(s.chosen) == {"batch_size", "epochs", "lr", "warmup_epochs", "patience"}


def test_large_set_gets_full_batches_and_the_minimum_epochs():
    s = sched(54000)  # Fashion-MNIST's training set
    assert (s.batch_size, s.epochs, s.patience) == (128, 10, 3)
    assert s.warmup_epochs == 0.7


def test_tiny_set_is_capped():
    s = sched(36)
    assert (s.batch_size, s.steps_per_epoch, s.epochs) == (32, 2, 40)
    assert s.warmup_epochs == 8.0  # at most a fifth of the run
    assert s.patience == 8


def test_a_short_run_scales_lr_warmup_and_augmentation_to_its_budget():
    from kerascnn import augment as kaug

    s = sched(4500, ("epochs",), epochs=3)  # lenet5 --epochs 3 on 4,500 digits: 423 of ~4,100 steps
    assert (s.full_epochs, s.budget) == (29, pytest.approx(3 / 29))
    # SGD, not AdamW, when --optimizer is not given; its lr scales with the batch, then by 1/budget, capped
    assert s.optimizer == recipe.SHORT_OPTIMIZER == "sgd" and "optimizer" in s.chosen
    assert s.lr == pytest.approx(DEFAULT_LR["sgd"] * 32 / 128 * recipe.SHORT_LR_BOOST)
    assert s.warmup_epochs == 0.2  # 300 steps x 3/29 = 31 steps, not 20% of the run (0.6)
    assert sched(4500, ("epochs",), epochs=20).lr == pytest.approx(DEFAULT_LR["sgd"] * 32 / 128 * 29 / 20)
    mine = sched(4500, ("epochs", "optimizer"), epochs=3)  # --optimizer adamw given: kept
    assert mine.optimizer == "adamw" and "optimizer" not in mine.chosen
    assert mine.lr == pytest.approx(DEFAULT_LR["adamw"] * recipe.SHORT_LR_BOOST)
    assert sched(4500, ("epochs", "lr"), epochs=3, lr=0.002).optimizer == "adamw"  # an lr set for AdamW
    assert sched(4500).optimizer == "adamw"  # a full run keeps the default
    standard = kaug.augment_config("standard")
    ops, why = recipe.scale_augment(standard, s, {"epochs": "--epochs"})
    assert ops == {op: round(getattr(standard, op) * 3 / 29, 4) for op in ops} and "flip" not in ops
    assert set(ops) == {"shift", "rotation", "zoom", "brightness", "contrast"} and why == "augmentation x0.10"
    assert recipe.scale_augment(standard, s, {"augment": "--augment"}) is None  # the user chose it
    assert recipe.scale_augment(standard, s, {"augment_overrides": "--shift"}) is None
    full = sched(4500)
    assert full.budget == 1.0 and recipe.scale_augment(standard, full, {}) is None
    tuned = sched(4500, ("epochs",), epochs=3, fine_tune=True)  # short by design
    assert (tuned.lr, tuned.optimizer) == (DEFAULT_LR["adamw"], "adamw")
    line = recipe.describe(4500, 10, None, "lenet5", {}, (32, 32, 1), s, None, why)
    short = "a short run (3 of the 29 epochs the recipe gives this data): SGD with momentum instead of AdamW"
    assert f"augmentation x0.10, {short}, lr x5.0 and warm-up scaled to it" in line
    line = recipe.describe(4500, 10, None, "lenet5", {}, (32, 32, 1), mine, None, why)
    assert "SGD" not in line and "epochs the recipe gives this data): lr x5.0 and warm-up scaled" in line


def test_sgd_scales_lr_with_batch_and_step_schedule_has_no_warmup():
    s = sched(4500, optimizer="sgd", schedule="step")
    assert s.lr == pytest.approx(DEFAULT_LR["sgd"] * 32 / 128)
    assert s.warmup_epochs == 0


def test_explicit_options_win():
    given = ("batch_size", "epochs", "lr", "warmup_epochs", "patience")
    s = sched(4500, given, epochs=3, batch_size=100, lr=0.1, warmup_epochs=0.5, patience=0)
    assert (s.epochs, s.batch_size, s.lr, s.warmup_epochs, s.patience) == (3, 100, 0.1, 0.5, 0)
    assert s.chosen == []
    s = sched(4500, ("epochs",), epochs=2)  # early stopping that could never fire is off
    assert (s.epochs, s.batch_size, s.patience) == (2, 32, 0)
    assert sched(4500, fine_tune=True).patience == 0
    assert sched(4500, ("epochs",), epochs=30).patience == 0  # --epochs N: N epochs, no early stop


@pytest.mark.parametrize(
    "native, model, options, shape",
    [
        (recipe.NativeSize(20, 20, 1, 64), "lenet5", {}, (32, 32, 1)),
        (recipe.NativeSize(28, 28, 1, 0), "lenet5", {}, (32, 32, 1)),
        (recipe.NativeSize(32, 32, 3, 64), "resnet20", {}, (32, 32, 3)),  # small photos: the CIFAR net
        (recipe.NativeSize(96, 96, 3, 64), "mobilenet_v1", {"alpha": 0.5}, (96, 96, 3)),
        (recipe.NativeSize(96, 96, 3, 64, 96), "mobilenet_v1", {"alpha": 0.5}, (96, 96, 3)),
        (recipe.NativeSize(100, 150, 1, 64), "mobilenet_v1", {"alpha": 0.5}, (96, 96, 1)),
        (recipe.NativeSize(480, 640, 3, 64), "mobilenet_v1", {"alpha": 0.5}, (128, 128, 3)),
        (recipe.NativeSize(480, 640, 3, 64, 64), "mobilenet_v1", {"alpha": 0.5}, (64, 64, 3)),
        (recipe.NativeSize(96, 96, 1, 64, 48), "resnet20", {}, (32, 32, 1)),  # fashion96: 48 px of detail
        (recipe.NativeSize(224, 224, 3, 64, 224, 3000), "resnet20", {}, (32, 32, 3)),  # a small set
        (recipe.NativeSize(224, 224, 3, 64, 224, 50000), "mobilenet_v1", {"alpha": 0.5}, (128, 128, 3)),
    ],
)
def test_model_and_input_from_the_images(native, model, options, shape):
    choice = recipe.choose_model(native, {})
    assert (choice.model, choice.model_options, choice.input_shape) == (model, options, shape)
    assert max(shape[:2]) <= max(32, native.height, native.width)  # never upscaled past 32


def _noise(side, upscaled_from=None, seed=0):
    rng = np.random.default_rng(seed)
    im = Image.fromarray(rng.integers(0, 256, (upscaled_from or side,) * 2 + (3,), dtype=np.uint8))
    return im.resize((side, side), Image.BILINEAR) if upscaled_from else im


def _garments(n, side):
    """Fashion-MNIST's first ``n`` training images (28 px) saved larger, as bench/recipe.py does."""
    from kerascnn import data as kdata

    (x, _), _ = kdata.load_builtin("fashion_mnist")
    return [Image.fromarray(x[i], "L").resize((side, side), Image.BILINEAR).convert("RGB") for i in range(n)]


def test_detail_side_finds_upscaled_images():
    """Images saved larger than their detail (28 px garments at 96 px) train at the side that holds
    that detail; images with detail down to the pixel keep their side; never under 32."""
    assert recipe.detail_side(_garments(8, 96), 96) == 48
    assert recipe.detail_side(_garments(8, 28), 32) == 32
    assert recipe.detail_side([_noise(96, seed=i) for i in range(4)], 96) == 96
    assert recipe.detail_side([_noise(128, upscaled_from=8, seed=i) for i in range(4)], 128) == 32


def test_peek_tells_grayscale_saved_as_rgb_and_the_detail(tmp_path):
    for i, garment in enumerate(_garments(6, 96)):  # 28 px grayscale saved as 96 px RGB JPEGs: fashion96
        (tmp_path / "d" / f"c{i % 2}").mkdir(parents=True, exist_ok=True)
        garment.save(tmp_path / "d" / f"c{i % 2}" / f"{i}.jpg", quality=90)
    native = recipe.peek_native_size(str(tmp_path / "d"))
    assert native == recipe.NativeSize(96, 96, 1, 6, 48, 6)
    choice = recipe.choose_model(native, {})
    assert (choice.model, choice.input_shape) == ("resnet20", (32, 32, 1))
    assert choice.reason == "96x96x1 images with the detail of 48 px"


def test_augmentation_from_the_images():
    assert recipe.choose_augment(recipe.NativeSize(20, 20, 1, 64), {}) == (
        {"flip": "none"},
        "no flip (small grayscale images: mirrored glyphs are other glyphs)",
    )
    assert recipe.choose_augment(recipe.NativeSize(32, 32, 3, 64), {}) is None  # photos are flipped
    assert recipe.choose_augment(recipe.NativeSize(96, 96, 1, 64), {}) is None
    assert recipe.choose_augment(recipe.NativeSize(20, 20, 1, 64), {"augment": "--augment"}) is None
    assert recipe.choose_augment(recipe.NativeSize(20, 20, 1, 64), {"augment_overrides": "--flip"}) is None


def test_model_choice_yields_to_the_command_line():
    native = recipe.NativeSize(20, 20, 1, 64)
    assert recipe.choose_model(native, {"model": "--model"}) is None
    assert recipe.choose_model(native, {"model_options": "--model-kwargs"}) is None
    chosen = recipe.choose_model(native, {"input_shape": "--input-shape"}, (64, 64, 3))
    assert (chosen.model, chosen.input_shape) == ("mobilenet_v1", (64, 64, 3))
    chosen = recipe.choose_model(native, {"input_shape": "--input-shape"}, (32, 32, 3))
    assert (chosen.model, chosen.input_shape) == ("resnet20", (32, 32, 3))
    assert recipe.choose_model(None, {}) is None  # unknown size (tfds:): the documented default


def _folder(root, per_class=20, size=12, classes=3, seed=0):
    """Class folders of small grayscale PNGs whose labels are noise: val_loss cannot improve for long."""
    rng = np.random.default_rng(seed)
    for c in range(classes):
        (root / f"c{c}").mkdir(parents=True)
        for i in range(per_class):
            Image.fromarray(rng.integers(0, 256, (size, size), dtype=np.uint8), "L").save(
                root / f"c{c}" / f"{i}.png"
            )
    return root


def test_peek_native_size(tmp_path):
    _folder(tmp_path / "d", per_class=2, size=12, classes=2)
    Image.new("RGB", (30, 20), (200, 40, 10)).save(tmp_path / "d" / "c0" / "colour.jpg")
    assert recipe.peek_native_size(str(tmp_path / "d")) == recipe.NativeSize(12, 12, 3, 5, None, 5)
    assert recipe.peek_native_size("mnist") == recipe.NativeSize(28, 28, 1, 0)
    assert recipe.peek_native_size(str(tmp_path / "missing")) is None


def test_peek_native_size_reads_photos_as_shown(tmp_path):
    """A phone photo stored landscape with an EXIF "rotate 90" tag is a portrait photo: its height
    and width are the shown ones, as the loader decodes it."""
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 clockwise to show
    for c in ("a", "b"):
        (tmp_path / "p" / c).mkdir(parents=True)
        for i in range(3):
            Image.new("RGB", (60, 40), (200, 40 * i, 10)).save(tmp_path / "p" / c / f"{i}.jpg", exif=exif)
    native = recipe.peek_native_size(str(tmp_path / "p"))
    assert (native.height, native.width, native.channels) == (60, 40, 3)


def test_train_with_only_data_derives_records_and_stops_early(tmp_path):
    data = _folder(tmp_path / "noise")
    out = tmp_path / "run"
    result = CliRunner().invoke(main, ["train", "--data", str(data), "--output", str(out), "--quiet"])
    assert result.exit_code == 0, result.output
    lines = [line for line in result.output.splitlines() if line.startswith("recipe: ")]
    assert len(lines) == 1, result.output
    assert (
        "54 train images, 3 classes, 12x12x1 -> lenet5 at 32x32x1 (12x12x1 images), batch 32, 40 epochs"
        in lines[0]
    )
    assert "early stop after 8 epochs without a lower val_loss" in lines[0]
    assert lines[0].endswith(
        "no flip (small grayscale images: mirrored glyphs are other glyphs); set any of them to override"
    )
    cfg = json.loads((out / "config.json").read_text())["train"]
    assert (cfg["model"], cfg["input_shape"], cfg["batch_size"], cfg["epochs"]) == (
        "lenet5",
        [32, 32, 1],
        32,
        40,
    )
    assert (cfg["patience"], cfg["warmup_epochs"]) == (8, 8.0)
    assert cfg["recipe"]["reason"] == lines[0]
    assert set(cfg["recipe"]["chosen"]) >= {"model", "input_shape", "epochs", "batch_size", "lr", "patience"}
    state = json.loads((out / "state.json").read_text())
    stopped = state["stopped_early"]
    assert state["epoch"] == stopped["epoch"] < 40
    assert stopped["epoch"] - stopped["best_val_loss_epoch"] == 8
    assert "early stop after epoch" in (out / "run.log").read_text()
    assert json.loads((out / "metrics.json").read_text())["epochs"] == stopped["epoch"]
    # --resume keeps the recorded recipe and does not continue a run that stopped early
    again = CliRunner().invoke(
        main, ["train", "--data", str(data), "--output", str(out), "--resume", "--quiet"]
    )
    assert again.exit_code == 0, again.output
    assert "--resume: the recipe recorded in config.json: recipe: " in again.output
    assert "stopped early" in again.output and "not continued" in again.output
    assert json.loads((out / "state.json").read_text())["epoch"] == stopped["epoch"]
    assert json.loads((out / "config.json").read_text())["train"] == cfg
    # nor extend it: --epochs on an early-stopped run says so and points to a new run from its weights
    more = CliRunner().invoke(main, ["train", "--output", str(out), "--resume", "--epochs", "60"])
    assert more.exit_code != 0 and "stopped early" in more.output and f"--weights {out}" in more.output
    assert json.loads((out / "config.json").read_text())["train"] == cfg
    # an option given on resume must match the recorded choice
    bad = CliRunner().invoke(main, ["train", "--output", str(out), "--resume", "--batch-size", "64"])
    assert bad.exit_code != 0 and "--batch-size 64" in bad.output and "32" in bad.output


def test_a_short_run_with_a_given_model_says_what_it_scaled(tmp_path):
    data = _folder(tmp_path / "digits", per_class=12, size=16, classes=2)
    out = tmp_path / "run"
    args = ["train", "--data", str(data), "--output", str(out), "--model", "lenet5", "--epochs", "2"]
    result = CliRunner().invoke(main, [*args, "--quiet"])
    assert result.exit_code == 0, result.output
    line = next(line for line in result.output.splitlines() if line.startswith("recipe: "))
    assert "lenet5 at 32x32x1 (given)" in line and "2 epochs (~2 steps) (given)" in line
    # the images are small grayscale ones: no flip, though --model was given; the rest scaled to 2 of 40
    assert "no flip (small grayscale images" in line and "augmentation x0.05" in line
    short = "a short run (2 of the 40 epochs the recipe gives this data): SGD with momentum instead of AdamW"
    assert f"{short}, lr x5.0 and warm-up scaled to it" in line
    cfg = json.loads((out / "config.json").read_text())["train"]
    assert cfg["augment_overrides"] == {"flip": "none", "shift": round(0.05 * 2 / 40, 4)}
    assert cfg["optimizer"] == "sgd"
    train_images = int(line.split("recipe: ")[1].split(" train images")[0].replace(",", ""))
    assert train_images < cfg["batch_size"]  # a step sees every training image: the lr follows their number
    assert cfg["lr"] == pytest.approx(DEFAULT_LR["sgd"] * train_images / 128 * 5)


def test_first_validation_is_not_at_chance_level(tmp_path):
    """A new mobilenet_v1 after one epoch of ~35 steps validated at chance level, predicting one class:
    its BatchNorm moving variances still held most of their initial 1 while the activations' variances
    are ~0.01. The statistics are now measured under the epoch's weights before each validation."""
    import keras

    from kerascnn import data as kdata
    from kerascnn.train import TrainConfig, train

    (x, y), _ = kdata.load_builtin("mnist")
    pick = np.random.default_rng(0).permutation(len(x))[:1200]
    for i in pick:
        folder = tmp_path / "digits" / str(y[i])
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(x[i]).resize((64, 64)).save(folder / f"{i}.png")
    out = tmp_path / "run"
    cfg = TrainConfig(
        model="mobilenet_v1", model_options={"alpha": 0.5}, input_shape=(64, 64, 1),
        data=str(tmp_path / "digits"), epochs=1, batch_size=32, augment="none", output=str(out), quiet=True,
    )  # fmt: skip
    train(cfg)  # the library call: every field as set (the old defaults: no warm-up, lr 2e-3)
    state = json.loads((out / "state.json").read_text())
    assert state["history"][0]["accuracy"] > 0.15  # the training epoch learns something
    model = keras.saving.load_model(out / "model_last.keras")
    data = kdata.load_dataset(str(tmp_path / "digits"), (64, 64), 1)
    norm = kdata.Normalization((127.5,), (127.5,))
    predicted = model.predict(norm.numpy(data.val.images), verbose=0).argmax(1)
    assert len(set(predicted.tolist())) >= 3, np.bincount(predicted)  # was: one class for everything
    assert state["best"] > 0.15, state["history"]  # chance: 0.1
    images = norm.numpy(data.train.images[::4])
    bn = model.get_layer("conv1_bn")
    inputs = keras.Model(model.inputs, bn.input).predict(images, verbose=0)
    ratio = np.median(inputs.var(axis=(0, 1, 2)) / np.asarray(bn.moving_variance))
    assert 0.5 < ratio < 2, ratio  # the saved statistics are those of the saved weights (was 0.05)


def test_resume_without_output_finds_the_derived_run_folder(tmp_path, monkeypatch):
    """`kerascnn train --data DIR` saves into runs/<the model the recipe chose>; `--resume` with the
    same --data and no --output looks there, not in runs/<the documented default model>."""
    from kerascnn import train as ktrain

    monkeypatch.chdir(tmp_path)
    seen = {}
    monkeypatch.setattr(
        ktrain, "_open_run", lambda cfg, *a, **k: seen.setdefault("model", cfg.model) and 1 / 0
    )
    data = tmp_path / "digits"
    for c in range(2):
        (data / str(c)).mkdir(parents=True)
        for i in range(3):
            Image.fromarray(np.full((20, 20), 40 * i + c, np.uint8)).save(data / str(c) / f"{i}.png")
    with pytest.raises(ZeroDivisionError):
        ktrain.train(ktrain.TrainConfig(data=str(data)), resume=True, given={"data": "--data"})
    assert seen["model"] == "lenet5"


def test_train_help_states_the_recipe_as_its_rules_decide():
    """`kerascnn train --help` names what the recipe's rules choose (a rule that changes changes it)."""
    from click.testing import CliRunner

    from kerascnn import recipe as r
    from kerascnn.best_by import ACCURACY_MIN_VAL
    from kerascnn.cli import main

    text = " ".join(CliRunner().invoke(main, ["train", "--help"], terminal_width=10_000).output.split())
    cases = [r.NativeSize(28, 28, 1, 16), r.NativeSize(32, 32, 3, 16), r.NativeSize(300, 300, 3, 16, 48, 500),
             r.NativeSize(300, 300, 3, 16, None, 50_000)]  # fmt: skip
    for native in cases:
        choice = r.choose_model(native, {})
        assert f"{choice.model} at {choice.input_shape[0]}x" in text or choice.model in text, (native, choice)
    assert (
        f"{r.MEDIUM_MODEL} alpha={r.MEDIUM_OPTIONS['alpha']}" in text and f"up to {r.MEDIUM_MAX_SIDE}" in text
    )
    assert f"the first of {r.TRANSFER_MODELS[0]}, {r.TRANSFER_MODELS[1]}" in text and "linear probe" in text
    assert f"the smallest of {'/'.join(map(str, sorted(r.TRANSFER_SIZES)))} px that holds the images" in text
    assert (
        f"at most {r.SMALL_SET:,d} images" in text and f"more than {r.LOW_DETAIL_SIDE} px of detail" in text
    )
    assert f"val_accuracy on at least {ACCURACY_MIN_VAL} validation images, else val_loss" in text
