"""The degradation experiment at the suite's budget, and its training-error logger."""

import json

from kerascnn.lab import run_experiment


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
    from kerascnn.lab.degradation import _ErrorCurve

    curve = _ErrorCurve(2)
    curve.on_epoch_begin(0)
    for batch, running in enumerate([1.0, 1.0, 2 / 3, 0.5]):  # batch accuracies 1, 1, 0, 0
        curve.on_train_batch_end(batch, {"accuracy": running})
    curve.on_epoch_end(0, {"accuracy": 0.5})
    assert curve.points == [[2, 0.0], [4, 1.0]] and curve.last_epoch_error == 0.5
