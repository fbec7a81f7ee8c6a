"""Grad-CAM (kerascnn.explain, `kerascnn explain`): it localizes the object that decides the class, works
on every zoo family and a user's own model, writes its files, and says clearly what it cannot do."""

from __future__ import annotations

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from kerascnn import explain
from kerascnn.cli import main

CANVAS, OBJECT, CLASSES = 32, 8, 3


def _pattern(label: int) -> np.ndarray:
    """The 8x8 object of each class: horizontal stripes, vertical stripes, a diagonal cross. Each class
    has its own positive evidence (a class told by the absence of another's, a filled vs a hollow
    square, is not localized by Grad-CAM: nothing in the image raises its score)."""
    obj = np.zeros((OBJECT, OBJECT), np.uint8)
    if label == 0:
        obj[0::3] = 255
    elif label == 1:
        obj[:, 0::3] = 255
    else:
        idx = np.arange(OBJECT)
        obj[idx, idx] = obj[idx, OBJECT - 1 - idx] = 255
    return obj


def _pasted(n: int, seed: int):
    """Blank canvases with one small object at a random place; only the object decides the class.
    Returns (uint8 images, labels, boxes)."""
    rng = np.random.default_rng(seed)
    images = np.zeros((n, CANVAS, CANVAS, 1), np.uint8)
    labels = rng.integers(0, CLASSES, n)
    boxes = []
    for i in range(n):
        y, x = (int(v) for v in rng.integers(0, CANVAS - OBJECT + 1, 2))
        images[i, y : y + OBJECT, x : x + OBJECT, 0] = _pattern(int(labels[i]))
        boxes.append((y, x, y + OBJECT, x + OBJECT))
    return images, labels, boxes


