"""Tests for kerascnn.lab: the receptive-field and separable experiments in quick mode (seconds each)."""

import json
from fractions import Fraction

import numpy as np
import pytest

from kerascnn import models
from kerascnn.analysis import (
    analyze,
    conv_macs,
    conv_params,
    receptive_field,
    separable_conv_macs,
    separable_conv_params,
)
from kerascnn.errors import ConfigError
from kerascnn.lab import EXPERIMENTS, run_experiment

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _run(name, tmp_path_factory):
    out = tmp_path_factory.mktemp(name)
    said = []
    result = run_experiment(name, out, quick=True, say=said.append)
    return out, result, said


@pytest.fixture(scope="module")
def rf_run(tmp_path_factory):
    return _run("receptive-field", tmp_path_factory)


@pytest.fixture(scope="module")
def separable_run(tmp_path_factory):
    return _run("separable", tmp_path_factory)


def _check_files(out, name, result, said):
    data = json.loads((out / f"{name}.json").read_text())
    assert data == result
    assert (out / f"{name}.png").read_bytes()[:8] == PNG_SIGNATURE
    assert not [p.name for p in out.iterdir() if p.name.startswith(".")]  # no temporary files left
    assert said == [result["verdict"]]
    assert result["verdict"].startswith(f"{name}: ")
    assert result["budget"]["mode"] == "quick"
    assert result["budget"]["what"]


# ------------------------------------------------------------------------------------ run_experiment


def test_experiments_are_registered_in_order():
    assert list(EXPERIMENTS)[:3] == ["receptive-field", "separable", "gap-shift"]
    assert all(callable(fn) for fn in EXPERIMENTS.values())


def test_unknown_experiment_lists_the_valid_names(tmp_path):
    with pytest.raises(ConfigError) as info:
        run_experiment("foo", tmp_path / "out")
    assert str(info.value) == f"unknown experiment 'foo'; choose one of: {', '.join(EXPERIMENTS)}"
    assert "receptive-field, separable" in str(info.value)
    assert not (tmp_path / "out").exists()


def test_a_budget_is_checked_before_anything_is_written(tmp_path):
    with pytest.raises(ConfigError, match="separable has no budget to override; these do: gap-shift"):
        run_experiment("separable", tmp_path / "out", budget={"steps": 1})
    with pytest.raises(ConfigError, match=r"transfer: unknown budget key\(s\) step; its keys: pretrain_st"):
        run_experiment("transfer", tmp_path / "out", budget={"step": 1})
    assert not (tmp_path / "out").exists()


def test_out_must_be_a_folder(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigError, match="--out"):
        run_experiment("separable", tmp_path / "file", quick=True)


@pytest.mark.parametrize("name", ["receptive-field", "separable"])
def test_experiments_without_data_refuse_data(name, tmp_path):
    with pytest.raises(ConfigError, match="--data"):
        run_experiment(name, tmp_path, quick=True, data="mnist")
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------------------------ receptive-field


def test_receptive_field_files_and_verdict(rf_run):
    out, result, said = rf_run
    _check_files(out, "receptive-field", result, said)


def test_conv_stacks_measured_rf_equals_theory(rf_run):
    stacks = rf_run[1]["stacks"]
    assert receptive_field([3, 3, 3], [1, 1, 1]) == (7, 1)
    for key in ("3x3x3", "7x7"):
        assert stacks[key]["theoretical"] == 7
        assert stacks[key]["empirical"] == [7, 7]


def test_conv_stacks_params_match_formulas(rf_run):
    result = rf_run[1]
    c, stacks = result["channels"], result["stacks"]
    assert result["use_bias"] is False
    assert stacks["3x3x3"]["params"] == 3 * conv_params(3, c, c, use_bias=False) == 27 * c * c
    assert stacks["7x7"]["params"] == conv_params(7, c, c, use_bias=False) == 49 * c * c
    assert stacks["3x3x3"]["params"] < stacks["7x7"]["params"]
    assert stacks["3x3x3"]["params_with_bias"] == 3 * conv_params(3, c, c)
    assert Fraction(result["params_ratio_fraction"]) == Fraction(27, 49)
    assert result["params_ratio"] == pytest.approx(27 / 49)


def test_zoo_theoretical_rf_matches_analysis(rf_run):
    zoo = rf_run[1]["zoo"]
    model = models.build(zoo["model"], input_shape=tuple(zoo["input_shape"]), include_top=False)
    analysis = analyze(model)
    assert zoo["stages_measured"] == len(zoo["layers"]) >= 3
    assert [e["stage"] for e in zoo["layers"]] == list(range(1, len(zoo["layers"]) + 1))
    previous = 0
    for entry in zoo["layers"]:
        row = analysis.row(entry["layer"])
        assert row.class_name == "Conv2D"
        assert (entry["theoretical"], entry["jump"]) == (row.receptive_field, row.jump)
        assert entry["theoretical"] > previous  # one stage end per stage, deeper and wider
        previous = entry["theoretical"]
        # The measured field never exceeds the theoretical one, and the input was large enough.
        assert not entry["touches_border"]
        assert all(1 <= e <= entry["theoretical"] for e in entry["empirical"])
    # The first stage ends before any pooling: a plain conv stack, measured exactly.
    first = zoo["layers"][0]
    assert first["empirical"] == [first["theoretical"]] * 2


