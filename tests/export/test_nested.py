"""A user's own model as users build it: a keras.applications MobileNetV2 nested as one layer, behind a
``Rescaling`` layer, saved as ``.keras`` and ``.h5``, and the same layers as a Sequential model.

Trained briefly here (~30 s) on 32x32 RGB Fashion-MNIST so its predictions mean something. The int8
report names inner layers by their path, a deliberately broken inner layer ranks first and is the one
``--quantize mixed`` keeps in float, and MediaPipe Tasks classifies the lone files with no --mean/--std.
"""

from __future__ import annotations

import json

import keras
import numpy as np
import pytest
from click.testing import CliRunner
from kerascnn.export import metadata as md
from kerascnn.export import sensitivity as sens
from kerascnn.export.pipeline import ExportError, ExportOptions, export_model, resolve_source
from kerascnn.export.validate import validate
from PIL import Image

from kerascnn import graph
from kerascnn.analysis import analyze
from kerascnn.cli import main
from kerascnn.data import load_builtin

from .outliers import with_outlier_bn_channel

BACKBONE = "mobilenetv2_0.35_32"
# An early bottleneck: at 32x32 the last blocks' maps are 1x1, where the per-channel SQNR has one value
# per channel and image (BENCHMARKS.md); expanded_conv_project's 16x16 map is read by block_1_expand only.
BROKEN = f"{BACKBONE}/expanded_conv_project"
READER = f"{BACKBONE}/block_1_expand"  # the one layer that reads BROKEN's output (its outlier channel zeroed)
# The report ranks one of the two first and mixed keeps it in float: int8 loses the narrow channels on
# BROKEN's output tensor, which is READER's input; which layer's error measures larger moves with the
# fixture's training, which is seeded but not bitwise reproducible on two threads.
CULPRITS = {BROKEN, READER}
QUIET = dict(log=lambda *_: None)


def _rgb32(images):
    return np.stack(
        [np.asarray(Image.fromarray(i).resize((32, 32), Image.BILINEAR).convert("RGB")) for i in images]
    )


@pytest.fixture(scope="module")
def user_models(tmp_path_factory):
    """(folder, {kind: model file}, data folder): the nested model as .keras and .h5, a Sequential one,
    the broken one (.keras); a class-folder set of 400 unseen 32x32 RGB PNGs."""
    folder = tmp_path_factory.mktemp("user_models")
    (x, y), (xt, yt) = load_builtin("fashion_mnist")
    keras.utils.set_random_seed(0)
    base = keras.applications.MobileNetV2(
        input_shape=(32, 32, 3), alpha=0.35, include_top=False, weights=None
    )
    for layer in base.layers:  # keras.applications' 0.999 would leave the moving statistics unset
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = 0.9
    rescale, pool = (
        keras.layers.Rescaling(1 / 127.5, offset=-1, name="rescaling"),
        keras.layers.GlobalAveragePooling2D(name="pool"),
    )
    head = keras.layers.Dense(10, activation="softmax", name="head")
    inputs = keras.Input((32, 32, 3), name="image")
    model = keras.Model(inputs, head(pool(base(rescale(inputs)))), name="user_mnv2")
    model.compile(keras.optimizers.Adam(2e-3), "sparse_categorical_crossentropy")
    model.fit(_rgb32(x[:4000]).astype("float32"), y[:4000], batch_size=128, epochs=3, verbose=0)
    files = {"keras": folder / "user.keras", "h5": folder / "user.h5", "sequential": folder / "seq.keras"}
    model.save(files["keras"])
    model.save(files["h5"])
    seq = keras.Sequential([keras.Input((32, 32, 3)), rescale, base, pool, head], name="user_seq")
    seq.save(files["sequential"])
    broken = keras.saving.load_model(files["keras"])
    inner = broken.get_layer(BACKBONE)
    with_outlier_bn_channel(
        broken, inner.get_layer("expanded_conv_project_BN"), inner.get_layer("block_1_expand")
    )
    files["broken"] = folder / "broken.keras"
    broken.save(files["broken"])
    data = folder / "photos"
    for i, (im, label) in enumerate(zip(_rgb32(xt[:400]), yt[:400], strict=True)):
        (data / str(label)).mkdir(parents=True, exist_ok=True)
        Image.fromarray(im).save(data / str(label) / f"{i}.png")
    (folder / "labels.txt").write_text("".join(f"{i}\n" for i in range(10)))
    return folder, files, data


def _export(file, out, data, **options):
    source = resolve_source(file, labels=[str(i) for i in range(10)])
    opts = dict(calibration_data=str(data), calibration_steps=100, holdout=300, **options)
    logs = []
    results = export_model(source, out, ExportOptions(**opts), log=logs.append)
    assert all(r.status == "ok" for r in results), [(r.format, r.error) for r in results]
    return {r.format: r for r in results}, "\n".join(logs)


