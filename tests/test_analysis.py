"""Tests for kerascnn.analysis: formulas, receptive field, graph analysis, conv-as-dense."""

from fractions import Fraction

import keras
import numpy as np
import pytest

from kerascnn.analysis import (
    analyze,
    conv_as_dense,
    conv_macs,
    conv_output_size,
    conv_params,
    dense_macs,
    dense_params,
    depthwise_macs,
    depthwise_params,
    format_summary,
    human,
    receptive_field,
    separable_conv_macs,
    separable_conv_params,
)

L = keras.layers


def _built(layer, shape):
    layer.build((None, *shape))
    return layer


# ------------------------------------------------------------------------------------ formulas


@pytest.mark.parametrize(
    "kernel, cin, filters, use_bias, groups",
    [
        (3, 3, 32, True, 1),
        ((5, 3), 16, 8, False, 1),
        (1, 64, 128, True, 1),
        (3, 8, 12, True, 2),
        ((3, 1), 6, 6, False, 3),
    ],
)
def test_conv_params_match_keras(kernel, cin, filters, use_bias, groups):
    layer = _built(L.Conv2D(filters, kernel, use_bias=use_bias, groups=groups), (9, 9, cin))
    assert conv_params(kernel, cin, filters, use_bias, groups) == layer.count_params()


def test_conv_params_hand_value():
    # N_F (W*H*K + 1): 32 * (3*3*3 + 1) = 896
    assert conv_params(3, 3, 32) == 896
    assert conv_params((3, 3), 3, 32, use_bias=False) == 864
    with pytest.raises(ValueError, match="groups"):
        conv_params(3, 6, 8, groups=4)


@pytest.mark.parametrize(
    "kernel, cin, dm, use_bias", [(3, 32, 1, False), (3, 16, 2, True), ((5, 3), 4, 2, False)]
)
def test_depthwise_params_match_keras(kernel, cin, dm, use_bias):
    layer = _built(L.DepthwiseConv2D(kernel, depth_multiplier=dm, use_bias=use_bias), (9, 9, cin))
    assert depthwise_params(kernel, cin, dm, use_bias) == layer.count_params()


@pytest.mark.parametrize(
    "kernel, cin, filters, dm, use_bias",
    [(3, 32, 64, 1, True), (3, 16, 24, 2, False), ((5, 3), 8, 4, 2, True)],
)
def test_separable_params_match_keras(kernel, cin, filters, dm, use_bias):
    layer = _built(L.SeparableConv2D(filters, kernel, depth_multiplier=dm, use_bias=use_bias), (9, 9, cin))
    assert separable_conv_params(kernel, cin, filters, dm, use_bias) == layer.count_params()


def test_separable_params_hand_value():
    # 3*3*32*1 depthwise + 32*64 pointwise + 64 pointwise biases
    assert separable_conv_params(3, 32, 64) == 288 + 2048 + 64


@pytest.mark.parametrize("fin, units, use_bias", [(784, 10, True), (25088, 4096, False), (3, 1, True)])
def test_dense_params_match_keras(fin, units, use_bias):
    layer = _built(L.Dense(units, use_bias=use_bias), (fin,))
    assert dense_params(fin, units, use_bias) == layer.count_params()


# ------------------------------------------------------------------------------------ MACs


@pytest.mark.parametrize("n_f, k_in", [(64, 32), (1024, 1024), (10, 3)])
def test_separable_vs_standard_mac_ratio(n_f, k_in):
    # MobileNet paper eq. 5: (DK^2 M DF^2 + M N DF^2) / (DK^2 M N DF^2) = 1/N + 1/DK^2
    std = conv_macs(14, 14, 3, k_in, n_f)
    sep = separable_conv_macs(14, 14, 3, k_in, n_f)
    assert Fraction(sep, std) == Fraction(1, n_f) + Fraction(1, 9)
    assert sep == depthwise_macs(14, 14, 3, k_in) + conv_macs(14, 14, 1, k_in, n_f)


def test_mac_formula_values():
    assert conv_macs(112, 112, 3, 3, 32) == 10_838_016  # MobileNet first layer
    assert conv_macs(4, 4, (3, 1), 8, 6, groups=2) == 16 * 3 * 4 * 6
    assert depthwise_macs(7, 7, 3, 1024, depth_multiplier=2) == 49 * 9 * 2048
    assert dense_macs(1024, 1000) == 1_024_000


