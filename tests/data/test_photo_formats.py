"""Photo formats (issue 26 part 4): WebP, TIFF, HEIC/HEIF (pillow-heif) and upper-case extensions are
read by every command that reads images, with the pixels Pillow shows; bad files get clear messages."""

from __future__ import annotations

import json
import sys

import numpy as np
import pillow_heif  # noqa: E402 - a dependency (pyproject.toml, constraints.txt)
import pytest
from click.testing import CliRunner
from PIL import Image, ImageOps

from kerascnn import data as kdata
from kerascnn.cli import main
from kerascnn.data import decode

pillow_heif.register_heif_opener()  # for writing the test's HEIC files (kerascnn registers it to read)

CLASSES = {"red": (200, 30, 40), "blue": (20, 60, 210)}  # distinct colours per class
# Lossless encodings (the decoded pixels are the written ones) and a JPEG under an upper-case name.
FORMATS = {
    ".webp": dict(lossless=True),
    ".tiff": {},
    ".heic": dict(quality=-1, chroma=444, matrix_coefficients=0),  # pillow-heif's lossless RGB
    ".JPG": dict(quality=95, subsampling=0),
    ".WEBP": dict(lossless=True),
    ".TIF": {},
    ".HEIC": dict(quality=-1, chroma=444, matrix_coefficients=0),
}
LOSSLESS = {".webp", ".tiff", ".heic", ".tif"}
SIDE = 16
ORIENTATION = 0x0112  # the EXIF tag


def pixels(colour, seed: int, shape=(SIDE, SIDE)) -> np.ndarray:
    """A class colour with a seeded texture, so that a wrong pixel order or rotation shows."""
    rng = np.random.default_rng(seed)
    noise = rng.integers(-25, 26, (*shape, 3))
    return np.clip(np.asarray(colour) + noise, 0, 255).astype(np.uint8)


def save(arr: np.ndarray, path, **options) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fmt = {".tif": "TIFF", ".tiff": "TIFF", ".webp": "WEBP", ".heic": "HEIF", ".jpg": "JPEG"}
    Image.fromarray(arr).save(path, format=fmt[path.suffix.lower()], **options)


def shown(path) -> np.ndarray:
    """What Pillow shows: Image.open (pillow-heif registered) + exif_transpose + convert("RGB")."""
    with Image.open(path) as im:
        return np.asarray(ImageOps.exif_transpose(im).convert("RGB"))


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """DIR/<class>/<i><ext>: 2 classes x 7 images, one of each format; {path: written pixels}."""
    root = tmp_path_factory.mktemp("photos") / "ph"
    written = {}
    for ci, (cls, colour) in enumerate(CLASSES.items()):
        for i, (ext, options) in enumerate(FORMATS.items()):
            path = root / cls / f"p{i}{ext}"
            arr = pixels(colour, 100 * ci + i)
            save(arr, path, **options)
            written[path] = arr
    return root, written


def test_pillow_and_pillow_heif_formats_are_listed_deterministically():
    exts = kdata.image_extensions()
    for ext in (".png", ".jpg", ".jpeg", ".webp", ".tif", ".tiff", ".heic", ".heif", ".bmp", ".gif", ".mpo"):
        assert ext in exts, ext
    assert exts[:10] == (".png", ".jpg", ".jpeg", ".webp", ".tif", ".tiff", ".heic", ".heif", ".bmp", ".gif")
    assert list(exts[10:]) == sorted(exts[10:]) and len(set(exts)) == len(exts)
    for stub in (".h5", ".hdf", ".grib", ".bufr", ".mpg", ".pdf", ".txt", ".csv"):
        assert stub not in exts, stub  # identify-only stubs, video, documents: not images
    described = kdata.describe_extensions()
    assert described.startswith("image files Pillow can open (.png, .jpg, .jpeg, .webp, .tif, .tiff, .heic")
    assert len(described) < 150 and f"{len(exts) - 10} more" in described
    assert kdata.IMAGE_EXTENSIONS == exts  # the old name still answers


def test_upper_case_extensions_are_listed(photos):
    root, written = photos
    listed = kdata.list_unlabeled_images(root)
    assert sorted(listed) == sorted(written) and len(listed) == 14
    assert {p.suffix for p in listed} == set(FORMATS)


def test_each_format_decodes_to_what_pillow_shows(photos):
    _, written = photos
    for path, arr in written.items():
        got = kdata.decode_image(path, (SIDE, SIDE), 3)
        assert np.array_equal(got, shown(path)), path.name
        if path.suffix.lower() in LOSSLESS:
            assert np.array_equal(got, arr), path.name  # lossless: the very pixels written
        else:
            assert np.abs(got.astype(int) - arr).mean() < 6, path.name  # JPEG q95 on a noisy texture
    with Image.open(next(p for p in written if p.suffix == ".heic")) as im:
        assert im.format == "HEIF"


