"""``kerascnn check``: duplicates (exact, mirrored, re-encoded), label conflicts and leaks across splits,
bad files, class counts, label issues by confident learning, check.json and check.png, and the cheap
check ``train`` runs, on small synthetic images (64x64 smooth colour patterns, distinct per image), with
an empty Keras cache and no downloads (the pixel embedding), plus one run with a cached backbone."""

from __future__ import annotations

import hashlib
import io
import json
import re
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from kerascnn import check, check_images
from kerascnn import data as kdata
from kerascnn.check_config import CheckConfig
from kerascnn.cli import main

COLOURS = {"red": (200, 40, 40), "green": (40, 170, 60), "blue": (40, 60, 200), "yellow": (220, 200, 40)}


def pattern(rng, colour, side: int = 64) -> Image.Image:
    """A smooth random pattern (a 4x4 grid of random levels, upscaled) in shades of ``colour``: images of
    one colour share their hue, and no two are alike."""
    grid = Image.fromarray((rng.random((4, 4)) * 255).astype(np.uint8)).resize((side, side), Image.BICUBIC)
    shade = 0.5 + 0.5 * np.asarray(grid, np.float32)[..., None] / 255
    return Image.fromarray(np.clip(np.asarray(colour, np.float32) * shade, 0, 255).astype(np.uint8))


def tree_digest(root: Path) -> str:
    """sha256 over every path and file content below ``root``."""
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        h.update(str(p.relative_to(root)).encode())
        if p.is_file():
            h.update(p.read_bytes())
    return h.hexdigest()


def make_dirty(root: Path) -> Path:
    """train/ and test/ of red (12+3), green (6+3), blue (3+3) patterns, and: an exact copy in red, one
    image in green and blue (a conflict), blue0's mirror image in test/ (a leak), green0 resized to 48 px
    as JPEG quality 70 in test/ (a leak), a truncated JPEG, a text file named .png, a 4x4 and a 200x10
    image."""
    rng = np.random.default_rng(0)
    for split, counts in (
        ("train", {"red": 12, "green": 6, "blue": 3}),
        ("test", {"red": 3, "green": 3, "blue": 3}),
    ):
        for cls, n in counts.items():
            (root / split / cls).mkdir(parents=True, exist_ok=True)
            for i in range(n):
                pattern(rng, COLOURS[cls]).save(root / split / cls / f"{cls}{i}.png")
    train, test = root / "train", root / "test"
    (train / "red/red0_copy.png").write_bytes((train / "red/red0.png").read_bytes())
    pattern(rng, COLOURS["green"]).save(train / "green/both.png")
    (train / "blue/both.png").write_bytes((train / "green/both.png").read_bytes())
    Image.open(train / "blue/blue0.png").transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(
        test / "blue/mirror.png"
    )
    small = Image.open(train / "green/green0.png").resize((48, 48), Image.Resampling.LANCZOS)
    small.save(test / "green/green0.jpg", quality=70)
    buf = io.BytesIO()
    pattern(rng, COLOURS["red"]).save(buf, "JPEG", quality=90)
    (train / "red/truncated.jpg").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    (train / "red/notes.png").write_bytes(b"not an image")
    pattern(rng, COLOURS["green"], 4).save(train / "green/tiny.png")
    Image.fromarray(np.full((10, 200, 3), 128, np.uint8)).save(train / "blue/wide.png")
    return root


