"""GoogLeNet against closed-form counts from Table 1 of Szegedy et al. 2014, plus the auxiliary heads."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from kerascnn.models import inception
from kerascnn.models.blocks import InputShapeError
from kerascnn.models.registry import get_entry

# Table 1 of the paper, typed in again here (not imported) so that a typo in the model shows up:
# (#1x1, #3x3 reduce, #3x3, #5x5 reduce, #5x5, pool proj)
TABLE1 = [
    ("3a", 64, 96, 128, 16, 32, 32),
    ("3b", 128, 128, 192, 32, 96, 64),
    ("4a", 192, 96, 208, 16, 48, 64),
    ("4b", 160, 112, 224, 24, 64, 64),
    ("4c", 128, 128, 256, 24, 64, 64),
    ("4d", 112, 144, 288, 32, 64, 64),
    ("4e", 256, 160, 320, 32, 128, 128),
    ("5a", 256, 160, 320, 32, 128, 128),
    ("5b", 384, 192, 384, 48, 128, 128),
]
# Table 1's output sizes at 224x224 input: (layer, H, channels)
TABLE1_SIZES = [
    ("conv1_7x7_s2", 112, 64),
    ("pool1_3x3_s2", 56, 64),
    ("conv2_3x3", 56, 192),
    ("pool2_3x3_s2", 28, 192),
    ("inception_3a_concat", 28, 256),
    ("inception_3b_concat", 28, 480),
    ("pool3_3x3_s2", 14, 480),
    ("inception_4a_concat", 14, 512),
    ("inception_4b_concat", 14, 512),
    ("inception_4c_concat", 14, 512),
    ("inception_4d_concat", 14, 528),
    ("inception_4e_concat", 14, 832),
    ("pool4_3x3_s2", 7, 832),
    ("inception_5a_concat", 7, 832),
    ("inception_5b_concat", 7, 1024),
]


def conv_params(cin: int, cout: int, k: int, batch_norm: bool, biases: bool = True) -> tuple[int, int]:
    """(trainable, non-trainable) of a k x k conv, with its bias or with a BN after it."""
    if batch_norm:
        return k * k * cin * cout + 2 * cout, 2 * cout
    return k * k * cin * cout + (cout if biases else 0), 0


def googlenet_params(
    classes: int = 1000, batch_norm: bool = False, aux_spatial: int | None = None, biases: bool = True
):
    """(trainable, non-trainable) of GoogLeNet from Table 1; aux heads on a ``aux_spatial``^2 pooled map."""
    convs = [(3, 64, 7), (64, 64, 1), (64, 192, 3)]
    cin = 192
    aux_inputs = {}
    for name, n1, r3, n3, r5, n5, proj in TABLE1:
        convs += [(cin, n1, 1), (cin, r3, 1), (r3, n3, 3), (cin, r5, 1), (r5, n5, 5), (cin, proj, 1)]
        cin = n1 + n3 + n5 + proj
        aux_inputs[name] = cin
    trainable = 1024 * classes + (classes if biases else 0)  # classifier on the 1024 pooled channels
    non_trainable = 0
    if aux_spatial:
        for name in ("4a", "4d"):
            convs.append((aux_inputs[name], 128, 1))
            trainable += aux_spatial**2 * 128 * 1024 + 1024 + 1024 * classes + classes
    for c_in, c_out, k in convs:
        t, n = conv_params(c_in, c_out, k, batch_norm, biases)
        trainable, non_trainable = trainable + t, non_trainable + n
    return trainable, non_trainable


@pytest.fixture(scope="module")
def model():
    return inception.googlenet()


@pytest.fixture(scope="module")
def training_model():
    return inception.googlenet(aux_logits=True)


def test_param_count_matches_table1(model):
    trainable, non_trainable = googlenet_params()
    assert non_trainable == 0
    assert model.count_params() == trainable == 6_998_552
    # the paper's Table 1 totals ~6.8M: it counts weights without biases, in units of 1024
    weights_only = googlenet_params(biases=False)[0]
    assert trainable - weights_only == 8_280
    assert abs(weights_only / 1024 / 1e3 - 6.8) < 0.05  # 6,990,272 / 1024 = 6,826K
    entry = get_entry("googlenet")
    assert (entry.family, entry.input_shape, entry.num_classes, entry.min_size) == (
        "inception",
        (224, 224, 3),
        1000,
        1,
    )


def test_structure_matches_table1(model):
    assert len(model.outputs) == 1
    assert model.output_shape == (None, 1000)
    for name, size, channels in TABLE1_SIZES:
        assert model.get_layer(name).output.shape == (None, size, size, channels), name
    for name, n1, r3, n3, r5, n5, proj in TABLE1:
        prefix = f"inception_{name}"
        for suffix, filters, k in (
            ("1x1", n1, 1),
            ("3x3_reduce", r3, 1),
            ("3x3", n3, 3),
            ("5x5_reduce", r5, 1),
            ("5x5", n5, 5),
            ("pool_proj", proj, 1),
        ):
            layer = model.get_layer(f"{prefix}_{suffix}")
            assert (layer.filters, layer.kernel_size, layer.use_bias) == (filters, (k, k), True)
        pool = model.get_layer(f"{prefix}_pool")
        assert (pool.pool_size, pool.strides, pool.padding) == ((3, 3), (1, 1), "same")
    names = [layer.name for layer in model.layers]
    assert names[-3:] == ["avg_pool", "dropout", "predictions"]
    assert model.get_layer("dropout").rate == 0.4
    assert not any(name.startswith("aux") for name in names)
    assert not any(isinstance(layer, keras.layers.BatchNormalization) for layer in model.layers)


def test_batch_norm_variant():
    model = inception.googlenet(batch_norm=True, num_classes=10)
    trainable, non_trainable = googlenet_params(classes=10, batch_norm=True)
    assert sum(int(np.prod(w.shape)) for w in model.trainable_weights) == trainable
    assert model.count_params() == trainable + non_trainable
    assert model.get_layer("inception_4a_5x5_bn").output.shape == (None, 14, 14, 48)
    assert not model.get_layer("inception_4a_5x5").use_bias


def test_auxiliary_heads(training_model):
    assert training_model.output_names == ["predictions", "aux1_predictions", "aux2_predictions"]
    assert [tuple(o.shape) for o in training_model.outputs] == [(None, 1000)] * 3
    assert training_model.count_params() == googlenet_params(aux_spatial=4)[0]  # 14x14 -> 5x5/3 pool -> 4x4
    for aux, source, channels in (("aux1", "inception_4a_concat", 512), ("aux2", "inception_4d_concat", 528)):
        pool = training_model.get_layer(f"{aux}_avg_pool")
        assert pool.input is training_model.get_layer(source).output
        assert (pool.pool_size, pool.strides, pool.padding) == ((5, 5), (3, 3), "valid")
        assert pool.output.shape == (None, 4, 4, channels)  # the paper's 4x4x512 and 4x4x528
        assert training_model.get_layer(f"{aux}_conv").filters == 128
        assert training_model.get_layer(f"{aux}_fc").units == 1024
        assert training_model.get_layer(f"{aux}_dropout").rate == 0.7
    assert inception.AUX_LOSS_WEIGHT == 0.3
    weights = inception.googlenet_loss_weights()
    assert weights == {"predictions": 1.0, "aux1_predictions": 0.3, "aux2_predictions": 0.3}
    assert list(weights) == training_model.output_names


def test_strip_auxiliary_heads(training_model):
    inference = inception.strip_auxiliary_heads(training_model)
    assert len(inference.outputs) == 1 and len(inference.inputs) == 1
    assert inference.input is training_model.input
    assert inference.name == training_model.name
    assert not any(layer.name.startswith("aux") for layer in inference.layers)
    assert inference.count_params() == googlenet_params()[0]
    train_vars = {id(w) for w in training_model.weights}
    assert all(id(w) in train_vars for w in inference.weights)  # shared, not copied

    x = np.random.default_rng(0).uniform(0, 1, (1, 224, 224, 3)).astype("float32")
    main, aux1, aux2 = training_model(x, training=False)
    out = inference(x, training=False)
    np.testing.assert_allclose(out.numpy(), main.numpy(), rtol=1e-6, atol=1e-7)
    assert not np.allclose(aux1.numpy(), main.numpy())

    with pytest.raises(ValueError, match="predictions"):
        inception.strip_auxiliary_heads(inception.googlenet(input_shape=(32, 32, 3), include_top=False))


def test_training_with_loss_weights_at_the_aux_min_size():
    model = inception.googlenet(aux_logits=True, input_shape=(65, 65, 3), num_classes=3)
    weights = inception.googlenet_loss_weights()
    model.compile(
        "sgd", loss={name: "sparse_categorical_crossentropy" for name in weights}, loss_weights=weights
    )
    x = np.random.default_rng(3).uniform(0, 1, (2, 65, 65, 3)).astype("float32")
    y = np.array([0, 2])
    logs = model.train_on_batch(x, {name: y for name in weights}, return_dict=True)
    expected = logs["predictions_loss"] + 0.3 * (
        logs["aux1_predictions_loss"] + logs["aux2_predictions_loss"]
    )
    assert logs["loss"] == pytest.approx(expected, rel=1e-5)


def test_aux_logits_input_checks(monkeypatch):
    with pytest.raises(InputShapeError, match="at least 65x65"):
        inception.googlenet(aux_logits=True, input_shape=(64, 65, 3))
    with pytest.raises(InputShapeError):
        inception.googlenet(aux_logits=True, input_shape=(None, None, 3))
    with pytest.raises(ValueError, match="include_top"):
        inception.googlenet(aux_logits=True, include_top=False)
    monkeypatch.setattr(inception, "AUX_MIN_SIZE", 1)  # 64 -> 4x4 at 1/16: a valid 5x5 pool must fail
    with pytest.raises(ValueError, match="zero or negative"):
        inception.googlenet(aux_logits=True, input_shape=(64, 64, 3))


def test_min_size_forward_and_logits():
    x1 = np.random.default_rng(1).uniform(0, 1, (2, 1, 1, 3)).astype("float32")
    probs = inception.googlenet(input_shape=(1, 1, 3), num_classes=10)(x1, training=False).numpy()
    assert probs.shape == (2, 10)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)
    with pytest.raises(InputShapeError, match="minimum input size is 1x1"):
        inception.googlenet(input_shape=(0, 1, 3))

    x = np.random.default_rng(2).uniform(0, 1, (2, 32, 32, 3)).astype("float32")
    logits = inception.googlenet(input_shape=(32, 32, 3), num_classes=10, classifier_activation=None)
    out = logits(x, training=False).numpy()
    assert out.shape == (2, 10)
    assert not np.allclose(out.sum(axis=1), 1.0)


def test_feature_extractor_heads():
    for pooling, shape in ((None, (None, 1, 1, 1024)), ("avg", (None, 1024)), ("max", (None, 1024))):
        model = inception.googlenet(input_shape=(32, 32, 3), include_top=False, pooling=pooling)
        assert model.output_shape == shape
        assert "predictions" not in [layer.name for layer in model.layers]
    top_max = inception.googlenet(input_shape=(None, None, 3), pooling="max", num_classes=4, dropout=0.0)
    names = [layer.name for layer in top_max.layers]
    assert "max_pool" in names and "dropout" not in names
    assert top_max.predict(np.zeros((1, 40, 56, 3), "float32"), verbose=0).shape == (1, 4)
