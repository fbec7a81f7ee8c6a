"""The quantization controls users ask for (issue 27): ``--per-tensor`` weights for DSPs and NPUs without
per-channel kernels, and ``--float-layers`` (the user's own list of layers kept in float, by the mechanism
``--quantize mixed`` uses), on the outlier LeNet of tests/export/outliers.py."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner
from kerascnn.export import metadata as md
from kerascnn.export import sensitivity as sens
from kerascnn.export.pipeline import ExportOptions, export_model, resolve_source
from kerascnn.export.validate import validate

from kerascnn.cli import main

from .test_sensitivity import FAST, QUIET, relu_lenet  # noqa: F401 - the module fixture

WEIGHTED = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED")
LAYERS = ["c1_conv", "s2_pool", "c3_conv", "s4_pool", "c5_conv", "flatten", "f6", "predictions"]


def _weighted_ops(path):
    """(op, Keras layer, output dtype, number of weight scales) of each conv/dense op of a .tflite."""
    graph = sens._Graph.of(path.read_bytes())
    rows = []
    for op in graph.ops:
        if op["name"] in WEIGHTED:
            out = graph.tensors[op["outputs"][0]]
            weight = graph.tensors[op["inputs"][1]]
            layer = sens.keras_layers_of(out["name"], LAYERS) or ["predictions"]  # the last op: the signature
            rows.append((op["name"], layer[0], out["dtype"], weight["dtype"], weight["scales"]))
    return rows


def test_per_tensor_writes_one_scale_per_weight_tensor_and_says_so(relu_lenet, tmp_path):  # noqa: F811
    plain, _ = relu_lenet
    source = resolve_source(plain)
    opts = ExportOptions(tflite=("int8", "mixed"), per_tensor=True, min_agreement=95.0, **FAST)
    results = {r.format: r for r in export_model(source, tmp_path / "pt", opts, **QUIET)}
    assert all(r.status == "ok" for r in results.values()), results
    default = export_model(source, tmp_path / "pc", ExportOptions(tflite=("int8",), **FAST), **QUIET)
    assert all(r.status == "ok" for r in default), default

    for name in ("lenet5_int8.tflite", "lenet5_mixed.tflite"):
        rows = _weighted_ops(tmp_path / "pt" / name)
        # 5 conv/dense ops and the 2 average pools as depthwise convolutions (export/rewrite.py)
        assert len(rows) == 7 and all(r[3] == "int8" and r[4] == 1 for r in rows), rows  # from the flatbuffer
        assert md.read_tflite_metadata(tmp_path / "pt" / name).weights == "per-tensor"
    per_channel = _weighted_ops(tmp_path / "pc" / "lenet5_int8.tflite")
    assert [r[4] for r in per_channel] == [6, 6, 16, 16, 120, 84, 10]  # one scale per output channel
    assert md.read_tflite_metadata(tmp_path / "pc" / "lenet5_int8.tflite").weights is None
    report = (tmp_path / "pt" / "lenet5_int8_report.txt").read_text()
    assert "lenet5_int8.tflite, per-tensor weights)" in report
    assert json.loads((tmp_path / "pt" / "lenet5_int8_report.json").read_text())["weights"] == "per-tensor"
    assert results["int8"].notes["weights"] == "per-tensor"

    files = [tmp_path / "pt" / "lenet5.keras", tmp_path / "pt" / "lenet5_int8.tflite"]
    files.append(tmp_path / "pc" / "lenet5_int8.tflite")
    rows, _ = validate(files, "fashion_mnist", limit=500, mediapipe=False, **QUIET)
    by = {r.format: r for r in rows}
    assert "tflite int8 per-tensor" in by and "tflite int8" in by, list(by)
    assert by["tflite int8 per-tensor"].status == "ok" and by["tflite int8 per-tensor"].agreement >= 90.0


def test_float_layers_leave_exactly_those_layers_in_float(relu_lenet, tmp_path):  # noqa: F811
    _, outlier = relu_lenet
    result = CliRunner().invoke(
        main,
        ["export", str(outlier), "--out", str(tmp_path / "f"), "--quantize", "int8",
         "--float-layers", "c1_conv, s2_pool,c3_conv", "--calibration-data", "fashion_mnist",
         "--calibration-steps", "100"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "layers in float (--float-layers): c1_conv, s2_pool, c3_conv" in result.output
    path = tmp_path / "f" / "lenet5_int8.tflite"
    rows = _weighted_ops(path)
    in_float = {layer for _, layer, out, weight, _ in rows if out == "float32" and weight == "float32"}
    # the average pools are depthwise convolutions in the phone file (export/rewrite.py): s2_pool in float
    assert in_float == {"c1_conv", "s2_pool", "c3_conv"}, rows
    assert all(out == "int8" for _, layer, out, _, _ in rows if layer not in in_float), rows
    assert {layer: out for _, layer, out, _, _ in rows}["s4_pool"] == "int8", rows
    meta = md.read_tflite_metadata(path)
    assert meta.quantization == "int8" and meta.float_layers == ["c1_conv", "s2_pool", "c3_conv"]
    report = (tmp_path / "f" / "lenet5_int8_report.txt").read_text()  # the report describes this file
    assert (
        "lenet5_int8.tflite keeps these layers in float (--float-layers): c1_conv, s2_pool, c3_conv" in report
    )
    # The outlier channel's tensor stays in float, which is what fixes this model (the layers
    # --quantize mixed finds for it).
    files = [tmp_path / "f" / "lenet5.keras", tmp_path / "f" / "lenet5_int8.tflite"]
    table, _ = validate(files, "fashion_mnist", limit=500, mediapipe=False, **QUIET)
    row = next(r for r in table if r.file == "lenet5_int8.tflite")
    assert row.format == "tflite int8 (3 float layer(s))" and row.agreement >= 97.0, row


@pytest.mark.parametrize(
    "args, message",
    [
        (["--quantize", "int8", "--float-layers", "c3_cnv"],
         "--float-layers c3_cnv: no such layer in lenet5 (did you mean c3_conv"),
        (["--quantize", "int8", "--float-layers", "input"], None),
        (["--quantize", "float16", "--float-layers", "c3_conv"], "--float-layers keeps layers in float in"),
        (["--quantize", "float16", "--per-tensor"], "--per-tensor applies to calibrated integer files: add"),
    ],
)  # fmt: skip
def test_quantization_controls_refuse_bad_input(relu_lenet, tmp_path, args, message):  # noqa: F811
    out = tmp_path / "x"
    cmd = ["export", str(relu_lenet[0]), "--out", str(out), "--calibration-data", "fashion_mnist",
           "--calibration-steps", "20", *args]  # fmt: skip
    result = CliRunner().invoke(main, cmd)
    assert result.exit_code != 0 and "Traceback" not in result.output, result.output
    if message is None:  # a real layer without an op of its own: the int8 file fails, naming it
        assert "--float-layers input: no op of the int8 file computes this layer" in result.output
        assert "the layers with ops are c1_conv" in result.output
        assert not (out / "lenet5_int8.tflite").exists()
    else:
        assert message in result.output
        assert not out.exists()  # refused before anything is written


def test_float_layers_take_paths_inside_a_nested_backbone():
    """A transfer-learning model (a keras.applications backbone nested as one layer): --float-layers
    takes the inner path, and a wrong one names the close paths."""
    import keras
    from kerascnn.export.pipeline import ExportError, _resolve_float_layers

    from kerascnn.graph import flatten

    base = keras.applications.MobileNetV2(
        input_shape=(32, 32, 3), alpha=0.35, include_top=False, weights=None
    )
    inputs = keras.Input((32, 32, 3))
    outputs = keras.layers.Dense(3)(keras.layers.GlobalAveragePooling2D()(base(inputs)))
    flat = flatten(keras.Model(inputs, outputs))
    path = f"{base.name}/block_3_project"
    assert _resolve_float_layers(flat, [path, "block_3_project"]) == ["block_3_project"]
    with pytest.raises(
        ExportError, match=rf"--float-layers {base.name}/block_3_projet: no such layer .*did you mean"
    ):
        _resolve_float_layers(flat, [f"{base.name}/block_3_projet"])
