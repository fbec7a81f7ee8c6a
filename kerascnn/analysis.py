"""Analysis of Keras 3 functional CNN models (channels-last).

This module is pure numpy + keras.  It provides

* closed-form formulas for parameter counts and multiply-accumulate counts (MACs) of the usual
  CNN building blocks (:func:`conv_params`, :func:`separable_conv_params`, :func:`conv_macs`, ...),
* :func:`conv_output_size` (valid / same / full padding, strides, dilation),
* :func:`receptive_field` for a chain of layers,
* :func:`analyze`, which walks the graph of a functional (or built Sequential) model in topological
  order and reports, per layer call, the output shape, parameters, MACs, receptive field and jump
  (effective stride); :func:`format_summary` renders it as a fixed-width text table,
* :func:`conv_as_dense`, which unrolls a ``Conv2D`` layer into the equivalent dense matrix (to show
  weight sharing and the sparsity pattern of a convolution).

Conventions
-----------
MACs (multiply-accumulates, "mult-adds" in the MobileNet paper) are counted **only** for the layers
that do multiplications with weights:

* ``Conv1D/2D/3D``: ``prod(out_spatial) * prod(kernel) * (C_in / groups) * filters``;
* ``DepthwiseConv1D/2D``: ``prod(out_spatial) * prod(kernel) * C_in * depth_multiplier``;
* ``SeparableConv1D/2D``: the depthwise part at output resolution plus the pointwise part
  ``prod(out_spatial) * C_in * depth_multiplier * filters``;
* ``Conv1D/2D/3DTranspose``: ``prod(in_spatial) * prod(kernel) * C_in * filters``;
* ``Dense``: ``in_features * units`` times the number of leading non-batch positions (a ``Dense`` on
  a rank-4 tensor is a 1x1 convolution);
* nested models (a ``keras.Model`` used as a layer): the MACs of the sub-model, analysed recursively.

Everything else counts **0 MACs**: bias additions, BatchNormalization (it can be folded into the
preceding convolution), activations, pooling, padding, Add/Concatenate/Multiply and the other merge
layers, Dropout, Reshape/Flatten.  Layers with weights that are not recognised get 0 MACs and a note.

Receptive field (RF) and jump (the distance in input pixels between two adjacent outputs, i.e. the
effective stride) are tracked per spatial axis with the classic recurrence: a layer with kernel
``k``, dilation ``d`` and stride ``s`` maps ``(rf, jump)`` to ``(rf + (d*(k-1)) * jump, jump * s)``.
Convolutions (incl. depthwise and separable) and max/average pooling update them; padding, cropping,
normalisation, activations, dropout, etc. pass them through; merge layers take the maximum over
their inputs (an input that is already global, e.g. a squeeze-and-excitation gate, makes the
result global); global pooling, Flatten, Reshape and Dense on a flat vector make the RF "global"
(reported as ``None``).  Transposed convolutions and UpSampling divide the jump by their stride
(it may become fractional and is then reported as a float); a nested model composes its own RF and
jump with those of its input.  The reported RF of a layer is the maximum over its spatial axes.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

import keras
import numpy as np

from .keras_internals import nodes_by_depth, producer

__all__ = [
    "LayerStats",
    "ModelAnalysis",
    "analyze",
    "conv_as_dense",
    "conv_macs",
    "conv_output_size",
    "conv_params",
    "dense_macs",
    "dense_params",
    "depthwise_macs",
    "depthwise_params",
    "format_summary",
    "human",
    "receptive_field",
    "separable_conv_macs",
    "separable_conv_params",
]

# ----------------------------------------------------------------------------------------------
# Formulas
# ----------------------------------------------------------------------------------------------


def _kernel_hw(kernel_size: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(kernel_size, int | np.integer):
        k = int(kernel_size)
        return k, k
    ks = tuple(int(k) for k in kernel_size)
    if len(ks) == 1:
        return ks[0], ks[0]
    if len(ks) != 2:
        raise ValueError(f"kernel_size must be an int or a (kh, kw) pair, got {kernel_size!r}")
    return ks


def _kernel_area(kernel_size: int | Sequence[int]) -> int:
    kh, kw = _kernel_hw(kernel_size)
    if kh < 1 or kw < 1:
        raise ValueError(f"kernel_size must be >= 1, got {kernel_size!r}")
    return kh * kw


def _check_groups(in_channels: int, filters: int, groups: int) -> None:
    if groups < 1 or in_channels % groups or filters % groups:
        raise ValueError(f"groups={groups} must divide both in_channels={in_channels} and filters={filters}")


def conv_params(
    kernel_size: int | Sequence[int],
    in_channels: int,
    filters: int,
    use_bias: bool = True,
    groups: int = 1,
) -> int:
    """Parameters of a (grouped) convolution: ``N_F * (kh*kw*K/groups + 1)`` (the ``+1`` if bias)."""
    _check_groups(in_channels, filters, groups)
    return filters * (_kernel_area(kernel_size) * (in_channels // groups) + int(use_bias))


def depthwise_params(
    kernel_size: int | Sequence[int],
    in_channels: int,
    depth_multiplier: int = 1,
    use_bias: bool = True,
) -> int:
    """Parameters of a depthwise convolution: ``kh*kw*K*dm`` (+ ``K*dm`` biases)."""
    out_channels = in_channels * depth_multiplier
    return _kernel_area(kernel_size) * out_channels + (out_channels if use_bias else 0)


def separable_conv_params(
    kernel_size: int | Sequence[int],
    in_channels: int,
    filters: int,
    depth_multiplier: int = 1,
    use_bias: bool = True,
) -> int:
    """Parameters of a separable convolution: ``kh*kw*K*dm + K*dm*N_F`` (+ ``N_F`` biases).

    Keras ``SeparableConv2D`` only has a bias on the pointwise part.
    """
    mid = in_channels * depth_multiplier
    return _kernel_area(kernel_size) * mid + mid * filters + (filters if use_bias else 0)


def dense_params(in_features: int, units: int, use_bias: bool = True) -> int:
    """Parameters of a fully connected layer: ``units * (in_features + 1)`` (the ``+1`` if bias)."""
    return units * (in_features + int(use_bias))


def conv_macs(
    out_h: int,
    out_w: int,
    kernel_size: int | Sequence[int],
    in_channels: int,
    filters: int,
    groups: int = 1,
) -> int:
    """MACs of a (grouped) convolution: ``out_h*out_w*kh*kw*(K/groups)*N_F``."""
    _check_groups(in_channels, filters, groups)
    return out_h * out_w * _kernel_area(kernel_size) * (in_channels // groups) * filters


def depthwise_macs(
    out_h: int,
    out_w: int,
    kernel_size: int | Sequence[int],
    in_channels: int,
    depth_multiplier: int = 1,
) -> int:
    """MACs of a depthwise convolution: ``out_h*out_w*kh*kw*K*dm``."""
    return out_h * out_w * _kernel_area(kernel_size) * in_channels * depth_multiplier


def separable_conv_macs(
    out_h: int,
    out_w: int,
    kernel_size: int | Sequence[int],
    in_channels: int,
    filters: int,
    depth_multiplier: int = 1,
) -> int:
    """MACs of a separable convolution: depthwise at output resolution + pointwise ``1x1``.

    ``out_h*out_w*(kh*kw*K*dm + K*dm*N_F)``.  The ratio to a standard convolution with the same
    kernel is ``1/N_F + 1/(kh*kw)`` for ``dm == 1`` (MobileNet paper, eq. 5).
    """
    dw = depthwise_macs(out_h, out_w, kernel_size, in_channels, depth_multiplier)
    return dw + out_h * out_w * in_channels * depth_multiplier * filters


def dense_macs(in_features: int, units: int) -> int:
    """MACs of a fully connected layer: ``in_features * units``."""
    return in_features * units


# ----------------------------------------------------------------------------------------------
# Output size and receptive field
# ----------------------------------------------------------------------------------------------


def conv_output_size(
    n: int, kernel_size: int, stride: int = 1, padding: str = "valid", dilation: int = 1
) -> int:
    """Spatial output size of a convolution / pooling along one axis.

    With ``k_eff = dilation*(k-1) + 1``:

    * ``valid``: ``floor((n - k_eff) / s) + 1``
    * ``same``:  ``ceil(n / s)``
    * ``full``:  ``floor((n + k_eff - 2) / s) + 1`` (``n + k - 1`` for stride 1, no dilation)

    Raises ``ValueError`` for an unknown padding, non-positive arguments, or an output < 1.
    """
    if n < 1:
        raise ValueError(f"input size must be >= 1, got n={n}")
    if kernel_size < 1:
        raise ValueError(f"kernel_size must be >= 1, got {kernel_size}")
    if stride < 1:
        raise ValueError(f"stride must be >= 1, got {stride}")
    if dilation < 1:
        raise ValueError(f"dilation must be >= 1, got {dilation}")
    k_eff = dilation * (kernel_size - 1) + 1
    padding = padding.lower()
    if padding == "valid":
        if n < k_eff:
            raise ValueError(
                f"output size would be < 1: input size {n} is smaller than the effective kernel "
                f"size {k_eff} (kernel {kernel_size}, dilation {dilation}) with 'valid' padding"
            )
        return (n - k_eff) // stride + 1
    if padding == "same":
        return -(-n // stride)
    if padding == "full":
        return (n + k_eff - 2) // stride + 1
    raise ValueError(f"unknown padding {padding!r}; expected 'valid', 'same' or 'full'")


def receptive_field(
    kernel_sizes: Sequence[int],
    strides: Sequence[int],
    dilations: Sequence[int] | None = None,
) -> tuple[int, int]:
    """Receptive field and jump after a chain of layers (one spatial axis).

    Starting from ``rf = 1, jump = 1``, each layer does ``rf += (k_eff - 1) * jump`` and then
    ``jump *= stride``, with ``k_eff = dilation*(k-1) + 1``.  Three 3x3 stride-1 convolutions have
    the receptive field of one 7x7 convolution: ``receptive_field([3, 3, 3], [1, 1, 1]) == (7, 1)``.
    """
    kernel_sizes = list(kernel_sizes)
    strides = list(strides)
    dilations = [1] * len(kernel_sizes) if dilations is None else list(dilations)
    if not len(kernel_sizes) == len(strides) == len(dilations):
        raise ValueError(
            f"kernel_sizes, strides and dilations must have the same length, got "
            f"{len(kernel_sizes)}, {len(strides)}, {len(dilations)}"
        )
    rf, jump = 1, 1
    for k, s, d in zip(kernel_sizes, strides, dilations, strict=True):
        if k < 1 or s < 1 or d < 1:
            raise ValueError(f"kernel, stride and dilation must be >= 1, got k={k}, s={s}, d={d}")
        rf += d * (k - 1) * jump
        jump *= s
    return rf, jump


# ----------------------------------------------------------------------------------------------
# Model analysis
# ----------------------------------------------------------------------------------------------

Shape = tuple[int | None, ...]


@dataclass
class LayerStats:
    """One row of :func:`analyze`: one call (graph node) of a layer."""

    name: str
    class_name: str
    output_shape: Shape | list[Shape]
    params: int
    trainable_params: int
    macs: int
    receptive_field: int | float | None  # None means "global"
    jump: int | float | None  # effective stride; None when global
    inbound: tuple[str, ...] = ()
    note: str = ""
    sub_analysis: ModelAnalysis | None = field(default=None, repr=False)


@dataclass
class ModelAnalysis:
    """Result of :func:`analyze`.

    ``receptive_field``/``jump`` are those of the spatial layer with the largest (finite) receptive
    field, which for a chain-like CNN is the last spatial layer before the head
    (``receptive_field_layer`` names it).
    """

    name: str
    rows: list[LayerStats]
    input_shape: Shape | list[Shape]
    total_params: int
    trainable_params: int
    non_trainable_params: int
    total_macs: int
    receptive_field: int | float | None
    jump: int | float | None
    receptive_field_layer: str | None
    output_receptive_fields: list[int | float | None] = field(default_factory=list)
    # Exact per-axis RF state of each model output (relative to the inputs); used for nested models.
    _output_states: list = field(default_factory=list, init=False, repr=False, compare=False)

    def row(self, name: str) -> LayerStats:
        """The (first) row of the layer called ``name``."""
        for r in self.rows:
            if r.name == name:
                return r
        raise KeyError(name)


# Internal receptive-field state of a tensor: (rf per spatial axis, jump per spatial axis), or
# None for "global".
_RF = tuple[tuple[Fraction, ...], tuple[Fraction, ...]] | None


def _num(x: Fraction) -> int | float:
    return int(x) if x.denominator == 1 else float(x)


def _rf_report(state: _RF) -> tuple[int | float | None, int | float | None]:
    if state is None:
        return None, None
    rf, jump = state
    if not rf:  # no spatial axes (vector input)
        return 1, 1
    return _num(max(rf)), _num(max(jump))


def _merge_states(states: list[_RF]) -> _RF:
    if not states or any(s is None for s in states):
        return None
    n = len(states[0][0])
    if any(len(s[0]) != n for s in states):
        return None
    rf = tuple(max(s[0][i] for s in states) for i in range(n))
    jump = tuple(max(s[1][i] for s in states) for i in range(n))
    return rf, jump


def _apply_window(state: _RF, kernel, strides, dilation=None) -> _RF:
    if state is None:
        return None
    rf, jump = state
    kernel, strides = tuple(kernel), tuple(strides)
    dilation = (1,) * len(kernel) if dilation is None else tuple(dilation)
    if len(rf) != len(kernel):
        return None
    new_rf = tuple(r + d * (k - 1) * j for r, j, k, d in zip(rf, jump, kernel, dilation, strict=True))
    new_jump = tuple(j * s for j, s in zip(jump, strides, strict=True))
    return new_rf, new_jump


def _apply_upsample(state: _RF, kernel, strides, dilation=None) -> _RF:
    """Transposed convolution / upsampling: the jump shrinks by the stride (may become fractional)."""
    if state is None:
        return None
    rf, jump = state
    kernel, strides = tuple(kernel), tuple(strides)
    dilation = (1,) * len(kernel) if dilation is None else tuple(dilation)
    if len(rf) != len(kernel):
        return None
    new_rf = []
    for r, j, k, s, d in zip(rf, jump, kernel, strides, dilation, strict=True):
        k_eff = d * (k - 1) + 1
        span = -(-k_eff // s)  # number of consecutive inputs an output can depend on
        new_rf.append(r + (span - 1) * j)
    new_jump = tuple(Fraction(j) / s for j, s in zip(jump, strides, strict=True))
    return tuple(new_rf), new_jump


def _compose(outer: _RF, inner: _RF) -> _RF:
    """RF state after a sub-model whose own (relative) RF state is ``inner``."""
    if outer is None or inner is None:
        return None
    (r0, j0), (r1, j1) = outer, inner
    if len(r0) != len(r1):
        return None
    rf = tuple(a + (b - 1) * j for a, b, j in zip(r0, r1, j0, strict=True))
    jump = tuple(a * b for a, b in zip(j0, j1, strict=True))
    return rf, jump


def _shape_of(t) -> Shape:
    return tuple(None if d is None else int(d) for d in t.shape)


def _prod(xs: Iterable[int | None]) -> int | None:
    p = 1
    for x in xs:
        if x is None:
            return None
        p *= int(x)
    return p


def _weights_size(weights) -> int:
    return int(sum(math.prod(w.shape) for w in weights))


def _as_functional(model):
    """The Functional graph of a model (of a built Sequential: a Functional over its own calls)."""
    if isinstance(model, keras.Sequential):
        try:
            inputs, outputs = model.inputs, model.outputs
        except AttributeError:  # no graph yet
            inputs = outputs = None
        if not inputs:
            raise ValueError(
                f"Sequential model {model.name!r} has no input shape: build it or start it with "
                "keras.Input(...)"
            )
        return keras.Model(inputs, outputs, name=model.name)  # the same layers and calls, no new node
    if nodes_by_depth(model) is None or not hasattr(model, "inputs"):
        raise TypeError(
            f"{type(model).__name__} is not a functional Keras model; analyze() needs a graph "
            "(keras.Model(inputs, outputs) or a built keras.Sequential)"
        )
    return model


def _topological_nodes(fn) -> list:
    """Nodes of a Functional model from inputs to outputs, deterministic order."""
    op_index = {id(op): i for i, op in enumerate(fn.operations)}
    nodes = []
    by_depth = nodes_by_depth(fn)
    for depth in sorted(by_depth, reverse=True):
        # A node's parents always have a strictly larger depth, so any order within a depth works.
        level = list(by_depth[depth])
        level.sort(key=lambda n: op_index.get(id(n.operation), 0))
        nodes.extend(level)
    return nodes


_L = keras.layers
_CONV = (_L.Conv1D, _L.Conv2D, _L.Conv3D)
_DEPTHWISE = (_L.DepthwiseConv1D, _L.DepthwiseConv2D)
_SEPARABLE = (_L.SeparableConv1D, _L.SeparableConv2D)
_TRANSPOSE = (_L.Conv1DTranspose, _L.Conv2DTranspose, _L.Conv3DTranspose)
_POOL = (
    _L.MaxPooling1D,
    _L.MaxPooling2D,
    _L.MaxPooling3D,
    _L.AveragePooling1D,
    _L.AveragePooling2D,
    _L.AveragePooling3D,
)
_GLOBAL = (
    _L.GlobalAveragePooling1D,
    _L.GlobalAveragePooling2D,
    _L.GlobalAveragePooling3D,
    _L.GlobalMaxPooling1D,
    _L.GlobalMaxPooling2D,
    _L.GlobalMaxPooling3D,
    _L.Flatten,
    _L.Reshape,
)
_UPSAMPLE = (_L.UpSampling1D, _L.UpSampling2D, _L.UpSampling3D)
_PASS_THROUGH = (
    _L.ZeroPadding1D,
    _L.ZeroPadding2D,
    _L.ZeroPadding3D,
    _L.Cropping1D,
    _L.Cropping2D,
    _L.Cropping3D,
)
_ZERO_MAC_WITH_WEIGHTS = (
    _L.BatchNormalization,
    _L.LayerNormalization,
    _L.GroupNormalization,
    _L.Normalization,
    _L.PReLU,
    _L.Embedding,
)


def _check_channels_last(layer) -> None:
    fmt = getattr(layer, "data_format", "channels_last")
    if fmt not in (None, "channels_last"):
        raise NotImplementedError(f"layer {layer.name!r}: only channels_last is supported, got {fmt!r}")


def _layer_macs_and_rf(layer, in_shapes: list[Shape], out_shapes: list[Shape], in_states: list[_RF]):
    """(macs, rf_state, note) of one call of a plain (non-model) layer."""
    x_in = in_shapes[0] if in_shapes else ()
    x_out = out_shapes[0] if out_shapes else ()
    state = in_states[0] if in_states else None
    note = ""

    def spatial(shape: Shape) -> int | None:
        return _prod(shape[1:-1])

    if isinstance(layer, _TRANSPOSE):
        _check_channels_last(layer)
        n_in = spatial(x_in)
        macs = None if n_in is None else n_in * math.prod(layer.kernel_size) * x_in[-1] * layer.filters
        return macs, _apply_upsample(state, layer.kernel_size, layer.strides, layer.dilation_rate), note
    if isinstance(layer, _SEPARABLE):
        _check_channels_last(layer)
        n_out = spatial(x_out)
        mid = x_in[-1] * layer.depth_multiplier
        macs = None if n_out is None else n_out * (math.prod(layer.kernel_size) * mid + mid * layer.filters)
        return macs, _apply_window(state, layer.kernel_size, layer.strides, layer.dilation_rate), note
    if isinstance(layer, _DEPTHWISE):
        _check_channels_last(layer)
        n_out = spatial(x_out)
        macs = (
            None
            if n_out is None
            else n_out * math.prod(layer.kernel_size) * x_in[-1] * layer.depth_multiplier
        )
        return macs, _apply_window(state, layer.kernel_size, layer.strides, layer.dilation_rate), note
    if isinstance(layer, _CONV):
        _check_channels_last(layer)
        n_out = spatial(x_out)
        groups = getattr(layer, "groups", 1) or 1
        macs = (
            None
            if n_out is None
            else n_out * math.prod(layer.kernel_size) * (x_in[-1] // groups) * layer.filters
        )
        return macs, _apply_window(state, layer.kernel_size, layer.strides, layer.dilation_rate), note
    if isinstance(layer, _L.Dense):
        positions = _prod(x_in[1:-1])
        macs = None if positions is None else positions * x_in[-1] * layer.units
        # On a rank>2 tensor Dense acts pointwise (a 1x1 conv); on a flat vector it mixes everything.
        new_state = state if len(x_in) > 2 else None
        return macs, new_state, note
    if isinstance(layer, _POOL):
        _check_channels_last(layer)
        return 0, _apply_window(state, layer.pool_size, layer.strides), note
    if isinstance(layer, _GLOBAL):
        return 0, None, note
    if isinstance(layer, _UPSAMPLE):
        size = layer.size if isinstance(layer.size, tuple | list) else (layer.size,)
        return 0, _apply_upsample(state, (1,) * len(size), size), note
    if isinstance(layer, _PASS_THROUGH):
        return 0, state, note
    if len(in_states) > 1:
        # Merge layers (Add, Concatenate, Multiply, Average, Maximum, ...): max over the inputs.
        same_spatial = all(s[1:-1] == x_out[1:-1] for s in in_shapes) if x_out else False
        return 0, (_merge_states(in_states) if same_spatial else None), note
    if getattr(layer, "weights", None) and not isinstance(layer, _ZERO_MAC_WITH_WEIGHTS):
        note = "MACs not counted (unsupported layer type)"
    # Unknown or element-wise layers (BN, activations, Dropout, ...): pass the RF through when the
    # spatial shape is kept, otherwise give up ("global").
    if len(x_in) == len(x_out) and x_in[1:-1] == x_out[1:-1]:
        return 0, state, note
    return 0, None, note


def _input_state(shape: Shape) -> _RF:
    n = max(len(shape) - 2, 0)
    return (Fraction(1),) * n, (Fraction(1),) * n


def _normalise_input_shapes(input_shape, n_inputs: int) -> list[tuple[int, ...]] | None:
    if input_shape is None:
        return None
    if n_inputs == 1 and all(isinstance(d, int | np.integer | type(None)) for d in input_shape):
        shapes = [tuple(input_shape)]
    else:
        shapes = [tuple(s) for s in input_shape]
    if len(shapes) != n_inputs:
        raise ValueError(f"model has {n_inputs} inputs but {len(shapes)} input shapes were given")
    return shapes


def _analyze_graph(model, input_shape=None):
    """Rows, {output index: RF state relative to the inputs}, input shapes, ModelAnalysis fields."""
    fn = _as_functional(model)
    shapes_given = _normalise_input_shapes(input_shape, len(fn.inputs))
    model_shapes = [_shape_of(t)[1:] for t in fn.inputs]

    # If a different input shape is requested, propagate symbolic specs through the graph with
    # ``compute_output_spec`` (no new nodes are recorded; the model is left untouched).
    propagate = shapes_given is not None and [tuple(s) for s in shapes_given] != model_shapes
    specs: dict[int, Any] = {}  # id(original KerasTensor) -> KerasTensor with the analysed shape
    if propagate:
        for t, s in zip(fn.inputs, shapes_given, strict=True):
            specs[id(t)] = keras.KerasTensor(shape=(None, *s), dtype=t.dtype)
    else:
        for t in fn.inputs:
            specs[id(t)] = t

    states: dict[int, _RF] = {}
    for t in fn.inputs:
        states[id(t)] = _input_state(_shape_of(specs[id(t)]))

    rows: list[LayerStats] = []
    seen_layers: set[int] = set()
    tensor_names: dict[int, str] = {}
    for t in fn.inputs:
        made_by = producer(t)
        tensor_names[id(t)] = made_by.name if made_by is not None else "input"

    for node in _topological_nodes(fn):
        layer = node.operation
        if node.is_input:
            outs = node.outputs
            for t in outs:
                tensor_names[id(t)] = layer.name
            # Inputs of the model already have a state; InputLayer row:
            t = outs[0]
            if id(t) not in specs:  # input layer not among the model inputs (should not happen)
                continue
            shape = _shape_of(specs[id(t)])
            rf, jump = _rf_report(states[id(t)])
            rows.append(LayerStats(layer.name, type(layer).__name__, shape[1:], 0, 0, 0, rf, jump))
            continue

        in_tensors = node.input_tensors
        if any(id(t) not in specs for t in in_tensors):
            continue  # not computable from the model inputs (mirrors keras' own graph runner)
        if propagate:
            args, kwargs = node.arguments.fill_in(specs)
            out_specs = keras.tree.flatten(layer.compute_output_spec(*args, **kwargs))
        else:
            out_specs = list(node.outputs)
        for t, s in zip(node.outputs, out_specs, strict=True):
            specs[id(t)] = s
            tensor_names[id(t)] = layer.name
        in_shapes = [_shape_of(specs[id(t)]) for t in in_tensors]
        out_shapes = [_shape_of(s) for s in out_specs]
        in_states = [states[id(t)] for t in in_tensors]

        sub = None
        if isinstance(layer, keras.Model):
            try:
                sub_shapes = [s[1:] for s in in_shapes]
                sub = analyze(layer, sub_shapes if len(sub_shapes) > 1 else sub_shapes[0])
                macs: int | None = sub.total_macs
                inner = sub._output_states
                new_states = [_compose(_merge_states(in_states), st) for st in inner]
                note = f"nested model ({len(sub.rows)} rows)"
            except Exception as exc:  # pragma: no cover - defensive: never crash on sub-models
                macs, new_states, note = 0, [None] * len(out_specs), f"nested model, MACs not counted: {exc}"
        else:
            macs, st, note = _layer_macs_and_rf(layer, in_shapes, out_shapes, in_states)
            new_states = [st] * len(out_specs)
        if macs is None:
            macs = 0
            note = (note + "; " if note else "") + "MACs unknown (None spatial dims; pass input_shape)"
        for t, st in zip(node.outputs, new_states, strict=False):
            states[id(t)] = st

        first_call = id(layer) not in seen_layers
        seen_layers.add(id(layer))
        if first_call:
            # Plain keras.ops operations (e.g. ``x + y`` on KerasTensors) are not layers: no weights.
            params = _weights_size(getattr(layer, "weights", []))
            trainable = _weights_size(getattr(layer, "trainable_weights", []))
        else:
            params = trainable = 0
            note = (note + "; " if note else "") + "shared layer, params counted at first call"
        rf, jump = _rf_report(new_states[0] if new_states else None)
        out_shape: Shape | list[Shape] = (
            out_shapes[0][1:] if len(out_shapes) == 1 else [s[1:] for s in out_shapes]
        )
        rows.append(
            LayerStats(
                name=layer.name,
                class_name=type(layer).__name__,
                output_shape=out_shape,
                params=params,
                trainable_params=trainable,
                macs=int(macs),
                receptive_field=rf,
                jump=jump,
                inbound=tuple(tensor_names.get(id(t), "?") for t in in_tensors),
                note=note,
                sub_analysis=sub,
            )
        )

    output_states = [states.get(id(t)) for t in fn.outputs]
    used_shapes = [_shape_of(specs[id(t)])[1:] for t in fn.inputs]
    return fn, rows, output_states, used_shapes


def analyze(model, input_shape: Sequence[int] | Sequence[Sequence[int]] | None = None) -> ModelAnalysis:
    """Analyse a functional (or built Sequential) Keras 3 model, channels-last.

    Walks the graph in topological order and returns a :class:`ModelAnalysis` with one
    :class:`LayerStats` row per layer call (see the module docstring for the MAC and receptive-field
    conventions).

    ``input_shape`` (without batch, e.g. ``(224, 224, 3)``; a list of shapes for multi-input
    models) is needed when the model input has ``None`` spatial dimensions: output shapes are then
    computed by propagating symbolic specs through the existing layers (``compute_output_spec``);
    nothing is rebuilt and the model is not modified.
    """
    fn, rows, output_states, used_shapes = _analyze_graph(model, input_shape)
    total = _weights_size(model.weights)
    trainable = _weights_size(model.trainable_weights)

    best: LayerStats | None = None
    for r in rows:
        shape = r.output_shape if isinstance(r.output_shape, tuple) else r.output_shape[0]
        if r.receptive_field is None or len(shape) < 2:
            continue
        if best is None or r.receptive_field >= best.receptive_field:
            best = r
    result = ModelAnalysis(
        name=model.name,
        rows=rows,
        input_shape=used_shapes[0] if len(used_shapes) == 1 else used_shapes,
        total_params=total,
        trainable_params=trainable,
        non_trainable_params=total - trainable,
        total_macs=sum(r.macs for r in rows),
        receptive_field=best.receptive_field if best else None,
        jump=best.jump if best else None,
        receptive_field_layer=best.name if best else None,
        output_receptive_fields=[_rf_report(s)[0] for s in output_states],
    )
    result._output_states = output_states
    return result


# ----------------------------------------------------------------------------------------------
# Formatting
# ----------------------------------------------------------------------------------------------


def human(n: float) -> str:
    """Human-readable count: ``4253864 -> '4.25M'``, ``15470264320 -> '15.47G'``, ``568.7M``.

    Two decimals below 100 of the unit, one decimal from 100 on; units K, M, G, T (powers of 1000).
    """
    n = float(n)
    sign = "-" if n < 0 else ""
    n = abs(n)
    if n < 1000:
        return f"{sign}{n:g}"
    for unit, scale in (("K", 1e3), ("M", 1e6), ("G", 1e9), ("T", 1e12)):
        v = n / scale
        text = f"{v:.1f}" if v >= 100 else f"{v:.2f}"
        if float(text) < 1000 or unit == "T":
            return f"{sign}{text}{unit}"
    raise AssertionError("unreachable")


def _fmt_rf(x: int | float | None) -> str:
    if x is None:
        return "global"
    return str(x) if isinstance(x, int) else f"{x:.3g}"


def _fmt_shape(s) -> str:
    if isinstance(s, list):
        return ", ".join(_fmt_shape(x) for x in s)
    return "(" + ", ".join("?" if d is None else str(d) for d in s) + ")"


def format_summary(analysis: ModelAnalysis) -> str:
    """A fixed-width text table of the analysis plus totals lines."""
    headers = ("Layer", "Type", "Output shape", "Params", "MACs", "RF", "Jump")
    table = [
        (
            r.name,
            r.class_name,
            _fmt_shape(r.output_shape),
            f"{r.params:,}",
            f"{r.macs:,}",
            _fmt_rf(r.receptive_field),
            _fmt_rf(r.jump),
        )
        for r in analysis.rows
    ]
    widths = [max([len(h)] + [len(row[i]) for row in table]) for i, h in enumerate(headers)]
    right = {3, 4, 5, 6}

    def line(cells) -> str:
        return "  ".join(
            c.rjust(w) if i in right else c.ljust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        ).rstrip()

    sep = "-" * len(line(headers))
    out = [f"Model: {analysis.name}   input {_fmt_shape(analysis.input_shape)}", sep, line(headers), sep]
    out += [line(row) for row in table]
    out.append(sep)
    a = analysis
    out.append(
        f"Total params: {a.total_params:,} ({human(a.total_params)})   "
        f"trainable: {a.trainable_params:,}   non-trainable: {a.non_trainable_params:,}"
    )
    out.append(f"Total MACs: {human(a.total_macs)} ({a.total_macs:,})")
    where = f" at {a.receptive_field_layer}" if a.receptive_field_layer else ""
    out.append(f"Final receptive field: {_fmt_rf(a.receptive_field)} (jump {_fmt_rf(a.jump)}){where}")
    notes = [f"  {r.name}: {r.note}" for r in a.rows if r.note]
    if notes:
        out.append("Notes:")
        out += notes
    return "\n".join(out)


# ----------------------------------------------------------------------------------------------
# Convolution as a dense matrix
# ----------------------------------------------------------------------------------------------


def conv_as_dense(conv_layer, input_shape: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """Unroll a built Keras ``Conv2D`` into the equivalent dense (fully connected) layer.

    Returns ``(M, b)`` with ``M`` of shape ``(H*W*C, H_out*W_out*F)`` and ``b`` of length
    ``H_out*W_out*F`` such that ``x.reshape(-1) @ M + b == conv(x).reshape(-1)`` for a channels-last
    input ``x`` of shape ``(H, W, C)`` (C-order flattening, activation excluded).  Every column holds
    the same kernel values (weight sharing) and only ``kh*kw*C/groups`` nonzeros (sparsity).

    Supports any kernel size, strides, dilation, ``groups`` and ``padding`` ``"valid"`` or
    ``"same"`` (TensorFlow's split: ``pad_before = total // 2``).
    """
    if not isinstance(conv_layer, _L.Conv2D):
        raise TypeError(f"conv_as_dense expects a keras.layers.Conv2D, got {type(conv_layer).__name__}")
    _check_channels_last(conv_layer)
    H, W, C = (int(d) for d in input_shape)
    kernel = np.asarray(keras.ops.convert_to_numpy(conv_layer.kernel), dtype=np.float64)
    kh, kw, cpg, F = kernel.shape
    groups = getattr(conv_layer, "groups", 1) or 1
    if cpg * groups != C:
        raise ValueError(f"input has {C} channels but the layer expects {cpg * groups}")
    sh, sw = conv_layer.strides
    dh, dw = conv_layer.dilation_rate
    padding = conv_layer.padding.lower()
    if padding not in ("valid", "same"):
        raise ValueError(f"unsupported padding {padding!r}")
    Ho = conv_output_size(H, kh, sh, padding, dh)
    Wo = conv_output_size(W, kw, sw, padding, dw)
    if padding == "same":
        pad_top = max((Ho - 1) * sh + dh * (kh - 1) + 1 - H, 0) // 2
        pad_left = max((Wo - 1) * sw + dw * (kw - 1) + 1 - W, 0) // 2
    else:
        pad_top = pad_left = 0

    fpg = F // groups
    # Broadcast over (oh, ow, i, j, c, f): input row/col, input channel, output index.
    oh = np.arange(Ho)[:, None, None, None, None, None]
    ow = np.arange(Wo)[None, :, None, None, None, None]
    i = np.arange(kh)[None, None, :, None, None, None]
    j = np.arange(kw)[None, None, None, :, None, None]
    c = np.arange(cpg)[None, None, None, None, :, None]
    f = np.arange(F)[None, None, None, None, None, :]
    full = (Ho, Wo, kh, kw, cpg, F)
    row = np.broadcast_to(oh * sh - pad_top + i * dh, full)
    col = np.broadcast_to(ow * sw - pad_left + j * dw, full)
    ch = np.broadcast_to((f // fpg) * cpg + c, full)
    out_idx = np.broadcast_to((oh * Wo + ow) * F + f, full)
    vals = np.broadcast_to(kernel[None, None], full)
    valid = (row >= 0) & (row < H) & (col >= 0) & (col < W)  # taps falling on zero padding vanish
    in_idx = (row * W + col) * C + ch

    M = np.zeros((H * W * C, Ho * Wo * F), dtype=np.float64)
    np.add.at(M, (in_idx[valid], out_idx[valid]), vals[valid])
    if conv_layer.use_bias:
        bias = np.tile(np.asarray(keras.ops.convert_to_numpy(conv_layer.bias), dtype=np.float64), Ho * Wo)
    else:
        bias = np.zeros(Ho * Wo * F, dtype=np.float64)
    return M, bias