def _tiny_model():
    inp = keras.Input((8, 8, 3))
    h = L.Conv2D(4, 3, name="c1")(inp)  # 6x6x4
    h = L.BatchNormalization(name="bn")(h)
    h = L.MaxPooling2D(2, name="pool")(h)  # 3x3x4
    h = L.DepthwiseConv2D(3, padding="same", name="dw")(h)  # 3x3x4
    h = L.SeparableConv2D(5, 3, padding="same", name="sep")(h)  # 3x3x5
    h = L.Flatten(name="flat")(h)  # 45
    out = L.Dense(10, name="fc")(h)
    return keras.Model(inp, out)


def test_analyze_tiny_model_macs_by_hand():
    a = analyze(_tiny_model())
    macs = {r.name: r.macs for r in a.rows}
    assert macs["c1"] == 6 * 6 * 3 * 3 * 3 * 4 == 3888
    assert macs["bn"] == 0 and macs["pool"] == 0 and macs["flat"] == 0
    assert macs["dw"] == 3 * 3 * 3 * 3 * 4 == 324
    assert macs["sep"] == 3 * 3 * (3 * 3 * 4 + 4 * 5) == 504
    assert macs["fc"] == 45 * 10
    assert a.total_macs == 3888 + 324 + 504 + 450 == 5166
    assert a.row("pool").output_shape == (3, 3, 4)
    assert a.total_params == _tiny_model().count_params() == sum(r.params for r in a.rows)
    # BN: 2 trainable (gamma, beta) + 2 non-trainable (moving mean/var) per channel
    assert a.non_trainable_params == 8
    assert a.row("bn").trainable_params == 8 and a.row("bn").params == 16


def test_dense_on_feature_map_is_pointwise():
    inp = keras.Input((5, 5, 8))
    out = L.Dense(3, name="fc")(L.Conv2D(8, 3, padding="same", name="c")(inp))
    a = analyze(keras.Model(inp, out))
    assert a.row("fc").macs == 25 * 8 * 3
    assert a.row("fc").receptive_field == 3  # a Dense on a rank-4 tensor is a 1x1 conv


def test_conv_transpose_macs():
    inp = keras.Input((4, 4, 6))
    out = L.Conv2DTranspose(5, 3, strides=2, padding="same", name="up")(inp)
    a = analyze(keras.Model(inp, out))
    assert a.row("up").output_shape == (8, 8, 5)
    assert a.row("up").macs == 4 * 4 * 3 * 3 * 6 * 5
    # each output depends on ceil(3 / 2) = 2 adjacent inputs; outputs are half an input pixel apart
    assert (a.row("up").receptive_field, a.row("up").jump) == (2, 0.5)


# ------------------------------------------------------------------------------------ receptive field


def test_receptive_field_chain_function():
    assert receptive_field([3, 3, 3], [1, 1, 1]) == (7, 1) == receptive_field([7], [1])
    assert receptive_field([3, 2, 3], [1, 2, 1]) == (8, 2)
    assert receptive_field([3], [1], [2]) == (5, 1)  # dilated 3x3 covers 5x5
    assert receptive_field([], []) == (1, 1)
    with pytest.raises(ValueError):
        receptive_field([3, 3], [1])


def test_three_3x3_equal_one_7x7_in_a_model():
    inp = keras.Input((16, 16, 1))
    h = inp
    for i in range(3):
        h = L.Conv2D(2, 3, padding="same", name=f"c{i}")(h)
    a3 = analyze(keras.Model(inp, h))
    inp7 = keras.Input((16, 16, 1))
    a7 = analyze(keras.Model(inp7, L.Conv2D(2, 7, padding="same")(inp7)))
    assert (a3.receptive_field, a3.jump) == (a7.receptive_field, a7.jump) == (7, 1)
    # ...with fewer parameters (3 * 3*3*C*C vs 7*7*C*C, ignoring the first layer's C_in=1)
    assert [a3.row(f"c{i}").receptive_field for i in range(3)] == [3, 5, 7]