@pytest.fixture(scope="module")
def offline(tmp_path_factory):
    """An empty Keras cache and no downloads, for the module's fixtures (the pixel embedding)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("KERAS_HOME", str(tmp_path_factory.mktemp("keras_home")))
        mp.setenv("KERASCNN_OFFLINE", "1")
        yield


@pytest.fixture(scope="module")
def dirty(tmp_path_factory, offline):
    root = make_dirty(tmp_path_factory.mktemp("dirty") / "data")
    before = tree_digest(root)
    out = tmp_path_factory.mktemp("dirty_out") / "check"
    report = check.run_check(str(root), out)
    assert tree_digest(root) == before  # nothing written into the data
    return root, out, report


def _group(report, *names):
    """The duplicate group whose members are exactly the files ``names`` (relative to the data)."""
    for g in report.duplicates:
        if sorted(Path(m["id"]).as_posix().split("/data/")[-1] for m in g["members"]) == sorted(names):
            return g
    raise AssertionError(
        f"no group of {names}: {[[m['id'] for m in g['members']] for g in report.duplicates]}"
    )


def test_duplicates_conflicts_and_leaks_are_found_and_nothing_else(dirty):
    _, _, report = dirty
    copy = _group(report, "train/red/red0.png", "train/red/red0_copy.png")
    assert (copy["kind"], copy["conflict"], copy["leak"], copy["exact_copies"]) == ("exact", False, False, 1)
    both = _group(report, "train/green/both.png", "train/blue/both.png")
    assert (both["kind"], both["conflict"], both["leak"]) == ("exact", True, False)
    assert {m["label"] for m in both["members"]} == {"green", "blue"}
    mirror = _group(report, "train/blue/blue0.png", "test/blue/mirror.png")
    assert (mirror["kind"], mirror["mirrored"], mirror["leak"], mirror["conflict"]) == (
        "near",
        True,
        True,
        False,
    )
    assert mirror["similarity"] > 0.999  # a pixel mirror: the same thumbnail, mirrored
    jpeg = _group(report, "train/green/green0.png", "test/green/green0.jpg")
    assert (jpeg["kind"], jpeg["mirrored"], jpeg["leak"]) == ("near", False, True)
    assert 0.99 <= jpeg["similarity"] < 1
    assert len(report.duplicates) == 4  # the 40 other patterns are told apart
    assert [g["leak"] or g["conflict"] for g in report.duplicates] == [True, True, True, False]  # worst first
    s = report.summary()
    assert (s["exact_duplicate_groups"], s["near_duplicate_groups"], s["label_conflicts"], s["leaks"]) == (
        2,
        2,
        1,
        2,
    )


def test_bad_files_are_listed_not_fatal(dirty):
    _, _, report = dirty
    bad = {Path(b["id"]).name: b for b in report.bad_files}
    assert set(bad) == {"truncated.jpg", "notes.png", "tiny.png", "wide.png"}
    assert bad["truncated.jpg"]["kinds"] == ["truncated"]
    assert bad["notes.png"]["kinds"] == ["unreadable"] and "not an image" in bad["notes.png"]["reasons"][0]
    assert bad["tiny.png"]["kinds"] == ["tiny"] and (bad["tiny.png"]["width"], bad["tiny.png"]["height"]) == (
        4,
        4,
    )
    assert bad["wide.png"]["kinds"] == ["tiny", "extreme_aspect"]  # 10 px high, 20:1
    assert "20.0:1" in bad["wide.png"]["reasons"][1]
    assert report.images == 39  # every listed file, the unreadable ones too


def test_class_counts_and_imbalance(dirty):
    _, _, report = dirty
    classes = report.classes
    per = {row["name"]: row for row in classes["per_class"]}
    # readable images per split: red 12 + copy (the text file and the truncated JPEG are not), green 6 + both
    # + tiny, blue 3 + both + wide; test: 3 each + mirror (blue) + jpeg (green)
    assert {n: row["splits"] for n, row in per.items()} == {
        "blue": {"train": 5, "test": 4}, "green": {"train": 8, "test": 4}, "red": {"train": 13, "test": 3},
    }  # fmt: skip
    assert classes["split"] == "train" and classes["imbalance"] == round(13 / 5, 2)
    assert (classes["largest"]["name"], classes["smallest"]["name"]) == ("red", "blue")
    assert classes["few"] == ["blue", "green"]  # under 10 training images
    assert report.splits == {"train": 28, "test": 11}


def test_check_json_and_contact_sheet(dirty):
    _, out, report = dirty
    saved = json.loads((out / "check.json").read_text())
    assert saved["summary"] == json.loads(json.dumps(report.summary()))
    assert saved["summary"]["bad_files"] == 4 and saved["summary"]["leaks"] == 2
    assert len(saved["duplicates"]) == 4 and saved["duplicates"][0]["members"][0]["split"] in (
        "train",
        "test",
    )
    assert saved["embedding"].startswith("pixels") and "no MobileNet" in saved["embedding"]
    assert saved["label_issues"]["skipped"] is None and saved["label_issues"]["folds"] == 5
    assert saved["settings"]["min_side"] == 16 and saved["settings"]["max_aspect"] == 5.0
    from kerascnn.check_sheet import sheet_size

    with Image.open(out / "check.png") as im:
        assert im.format == "PNG" and im.size == sheet_size(report)
        assert im.height > 4 * 96  # a row per duplicate group, then label issues and bad files
    assert not [
        p.name for p in out.iterdir() if p.name not in ("check.json", "check.png")
    ]  # no temporary left


def test_flipped_labels_rank_first(tmp_path, offline):
    """4 colours x 30 patterns, 6 (5%) filed under another colour: confident learning on the pixel
    embedding's out-of-fold probabilities puts them at the top."""
    rng = np.random.default_rng(1)
    names = list(COLOURS)
    flipped = set()
    for c, name in enumerate(names):
        for i in range(30):
            folder = name
            if i < 2 and c < 3:  # 6 images, 5%: into the next colour's folder
                folder = names[c + 1]
                flipped.add(f"{name}{i}.png")
            (tmp_path / "data" / folder).mkdir(parents=True, exist_ok=True)
            pattern(rng, COLOURS[name], 32).save(tmp_path / "data" / folder / f"{name}{i}.png")
    report = check.check_data(str(tmp_path / "data"))
    labels = report.labels
    assert labels["probe_accuracy"] >= 0.93  # 114 of 120 labels are right, and the colours tell them apart
    issues = [Path(x["id"]).name for x in labels["issues"]]
    assert set(issues[:6]) == flipped  # all six first
    assert len(issues) <= 9  # few others flagged
    top = np.argsort(report.quality)[:6]
    assert {Path(report.items.ids[i]).name for i in top} == flipped
    first = labels["issues"][0]
    assert first["suggested"] == re.match(r"[a-z]+", Path(first["id"]).name).group()  # its true colour
    assert first["p_suggested"] > 0.5 > first["p_given"]


