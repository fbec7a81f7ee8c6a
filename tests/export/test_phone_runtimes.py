"""The exported ``.tflite`` as phone runtimes load it: the standard TFLite Metadata read back with the
schema's own generated reader (``mediapipe.tasks.metadata.metadata_schema_py_generated``), and the lone
file classified by MediaPipe Tasks' ImageClassifier, the C++ core of its Android/iOS/web tasks."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import keras
import numpy as np
import pytest
from click.testing import CliRunner
from kerascnn.export import metadata as md
from kerascnn.export import tflite_metadata as tm
from kerascnn.export.pipeline import ExportOptions, export_model, resolve_source
from kerascnn.export.runtime import MediaPipePredictor
from kerascnn.export.tflite import compact
from kerascnn.export.validate import validate

from kerascnn import data as kdata
from kerascnn.cli import main

fb = pytest.importorskip("mediapipe.tasks.metadata.metadata_schema_py_generated")

VARIANTS = ("none", "dynamic", "float16", "int8")
FASHION = kdata.FASHION_MNIST_CLASSES
QUIET = dict(log=lambda *_: None)


@pytest.fixture(scope="module")
def rgb_export(trained_lenet, tmp_path_factory):
    """The trained LeNet-5 (gray, 28x28) exported with --rgb-input in every variant, and the int8 file
    with uint8 and with int8 tensors in and out."""
    out = tmp_path_factory.mktemp("phone")
    source = resolve_source(trained_lenet)
    results = export_model(
        source, out / "rgb", ExportOptions(tflite=VARIANTS, rgb_input=True, calibration_steps=100), **QUIET
    )
    assert all(r.status == "ok" for r in results), results
    for io_type in ("uint8", "int8"):
        opts = ExportOptions(tflite=("int8",), rgb_input=True, io_type=io_type, calibration_steps=100)
        results = export_model(source, out / io_type, opts, **QUIET)
        assert all(r.status == "ok" for r in results), results
    return out


def schema_reader(path: Path):
    """The file's TFLITE_METADATA buffer through the schema's generated object API."""
    data = md.strip_tflite_metadata(path.read_bytes())
    buffer = tm.model_metadata_buffer(data)
    assert buffer is not None and buffer[4:8] == b"M001", path
    return fb.ModelMetadataT.InitFromObj(fb.ModelMetadata.GetRootAs(buffer, 0))


def test_every_variant_carries_standard_metadata_the_schema_reader_reads(rgb_export):
    files = sorted(rgb_export.rglob("*.tflite"))
    assert len(files) == 6
    for path in files:
        meta = md.read_tflite_metadata(path)  # kerascnn's own JSON is still found, in the same archive
        assert meta.labels == FASHION and meta.channels == 3 and meta.channel_order == "RGB"
        std = schema_reader(path)
        assert (
            std.name == b"lenet5" and std.author.startswith(b"kerascnn") and std.minParserVersion == b"1.0.0"
        )
        assert std.version == meta.model_version.encode() and len(meta.model_version) == 16
        assert std.description and b"10 classes" in std.description
        image = std.subgraphMetadata[0].inputTensorMetadata[0]
        assert image.content.contentPropertiesType == fb.ContentProperties.ImageProperties
        assert image.content.contentProperties.colorSpace == fb.ColorSpaceType.RGB
        size = image.content.contentProperties.defaultSize
        assert (size.width, size.height) == (28, 28)
        unit = image.processUnits[0]
        assert unit.optionsType == fb.ProcessUnitOptions.NormalizationOptions
        assert list(unit.options.mean) == [127.5] and list(unit.options.std) == [127.5]
        lo, hi = image.stats.min[0], image.stats.max[0]
        if meta.input_dtype == "float32":
            assert (lo, hi) == (-1.0, 1.0)
        else:  # the range in the tensor's own units: pixels 0 and 255, normalized and quantized
            info = np.iinfo(meta.input_dtype)
            assert info.min <= lo < lo + 250 <= hi <= info.max
        scores = std.subgraphMetadata[0].outputTensorMetadata[0]
        labels_file = scores.associatedFiles[0]
        assert (
            labels_file.type == fb.AssociatedFileType.TENSOR_AXIS_LABELS and labels_file.name == b"labels.txt"
        )
        assert [f.name for f in std.associatedFiles] == [b"metadata.json"]
        # one archive, packed as the standard's populator packs it: stored entries after the flatbuffer
        with zipfile.ZipFile(io.BytesIO(path.read_bytes())) as zf:
            assert zf.namelist() == ["labels.txt", "metadata.json"]
            assert all(i.compress_type == zipfile.ZIP_STORED for i in zf.infolist())
            assert zf.read("labels.txt").decode().splitlines() == FASHION


def test_the_gray_exports_say_grayscale(trained_lenet, tmp_path):
    results = export_model(resolve_source(trained_lenet), tmp_path, ExportOptions(tflite=("none",)), **QUIET)
    assert results[-1].status == "ok"
    image = schema_reader(tmp_path / "lenet5_float32.tflite").subgraphMetadata[0].inputTensorMetadata[0]
    assert image.content.contentProperties.colorSpace == fb.ColorSpaceType.GRAYSCALE


def test_metadata_bytes_are_reproducible_and_re_embedding_replaces(rgb_export):
    path = rgb_export / "rgb" / "lenet5_int8.tflite"
    data = path.read_bytes()
    meta = md.read_tflite_metadata(path)
    assert md.embed_tflite_metadata(data, meta) == data
    assert md.embed_tflite_metadata(md.strip_tflite_metadata(data), meta) == data


def test_mediapipe_classifies_each_variant_from_the_lone_file(rgb_export, tmp_path):
    """Every variant, copied alone into an empty folder (no labels.txt, no model.json), through MediaPipe
    Tasks: category names are the labels, and on the 28x28 images (no resizing) MediaPipe agrees with the
    Keras model as well as LiteRT does (BENCHMARKS.md: 100% float, >= 99% int8)."""
    paths = sorted(rgb_export.rglob("*.tflite"))
    rows, summary = validate(
        [rgb_export / "rgb" / "lenet5.keras", *paths], "fashion_mnist", limit=1000, latency_runs=2, **QUIET
    )
    assert summary["passed"], rows
    mediapipe_rows = [r for r in rows if r.format.startswith("mediapipe")]
    by_variant = {r.format: r for r in mediapipe_rows}
    assert {"mediapipe float32", "mediapipe dynamic", "mediapipe float16", "mediapipe int8"} <= set(
        by_variant
    )
    for r in mediapipe_rows:
        if "(int8 io)" in r.format:  # MediaPipe takes uint8 or float32 tensors only
            assert r.status == "n/a" and "--io-type uint8" in r.error
            continue
        assert r.status == "ok" and r.top1 > 85, r
        floor = 99.9 if r.format in ("mediapipe float32", "mediapipe float16") else 98.5
        assert r.agreement >= floor, r
    lone = tmp_path / "lone.tflite"
    lone.write_bytes((rgb_export / "rgb" / "lenet5_int8.tflite").read_bytes())
    predictor = MediaPipePredictor(lone)
    try:
        frame = np.zeros((120, 90, 3), np.uint8)  # any size: MediaPipe resizes
        assert predictor.classify(frame).shape == (10,)
        assert predictor.names == FASHION
    finally:
        predictor.close()


def _repack(path: Path, standard: dict | None = None, labels: list[str] | None = None, keep_json=True):
    """Rewrite the standard metadata and/or the packed labels file of ``path``, keeping the rest."""
    data = path.read_bytes()
    files = md.associated_files(data)
    flat = md.strip_tflite_metadata(data)
    if standard is not None:
        flat = compact(flat, {tm.METADATA_NAME: tm.encode(standard)})
    if labels is not None:
        files["labels.txt"] = md.labels_txt(labels).encode()
    if not keep_json:
        files.pop(md.ZIP_ENTRY)
    buf = io.BytesIO(flat)
    buf.seek(0, 2)
    with zipfile.ZipFile(buf, "a") as zf:
        for name, content in files.items():
            zf.writestr(zipfile.ZipInfo(name, (1980, 1, 1, 0, 0, 0)), content)
    path.write_bytes(buf.getvalue())


def test_wrong_normalization_or_permuted_labels_in_the_standard_metadata_fail_the_mediapipe_row(
    rgb_export, tmp_path
):
    """kerascnn's own JSON stays right, so the LiteRT rows pass: only the runtime that reads the standard
    metadata, as a phone does, can catch these."""
    folder = tmp_path / "broken"
    folder.mkdir()
    for name in ("lenet5.keras", "model.json", "labels.txt", "lenet5_float32.tflite", "lenet5_int8.tflite"):
        (folder / name).write_bytes((rgb_export / "rgb" / name).read_bytes())
    norm = folder / "lenet5_float32.tflite"
    standard = md.read_standard_metadata(norm)
    image = standard["subgraph_metadata"][0]["input_tensor_metadata"][0]
    image["process_units"] = [{"options": ("NormalizationOptions", {"mean": [0.0], "std": [1.0]})}]
    _repack(norm, standard=standard)
    swapped = list(FASHION)
    swapped[0], swapped[6] = swapped[6], swapped[0]  # T-shirt/top <-> Shirt
    _repack(folder / "lenet5_int8.tflite", labels=swapped)
    rows, summary = validate([folder], "fashion_mnist", limit=300, latency_runs=2, **QUIET)
    assert not summary["passed"]
    status = {r.format: r for r in rows}
    assert status["tflite float32"].status == "ok" and status["tflite int8"].status == "ok"
    assert status["mediapipe float32"].status == "FAIL" and "max-drop" in status["mediapipe float32"].error
    assert status["mediapipe int8"].status == "FAIL"
    assert "'Shirt' for MediaPipe, 'T-shirt/top' in the file's labels" in status["mediapipe int8"].error


def test_a_file_with_only_the_standard_metadata_validates_and_inspects(rgb_export, tmp_path):
    """A file made elsewhere (MediaPipe Model Maker writes only the standard metadata): kerascnn reads its
    normalization and labels from it."""
    path = tmp_path / "foreign.tflite"
    path.write_bytes((rgb_export / "rgb" / "lenet5_float32.tflite").read_bytes())
    _repack(path, keep_json=False)
    assert sorted(md.associated_files(path.read_bytes())) == ["labels.txt"]
    meta = md.read_tflite_metadata(path)
    assert meta.labels == FASHION and meta.mean == [127.5] and meta.input_size == [28, 28]
    assert meta.channels == 3 and meta.input_dtype == "float32"
    rows, summary = validate([path], "fashion_mnist", limit=200, latency_runs=2, **QUIET)
    # its LiteRT and MediaPipe rows; the float16 simulation needs the Keras model (n/a without it)
    assert summary["passed"] and [r.status for r in rows] == ["ok", "n/a", "ok"]
    result = CliRunner().invoke(main, ["inspect", str(path)])
    assert result.exit_code == 0, result.output
    assert "TFLite Metadata lenet5" in result.output and "labels.txt (10 labels)" in result.output


def test_a_user_model_gets_the_standard_metadata_and_mediapipe_names_its_classes(tmp_path):
    model = keras.Sequential(
        [
            keras.Input((16, 16, 3)),
            keras.layers.Conv2D(8, 3, activation="relu"),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(3, activation="softmax"),
        ],
        name="user_net",
    )
    path = tmp_path / "user.h5"
    model.save(path)
    (tmp_path / "labels.txt").write_text("cat\ndog\nbird\n")
    for name, mean, std in (("one", "127", "64"), ("per_channel", "123.7,116.3,103.5", "58.4,57.1,57.4")):
        out = tmp_path / name
        result = CliRunner().invoke(
            main,
            ["export", str(path), "--tflite", "--out", str(out), "--labels", str(tmp_path / "labels.txt"),
             "--mean", mean, "--std", std],
        )  # fmt: skip
        assert result.exit_code == 0, result.output
        file = out / "user_net_float32.tflite"
        unit = schema_reader(file).subgraphMetadata[0].inputTensorMetadata[0].processUnits[0].options
        if name == "one":
            assert list(unit.mean) == pytest.approx([float(v) for v in mean.split(",")])
            assert list(unit.std) == pytest.approx([float(v) for v in std.split(",")])
        else:  # per-channel: folded into the graph (issue 26), the file takes raw pixels
            assert (list(unit.mean), list(unit.std)) == ([0.0], [1.0])
        if name == "one":
            predictor = MediaPipePredictor(file)
            try:
                predictor.classify(np.full((40, 30, 3), 90, np.uint8))
                assert predictor.names == ["cat", "dog", "bird"]
            finally:
                predictor.close()
        else:  # MediaPipe Tasks takes one mean/std for all channels; the folded file needs none
            rows, summary = validate(
                [out / "user_net.keras", file], str(_images(tmp_path)), latency_runs=1, **QUIET
            )
            mp_row = next(r for r in rows if r.format.startswith("mediapipe"))
            assert summary["passed"] and mp_row.status == "ok" and mp_row.agreement == 100.0


def _images(tmp_path: Path) -> Path:
    from PIL import Image

    folder = tmp_path / "photos"
    folder.mkdir(exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(6):
        Image.fromarray(rng.integers(0, 256, (20 + i, 24, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    return folder


def test_gray_models_are_not_applicable_to_mediapipe_with_the_fix_named(trained_lenet, tmp_path):
    export_model(resolve_source(trained_lenet), tmp_path, ExportOptions(tflite=("none",)), **QUIET)
    rows, summary = validate([tmp_path], "fashion_mnist", limit=100, latency_runs=1, **QUIET)
    mp_row = next(r for r in rows if r.format.startswith("mediapipe"))
    assert summary["passed"] and mp_row.status == "n/a"
    assert "Only RGB color space" in mp_row.error and "--rgb-input" in mp_row.error


def test_without_mediapipe_validate_says_how_to_get_the_row(rgb_export, monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_mediapipe(name, *args, **kwargs):
        if name.startswith("mediapipe"):
            raise ImportError(f"No module named '{name}'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_mediapipe)
    rows, summary = validate(
        [rgb_export / "rgb" / "lenet5_float32.tflite"], "fashion_mnist", limit=50, latency_runs=1, **QUIET
    )
    # no MediaPipe row (the float16 simulation's row is n/a without the Keras model beside the file)
    assert [r.format for r in rows] == ["tflite float32", "gpu float16 (float32 file)"]
    assert "pip install --no-deps mediapipe" in summary["mediapipe"]


def test_rgb_input_is_the_luma_of_pillow_in_front_of_the_same_layers(trained_lenet):
    from kerascnn.export.pipeline import ExportError, rgb_input_model

    gray = keras.saving.load_model(trained_lenet / "model_best.keras")
    rgb = rgb_input_model(gray)
    assert rgb.input_shape == (None, 28, 28, 3) and len(rgb.layers) == len(gray.layers) + 1
    assert not any(isinstance(layer, keras.Model) for layer in rgb.layers)  # flat: QAT can rebuild it
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, (4, 28, 28, 1)).astype(np.float32)
    np.testing.assert_allclose(rgb(np.repeat(x, 3, -1)), gray(x), atol=1e-5)
    with pytest.raises(ExportError, match="1-channel"):
        rgb_input_model(rgb)


def _run_cli(*args, env=None):
    return subprocess.run(
        [sys.executable, "-m", "kerascnn.cli", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=600,
    )


def test_commands_print_no_library_chatter(rgb_export):
    """No absl/TensorFlow start-up lines, converter or runtime notices, or warnings: only the answer."""
    chatter = ("I0000", "W0000", "E0000", "WARNING: All log messages", "INFO: Created TensorFlow Lite",
               "oneDNN", "To enable the following", "Warning", "deprecated")  # fmt: skip
    for args in (
        ["inspect", str(rgb_export / "rgb" / "lenet5_int8.tflite")],
        ["benchmark", str(rgb_export / "rgb" / "lenet5_int8.tflite"), "--runs", "2", "--batch", "2"],
    ):
        done = _run_cli(*args)
        assert done.returncode == 0, done.stderr
        for text in (done.stdout, done.stderr):
            assert not [c for c in chatter if c in text], (args, text)
            assert "\x1b[" not in text
    json.loads(_run_cli("inspect", "--json", str(rgb_export / "rgb" / "lenet5_int8.tflite")).stdout)


def test_training_piped_prints_one_line_per_epoch_without_control_characters(tmp_path):
    done = _run_cli(
        "train", "--model", "lenet5", "--input-shape", "28,28,1", "--epochs", "1", "--train-fraction", "0.02",
        "--augment", "none", "--batch-size", "128", "--output", str(tmp_path / "run"),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    for text in (done.stdout, done.stderr):
        assert "\x1b[" not in text and "\r" not in text and "\x08" not in text, text
    assert "I0000" not in done.stderr and "E0000" not in done.stderr
