"""Static accelerator checks of .tflite files (kerascnn.export.delegates): the GPU delegate's per-op rules
and integer readiness (float islands, NNAPI), on files the converter writes for tiny Keras models."""

from __future__ import annotations

import json

import keras
import numpy as np
import pytest
import tensorflow as tf
from kerascnn.export.delegates import DelegateAnalysisError, gpu_compatibility, integer_readiness
from kerascnn.export.sensitivity import Int8Session
from kerascnn.export.tflite import write_saved_model

from kerascnn.errors import KerascnnError
from kerascnn.models.mobilenet import mobilenet_v2
from kerascnn.quiet import native_quiet


def _representative(shape, n: int = 8):
    def gen():
        rng = np.random.default_rng(0)
        for _ in range(n):
            yield [rng.normal(size=(1, *shape)).astype("float32")]

    return gen


def _convert(model, int8: bool = False, io=None, float16: bool = False) -> bytes:
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    if float16:
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
    if int8:
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = _representative(model.input_shape[1:])
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        if io is not None:
            converter.inference_input_type = converter.inference_output_type = io
    with native_quiet():
        return bytes(converter.convert())


def _names(model) -> list[str]:
    return [layer.name for layer in model.layers]


@pytest.fixture(scope="module")
def topk_model():
    """conv/depthwise/dense with a cumsum and a top-k between two Dense layers (Lambdas, so the converter
    emits CUMSUM and TOPK_V2 with layer names in their tensors)."""
    keras.utils.set_random_seed(0)
    image = keras.Input((8, 8, 3), name="image")
    x = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="conv")(image)
    x = keras.layers.DepthwiseConv2D(3, padding="same", name="dw")(x)
    x = keras.layers.ReLU(6.0, name="relu6")(x)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    x = keras.layers.Dense(6, name="dense")(x)
    x = keras.layers.Lambda(lambda v: tf.math.cumsum(v, axis=-1), name="cumsum")(x)
    x = keras.layers.Lambda(lambda v: tf.math.top_k(v, k=3).values, name="topk")(x)
    return keras.Model(image, keras.layers.Dense(2, activation="softmax", name="head")(x))


@pytest.fixture(scope="module")
def block_model():
    """A MobileNetV2-style inverted residual block (conv, depthwise, ReLU6, BN, ADD, PAD), softmax head."""
    keras.utils.set_random_seed(0)
    image = keras.Input((16, 16, 3), name="image")
    stem = keras.layers.Conv2D(8, 3, strides=2, padding="same", name="stem")(image)
    x = keras.layers.ReLU(6.0, name="stem_relu")(keras.layers.BatchNormalization(name="stem_bn")(stem))
    x = keras.layers.Conv2D(16, 1, name="expand")(x)
    x = keras.layers.ReLU(6.0, name="expand_relu")(x)
    x = keras.layers.DepthwiseConv2D(3, padding="same", name="dw")(x)
    x = keras.layers.BatchNormalization(name="dw_bn")(x)
    x = keras.layers.Conv2D(8, 1, name="project")(keras.layers.ReLU(6.0, name="dw_relu")(x))
    x = keras.layers.Add(name="add")([stem, x])
    x = keras.layers.ZeroPadding2D(((0, 1), (0, 1)), name="pad")(x)
    x = keras.layers.DepthwiseConv2D(3, strides=2, name="down")(x)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    return keras.Model(image, keras.layers.Dense(4, activation="softmax", name="head")(x))


@pytest.fixture(scope="module")
def block_files(block_model):
    return {
        "float32": _convert(block_model),
        "float16": _convert(block_model, float16=True),
        "int8": _convert(block_model, int8=True, io=tf.int8),
        "int8_float_io": _convert(block_model, int8=True),
    }