def test_one_class_folder_still_checks_files(tmp_path, offline):
    rng = np.random.default_rng(2)
    (tmp_path / "cats").mkdir()
    for i in range(5):
        pattern(rng, COLOURS["red"]).save(tmp_path / "cats" / f"{i}.png")
    (tmp_path / "cats" / "copy.png").write_bytes((tmp_path / "cats" / "0.png").read_bytes())
    report = check.check_data(str(tmp_path))
    assert report.labels["count"] is None
    assert report.labels["skipped"] == f"label issues need at least 2 classes; {tmp_path.name} has 1 (cats)"
    assert len(report.duplicates) == 1 and report.duplicates[0]["kind"] == "exact"
    assert report.classes["imbalance"] == 1.0
    assert "label issues need at least 2 classes" in report.table()


def test_empty_folder_is_a_clear_error(tmp_path, offline):
    (tmp_path / "empty").mkdir()
    with pytest.raises(kdata.DataError, match="no image files"):
        check.check_data(str(tmp_path / "empty"))
    result = CliRunner().invoke(main, ["check", str(tmp_path / "empty"), "--out", str(tmp_path / "out")])
    assert result.exit_code == 1 and "Error:" in result.output and "empty" in result.output
    assert not (tmp_path / "out").exists()


def test_cli_end_to_end_leaves_the_data_alone(tmp_path, offline):
    root = make_dirty(tmp_path / "data")
    before = tree_digest(root)
    out = tmp_path / "report"
    result = CliRunner().invoke(main, ["check", str(root), "--out", str(out), "--show", "2", "--folds", "3"])
    assert result.exit_code == 0, result.output
    for section in (
        "summary",
        "duplicates: 4 (first 2)",
        "bad files: 4 (first 2)",
        "classes: 3",
        "label issues",
    ):
        assert section in result.output, section
    assert "leaks across splits   2 groups" in result.output
    assert json.loads((out / "check.json").read_text())["label_issues"]["folds"] == 3
    assert (out / "check.png").is_file()
    assert tree_digest(root) == before
    inside = CliRunner().invoke(main, ["check", str(root), "--out", str(root / "check")])
    assert inside.exit_code == 1 and "inside the data folder" in inside.output
    assert tree_digest(root) == before


