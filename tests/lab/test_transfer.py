"""The transfer experiment at the suite's budget, and the weight copy it relies on."""

import json

import numpy as np

from kerascnn.lab import run_experiment


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
