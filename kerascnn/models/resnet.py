"""Residual networks and their relatives.

- ``resnet18/34/50/101/152``: ImageNet ResNets (He et al. 2016), v1 layout of keras.applications
  (7x7/2 stem, 3x3/2 max pool, four stages, stride on the first conv of a downsampling block,
  projection shortcuts where the shape changes, global average pooling and one Dense). Layer names
  (``conv2_block1_1_conv``) and parameter counts equal keras.applications ResNet50/101/152.
- ``resnet20/32/44/56/110`` and ``plain20/32/44/56/110``: the CIFAR networks of He et al. 2016,
  Sec. 4.2 (6n+2 layers, 16-32-64 filters), with option A (zero-padded identity) or option B
  (projection) shortcuts, or none at all for the plain nets.
- ``wrn``: Wide ResNet (Zagoruyko & Komodakis 2016), pre-activation basic blocks, depth d, widening k.
- ``resnext50_32x4d``, ``resnext101_32x4d``, ``resnext29_8x64d``: ResNeXt (Xie et al. 2017),
  aggregated residual transformations as grouped convolutions (``Conv2D(groups=...)``).
"""

from __future__ import annotations

from keras import layers

from .blocks import (
    bn_relu,
    check_common_args,
    classifier,
    finish,
    global_pool,
    model_input,
    model_inputs,
    pooled_features,
    resolve_input_shape,
)
from .registry import register_model, register_variant

BN_EPS = 1.001e-5  # keras.applications ResNet


def _conv(x, filters, kernel_size, name, strides=1, groups=1, use_bias=False, padding="same"):
    return layers.Conv2D(
        filters,
        kernel_size,
        strides=strides,
        padding=padding,
        groups=groups,
        use_bias=use_bias,
        kernel_initializer="he_normal",
        name=name,
    )(x)


def _bn(x, name):
    return layers.BatchNormalization(epsilon=BN_EPS, name=name)(x)


# ---------------------------------------------------------------------------------------------------
# Blocks (post-activation, v1)
# ---------------------------------------------------------------------------------------------------


def _projection(x, filters, stride, name, use_bias):
    x = _conv(x, filters, 1, f"{name}_0_conv", strides=stride, use_bias=use_bias, padding="valid")
    return _bn(x, f"{name}_0_bn")


def _zero_pad_identity(x, filters, stride, name):
    """Option A shortcut: subsample by ``stride`` and zero-pad the channels, with no parameters.

    Subsampling is a 1x1 max pool with stride 2 (it picks x[:, ::2, ::2]). The channel padding uses
    ZeroPadding2D in channels_first mode on a channels-last tensor: it then pads the last two axes
    (width by 0, channels by ``pad``), a plain PAD op in TFLite and ONNX, and no custom layer.
    """
    in_channels = x.shape[-1]
    if stride != 1:
        x = layers.MaxPooling2D(1, strides=stride, name=f"{name}_0_subsample")(x)
    extra = filters - in_channels
    if extra:
        before = extra // 2
        x = layers.ZeroPadding2D(
            ((0, 0), (before, extra - before)), data_format="channels_first", name=f"{name}_0_pad"
        )(x)
    return x


def _shortcut(x, filters, stride, name, shortcut, use_bias):
    if shortcut is None:
        return None
    if stride == 1 and x.shape[-1] == filters:
        return x
    if shortcut == "A":
        return _zero_pad_identity(x, filters, stride, name)
    return _projection(x, filters, stride, name, use_bias)


def _merge(x, short, name):
    if short is not None:
        x = layers.Add(name=f"{name}_add")([short, x])
    return layers.Activation("relu", name=f"{name}_out")(x)


def _basic_block(x, filters, stride, name, shortcut="B", use_bias=False):
    """Two 3x3 convs (ResNet-18/34 and the CIFAR nets). ``shortcut``: "A", "B" or None (plain)."""
    short = _shortcut(x, filters, stride, name, shortcut, use_bias)
    x = _conv(x, filters, 3, f"{name}_1_conv", strides=stride, use_bias=use_bias)
    x = layers.Activation("relu", name=f"{name}_1_relu")(_bn(x, f"{name}_1_bn"))
    x = _bn(_conv(x, filters, 3, f"{name}_2_conv", use_bias=use_bias), f"{name}_2_bn")
    return _merge(x, short, name)