def test_file_list_splits_and_leak(tmp_path, offline):
    rng = np.random.default_rng(3)
    rows = ["path,label,split"]
    for c in ("red", "blue"):
        for i in range(4):
            pattern(rng, COLOURS[c]).save(tmp_path / f"{c}{i}.png")
            rows.append(f"{c}{i}.png,{c},{'test' if i == 3 else 'train'}")
    (tmp_path / "red9.png").write_bytes((tmp_path / "red0.png").read_bytes())
    rows.append("red9.png,red,test")
    (tmp_path / "list.csv").write_text("\n".join(rows) + "\n")
    report = check.check_data(str(tmp_path / "list.csv"), CheckConfig(label_issues=False))
    assert report.splits == {"train": 6, "test": 3}
    (group,) = report.duplicates
    assert group["kind"] == "exact" and group["leak"] and not group["conflict"]
    assert report.labels["skipped"] == "skipped (--no-label-issues)"


def test_builtin_pixels_hash_and_leak(monkeypatch, offline):
    """A built-in's images have no files: their decoded pixels are hashed (here a fake 2-split set)."""
    rng = np.random.default_rng(4)
    train = rng.integers(0, 255, (30, 28, 28, 1), dtype=np.uint8)
    test = rng.integers(0, 255, (10, 28, 28, 1), dtype=np.uint8)
    test[4] = train[7]
    labels = np.arange(40) % 10
    fake = {"train": (train, labels[:30]), "test": (test, labels[30:])}
    monkeypatch.setattr(kdata, "builtin_splits", lambda name: fake)
    report = check.check_data("mnist", CheckConfig(label_issues=False))
    (group,) = report.duplicates
    assert [m["id"] for m in group["members"]] == ["mnist:train:7", "mnist:test:4"]
    assert group["kind"] == "exact" and group["leak"] and group["conflict"]  # labels 7 and 4
    warning = check.quick_check("mnist")
    assert (
        "1 exact duplicate image(s)" in warning
        and "1 across splits" in warning
        and "1 under different" in warning
    )


def test_quick_check(dirty, tmp_path, offline):
    root, _, _ = dirty
    warning = check.quick_check(str(root))
    assert warning.startswith("warning: 2 exact duplicate image(s) in data (2 group(s) of identical files)")
    assert "1 under different labels" in warning and "across splits" not in warning
    assert f"kerascnn check {root}" in warning
    rng = np.random.default_rng(5)
    for c in ("a", "b"):
        for split in ("train", "test"):
            (tmp_path / split / c).mkdir(parents=True)
        pattern(rng, COLOURS["red"]).save(tmp_path / "train" / c / "x.png")
        pattern(rng, COLOURS["blue"]).save(tmp_path / "test" / c / "y.png")
    assert check.quick_check(str(tmp_path)) is None  # four distinct images
    (tmp_path / "test" / "a" / "x.png").write_bytes((tmp_path / "train" / "a" / "x.png").read_bytes())
    warning = check.quick_check(str(tmp_path))
    assert warning.startswith(f"warning: 1 exact duplicate image(s) in {tmp_path.name} (1 group(s)")
    assert "1 across splits (a leak" in warning and "different labels" not in warning
    assert f"e.g. {tmp_path / 'train' / 'a' / 'x.png'} = {tmp_path / 'test' / 'a' / 'x.png'}" in warning


def test_quick_check_on_fashion_mnist_is_fast(offline):
    start = time.perf_counter()
    assert check.quick_check("fashion_mnist") is None  # no two of its 70,000 images are byte-identical
    assert time.perf_counter() - start < 20


def test_signature_of_the_mirror_image():
    """The mirror signature is the signature of the flipped thumbnail (a flip negates the odd
    horizontal DCT frequencies), and signatures are close when thumbnails correlate."""
    rng = np.random.default_rng(6)
    thumbs = np.asarray([np.asarray(pattern(rng, COLOURS["red"], 32).convert("L")) for _ in range(3)])
    sig, mirror, flat, _ = check_images.signatures(thumbs)
    sig_flipped, _, _, _ = check_images.signatures(thumbs[:, :, ::-1])
    np.testing.assert_allclose(mirror, sig_flipped, atol=1e-5)
    assert not flat.any()
    corr = check_images.similarity(thumbs, np.array([0, 0]), np.array([1, 2]), np.array([False, False]))
    dist2 = ((sig[0] - sig[1:]) ** 2).sum(1)
    assert (dist2 <= 2 * (1 - corr) + 1e-5).all()  # the filter never loses a pair the thumbnails would keep


