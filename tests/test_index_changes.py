"""An index notices change (issue 43, item 4): appending re-embeds changed files, drops deleted ones and
adds new ones; ``search`` marks hits whose file was deleted or changed since indexing; an index made
before kerascnn recorded files still loads and is re-checked. On a tiny linear model (random weights:
a random projection keeps different pictures apart) and a gallery of 32x32 PNGs of random pixels."""

from __future__ import annotations

import hashlib
import json
import os
import time

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from kerascnn import retrieval, runs
from kerascnn.cli import main

HOUR_NS = 3600 * 10**9


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    """conv -> flatten -> Dense(16) -> Dense(3): the embedding is the Dense(16) output (the last Dense's
    input, as for any model without global pooling)."""
    import keras

    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((32, 32, 3)),
            keras.layers.Conv2D(4, 3, strides=2, name="conv"),
            keras.layers.Flatten(name="flatten"),
            keras.layers.Dense(16, name="embed"),
            keras.layers.Dense(3, activation="softmax", name="scores"),
        ],
        name="tiny",
    )
    path = tmp_path_factory.mktemp("model") / "tiny.keras"
    model.save(path)
    return path


def picture(seed: int) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (32, 32, 3), dtype=np.uint8))


def make_gallery(root, age_ns: int = HOUR_NS):
    """Classes a, b, c with img0..img3.png each (12 pictures), their mtimes ``age_ns`` in the past (a
    gallery that was not written just now)."""
    then = time.time_ns() - age_ns
    for c, name in enumerate("abc"):
        (root / name).mkdir(parents=True)
        for i in range(4):
            path = root / name / f"img{i}.png"
            picture(10 * c + i).save(path)
            os.utime(path, ns=(then, then))
    return root


def real(path) -> str:
    return os.path.realpath(path)


@pytest.fixture
def counting(monkeypatch):
    """How many images were embedded (all calls)."""
    embedded = []
    original = retrieval.Extractor.embed

    def embed(self, images, batch_size=256):
        embedded.append(len(images))
        return original(self, images, batch_size)

    monkeypatch.setattr(retrieval.Extractor, "embed", embed)
    return embedded


def test_the_index_records_each_files_size_mtime_and_hash(model_file, tmp_path):
    gallery = make_gallery(tmp_path / "gallery")
    fresh = gallery / "c" / "new.png"
    picture(99).save(fresh)  # written just now: its mtime is not trusted, its hash decides
    index, report = retrieval.build_index(
        retrieval.load_extractor(model_file), str(gallery), tmp_path / "i.npz"
    )
    assert (report["added"], report["changed"], report["removed"], report["unchanged"]) == (13, 0, 0, 0)
    loaded = retrieval.Index.load(tmp_path / "i.npz")
    for p, item in enumerate(loaded.ids):
        st = os.stat(item)
        assert loaded.sizes[p] == st.st_size
        assert loaded.hashes[p] == hashlib.blake2b(open(item, "rb").read(), digest_size=16).hexdigest()
        assert loaded.mtimes[p] == (st.st_mtime_ns if item != real(fresh) else -2)
    assert loaded.origins.tolist() == [0] * 13 and loaded.meta["sources"][0]["key"].endswith("|")
    assert loaded.unknown == 0