def test_analyze_agrees_with_chain_function():
    inp = keras.Input((32, 32, 3))
    h = L.Conv2D(4, 3, name="a")(inp)
    h = L.ReLU(name="r")(h)
    h = L.MaxPooling2D(2, name="p")(h)
    h = L.ZeroPadding2D(1, name="z")(h)
    h = L.Conv2D(4, 3, name="b")(h)
    h = L.Conv2D(4, 3, strides=2, dilation_rate=1, name="c")(h)
    h = L.AveragePooling2D(3, strides=1, name="q")(h)
    h = L.Conv2D(4, 3, dilation_rate=2, padding="same", name="d")(h)
    h = L.GlobalAveragePooling2D(name="g")(h)
    out = L.Dense(2, name="fc")(h)
    a = analyze(keras.Model(inp, out))
    assert (a.row("p").receptive_field, a.row("p").jump) == (4, 2) == receptive_field([3, 2], [1, 2])
    assert (a.row("b").receptive_field, a.row("b").jump) == (8, 2)  # conv3 s1, pool2 s2, conv3 s1
    assert a.row("r").receptive_field == 3 and a.row("z").receptive_field == 4  # pass-through
    expected = receptive_field([3, 2, 3, 3, 3, 3], [1, 2, 1, 2, 1, 1], [1, 1, 1, 1, 1, 2])
    assert expected == (36, 4)
    assert (a.row("d").receptive_field, a.row("d").jump) == expected
    assert (a.receptive_field, a.jump, a.receptive_field_layer) == (36, 4, "d")
    assert a.row("g").receptive_field is None and a.row("fc").jump is None
    assert a.row(a.rows[0].name).class_name == "InputLayer" and a.rows[0].receptive_field == 1


def test_residual_add_takes_max():
    inp = keras.Input((16, 16, 4))
    x = L.Conv2D(4, 3, padding="same", name="stem")(inp)  # rf 3, jump 1
    b = L.Conv2D(4, 3, strides=2, padding="same", name="b1")(x)  # rf 5, jump 2
    b = L.Conv2D(4, 3, padding="same", name="b2")(b)  # rf 9, jump 2
    s = L.Conv2D(4, 1, strides=2, name="short")(x)  # rf 3, jump 2
    y = L.Add(name="res_add")([s, b])
    z = L.Concatenate(name="cat")([y, s])
    w = L.Activation("relu", name="op_add")(y + s)  # a plain keras.ops operation in the graph
    a = analyze(keras.Model(inp, [z, w]))
    assert (a.row("short").receptive_field, a.row("short").jump) == (3, 2)
    assert (a.row("res_add").receptive_field, a.row("res_add").jump) == (9, 2)
    assert a.row("cat").receptive_field == 9
    assert a.row("op_add").receptive_field == 9
    assert a.row("res_add").inbound == ("short", "b2")


def test_multi_output_and_shared_layer():
    # GoogLeNet-like: an auxiliary head off an intermediate feature map, and a shared conv.
    inp = keras.Input((16, 16, 3))
    shared = L.Conv2D(3, 3, padding="same", name="shared")
    h = shared(shared(inp))  # the same layer called twice
    aux = L.Dense(2, name="aux")(L.GlobalAveragePooling2D(name="aux_gap")(h))
    h = L.Conv2D(8, 3, strides=2, name="c")(h)
    main = L.Dense(5, name="main")(L.Flatten(name="flat")(h))
    model = keras.Model(inp, [main, aux])
    a = analyze(model)
    assert sum(r.params for r in a.rows) == a.total_params == model.count_params()
    shared_rows = [r for r in a.rows if r.name == "shared"]
    assert [r.receptive_field for r in shared_rows] == [3, 5]
    assert [r.params for r in shared_rows] == [84, 0]
    assert [r.macs for r in shared_rows] == [16 * 16 * 9 * 3 * 3] * 2 == [20_736] * 2
    assert a.row("c").receptive_field == 7 and a.row("c").jump == 2
    assert a.output_receptive_fields == [None, None]
    assert a.total_macs == 2 * 20_736 + 7 * 7 * 9 * 3 * 8 + 392 * 5 + 3 * 2


