"""The receptive-field experiment in quick mode (seconds)."""

from fractions import Fraction

import pytest

from kerascnn import models
from kerascnn.analysis import analyze, conv_params, receptive_field

from .common import check_files, run_quick


@pytest.fixture(scope="module")
def rf_run(tmp_path_factory):
    return run_quick("receptive-field", tmp_path_factory)


def test_receptive_field_files_and_verdict(rf_run):
    out, result, said = rf_run
    check_files(out, "receptive-field", result, said)


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
