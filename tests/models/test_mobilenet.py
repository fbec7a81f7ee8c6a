"""MobileNet v1/v2 against keras.applications (weights=None): counts, names, configs, outputs."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from kerascnn.models import mobilenet
from kerascnn.models.blocks import InputShapeError
from kerascnn.models.registry import get_entry

# keras.applications leaves these layers unnamed (auto names such as "input_layer_3"); ours name them.
AUTO_NAMED = ("input_layer", "global_average_pooling2d", "global_max_pooling2d")


def assert_mirrors_keras(ours: keras.Model, ref: keras.Model, our_names_for_unnamed: list[str]):
    """Same layers in the same order, same names (where keras names them), same configs and weights."""
    assert len(ours.layers) == len(ref.layers)
    unnamed = []
    for a, b in zip(ours.layers, ref.layers, strict=True):
        assert type(a) is type(b), (a.name, b.name)
        if b.name.startswith(AUTO_NAMED):
            unnamed.append(a.name)
        else:
            assert a.name == b.name
        if not isinstance(a, keras.layers.InputLayer):
            ca, cb = a.get_config(), b.get_config()
            ca.pop("name"), cb.pop("name")
            assert ca == cb, a.name
    assert unnamed == our_names_for_unnamed
    assert [w.path for w in ours.weights] == [w.path for w in ref.weights]
    assert ours.count_params() == ref.count_params()


def copy_weights_by_name(src: keras.Model, dst: keras.Model):
    for layer in src.layers:
        if layer.weights:
            dst.get_layer(layer.name).set_weights(layer.get_weights())


@pytest.fixture(scope="module")
def v1_pair():
    return mobilenet.mobilenet_v1(), keras.applications.MobileNet(weights=None)


@pytest.fixture(scope="module")
def v2_pair():
    return mobilenet.mobilenet_v2(), keras.applications.MobileNetV2(weights=None)


def test_v1_matches_keras_applications(v1_pair):
    ours, ref = v1_pair
    assert ours.count_params() == 4_253_864
    assert ours.output_shape == (None, 1000)
    assert_mirrors_keras(ours, ref, ["input", "avg_pool"])
    names = [layer.name for layer in ours.layers]
    for name in ("conv1", "conv1_bn", "conv1_relu", "conv_dw_1", "conv_dw_1_bn", "conv_pw_1", "conv_pad_2"):
        assert name in names
    assert names[-4:] == ["dropout", "conv_preds", "reshape_2", "predictions"]


def test_v2_matches_keras_applications(v2_pair):
    ours, ref = v2_pair
    assert ours.count_params() == 3_538_984
    assert ours.output_shape == (None, 1000)
    assert_mirrors_keras(ours, ref, ["input", "avg_pool"])
    names = [layer.name for layer in ours.layers]
    for name in (
        "Conv1",
        "bn_Conv1",
        "expanded_conv_depthwise",
        "block_1_expand",
        "block_1_pad",
        "block_2_add",
    ):
        assert name in names
    assert names[-3:] == ["out_relu", "avg_pool", "predictions"]


@pytest.mark.parametrize("pair", ["v1_pair", "v2_pair"])
def test_keras_weights_load_by_name_and_give_the_same_outputs(pair, request):
    ours, ref = request.getfixturevalue(pair)
    rng = np.random.default_rng(0)
    for w in ref.weights:  # signed kernels and non-trivial BN statistics, so that any mismatch would show
        if len(w.shape) > 1:
            fan_in = int(np.prod(w.shape[:-1]))
            w.assign(rng.uniform(-1, 1, w.shape).astype("float32") * np.sqrt(6 / fan_in))
        else:
            w.assign(rng.uniform(0.5, 1.5, w.shape).astype("float32"))
    copy_weights_by_name(ref, ours)
    x = rng.uniform(-1, 1, (1, 224, 224, 3)).astype("float32")
    expected = ref.predict(x, verbose=0)
    assert np.isfinite(expected).all() and expected.max() > 2 * expected.min()
    np.testing.assert_allclose(ours.predict(x, verbose=0), expected, rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize(
    "version, alpha, include_top",
    [("v1", 0.5, True), ("v1", 0.75, False), ("v1", 1.0, False), ("v2", 0.5, True), ("v2", 0.75, False),
     ("v2", 1.0, False), ("v2", 1.3, True)],
)  # fmt: skip
def test_param_counts_follow_keras_for_other_widths(version, alpha, include_top):
    ours_fn = mobilenet.mobilenet_v1 if version == "v1" else mobilenet.mobilenet_v2
    ref_fn = keras.applications.MobileNet if version == "v1" else keras.applications.MobileNetV2
    shape = (128, 128, 3)
    ours = ours_fn(input_shape=shape, alpha=alpha, include_top=include_top, pooling="avg")
    ref = ref_fn(input_shape=shape, alpha=alpha, include_top=include_top, pooling="avg", weights=None)
    assert ours.count_params() == ref.count_params()
    assert ours.output_shape == ref.output_shape


@pytest.mark.parametrize("fn, channels", [(mobilenet.mobilenet_v1, 1024), (mobilenet.mobilenet_v2, 1280)])
def test_forward_pass_and_heads_on_small_input(fn, channels):
    x = np.random.default_rng(1).uniform(-1, 1, (2, 32, 32, 3)).astype("float32")
    probs = fn(input_shape=(32, 32, 3), num_classes=10)(x, training=False).numpy()
    assert probs.shape == (2, 10)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)

    logits = fn(input_shape=(32, 32, 3), num_classes=10, classifier_activation=None)(
        x, training=False
    ).numpy()
    assert logits.shape == (2, 10)
    assert not np.allclose(logits.sum(axis=1), 1.0)

    top_max = fn(input_shape=(32, 32, 3), num_classes=10, pooling="max")
    assert "max_pool" in [layer.name for layer in top_max.layers]

    for pooling, shape in (
        (None, (None, 1, 1, channels)),
        ("avg", (None, channels)),
        ("max", (None, channels)),
    ):
        assert fn(input_shape=(32, 32, 3), include_top=False, pooling=pooling).output_shape == shape


@pytest.mark.parametrize("fn", [mobilenet.mobilenet_v1, mobilenet.mobilenet_v2])
def test_min_size(fn):
    entry = get_entry(fn.model_name)
    assert (entry.family, entry.input_shape, entry.num_classes) == ("mobilenet", (224, 224, 3), 1000)
    assert entry.min_size == mobilenet.MIN_SIZE == 31
    size = entry.min_size
    assert fn(input_shape=(size, size, 3), include_top=False).output_shape[1:3] == (1, 1)
    with pytest.raises(InputShapeError, match="minimum input size is 31x31"):
        fn(input_shape=(size - 1, size, 3), include_top=False)


def test_min_size_is_tight_for_v1(monkeypatch):
    monkeypatch.setattr(mobilenet, "MIN_SIZE", 1)
    with pytest.raises(ValueError, match="zero or negative"):
        mobilenet.mobilenet_v1(input_shape=(30, 30, 3), include_top=False)


def test_v2_with_unknown_size_runs_down_to_min_size():
    model = mobilenet.mobilenet_v2(input_shape=(None, None, 3), include_top=False)
    assert model.output_shape == (None, None, None, 1280)
    assert model.predict(np.zeros((1, 31, 31, 3), "float32"), verbose=0).shape == (1, 1, 1, 1280)
    # the padding of a size-agnostic graph assumes even sides: at 30 the last stride-2 conv would get 2x2
    with pytest.raises(ValueError, match="zero or negative"):
        model(keras.Input((30, 30, 3)))


def test_unknown_size_with_top():
    model = mobilenet.mobilenet_v1(input_shape=(None, None, 3), num_classes=5, alpha=0.25)
    assert model.output_shape == (None, 5)
    assert model.predict(np.zeros((2, 40, 48, 3), "float32"), verbose=0).shape == (2, 5)


@pytest.mark.parametrize(
    "shape, expected", [((None, 8, 8, 3), ((0, 1), (0, 1))), ((None, 7, 9, 3), ((1, 1), (1, 1))),
                        ((None, None, None, 3), ((0, 1), (0, 1))), ((None, 6, None, 3), ((0, 1), (0, 1)))],
)  # fmt: skip
def test_correct_pad(shape, expected):
    assert mobilenet._correct_pad(keras.KerasTensor(shape), 3) == expected


def test_argument_checks():
    with pytest.raises(ValueError, match="alpha"):
        mobilenet.mobilenet_v1(alpha=0)
    with pytest.raises(ValueError, match="alpha"):
        mobilenet.mobilenet_v1(alpha=0.01)  # int(32 * 0.01) == 0 filters
    with pytest.raises(ValueError, match="alpha"):
        mobilenet.mobilenet_v2(alpha=-1.0)
    with pytest.raises(ValueError, match="depth_multiplier"):
        mobilenet.mobilenet_v1(depth_multiplier=0)
    with pytest.raises(ValueError, match="imagenet"):
        mobilenet.mobilenet_v2(weights="imagenet", num_classes=10)  # the ImageNet head has 1000
    with pytest.raises(ValueError, match="pooling"):
        mobilenet.mobilenet_v2(pooling="sum")


def test_depth_multiplier_widens_depthwise_convs():
    model = mobilenet.mobilenet_v1(input_shape=(32, 32, 3), include_top=False, depth_multiplier=2, alpha=0.25)
    assert model.get_layer("conv_dw_1").output.shape[-1] == 2 * 8
    ref = keras.applications.MobileNet(
        input_shape=(32, 32, 3), include_top=False, depth_multiplier=2, alpha=0.25, weights=None
    )
    assert model.count_params() == ref.count_params()
