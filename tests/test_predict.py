"""Issue 44, item 1: ``kerascnn predict MODEL INPUTS...``, the top-k labels of images by a run folder or a
.keras/.tflite/.onnx file. The tests run tiny models made here (16x16, 3 classes), their exports, and a
run folder trained for a few seconds; every score is checked against the model run directly on the
pixels kerascnn decodes, and every runtime against the others."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import keras
import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from kerascnn.cli import main
from kerascnn.data import decode_image

LABELS = ["cat", "dog", "owl"]


def tiny_model(channels: int, name: str, softmax: bool = True):
    """conv -> global average pool -> dense on 16x16xC, its last weights scaled up so that the top
    class differs from image to image and wins clearly."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input((16, 16, channels))
    x = keras.layers.Conv2D(8, 3, activation="relu")(inputs)
    x = keras.layers.GlobalAveragePooling2D()(x)
    dense = keras.layers.Dense(3, activation="softmax" if softmax else None)
    model = keras.Model(inputs, dense(x), name=name)
    kernel, bias = dense.get_weights()
    dense.set_weights([kernel * 8, bias])
    return model


def write_photos(folder: Path, size=None) -> list[Path]:
    """Eight colour photos (a random colour plus noise; of sizes around 16x16, or ``size``), two of
    them in a sub-folder."""
    rng = np.random.default_rng(0)
    paths = []
    for i in range(8):
        h, w = size or (14 + 3 * i, 30 - 2 * i)
        pixels = np.clip(rng.integers(0, 256, 3) + rng.normal(0, 30, (h, w, 3)), 0, 255).astype(np.uint8)
        path = folder / ("sub" if i >= 6 else "") / f"photo{i}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels).save(path)
        paths.append(path)
    return paths


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """rgb.keras and gray.keras (a user's files, no metadata), the RGB one exported with its labels to
    float32 .tflite and .onnx (plus the export's .keras with model.json), and photos."""
    from kerascnn.export.pipeline import ExportOptions, export_model, resolve_source

    root = tmp_path_factory.mktemp("predict")
    rgb, gray = root / "rgb.keras", root / "gray.keras"
    tiny_model(3, "tiny_rgb").save(rgb)
    tiny_model(1, "tiny_gray").save(gray)
    (root / "labels.txt").write_text("".join(f"{label}\n" for label in LABELS))
    source = resolve_source(rgb, [127.5], [127.5], LABELS)
    out = root / "export"
    results = export_model(source, out, ExportOptions(tflite=("none",), onnx=True), log=lambda *_: None)
    assert [r.status for r in results] == ["ok"] * 3
    photos = root / "photos"
    return SimpleNamespace(
        root=root,
        rgb=rgb,
        gray=gray,
        labels_txt=root / "labels.txt",
        exported_keras=out / "tiny_rgb.keras",
        tflite=out / "tiny_rgb_float32.tflite",
        onnx=out / "tiny_rgb.onnx",
        photos=photos,
        photo_files=write_photos(photos),
    )


def predict(*args):
    return CliRunner().invoke(main, ["predict", *map(str, args)])


def parse(stdout: str) -> dict[str, list[tuple[str, float]]]:
    """``path  label score  label score`` lines -> {path: [(label, score), ...]}."""
    found = {}
    for line in stdout.splitlines():
        if line.startswith("top-1 "):
            continue
        path, *pairs = line.split("  ")
        found[path] = [(label, float(score)) for label, score in (p.rsplit(" ", 1) for p in pairs)]
    return found


def direct_probs(model_file, paths, channels=3, mean=127.5, std=127.5) -> np.ndarray:
    """The model run directly on the pixels kerascnn decodes (kerascnn.data.decode_image)."""
    model = keras.saving.load_model(model_file, compile=False)
    pixels = np.stack([decode_image(p, (16, 16), channels) for p in paths]).astype(np.float32)
    return np.asarray(model((pixels - mean) / std, training=False))


def test_keras_tflite_and_onnx_give_the_same_top_k_as_the_model_itself(models):
    expected = direct_probs(models.rgb, models.photo_files)
    assert len(set(expected.argmax(1).tolist())) >= 2  # the photos are not all one class
    runs = {
        "user keras": predict(models.rgb, models.photos, "--labels", models.labels_txt),
        "export keras": predict(models.exported_keras, models.photos),
        "tflite": predict(models.tflite, models.photos),
        "onnx": predict(models.onnx, models.photos),
    }
    for name, result in runs.items():
        assert result.exit_code == 0, (name, result.output)
        found = parse(result.stdout)
        assert list(found) == [str(p) for p in models.photo_files], name  # folder recursed, sorted
        for row, probs in zip(found.values(), expected, strict=True):
            order = np.argsort(-probs)
            assert [label for label, _ in row] == [LABELS[i] for i in order], name  # top 3 of 3, best first
            assert [score for _, score in row] == pytest.approx(probs[order], abs=1e-3), name
    # a user's .keras without run folder or metadata: the defaults it was given are said once
    assert "(pixel - 127.5) / 127.5" in runs["user keras"].stderr
    assert "normalized" not in runs["tflite"].stderr  # an export's own metadata: nothing assumed