@pytest.mark.parametrize("cache", ["ram", "disk", "none"])
def test_folders_and_caches_give_the_same_pixels(photos, cache, tmp_path, monkeypatch):
    monkeypatch.setenv("KERASCNN_CACHE", str(tmp_path / "cache"))
    root, written = photos
    ds = kdata.load_dataset(str(root), (SIDE, SIDE), 3, val_split=0.25, cache=cache)
    assert ds.skipped == [] and len(ds.train) + len(ds.val) == 14
    for split in (ds.train, ds.val):
        images = np.asarray(split.images)
        for path, image in zip(split.paths, images, strict=True):
            assert np.array_equal(image, shown(path)), path
    if cache == "disk":
        assert any((tmp_path / "cache" / "images").glob("*.u8"))
        again = kdata.open_images(str(root), (SIDE, SIDE), 3)  # evaluate/validate/index: the disk copy
        images, good, bad = again.read(list(range(len(again.ids))))
        assert len(good) == 14 and not bad


def test_file_list_with_every_format(photos, tmp_path):
    root, written = photos
    rows = ["path,label"] + [f"{p},{p.parent.name}" for p in sorted(written)]
    (tmp_path / "list.csv").write_text("\n".join(rows) + "\n")
    ds = kdata.load_dataset(str(tmp_path / "list.csv"), (SIDE, SIDE), 3, val_split=0.25)
    assert ds.skipped == [] and len(ds.train) + len(ds.val) == 14
    source = kdata.open_images(str(tmp_path / "list.csv"), (8, 8), 1)
    _, good, bad = source.read(list(range(14)))
    assert len(good) == 14 and not bad


def test_train_evaluate_validate_index_search_explain_on_photos(photos, tmp_path):
    """One tiny run over the folder of WebP/TIFF/HEIC/JPG photos, then every command that reads images."""
    root, written = photos
    run = tmp_path / "run"
    runner = CliRunner()
    result = runner.invoke(main, ["train", "--model", "lenet5", "--data", str(root), "--input-shape",
                                  "32,32,3", "--epochs", "1", "--batch-size", "4", "--augment", "none",
                                  "--val-split", "0.3", "--quiet", "--output", str(run)])  # fmt: skip
    assert result.exit_code == 0, result.output
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["skipped_images"] == [] and len(metrics["per_class_accuracy"]) == 2
    assert "unreadable" not in (run / "run.log").read_text()

    evaluated = tmp_path / "e.json"
    result = runner.invoke(main, ["evaluate", str(run), "--data", str(root), "--json", str(evaluated)])
    assert result.exit_code == 0, result.output
    assert json.loads(evaluated.read_text())["samples"] >= 2

    exported = tmp_path / "exported"  # int8 calibration on the photos, then validate on them
    export = ["export", str(run), "--out", str(exported), "--tflite", "--quantize", "int8",
              "--calibration-data", str(root), "--calibration-steps", "8"]  # fmt: skip
    result = runner.invoke(main, export)
    assert result.exit_code == 0, result.output
    report = tmp_path / "v.json"
    result = runner.invoke(main, ["validate", str(exported), "--data", str(root), "--json", str(report)])
    assert result.exit_code == 0 and "unreadable" not in result.output, result.output
    table = json.loads(report.read_text())
    assert {r["format"].split()[0] for r in table["rows"]} >= {"keras", "tflite"}, table["rows"]
    # unlabeled photos, one of each format: every runtime (MediaPipe on its own frames too) reads all 7
    red = root / "red"
    result = runner.invoke(main, ["validate", str(exported), "--data", str(red), "--json", str(report)])
    assert result.exit_code == 0, result.output
    table = json.loads(report.read_text())
    assert table["images"] == len(FORMATS) and any(r["format"].startswith("mediapipe") for r in table["rows"])

    index = tmp_path / "photos.npz"
    result = runner.invoke(main, ["index", str(run), "--data", str(root), "--out", str(index)])
    assert result.exit_code == 0, result.output
    assert "14 images (14 added, 0 changed, 0 removed, 0 unchanged)" in result.output
    heic = next(p for p in written if p.suffix == ".HEIC")
    webp = next(p for p in written if p.suffix == ".webp")
    result = runner.invoke(main, ["search", str(index), str(heic), str(webp), "-k", "1", "--no-grid",
                                  "--json", str(tmp_path / "s.json")])  # fmt: skip
    assert result.exit_code == 0, result.output
    found = json.loads((tmp_path / "s.json").read_text())
    assert [q["error"] for q in found] == [None, None]
    for query, path in zip(found, (heic, webp), strict=True):  # each photo's own indexed copy is nearest
        assert query["hits"][0]["item"] == str(path.resolve()) and query["hits"][0]["similarity"] > 0.999

    result = runner.invoke(main, ["explain", str(run), str(heic), str(webp), "--out", str(tmp_path / "x")])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "x" / f"{heic.stem}_gradcam.png").exists()
    cut = tmp_path / "cut.webp"  # a truncated WebP: a clear error that names it, no traceback
    cut.write_bytes(webp.read_bytes()[:40])
    result = runner.invoke(main, ["explain", str(run), str(cut), "--out", str(tmp_path / "x")])
    assert result.exit_code != 0 and isinstance(result.exception, SystemExit), result.output
    assert str(cut) in result.output and "damaged or truncated WEBP" in result.output


