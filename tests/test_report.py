"""The run report (kerascnn/report.py): RUN/report.html, one self-contained page, from a tiny real run;
a run without a test split, without its data, without an epoch; the export and validation tables; and
the page in headless Chromium (tests/report_page.mjs), whose screenshot is kept at SCREENSHOT_COPY."""

from __future__ import annotations

import base64
import io
import json
import os
import shutil
import subprocess
import time
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from kerascnn import data as kdata
from kerascnn import report as kreport
from kerascnn.report import ReportError, report_path, run_of_export_folder, validate_json_path, write_report
from kerascnn.train import TrainConfig, train

ROOT = Path(__file__).resolve().parents[1]
PAGE_SCRIPT = ROOT / "tests" / "report_page.mjs"
PLAYWRIGHT = ROOT / "mobile_demo" / "web" / "node_modules" / "playwright-core" / "index.mjs"
CHROMIUM = Path(os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium"))
SCREENSHOT_COPY = Path("/tmp/kerascnn-report.png")  # the last screenshot, kept to look at
TINY = dict(model="lenet5", input_shape=(28, 28, 1), batch_size=64, quiet=True, epochs=1)
FASHION = kdata.FASHION_MNIST_CLASSES


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """LeNet-5, one epoch on 0.5% of Fashion-MNIST (270 images); scored on 1,000 test images."""
    out = tmp_path_factory.mktemp("report") / "lenet"
    train(TrainConfig(**TINY, train_fraction=0.005, eval_fraction=0.1, output=str(out)))
    return out


@pytest.fixture(scope="module")
def folder_run(tmp_path_factory):
    """A run on a folder of class folders (3 classes x 30 PNGs, val split 0.25): no test split."""

    base = tmp_path_factory.mktemp("report_folder")
    images, labels = kdata.builtin_splits("fashion_mnist")["train"]
    for name, label in (("shirt", 0), ("trouser", 1), ("bag", 8)):
        (base / "photos" / name).mkdir(parents=True)
        for n, i in enumerate(np.flatnonzero(labels == label)[:30]):
            Image.fromarray(np.squeeze(images[i])).save(base / "photos" / name / f"{n:02d}.png")
    train(TrainConfig(**TINY, data=str(base / "photos"), val_split=0.25, output=str(base / "run")))
    return base


class _Page(HTMLParser):
    """The parts of the page the tests look at: tags with their attributes, section ids, text."""

    def __init__(self, text: str):
        super().__init__()
        self.tags: list[tuple[str, dict]] = []
        self.text: list[str] = []
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data):
        self.text.append(data)

    def all(self, tag: str, **having) -> list[dict]:
        return [a for t, a in self.tags if t == tag and all(a.get(k) == v for k, v in having.items())]

    @property
    def sections(self) -> list[str]:
        return [a["id"] for a in self.all("section")]

    @property
    def words(self) -> str:
        return " ".join(" ".join(self.text).split())


def _check_self_contained(path: Path) -> _Page:
    """No request off the page: no script, stylesheet link, frame or remote URL; every <img> a PNG
    data URI that decodes."""
    text = path.read_text()
    page = _Page(text)
    for tag, attrs in page.tags:
        assert tag not in ("script", "link", "iframe", "object", "embed"), tag
        for key in ("src", "href"):
            assert not str(attrs.get(key, "")).startswith(("http://", "https://", "//")), (
                tag,
                attrs.get(key),
            )
    assert "http://" not in text and "https://" not in text and "@import" not in text and "url(" not in text
    images = page.all("img")
    for attrs in images:
        prefix = "data:image/png;base64,"
        assert attrs["src"].startswith(prefix), attrs["src"][:40]
        png = base64.b64decode(attrs["src"][len(prefix) :], validate=True)
        assert png[:8] == b"\x89PNG\r\n\x1a\n"
        with Image.open(io.BytesIO(png)) as im:
            im.load()
            assert min(im.size) > 0
        assert attrs.get("alt"), "every image says what it is"
    return page