def test_top_k_is_at_most_the_classes_and_logits_become_probabilities(models, tmp_path):
    one = predict(models.tflite, models.photo_files[0], "--top-k", "1")
    assert one.exit_code == 0, one.output
    [(label, score)] = parse(one.stdout)[str(models.photo_files[0])]
    probs = direct_probs(models.rgb, models.photo_files[:1])[0]
    assert (label, score) == (LABELS[probs.argmax()], pytest.approx(probs.max(), abs=1e-3))
    many = predict(models.tflite, models.photo_files[0], "--top-k", "10")
    assert len(parse(many.stdout)[str(models.photo_files[0])]) == 3

    logits = tmp_path / "logits.keras"
    tiny_model(3, "tiny_logits", softmax=False).save(logits)
    result = predict(logits, *models.photo_files[:3])
    assert result.exit_code == 0, result.output
    assert "labels are class indices" in result.stderr  # no names known: said once
    raw = direct_probs(logits, models.photo_files[:3])
    expected = np.exp(raw) / np.exp(raw).sum(1, keepdims=True)
    for row, probs in zip(parse(result.stdout).values(), expected, strict=True):
        assert sum(score for _, score in row) == pytest.approx(1.0, abs=2e-3)
        assert row[0] == (str(probs.argmax()), pytest.approx(probs.max(), abs=1e-3))


def test_labels_rename_a_keras_models_classes_keeping_its_exports_normalization(models, tmp_path):
    renamed = tmp_path / "labels.txt"
    renamed.write_text("a\nb\nc\n")
    result = predict(models.exported_keras, *models.photo_files[:3], "--labels", renamed)
    assert result.exit_code == 0, result.output
    expected = direct_probs(models.rgb, models.photo_files[:3])  # model.json's (pixel - 127.5) / 127.5
    for row, probs in zip(parse(result.stdout).values(), expected, strict=True):
        assert row[0] == ("abc"[probs.argmax()], pytest.approx(probs.max(), abs=1e-3))
    renamed.write_text("a\nb\n")
    for model in (models.exported_keras, models.rgb):
        result = predict(model, models.photo_files[0], "--labels", renamed)
        assert result.exit_code == 1 and "predicts 3 classes but 2 labels were given" in result.output