# ------------------------------------------------------------------------------------ separable


def test_separable_files_and_verdict(separable_run):
    out, result, said = separable_run
    _check_files(out, "separable", result, said)


def test_separable_counts_match_formulas(separable_run):
    rows = separable_run[1]["rows"]
    assert [r["channels"] for r in rows] == separable_run[1]["budget"]["widths"]
    assert len(rows) >= 3
    for r in rows:
        c, n = r["channels"], r["size"]
        std, sep = r["standard"], r["separable"]
        assert std["params"] == conv_params(3, c, c, use_bias=False) == 9 * c * c
        assert sep["params"] == separable_conv_params(3, c, c, use_bias=False) == 9 * c + c * c
        assert sep["params"] == sep["params_depthwise"] + sep["params_pointwise"]
        assert std["macs"] == conv_macs(n, n, 3, c, c)
        assert sep["macs"] == separable_conv_macs(n, n, 3, c, c)
        formula = 1 / c + 1 / 9
        assert r["formula_ratio"] == pytest.approx(formula)
        assert r["ratio_params"] == pytest.approx(formula) and r["ratio_params"] < 1
        assert r["ratio_macs"] == pytest.approx(formula) and r["ratio_macs"] < 1
        # Latency is measured on a shared CPU: only its sanity is checked, not its value.
        assert std["latency_ms"] > 0 and sep["latency_ms"] > 0
        assert r["ratio_latency"] == pytest.approx(sep["latency_ms"] / std["latency_ms"], rel=1e-2)


def test_lab_cli_runs_an_experiment_and_names_bad_ones(tmp_path):
    from click.testing import CliRunner

    from kerascnn.cli import main

    out = tmp_path / "lab"
    result = CliRunner().invoke(main, ["lab", "separable", "--out", str(out), "--quick"])
    assert result.exit_code == 0, result.output
    assert result.output.startswith("separable: ") and f"{out / 'separable'}.json" in result.output
    assert json.loads((out / "separable.json").read_text())["budget"]["mode"] == "quick"
    bad = CliRunner().invoke(main, ["lab", "degradaton", "--out", str(out)])
    assert (
        bad.exit_code != 0 and "unknown experiment 'degradaton'; choose one of: receptive-field" in bad.output
    )
    assert "Traceback" not in bad.output


# ------------------------------------------------------------------------------------ gap-shift

TINY_GAP = {"train_images": 2000, "epochs": 3, "test_images": 300, "max_shift": 8, "step": 4}


