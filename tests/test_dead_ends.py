"""Issue 43, item 9: every dead end has a way out in its message, and the messages name the real cause:
a diverged run restarts in place with --overwrite (nothing of it kept), a folder of other files is never
called a run (nor deleted), a bad --weights file is named for what it is, a truncated checkpoint is
"damaged" (not "File not found"), a batch larger than the data does not scale the learning rate past it.
The folders' sums before and after show what was (not) written."""

from __future__ import annotations

import hashlib
import json

import keras
import pytest
from click.testing import CliRunner

from kerascnn.cli import main
from kerascnn.train import RunError, TrainConfig, train

TINY = dict(  # 270 Fashion-MNIST images, validated and tested on 600 and 1,000
    model="lenet5", input_shape=(28, 28, 1), batch_size=64, train_fraction=0.005, eval_fraction=0.1,
    quiet=True,
)  # fmt: skip
ARGS = ["train", "--model", "lenet5", "--input-shape", "28,28,1", "--train-fraction", "0.005",
        "--eval-fraction", "0.1", "--epochs", "1", "--batch-size", "64", "--quiet"]  # fmt: skip


def tree_sum(folder) -> str:
    digest = hashlib.sha256()
    for p in sorted(folder.rglob("*")):
        digest.update(str(p.relative_to(folder)).encode())
        if p.is_file() and p.name != ".kerascnn.lock":
            digest.update(p.read_bytes())
    return digest.hexdigest()


def test_a_diverged_run_restarts_in_place_with_overwrite(tmp_path):
    out = tmp_path / "run"
    diverging = [*ARGS, "--optimizer", "sgd", "--lr", "1e30", "--schedule", "constant", "--output", str(out)]
    result = CliRunner().invoke(main, diverging)
    assert result.exit_code == 1 and "start again in place with --overwrite" in result.output, result.output
    result = CliRunner().invoke(main, diverging)  # the same command again: the way out is named
    assert result.exit_code == 1 and "--overwrite to start it again in place" in result.output
    result = CliRunner().invoke(
        main, [*ARGS[:-3], "--batch-size", "32", "--quiet", "--output", str(out), "--resume"]
    )
    assert result.exit_code == 1 and "nothing is lost by starting it again" in result.output, result.output
    assert "--weights" not in result.output  # the folder holds no model to start from
    result = CliRunner().invoke(main, [*ARGS, "--output", str(out), "--resume", "--overwrite"])
    assert result.exit_code == 1 and "give one of them" in result.output
    result = CliRunner().invoke(main, [*ARGS, "--output", str(out), "--overwrite"])
    assert result.exit_code == 0, result.output
    assert "1e+30" not in (out / "run.log").read_text()  # nothing of the failed run is kept
    assert json.loads((out / "config.json").read_text())["train"]["lr"] != 1e30
    assert json.loads((out / "state.json").read_text())["epoch"] == 1


def test_a_folder_of_other_files_is_never_called_a_run_nor_deleted(tmp_path):
    out = tmp_path / "photos"
    out.mkdir()
    (out / "holiday.jpg").write_bytes(b"not really a jpeg")
    before = tree_sum(out)
    other = "holds files that are not a kerascnn run"
    for extra, words in (([], f"{other} (holiday.jpg)"), (["--resume"], f"{other} (no config.json)"),
                         (["--overwrite"], f"{other} (holiday.jpg)")):  # fmt: skip
        result = CliRunner().invoke(main, [*ARGS, "--output", str(out), *extra])
        assert result.exit_code == 1 and words in result.output, result.output
        assert "already holds a run" not in result.output
    assert tree_sum(out) == before


def test_bad_weights_files_are_named_for_what_they_are(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for name in ("notes.txt", "w.keras", "w.weights.h5"):
        (tmp_path / name).write_text("a text file\n")
    before = tree_sum(tmp_path)
    for name, words in (("notes.txt", "not a model file (.keras or .h5)"),
                        ("w.keras", "not a .keras model (a .keras file is a zip archive; truncated?)"),
                        ("w.weights.h5", "a .weights.h5 file loads only into the model it was")):  # fmt: skip
        result = CliRunner().invoke(main, [*ARGS, "--output", "run", "--weights", name])
        assert result.exit_code == 1 and f"--weights {name}: " in result.output and words in result.output
        assert "Traceback" not in result.output and "File not found" not in result.output
    assert tree_sum(tmp_path) == before  # no run folder was started


def test_a_weights_h5_file_of_the_same_model_loads(tmp_path):
    first = train(TrainConfig(**TINY, epochs=1, output=str(tmp_path / "first")))
    model = keras.saving.load_model(first / "model_best.keras")
    model.save_weights(tmp_path / "lenet.weights.h5")
    out = tmp_path / "second"
    train(TrainConfig(**TINY, epochs=1, output=str(out), weights=str(tmp_path / "lenet.weights.h5")))
    assert "every layer's weights loaded" in (out / "run.log").read_text()
    # a truncated checkpoint: named damaged, with the way out; nothing in the folder changes
    checkpoint = first / "checkpoint.keras"
    checkpoint.write_bytes(checkpoint.read_bytes()[:500])
    before = tree_sum(first)
    with pytest.raises(RunError, match=r"checkpoint.keras is damaged \(not a whole .keras zip") as info:
        train(TrainConfig(**TINY, epochs=2, output=str(first)), resume=True)
    assert "--weights" in str(info.value) and "model_last.keras" in str(info.value)
    assert tree_sum(first) == before


def test_a_batch_beyond_the_data_does_not_scale_the_lr_past_it():
    from kerascnn.recipe import choose_schedule

    common = dict(epochs=5, optimizer="sgd", lr=None, warmup_epochs=0, schedule="constant", patience=0)
    huge = choose_schedule(
        21, batch_size=100_000, given={"batch_size": "--batch-size", "epochs": "-e"}, **common
    )
    whole = choose_schedule(21, batch_size=21, given={"batch_size": "--batch-size", "epochs": "-e"}, **common)
    assert huge.lr == whole.lr < 0.1  # 21 images a step, as the batch of 21: not lr 195


def test_no_aug_for_names_the_option_and_the_classes():
    from kerascnn import augment as aug

    with pytest.raises(ValueError, match=r"--no-aug-for flip=9: class 9 is not one of the data's 3 classes"):
        aug.Augmenter(aug.AugmentConfig(flip="horizontal", exclude={"flip": [9]}), num_classes=3)


def test_a_module_tfds_lacks_is_named_not_the_internet(monkeypatch, tmp_path):
    tfds = pytest.importorskip("tensorflow_datasets")
    from kerascnn import data as kdata

    def load(*args, **kwargs):
        raise ModuleNotFoundError("No module named 'importlib_resources'", name="importlib_resources")

    monkeypatch.setattr(tfds, "load", load)
    with tfds.testing.mock_data(num_examples=4), pytest.raises(kdata.DataError) as info:
        kdata.load_dataset("tfds:beans", (8, 8), 1)
    assert "needs the Python module 'importlib_resources'" in str(info.value)
    assert "pip install importlib-resources" in str(info.value) and "internet" not in str(info.value)
