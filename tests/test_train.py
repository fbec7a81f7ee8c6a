"""`kerascnn train` end to end on small subsets of the real Fashion-MNIST."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import keras
import numpy as np
import pytest
from click.testing import CliRunner

from kerascnn.cli import main
from kerascnn.train import RunError, TrainConfig, train

# 2% of Fashion-MNIST's training images; validated and tested on a tenth of each class (600 and 1,000)
SMALL = dict(
    model="lenet5", input_shape=(28, 28, 1), batch_size=64, train_fraction=0.02, eval_fraction=0.1, quiet=True
)


def cli_train_args(out, *extra, fraction="0.02", epochs="1"):
    """`kerascnn train` of a small lenet5 on Fashion-MNIST, as a command line for a subprocess."""
    return [sys.executable, "-m", "kerascnn.cli", "train", "--model", "lenet5", "--input-shape", "28,28,1",
            "--train-fraction", fraction, "--eval-fraction", "0.1", "--epochs", epochs, "--batch-size", "64",
            "--quiet",
            "--output", str(out), *extra]  # fmt: skip


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "lenet"
    train(TrainConfig(**SMALL, epochs=2, output=str(out), augment="standard", label_smoothing=0.1))
    return out


def test_run_folder_has_everything(run_dir):
    for name in (
        "config.json",
        "model_best.keras",
        "model_last.keras",
        "checkpoint.keras",
        "state.json",
        "history.csv",
        "curves.png",
        "confusion.png",
        "metrics.json",
        "run.log",
    ):
        assert (run_dir / name).stat().st_size > 0, name
    assert any((run_dir / "tensorboard").rglob("events.out.tfevents*"))
    assert not any(p.name.endswith(".partial") or ".partial." in p.name for p in run_dir.iterdir())
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["split"] == "test" and metrics["samples"] == 1000  # --eval-fraction 0.1
    assert 0.5 < metrics["top1"] <= metrics["top5"] <= 1.0  # 2 epochs on 1,080 images beat chance by far
    assert len(metrics["per_class_accuracy"]) == 10
    assert np.array(metrics["confusion_matrix"]).sum() == 1000
    history = (run_dir / "history.csv").read_text().splitlines()
    assert len(history) == 3 and history[0].startswith("epoch,")
    config = json.loads((run_dir / "config.json").read_text())["train"]
    assert config["augment"] == "standard" and config["label_smoothing"] == 0.1


def test_saved_model_has_no_augmentation_and_reloads_safely(run_dir):
    model = keras.saving.load_model(run_dir / "model_best.keras", safe_mode=True)
    kinds = {type(layer).__name__ for layer in model.layers}
    assert not any(k.startswith("Random") or k == "GaussianNoise" for k in kinds), kinds
    assert model.input_shape == (None, 28, 28, 1) and model.output_shape == (None, 10)


def test_evaluate_cli_and_tta(run_dir, tmp_path):
    out = tmp_path / "m.json"
    result = CliRunner().invoke(main, ["evaluate", str(run_dir), "--tta", "2", "--json", str(out)])
    assert result.exit_code == 0, result.output
    assert "top-1" in result.output and "Ankle boot" in result.output
    metrics = json.loads(out.read_text())
    assert metrics["tta"] == 2 and metrics["samples"] == 10000


def test_evaluate_refuses_other_classes_naming_both_lists(run_dir, tmp_path):
    """Issue 43: classes are matched by name, as validate does; folders of other names are refused, naming
    both lists and --class-map (they were scored by position: top-1 0.0000, exit 0)."""
    from tests.data.test_data import make_folder

    make_folder(tmp_path / "two", per_class=2)
    result = CliRunner().invoke(main, ["evaluate", str(run_dir), "--data", str(tmp_path / "two")])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "the data's classes (cat, dog) are not the model's (T-shirt/top, Trouser," in result.output
    assert "--class-map DATA_NAME=MODEL_NAME" in result.output
    result = CliRunner().invoke(
        main, ["evaluate", str(run_dir), "--data", str(tmp_path / "two"), "--class-map", "cat=Bag"]
    )
    assert result.exit_code == 1 and "dog is not among the model's" in result.output


def test_evaluate_matches_classes_by_name_in_any_order_or_case(run_dir, tmp_path):
    """The same images under lower-case names in another order score as under the run's names; the
    mapping is said once; --class-map maps names that differ."""
    from tests.data.test_data import make_folder

    classes = ["Trouser", "Bag", "Sneaker"]
    same = make_folder(tmp_path / "same", classes=classes, per_class=3)
    renamed = tmp_path / "renamed"
    renamed.mkdir()
    for cls, new in zip(classes, ["zz_trouser", "bag", "SNEAKER"], strict=True):
        (same / cls).rename(renamed / new)
    make_folder(same, classes=classes, per_class=3)  # the same pictures again under the run's names

    def score(folder, *extra):
        out = tmp_path / f"{folder.name}{len(extra)}.json"
        args = ["evaluate", str(run_dir), "--data", str(folder), "--json", str(out), *extra]
        result = CliRunner().invoke(main, args)
        assert result.exit_code == 0, result.output
        return result.output, json.loads(out.read_text())

    _, want = score(same)
    said, got = score(renamed, "--class-map", "zz_trouser=Trouser")
    note = "mapped as given (zz_trouser -> Trouser) and matched by name ignoring case: SNEAKER -> Sneaker, "
    assert note + "bag -> Bag" in said, said
    assert got["top1"] == want["top1"] and got["per_class_accuracy"] == want["per_class_accuracy"]
    assert got["samples"] == 9 and got["class_names"][:2] == ["T-shirt/top", "Trouser"]


def test_evaluate_scores_a_folder_of_class_folders_whole(run_dir, tmp_path):
    """A folder the run never saw is scored whole (not the 10% slice training would hold out of it), and
    the output says how many images and from where."""
    from tests.data.test_data import make_folder

    classes = json.loads((run_dir / "state.json").read_text())["class_names"]
    classes[0] = "T-shirt"  # "T-shirt/top" cannot be a folder's name: mapped by --class-map
    folder = make_folder(tmp_path / "mine", classes=classes, per_class=3)
    out = tmp_path / "m.json"
    args = [
        "evaluate",
        str(run_dir),
        "--data",
        str(folder),
        "--json",
        str(out),
        "--class-map",
        "T-shirt=T-shirt/top",
    ]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert "matched by name" in result.output  # the folders list alphabetically, the model's order is not
    assert f"30 images: every image of {folder}" in result.output
    assert json.loads(out.read_text())["samples"] == 30


def test_existing_run_folder_is_not_overwritten(run_dir):
    with pytest.raises(RunError, match="already holds a run; pass --resume"):
        train(TrainConfig(**SMALL, epochs=1, output=str(run_dir)))


def test_bad_data_writes_nothing(tmp_path):
    from kerascnn.data import DataError
    from tests.data.test_data import make_folder

    data = make_folder(tmp_path / "data")
    (data / "empty").mkdir()
    out = tmp_path / "out"
    with pytest.raises(DataError, match="has no readable image"):
        train(TrainConfig(model="lenet5", data=str(data), output=str(out), epochs=1, input_shape=(28, 28, 1)))
    assert not out.exists()
    result = CliRunner().invoke(main, ["train", "--model", "lenet55", "--output", str(out)])
    assert result.exit_code != 0 and "Did you mean: lenet5" in result.output
    assert not out.exists()


def test_nan_loss_stops_with_clear_message(tmp_path):
    out = tmp_path / "nan"
    with pytest.raises(RunError, match="training loss became (NaN|inf) in epoch 1.*nothing to resume"):
        train(TrainConfig(**SMALL, epochs=2, optimizer="sgd", lr=1e12, schedule="constant", output=str(out)))
    state_file = out / "state.json"
    assert not state_file.exists() or json.loads(state_file.read_text())["epoch"] == 0


def test_resume_after_kill_loses_no_epoch(tmp_path):
    out = tmp_path / "killed"
    args = cli_train_args(out, fraction="0.3", epochs="4")
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    state = out / "state.json"
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        if state.exists() and json.loads(state.read_text())["epoch"] >= 1:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the run ended before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    killed_at = json.loads(state.read_text())["epoch"]
    assert 1 <= killed_at < 4

    subprocess.run(args + ["--resume"], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    final = json.loads(state.read_text())
    assert final["epoch"] == 4
    assert [row["epoch"] for row in final["history"]] == [0, 1, 2, 3]
    model = keras.saving.load_model(out / "checkpoint.keras")
    steps = int(np.ceil(16200 / 64))
    assert int(model.optimizer.iterations.numpy()) == 4 * steps  # optimizer state carried over
    assert "resuming lenet5" in (out / "run.log").read_text()


def test_googlenet_trains_with_aux_heads_and_saves_one_output(tmp_path):
    from tests.data.test_data import make_folder

    out = tmp_path / "googlenet"
    train(  # a small folder: with fashion_mnist, its 6,000 val and 10,000 test images took 4 of 5 minutes
        TrainConfig(
            model="googlenet",
            data=str(make_folder(tmp_path / "data", per_class=20)),
            input_shape=(65, 65, 1),
            batch_size=32,
            epochs=1,
            output=str(out),
            quiet=True,
        )
    )
    ckpt = keras.saving.load_model(out / "checkpoint.keras", compile=False)
    assert len(ckpt.outputs) == 3
    best = keras.saving.load_model(out / "model_best.keras")
    assert len(best.outputs) == 1 and not any(layer.name.startswith("aux") for layer in best.layers)


def test_imagenet_weights_offline_names_the_file_and_writes_nothing(tmp_path, monkeypatch):
    from tests.data.test_data import make_folder

    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras_home"))  # an empty cache

    data = make_folder(tmp_path / "data", per_class=3)
    out = tmp_path / "out"
    cfg = TrainConfig(
        model="mobilenet_v2",
        data=str(data),
        input_shape=(96, 96, 3),
        weights="imagenet",
        epochs=1,
        output=str(out),
    )
    wanted = (
        r"needs the file mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1\.0_96_no_top\.h5 in the Keras "
        r"cache.*`kerascnn weights fetch mobilenet_v2 --alpha 1 --input-size 96 --out DIR`.*weights add DIR"
    )
    with pytest.raises(RuntimeError, match=wanted):  # offline: the download fails (or is off)
        train(cfg)
    assert not out.exists()
    with pytest.raises(ValueError, match="only the keras.applications backbones"):
        train(TrainConfig(model="resnet20", data=str(data), weights="imagenet", epochs=1, output=str(out)))


def test_transfer_from_run_folder_freezes_then_fine_tunes(run_dir, tmp_path):
    out = tmp_path / "ft"
    train(
        TrainConfig(
            **SMALL,
            data="mnist",
            epochs=1,
            fine_tune_epochs=1,
            freeze_backbone=True,
            weights=str(run_dir),
            output=str(out),
        )
    )
    log = (out / "run.log").read_text()
    assert "layers copied, new: f6, predictions" in log
    assert "phase train: 1 epochs at lr 0.002, 11,014 trainable parameters" in log  # f6 + predictions
    assert "phase fine_tune: 1 epochs at lr 0.0002, 61,706 trainable parameters" in log
    source = keras.saving.load_model(run_dir / "model_best.keras")
    tuned = keras.saving.load_model(out / "model_best.keras")
    assert not np.array_equal(
        source.get_layer("c1_conv").get_weights()[0], tuned.get_layer("c1_conv").get_weights()[0]
    )  # fine-tuned


def test_transfer_from_fashion_mnist_beats_scratch_on_1_percent_of_mnist(tmp_path):
    """Pretrain a small BN network on Fashion-MNIST, transfer it to 1% of MNIST (600 images): it must
    beat the same network trained from scratch on those 600 images, on 1,000 MNIST test images (a tenth
    of each class, --eval-fraction 0.1). The whole network is fine-tuned (BatchNorm in training mode
    adapts its statistics to the new domain; a frozen BN keeps Fashion's and loses to scratch).
    4 epochs, where the pretrained start is far ahead: 82.3% against 70.4% at seed 0, 9 to 12 points
    over seeds 0-2, a gap that the noise of 1,000 test images (about 1.5 points) cannot close."""
    net = dict(
        model="wrn", model_options={"depth": 10, "width": 1}, input_shape=(28, 28, 1), quiet=True,
        eval_fraction=0.1,
    )  # fmt: skip
    pre = tmp_path / "pretrained"
    train(
        TrainConfig(**net, data="fashion_mnist", train_fraction=0.2, epochs=2, batch_size=64, output=str(pre))
    )
    few = dict(net, data="mnist", train_fraction=0.01, epochs=4, batch_size=32, augment="none")
    train(TrainConfig(**few, output=str(tmp_path / "scratch")))
    train(TrainConfig(**few, weights=str(pre), output=str(tmp_path / "transfer")))
    scratch, transfer = (
        json.loads((tmp_path / r / "metrics.json").read_text()) for r in ("scratch", "transfer")
    )
    assert scratch["samples"] == transfer["samples"] == 1000
    assert "layers copied" in (tmp_path / "transfer" / "run.log").read_text()
    assert transfer["top1"] > scratch["top1"] + 0.01, (transfer["top1"], scratch["top1"])


def test_mixed_precision_trains(tmp_path):
    out = tmp_path / "bf16"
    # a separate process: the global dtype policy must not leak into other tests
    subprocess.run(
        cli_train_args(out, "--precision", "mixed_bfloat16", fraction="0.01"),
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    assert json.loads((out / "metrics.json").read_text())["top1"] > 0.3
    assert "mixed_bfloat16" in (out / "run.log").read_text()
    # the run report's Grad-CAM of a bfloat16 model (its gradient was None: the cast maps were not on the
    # path to the scores)
    assert "run report not written" not in (out / "run.log").read_text() and (out / "report.html").exists()


@pytest.mark.parametrize("balance, mixup", [("weights", 0.0), ("oversample", 0.4)])
def test_balancing_and_mixup_train(tmp_path, balance, mixup):
    out = tmp_path / balance
    train(TrainConfig(**SMALL, epochs=1, balance=balance, mixup=mixup, output=str(out)))
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["top1"] > 0.3
    assert json.loads((out / "config.json").read_text())["train"]["balance"] == balance


def test_cli_model_kwargs_reach_the_builder(tmp_path):
    out = tmp_path / "r20b"
    result = CliRunner().invoke(
        main,
        [
            "train",
            "--model",
            "resnet20",
            "--model-kwargs",
            "shortcut=B",
            "--input-shape",
            "32,32,1",
            "--train-fraction",
            "0.005",
            "--eval-fraction",
            "0.05",
            "--epochs",
            "1",
            "--batch-size",
            "128",
            "--quiet",
            "--output",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    model = keras.saving.load_model(out / "model_best.keras")
    assert any(layer.name == "stage2_block1_0_conv" for layer in model.layers)  # the B projection
    bad = CliRunner().invoke(main, ["train", "--model-kwargs", "alpha", "--output", str(tmp_path / "x")])
    assert bad.exit_code != 0 and "expected KEY=VALUE" in bad.output


def test_match_classes_rules():
    from kerascnn.evaluate import ClassMatchError, match_classes

    index, note = match_classes(["a", "b", "c"], ["c", "a"], "the model")  # a test folder of two classes
    assert index.tolist() == [2, 0] and "order differs" in note
    assert match_classes(["0", "1"], ["cat", "dog"], "the model")[0].tolist() == [0, 1]  # an unnamed model
    assert match_classes(["a", "b"], ["a", "b"], "the model")[1] is None
    with pytest.raises(ClassMatchError, match=r"classes \(x, y, z\) are not the model.s \(a, b, c\)"):
        match_classes(["a", "b", "c"], ["x", "y", "z"], "the model")
    with pytest.raises(ClassMatchError, match="--class-map: w is not a class of the data"):
        match_classes(["a", "b"], ["x", "y"], "the model", {"w": "a"})
    with pytest.raises(ClassMatchError):  # two of the data's classes onto one of the model's
        match_classes(["a", "b"], ["x", "y"], "the model", {"x": "a", "y": "a"})