def _small_cnn():
    import keras

    keras.utils.set_random_seed(0)
    inputs = keras.Input((CANVAS, CANVAS, 1))
    x = keras.layers.Conv2D(16, 3, padding="same", activation="relu")(inputs)
    x = keras.layers.Conv2D(16, 3, padding="same", activation="relu")(x)
    x = keras.layers.MaxPooling2D()(x)
    x = keras.layers.Conv2D(32, 3, padding="same", activation="relu")(x)
    x = keras.layers.Conv2D(32, 3, padding="same", activation="relu", name="last_conv")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(CLASSES, activation="softmax", name="scores")(x)
    return keras.Model(inputs, outputs, name="pasted_cnn")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A user's own model (not from the zoo), trained on pasted objects, saved as a .keras file."""
    import keras

    images, labels, _ = _pasted(1200, seed=0)
    model = _small_cnn()
    model.compile(keras.optimizers.Adam(3e-3), "sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit((images - 127.5) / 127.5, labels, epochs=6, batch_size=64, verbose=0)
    path = tmp_path_factory.mktemp("model") / "pasted.keras"
    model.save(path)
    return model, path


def test_gradcam_localizes_the_object_that_decides_the_class(trained):
    model, _ = trained
    images, labels, boxes = _pasted(100, seed=1)
    x = (images - 127.5) / 127.5
    cams, outputs, classes = explain.gradcam(model, x)
    assert (outputs.argmax(1) == labels).mean() >= 0.95  # the model has learned the task
    assert cams.shape == (100, CANVAS, CANVAS) and cams.min() >= 0 and cams.max() <= 1
    inside = 0
    for cam, (y0, x0, y1, x1) in zip(cams, boxes, strict=True):
        row, col = np.unravel_index(np.argmax(cam), cam.shape)
        inside += int(y0 <= row < y1 and x0 <= col < x1)
    assert inside >= 80, f"the heatmap's maximum fell inside the object for {inside} of 100 images"
    # the explained class is the predicted one unless another is asked for
    assert (classes == outputs.argmax(1)).all()
    _, _, other = explain.gradcam(model, x[:4], class_index=1)
    assert (other == 1).all()


def test_explain_cli_writes_heatmaps_and_feature_maps(trained, tmp_path):
    _, model_path = trained
    images, _, _ = _pasted(2, seed=2)
    files = []
    for i, img in enumerate(images):
        folder = tmp_path / f"shots{i}"  # two files of the same name: both kept
        folder.mkdir()
        Image.fromarray(img[..., 0], "L").resize((64, 64)).save(folder / "photo.png")
        files.append(str(folder / "photo.png"))
    out = tmp_path / "out"
    result = CliRunner().invoke(
        main, ["explain", str(model_path), *files, "--out", str(out), "--features", "--class", "1"]
    )
    assert result.exit_code == 0, result.output
    for stem in ("photo", "photo_2"):
        heat = np.load(out / f"{stem}_gradcam.npy")
        assert heat.shape == (CANVAS, CANVAS) and heat.dtype == np.float32
        assert 0 <= heat.min() and heat.max() <= 1
        for name in (f"{stem}_gradcam.png", f"{stem}_features.png"):
            assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "Grad-CAM of '1'" in result.output and result.output.count("feature maps ->") == 2


def test_explain_names_what_it_cannot_do(trained, tmp_path):
    import keras

    model, model_path = trained
    with pytest.raises(explain.ExplainError, match="--layer nope: 'pasted_cnn' has no layer.*last_conv"):
        explain.target_layer(model, "nope")
    with pytest.raises(explain.ExplainError, match="--layer scores: its output .* is not one"):
        explain.target_layer(model, "scores")
    assert explain.target_layer(model).name == "last_conv"
    flat = keras.Sequential([keras.Input((20,)), keras.layers.Dense(3, activation="softmax")], name="flat")
    with pytest.raises(explain.ExplainError, match="'flat' has no spatial layer"):
        explain.target_layer(flat)
    img = tmp_path / "a.png"
    Image.new("L", (32, 32)).save(img)
    for args, message in (
        (["--layer", "nope"], "Error: --layer nope"),
        (["--class", "zebra"], "Error: --class zebra: not a class"),
        (["--class", "7"], "Error: --class 7: the model has classes 0 to 2"),
    ):
        result = CliRunner().invoke(
            main, ["explain", str(model_path), str(img), "--out", str(tmp_path), *args]
        )
        assert result.exit_code != 0 and message in result.output, result.output
        assert "Traceback" not in result.output
    missing = CliRunner().invoke(main, ["explain", str(model_path), str(tmp_path / "no.png")])
    assert missing.exit_code != 0 and "no.png' does not exist" in missing.output


@pytest.mark.parametrize(
    "name, shape, kwargs",
    [
        ("lenet5", (32, 32, 1), {}),
        ("alexnet", (67, 67, 3), {}),
        ("vgg11", (32, 32, 3), {}),
        ("nin", (32, 32, 3), {}),
        ("googlenet", (64, 64, 3), {}),
        ("resnet20", (32, 32, 3), {}),
        ("resnet18", (64, 64, 3), {}),
        ("wrn", (32, 32, 3), {"depth": 10, "width": 1}),
        ("resnext29_8x64d", (32, 32, 3), {}),
        ("mobilenet_v1", (64, 64, 3), {"alpha": 0.25}),
        ("mobilenet_v2", (64, 64, 3), {"alpha": 0.35}),
        ("densenet_bc100_k12", (32, 32, 3), {}),
    ],
)
def test_every_zoo_family_can_be_explained(name, shape, kwargs):
    from kerascnn.models import build

    model = build(name, input_shape=shape, num_classes=5, **kwargs)
    layer = explain.target_layer(model)
    assert min(layer.output.shape[1:3]) >= 2
    x = np.random.default_rng(0).uniform(-1, 1, (2, *shape)).astype(np.float32)
    cams, outputs, _ = explain.gradcam(model, x, layer)
    assert cams.shape == (2, *shape[:2]) and np.isfinite(cams).all()
    assert cams.min() >= 0 and cams.max() <= 1
    assert len(explain.stage_layers(model)) >= 2
