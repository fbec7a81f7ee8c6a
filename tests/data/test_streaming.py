"""The streaming pipeline and --cache: the same pixels by every cache mode, a disk cache written once
and reused (and not after a file changed), unreadable files dropped, multi-worker shards."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
from PIL import Image

from kerascnn import data as kdata
from kerascnn.data import decode


@pytest.fixture(autouse=True)
def _cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("KERASCNN_CACHE", str(tmp_path / "cache"))


def make_photos(root, classes=("a", "b", "c"), per_class=8):
    rng = np.random.default_rng(0)
    for ci, cls in enumerate(classes):
        (root / cls).mkdir(parents=True)
        for i in range(per_class):
            pixels = rng.integers(0, 256, (14 + i, 18, 3), np.uint8)
            pixels[..., ci] = 255  # the class shows in one channel
            ext = ".jpg" if i % 2 else ".png"
            Image.fromarray(pixels).save(root / cls / f"{i}{ext}")
    return root


def load(root, cache, **kw):
    return kdata.load_dataset(str(root), (12, 12), 3, val_split=0.25, seed=1, cache=cache, **kw)


def _record_decoding(monkeypatch, decoded: list):
    """Every file any kerascnn.data module decodes is appended to ``decoded``."""
    real = decode.decode_many
    for name, module in list(sys.modules.items()):
        if name.startswith("kerascnn.data.") and getattr(module, "decode_many", None) is real:
            monkeypatch.setattr(
                module, "decode_many", lambda files, *a, **k: decoded.extend(files) or real(files, *a, **k)
            )


def test_every_cache_mode_gives_the_same_pixels_and_split(tmp_path):
    root = make_photos(tmp_path / "photos")
    ram = load(root, "ram")
    assert ram.train.in_memory
    for mode in ("none", "disk", "disk", "auto"):  # disk twice: written, then read back
        ds = load(root, mode)
        assert ds.class_names == ram.class_names
        for a, b in ((ram.train, ds.train), (ram.val, ds.val)):
            assert a.paths == b.paths
            np.testing.assert_array_equal(a.labels, b.labels)
            np.testing.assert_array_equal(np.asarray(b.images), a.images)
            np.testing.assert_array_equal(b.images[[3, 1]], a.images[[3, 1]])
            np.testing.assert_array_equal(b.images[2], a.images[2])
    assert not load(root, "none").train.in_memory


def test_disk_cache_is_reused_and_keyed_by_the_files(tmp_path, monkeypatch):
    root = make_photos(tmp_path / "photos")
    said = []
    load(root, "disk", say=said.append)
    assert any("decoding 24 images once" in s for s in said)
    cached = sorted((tmp_path / "cache" / "images").glob("*.u8"))
    assert len(cached) == 1 and cached[0].stat().st_size == 24 * 12 * 12 * 3

    decoded = []
    _record_decoding(monkeypatch, decoded)
    again = load(root, "disk")
    again.train.images[:]
    assert decoded == []  # read from the cache, nothing decoded
    stream = load(root, "stream")  # what evaluate/validate use: the run's cache when there is one
    assert isinstance(stream.train.images, kdata.DiskImages) and decoded == []
    source = kdata.open_images(str(root), (12, 12), 3)  # what index/search and calibration read
    images, good, skipped = source.read([0, 5, 23])
    assert decoded == [] and good == [0, 5, 23] and not skipped
    np.testing.assert_array_equal(images[1], kdata.decode_image(source.files[5], (12, 12), 3))

    Image.new("RGB", (9, 9), (1, 2, 3)).save(root / "a" / "0.png")  # a changed file: another key
    load(root, "disk")
    assert len(decoded) == 24
    assert len(list((tmp_path / "cache" / "images").glob("*.u8"))) == 2
    assert not list((tmp_path / "cache" / "images").glob(".*.tmp"))


def test_auto_picks_ram_when_it_fits_and_streams_when_not(tmp_path, monkeypatch):
    root = make_photos(tmp_path / "photos")
    said = []
    assert load(root, "auto", say=said.append).train.in_memory
    assert "kept in memory" in said[0]
    monkeypatch.setattr(kdata.cache, "available_memory", lambda: 1000)
    said.clear()
    ds = load(root, "auto", say=said.append)
    assert isinstance(ds.train.images, kdata.FileImages) and "streamed from the files" in said[0]
    with pytest.raises(kdata.DataError, match="--cache"):
        load(root, "sometimes")


def test_unreadable_files_streamed_are_skipped_or_dropped(tmp_path, capsys):
    root = make_photos(tmp_path / "photos")
    (root / "b" / "fake.png").write_bytes(b"not an image")  # found by the header check
    ds = load(root, "none")
    assert [p for p, _ in ds.skipped] == [str(root / "b" / "fake.png")]
    # truncated after listing: the pipeline drops it from its batch and says so once
    bad = ds.train.paths[2]
    with open(bad, "r+b") as f:
        f.truncate(40)
    batches = list(kdata.make_dataset(ds.train, 3, 64, kdata.Normalization()).as_numpy_iterator())
    assert sum(len(x) for x, _ in batches) == len(ds.train) - 1
    assert f"skipped unreadable image {bad}" in capsys.readouterr().err
    with pytest.raises(kdata.DataError, match="cannot be decoded"):
        ds.train.images[2]


@pytest.mark.parametrize("oversample", [False, True])
def test_streamed_batches_equal_the_in_memory_ones(tmp_path, oversample):
    root = make_photos(tmp_path / "photos")
    ram, lazy = load(root, "ram"), load(root, "none")
    norm = kdata.Normalization()
    x_ram, y_ram = next(kdata.make_dataset(ram.val, 3, 64, norm).as_numpy_iterator())
    x_lazy, y_lazy = next(kdata.make_dataset(lazy.val, 3, 64, norm).as_numpy_iterator())
    np.testing.assert_array_equal(x_ram, x_lazy)
    np.testing.assert_array_equal(y_ram, y_lazy)
    train = kdata.make_dataset(lazy.train, 3, 5, norm, training=True, oversample=oversample, seed=2)
    labels = np.concatenate([y.argmax(1) for _, y in train.as_numpy_iterator()])
    assert len(labels) == len(lazy.train)
    if not oversample:
        assert np.bincount(labels).tolist() == np.bincount(lazy.train.labels).tolist()


def test_pipelines_run_without_tf_data_autotuning(tmp_path):
    """With autotuning on, destroying an iterator a tf.function read from (every epoch of fit, every
    evaluate) waits for the autotune thread's next wake-up: up to the iterator's age again (BENCHMARKS.md,
    "Every run fast"). Every kerascnn pipeline turns it off, also with a shard's options."""
    lazy = load(make_photos(tmp_path / "photos"), "none")
    norm = kdata.Normalization()
    for ds in (
        kdata.make_dataset(lazy.train, 3, 4, norm, training=True, oversample=True),
        kdata.make_dataset(lazy.val, 3, 4, norm),
        kdata.make_dataset(lazy.train, 3, 4, norm, shard=(2, 1)),
    ):
        assert ds.options().autotune.enabled is False
    sharded = kdata.make_dataset(lazy.train, 3, 4, norm, shard=(2, 1)).options()
    assert sharded.experimental_distribute.auto_shard_policy.name == "OFF"