def _bottleneck_block(
    x, filters, stride, name, groups=1, base_width=64, use_bias=False, stride_in_1x1=True, shortcut="B"
):
    """1x1 reduce, 3x3 (grouped for ResNeXt), 1x1 expand to ``4 * filters``.

    ``width = filters * base_width / 64 * groups`` is the bottleneck width: ``filters`` for ResNet,
    ``groups * d`` in ResNeXt's "C x d" notation. keras.applications ResNet (v1) strides the first 1x1
    conv; ResNeXt strides the 3x3.
    """
    width = int(filters * base_width / 64) * groups
    out = 4 * filters
    short = _shortcut(x, out, stride, name, shortcut, use_bias)
    s1, s3 = (stride, 1) if stride_in_1x1 else (1, stride)
    x = _conv(x, width, 1, f"{name}_1_conv", strides=s1, use_bias=use_bias, padding="valid")
    x = layers.Activation("relu", name=f"{name}_1_relu")(_bn(x, f"{name}_1_bn"))
    x = _conv(x, width, 3, f"{name}_2_conv", strides=s3, groups=groups, use_bias=use_bias)
    x = layers.Activation("relu", name=f"{name}_2_relu")(_bn(x, f"{name}_2_bn"))
    x = _bn(_conv(x, out, 1, f"{name}_3_conv", use_bias=use_bias, padding="valid"), f"{name}_3_bn")
    return _merge(x, short, name)


def _stack(x, block_fn, filters, blocks, stride, name, **block_kwargs):
    for i in range(1, blocks + 1):
        x = block_fn(x, filters, stride if i == 1 else 1, f"{name}_block{i}", **block_kwargs)
    return x


def _head(x, include_top, pooling, num_classes, classifier_activation):
    if include_top:
        return classifier(global_pool(x, pooling, name="avg_pool"), num_classes, classifier_activation)
    return pooled_features(x, pooling)


# ---------------------------------------------------------------------------------------------------
# ImageNet ResNet / ResNeXt
# ---------------------------------------------------------------------------------------------------

IMAGENET_DEPTHS = {
    18: (2, 2, 2, 2),
    34: (3, 4, 6, 3),
    50: (3, 4, 6, 3),
    101: (3, 4, 23, 3),
    152: (3, 8, 36, 3),
}


def ResNet(
    model_name: str,
    depths,
    bottleneck: bool,
    use_bias: bool = True,
    groups: int = 1,
    base_width: int = 64,
    stride_in_1x1: bool = True,
    input_shape=None,
    num_classes: int = 1000,
    include_top: bool = True,
    pooling=None,
    weights=None,
    classifier_activation="softmax",
    input_tensor=None,
    default_shape=(224, 224, 3),
    min_size: int = 32,
):
    """Generic ImageNet ResNet/ResNeXt: 7x7/2 stem, 3x3/2 max pool, four stages (64-128-256-512)."""
    check_common_args(model_name, include_top, pooling, num_classes, weights)
    input_shape = resolve_input_shape(
        model_name, input_shape, default_shape, min_size, allow_none=True, input_tensor=input_tensor
    )
    img_input = model_input(input_shape, input_tensor)

    x = layers.ZeroPadding2D(3, name="conv1_pad")(img_input)
    x = _conv(x, 64, 7, "conv1_conv", strides=2, use_bias=use_bias, padding="valid")
    x = layers.Activation("relu", name="conv1_relu")(_bn(x, "conv1_bn"))
    x = layers.ZeroPadding2D(1, name="pool1_pad")(x)
    x = layers.MaxPooling2D(3, strides=2, name="pool1_pool")(x)

    if bottleneck:
        block_fn, kwargs = (
            _bottleneck_block,
            dict(groups=groups, base_width=base_width, use_bias=use_bias, stride_in_1x1=stride_in_1x1),
        )
    else:
        block_fn, kwargs = _basic_block, dict(use_bias=use_bias)
    for stage, (blocks, filters) in enumerate(zip(depths, (64, 128, 256, 512), strict=True)):
        x = _stack(x, block_fn, filters, blocks, 1 if stage == 0 else 2, f"conv{stage + 2}", **kwargs)

    x = _head(x, include_top, pooling, num_classes, classifier_activation)
    return finish(model_name, model_inputs(img_input, input_tensor), x, weights)