def test_flatten_keeps_outputs_paths_and_leaves_the_model_alone(user_models):
    _, files, _ = user_models
    model = keras.saving.load_model(files["keras"])
    flat = graph.flatten(model)
    x = np.random.default_rng(0).uniform(0, 255, (4, 32, 32, 3)).astype("float32")
    np.testing.assert_allclose(flat(x), model(x), atol=1e-5)
    assert len(flat.layers) > 150 and not any(isinstance(layer, keras.Model) for layer in flat.layers)
    assert graph.layer_path(flat, "block_13_project") == f"{BACKBONE}/block_13_project"
    assert graph.resolve_layer(flat, f"{BACKBONE}/block_13_project").name == "block_13_project"
    assert graph.resolve_layer(flat, BACKBONE).name == "out_relu"  # a nested model: its output layer
    assert model.get_layer(BACKBONE).get_layer("Conv1") is not flat.get_layer("Conv1")  # copies
    pre = graph.input_preprocessing(flat)
    assert pre.layers == ["rescaling"] and np.allclose(pre.mean, 127.5) and np.allclose(pre.std, 127.5)
    seq = graph.flatten(keras.saving.load_model(files["sequential"]))
    np.testing.assert_allclose(seq(x), model(x), atol=1e-5)


@pytest.mark.parametrize("kind", ["keras", "h5", "sequential"])
def test_each_user_model_exports_every_variant_with_raw_pixel_metadata(user_models, tmp_path, kind):
    folder, files, data = user_models
    modes = ("none", "dynamic", "float16", "int8", "int16x8") if kind == "keras" else ("none", "int8")
    results, logs = _export(files[kind], tmp_path, data, tflite=modes, onnx=True)
    assert "normalizes its input itself: rescaling" in logs
    meta = md.read_tflite_metadata(tmp_path / f"{results['int8'].file}")
    assert (meta.mean, meta.std) == ([0.0], [1.0])  # the files take raw pixels: the model rescales
    report = sens.read_report(sens.report_paths(tmp_path, meta.model_name)["json"])
    inner = {row["layer"] for row in report["layers"] if row["layer"].startswith(f"{BACKBONE}/")}
    assert len(inner) >= 40, sorted(inner)
    rows, summary = validate([tmp_path], str(data), max_drop=3.0, **QUIET)
    by = {r.format: r for r in rows}
    assert summary["passed"], [(r.format, r.status, r.error) for r in rows]
    # MediaPipe Tasks, the lone file, no --mean/--std given: the figures the README reports
    assert by["mediapipe float32"].status == "ok" and by["mediapipe float32"].agreement >= 99.0
    assert by["mediapipe int8"].status == "ok" and by["mediapipe int8"].agreement >= 90.0


def test_qat_and_pruning_rebuild_the_nested_sequential_model(user_models, tmp_path):
    _, files, data = user_models
    results, logs = _export(
        files["sequential"],
        tmp_path,
        data,
        tflite=(),
        qat=True,
        prune=0.5,
        prune_epochs=1,
        train_fraction=1.0,
    )
    assert {"pruned", "qat_int8"} <= set(results)
    assert results["pruned"].notes["sparsity"] == pytest.approx(0.5, abs=0.02)
    qat = results["qat_int8"].notes
    # The Rescaling layer is rebuilt as an int8 1x1 depthwise conv; the file computes what the QAT Keras
    # model computes (50% sparsity after 6 steps costs accuracy itself: that is not what is tested here).
    assert "rescaling" in qat["special_layers"] and qat["check"]["argmax_agreement"] >= 0.75
    rows, _ = validate([tmp_path / results["qat_int8"].file], str(data), mediapipe=False, **QUIET)
    assert rows[0].status == "ok" and rows[0].top1 > 15  # above chance (10 classes)


def test_a_broken_inner_layer_ranks_first_by_its_path_and_mixed_keeps_it_in_float(user_models, tmp_path):
    _, files, data = user_models
    results, logs = _export(files["broken"], tmp_path, data, tflite=("int8", "mixed"), min_agreement=90.0)
    report = sens.read_report(sens.report_paths(tmp_path, "user_mnv2")["json"])
    assert report["layers"][0]["layer"] in CULPRITS, report["layers"][:3]
    mixed = results["mixed"].notes
    assert mixed["judged"] and CULPRITS & set(mixed["float_layers"]) and len(mixed["float_layers"]) <= 5
    assert mixed["int8_agreement"] < 90.0 <= mixed["agreement"]
    assert "95% CI [" in logs
    meta = md.read_tflite_metadata(tmp_path / results["mixed"].file)
    assert meta.gate.startswith("passed: top-1 agreement >= 90.0%") and CULPRITS & set(meta.float_layers)
    rows, _ = validate([tmp_path], str(data), min_agreement=0, max_drop=100, mediapipe=False, **QUIET)
    by = {r.format: r for r in rows}
    assert by["tflite mixed"].agreement > by["tflite int8"].agreement + 5