def test_nested_submodel():
    sub_in = keras.Input((None, None, 3))
    s = L.Conv2D(4, 3, strides=2, padding="same")(sub_in)
    s = L.Conv2D(4, 3, padding="same")(s)
    sub = keras.Model(sub_in, s, name="backbone")
    inp = keras.Input((32, 32, 3))
    h = L.Conv2D(4, 3, name="head")(sub(inp))
    model = keras.Model(inp, h)
    a = analyze(model)
    row = a.row("backbone")
    assert row.params == sub.count_params() == 112 + 148
    assert row.output_shape == (16, 16, 4)
    assert row.macs == 16 * 16 * 9 * 3 * 4 + 16 * 16 * 9 * 4 * 4
    assert row.sub_analysis is not None and row.sub_analysis.input_shape == (32, 32, 3)
    assert (row.receptive_field, row.jump) == (7, 2)
    assert (a.row("head").receptive_field, a.row("head").jump) == (11, 2)
    assert a.total_params == model.count_params()


# ------------------------------------------------------------------------------------ output size


@pytest.mark.parametrize(
    "n, k, s, pad, d, expected",
    [
        (224, 3, 1, "valid", 1, 222),
        (224, 3, 2, "valid", 1, 111),
        (225, 3, 2, "valid", 1, 112),
        (224, 7, 2, "same", 1, 112),
        (7, 3, 2, "same", 1, 4),
        (7, 3, 1, "valid", 2, 3),  # k_eff = 5
        (7, 3, 2, "same", 2, 4),
        (5, 3, 1, "full", 1, 7),  # n + k - 1
        (5, 3, 2, "full", 1, 4),  # floor((5 + 3 - 2) / 2) + 1
        (5, 3, 1, "full", 2, 9),  # n + k_eff - 1
        (1, 1, 1, "valid", 1, 1),
    ],
)
def test_conv_output_size(n, k, s, pad, d, expected):
    assert conv_output_size(n, k, s, pad, d) == expected


@pytest.mark.parametrize("n, k", [(1, 1), (10, 1), (10, 3), (10, 5), (33, 4)])
def test_conv_output_size_full_is_n_plus_k_minus_1(n, k):
    assert conv_output_size(n, k, padding="full") == n + k - 1


def test_conv_output_size_matches_keras():
    for pad in ("valid", "same"):
        for s, d in ((1, 1), (2, 1), (3, 1), (1, 2)):
            layer = L.Conv2D(1, 3, strides=s, dilation_rate=d, padding=pad)
            shape = layer.compute_output_shape((None, 11, 10, 1))
            assert shape[1:3] == (conv_output_size(11, 3, s, pad, d), conv_output_size(10, 3, s, pad, d))


def test_conv_output_size_errors():
    with pytest.raises(ValueError, match="smaller than the effective kernel"):
        conv_output_size(2, 3)
    with pytest.raises(ValueError, match="effective kernel size 5"):
        conv_output_size(4, 3, dilation=2)
    with pytest.raises(ValueError, match="unknown padding 'reflect'"):
        conv_output_size(8, 3, padding="reflect")
    with pytest.raises(ValueError, match="stride"):
        conv_output_size(8, 3, stride=0)


# ------------------------------------------------------------------------------------ conv as dense


@pytest.mark.parametrize(
    "shape, filters, kwargs",
    [
        ((6, 6, 1), 1, dict(kernel_size=3, padding="valid")),
        ((7, 6, 3), 4, dict(kernel_size=3, padding="valid")),
        ((7, 6, 3), 2, dict(kernel_size=3, padding="same")),
        ((8, 7, 2), 3, dict(kernel_size=3, strides=2, padding="same")),
        ((8, 8, 2), 2, dict(kernel_size=(2, 3), strides=(2, 1), padding="valid")),
        ((9, 8, 2), 2, dict(kernel_size=3, dilation_rate=2, padding="same")),
        ((7, 7, 2), 3, dict(kernel_size=3, dilation_rate=2, padding="valid", use_bias=False)),
        ((6, 6, 4), 6, dict(kernel_size=3, groups=2, padding="valid")),
        ((6, 5, 4), 4, dict(kernel_size=(1, 3), groups=4, strides=2, padding="same")),
    ],
)
def test_conv_as_dense_matches_conv(shape, filters, kwargs):
    rng = np.random.default_rng(1)
    layer = L.Conv2D(filters, bias_initializer="random_normal", **kwargs)
    x = rng.normal(size=shape).astype("float32")
    y = keras.ops.convert_to_numpy(layer(x[None]))[0]
    M, b = conv_as_dense(layer, shape)
    assert M.shape == (x.size, y.size) and b.shape == (y.size,)
    np.testing.assert_allclose(x.flatten() @ M + b, y.flatten(), rtol=1e-5, atol=1e-5)