def test_cached_backbone_is_used_for_colour_photos(tmp_path, monkeypatch):
    """With MobileNet v2's file in the Keras cache (random weights here), colour images over 32 px are
    embedded by it (and the report says so); nothing is downloaded."""
    from tests.models.test_pretrained import publish, twin

    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras_home"))
    monkeypatch.setenv("KERASCNN_OFFLINE", "1")
    publish(
        twin("mobilenet_v2", (96, 96, 3), alpha=0.35),
        "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0.35_96_no_top.h5",
    )
    rng = np.random.default_rng(7)
    for c in ("red", "blue"):
        (tmp_path / "data" / c).mkdir(parents=True)
        for i in range(6):
            pattern(rng, COLOURS[c]).save(tmp_path / "data" / c / f"{i}.png")
    report = check.check_data(str(tmp_path / "data"), CheckConfig(folds=3))
    assert report.embedding.startswith("mobilenet_v2 alpha 0.35 at 96x96")
    assert report.labels["embedding"] == report.embedding
    pixels = check.check_data(str(tmp_path / "data"), CheckConfig(embedding="pixels", label_issues=False))
    assert pixels.embedding.startswith("pixels") and "--embedding pixels" in pixels.embedding


def test_near_duplicates_are_not_chained():
    """A like B and B like C, but A not like C: one group of the closest two, not a chain of three;
    exact copies are one unit (their copies join a group together)."""
    thumbs = np.zeros((5, 32, 32), np.uint8)
    thumbs[:] = np.arange(32, dtype=np.uint8)[None, None, :] * 4  # not flat
    facts = check_images.Facts(
        ["a", "b", "c", "d", "d"], np.full(5, 32), np.full(5, 32), [None] * 5, thumbs,
        np.zeros((5, 8, 8, 3), np.uint8), np.ones(5, bool),
    )  # fmt: skip
    pairs = [
        (0, 1, "thumbnails", False, 0.996),
        (1, 2, "thumbnails", False, 0.999),
        (2, 3, "thumbnails", True, 0.997),
    ]
    groups = check_images.duplicate_groups(facts, pairs)
    assert [g for g, _ in groups] == [[1, 2], [3, 4]]  # 0 is left out: it is not like 2
    assert groups[1][1] == [("content hash", False, 1.0)]
    pairs.append((1, 3, "thumbnails", False, 0.998))  # now 1, 2 and the copies 3, 4 are alike two by two
    (first, how), *_ = check_images.duplicate_groups(facts, pairs)
    assert first == [1, 2, 3, 4] and {h[0] for h in how} == {"thumbnails", "content hash"}


def test_train_warns_of_duplicates_in_one_line_and_check_runs_the_full_check_first(tmp_path, offline):
    """`kerascnn train` says in one line when its data holds exact duplicates (the cheap check), and
    `--check` prints the full table before training."""
    rng = np.random.default_rng(1)
    root = tmp_path / "data"
    for cls in ("red", "blue"):
        (root / cls).mkdir(parents=True)
        for i in range(4):
            pattern(rng, COLOURS[cls], 32).save(root / cls / f"{i}.png")
    (root / "blue" / "copy.png").write_bytes((root / "red" / "0.png").read_bytes())
    args = ["train", "--model", "lenet5", "--data", str(root), "--input-shape", "32,32,1", "--epochs", "1",
            "--quiet"]  # fmt: skip
    result = CliRunner().invoke(main, [*args, "--output", str(tmp_path / "run")])
    assert result.exit_code == 0, result.output
    warnings = [line for line in result.output.splitlines() if line.startswith("warning: ")]
    assert len(warnings) == 1 and "1 exact duplicate image(s)" in warnings[0], result.output
    assert "under different labels" in warnings[0] and f"kerascnn check {root}" in warnings[0]
    result = CliRunner().invoke(main, [*args, "--output", str(tmp_path / "run2"), "--check"])
    assert result.exit_code == 0, result.output
    assert "label conflicts" in result.output and "leaks across splits" in result.output