def test_gap_head_tolerates_shifts_that_break_a_flatten_head(tmp_path):
    """At a budget small enough for the suite (2,000 Fashion-MNIST images, 3 epochs), the claim shows:
    at the largest shift the GAP head is above the Flatten head, which is best on centred images."""
    said = []
    result = run_experiment("gap-shift", tmp_path, quick=True, say=said.append, budget=TINY_GAP)
    assert json.loads((tmp_path / "gap-shift.json").read_text()) == result
    assert (tmp_path / "gap-shift.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    acc = result["accuracy"]
    assert set(acc) == {"flatten", "gap"} and list(acc["gap"]) == ["0", "4", "8"]
    assert acc["gap"]["8"] > acc["flatten"]["8"] + 0.2
    assert acc["flatten"]["0"] > acc["flatten"]["8"] + 0.3  # the Flatten head breaks when shifted
    assert acc["gap"]["0"] - acc["gap"]["8"] < 0.15  # the GAP head does not
    assert result["canvas"] == [44, 44] and result["budget"]["train_images"] == 2000
    assert said == [result["verdict"]] and "GAP tolerates the shift" in said[0]


def test_gap_shift_needs_labeled_data(tmp_path):
    from PIL import Image

    flat = tmp_path / "flat"
    flat.mkdir()
    for i in range(6):
        Image.new("L", (28, 28), i * 40).save(flat / f"{i}.png")
    with pytest.raises(ConfigError, match="gap-shift needs labeled images"):
        run_experiment("gap-shift", tmp_path / "out", quick=True, data=str(flat), budget=TINY_GAP)


# ------------------------------------------------------------------------------------ degradation


def test_degradation_trains_the_four_nets_with_one_recipe(tmp_path):
    """The suite's budget (256 images, 2 steps per net) checks the files and their shape only: the
    claim needs the --quick budget (BENCHMARKS.md has its verdict)."""
    budget = {"train_images": 256, "epochs": 1, "batch": 128, "log_every": 1}
    result = run_experiment("degradation", tmp_path, quick=True, say=lambda _: None, budget=budget)
    assert json.loads((tmp_path / "degradation.json").read_text()) == result
    assert (tmp_path / "degradation.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    nets = ["plain20", "plain56", "resnet20", "resnet56"]
    assert list(result["final_train_error"]) == nets and list(result["curves"]) == nets
    for name in nets:
        assert 0 <= result["final_train_error"][name] <= 1
        assert [step for step, _ in result["curves"][name]] == [1, 2]
    assert result["budget"]["steps"] == 2 and result["budget"]["mode"] == "quick"
    assert result["verdict"].startswith("degradation: final training error plain20 ")


def test_error_curve_takes_each_interval_out_of_the_epochs_running_mean():
    from kerascnn.lab import _ErrorCurve

    curve = _ErrorCurve(2)
    curve.on_epoch_begin(0)
    for batch, running in enumerate([1.0, 1.0, 2 / 3, 0.5]):  # batch accuracies 1, 1, 0, 0
        curve.on_train_batch_end(batch, {"accuracy": running})
    curve.on_epoch_end(0, {"accuracy": 0.5})
    assert curve.points == [[2, 0.0], [4, 1.0]] and curve.last_epoch_error == 0.5


# ------------------------------------------------------------------------------------ augmentation


def test_augmentation_compares_three_recipes_per_share_of_the_data(tmp_path):
    """The suite's budget (2 shares, 40 steps per run) checks the files and their shape; the claim's
    figures come from --quick (BENCHMARKS.md)."""
    budget = {"fractions": [0.01, 0.05], "steps": 40, "test_images": 300}
    result = run_experiment("augmentation", tmp_path, quick=True, say=lambda _: None, budget=budget)
    assert json.loads((tmp_path / "augmentation.json").read_text()) == result
    assert (tmp_path / "augmentation.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert list(result["accuracy"]) == ["1%", "5%"] and result["train_images"] == {"1%": 600, "5%": 3000}
    for share in result["accuracy"].values():
        assert list(share) == ["none", "augmented", "mixup"]
        assert all(0.1 < a <= 1 for a in share.values())  # above chance (10 classes) after 40 steps
    assert result["verdict"].startswith(
        "augmentation: test accuracy without / with augmentation / with mixup"
    )
    for variant in ("augmented", "mixup"):
        assert result["gains"][variant] == {
            k: round(v[variant] - v["none"], 4) for k, v in result["accuracy"].items()
        }


# ------------------------------------------------------------------------------------ transfer


def test_transfer_compares_scratch_fine_tuned_and_frozen(tmp_path):
    """The suite's budget (10 pretraining steps, 10 steps per run tested after 5 and 10, eagerly) checks
    the files, the two tasks, the curves and that only the head trains when frozen; the claim's figures
    come from --quick (BENCHMARKS.md)."""
    budget = {"pretrain_steps": 10, "steps": 10, "test_images": 300, "eval_every": 5}
    result = run_experiment("transfer", tmp_path, quick=True, say=lambda _: None, budget=budget)
    assert json.loads((tmp_path / "transfer.json").read_text()) == result
    assert (tmp_path / "transfer.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(result["task_a"]) == len(result["task_b"]) == 5 and not set(result["task_a"]) & set(
        result["task_b"]
    )
    assert list(result["accuracy"]) == ["scratch", "fine-tuned", "frozen"]
    for variant, accuracy in result["accuracy"].items():
        assert [step for step, _ in result["curves"][variant]] == [5, 10]
        assert result["curves"][variant][-1][1] == accuracy
    assert result["steps_to_scratch_accuracy"]["scratch"] in (5, 10) and 0 < result["noise_margin"] < 0.1
    assert result["task_b_train_images"] == 300  # 1% of Fashion-MNIST's 30,000 task-B images
    params = result["trainable_parameters"]
    assert params["frozen"] == 64 * 5 + 5 < params["scratch"] == params["fine-tuned"]  # ResNet-20's head
    assert 0 <= result["pretrained_accuracy_on_a"] <= 1  # (10 steps: BatchNorm's averages not settled)


def test_transfer_copies_every_layer_but_the_head():
    from kerascnn.models import build, transfer_weights

    source = build("resnet20", input_shape=(16, 16, 1), num_classes=5)
    target = build("resnet20", input_shape=(16, 16, 1), num_classes=3)
    copied = transfer_weights(target, source, skip={"predictions"})
    assert copied == [layer.name for layer in target.layers if layer.weights and layer.name != "predictions"]
    for layer in target.layers:
        theirs_all = source.get_layer(layer.name).get_weights()
        for mine, theirs in zip(layer.get_weights(), theirs_all, strict=False):
            same = mine.shape == theirs.shape and np.array_equal(mine, theirs)
            assert same == (layer.name != "predictions"), layer.name