def test_append_re_embeds_changed_drops_deleted_and_adds_new(model_file, tmp_path, counting):
    gallery = make_gallery(tmp_path / "gallery")
    out = tmp_path / "idx.npz"
    runner = CliRunner()
    result = runner.invoke(main, ["index", str(model_file), "--data", str(gallery), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "12 images (12 added, 0 changed, 0 removed, 0 unchanged), 16-d" in result.output
    before = retrieval.Index.load(out)
    # the user's story: two files deleted, b/img0.png replaced by another picture; and one file new, one
    # touched (a new mtime, the same bytes)
    (gallery / "a" / "img1.png").unlink()
    (gallery / "c" / "img2.png").unlink()
    picture(1234).save(gallery / "b" / "img0.png")
    picture(77).save(gallery / "c" / "img9.png")
    later = time.time_ns() - HOUR_NS // 2
    os.utime(gallery / "a" / "img0.png", ns=(later, later))
    counting.clear()
    result = runner.invoke(main, ["index", str(model_file), "--data", str(gallery), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "11 images (1 added, 1 changed, 2 removed, 9 unchanged), 16-d" in result.output
    assert f"removed {real(gallery / 'a' / 'img1.png')}: deleted" in result.output
    assert sum(counting) == 2  # the new file and the changed one: nothing else embedded again
    index = retrieval.Index.load(out)
    assert len(index) == 11 and index.vectors.shape == (11, 16)
    assert (
        real(gallery / "a" / "img1.png") not in index.ids
        and real(gallery / "c" / "img2.png") not in index.ids
    )
    assert index.ids[-1] == real(gallery / "c" / "img9.png")  # new ones at the end
    assert index.label_name(int(index.labels[-1])) == "c"
    # unchanged files keep their very vectors; the changed one has a new one
    old_rows = {item: before.vectors[p] for p, item in enumerate(before.ids)}
    for p, item in enumerate(index.ids[:-1]):
        same = np.array_equal(index.vectors[p], old_rows[item])
        assert same == (item != real(gallery / "b" / "img0.png")), item
    assert index.mtimes[index.ids.index(real(gallery / "a" / "img0.png"))] == later  # recorded anew
    # a query identical to the new b/img0.png finds it first, at distance ~0; deleted files are no hits
    query = tmp_path / "query.png"
    query.write_bytes((gallery / "b" / "img0.png").read_bytes())
    result = runner.invoke(
        main, ["search", str(out), str(query), "-k", "11", "--no-grid", "--json", str(tmp_path / "h.json")]
    )
    assert result.exit_code == 0, result.output
    hits = json.loads((tmp_path / "h.json").read_text())[0]["hits"]
    assert hits[0]["item"] == real(gallery / "b" / "img0.png") and hits[0]["distance"] < 1e-3
    assert hits[1]["distance"] > 0.3  # the other pictures are far
    assert not any(h["missing"] or h["stale"] for h in hits) and "warning" not in result.output
    # the same again: nothing to do
    counting.clear()
    _, report = retrieval.build_index(retrieval.load_extractor(model_file), str(gallery), out)
    assert (report["added"], report["changed"], report["removed"], report["unchanged"]) == (0, 0, 0, 11)
    assert sum(counting) == 0


def test_another_folder_appended_keeps_the_first_ones_files(model_file, tmp_path):
    """Files no longer listed are dropped only from the DATA that listed them: appending another folder
    keeps the first folder's files (unless deleted)."""
    first, second = make_gallery(tmp_path / "first"), make_gallery(tmp_path / "second")
    outside = tmp_path / "outside.png"
    picture(500).save(outside)
    (first / "b" / "link.png").symlink_to(outside)  # listed by the first folder, its file elsewhere
    out = tmp_path / "idx.npz"
    extractor = retrieval.load_extractor(model_file)
    _, report = retrieval.build_index(extractor, str(first), out)
    assert report["added"] == 13
    (first / "a" / "img0.png").unlink()
    index, report = retrieval.build_index(extractor, str(second), out)
    assert (report["added"], report["removed"], report["unchanged"], report["total"]) == (12, 1, 12, 24)
    # the first folder no longer lists the linked file, which is still on disk: dropped on its next append
    (first / "b" / "link.png").unlink()
    index, report = retrieval.build_index(extractor, str(first), out)
    assert report["removed_items"] == [(real(outside), f"no longer in {first}")]
    assert (report["removed"], report["unchanged"], len(index)) == (1, 23, 23)
    assert outside.exists() and real(outside) not in index.ids


def test_a_same_size_rewrite_within_the_mtime_tick_is_found_by_its_hash(model_file, tmp_path, counting):
    """A file indexed right after it was written may be rewritten within the same mtime tick (coarse
    file system clocks): its mtime is recorded as unsure, and the content hash decides on append."""
    folder = tmp_path / "flat"
    folder.mkdir()
    path = folder / "x.bmp"  # BMP: the same size for any 32x32 picture
    picture(1).save(path)
    picture(2).save(folder / "y.bmp")
    out = tmp_path / "idx.npz"
    extractor = retrieval.load_extractor(model_file)
    retrieval.build_index(extractor, str(folder), out)
    st = os.stat(path)
    picture(3).save(path)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))  # the same size and mtime as when indexed
    assert os.stat(path).st_size == st.st_size
    counting.clear()
    _, report = retrieval.build_index(extractor, str(folder), out)
    assert (report["changed"], report["unchanged"], sum(counting)) == (1, 1, 1)


def test_search_marks_hits_deleted_or_changed_since_indexing(model_file, tmp_path):
    gallery = make_gallery(tmp_path / "gallery")
    out = tmp_path / "idx.npz"
    retrieval.build_index(retrieval.load_extractor(model_file), str(gallery), out)
    gone, changed = gallery / "a" / "img2.png", gallery / "c" / "img1.png"
    q_gone, q_changed = tmp_path / "q_gone.png", tmp_path / "q_changed.png"
    q_gone.write_bytes(gone.read_bytes())
    q_changed.write_bytes(changed.read_bytes())
    gone.unlink()
    picture(555).save(changed)  # no re-index: the index still holds the old picture's vector
    grids, report = tmp_path / "grids", tmp_path / "hits.json"
    result = CliRunner().invoke(
        main, ["search", str(out), str(q_gone), str(q_changed), "-k", "3", "--out", str(grids),
               "--json", str(report)],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    hits = json.loads(report.read_text())
    first = hits[0]["hits"][0]
    assert first["item"] == real(gone) and first["distance"] < 1e-3
    assert first["missing"] is True and first["stale"] is False
    second = hits[1]["hits"][0]
    assert second["item"] == real(changed) and second["stale"] is True and second["missing"] is False
    for h in [h for r in hits for h in r["hits"]]:  # only those two are flagged, wherever they rank
        assert (h["missing"], h["stale"]) == (h["item"] == real(gone), h["item"] == real(changed))
    assert f"{real(gone)}  [missing]" in result.output
    assert f"{real(changed)}  [stale: changed since indexed]" in result.output
    assert (
        "warning: 1 hit file(s) were deleted since indexing (marked missing) and 1 changed since indexing"
        in result.output
    )
    assert f"re-run `kerascnn index MODEL --data GALLERY --out {out}` to refresh it" in result.output
    # the grid labels the missing hit's tile (a red band with text) rather than showing a bare grey tile
    tile = 112
    with Image.open(sorted(grids.glob("*.png"))[0]) as im:
        arr = np.asarray(im.convert("RGB")).astype(int)
    hit_tile = arr[4 : 4 + tile, 4 + (tile + 4) : 4 + (tile + 4) + tile]
    band = hit_tile[:14]
    red = (band[..., 0] > 200) & (band[..., 1] < 80)
    white = (band > 240).all(axis=-1)
    assert red.mean() > 0.5 and white.sum() > 20  # a red band, with white letters on it
    next_tile = arr[4 : 4 + tile, 4 + 2 * (tile + 4) : 4 + 2 * (tile + 4) + tile]
    assert ((next_tile[:14, :, 0] > 200) & (next_tile[:14, :, 1] < 80)).mean() < 0.5  # a plain hit: no band
    # the Python API says the same
    results = retrieval.search(out, [str(q_gone)], k=1)
    assert results[0].hits[0].missing
    assert retrieval.hits_warning(results).startswith("warning: 1 hit file(s) were deleted")


def test_an_index_without_file_records_still_loads_and_is_rechecked(model_file, tmp_path, counting):
    """An index written before kerascnn recorded files (no sizes, mtimes, hashes, origins arrays; no
    "key" in its sources) loads, searches, and on append has its files embedded again to compare."""
    gallery = make_gallery(tmp_path / "gallery")
    out = tmp_path / "old.npz"
    extractor = retrieval.load_extractor(model_file)
    retrieval.build_index(extractor, str(gallery), out)
    with np.load(out) as z:
        meta = json.loads(str(z["meta"]))
        arrays = {k: z[k] for k in ("vectors", "ids", "labels", "class_names")}
    meta["sources"] = [{"data": str(gallery), "split": None, "added": 12}]
    np.savez(out, **arrays, meta=np.asarray(json.dumps(meta)))
    old = retrieval.Index.load(out)
    assert len(old) == 12 and old.unknown == 12 and old.sizes.tolist() == [-1] * 12
    (gallery / "b" / "img3.png").unlink()
    query = tmp_path / "q.png"
    query.write_bytes((gallery / "a" / "img0.png").read_bytes())
    results = retrieval.search(out, [str(query)], k=2)
    assert results[0].hits[0].item == real(gallery / "a" / "img0.png") and not results[0].hits[0].missing
    # deletion is still noticed on an old index; a change cannot be (no record), so nothing is stale
    assert [h.missing for h in retrieval.search(out, [str(gallery / "a" / "img0.png")], k=12)[0].hits].count(
        True
    ) == 1
    picture(4321).save(gallery / "a" / "img0.png")
    counting.clear()
    result = CliRunner().invoke(main, ["index", str(model_file), "--data", str(gallery), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "its 11 files were embedded again to find the changed ones" in result.output
    assert "11 images (0 added, 1 changed, 1 removed, 10 unchanged)" in result.output
    assert sum(counting) == 11
    index = retrieval.Index.load(out)
    assert index.unknown == 0 and (index.sizes > 0).all()
    np.testing.assert_array_equal(
        index.vectors[index.ids.index(real(gallery / "c" / "img0.png"))],
        old.vectors[old.ids.index(real(gallery / "c" / "img0.png"))],
    )  # the unchanged keep their vectors
    counting.clear()
    _, report = retrieval.build_index(extractor, str(gallery), out)
    assert (report["rechecked"], report["unchanged"], sum(counting)) == (0, 11, 0)


def test_a_failed_write_keeps_the_old_index(model_file, tmp_path, monkeypatch):
    gallery = make_gallery(tmp_path / "gallery")
    out = tmp_path / "idx.npz"
    extractor = retrieval.load_extractor(model_file)
    retrieval.build_index(extractor, str(gallery), out)
    before = out.read_bytes()
    (gallery / "a" / "img0.png").unlink()

    def no_space(path):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(runs, "_fsync", no_space)  # the temporary file is written, then the disk fails
    with pytest.raises(retrieval.RetrievalError, match="No space left on device.*it is unchanged"):
        retrieval.build_index(extractor, str(gallery), out)
    assert out.read_bytes() == before
    assert not [p.name for p in tmp_path.iterdir() if "partial" in p.name]  # no temporary file left
    assert len(retrieval.Index.load(out)) == 12
