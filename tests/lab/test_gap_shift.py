"""The gap-shift experiment at a budget small enough for the suite."""

import json

import pytest

from kerascnn.errors import ConfigError
from kerascnn.lab import run_experiment

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