def test_report_of_a_run_has_every_section_and_needs_nothing_else(run_dir):
    lines = []
    start = time.monotonic()
    path = write_report(run_dir, say=lines.append)
    took = time.monotonic() - start
    assert path == run_dir / "report.html" == report_path(run_dir)
    assert len(lines) == 1 and str(path) in lines[0]
    assert not any(".partial" in p.name for p in run_dir.iterdir())  # written atomically
    page = _check_self_contained(path)
    assert page.sections == ["recipe", "curves", "confusion", "per-class", "mistakes", "model"]
    words = page.words
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert f"{100 * metrics['top1']:.2f}%" in words and "1,000 test images" in words
    assert "lenet5 on fashion_mnist" in words and "input 28x28x1" in words
    # per-class: one row per class, with the counts of metrics.json's confusion matrix
    rows = page.all("tr", **{"class": "class-row"})
    assert [r["data-class"] for r in rows] == FASHION
    cm = np.asarray(metrics["confusion_matrix"])
    assert all(f"{100 * cm[i, i] / cm[i].sum():.1f}%" in words for i in range(10))
    # the confusion matrix: an HTML table of every count
    assert len(page.all("table", **{"class": "cm"})) == 1
    # the mistakes: MAX_MISTAKES of the test split, each with its image, Grad-CAM and 3 neighbours
    wrong = int(metrics["samples"] - round(metrics["top1"] * metrics["samples"]))
    shown = min(wrong, kreport.MAX_MISTAKES)
    assert shown == kreport.MAX_MISTAKES  # a 1-epoch LeNet is wrong on about half the images
    assert len(page.all("figure", **{"class": "mistake"})) == shown
    thumbs = page.all("img", **{"class": "thumb"}) + page.all("img", **{"class": "thumb small"})
    assert len(thumbs) == shown * (2 + kreport.NEIGHBOURS)
    assert sum(a["alt"] == "Grad-CAM" for a in thumbs) == shown
    assert (
        "Most confident mistakes (test split)" in words
        and "among all 1,000 images of the test split" in words
    )
    confidences = [float(c) for c in __import__("re").findall(r"taken for \S+ \((\d+\.\d)%\)", words)]
    assert len(confidences) == shown and confidences == sorted(confidences, reverse=True)
    assert "no test split" not in words
    # the model: parameters and MACs as kerascnn summary counts them (LeNet-5 at 28x28: 61,706 params)
    assert "61,706" in words and "MACs per image" in words
    assert took < 60, took  # seconds on a shared 2-core machine; about 2 s once TensorFlow is imported


def test_report_from_the_training_process_reuses_its_model_and_data(run_dir, monkeypatch):
    """At the end of train: the dataset as loaded (not loaded again), model_best.keras's model given."""

    from kerascnn.runs import load_keras_model

    dataset = kdata.load_dataset("fashion_mnist", (28, 28), 1, train_fraction=0.005, eval_fraction=0.1)
    model = load_keras_model(run_dir / "model_best.keras")

    def no_reload(*args, **kwargs):
        raise AssertionError("the report loaded the data again")

    monkeypatch.setattr(kdata, "load_dataset", no_reload)
    page = _check_self_contained(write_report(run_dir, model=model, dataset=dataset))
    assert "mistakes" in page.sections and "270 train, 600 val, 1,000 test, 10 classes" in page.words


def test_a_run_without_a_test_split_says_so_and_shows_validation_mistakes(folder_run):
    run = folder_run / "run"
    page = _check_self_contained(write_report(run))
    words = page.words
    assert "no test split" in words and "Most confident mistakes (validation split)" in words
    assert len(page.all("tr", **{"class": "class-row"})) == 3
    assert [r["data-class"] for r in page.all("tr", **{"class": "class-row"})] == ["bag", "shirt", "trouser"]
    # the image's file is named (class folder/file)
    if page.all("figure", **{"class": "mistake"}):
        assert any(w in words for w in ("bag/", "shirt/", "trouser/"))


def test_a_run_whose_data_is_gone_still_gets_its_page(folder_run, tmp_path):
    moved = tmp_path / "elsewhere"
    shutil.move(folder_run / "photos", moved)  # the run's data is no longer where it was
    try:
        page = _check_self_contained(write_report(folder_run / "run"))
    finally:
        shutil.move(moved, folder_run / "photos")
    assert "mistakes" not in page.sections
    assert {"recipe", "curves", "confusion", "per-class", "model"} <= set(page.sections)
    assert "cannot be loaded" in page.words and "photos" in page.words


def test_a_run_with_no_finished_epoch_and_a_folder_that_is_no_run(run_dir, tmp_path):
    young = tmp_path / "young"
    young.mkdir()
    shutil.copy(run_dir / "config.json", young / "config.json")  # started, no epoch done
    page = _check_self_contained(write_report(young))
    assert page.sections == ["recipe"] and "no epoch has finished" in page.words
    with pytest.raises(ReportError, match="not a kerascnn run folder"):
        write_report(tmp_path / "nothing")
    assert not (tmp_path / "nothing" / "report.html").exists()


def test_a_failing_part_is_named_and_the_others_are_still_shown(run_dir, tmp_path, monkeypatch):
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)

    def broken(facts):
        raise ValueError("a bug")

    monkeypatch.setattr(kreport, "_curves_section", broken)
    said = []
    write_report(copy, say=said.append)
    assert len(said) == 1 and "the curves part failed (ValueError: a bug)" in said[0]
    page = (copy / "report.html").read_text()
    assert "the curves part failed (ValueError: a bug); the other parts are shown" in page
    assert "Per-class accuracy" in page and "Training curves" not in page


