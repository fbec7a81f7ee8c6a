"""`kerascnn index` / `search` and the retrieval API, on a LeNet-5 briefly trained on Fashion-MNIST."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from kerascnn import retrieval
from kerascnn.cli import main
from kerascnn.data import load_builtin


@pytest.fixture(scope="session")
def run_dir(trained_lenet):
    """LeNet-5 at 88.0% (4 epochs): 2 epochs (78.6%) give a latent space that is not yet better than
    pixels at precision@1 (pixel 1-NN is 85.3% here; BENCHMARKS.md)."""
    return trained_lenet


@pytest.fixture(scope="session")
def fashion_index(run_dir, shared_dir):
    """The whole Fashion-MNIST train split indexed, and the evaluation of --eval on 2000 test queries
    (built once per test run, shared by the xdist workers)."""
    with shared_dir("retrieval-index") as (folder, built):
        path, report, output = folder / "fashion.npz", folder / "eval.json", folder / "output.txt"
        if not built:
            folder.mkdir(parents=True, exist_ok=True)
            result = CliRunner().invoke(
                main,
                ["index", str(run_dir), "--data", "fashion_mnist", "--out", str(path), "--eval",
                 "--eval-queries", "2000", "--json", str(report)],
            )  # fmt: skip
            assert result.exit_code == 0, result.output
            output.write_text(result.output)
    return path, json.loads(report.read_text()), output.read_text()


@pytest.fixture(scope="module")
def fashion_pngs(tmp_path_factory):
    """A few Fashion-MNIST test images as PNG files in class folders (Ankle boot, Trouser, Bag)."""
    root = tmp_path_factory.mktemp("pngs")
    _, (x_test, y_test) = load_builtin("fashion_mnist")
    names = {9: "ankle_boot", 1: "trouser", 8: "bag"}
    for label, name in names.items():
        (root / name).mkdir()
        for i in np.flatnonzero(y_test == label)[:6]:
            Image.fromarray(x_test[i]).save(root / name / f"{i}.png")
    return root


def test_the_latent_space_beats_raw_pixels(fashion_index):
    """The claim of the course material: latent neighbours share the query's class more often than
    pixel neighbours do, by precision@k and by mAP (test queries, train gallery)."""
    _, report, output = fashion_index
    assert report["queries"] == 2000 and report["gallery"] == 60000 and report["dim"] == 84
    latent, pixels = report["latent"], report["pixels"]
    assert set(latent) == {"P@1", "P@5", "P@10", "mAP"}
    for key in latent:
        assert latent[key] > pixels[key], (key, latent, pixels)
    assert latent["P@10"] > pixels["P@10"] + 0.03
    assert latent["mAP"] > pixels["mAP"] + 0.15  # pixels rank most same-class images far down
    assert "latent" in output and "pixels" in output and "mAP" in output


def test_index_records_vectors_items_labels_and_model(fashion_index, run_dir):
    path, _, _ = fashion_index
    index = retrieval.Index.load(path)
    assert len(index) == 60000 and index.vectors.shape == (60000, 84)
    np.testing.assert_allclose(np.linalg.norm(index.vectors, axis=1), 1.0, atol=1e-5)
    assert index.ids[7] == "fashion_mnist:train:7"
    np.testing.assert_array_equal(index.labels, load_builtin("fashion_mnist")[0][1].reshape(-1))
    assert index.class_names[9] == "Ankle boot"
    ident = index.identity
    assert ident["model_name"] == "lenet5" and ident["input_shape"] == [28, 28, 1]
    assert ident["layer"] and len(ident["fingerprint"]) == 64
    assert ident["model_file"] == str((run_dir / "model_best.keras").resolve())


def test_search_prints_neighbours_writes_grids_and_survives_a_bad_query(
    fashion_index, fashion_pngs, tmp_path
):
    path, _, _ = fashion_index
    boot = sorted((fashion_pngs / "ankle_boot").iterdir())[0]
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"not an image")
    grids = tmp_path / "grids"
    result = CliRunner().invoke(
        main,
        ["search", str(path), str(boot), str(bad), "fashion_mnist:train:7", "-k", "4", "--out", str(grids),
         "--json", str(tmp_path / "hits.json")],
    )  # fmt: skip
    assert result.exit_code == 1  # one query failed ...
    assert f"{bad}: not an image Pillow can open" in result.output  # named once, with the reason
    hits = json.loads((tmp_path / "hits.json").read_text())
    assert [h["error"] is None for h in hits] == [True, False, True]  # ... and the others still ran
    assert len(hits[0]["hits"]) == 4
    assert sum(h["label"] == "Ankle boot" for h in hits[0]["hits"]) >= 3
    # a gallery image finds itself first, at distance 0
    assert hits[2]["hits"][0]["item"] == "fashion_mnist:train:7"
    assert hits[2]["hits"][0]["distance"] < 1e-3
    distances = [h["distance"] for h in hits[0]["hits"]]
    assert distances == sorted(distances)
    pngs = sorted(grids.glob("*.png"))
    assert len(pngs) == 2
    with Image.open(pngs[0]) as im:
        assert im.width > 5 * 100 and im.height > 100  # the query and 4 neighbours, captioned


def test_numpy_and_faiss_give_the_same_results(fashion_index, monkeypatch):
    rng = np.random.default_rng(0)
    vectors = retrieval.l2_normalize(rng.normal(size=(5000, 32)))
    queries = retrieval.l2_normalize(rng.normal(size=(50, 32)))
    index = retrieval.Index(vectors, [str(i) for i in range(5000)], np.full(5000, -1), [], {"model": {}})
    s_np, p_np = index.search_vectors(queries, 10, "numpy")
    s_fa, p_fa = index.search_vectors(queries, 10, "faiss")
    np.testing.assert_array_equal(p_np, p_fa)
    np.testing.assert_allclose(s_np, s_fa, atol=1e-5)
    # on the real index too (ties between identical images may order differently: compare the scores)
    real = retrieval.Index.load(fashion_index[0])
    q = real.vectors[:20]
    s1, p1 = real.search_vectors(q, 5, "numpy")
    s2, p2 = real.search_vectors(q, 5, "faiss")
    np.testing.assert_allclose(s1, s2, atol=1e-5)
    assert (p1[:, 0] == np.arange(20)).mean() >= 0.9 and (p2[:, 0] == np.arange(20)).mean() >= 0.9
    # "auto" switches to FAISS from the size threshold on
    assert isinstance(index.backend("auto"), retrieval.ExactSearch)
    monkeypatch.setattr(retrieval, "FAISS_THRESHOLD", 1000)
    index._backends.clear()
    assert isinstance(index.backend("auto"), retrieval.FaissSearch)


def test_exact_search_handles_k_beyond_the_gallery():
    vectors = retrieval.l2_normalize(np.eye(3, 4))
    index = retrieval.Index(vectors, list("abc"), [0, 1, 2], ["x", "y", "z"], {"model": {}})
    sims, pos = index.search_vectors(vectors[1], k=10)
    assert pos.tolist() == [[1, 0, 2]] and sims[0, 0] == pytest.approx(1.0)
    with pytest.raises(retrieval.RetrievalError, match="-k"):
        index.search_vectors(vectors[1], k=0)


def test_appending_embeds_only_new_images(run_dir, fashion_pngs, tmp_path, monkeypatch):
    extractor = retrieval.load_extractor(run_dir)
    embedded = []
    original = retrieval.Extractor.embed

    def counting(self, images, batch_size=256):
        embedded.append(len(images))
        return original(self, images, batch_size)

    monkeypatch.setattr(retrieval.Extractor, "embed", counting)
    out = tmp_path / "pngs.npz"
    first, report = retrieval.build_index(extractor, str(fashion_pngs), out)
    assert report["added"] == 18 and sum(embedded) == 18
    assert first.class_names == ["ankle_boot", "bag", "trouser"]
    old_vectors = first.vectors.copy()
    # a second folder with one more class and one overlapping class
    extra = tmp_path / "extra"
    (extra / "trouser").mkdir(parents=True)
    (extra / "sneaker").mkdir()
    _, (x_test, y_test) = load_builtin("fashion_mnist")
    for i in np.flatnonzero(y_test == 7)[:3]:
        Image.fromarray(x_test[i]).save(extra / "sneaker" / f"{i}.png")
    Image.fromarray(x_test[np.flatnonzero(y_test == 1)[50]]).save(extra / "trouser" / "t.png")
    embedded.clear()
    index, report = retrieval.build_index(extractor, str(extra), out)
    assert report["added"] == 4 and sum(embedded) == 4 and len(index) == 22
    np.testing.assert_array_equal(index.vectors[:18], old_vectors)  # old vectors untouched
    assert index.class_names == ["ankle_boot", "bag", "trouser", "sneaker"]
    assert sorted(set(index.labels[18:].tolist())) == [2, 3]  # "trouser" merged by name
    # the same folder again: nothing new to embed, nothing dropped (the other folder's images are kept)
    embedded.clear()
    index, report = retrieval.build_index(extractor, str(fashion_pngs), out)
    assert (report["added"], report["changed"], report["removed"], report["unchanged"]) == (0, 0, 0, 22)
    assert sum(embedded) == 0
    assert len(retrieval.Index.load(out)) == 22


def test_another_model_is_refused_for_queries_and_appends(run_dir, fashion_pngs, tmp_path):
    import keras

    out = tmp_path / "pngs.npz"
    retrieval.build_index(retrieval.load_extractor(run_dir), str(fashion_pngs), out)
    model = keras.saving.load_model(run_dir / "model_best.keras", compile=False)
    model.layers[1].kernel.assign(model.layers[1].kernel * 1.01)  # same architecture, other weights
    other = tmp_path / "other.keras"
    model.save(other)
    query = str(sorted((fashion_pngs / "bag").iterdir())[0])
    result = CliRunner().invoke(main, ["search", str(out), query, "--model", str(other)])
    assert result.exit_code != 0
    assert "was built with model 'lenet5'" in result.output and "differs in its weights" in result.output
    result = CliRunner().invoke(main, ["index", str(other), "--data", str(fashion_pngs), "--out", str(out)])
    assert result.exit_code != 0 and "differs in its weights" in result.output
    assert len(retrieval.Index.load(out)) == 18  # the index is left as it was
    # another embedding layer of the same model is refused too
    with pytest.raises(retrieval.RetrievalError, match="embedding layer"):
        retrieval.search(out, [query], extractor=retrieval.load_extractor(run_dir, layer="flatten"))
    # the same model, saved again, is the same model
    same = tmp_path / "same.keras"
    keras.saving.load_model(run_dir / "model_best.keras", compile=False).save(same)
    result = CliRunner().invoke(main, ["search", str(out), query, "--model", str(same), "--no-grid"])
    assert result.exit_code == 0, result.output


def test_unreadable_and_unlabeled_gallery_images(run_dir, fashion_pngs, tmp_path):
    flat = tmp_path / "flat"
    flat.mkdir()
    for i, png in enumerate(sorted(fashion_pngs.rglob("*.png"))[:5]):
        (flat / f"{i}.png").write_bytes(png.read_bytes())
    (flat / "broken.jpg").write_bytes(b"\xff\xd8 truncated")
    out = tmp_path / "flat.npz"
    result = CliRunner().invoke(main, ["index", str(run_dir), "--data", str(flat), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert f"skipped {(flat / 'broken.jpg').resolve()}" in result.output
    assert "5 added" in result.output
    results = retrieval.search(out, [str(flat / "0.png")], k=3)
    assert results[0].hits[0].label is None and results[0].hits[0].distance < 1e-3


def test_bad_input_is_named(run_dir, fashion_pngs, tmp_path):
    runner = CliRunner()
    index_args = ["index", str(run_dir), "--out", str(tmp_path / "x.npz"), "--data"]
    result = runner.invoke(main, [*index_args, str(fashion_pngs), "--layer", "nope"])
    assert result.exit_code != 0 and "no layer 'nope'" in result.output
    result = runner.invoke(main, ["search", str(tmp_path / "none.npz"), "q.png"])
    assert result.exit_code != 0 and "none.npz' does not exist" in result.output
    junk = tmp_path / "junk.npz"
    junk.write_bytes(b"PK\x03\x04 not really")
    result = runner.invoke(main, ["search", str(junk), "q.png"])
    assert result.exit_code != 0 and "not a kerascnn index" in result.output
    result = runner.invoke(main, [*index_args, "no_such_data"])
    assert result.exit_code != 0 and "neither a folder nor a built-in dataset" in result.output
    flat = tmp_path / "flat"
    flat.mkdir()
    shutil.copy(next((fashion_pngs / "bag").iterdir()), flat / "one.png")
    result = runner.invoke(main, [*index_args, str(flat), "--eval", "--overwrite"])
    assert result.exit_code != 0 and "is unlabeled; precision needs labels" in result.output
    result = runner.invoke(main, [*index_args, str(fashion_pngs), "--eval-k", "0,5"])
    assert result.exit_code != 0 and "--eval-k" in result.output


def test_metrics_on_a_worked_example():
    gallery = retrieval.l2_normalize(np.array([[1, 0], [0.9, 0.1], [0, 1], [0.1, 0.9]], np.float32))
    labels = np.array([0, 1, 0, 1])
    query = retrieval.l2_normalize(np.array([[1, 0.05]], np.float32))
    m = retrieval.retrieval_metrics(gallery, labels, query, np.array([0]), ks=(1, 2))
    # ranking: g0 (rel), g1, g3, g2 (rel) -> P@1 = 1, P@2 = 0.5, AP = (1/1 + 2/4) / 2 = 0.75
    assert m == pytest.approx({"P@1": 1.0, "P@2": 0.5, "mAP": 0.75})


def test_metrics_leave_one_out_skip_the_query_itself():
    gallery = retrieval.l2_normalize(np.array([[1, 0], [0.9, 0.1], [0, 1], [0.1, 0.9]], np.float32))
    labels = np.array([0, 1, 0, 1])
    m = retrieval.retrieval_metrics(gallery, labels, gallery, labels, ks=(1,), self_index=np.arange(4))
    # g0 ranks g1, g3, g2: its relevant g2 at rank 3 (AP 1/3); g1 ranks g0, g3 (rel, rank 2), g2: AP 1/2;
    # g2 ranks g3, g1, g0 (rel, rank 3): AP 1/3; g3 ranks g2, g1 (rel, rank 2), g0: AP 1/2. P@1 = 0.
    assert m == pytest.approx({"P@1": 0.0, "mAP": (1 / 3 + 1 / 2 + 1 / 3 + 1 / 2) / 4})


def test_eval_on_class_folders_is_leave_one_out(run_dir, fashion_pngs, tmp_path):
    """A folder of class folders has no test split: --eval lets each image query all the others."""
    report = tmp_path / "loo.json"
    result = CliRunner().invoke(
        main, ["index", str(run_dir), "--data", str(fashion_pngs), "--out", str(tmp_path / "g.npz"), "--eval",
               "--eval-k", "1,5", "--json", str(report)],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "leave-one-out: each of 18 images queries the 17 others" in result.output
    metrics = json.loads(report.read_text())
    assert metrics["protocol"] == "leave-one-out" and metrics["queries"] == metrics["gallery"] == 18
    # by hand: the model's embeddings of the 18 images, each ranked against the 17 others
    index = retrieval.Index.load(tmp_path / "g.npz")
    sims = index.vectors @ index.vectors.T
    np.fill_diagonal(sims, -np.inf)
    nearest = sims.argmax(1)
    assert metrics["latent"]["P@1"] == pytest.approx((index.labels[nearest] == index.labels).mean(), abs=1e-6)
    assert metrics["latent"]["P@1"] > 0.8  # three well-separated classes (boot, trouser, bag)