def test_gpu_rejects_top_k_by_its_layer_and_takes_the_conv_and_dense_ops(topk_model):
    names = _names(topk_model)
    report = gpu_compatibility(_convert(topk_model), names)
    assert not report.fully_compatible
    assert [(f.op, f.layers, f.reason) for f in report.unsupported] == [
        ("TOPK_V2", ["topk"], "Not supported op TOPK_V2")
    ]
    assert (report.ops, report.supported_ops) == (8, 7)
    # Taken: every other op, CUMSUM included (gpu_compatibility.cc takes it on float with a constant
    # int32 axis, which the converter writes).
    assert set(report.op_types) == {
        "CONV_2D", "DEPTHWISE_CONV_2D", "MEAN", "FULLY_CONNECTED", "CUMSUM", "TOPK_V2", "SOFTMAX",
    }  # fmt: skip
    expected = "GPU delegate: takes 7 of 8 ops; not: topk (TOPK_V2: Not supported op TOPK_V2)"
    assert report.describe() == expected
    assert json.loads(json.dumps(report.to_dict()))["unsupported"][0]["layers"] == ["topk"]
    # Without the model at hand an op is named by the layer its output tensor's name records.
    bare = gpu_compatibility(_convert(topk_model)).unsupported
    assert len(bare) == 1 and bare[0].layers == ["topk"] and "topk" in bare[0].tensor


def test_gpu_reads_op_options_strided_slice_shrink_axis(tmp_path):
    """Cropping2D's STRIDED_SLICE (4-D, no masks) is taken; indexing one row away (shrink_axis_mask) is
    not: the rule reads the op's options, and the report names the layer."""
    image = keras.Input((8, 8, 3), batch_size=1, name="image")
    x = keras.layers.Conv2D(4, 3, padding="same", name="conv")(image)
    x = keras.layers.Cropping2D(1, name="crop")(x)
    x = keras.layers.Lambda(lambda v: v[:, 0], name="first_row")(x)
    x = keras.layers.Reshape((24,), name="flat")(x)
    model = keras.Model(image, keras.layers.Dense(2, name="head")(x))
    path = tmp_path / "slice.tflite"
    path.write_bytes(_convert(model))
    report = gpu_compatibility(path, _names(model))
    assert report.file == str(path)
    assert [(f.layers, f.op, f.reason) for f in report.unsupported] == [
        (["first_row"], "STRIDED_SLICE", "Slice does not support shrink_axis_mask.")
    ]
    assert report.op_types == ["CONV_2D", "FULLY_CONNECTED", "RESHAPE", "STRIDED_SLICE"]
    assert (report.ops, report.supported_ops) == (5, 4)  # crop's STRIDED_SLICE is taken


@pytest.mark.parametrize("layer", [keras.layers.Flatten, lambda name: keras.layers.Reshape((64,), name=name)])
def test_flatten_with_a_dynamic_batch_is_a_runtime_reshape_the_gpu_rejects(layer):
    """Flatten/Reshape on a batch-None model convert to SHAPE -> STRIDED_SLICE -> PACK -> RESHAPE (the
    shape computed at run time): the GPU delegate takes only PACK of them. A fixed batch makes one RESHAPE."""
    reports = []
    for batch in (None, 1):
        image = keras.Input((6, 6, 2), batch_size=batch, name="image")
        x = layer(name="flat")(keras.layers.Conv2D(4, 3, name="conv")(image))
        model = keras.Model(image, keras.layers.Dense(2, name="head")(x))
        reports.append(gpu_compatibility(_convert(model), _names(model)))
    dynamic, fixed = reports
    assert sorted((f.op, f.reason) for f in dynamic.unsupported) == [
        ("RESHAPE", "Expected 1 runtime input tensor(s), but node has 2 runtime input(s)."),
        ("SHAPE", "Not supported op SHAPE"),
        ("STRIDED_SLICE", "Slice does not support shrink_axis_mask."),
    ]
    assert {name for f in dynamic.unsupported for name in f.layers} == {"flat"}
    assert (dynamic.ops, dynamic.supported_ops) == (6, 3)
    assert fixed.fully_compatible and fixed.op_types == ["CONV_2D", "FULLY_CONNECTED", "RESHAPE"]


