"""kerascnn.lab's table and run_experiment: names, budgets, --out, --data, and `kerascnn lab`."""

import json

import pytest

from kerascnn.errors import ConfigError
from kerascnn.lab import EXPERIMENTS, run_experiment


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