def test_each_worker_reads_its_own_equal_share(tmp_path):
    root = make_photos(tmp_path / "photos", per_class=7)  # 21 images: 15 train + 6 val... odd counts
    lazy = load(root, "none")
    norm = kdata.Normalization()
    shares = []
    for index in range(2):
        ds = kdata.make_dataset(lazy.train, 3, 4, norm, shard=(2, index))
        shares.append(np.concatenate([x for x, _ in ds.as_numpy_iterator()]))
    assert len(shares[0]) == len(shares[1]) == len(lazy.train) // 2
    everything = np.asarray(lazy.train.images).astype(np.float32) / 127.5 - 1
    owners = []
    for share in shares:  # every image of a share is one of the split's, and the shares do not overlap
        found = [np.flatnonzero((np.abs(everything - img) < 1e-6).all(axis=(1, 2, 3))) for img in share]
        assert all(len(f) == 1 for f in found)
        owners.append({int(f[0]) for f in found})
    assert not owners[0] & owners[1]


def test_train_with_a_disk_cache_then_evaluate_and_index_read_it(tmp_path, monkeypatch):
    from click.testing import CliRunner

    from kerascnn.cli import main

    root = make_photos(tmp_path / "photos", per_class=12)
    out = tmp_path / "run"
    args = ["train", "--model", "lenet5", "--input-shape", "28,28,1", "--data", str(root), "--epochs", "1",
            "--batch-size", "8", "--quiet", "--output", str(out), "--cache", "disk"]  # fmt: skip
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert "--cache disk: decoding 36 images once" in (out / "run.log").read_text()
    assert "\x1b" not in result.output  # piped: one line per epoch, no progress-bar escapes
    assert json.loads((out / "config.json").read_text())["train"]["cache"] == "disk"

    decoded = []
    _record_decoding(monkeypatch, decoded)
    result = CliRunner().invoke(main, ["evaluate", str(out)])
    assert result.exit_code == 0, result.output
    assert "top-1" in result.output
    result = CliRunner().invoke(
        main, ["index", str(out), "--data", str(root), "--out", str(tmp_path / "idx")]
    )
    assert result.exit_code == 0, result.output
    assert decoded == []  # both read the run's cache
    # resuming with another --cache is allowed: the pixels are the same
    more = [*args[:-1], "none", "--resume", "--epochs", "2"]
    result = CliRunner().invoke(main, more)
    assert result.exit_code == 0, result.output
