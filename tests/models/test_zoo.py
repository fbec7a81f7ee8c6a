"""Tests over the whole registry: every model builds, runs, saves and reloads; counts match references."""

from __future__ import annotations

import subprocess
import sys

import keras
import numpy as np
import pytest

from kerascnn import models
from kerascnn.models import InputShapeError, UnknownModelError, build, get_entry, list_models

ALL = list_models()


def small_shape(name):
    entry = get_entry(name)
    side = max(entry.min_size, 32)
    return (side, side, entry.input_shape[2])


def test_registry_covers_every_family():
    families = set(models.list_families())
    expected = {
        "lenet",
        "alexnet",
        "vgg",
        "nin",
        "inception",
        "resnet",
        "resnet_cifar",
        "wrn",
        "resnext",
        "mobilenet",
        "densenet",
    }
    assert expected <= families
    for name in (
        "lenet5",
        "alexnet",
        "vgg11",
        "vgg13",
        "vgg16",
        "vgg19",
        "nin",
        "googlenet",
        "resnet18",
        "resnet34",
        "resnet50",
        "resnet101",
        "resnet152",
        "resnet20",
        "resnet32",
        "resnet44",
        "resnet56",
        "resnet110",
        "plain20",
        "plain56",
        "wrn",
        "wrn16_4",
        "wrn28_10",
        "resnext50_32x4d",
        "resnext29_8x64d",
        "mobilenet_v1",
        "mobilenet_v2",
        "densenet121",
        "densenet169",
        "densenet201",
    ):
        assert name in ALL, name
    assert list_models("vgg*") == ["vgg11", "vgg13", "vgg16", "vgg19"]  # natural sort
    assert list_models("resnet1*") == ["resnet18", "resnet101", "resnet110", "resnet152"]


@pytest.fixture(scope="module", params=ALL)
def zoo_model(request):
    """(name, model at its small shape with 7 classes): built once for the two tests below, which pytest
    runs one after the other for each model (a module-scoped parameter), then dropped."""
    name = request.param
    yield name, build(name, input_shape=small_shape(name), num_classes=7)
    keras.utils.clear_session()


def test_builds_runs_and_round_trips(zoo_model, tmp_path):
    name, model = zoo_model
    shape = small_shape(name)
    assert len(model.outputs) == 1, "the inference model has a single output"
    x = np.random.default_rng(0).uniform(0, 1, (2, *shape)).astype("float32")
    y = np.asarray(model(x, training=False))  # called eagerly: tracing predict() costs more than the run
    assert y.shape == (2, 7)
    np.testing.assert_allclose(y.sum(axis=1), 1.0, rtol=1e-5)  # softmax head

    path = tmp_path / f"{name}.keras"
    model.save(path)
    reloaded = keras.saving.load_model(path, safe_mode=True)
    assert [layer.name for layer in reloaded.layers] == [layer.name for layer in model.layers]
    np.testing.assert_array_equal(np.asarray(reloaded(x, training=False)), y)


def test_standard_layers_and_deterministic_names(zoo_model):
    name, a = zoo_model
    b = build(name, input_shape=small_shape(name), num_classes=7)
    names = [layer.name for layer in a.layers]
    assert names == [layer.name for layer in b.layers]
    assert len(set(names)) == len(names)
    for layer in a.layers:
        assert not isinstance(layer, keras.layers.Lambda), f"{name}: Lambda layer {layer.name}"
        assert type(layer).__module__.startswith("keras."), f"{name}: custom layer {layer.name}"
    assert a.count_params() == b.count_params()


@pytest.mark.parametrize("name", ALL)
def test_minimum_input_size(name):
    entry = get_entry(name)
    side = entry.min_size
    channels = entry.input_shape[2]
    model = build(name, input_shape=(side, side, channels), include_top=False)
    assert all(d is None or d >= 1 for d in model.output_shape[1:])
    if side > 1:
        with pytest.raises(InputShapeError, match=rf"minimum input size is {side}x{side}"):
            build(name, input_shape=(side - 1, side, channels))


@pytest.mark.parametrize(
    "name, app",
    [
        ("vgg16", "VGG16"),
        ("vgg19", "VGG19"),
        ("resnet50", "ResNet50"),
        ("resnet101", "ResNet101"),
        ("resnet152", "ResNet152"),
    ],
)
def test_counts_equal_keras_applications(name, app):
    ours = build(name)
    ref = getattr(keras.applications, app)(weights=None)
    assert ours.count_params() == ref.count_params()
    # Same hierarchical names for every layer with weights, so keras weights load by name.
    ref_weighted = [layer.name for layer in ref.layers if layer.weights]
    assert [layer.name for layer in ours.layers if layer.weights] == ref_weighted


def trainable(model):
    return sum(int(np.prod(w.shape)) for w in model.trainable_weights)


COUNTED = [name for name in ALL if get_entry(name).params is not None]
ROUNDED = [name for name in ALL if get_entry(name).paper is not None]


def test_the_registry_carries_the_reference_counts():
    """The models whose counts the papers and reference code give carry them (listed once, here)."""
    assert {"lenet5", "alexnet", "resnet20", "resnet110", "plain20", "resnet18", "resnet34"} <= set(COUNTED)
    assert {"resnext50_32x4d", "wrn28_10"} <= set(COUNTED)
    assert {"resnet20", "wrn16_4", "wrn40_4", "resnext29_8x64d"} <= set(ROUNDED)


@pytest.mark.parametrize("name", COUNTED)
def test_counts_equal_paper_figures(name):
    """The registry's count: LeCun et al. 1998, He et al. 2016 Table 6 (as the reference code counts:
    conv, BN gamma/beta, Dense), torchvision, the reference WRN code."""
    assert trainable(build(name)) == get_entry(name).params


