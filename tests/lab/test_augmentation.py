"""The augmentation experiment at the suite's budget."""

import json

from kerascnn.lab import run_experiment


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
