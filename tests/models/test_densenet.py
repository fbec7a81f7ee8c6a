"""DenseNet-121/169/201 against keras.applications (weights=None) and DenseNet-BC against the paper."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from kerascnn.models import densenet
from kerascnn.models.blocks import InputShapeError
from kerascnn.models.registry import get_entry

AUTO_NAMED = ("input_layer", "zero_padding2d")  # layers keras.applications leaves unnamed


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
            if cb.get("axis") == 3:  # keras writes the channel axis of its 4D tensors as 3, ours as -1
                cb["axis"] = -1
            assert ca == cb, a.name
    assert unnamed == our_names_for_unnamed
    assert [w.path for w in ours.weights] == [w.path for w in ref.weights]


def trainable_count(model: keras.Model) -> int:
    return sum(int(np.prod(w.shape)) for w in model.trainable_weights)


def bc_param_counts(depth: int, k: int, classes: int) -> tuple[int, int]:
    """(trainable, non-trainable) parameters of DenseNet-BC, in closed form.

    A dense block of n bottlenecks entering with c channels: layer i sees c + i*k channels, so its BN
    (2 per channel) and 1x1 conv (4k per channel) cost (2 + 4k)(c + ik), plus BN(4k) and the 3x3 conv
    9 * 4k * k. Summing the arithmetic series over i gives (2 + 4k)(nc + k n(n-1)/2) + n(8k + 36k^2).
    Every BN also holds as many non-trainable statistics as trainable parameters.
    """
    n = (depth - 4) // 6
    c = 2 * k
    trainable = 3 * 3 * 3 * c  # stem conv, no bias
    bn = 0
    for b in range(3):
        block_bn = 2 * (n * c + k * n * (n - 1) // 2) + n * 2 * 4 * k
        trainable += (2 + 4 * k) * (n * c + k * n * (n - 1) // 2) + n * (8 * k + 36 * k * k)
        bn += block_bn
        c += n * k
        if b < 2:  # transition: BN + 1x1 conv to floor(c / 2)
            trainable += 2 * c + c * (c // 2)
            bn += 2 * c
            c //= 2
    trainable += 2 * c + c * classes + classes  # final BN + classifier
    bn += 2 * c
    return trainable, bn


@pytest.fixture(scope="module")
def pair121():
    return densenet.densenet121(), keras.applications.DenseNet121(weights=None)


def test_densenet121_matches_keras_applications(pair121):
    ours, ref = pair121
    assert ours.count_params() == ref.count_params() == 8_062_504
    assert ours.output_shape == (None, 1000)
    assert_mirrors_keras(ours, ref, ["input", "conv1_pad", "pool1_pad"])
    names = [layer.name for layer in ours.layers]
    for name in (
        "conv1_conv",
        "pool1",
        "conv2_block1_0_bn",
        "conv2_block6_concat",
        "pool2_conv",
        "pool4_pool",
    ):
        assert name in names
    assert names[-4:] == ["bn", "relu", "avg_pool", "predictions"]


def test_densenet121_takes_keras_weights_by_name(pair121):
    ours, ref = pair121
    rng = np.random.default_rng(0)
    for w in ref.weights:  # signed kernels and non-trivial BN statistics, so that any mismatch would show
        if len(w.shape) > 1:
            w.assign(rng.uniform(-1, 1, w.shape).astype("float32") * np.sqrt(6 / np.prod(w.shape[:-1])))
        else:
            w.assign(rng.uniform(0.5, 1.5, w.shape).astype("float32"))
    for layer in ref.layers:
        if layer.weights:
            ours.get_layer(layer.name).set_weights(layer.get_weights())
    x = rng.uniform(-1, 1, (1, 224, 224, 3)).astype("float32")
    expected = ref.predict(x, verbose=0)
    assert np.isfinite(expected).all() and expected.max() > 2 * expected.min()
    np.testing.assert_allclose(ours.predict(x, verbose=0), expected, rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize(
    "fn, ref_fn, expected",
    [
        (densenet.densenet169, keras.applications.DenseNet169, 14_307_880),
        (densenet.densenet201, keras.applications.DenseNet201, 20_242_984),
    ],
)
def test_deeper_densenets_match_keras_applications(fn, ref_fn, expected):
    ours, ref = fn(), ref_fn(weights=None)
    assert ours.count_params() == ref.count_params() == expected
    assert_mirrors_keras(ours, ref, ["input", "conv1_pad", "pool1_pad"])


def test_imagenet_min_size():
    entry = get_entry("densenet121")
    assert (entry.family, entry.input_shape, entry.num_classes, entry.min_size) == (
        "densenet",
        (224, 224, 3),
        1000,
        29,
    )
    for name in ("densenet169", "densenet201"):
        assert get_entry(name).min_size == 29
    model = densenet.densenet121(input_shape=(29, 29, 3), include_top=False, pooling="max")
    assert model.output_shape == (None, 1024)
    assert model.get_layer("relu").output.shape == (None, 1, 1, 1024)
    # no classifier: 8,062,504 - (1024 * 1000 + 1000), the count of keras' include_top=False model
    assert model.count_params() == 7_037_504
    with pytest.raises(InputShapeError, match="minimum input size is 29x29"):
        densenet.densenet121(input_shape=(29, 28, 3))
    # the family builder with the size check relaxed: 28 -> 14 -> 7 -> 3 -> 1 -> 0 must not build
    with pytest.raises(ValueError, match="zero or negative"):
        densenet._densenet(
            "densenet121", (6, 12, 24, 16), 32, "imagenet", 0.5, input_shape=(28, 28, 3),
            default_shape=densenet.IMAGENET_SHAPE, min_size=1, num_classes=1000, include_top=False,
            pooling=None, weights=None, classifier_activation="softmax", input_tensor=None,
        )  # fmt: skip


@pytest.fixture(scope="module")
def bc100():
    return densenet.densenet_bc100_k12()


def test_densenet_bc100_k12_param_count(bc100):
    trainable, non_trainable = bc_param_counts(100, 12, 10)
    assert (trainable, non_trainable) == (769_162, 23_988)
    assert trainable_count(bc100) == trainable
    assert bc100.count_params() == trainable + non_trainable
    # paper, Table 2: 0.8M (the figure matches its 100-class model: 800,032)
    assert abs(trainable - 0.8e6) / 0.8e6 < 0.05
    assert bc_param_counts(100, 12, 100)[0] == 800_032


def test_densenet_bc100_k12_structure_and_forward(bc100):
    entry = get_entry("densenet_bc100_k12")
    assert (entry.family, entry.input_shape, entry.num_classes, entry.min_size) == (
        "densenet",
        (32, 32, 3),
        10,
        4,
    )
    names = [layer.name for layer in bc100.layers]
    assert sum(name.endswith("_2_conv") for name in names) == 3 * 16  # three blocks of (100 - 4) / 6 layers
    assert bc100.get_layer("conv1_conv").output.shape == (None, 32, 32, 24)  # 2k filters
    assert bc100.get_layer("pool2_pool").output.shape == (None, 16, 16, 108)  # (24 + 16 * 12) / 2
    assert bc100.get_layer("pool3_pool").output.shape == (None, 8, 8, 150)  # (108 + 192) / 2
    assert bc100.get_layer("relu").output.shape == (None, 8, 8, 342)
    assert "pool4_conv" not in names
    assert not any(
        getattr(layer, "use_bias", False) for layer in bc100.layers if isinstance(layer, keras.layers.Conv2D)
    )

    x = np.random.default_rng(1).uniform(0, 1, (2, 32, 32, 3)).astype("float32")
    probs = bc100(x, training=False).numpy()
    assert probs.shape == (2, 10)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)
    logits = densenet.densenet_bc100_k12(classifier_activation=None)(x, training=False).numpy()
    assert logits.shape == (2, 10)
    assert not np.allclose(logits.sum(axis=1), 1.0)


def test_densenet_bc_heads_and_min_size(monkeypatch):
    channels = 2 * 12 + 3 * 6 * 12  # depth 40: n = 6 per block; compression 1.0 keeps every channel
    for pooling, shape in (
        (None, (None, 8, 8, channels)),
        ("avg", (None, channels)),
        ("max", (None, channels)),
    ):
        model = densenet.densenet_bc(40, 12, compression=1.0, include_top=False, pooling=pooling)
        assert model.output_shape == shape
    assert model.name == "densenet_bc40_k12"
    with_top_max = densenet.densenet_bc(40, 12, pooling="max", num_classes=3)
    assert "max_pool" in [layer.name for layer in with_top_max.layers]
    assert with_top_max.output_shape == (None, 3)

    unknown = densenet.densenet_bc(40, 12, input_shape=(None, None, 3), num_classes=3)
    assert unknown.predict(np.zeros((2, 40, 24, 3), "float32"), verbose=0).shape == (2, 3)

    small = densenet.densenet_bc100_k12(input_shape=(4, 4, 3), include_top=False)
    assert small.output_shape == (None, 1, 1, 342)
    with pytest.raises(InputShapeError, match="minimum input size is 4x4"):
        densenet.densenet_bc100_k12(input_shape=(3, 4, 3))
    monkeypatch.setattr(densenet, "CIFAR_MIN_SIZE", 1)  # 3 -> 1 -> 0: must not build
    with pytest.raises(ValueError, match="zero or negative"):
        densenet.densenet_bc(40, 12, input_shape=(3, 3, 3))


@pytest.mark.parametrize(
    "name, depth, k, paper",
    [("densenet_bc250_k24", 250, 24, 15.3e6), ("densenet_bc190_k40", 190, 40, 25.6e6)],
)
def test_large_densenet_bc_match_the_paper(name, depth, k, paper):
    model = get_entry(name).fn()
    trainable, non_trainable = bc_param_counts(depth, k, 10)
    assert trainable_count(model) == trainable
    assert model.count_params() == trainable + non_trainable
    assert abs(trainable - paper) / paper < 0.03


def test_argument_checks():
    with pytest.raises(ValueError, match="6n"):
        densenet.densenet_bc(depth=101)
    with pytest.raises(ValueError, match="growth_rate"):
        densenet.densenet_bc(depth=40, growth_rate=0)
    with pytest.raises(ValueError, match="compression"):
        densenet.densenet_bc(depth=40, compression=0)
    with pytest.raises(ValueError, match="imagenet"):
        densenet.densenet121(weights="imagenet", num_classes=10)  # the ImageNet head has 1000
    with pytest.raises(ValueError, match="num_classes"):
        densenet.densenet_bc100_k12(num_classes=0)