def test_mobilenet_v2_float32_is_fully_gpu_compatible():
    keras.utils.set_random_seed(0)
    model = mobilenet_v2(input_shape=(32, 32, 3), num_classes=4, alpha=0.35)
    report = gpu_compatibility(_convert(model), _names(model))
    assert report.fully_compatible and report.unsupported == [] and report.unchecked == []
    assert report.supported_ops == report.ops == 65
    assert report.op_types == ["ADD", "CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "MEAN", "SOFTMAX"]
    assert report.describe() == "GPU delegate: takes all 65 ops"


def test_float16_weights_are_read_as_constants_by_the_gpu_delegate(block_model, block_files):
    """Each float16 weight is a DEQUANTIZE feeding its op; the delegate checks the op as if it read the
    float16 constant (FP16GraphPartitionHelper), so the file is taken whole, as the float32 one is."""
    names = _names(block_model)
    report = gpu_compatibility(block_files["float16"], names)
    as_float32 = gpu_compatibility(block_files["float32"], names)
    assert report.fully_compatible and report.supported_ops == report.ops > as_float32.ops
    assert set(report.op_types) - set(as_float32.op_types) == {"DEQUANTIZE"}
    readiness = integer_readiness(block_files["float16"], names)
    assert not readiness.fully_integer and readiness.integer_ops == 0
    assert readiness.reason == "float16 weights (DEQUANTIZE to float32) and float32 activations"


def test_full_integer_int8_file_has_integer_io_and_every_op_on_nnapi(block_model, block_files):
    report = integer_readiness(block_files["int8"], _names(block_model))
    assert report.fully_integer and report.integer_io
    assert report.input_dtypes == report.output_dtypes == report.activation_dtypes == ["int8"]
    assert report.float_ops == 0 and report.float_islands == []
    assert report.integer_ops == report.ops  # not one QUANTIZE/DEQUANTIZE
    assert report.nnapi_rejected == [] and report.nnapi_ops == report.ops
    n = report.ops
    assert report.describe() == f"fully integer inside (int8), int8 io; NNAPI: {n} of {n} ops"
    assert gpu_compatibility(block_files["int8"]).fully_compatible


def test_int8_with_float_io_is_integer_inside_with_float_io(block_model, block_files):
    report = integer_readiness(block_files["int8_float_io"], _names(block_model))
    assert report.fully_integer and not report.integer_io
    assert (report.input_dtypes, report.output_dtypes) == (["float32"], ["float32"])
    assert report.integer_ops == report.ops - 2  # one QUANTIZE in, one DEQUANTIZE out
    assert report.float_islands == [] and report.nnapi_rejected == []
    assert "float32 io (QUANTIZE/DEQUANTIZE at the edges)" in report.describe()


def test_float_file_is_not_integer(block_model, block_files):
    report = integer_readiness(block_files["float32"], _names(block_model))
    assert not report.fully_integer and report.reason == "float32 weights and activations"
    assert report.integer_ops == 0 and report.float_islands == [] and not report.integer_io
    assert report.describe().startswith("not fully integer: float32 weights and activations; NNAPI:")


def test_an_op_without_int8_kernel_is_a_float_island_and_not_on_nnapi(topk_model):
    """CUMSUM has no int8 kernel: the int8 converter keeps it in float between DEQUANTIZE and QUANTIZE."""
    report = integer_readiness(_convert(topk_model, int8=True, io=tf.int8), _names(topk_model))
    assert not report.fully_integer and report.integer_io
    assert [(i.ops, i.layers) for i in report.float_islands] == [(["CUMSUM"], ["cumsum"])]
    assert report.float_ops == 1 and report.integer_ops == report.ops - 3
    assert [(f.op, f.layers) for f in report.nnapi_rejected] == [("CUMSUM", ["cumsum"])]
    assert report.reason == "1 op(s) compute in float in 1 island(s): cumsum"


def test_mixed_precision_file_lists_the_layers_kept_in_float(tmp_path):
    """A mixed file written as ``--quantize mixed`` writes it (Int8Session: the debugger's denylist)."""
    keras.utils.set_random_seed(0)
    image = keras.Input((12, 12, 3), name="image")
    x = keras.layers.Conv2D(8, 3, activation="relu", name="conv1")(image)
    x = keras.layers.Conv2D(8, 3, activation="relu", name="conv2")(x)
    x = keras.layers.Conv2D(8, 3, activation="relu", name="conv3")(x)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    model = keras.Model(image, keras.layers.Dense(3, activation="softmax", name="head")(x))
    names = _names(model)
    saved = write_saved_model(model, tmp_path / "saved")
    session = Int8Session(saved, _representative((12, 12, 3)), names, io_type="int8")
    tensors, in_float = session.float_tensors_of_layers(["conv2"])
    assert "conv2" in in_float and "head" not in in_float
    report = integer_readiness(session.quantize(tensors), names)
    assert not report.fully_integer and report.integer_io
    assert len(report.float_islands) == 1 and report.float_islands[0].layers == in_float
    assert "CONV_2D" in report.float_islands[0].ops
    assert report.reason.endswith(": " + ", ".join(in_float))
    assert integer_readiness(session.plain, names).fully_integer


def test_not_a_flatbuffer_names_the_file(tmp_path, topk_model):
    junk = tmp_path / "junk.tflite"
    junk.write_bytes(b"PK\x03\x04 this is a zip, not a model")
    for analyse in (gpu_compatibility, integer_readiness):
        with pytest.raises(DelegateAnalysisError, match=r"junk\.tflite: not a TFLite flatbuffer") as caught:
            analyse(junk)
        assert isinstance(caught.value, ValueError) and isinstance(caught.value, KerascnnError)
    cut = tmp_path / "cut.tflite"
    cut.write_bytes(_convert(topk_model)[:200])
    with pytest.raises(DelegateAnalysisError, match=r"cut\.tflite: a damaged TFLite flatbuffer"):
        gpu_compatibility(cut)
    with pytest.raises(DelegateAnalysisError, match=r"missing\.tflite: cannot read the file"):
        integer_readiness(tmp_path / "missing.tflite")


def test_inspect_and_validate_print_the_accelerator_readings(topk_model, tmp_path):
    """inspect names the rejected op by its layer from the file alone (and in --json); a file that
    cannot be read is reported naming it, and the others go on."""
    from click.testing import CliRunner
    from kerascnn.export import metadata as md

    from kerascnn.cli import main

    meta = md.ModelMetadata("topk", ["a", "b"], [8, 8], 3, format="tflite")
    name = "topk_float32.tflite"
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / name).write_bytes(md.embed_tflite_metadata(_convert(topk_model), meta))
    runner = CliRunner()
    shown = runner.invoke(main, ["inspect", str(tmp_path / "out" / name)])
    assert shown.exit_code == 0, shown.output
    assert "GPU delegate: takes 7 of 8 ops; not: topk (TOPK_V2: Not supported op TOPK_V2)" in shown.output
    assert "NNAPI" not in shown.output  # a float file: no integer reading
    as_json = json.loads(runner.invoke(main, ["inspect", "--json", str(tmp_path / "out" / name)]).output)
    assert as_json["accelerators"]["gpu"]["unsupported"][0]["layers"] == ["topk"]
    junk = tmp_path / "junk.tflite"
    junk.write_bytes(b"PK\x03\x04 not a model")
    both = runner.invoke(main, ["inspect", str(junk), str(tmp_path / "out" / name)])
    assert both.exit_code == 1 and "junk.tflite" in both.output and "takes 7 of 8 ops" in both.output