_IMAGENET = dict(family="resnet", input_shape=(224, 224, 3), num_classes=1000, min_size=32)
resnet18 = register_variant(
    ResNet,
    "resnet18",
    **_IMAGENET,
    depths=IMAGENET_DEPTHS[18],
    bottleneck=False,
    use_bias=False,
    reference="He et al. 2016; torchvision resnet18: 11,689,512",
    params=11_689_512,
    doc="ResNet-18: basic blocks (2, 2, 2, 2).",
)
resnet34 = register_variant(
    ResNet,
    "resnet34",
    **_IMAGENET,
    depths=IMAGENET_DEPTHS[34],
    bottleneck=False,
    use_bias=False,
    reference="He et al. 2016; torchvision resnet34: 21,797,672",
    params=21_797_672,
    doc="ResNet-34: basic blocks (3, 4, 6, 3).",
)
resnet50 = register_variant(
    ResNet,
    "resnet50",
    **_IMAGENET,
    depths=IMAGENET_DEPTHS[50],
    bottleneck=True,
    reference="keras.applications ResNet50: 25,636,712",
    doc="ResNet-50: bottleneck blocks (3, 4, 6, 3), keras.applications layout.",
)
resnet101 = register_variant(
    ResNet,
    "resnet101",
    **_IMAGENET,
    depths=IMAGENET_DEPTHS[101],
    bottleneck=True,
    reference="keras.applications ResNet101: 44,707,176",
    doc="ResNet-101: bottleneck blocks (3, 4, 23, 3), keras.applications layout.",
)
resnet152 = register_variant(
    ResNet,
    "resnet152",
    **_IMAGENET,
    depths=IMAGENET_DEPTHS[152],
    bottleneck=True,
    reference="keras.applications ResNet152: 60,419,944",
    doc="ResNet-152: bottleneck blocks (3, 8, 36, 3), keras.applications layout.",
)

_RESNEXT = dict(_IMAGENET, family="resnext")
resnext50_32x4d = register_variant(
    ResNet,
    "resnext50_32x4d",
    **_RESNEXT,
    depths=(3, 4, 6, 3),
    bottleneck=True,
    groups=32,
    base_width=4,
    use_bias=False,
    stride_in_1x1=False,
    reference="Xie et al. 2017: 25.0M; torchvision resnext50_32x4d: 25,028,904",
    params=25_028_904,
    paper="25.0",
    doc="ResNeXt-50 (32x4d): cardinality 32, bottleneck width 4 per group.",
)
resnext101_32x4d = register_variant(
    ResNet,
    "resnext101_32x4d",
    **_RESNEXT,
    depths=(3, 4, 23, 3),
    bottleneck=True,
    groups=32,
    base_width=4,
    use_bias=False,
    stride_in_1x1=False,
    reference="Xie et al. 2017: 44.2M",
    doc="ResNeXt-101 (32x4d): cardinality 32, bottleneck width 4 per group.",
)


# ---------------------------------------------------------------------------------------------------
# CIFAR ResNet / plain nets, Wide ResNet, CIFAR ResNeXt
# ---------------------------------------------------------------------------------------------------

SHORTCUTS = ("A", "B", None)