def test_conv_as_dense_zero_pattern_and_weight_sharing():
    H, W, C, F, k = 6, 5, 2, 3, 3
    layer = L.Conv2D(F, k, kernel_initializer="random_normal", bias_initializer="random_normal")
    layer.build((None, H, W, C))
    M, b = conv_as_dense(layer, (H, W, C))
    Ho, Wo = H - k + 1, W - k + 1
    # Each output unit sees only k*k*C of the H*W*C inputs.
    assert np.count_nonzero(M) == Ho * Wo * F * k * k * C
    assert np.count_nonzero(M) / M.size == pytest.approx(k * k * C / (H * W * C))
    assert (np.count_nonzero(M, axis=0) == k * k * C).all()
    # Weight sharing: kernel[i, j, c, f] sits at input (oh+i, ow+j, c) -> output (oh, ow, f) everywhere.
    kernel = keras.ops.convert_to_numpy(layer.kernel)
    i, j, c, f = 2, 1, 1, 2
    value = kernel[i, j, c, f]
    for oh in range(Ho):
        for ow in range(Wo):
            assert M[((oh + i) * W + (ow + j)) * C + c, (oh * Wo + ow) * F + f] == value
    assert np.count_nonzero(M == value) == Ho * Wo
    bias = keras.ops.convert_to_numpy(layer.bias)
    np.testing.assert_array_equal(b.reshape(Ho, Wo, F), np.broadcast_to(bias, (Ho, Wo, F)))


def test_conv_as_dense_same_padding_split():
    # TF pads 'same' with pad_before = total // 2: for H=4, k=4, s=1 -> total 3, 1 before, 2 after,
    # so output o sees inputs o-1 .. o+2 (column o of M; rows are inputs).
    layer = L.Conv2D(1, (4, 1), padding="same", use_bias=False, kernel_initializer="ones")
    layer.build((None, 4, 1, 1))
    M, _ = conv_as_dense(layer, (4, 1, 1))
    expected = np.array([[1, 1, 0, 0], [1, 1, 1, 0], [1, 1, 1, 1], [0, 1, 1, 1]], dtype=float)
    np.testing.assert_array_equal(M, expected)
    np.testing.assert_array_equal(M.sum(axis=0), [3, 4, 3, 2])  # taps left after zero padding


# ------------------------------------------------------------------------------------ None dims


def test_none_spatial_dims_with_input_shape():
    inp = keras.Input((None, None, 3))
    h = L.Conv2D(8, 3, padding="same", name="c1")(inp)
    h = L.Conv2D(8, 3, strides=2, padding="same", name="c2")(h)
    h = L.MaxPooling2D(2, name="p")(h)
    h = L.Conv2D(4, 1, name="c3")(h)
    out = L.GlobalAveragePooling2D(name="gap")(h)
    model = keras.Model(inp, out)
    nodes_before = [len(layer._inbound_nodes) for layer in model.layers]

    a = analyze(model, input_shape=(64, 64, 3))
    assert a.input_shape == (64, 64, 3)
    assert a.row("c2").output_shape == (32, 32, 8)
    assert a.row("c3").output_shape == (16, 16, 4)
    assert a.total_macs == 64 * 64 * 9 * 3 * 8 + 32 * 32 * 9 * 8 * 8 + 16 * 16 * 8 * 4 == 1_482_752
    assert (a.receptive_field, a.jump) == (7, 4)
    assert [len(layer._inbound_nodes) for layer in model.layers] == nodes_before  # model untouched

    b = analyze(model)  # no input shape: still works, MACs of the unknown-size layers are unknown
    assert b.row("c1").output_shape == (None, None, 8)
    assert b.total_macs == 0 and "input_shape" in b.row("c1").note
    assert b.receptive_field == 7 and b.total_params == a.total_params == model.count_params()