def test_benchmark_says_which_ops_xnnpack_takes(topk_model, tmp_path):
    """XNNPACK coverage read from the interpreter after delegation: the top-k and cumsum ops run on
    LiteRT's own kernels, and benchmark's table shows it."""
    from click.testing import CliRunner
    from kerascnn.export import metadata as md
    from kerascnn.export.delegates import xnnpack_coverage

    from kerascnn.cli import main

    path = tmp_path / "topk_float32.tflite"
    meta = md.ModelMetadata("topk", ["a", "b"], [8, 8], 3, format="tflite")
    path.write_bytes(md.embed_tflite_metadata(_convert(topk_model), meta))
    coverage = xnnpack_coverage(path, _names(topk_model))
    assert {(f.op, f.layers[0]) for f in coverage.reference} >= {("TOPK_V2", "topk"), ("CUMSUM", "cumsum")}
    assert coverage.xnnpack_ops >= 3 and coverage.xnnpack_ops + len(coverage.reference) == coverage.ops
    result = CliRunner().invoke(main, ["benchmark", str(path), "--runs", "2", "--no-mediapipe"])
    assert result.exit_code == 0, result.output
    assert "XNNPACK ops" in result.output and f"{coverage.xnnpack_ops}/{coverage.ops}" in result.output
    assert "on LiteRT's own kernels: " in result.output and "TOPK_V2 (topk" in result.output
    assert "GPU ops" in result.output and "7/8" in result.output  # the GPU delegate's reading too