def test_csv_and_json_outputs(models, tmp_path):
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not a picture")
    inputs = [*models.photo_files[:3], broken]
    expected = direct_probs(models.rgb, models.photo_files[:3])

    result = predict(models.tflite, *inputs, "--top-k", "2", "--out", tmp_path / "r.csv")
    assert result.exit_code == 1, result.output  # the broken file was skipped
    with open(tmp_path / "r.csv", newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["path", "label_1", "score_1", "label_2", "score_2"]
    assert [r[0] for r in rows[1:]] == [str(p) for p in models.photo_files[:3]]
    for row, probs in zip(rows[1:], expected, strict=True):
        order = np.argsort(-probs)[:2]
        assert row[1::2] == [LABELS[i] for i in order]
        assert [float(v) for v in row[2::2]] == pytest.approx(probs[order], abs=1e-3)

    result = predict(models.tflite, *inputs, "--out", tmp_path / "r.json", "--quiet")
    assert result.exit_code == 1 and result.stdout == "", result.output  # --quiet: no line per image
    written = json.loads((tmp_path / "r.json").read_text())
    assert written["model"] == str(models.tflite) and written["runtime"] == "tflite float32"
    assert written["top_k"] == 3 and written["images"] == 3 and written["labels"] == LABELS
    assert [p["path"] for p in written["predictions"]] == [str(p) for p in models.photo_files[:3]]
    for entry, probs in zip(written["predictions"], expected, strict=True):
        assert [t["label"] for t in entry["top"]] == [LABELS[i] for i in np.argsort(-probs)]
        assert [t["score"] for t in entry["top"]] == pytest.approx(np.sort(probs)[::-1], abs=1e-3)
    [skipped] = written["skipped"]
    assert skipped["path"] == str(broken) and "not an image" in skipped["reason"]


def test_folders_globs_and_file_lists_with_an_accuracy_line(models, tmp_path, monkeypatch):
    monkeypatch.chdir(models.root)
    expected = direct_probs(models.rgb, models.photo_files).argmax(1)
    top = dict(zip((str(p.relative_to(models.root)) for p in models.photo_files), expected, strict=True))

    result = predict(models.onnx, "photos/*.png")  # quoted: no shell expanded it
    assert result.exit_code == 0, result.output
    assert list(parse(result.stdout)) == [f"photos/photo{i}.png" for i in range(6)]
    result = predict(models.onnx, "photos/**/photo[67].png", "photos/sub", "photos/sub/photo6.png")
    shown = [line.split("  ")[0] for line in result.stdout.splitlines()]
    assert shown == ["photos/sub/photo6.png", "photos/sub/photo7.png"]  # each once

    # a file list: its labels (right for two images, wrong for the third) give the top-1 line
    lines = ["path,label"]
    for i, (path, index) in enumerate(list(top.items())[:3]):
        label = LABELS[index] if i < 2 else LABELS[(index + 1) % 3]
        lines.append(f"{Path(path).relative_to('photos')},{label}")
    (models.photos / "list.csv").write_text("\n".join(lines) + "\n")
    try:
        result = predict(models.onnx, "photos/list.csv", "--out", tmp_path / "r.csv")
    finally:
        (models.photos / "list.csv").unlink()
    assert result.exit_code == 0, result.output
    assert list(parse(result.stdout)) == [f"photos/photo{i}.png" for i in range(3)]  # beside the list
    assert result.stdout.splitlines()[-1].startswith("top-1 66.67% (2/3 labeled images, 95% CI [")
    with open(tmp_path / "r.csv", newline="") as f:
        assert [r["truth"] for r in csv.DictReader(f)] == [line.split(",")[1] for line in lines[1:]]


def test_unreadable_inputs_are_named_and_skipped_with_exit_1(models, tmp_path):
    broken, text, empty = tmp_path / "broken.jpg", tmp_path / "notes.txt", tmp_path / "empty"
    broken.write_bytes(b"\xff\xd8\xff\xe0 truncated jpeg")
    text.write_text("hello")
    empty.mkdir()
    missing, nomatch = tmp_path / "missing.png", str(tmp_path / "*.webp")
    result = predict(models.tflite, broken, models.photo_files[0], text, missing, empty, nomatch)
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output and isinstance(result.exception, SystemExit)
    assert "\r" not in result.output  # no progress bar outside a terminal
    assert list(parse(result.stdout)) == [str(models.photo_files[0])]  # the readable one is predicted
    skipped = [line for line in result.stderr.splitlines() if line.startswith("skipped ")]
    assert len(skipped) == 5, result.stderr
    for path in (broken, text, missing, empty, nomatch):
        assert sum(line.startswith(f"skipped {path}: ") for line in skipped) == 1, (path, skipped)
    assert f"skipped {missing}: does not exist" in skipped
    assert "1 image(s) predicted, 5 input(s) skipped" in result.stderr

    nothing = predict(models.tflite, broken, missing)
    assert nothing.exit_code == 1 and "none of the 2 input(s) could be read" in nothing.output
    assert "Traceback" not in nothing.output


def test_what_pillow_decodes_is_predicted_16_bit_cmyk_tiff_alpha(models, tmp_path):
    rng = np.random.default_rng(1)
    colour = rng.integers(0, 256, (20, 18, 3), dtype=np.uint8)
    files = [tmp_path / n for n in ("deep.png", "cmyk.jpg", "photo.tiff", "alpha.png", "pal.gif")]
    Image.fromarray((rng.integers(0, 65536, (20, 18))).astype(np.uint16)).save(files[0])  # 16-bit gray
    Image.fromarray(colour).convert("CMYK").save(files[1])
    Image.fromarray(colour).save(files[2])
    Image.fromarray(np.dstack([colour, np.full((20, 18), 128, np.uint8)])).save(files[3])
    Image.fromarray(colour).convert("P").save(files[4])
    result = predict(models.onnx, *files)
    assert result.exit_code == 0, result.output
    found = parse(result.stdout)
    expected = direct_probs(models.rgb, files)  # decode_image: what training and validate read
    assert list(found) == [str(f) for f in files]
    for row, probs in zip(found.values(), expected, strict=True):
        assert row[0] == (LABELS[probs.argmax()], pytest.approx(probs.max(), abs=1e-3))


def test_a_model_with_two_inputs_is_refused_naming_it(tmp_path, models):
    a, b = keras.Input((16, 16, 3)), keras.Input((16, 16, 3))
    x = keras.layers.GlobalAveragePooling2D()(keras.layers.Add()([a, b]))
    path = tmp_path / "two_inputs.keras"
    keras.Model([a, b], keras.layers.Dense(3, activation="softmax")(x)).save(path)
    result = predict(path, models.photo_files[0])
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    assert f"Error: {path}: the model has 2 input(s) and 1 output(s)" in result.output


def test_a_grayscale_model_takes_colour_photos_converted_and_says_it_once(models, tmp_path):
    result = predict(models.gray, models.photos, "--labels", models.labels_txt)
    assert result.exit_code == 0, result.output
    assert result.stderr.count("takes grayscale images") == 1, result.stderr
    expected = direct_probs(models.gray, models.photo_files, channels=1)  # Pillow's luma, as in training
    for row, probs in zip(parse(result.stdout).values(), expected, strict=True):
        assert row[0] == (LABELS[probs.argmax()], pytest.approx(probs.max(), abs=1e-3))
    gray_photo = tmp_path / "gray.png"
    Image.fromarray(np.full((16, 16), 90, np.uint8)).save(gray_photo)
    result = predict(models.gray, gray_photo, "--labels", models.labels_txt)
    assert result.exit_code == 0 and "grayscale" not in result.stderr  # nothing converted, nothing said


def test_mediapipe_runs_the_tflite_as_a_phone_does_and_agrees(models, tmp_path):
    pytest.importorskip("mediapipe")
    photos = write_photos(tmp_path / "sized", size=(16, 16))  # the model's size: MediaPipe resizes nothing
    litert = predict(models.tflite, *photos)
    mediapipe = predict(models.tflite, *photos, "--runtime", "mediapipe", "--out", tmp_path / "mp.json")
    assert litert.exit_code == 0 and mediapipe.exit_code == 0, mediapipe.output
    assert json.loads((tmp_path / "mp.json").read_text())["runtime"] == "mediapipe float32"
    ours, theirs = parse(litert.stdout), parse(mediapipe.stdout)
    assert list(ours) == list(theirs) == [str(p) for p in photos]
    for a, b in zip(ours.values(), theirs.values(), strict=True):
        assert [label for label, _ in a] == [label for label, _ in b]  # MediaPipe's names: the file's labels
        assert [s for _, s in a] == pytest.approx([s for _, s in b], abs=2e-3)


def test_mediapipe_is_refused_for_other_formats_naming_the_option(models):
    for model in (models.onnx, models.exported_keras):
        result = predict(model, models.photo_files[0], "--runtime", "mediapipe")
        assert result.exit_code == 1, result.output
        assert "--runtime mediapipe runs a .tflite file" in result.output and str(model) in result.output
        assert "Traceback" not in result.output


def test_bad_options_are_refused_before_any_work(models, tmp_path):
    folder = predict(models.tflite, models.photo_files[0], "--out", tmp_path)
    assert folder.exit_code == 2 and "is a folder; a file name is wanted here" in folder.output
    suffix = predict(models.tflite, models.photo_files[0], "--out", tmp_path / "r.txt")
    assert suffix.exit_code == 1 and "--out" in suffix.output and ".csv or .json" in suffix.output
    mean = predict(models.tflite, models.photo_files[0], "--mean", "0")
    assert mean.exit_code == 1 and "--mean" in mean.output and "its own normalization" in mean.output
    assert not (tmp_path / "r.txt").exists()


def test_a_run_folder_gives_its_class_names_and_normalization(tmp_path):
    from kerascnn.data import FASHION_MNIST_CLASSES
    from kerascnn.runs import Run
    from kerascnn.train import TrainConfig, train

    run = tmp_path / "lenet"
    train(
        TrainConfig(
            model="lenet5", input_shape=(28, 28, 1), batch_size=64, train_fraction=0.005, eval_fraction=0.05,
            epochs=1, quiet=True, output=str(run), augment="none",
        )
    )  # fmt: skip
    photos = tmp_path / "photos"
    files = write_photos(photos, size=(28, 28))
    result = predict(run, photos)
    assert result.exit_code == 0, result.output
    # the run's normalization and names: nothing assumed; the RGB photos made gray for LeNet: said once
    assert result.stderr.splitlines() == [f"{run} takes grayscale images: RGB images are converted to gray "
                                          "(Pillow's luma, as in training)"]  # fmt: skip
    opened = Run.open(run)
    mean, std = opened.normalization()
    model = opened.load_model()
    pixels = np.stack([decode_image(p, (28, 28), 1) for p in files]).astype(np.float32)
    expected = np.asarray(model((pixels - np.float32(mean)) / np.float32(std), training=False))
    for row, probs in zip(parse(result.stdout).values(), expected, strict=True):
        assert row[0] == (FASHION_MNIST_CLASSES[probs.argmax()], pytest.approx(probs.max(), abs=1e-3))


def test_help_does_not_import_tensorflow():
    code = (
        "import sys\n"
        "sys.argv = ['kerascnn', 'predict', '--help']\n"
        "from kerascnn.cli import main\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
        "print('TENSORFLOW' if 'tensorflow' in sys.modules else 'LIGHT')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120).stdout
    assert "--runtime [auto|mediapipe]" in out and out.strip().endswith("LIGHT")