def test_sequential_model():
    model = keras.Sequential([keras.Input((10, 10, 1)), L.Conv2D(2, 3), L.Flatten(), L.Dense(3)])
    a = analyze(model)
    assert a.total_macs == 8 * 8 * 9 * 2 + 128 * 3
    assert a.total_params == model.count_params()


# ------------------------------------------------------------------------------------ formatting


def test_human():
    assert human(4_253_864) == "4.25M"
    assert human(15_470_264_320) == "15.47G"
    assert human(568_740_352) == "568.7M"
    assert human(61_700) == "61.70K"
    assert human(999) == "999"
    assert human(999_999) == "1.00M"


def test_format_summary():
    a = analyze(_tiny_model())
    text = format_summary(a)
    assert "Total params: 689" in text and "Total MACs: 5.17K (5,166)" in text
    assert "Final receptive field: 12 (jump 2) at sep" in text
    assert "global" in text
    lines = text.splitlines()
    assert any(line.startswith("c1 ") and "3,888" in line for line in lines)
    assert "non-trainable: 8" in text


# ------------------------------------------------------------------------------------ real models


@pytest.fixture(scope="module")
def mobilenet_analysis():
    model = keras.applications.MobileNet(weights=None, input_shape=(224, 224, 3))
    return analyze(model)


@pytest.fixture(scope="module")
def vgg16_analysis():
    model = keras.applications.VGG16(weights=None)
    return analyze(model)


def _mobilenet_macs_by_hand():
    """MobileNet-224 (alpha 1) mult-adds from the paper's Table 1, layer by layer."""
    macs = 112 * 112 * 3 * 3 * 3 * 32  # conv 3x3 s2, 3 -> 32
    res, blocks = 112, [(1, 32, 64), (2, 64, 128), (1, 128, 128), (2, 128, 256), (1, 256, 256)]
    blocks += [(2, 256, 512)] + [(1, 512, 512)] * 5 + [(2, 512, 1024), (1, 1024, 1024)]
    for stride, cin, cout in blocks:
        res //= stride
        macs += depthwise_macs(res, res, 3, cin) + conv_macs(res, res, 1, cin, cout)
    return macs + 1024 * 1000  # the classifier (a 1x1 conv on the pooled 1x1x1024 map in Keras)


def test_mobilenet(mobilenet_analysis):
    a = mobilenet_analysis
    assert a.total_params == 4_253_864
    assert (a.trainable_params, a.non_trainable_params) == (4_231_976, 21_888)
    # 567,716,352 MACs in the convolutions + 1,024,000 in the classifier = 568,740,352 (568.7M);
    # the paper (Table 8/14, "1.0 MobileNet-224") rounds this to 569M mult-adds.
    assert a.total_macs == _mobilenet_macs_by_hand() == 568_740_352
    assert abs(a.total_macs - 569e6) / 569e6 < 0.01
    assert a.row("conv_preds").macs == 1_024_000 and a.row("conv_preds").receptive_field is None
    # Last spatial layer: rf 315 px, effective stride 32 (224 / 7).
    assert (a.receptive_field, a.jump) == (315, 32)
    assert "568.7M (568,740,352)" in format_summary(a)


def test_vgg16(vgg16_analysis):
    a = vgg16_analysis
    assert a.total_params == 138_357_544
    cfg = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"]
    res, cin, hand = 224, 3, 0
    for v in cfg:
        if v == "M":
            res //= 2
        else:
            hand += res * res * 3 * 3 * cin * v
            cin = v
    conv_total = hand
    assert conv_total == 15_346_630_656
    hand += 7 * 7 * 512 * 4096 + 4096 * 4096 + 4096 * 1000  # fc1, fc2, predictions
    # 15,346,630,656 (conv) + 123,633,664 (fc) = 15,470,264,320 = 15.47G MACs
    assert a.total_macs == hand == 15_470_264_320
    assert human(a.total_macs) == "15.47G"
    # The well-known VGG16 receptive field: 212 px at block5_pool (jump 32).
    assert (a.receptive_field, a.jump, a.receptive_field_layer) == (212, 32, "block5_pool")