def _export_files(run: Path) -> None:
    """RUN/export as kerascnn export and kerascnn validate --json leave it: the demo's model.json (a real
    export's), and a validation table written by kerascnn.export.validate's own writer."""
    from kerascnn.export import validate as kvalidate

    export = run / "export"
    export.mkdir()
    shutil.copy(ROOT / "mobile_demo" / "models" / "model.json", export / "model.json")
    gpu = "GPU delegate: takes all 67 ops"
    rows = [
        kvalidate.Row("keras", "mobilenet_v2.keras", size_mb=2.267, top1=88.12, ms_per_image=3.1),
        kvalidate.Row("tflite float32", "mobilenet_v2_float32.tflite", size_mb=1.653, top1=88.12, drop_pp=0.0,
                      agreement=100.0, agreement_ci95=[99.96, 100.0], max_abs_diff=1e-6, ms_per_image=0.4,
                      note=gpu, accelerators={"gpu": {"ops": 67}}),
        kvalidate.Row("tflite int8", "mobilenet_v2_int8.tflite", status="FAIL", size_mb=0.548, top1=80.0,
                      drop_pp=8.12, error="loses 8.12 points > --max-drop 1.0",
                      note="fully integer inside (int8), float32 io; NNAPI: 69 of 69 ops"),
    ]  # fmt: skip
    summary = {"data": "fashion_mnist", "images": 10000, "labeled": True, "reference": "keras",
               "max_drop": 1.0, "mediapipe": "on", "passed": False, "stale": []}  # fmt: skip
    kvalidate.write_json(rows, summary, validate_json_path(run))


def test_export_and_validation_tables_from_the_export_folder(run_dir, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(run_dir, run)
    _export_files(run)
    assert validate_json_path(run) == run / "export" / "validate.json"
    assert run_of_export_folder(run / "export") == run.resolve() and run_of_export_folder(run) is None
    page = _check_self_contained(write_report(run))
    assert page.sections[-3:] == ["model", "export", "validate"]
    words = page.words
    sidecar = json.loads((run / "export" / "model.json").read_text())
    for name, entry in sidecar["files"].items():
        assert name in words and f"{entry['bytes'] / 1e6:.3f}" in words
    assert len(page.all("tr", **{"class": "validate-row"})) == 3
    assert "failed on 10,000 images of fashion_mnist" in words
    assert "GPU delegate: takes all 67 ops" in words and "NNAPI: 69 of 69 ops" in words
    assert "loses 8.12 points" in words and "+8.12" in words
    assert "validated before the latest export" not in words
    later = time.time() + 5  # an export after the validation: the table is said to be older
    os.utime(run / "export" / "model.json", (later, later))
    assert "validated before the latest export" in _Page(write_report(run).read_text()).words


def test_the_page_in_headless_chromium(run_dir, tmp_path):
    """Opened from file:// in Chromium: no console or page error, no request, every image decoded and
    shown, no horizontal scrolling at 1280 px; the screenshot is copied to SCREENSHOT_COPY."""
    node = shutil.which("node")
    missing = [
        what
        for what, ok in (
            ("node", node),
            (f"{PLAYWRIGHT} (cd mobile_demo/web && npm ci)", PLAYWRIGHT.exists()),
            (f"Chromium at {CHROMIUM} (apt-get install chromium, or CHROMIUM_PATH)", CHROMIUM.exists()),
        )
        if not ok
    ]
    if missing:
        pytest.skip(f"the browser check needs {', '.join(missing)}; .ci/setup-mobile installs them")
    run = tmp_path / "run"
    shutil.copytree(run_dir, run)
    _export_files(run)
    report = write_report(run)
    shot = tmp_path / "report.png"
    done = subprocess.run([node, str(PAGE_SCRIPT), str(report), str(shot)], capture_output=True, text=True,
                          timeout=180, cwd=ROOT)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    found = json.loads(done.stdout.strip().splitlines()[-1])
    assert found["console_errors"] == [] and found["page_errors"] == [], found
    assert found["requests"] == [] and found["failed_requests"] == [], found
    assert found["sections"] == ["recipe", "curves", "confusion", "per-class", "mistakes", "model", "export",
                                 "validate"]  # fmt: skip
    assert found["images"] and all(i["complete"] and i["width"] > 0 and i["data"] for i in found["images"])
    assert all(i["shown"] > 0 for i in found["images"])
    assert found["class_rows"] == 10 and found["mistakes"] == kreport.MAX_MISTAKES
    assert found["page_width"] <= 1280, "the page scrolls sideways at 1280 px"
    assert found["h1"] == "lenet5 on fashion_mnist"
    with Image.open(shot) as im:
        assert im.size == (1280, 800)
        assert len(set(im.convert("L").getdata())) > 50  # drawn, not a blank page
    shutil.copy(shot, SCREENSHOT_COPY)


def test_a_model_grad_cam_cannot_explain_gets_a_note_not_a_crash():
    import keras

    model = keras.Sequential([keras.Input((4, 4, 1)), keras.layers.Flatten(), keras.layers.Dense(3)])
    found = kreport._Mistakes("test", 1, 1, [], None, None, None)
    assert kreport._cams(model, np.zeros((1, 4, 4, 1), np.float32), found) is None
    assert found.cam_note.startswith("no Grad-CAM:") and "spatial" in found.cam_note
    assert kreport._mistake_card(
        {"image": np.zeros((4, 4, 1), np.uint8), "cam": None, "true": "a", "predicted": "b<c",
         "confidence": 0.9, "where": "x", "neighbours": []}
    ).count("<img") == 1  # fmt: skip