def CifarResNet(
    model_name: str,
    depth: int,
    shortcut="A",
    input_shape=None,
    num_classes: int = 10,
    include_top: bool = True,
    pooling=None,
    weights=None,
    classifier_activation="softmax",
    input_tensor=None,
    default_shape=(32, 32, 3),
    min_size: int = 4,
):
    """He et al. 2016 CIFAR network: 3x3 conv 16, then 3 stages of n basic blocks (16, 32, 64 filters),
    GAP and Dense; depth = 6n + 2. ``shortcut``: "A" zero-padded identity (the paper's CIFAR choice),
    "B" projection where the shape changes, None for the plain network."""
    check_common_args(model_name, include_top, pooling, num_classes, weights)
    if (depth - 2) % 6 or depth < 8:
        raise ValueError(f"{model_name}: depth must be 6n+2 (20, 32, 44, 56, 110, ...), got {depth}")
    if shortcut not in SHORTCUTS:
        raise ValueError(f"{model_name}: shortcut must be 'A', 'B' or None, got {shortcut!r}")
    input_shape = resolve_input_shape(
        model_name, input_shape, default_shape, min_size, allow_none=True, input_tensor=input_tensor
    )
    img_input = model_input(input_shape, input_tensor)
    n = (depth - 2) // 6

    x = _conv(img_input, 16, 3, "conv1_conv")
    x = layers.Activation("relu", name="conv1_relu")(_bn(x, "conv1_bn"))
    for stage, filters in enumerate((16, 32, 64)):
        x = _stack(
            x, _basic_block, filters, n, 1 if stage == 0 else 2, f"stage{stage + 1}", shortcut=shortcut
        )
    x = _head(x, include_top, pooling, num_classes, classifier_activation)
    return finish(model_name, model_inputs(img_input, input_tensor), x, weights)


_CIFAR = dict(input_shape=(32, 32, 3), num_classes=10, min_size=4)


def _cifar_resnet(depth: int, params: int, paper: str):
    return register_variant(
        CifarResNet,
        f"resnet{depth}",
        family="resnet_cifar",
        **_CIFAR,
        depth=depth,
        reference=f"He et al. 2016 Table 6: {paper}M",
        doc=f"ResNet-{depth} for CIFAR (option A shortcuts by default; shortcut='B' for projections).",
        params=params,
        paper=paper,
    )


def _plain(depth: int, params: int):
    return register_variant(
        CifarResNet,
        f"plain{depth}",
        family="resnet_cifar",
        **_CIFAR,
        depth=depth,
        shortcut=None,
        reference="He et al. 2016 Fig. 6 (plain baseline)",
        doc=f"Plain-{depth}: the CIFAR ResNet-{depth} without shortcut connections.",
        params=params,  # option A shortcuts have no parameters: the ResNet's count
    )


# He et al. 2016 Table 6 (0.27M / 0.46M / 0.66M / 0.85M / 1.7M), counted as PyTorch counts trainable
# tensors (conv, BN gamma/beta, Dense): the exact figures of the reference code.
resnet20 = _cifar_resnet(20, 269_722, "0.27")
resnet32 = _cifar_resnet(32, 464_154, "0.46")
resnet44 = _cifar_resnet(44, 658_586, "0.66")
resnet56 = _cifar_resnet(56, 853_018, "0.85")
resnet110 = _cifar_resnet(110, 1_727_962, "1.7")
plain20 = _plain(20, 269_722)
plain32 = _plain(32, 464_154)
plain44 = _plain(44, 658_586)
plain56 = _plain(56, 853_018)
plain110 = _plain(110, 1_727_962)


def _wide_block(x, filters, stride, name, dropout=0.0):
    """Pre-activation basic block B(3,3) with dropout between the convs (Zagoruyko & Komodakis)."""
    preact = bn_relu(x, f"{name}_0")
    if stride == 1 and x.shape[-1] == filters:
        short = x
    else:  # the projection sees the pre-activated input, as in the reference implementation
        short = _conv(preact, filters, 1, f"{name}_0_conv", strides=stride, padding="valid")
    y = _conv(preact, filters, 3, f"{name}_1_conv", strides=stride)
    y = bn_relu(y, f"{name}_1")
    if dropout:
        y = layers.Dropout(dropout, name=f"{name}_dropout")(y)
    y = _conv(y, filters, 3, f"{name}_2_conv")
    return layers.Add(name=f"{name}_add")([short, y])


