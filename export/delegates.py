"""Will a phone's accelerator take this ``.tflite``? A static reading of the flatbuffer; no device needed.

:func:`gpu_compatibility` applies the LiteRT/TFLite GPU delegate's rules, one check per op. TF 2.21's
``tf.lite.experimental.Analyzer.analyze(..., gpu_compatibility=True)`` no longer checks anything
(tensorflow/tensorflow#77042: removed by PR #74830), and ai-edge-litert 2.3.0's GPU accelerator needs a
WebGPU adapter, so the rules are encoded here from ``tensorflow/lite/tools/versioning/gpu_compatibility.cc``
(and ``gpu_compatibility.h``), tensorflow/tensorflow at commit 03a5e4e1 (the copy the code index holds; the
TF 2.21 wheel ships no C++ source to compare with): ``CheckGpuDelegateCompatibility``, which the old
analyzer (``lite/python/analyzer_wrapper/model_analyzer.cc``) ran on every op of every subgraph with
``kEnhancedBroadcast``. Tensors are read as its ``op_signature.cc`` reads them: constant = its buffer holds
data; index -1 = an omitted optional input. ai-edge-litert 2.3.0's ``libLiteRtWebGpuAccelerator.so``
compiles a copy of the file (its messages are in the binary), so a reason is what a phone's log prints.
float16 weights are read as the delegate reads them (``FP16GraphPartitionHelper``, ``delegates/utils.cc``).
Not encoded (such an op is counted as taken and listed in ``unchecked``): LSTM, ONE_HOT, SELECT(_V2),
EMBEDDING_LOOKUP, DYNAMIC_UPDATE_SLICE, STABLEHLO_CLAMP, and what custom ops keep in their custom data.
The rules are per op: a delegate can still fail at run time (memory, a driver).

:func:`integer_readiness` says whether every op computes on integers (NPUs, DSPs, NNAPI), lists the float
islands of a mixed-precision file, and checks each op against ``NNAPIDelegateKernel::Validate`` of
``tensorflow/lite/delegates/nnapi/nnapi_delegate.cc``, tensorflow/tensorflow at commit acdcab50, evaluated
for Android API 30 (NNAPI 1.3, its last feature level) with no accelerator named: highest op version,
input types, and the shape and constness conditions. Not encoded (listed in ``nnapi_unchecked``): the
recurrent ops, EMBEDDING_LOOKUP, HASHTABLE_LOOKUP, REDUCE_ANY, FILL, DENSIFY, SELECT, BATCH_TO_SPACE_ND's
zero crops, and what the delegate checks outside ``Validate`` (dynamic dimensions, a driver's op list).
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from kerascnn.errors import KerascnnError

from .tflite import builtin_op_names, keras_layers_of

GPU_SOURCE = "tensorflow/lite/tools/versioning/gpu_compatibility.cc (tensorflow/tensorflow@03a5e4e1)"
NNAPI_SOURCE = (
    "NNAPIDelegateKernel::Validate, tensorflow/lite/delegates/nnapi/nnapi_delegate.cc "
    "(tensorflow/tensorflow@acdcab50), Android API 30 / NNAPI 1.3"
)
_FLOAT = {"float32", "float16", "float64", "bfloat16"}
_QUANT = {"int8", "uint8", "int16"}


class DelegateAnalysisError(KerascnnError, ValueError):
    """The file cannot be read as a TFLite flatbuffer; the message names it."""


# ------------------------------------------------------------------------------------------------
# The flatbuffer, as the rules see it
# ------------------------------------------------------------------------------------------------


@dataclass
class _Tensor:
    key: tuple[int, int]  # (subgraph, tensor index)
    name: str
    dtype: str
    shape: list[int]
    const: bool


@dataclass
class _Op:
    subgraph: int
    index: int
    name: str  # builtin name, or CUSTOM:<custom code>
    version: int
    inputs: list[_Tensor | None]  # None: an omitted optional input
    outputs: list[_Tensor]
    options: object | None

    def opt(self, name: str, default=0):
        getter = getattr(self.options, name, None)
        return getter() if getter is not None else default

    def input(self, i: int) -> _Tensor | None:
        return self.inputs[i] if i < len(self.inputs) else None

    @property
    def runtime(self) -> int:
        return sum(1 for t in self.inputs if t is not None and not t.const)

    @property
    def consts(self) -> int:
        return sum(1 for t in self.inputs if t is not None and t.const)


def _read(path_or_bytes):
    """(label, builtin op names, the ops of every subgraph, main subgraph inputs, outputs)."""
    if isinstance(path_or_bytes, (bytes, bytearray, memoryview)):
        data, label = bytes(path_or_bytes), "<bytes>"
    else:
        label = str(path_or_bytes)
        try:
            data = Path(path_or_bytes).read_bytes()
        except OSError as e:
            raise DelegateAnalysisError(f"{label}: cannot read the file ({e.strerror or e})") from None
    from tensorflow.lite.python import schema_py_generated as schema

    if len(data) < 8 or not schema.Model.ModelBufferHasIdentifier(data, 0):
        raise DelegateAnalysisError(
            f"{label}: not a TFLite flatbuffer (no 'TFL3' identifier); give a .tflite file, such as "
            "one `kerascnn export` writes"
        )
    enum = lambda c: {v: n for n, v in vars(c).items() if not n.startswith("_")}  # noqa: E731
    ints = lambda n, get: [int(k) for k in get()] if n else []  # noqa: E731 - an absent vector reads as 0
    op_names, types, option_names = (enum(c) for c in (schema.BuiltinOperator, schema.TensorType,
                                                        schema.BuiltinOptions))  # fmt: skip
    try:
        model = schema.Model.GetRootAsModel(data, 0)
        buffers = [model.Buffers(b) for b in range(model.BuffersLength())]
        filled = {b for b, buf in enumerate(buffers) if b and (buf.DataLength() or buf.Offset() > 1)}
        ops, io = [], ([], [])
        for s in range(model.SubgraphsLength()):
            g, tensors = model.Subgraphs(s), []
            for i in range(g.TensorsLength()):
                t = g.Tensors(i)
                shape = [int(d) for d in t.ShapeAsNumpy()] if t.ShapeLength() else []
                name = t.Name().decode("utf-8", "replace") if t.Name() else f"tensor_{i}"
                dtype = types.get(t.Type(), str(t.Type())).lower()
                tensors.append(_Tensor((s, i), name, dtype, shape, t.Buffer() in filled))
            if s == 0:
                io = ([tensors[k] for k in ints(g.InputsLength(), g.InputsAsNumpy)],
                      [tensors[k] for k in ints(g.OutputsLength(), g.OutputsAsNumpy)])  # fmt: skip
            for j in range(g.OperatorsLength()):
                op = g.Operators(j)
                code = model.OperatorCodes(op.OpcodeIndex())
                builtin = max(code.BuiltinCode(), code.DeprecatedBuiltinCode())
                name = op_names.get(builtin, str(builtin))
                if builtin == schema.BuiltinOperator.CUSTOM:
                    name = f"CUSTOM:{(code.CustomCode() or b'').decode()}"
                options, table = None, op.BuiltinOptions()
                cls = getattr(schema, option_names.get(op.BuiltinOptionsType(), "NONE"), None)
                if table is not None and op.BuiltinOptionsType() and cls is not None:
                    options = cls()
                    options.Init(table.Bytes, table.Pos)
                ins = [tensors[k] if k >= 0 else None for k in ints(op.InputsLength(), op.InputsAsNumpy)]
                outs = [tensors[k] for k in ints(op.OutputsLength(), op.OutputsAsNumpy)]
                ops.append(_Op(s, j, name, code.Version(), ins, outs, options))
    except Exception as e:  # noqa: BLE001 - a truncated or damaged flatbuffer raises anything
        raise DelegateAnalysisError(f"{label}: a damaged TFLite flatbuffer ({type(e).__name__}: {e})") from e
    return label, builtin_op_names(data), ops, *io


@dataclass
class OpFinding:
    """One op an accelerator does not take."""

    subgraph: int
    index: int  # operator index in its subgraph
    op: str  # builtin name, or CUSTOM:<code>
    layers: list[str]  # the Keras layers its output tensors' names record (else its output tensor name)
    tensor: str  # its first output tensor
    reason: str


def _layer_of_tensor(name: str) -> str:
    """The Keras layer a converter tensor name records when the model is not at hand:
    ``lenet5_1/flatten_1/Shape`` -> ``flatten`` (the path's middle, without the call suffix)."""
    parts = name.split(";")[0].split("/")
    middle = parts[1:-1] or parts[:1]
    return "/".join(re.sub(r"_\d+$", "", p) for p in middle)


def _layers(op: _Op, layer_names) -> list[str]:
    if layer_names is None and op.outputs and "/" in op.outputs[0].name:
        return [_layer_of_tensor(op.outputs[0].name)]
    if layer_names:
        order = {n: i for i, n in enumerate(layer_names)}
        found = {n for t in op.outputs for n in keras_layers_of(t.name, layer_names)}
        if found:
            return sorted(found, key=order.get)
    return [op.outputs[0].name] if op.outputs else []


def _finding(op: _Op, layer_names, reason: str) -> OpFinding:
    tensor = op.outputs[0].name if op.outputs else ""
    return OpFinding(op.subgraph, op.index, op.name, _layers(op, layer_names), tensor, reason)


def _listed(findings: list[OpFinding]) -> str:
    return "; ".join(f"{', '.join(f.layers)} ({f.op}: {f.reason})" for f in findings)


# ------------------------------------------------------------------------------------------------
# GPU delegate: gpu_compatibility.cc's rules, one check per op (a falsy result: the delegate takes it)
# ------------------------------------------------------------------------------------------------


def _io(o: _Op, runtime: int, outputs: int = 1, consts: int | None = None):
    if consts is not None and o.consts != consts:
        return f"Expected {consts} const input tensor(s), but node has {o.consts} const input(s)."
    if o.runtime != runtime:
        return f"Expected {runtime} runtime input tensor(s), but node has {o.runtime} runtime input(s)."
    if len(o.outputs) != outputs:
        return f"Expected {outputs} output tensor(s), but node has {len(o.outputs)} output(s)."
    return None


def _act(o: _Op):  # fused NONE, RELU, RELU_N1_TO_1, RELU6, TANH are taken; SIGN_BIT is not
    return o.opt("FusedActivationFunction") == 5 and "TfLiteFusedActivation.kTfLiteActSignBit"


def _positive(o: _Op, what: str, h: str, w: str):
    a, b = o.opt(h, 1), o.opt(w, 1)
    return (a <= 0 or b <= 0) and f"Incorrect {what} values: {what}_height = {a}, {what}_width = {b}"


def _strides(o: _Op, dilation: bool = True):
    return _positive(o, "stride", "StrideH", "StrideW") or (
        dilation and _positive(o, "dilation", "DilationHFactor", "DilationWFactor")
    )


def _conv_io(o: _Op):
    if o.runtime > 2:
        return f"Expected 1 or 2 input tensor(s), but node has {o.runtime} runtime inputs."
    if len(o.outputs) != 1:
        return f"Expected 1 output tensor(s), but node has {len(o.outputs)} runtime outputs."
    return o.runtime == 1 and len(o.inputs) < 2 and "Requested index goes beyond array size: 1"


def _pool(o: _Op):
    kernel = _positive(o, "kernel", "FilterHeight", "FilterWidth")
    return _io(o, 1) or kernel or _strides(o, dilation=False) or _act(o)


def _depthwise(o: _Op):
    err = _conv_io(o) or _strides(o) or _act(o)
    x, f, y, bias, m = o.inputs[0], o.inputs[1], o.outputs[0], o.input(2), o.opt("DepthMultiplier", 1)
    for t, what in ((x, "input"), (f, "filter"), (y, "output")):
        err = err or (len(t.shape) != 4 and f"{what}.dims.size != 4")
    if err:
        return err
    checks = (
        (x.shape[0] != y.shape[0], "input.b != output.b"),
        (f.shape[3] != y.shape[3], "filter.i != output.c"),
        (y.shape[3] != x.shape[3] * m, "output.c != input.c * depth_multiplier"),
        (bias is not None and math.prod(bias.shape) != y.shape[3], "bias.size != output.c"),
        (m != 1 and x.shape[3] != 1, "depth_multiplier != 1 && input.c != 1"),
    )
    return next((reason for failed, reason in checks if failed), None)


def _broadcast(o: _Op):  # kEnhancedBroadcast, as the offline analyzer checked: numpy-style from the right
    a, b = o.inputs[0].shape, o.inputs[1].shape
    if len(a) > 1 and len(b) > 1 and len(a) != len(b):
        n = max(len(a), len(b))
        pairs = zip([1] * (n - len(a)) + a, [1] * (n - len(b)) + b, strict=True)
        if any(p != q and 1 not in (p, q) for p, q in pairs):
            dims = lambda d: ",".join(map(str, d))  # noqa: E731
            return f"Doesn't support broadcasting - input0: [{dims(a)}], input1: [{dims(b)}]"
    return None


def _mul(o: _Op):
    if len(o.inputs) != 2:
        return "MUL requires two input tensors."
    a, b = o.inputs[0].shape, o.inputs[1].shape
    if len(a) == len(b):
        if any(p < q for p, q in zip(a, b, strict=True)) and any(q < p for p, q in zip(a, b, strict=True)):
            return "MUL requires one tensor that not less than second in all dimensions."
        return _act(o)
    return _broadcast(o) or _act(o)


def _binary(o: _Op):  # ATAN2, DIV, SUB, comparisons, MAXIMUM, MINIMUM, POW, SQUARED_DIFFERENCE, ...
    if _io(o, 2, consts=0) and _io(o, 1, consts=1):
        return "Op can only handle 1 or 2 operand(s)."
    return o.name in ("DIV", "SUB") and _act(o)


def _axes(o: _Op, i: int = 1):
    axes = o.input(i)
    if axes is None or not axes.const:
        return f"{o.name} is only supported with constant axes."
    return axes.dtype != "int32" and f"{o.name} supports int32 tensor for axes. But node has {axes.dtype}"


def _fully_connected(o: _Op):
    if o.opt("WeightsFormat") != 0:
        return f"Unsupported FullyConnected weights format: {o.opt('WeightsFormat')}"
    if o.runtime > 2:
        return "FullyConnected doesn't support more than 2 runtime inputs."
    if o.inputs[0].const:
        return "FullyConnected doesn't support constant input."
    keep = o.opt("KeepNumDims", False) and len(o.inputs[0].shape) != len(o.outputs[0].shape)
    return keep and "Input and output dimensions different and FullyConnected doesn't support keep_num_dims."


def _pad(o: _Op):
    if o.name == "MIRROR_PAD" and o.opt("Mode") != 0:
        return f"Only Reflective padding is supported for Mirror Pad operation. But node has {o.opt('Mode')}"
    err = _io(o, 1) or (len(o.inputs) < 2 and "Requested index goes beyond array size: 1")
    pads = o.inputs[1].shape if not err else []
    if err or len(pads) != 2:
        return err or f"Invalid paddings tensor dimension: expected 2 dim, got {len(pads)} dim"
    ok = pads[0] in (3, 4) and pads[1] == 2
    return not ok and f"Invalid paddings tensor shape: expected 4x2 or 3x2, got {pads[0]}x{pads[1]}"


def _cast(o: _Op):
    a, b, fl = o.inputs[0].dtype, o.outputs[0].dtype, ("float16", "float32")
    ok = (a == "bool" and b in fl) or (a in fl and b == "bool") or {a, b} <= {"float32", "int32"}
    return _io(o, 1) or (not ok and f"Not supported Cast case. Input type: {a} and output type: {b}")


def _cumsum(o: _Op):
    if len(o.inputs) != 2:
        return "Expects 2 inputs and 1 output"
    x, axis, y = o.inputs[0], o.inputs[1], o.outputs[0]
    ok = x.dtype in ("float16", "float32") and y.dtype == x.dtype and axis.dtype == "int32" and axis.const
    return not ok and "Input/output must be float type and indices must be constant int32 type"


def _block(o: _Op):  # DEPTH_TO_SPACE, SPACE_TO_DEPTH
    size = o.opt("BlockSize", 0)
    no_op = size == 1 and f"{o.name} block_size = 1 is a no-op."
    return _io(o, 1) or no_op or (size < 1 and f"{o.name} block_size must be > 1.")


def _gather(o: _Op):
    if _io(o, 2, consts=0) and _io(o, 1, consts=1):
        return "Op can only handle 1 or 2 operand(s)."
    if o.inputs[0].dtype == "int32":
        return "Does not accept INT32 input."
    if len(o.inputs[1].shape) != 1:
        return "Only support 1D indices"
    return o.inputs[1].dtype != "int32" and "Only accept INT32 indices"


def _slice(o: _Op):  # SLICE, STRIDED_SLICE
    for mask in ("ellipsis", "new_axis", "shrink_axis"):
        if o.opt(mask.title().replace("_", "") + "Mask"):  # EllipsisMask, NewAxisMask, ShrinkAxisMask
            return f"Slice does not support {mask}_mask."
    need = 4 if o.name == "STRIDED_SLICE" else 3
    if len(o.inputs) < need:
        return f"{o.name} requires {need} inputs, but node has {len(o.inputs)} inputs."
    rank = len(o.inputs[0].shape)
    return rank not in (3, 4) and f"{o.name} supports for 3 or 4 dimensional tensors only (rank {rank})."


_ok = lambda o: None  # noqa: E731
_one = lambda o: _io(o, 1)  # noqa: E731
_UNARY = "ABS CEIL COS ELU EXP FLOOR GELU LOG LOGISTIC NEG RSQRT SIGN SIN SQRT SQUARE TANH"
_BINARY = "ATAN2 DIV EQUAL FLOOR_DIV FLOOR_MOD GREATER GREATER_EQUAL LOGICAL_AND LESS LESS_EQUAL MAXIMUM"
_BINARY += " MINIMUM NOT_EQUAL POW SQUARED_DIFFERENCE SUB"
# fmt: off
_GPU = {
    "ADD": lambda o: "ADD requires two input tensors." if len(o.inputs) != 2 else _broadcast(o),
    "ADD_N": lambda o: len(o.inputs) != 2 and "ADD_N only supports 2 inputs.",
    "BATCH_MATMUL": lambda o: (len(o.inputs), len(o.outputs)) != (2, 1) and "Expected 2 inputs and 1 output",
    "CONV_2D": lambda o: _conv_io(o) or _strides(o) or _act(o), "DEPTHWISE_CONV_2D": _depthwise,
    "TRANSPOSE_CONV": lambda o: _conv_io(o) or _strides(o, dilation=False),
    "FULLY_CONNECTED": _fully_connected, "AVERAGE_POOL_2D": _pool, "MAX_POOL_2D": _pool, "CAST": _cast,
    "CUMSUM": _cumsum, "DENSIFY": lambda o: _io(o, 0), "DEPTH_TO_SPACE": _block, "SPACE_TO_DEPTH": _block,
    "GATHER": _gather, "MUL": _mul, "SLICE": _slice, "STRIDED_SLICE": _slice,
    "DEQUANTIZE": lambda o: (len(o.inputs), len(o.outputs)) != (1, 1) and "Expected 1 input & output each "
                  "from Dequantize" or o.inputs[0].dtype == "int16" and "Unsupported dequantization type.",
    "MEAN": lambda o: _io(o, 1, consts=1) or _axes(o), "PAD": _pad, "PADV2": _pad, "MIRROR_PAD": _pad,
    "RESIZE_BILINEAR": lambda o: _io(o, 1) or o.opt("AlignCorners", False) and o.opt("HalfPixelCenters",
                       False) and "If half_pixel_centers is True, align_corners must be False.",
    "SOFTMAX": lambda o: o.opt("Beta", 1.0) != 1 and "Softmax.beta != 1 is not supported.",
    **dict.fromkeys("CONCATENATION PACK SPLIT SPLIT_V RELU RELU6 RELU_N1_TO_1 LEAKY_RELU PRELU".split(), _ok),
    **dict.fromkeys("HARD_SWISH QUANTIZE RESHAPE TILE TRANSPOSE RESIZE_NEAREST_NEIGHBOR".split(), _one),
    **dict.fromkeys("REDUCE_MAX REDUCE_MIN REDUCE_PROD SUM".split(), lambda o: _io(o, 1) or _axes(o)),
    **dict.fromkeys(_UNARY.split(), lambda o: _io(o, 1, consts=0)),
    **dict.fromkeys(_BINARY.split(), _binary),
}
_two = lambda o: _io(o, 2)  # noqa: E731
_GPU_CUSTOM = {"MaxPoolingWithArgmax2D": lambda o: _io(o, 1, outputs=2), "MaxUnpooling2D": _two,
               "Convolution2DTransposeBias": _conv_io, "Resampler": _two}
_GPU_UNCHECKED = set("LSTM ONE_HOT SELECT SELECT_V2 EMBEDDING_LOOKUP DYNAMIC_UPDATE_SLICE STABLEHLO_CLAMP"
                     .split())
# fmt: on


def _gpu_reason(o: _Op) -> str | None:
    if o.name.startswith("CUSTOM:"):
        rule = _GPU_CUSTOM.get(o.name[7:])
        return (rule(o) or None) if rule else f"Not supported custom op {o.name[7:]}"
    if o.name in _GPU_UNCHECKED:
        return None
    rule = _GPU.get(o.name)
    return (rule(o) or None) if rule else f"Not supported op {o.name}"


@dataclass
class GpuReport:
    file: str
    fully_compatible: bool
    ops: int  # every op of every subgraph
    supported_ops: int  # the ops the GPU delegate would take
    unsupported: list[OpFinding]
    unchecked: list[str]  # op types taken on conditions this module does not encode
    op_types: list[str]
    source: str = GPU_SOURCE

    def to_dict(self) -> dict:
        return asdict(self)

    def describe(self) -> str:
        if self.fully_compatible:
            return f"GPU delegate: takes all {self.ops} ops"
        return f"GPU delegate: takes {self.supported_ops} of {self.ops} ops; not: {_listed(self.unsupported)}"


def _fp16_const(t: _Tensor | None) -> bool:
    return t is not None and t.const and t.dtype == "float16"


def gpu_compatibility(path_or_bytes, layer_names=None) -> GpuReport:
    """Which ops of a ``.tflite`` (path or bytes) the GPU delegate would take, and why not the others.
    ``layer_names``: the Keras model's layer names, to name each rejected op by its layer(s)."""
    label, op_types, ops, _, _ = _read(path_or_bytes)
    # float16 weights: the delegate checks the readers of a DEQUANTIZE of a float16 constant as if they read
    # the constant itself (FP16GraphPartitionHelper, tensorflow/lite/delegates/utils.cc); that DEQUANTIZE
    # then has no reader in the delegated partition, and counts as taken here.
    fp16 = {o.outputs[0].key: o.inputs[0] for o in ops if o.name == "DEQUANTIZE" and _fp16_const(o.input(0))}
    seen = [replace(o, inputs=[fp16.get(t.key, t) if t else t for t in o.inputs]) for o in ops]
    seen = [o for o in seen if not (o.outputs and o.outputs[0].key in fp16)]
    bad = [_finding(o, layer_names, r) for o in seen if (r := _gpu_reason(o))]
    unchecked = sorted({o.name for o in ops if o.name in _GPU_UNCHECKED or o.name[7:] in _GPU_CUSTOM})
    return GpuReport(label, not bad, len(ops), len(ops) - len(bad), bad, unchecked, op_types)


# ------------------------------------------------------------------------------------------------
# Integer files: float islands, and NNAPI's Validate for each op
# ------------------------------------------------------------------------------------------------


def _const(*inputs: int):
    return lambda o: next(
        (f"input {i} must be constant" for i in inputs if not getattr(o.input(i), "const", 0)), None
    )


def _out(*types: str):
    return lambda o: (
        o.outputs[0].dtype not in types and f"output type {o.outputs[0].dtype} ({'/'.join(types)})"
    )


_rank4 = lambda o: any(len(t.shape) > 4 for t in o.inputs[:2] if t) and "input rank must be <= 4"  # noqa: E731
_no_act = lambda o: o.opt("FusedActivationFunction") and "No activation function supported"  # noqa: E731
_FQ, _F = ("float32", "uint8", "int8"), ("float32",)  # Validate's IsFloatOrQuantized: int16 is not quantized
_FQI, _HFQI = (*_FQ, "int32"), ("float16", *_FQ, "int32")
# fmt: off
_NNAPI = {  # op: (highest op version, input 0 types, further condition)
    "ADD": (2, _FQI, None), "MUL": (2, _FQI, None), "SUB": (3, _FQI, _rank4), "DIV": (1, _F, None),
    "AVERAGE_POOL_2D": (2, _FQ, lambda o: o.inputs[0].dtype in _QUANT and o.opt("FilterHeight") * o.opt(
        "FilterWidth") > 256 and "Large filter window would overflow on the reference CPU path"),
    "MAX_POOL_2D": (2, _FQ, None), "L2_POOL_2D": (1, _F, None), "DEPTHWISE_CONV_2D": (3, None, None),
    "CONV_2D": (5, None, lambda o: len(o.inputs) != 3 and "Conv2D with omitted bias not supported"),
    "FULLY_CONNECTED": (5, None, lambda o: o.outputs[0].dtype == "int16" and "Unsupported output type int16"),
    "SOFTMAX": (2, _FQ, lambda o: _out(*_FQ)(o) or len(o.inputs[0].shape) > 4 and "Input rank must be <= 4"),
    "RESHAPE": (1, _FQ, lambda o: len(o.inputs) >= 2 and _const(1)(o)), "HARD_SWISH": (None, _FQ, None),
    "RESIZE_BILINEAR": (3, _FQ, lambda o: len(o.inputs[0].shape) != 4 and "Input should have rank 4"
                        or _const(1)(o)),
    "RESIZE_NEAREST_NEIGHBOR": (3, _FQ, _const(1)), "SQUEEZE": (1, None, None),
    "CONCATENATION": (2, ("float16", *_FQ), lambda o: _no_act(o) or len(o.inputs[0].shape) > 4
                      and "Input rank should be less than 4"),
    "DEQUANTIZE": (2, ("uint8", "int8", "float16"), None), "QUANTIZE": (2, _FQ, _out("uint8", "int8")),
    **dict.fromkeys("RELU RELU_N1_TO_1 RELU6 LOGISTIC TANH REDUCE_MIN REDUCE_MAX".split(), (2, _FQ, None)),
    **dict.fromkeys(("PAD", "PADV2"), (2, _FQ, lambda o: len(o.inputs) < 2 and "Expecting at least 2 inputs"
                    or 0 in o.inputs[0].shape and "NN API pad ops do not support empty input tensors")),
    "SPACE_TO_BATCH_ND": (2, None, None), "STRIDED_SLICE": (2, None, None), "TRANSPOSE": (2, None, _const(1)),
    **dict.fromkeys("ABS EXP LOG RSQRT POW SIN SQRT LOG_SOFTMAX REDUCE_PROD SUM ELU".split(), (1, _F, None)),
    "SLICE": (2, _FQI, None), "TRANSPOSE_CONV": (3, None, _const(0, 1)), "SPACE_TO_DEPTH": (2, _FQ, None),
    "DEPTH_TO_SPACE": (None, _FQ, None), "MAXIMUM": (3, _FQI, None), "MINIMUM": (3, _FQI, None),
    "MEAN": (2, _FQ, lambda o: not o.outputs[0].shape and "NNAPI does not support a scalar output for MEAN"),
    "CAST": (1, _FQI, _out(*_FQI)), "LEAKY_RELU": (1, _FQ, None), "PRELU": (1, _FQ, None),
    "TILE": (1, _FQI, None), "NEG": (2, (*_F, "int32"), None), "PACK": (2, ("int32", *_F, "int8"), None),
    **dict.fromkeys("LESS LESS_EQUAL GREATER GREATER_EQUAL EQUAL NOT_EQUAL".split(), (2, (*_FQI, "bool"),
                    None)),
    "TOPK_V2": (2, _FQI, lambda o: _const(1)(o) or o.inputs[1].dtype != "int32" and "K should be int32"),
    "GATHER": (2, _HFQI, lambda o: o.inputs[1].dtype != "int32" and "Positions type should be int32"),
    "EXPAND_DIMS": (1, _HFQI, _const(1)), "SPLIT": (3, None, _const(0)), "SPLIT_V": (2, _FQI, _const(1, 2)),
    "SQUARED_DIFFERENCE": (2, _FQI, _rank4), "L2_NORMALIZATION": (2, None, _no_act), "FLOOR": (1, None, None),
    "ARG_MAX": (2, _HFQI, _out("int32")), "ARG_MIN": (2, _HFQI, _out("int32")),
    "LOCAL_RESPONSE_NORMALIZATION": (1, None, None),
    **dict.fromkeys(("LOGICAL_OR", "LOGICAL_AND", "LOGICAL_NOT"), (1, ("bool",), None)),
}
_NNAPI_UNCHECKED = set("LSTM UNIDIRECTIONAL_SEQUENCE_LSTM BIDIRECTIONAL_SEQUENCE_LSTM RNN SVDF FILL SELECT"
                       " DENSIFY UNIDIRECTIONAL_SEQUENCE_RNN LSH_PROJECTION EMBEDDING_LOOKUP HASHTABLE_LOOKUP"
                       " REDUCE_ANY BATCH_TO_SPACE_ND".split())
# fmt: on


def _nnapi_reason(o: _Op) -> str | None:
    if o.name in _NNAPI_UNCHECKED:
        return None
    if o.name not in _NNAPI:
        return "NNAPI has no mapping for this op (Validate: Unsupported operation type.)"
    top, types, condition = _NNAPI[o.name]
    if o.name == "DEQUANTIZE" and o.inputs[0].dtype == "float16" and not o.inputs[0].const:
        return None  # Validate takes a runtime fp16 -> fp32 DEQUANTIZE before it checks the version
    if top is not None and o.version > top:
        return f"op version {o.version}; NNAPI maps versions up to {top}"
    x = o.input(1 if o.name == "SPLIT" else 0)
    if types and x is not None and x.dtype not in types:
        return f"input type {x.dtype} (NNAPI takes {'/'.join(types)})"
    return (condition(o) or None) if condition else None


@dataclass
class FloatIsland:
    """Ops computing in float inside an integer graph, joined through the tensors they pass each other."""

    ops: list[str]  # op names, in graph order
    layers: list[str]  # their Keras layers (else their output tensor names)
    tensors: list[str]  # their output tensors


@dataclass
class IntegerReport:
    file: str
    fully_integer: bool  # every op computes on integers; float <-> integer only at the graph's edges
    reason: str
    input_dtypes: list[str]
    output_dtypes: list[str]
    integer_io: bool
    activation_dtypes: list[str]  # what the integer ops compute on: int8, uint8, int16 (16x8)
    ops: int
    integer_ops: int
    float_ops: int
    float_islands: list[FloatIsland]
    nnapi_ops: int  # ops NNAPI's Validate accepts
    nnapi_rejected: list[OpFinding]
    nnapi_unchecked: list[str] = field(default_factory=list)
    source: str = NNAPI_SOURCE

    def to_dict(self) -> dict:
        return asdict(self)

    def describe(self) -> str:
        nnapi = f"NNAPI: {self.nnapi_ops} of {self.ops} ops"
        nnapi += f" (not: {_listed(self.nnapi_rejected)})" if self.nnapi_rejected else ""
        if not self.fully_integer:
            return f"not fully integer: {self.reason}; {nnapi}"
        edges = "" if self.integer_io else " (QUANTIZE/DEQUANTIZE at the edges)"
        inside = "/".join(self.activation_dtypes)
        return f"fully integer inside ({inside}), {'/'.join(self.input_dtypes)} io{edges}; {nnapi}"


def _is_float(t: _Tensor) -> bool:
    return t.dtype in _FLOAT


def integer_readiness(path_or_bytes, layer_names=None) -> IntegerReport:
    """Is a ``.tflite`` (path or bytes) integer throughout, where does it compute in float, and which ops
    would NNAPI map. ``layer_names``: the Keras model's layer names, to name ops by their layers."""
    label, _, ops, inputs, outputs = _read(path_or_bytes)
    graph_in, graph_out = {t.key for t in inputs}, {t.key for t in outputs}
    kinds = []  # per op: "edge"/"convert" (float <-> integer at / off the graph's io), "float", "integer"
    for o in ops:
        x, y = o.input(0), (o.outputs or [None])[0]
        if o.name in ("QUANTIZE", "DEQUANTIZE") and x and y and not x.const and _is_float(x) != _is_float(y):
            kinds.append("edge" if x.key in graph_in or y.key in graph_out else "convert")
        else:
            acts = [t for t in o.inputs if t and not t.const] + o.outputs
            kinds.append("float" if any(map(_is_float, acts)) else "integer")
    integer = [o for o, k in zip(ops, kinds, strict=True) if k == "integer"]
    floats = [i for i, k in enumerate(kinds) if k == "float"]
    islands = _islands(ops, floats, layer_names) if integer else []
    acts = {t.dtype for o in integer for t in [*o.inputs, *o.outputs] if t is not None and not t.const}
    act_types = sorted(acts & _QUANT)
    in_types, out_types = [t.dtype for t in inputs], [t.dtype for t in outputs]
    integer_io = not {*in_types, *out_types} & _FLOAT
    converts = kinds.count("convert")
    if not integer:
        consts = {t.dtype for o in ops for t in o.inputs if t is not None and t.const}
        reason = "float32 weights and activations"
        if "float16" in consts:
            reason = "float16 weights (DEQUANTIZE to float32) and float32 activations"
        elif consts & _QUANT:
            reason = "int8 weights with float32 activations (dynamic range)"
    elif floats or converts:
        layers = [n for island in islands for n in island.layers]
        reason = f"{len(floats)} op(s) compute in float in {len(islands)} island(s): {', '.join(layers)}"
    else:
        reason = f"every op computes on {'/'.join(act_types) or 'integers'}"
        reason += "" if integer_io else ", with float io converted at the graph's edges"
    rejected = [_finding(o, layer_names, r) for o in ops if (r := _nnapi_reason(o))]
    unchecked = sorted({o.name for o in ops if o.name in _NNAPI_UNCHECKED})
    return IntegerReport(
        label, bool(integer) and not floats and not converts, reason, in_types, out_types, integer_io,
        act_types, len(ops), len(integer), len(floats), islands, len(ops) - len(rejected), rejected,
        unchecked,
    )  # fmt: skip


def _islands(ops: list[_Op], floats: list[int], layer_names) -> list[FloatIsland]:
    """Float ops grouped: two are in one island when one reads the other's output."""
    producer = {t.key: i for i in floats for t in ops[i].outputs}
    parent = {i: i for i in floats}

    def root(i):
        while parent[i] != i:
            i = parent[i]
        return i

    for i in floats:
        for t in ops[i].inputs:
            if t is not None and t.key in producer:
                parent[root(i)] = root(producer[t.key])
    groups: dict[int, list[int]] = {}
    for i in floats:
        groups.setdefault(root(i), []).append(i)
    order = {n: k for k, n in enumerate(layer_names or ())}
    islands = []
    for members in sorted(groups.values()):
        layers = list(dict.fromkeys(n for i in members for n in _layers(ops[i], layer_names)))
        layers.sort(key=lambda n: order.get(n, len(order)))
        tensors = [ops[i].outputs[0].name for i in members]
        islands.append(FloatIsland([ops[i].name for i in members], layers, tensors))
    return islands


# ------------------------------------------------------------------------------------------------
# Both, as inspect and validate print them
# ------------------------------------------------------------------------------------------------

INTEGER_QUANTIZATIONS = ("int8", "int16x8", "mixed", "qat_int8")  # the files an NPU or DSP could take


def accelerators(path_or_bytes, quantization: str | None = None, layer_names=None) -> dict:
    """``{"gpu": GpuReport, "integer": IntegerReport or None}`` as dicts, plus ``lines`` to print: the
    integer reading for the files meant for integer accelerators (``quantization`` one of
    :data:`INTEGER_QUANTIZATIONS`, or unknown). A file that cannot be read gives ``error``, naming it."""
    try:
        gpu = gpu_compatibility(path_or_bytes, layer_names)
        integer = (
            integer_readiness(path_or_bytes, layer_names)
            if quantization is None or quantization in INTEGER_QUANTIZATIONS
            else None
        )
    except DelegateAnalysisError as e:
        return {"gpu": None, "integer": None, "error": str(e), "lines": [f"accelerators: {e}"]}
    except Exception as e:  # noqa: BLE001 - any other failure of the reading: the row's note, not a stop
        error = f"{Path(str(path_or_bytes)).name if isinstance(path_or_bytes, (str, Path)) else 'the file'}: "
        error += f"the accelerator reading failed ({type(e).__name__}: {e})"
        return {"gpu": None, "integer": None, "error": error, "lines": [f"accelerators: {error}"]}
    lines = [gpu.describe()] + ([integer.describe()] if integer is not None else [])
    return {
        "gpu": gpu.to_dict(),
        "integer": integer.to_dict() if integer is not None else None,
        "lines": lines,
    }


# ------------------------------------------------------------------------------------------------
# The CPU: which ops XNNPACK takes, which run on LiteRT's reference kernels
# ------------------------------------------------------------------------------------------------


@dataclass
class CpuCoverage:
    file: str
    ops: int
    xnnpack_ops: int
    reference: list[OpFinding]  # the ops LiteRT's own builtin kernels run (reference or optimized)

    def to_dict(self) -> dict:
        return asdict(self)

    def describe(self) -> str:
        if not self.reference:
            return f"XNNPACK: takes all {self.ops} ops"
        counts: dict[str, list[str]] = {}
        for f in self.reference:
            counts.setdefault(f.op, [])
            counts[f.op] += [n for n in f.layers if n not in counts[f.op]]
        listed = "; ".join(f"{op} ({', '.join(layers[:4])}{', ...' if len(layers) > 4 else ''})"
                           for op, layers in counts.items())  # fmt: skip
        return f"XNNPACK: takes {self.xnnpack_ops} of {self.ops} ops; on LiteRT's own kernels: {listed}"


def xnnpack_coverage(path, layer_names=None, threads: int | None = None) -> CpuCoverage:
    """Which ops of a ``.tflite`` LiteRT's default CPU delegate (XNNPACK) takes, read from the
    interpreter after delegation: each DELEGATE node replaced the ops between its inputs and outputs;
    the others run on LiteRT's reference (or optimized builtin) kernels."""
    from ai_edge_litert.interpreter import Interpreter

    from kerascnn.quiet import native_quiet

    try:
        with native_quiet():
            interpreter = Interpreter(model_path=str(path), num_threads=threads)
            interpreter.allocate_tensors()
    except Exception as e:  # noqa: BLE001
        raise DelegateAnalysisError(
            f"{Path(path).name}: LiteRT cannot load it ({type(e).__name__}: {e})"
        ) from e
    nodes = interpreter._get_ops_details()  # noqa: SLF001 - the only node list LiteRT exposes
    names = {int(t["index"]): t["name"] for t in interpreter.get_tensor_details()}
    ops = {int(o["index"]): o for o in nodes if o["op_name"] != "DELEGATE"}
    producer = {int(t): i for i, o in ops.items() for t in o["outputs"]}
    taken: set[int] = set()
    for node in (o for o in nodes if o["op_name"] == "DELEGATE"):
        stop, todo = {int(t) for t in node["inputs"]}, [int(t) for t in node["outputs"]]
        while todo:
            t = todo.pop()
            if t in stop or t not in producer or producer[t] in taken:
                continue
            taken.add(producer[t])
            todo.extend(int(x) for x in ops[producer[t]]["inputs"] if int(x) >= 0)
    reference = []
    for i, o in sorted(ops.items()):
        if i in taken:
            continue
        tensor = names.get(int(o["outputs"][0]), "") if len(o["outputs"]) else ""
        layers = keras_layers_of(tensor, layer_names) if layer_names else []
        layers = layers or ([_layer_of_tensor(tensor)] if "/" in tensor else [tensor])
        reference.append(OpFinding(0, i, o["op_name"], layers, tensor, "no XNNPACK kernel"))
    return CpuCoverage(Path(path).name, len(ops), len(taken), reference)