def test_exif_orientation_is_applied_once_for_jpeg_and_heic(tmp_path):
    """Orientation 6 (the camera held upright): shown rotated 90 degrees clockwise. An iPhone-style HEIC
    carries both the HEIF rotation (irot) and EXIF orientation 6: libheif applies the first, pillow-heif
    resets the second to 1, so it is not applied twice."""
    arr = pixels((120, 120, 120), 7, shape=(16, 24))  # 24 wide, 16 high
    arr[:4, :6] = (255, 0, 0)  # a marker in the top-left corner
    upright = np.rot90(arr, k=-1)  # 16 wide, 24 high
    exif = Image.Exif()
    exif[ORIENTATION] = 6
    save(arr, tmp_path / "o6.jpg", quality=100, subsampling=0, exif=exif.tobytes())
    save(arr, tmp_path / "o6.heic", quality=-1, chroma=444, matrix_coefficients=0, exif=exif.tobytes())
    raw = (tmp_path / "o6.heic").read_bytes()
    assert b"irot" in raw  # the rotation is in the HEIF boxes ...
    tiff = raw[raw.find(b"MM\x00*") :]
    stored = Image.Exif()
    stored.load(tiff)
    assert stored[ORIENTATION] == 6  # ... and in the stored EXIF, as an iPhone writes it
    with Image.open(tmp_path / "o6.heic") as im:
        assert im.getexif().get(ORIENTATION) == 1 and im.info["original_orientation"] == 6
    heic = kdata.decode_image(tmp_path / "o6.heic", (24, 16), 3)
    jpeg = kdata.decode_image(tmp_path / "o6.jpg", (24, 16), 3)
    assert np.array_equal(heic, upright)
    assert np.abs(jpeg.astype(int) - upright).max() <= 8  # JPEG rounding only
    assert heic[0, -1].tolist() == [255, 0, 0]  # the marker is now top-right
    for name in ("o6.heic", "o6.jpg"):
        assert np.array_equal(kdata.decode_image(tmp_path / name, (24, 16), 3), shown(tmp_path / name))


def test_multi_image_heic_gives_its_primary_image(tmp_path):
    colours = [(250, 0, 0), (0, 250, 0), (0, 0, 250)]
    frames = [Image.new("RGB", (SIDE, SIDE), c) for c in colours]
    for primary in (0, 1, 2):
        path = tmp_path / f"burst{primary}.heic"
        frames[0].save(path, save_all=True, append_images=frames[1:], quality=-1, chroma=444,
                       matrix_coefficients=0, primary_index=primary)  # fmt: skip
        assert pillow_heif.open_heif(path).primary_index == primary and len(pillow_heif.open_heif(path)) == 3
        got = kdata.decode_image(path, (SIDE, SIDE), 3)
        assert (got == colours[primary]).all(), (primary, got[0, 0])


# ------------------------------------------------------------------------------------------------
# Bad input
# ------------------------------------------------------------------------------------------------


@pytest.fixture
def no_pillow_heif(monkeypatch):
    """As if pillow-heif were not installed: its import fails (Pillow's registry is left as it is)."""
    monkeypatch.setitem(sys.modules, "pillow_heif", None)
    decode._heif_support.cache_clear()
    yield
    decode._heif_support.cache_clear()