@pytest.mark.parametrize(
    "name, kwargs, expected",
    [
        ("lenet5", {"input_shape": (28, 28, 1)}, 61_706),  # 28x28 input: the paper's padding, same count
        ("alexnet", {"groups": 2}, 60_965_224),  # the paper's "60 million" with the two-GPU split
    ],
)
def test_counts_of_other_configurations(name, kwargs, expected):
    assert trainable(build(name, **kwargs)) == expected


@pytest.mark.parametrize("name", ROUNDED)
def test_counts_round_to_paper(name):
    """The trainable count, rounded to the paper's precision, is the paper's figure."""
    paper_millions = get_entry(name).paper
    decimals = len(paper_millions.split(".")[1]) if "." in paper_millions else 0
    assert f"{trainable(build(name)) / 1e6:.{decimals}f}" == paper_millions


def test_alexnet_rounds_to_the_paper_with_two_groups():
    assert f"{trainable(build('alexnet', groups=2)) / 1e6:.0f}" == "61"


def test_cifar_resnet_shortcut_options():
    a = build("resnet20")
    b = build("resnet20", shortcut="B")
    plain = build("plain20")
    # Option B adds two 1x1 projections + BN (16->32, 32->64) over option A.
    extra = (16 * 32 + 2 * 32) + (32 * 64 + 2 * 64)
    assert trainable(b) - trainable(a) == extra
    assert not any(isinstance(layer, keras.layers.Add) for layer in plain.layers)
    assert sum(isinstance(layer, keras.layers.Add) for layer in a.layers) == 9


def test_option_a_shortcut_is_subsample_and_zero_pad():
    model = build("resnet20")
    x = model.get_layer("stage1_block3_out").output
    pad = model.get_layer("stage2_block1_0_pad").output
    probe = keras.Model(model.input, [x, pad])
    inp = np.random.default_rng(1).normal(size=(1, 32, 32, 3)).astype("float32")
    feat, short = probe.predict(inp, verbose=0)
    assert short.shape == (1, 16, 16, 32)
    expected = np.zeros_like(short)
    expected[..., 8:24] = feat[:, ::2, ::2, :]
    np.testing.assert_array_equal(short, expected)


def test_nin_has_no_dense_and_takes_any_size():
    model = build("nin", input_shape=(None, None, 3))
    assert not any(isinstance(layer, keras.layers.Dense) for layer in model.layers)
    for side in (32, 45):
        y = model.predict(np.zeros((1, side, side, 3), "float32"), verbose=0)
        assert y.shape == (1, 10)


@pytest.mark.parametrize("name", ["resnet50", "vgg16", "mobilenet_v2", "densenet121", "wrn16_4", "lenet5"])
def test_feature_extractor_and_pooling_heads(name):
    shape = small_shape(name)
    fmap = build(name, input_shape=shape, include_top=False)
    assert len(fmap.output_shape) == 4
    channels = fmap.output_shape[-1]
    for pooling in ("avg", "max"):
        pooled = build(name, input_shape=shape, include_top=False, pooling=pooling)
        assert pooled.output_shape == (None, channels)
        assert not any(layer.name == "predictions" for layer in pooled.layers)
    top_max = build(name, input_shape=shape, pooling="max")
    assert any(isinstance(layer, keras.layers.GlobalMaxPooling2D) for layer in top_max.layers)


def test_logits_head():
    model = build("resnet20", classifier_activation=None)
    y = model.predict(np.random.default_rng(0).uniform(size=(3, 32, 32, 3)).astype("float32"), verbose=0)
    assert not np.allclose(y.sum(axis=1), 1.0)


def test_unknown_model_lists_close_names():
    with pytest.raises(UnknownModelError) as err:
        build("resnet5")
    msg = str(err.value)
    assert "unknown model 'resnet5'" in msg
    assert "resnet50" in msg and "resnet56" in msg
    with pytest.raises(UnknownModelError, match="mobilenet_v2"):
        build("mobilenetv2")


def test_bad_arguments_are_named():
    with pytest.raises(InputShapeError, match=r"resnet50.*minimum input size is 32x32 \(got 16x16\)"):
        build("resnet50", input_shape=(16, 16, 3))
    with pytest.raises(InputShapeError, match="height, width, channels"):
        build("vgg16", input_shape=(224, 224))
    with pytest.raises(InputShapeError, match="fixed input size"):
        build("vgg16", input_shape=(None, None, 3))
    with pytest.raises(ValueError, match="pooling must be one of"):
        build("resnet20", pooling="mean")
    with pytest.raises(ValueError, match=r"resnet20 fixes depth=20; its options: .*--family resnet_cifar"):
        build("resnet20", depth=56)  # a variant's defining option: a named error, not a TypeError
    with pytest.raises(ValueError, match="depth must be 6n\\+2"):
        models.resnet.CifarResNet("resnet21", depth=21)
    with pytest.raises(InputShapeError, match="minimum input size is 32x32"):
        build("resnet50", input_tensor=keras.Input((16, 16, 3)))
    with pytest.raises(ValueError, match="no_such.weights.h5' does not exist"):
        build("lenet5", weights="no_such.weights.h5")


def test_weights_file_loads(tmp_path):
    src = build("lenet5")
    path = tmp_path / "lenet.weights.h5"
    src.save_weights(path)
    dst = build("lenet5", weights=str(path))
    for a, b in zip(src.get_weights(), dst.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)


def test_import_does_not_load_tfmot():
    code = (
        "import sys, kerascnn, kerascnn.models, kerascnn.analysis, kerascnn.cli, export;"
        "bad = [m for m in sys.modules if m.startswith('tensorflow_model_optimization')];"
        "assert not bad, bad; import os; assert os.environ.get('TF_USE_LEGACY_KERAS') != '1'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