def WideResNet(
    model_name: str,
    depth: int = 28,
    width: int = 10,
    dropout: float = 0.0,
    input_shape=None,
    num_classes: int = 10,
    include_top: bool = True,
    pooling=None,
    weights=None,
    classifier_activation="softmax",
    input_tensor=None,
    default_shape=(32, 32, 3),
    min_size: int = 4,
):
    """Wide ResNet WRN-d-k: depth d = 6n + 4, groups of 16k, 32k, 64k filters."""
    check_common_args(model_name, include_top, pooling, num_classes, weights)
    if (depth - 4) % 6 or depth < 10:
        raise ValueError(f"{model_name}: depth must be 6n+4 (10, 16, 22, 28, 40, ...), got {depth}")
    if width < 1:
        raise ValueError(f"{model_name}: the widening factor must be >= 1, got {width}")
    input_shape = resolve_input_shape(
        model_name, input_shape, default_shape, min_size, allow_none=True, input_tensor=input_tensor
    )
    img_input = model_input(input_shape, input_tensor)
    n = (depth - 4) // 6

    x = _conv(img_input, 16, 3, "conv1_conv")
    for stage, filters in enumerate((16 * width, 32 * width, 64 * width)):
        x = _stack(x, _wide_block, filters, n, 1 if stage == 0 else 2, f"stage{stage + 1}", dropout=dropout)
    x = bn_relu(x, "post")
    x = _head(x, include_top, pooling, num_classes, classifier_activation)
    return finish(model_name, model_inputs(img_input, input_tensor), x, weights)


@register_model(
    family="wrn", input_shape=(32, 32, 3), num_classes=10, min_size=4, reference="Zagoruyko & Komodakis 2016"
)
def wrn(depth: int = 16, width: int = 4, dropout: float = 0.0, **kwargs):
    """Wide ResNet with any depth d (6n+4) and widening factor k: ``wrn(depth=28, width=10)``; the
    other arguments are keras.applications' (``input_shape``, ``num_classes``, ``include_top``, ...)."""
    return WideResNet(f"wrn{depth}_{width}", depth=depth, width=width, dropout=dropout, **kwargs)


def _wrn(depth: int, width: int, paper: str, params: int | None = None):
    return register_variant(
        WideResNet,
        f"wrn{depth}_{width}",
        family="wrn",
        **_CIFAR,
        depth=depth,
        width=width,
        reference=f"Zagoruyko & Komodakis 2016: {paper}M",
        doc=f"WRN-{depth}-{width}.",
        params=params,
        paper=paper,
    )


wrn16_4 = _wrn(16, 4, "2.7")
wrn16_8 = _wrn(16, 8, "11.0")
wrn28_10 = _wrn(28, 10, "36.5", params=36_479_194)  # the reference WRN code's count
wrn40_4 = _wrn(40, 4, "8.9")


def CifarResNeXt(
    model_name: str,
    depth: int = 29,
    cardinality: int = 8,
    bottleneck_width: int = 64,
    input_shape=None,
    num_classes: int = 10,
    include_top: bool = True,
    pooling=None,
    weights=None,
    classifier_activation="softmax",
    input_tensor=None,
    default_shape=(32, 32, 3),
    min_size: int = 4,
):
    """ResNeXt for CIFAR (Xie et al. 2017, Sec. 5.3): 3x3 conv 64, three stages of (depth-2)/9
    bottleneck blocks with outputs 256-512-1024 and cardinality x width grouped 3x3 convs."""
    check_common_args(model_name, include_top, pooling, num_classes, weights)
    if (depth - 2) % 9:
        raise ValueError(f"{model_name}: depth must be 9n+2 (29, ...), got {depth}")
    input_shape = resolve_input_shape(
        model_name, input_shape, default_shape, min_size, allow_none=True, input_tensor=input_tensor
    )
    img_input = model_input(input_shape, input_tensor)
    n = (depth - 2) // 9

    x = _conv(img_input, 64, 3, "conv1_conv")
    x = layers.Activation("relu", name="conv1_relu")(_bn(x, "conv1_bn"))
    for stage, filters in enumerate((64, 128, 256)):
        x = _stack(
            x,
            _bottleneck_block,
            filters,
            n,
            1 if stage == 0 else 2,
            f"stage{stage + 1}",
            groups=cardinality,
            base_width=bottleneck_width,
            stride_in_1x1=False,
        )
    x = _head(x, include_top, pooling, num_classes, classifier_activation)
    return finish(model_name, model_inputs(img_input, input_tensor), x, weights)


resnext29_8x64d = register_variant(
    CifarResNeXt,
    "resnext29_8x64d",
    family="resnext",
    **_CIFAR,
    depth=29,
    cardinality=8,
    bottleneck_width=64,
    reference="Xie et al. 2017 Table 7: 34.4M",
    paper="34.4",
    doc="ResNeXt-29 (8x64d) for CIFAR.",
)