def test_heic_without_pillow_heif_says_how_to_install_it(photos, tmp_path, no_pillow_heif):
    _, written = photos
    heic = next(p for p in written if p.suffix == ".heic")
    with pytest.raises(kdata.ImageReadError) as info:
        kdata.decode_image(heic, (SIDE, SIDE), 3)
    assert str(info.value).startswith(f"{heic}: ") and "pip install pillow-heif" in str(info.value)
    renamed = tmp_path / "really_heic.jpg"  # HEIF content under another name: recognised by its header
    renamed.write_bytes(heic.read_bytes())
    with pytest.raises(kdata.ImageReadError, match="pip install pillow-heif"):
        kdata.decode_image(renamed, (SIDE, SIDE), 3)
    # A class of iPhone photos only: train stops, naming a file and the fix, and writes nothing.
    for cls in CLASSES:
        for i in range(2):
            (tmp_path / "iphone" / cls).mkdir(parents=True, exist_ok=True)
            (tmp_path / "iphone" / cls / f"IMG_{i}.HEIC").write_bytes(heic.read_bytes())
    result = CliRunner().invoke(main, ["train", "--model", "lenet5", "--data", str(tmp_path / "iphone"),
                                       "--input-shape", "32,32,3", "--epochs", "1", "--quiet",
                                       "--output", str(tmp_path / "run")])  # fmt: skip
    assert result.exit_code != 0 and isinstance(result.exception, SystemExit), result.output
    assert "IMG_0.HEIC" in result.output and "pip install pillow-heif" in result.output
    assert not (tmp_path / "run").exists()


def test_truncated_webp_is_named_not_a_traceback(photos, tmp_path):
    _, written = photos
    webp = next(p for p in written if p.suffix == ".webp")
    cut = tmp_path / "cut.webp"
    cut.write_bytes(webp.read_bytes()[: len(webp.read_bytes()) // 2])
    with pytest.raises(kdata.ImageReadError) as info:
        kdata.decode_image(cut, (SIDE, SIDE), 3)
    assert str(info.value).startswith(f"{cut}: ") and "damaged or truncated WEBP file" in str(info.value)
    # a folder: the file is skipped and reported with why; the others still load
    root = tmp_path / "d"
    for cls, colour in CLASSES.items():
        for i in range(3):
            save(pixels(colour, i), root / cls / f"{i}.webp", lossless=True)
    (root / "red" / "cut.webp").write_bytes(cut.read_bytes())
    ds = kdata.load_dataset(str(root), (SIDE, SIDE), 3, val_split=0.3)
    assert [p for p, _ in ds.skipped] == [str(root / "red" / "cut.webp")]
    assert "damaged or truncated WEBP" in ds.skipped[0][1] and len(ds.train) + len(ds.val) == 6
    source = kdata.open_images(str(root), (SIDE, SIDE), 3)
    _, good, bad = source.read(list(range(len(source.ids))))
    assert len(good) == 6 and len(bad) == 1 and "damaged or truncated WEBP" in bad[0][1]


def test_unsupported_files_get_a_message_that_names_them(tmp_path):
    text_png = tmp_path / "notes.png"
    text_png.write_text("these are notes, not pixels")
    with pytest.raises(kdata.ImageReadError) as info:
        kdata.decode_image(text_png, (SIDE, SIDE), 3)
    assert str(info.value).startswith(f"{text_png}: not an image Pillow can open")
    assert "not the .png format its name says" in str(info.value)
    xyz = tmp_path / "scan.xyz"
    xyz.write_bytes(b"\x00\x01 some format nobody reads")
    with pytest.raises(kdata.ImageReadError) as info:
        kdata.decode_image(xyz, (SIDE, SIDE), 3)
    assert "the extension '.xyz' is none of the image files Pillow can open (.png, .jpg" in str(info.value)
    # A class folder of .xyz files: nothing is listed, and the message names one of them.
    root = tmp_path / "d"
    for i in range(3):
        save(pixels((10, 200, 10), i), root / "green" / f"{i}.webp", lossless=True)
        (root / "odd").mkdir(parents=True, exist_ok=True)
        (root / "odd" / f"{i}.xyz").write_bytes(b"xyz")
    with pytest.raises(kdata.DataError) as info:
        kdata.load_dataset(str(root), (SIDE, SIDE), 3)
    message = str(info.value)
    assert f"class folder '{root / 'odd'}' has no readable image" in message
    assert "no image files Pillow can open (.png" in message and str(root / "odd" / "0.xyz") in message
    # A file list names files explicitly: one that is not an image is skipped with why.
    (tmp_path / "l.csv").write_text(f"{xyz},odd\n{text_png},odd\n" + "".join(
        f"{root / 'green' / f'{i}.webp'},green\n" for i in range(3)))  # fmt: skip
    with pytest.raises(kdata.DataError) as info:
        kdata.load_dataset(str(tmp_path / "l.csv"), (SIDE, SIDE), 3)
    assert "no readable training image of class(es) odd" in str(info.value)
    only_bad = tmp_path / "bad.csv"
    only_bad.write_text(f"{xyz},a\n{text_png},b\n")
    with pytest.raises(kdata.DataError) as info:
        kdata.load_dataset(str(only_bad), (SIDE, SIDE), 3)
    assert f"the first, '{xyz}': not an image Pillow can open" in str(info.value)