def test_six_photos_are_not_enough_to_judge(user_models, tmp_path):
    folder, files, data = user_models
    few = tmp_path / "few"
    few.mkdir()
    for path in sorted(data.rglob("*.png"))[:6]:
        (few / path.name).write_bytes(path.read_bytes())
    results, logs = _export(files["keras"], tmp_path / "out", few, tflite=("mixed",))
    assert "warning: int8 calibration on 5 image(s), fewer than 100" in logs
    assert "not judged (1 images held back; give at least 100 with --calibration-data)" in logs
    notes = results["mixed"].notes
    assert notes["judged"] is False and notes["float_layers"] == []
    meta = md.read_tflite_metadata(tmp_path / "out" / results["mixed"].file)
    assert meta.gate.startswith("not judged (1 images held back")
    sidecar = json.loads((tmp_path / "out" / "model.json").read_text())
    assert sidecar["files"][results["mixed"].file]["judged"] is False


def test_contradicting_mean_and_two_input_nested_models_are_refused(user_models, tmp_path):
    _, files, _ = user_models
    with pytest.raises(ExportError, match=r"--mean 127.5 --std 127.5 contradict .*user.keras: the model "
                       r"normalizes its input itself \(rescaling"):  # fmt: skip
        resolve_source(files["keras"], mean=[127.5], std=[127.5])
    assert resolve_source(files["keras"], mean=[0], std=[1]).metadata.mean == [0.0]
    a, b = keras.Input((8, 8, 3)), keras.Input((8, 8, 3))
    two = keras.Model([a, b], keras.layers.Add()([a, b]), name="two_eyes")
    inp = keras.Input((8, 8, 3))
    outer = keras.Model(inp, keras.layers.GlobalAveragePooling2D()(two([inp, inp])), name="outer")
    path = tmp_path / "two.keras"
    outer.save(path)
    result = CliRunner().invoke(main, ["summary", str(path)])
    assert result.exit_code != 0 and "nested model 'two_eyes' takes 2 inputs" in result.output
    assert "Traceback" not in result.output


def test_per_channel_normalization_is_folded_so_mediapipe_runs_the_lone_file(user_models, tmp_path):
    folder, files, data = user_models
    model = keras.saving.load_model(files["keras"])
    inputs = keras.Input((32, 32, 3), name="image")
    layers = [model.get_layer(BACKBONE), model.layers[-2], model.layers[-1]]
    x = inputs
    for layer in layers:  # the same network without its Rescaling: it takes ImageNet-normalized pixels
        x = layer(x)
    plain = tmp_path / "plain.keras"
    keras.Model(inputs, x, name="plain").save(plain)
    mean, std = [123.7, 116.3, 103.5], [58.4, 57.1, 57.4]
    source = resolve_source(plain, mean=mean, std=std, labels=[str(i) for i in range(10)])
    logs = []
    results = export_model(source, tmp_path / "out", ExportOptions(tflite=("none",)), log=logs.append)
    assert all(r.status == "ok" for r in results)
    assert any("folded into the graph" in line for line in logs)
    meta = md.read_tflite_metadata(tmp_path / "out" / "plain_float32.tflite")
    assert (meta.mean, meta.std) == ([0.0], [1.0])
    rows, summary = validate([tmp_path / "out"], str(data), **QUIET)
    by = {r.format: r for r in rows}
    assert summary["passed"] and by["mediapipe float32"].status == "ok"
    assert by["mediapipe float32"].agreement >= 99.0


def test_summary_and_explain_see_inside_the_backbone(user_models, tmp_path):
    _, files, data = user_models
    model = keras.saving.load_model(files["keras"])
    nested, flat = analyze(model), analyze(graph.flatten(model))
    assert (flat.total_params, flat.total_macs) == (nested.total_params, nested.total_macs)
    assert flat.receptive_field == nested.receptive_field
    summary = CliRunner().invoke(main, ["summary", str(files["h5"])])
    assert summary.exit_code == 0 and "block_13_project" in summary.output
    image = next(iter(sorted(data.rglob("*.png"))))
    explain = lambda *layer: CliRunner().invoke(  # noqa: E731
        main, ["explain", str(files["keras"]), str(image), "--out", str(tmp_path / "cam"), *layer]
    )
    result = explain()
    assert result.exit_code == 0, result.output
    inner = explain("--layer", f"{BACKBONE}/block_13_expand")
    assert inner.exit_code == 0, inner.output
    bad = explain("--layer", "pool")
    assert bad.exit_code != 0 and "is not one (N, H, W, C) map" in bad.output
    assert "Traceback" not in bad.output
