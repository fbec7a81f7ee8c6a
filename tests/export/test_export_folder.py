"""Issue 43, item 6: ``kerascnn export --out FOLDER`` keeps what it did not write. The folder's record
(``.kerascnn-export.json``) lists the files an export wrote with their sha256: a file it did not write is
replaced only with ``--force``; an earlier export's file of another model that this one does not make is
removed (unless modified since: then it is named as stale), the same model's are kept; a user's other
files are never touched, and ``validate`` names a file of another model as stale. Each test compares the
sha256 of every file before and after."""

from __future__ import annotations

import hashlib
import json
import shutil
from types import SimpleNamespace

import keras
import pytest
from click.testing import CliRunner
from kerascnn.export import metadata as md
from kerascnn.export.folder import RECORD, sha256_file
from kerascnn.export.pipeline import ExportOptions, export_model, resolve_source

from kerascnn.cli import main

QUIET = {"log": lambda *_: None}


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """Two tiny untrained models of the same name and input (Fashion-MNIST's), different weights, as a
    user's .keras files in folders of their own: ``a`` and ``b``."""
    found = {}
    for key, seed in (("a", 0), ("b", 1)):
        keras.utils.set_random_seed(seed)
        inputs = keras.Input((28, 28, 1))
        x = keras.layers.Conv2D(4, 3, strides=2, activation="relu")(inputs)
        x = keras.layers.GlobalAveragePooling2D()(x)
        model = keras.Model(inputs, keras.layers.Dense(10, activation="softmax")(x), name="tiny")
        path = tmp_path_factory.mktemp(f"model_{key}") / "tiny.keras"
        model.save(path)
        found[key] = path
    return SimpleNamespace(**found)


def sums(folder) -> dict[str, str]:
    """sha256 of every file under ``folder``, by its path relative to it."""
    return {
        p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def export(model, out, *args):
    return CliRunner().invoke(main, ["export", str(model), "--out", str(out), *args])


def record(out) -> dict:
    return json.loads((out / RECORD).read_text())


def test_a_users_labels_and_model_json_are_replaced_only_with_force(models, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "labels.txt").write_text("cat\ndog\n")
    (out / "model.json").write_text('{"mine": true}\n')
    (out / "notes.txt").write_text("my notes\n")
    before = sums(out)
    result = export(models.a, out, "--tflite")
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    assert "labels.txt (not written by kerascnn export)" in result.output
    assert "model.json (not written by kerascnn export)" in result.output
    assert "--force" in result.output and "Nothing was written" in result.output
    assert "notes.txt" not in result.output  # not a file the export makes: none of its business
    assert sums(out) == before  # nothing written, not even the record

    result = export(models.a, out, "--tflite", "--force")
    assert result.exit_code == 0, result.output
    assert "--force: replacing labels.txt, model.json (not as kerascnn export wrote them)" in result.output
    after = sums(out)
    assert set(after) == {
        "labels.txt", "model.json", "notes.txt", "tiny.keras", "tiny_float32.tflite", RECORD
    }  # fmt: skip
    assert after["labels.txt"] != before["labels.txt"] and after["model.json"] != before["model.json"]
    assert md.read_labels_txt(out / "labels.txt") == [str(i) for i in range(10)]
    assert after["notes.txt"] == before["notes.txt"]
    # The record: every file the export wrote, with its sha256 and the model it came from.
    rec = record(out)
    assert set(rec["files"]) == set(after) - {"notes.txt", RECORD} and "pending" not in rec
    assert all(rec["files"][name]["sha256"] == after[name] for name in rec["files"])
    source = rec["export"]["source"]
    assert source["sha256"] == sha256_file(models.a) and source["path"] == str(models.a.resolve())
    assert source["model"] == "tiny" and len(source["weights"]) == 16

    # Its own files are replaced again without --force.
    result = export(models.a, out, "--tflite")
    assert result.exit_code == 0, result.output
    assert set(sums(out)) == set(after) and sums(out)["notes.txt"] == before["notes.txt"]


def test_another_models_export_removes_the_earlier_onnx_and_the_same_models_keeps_it(models, tmp_path):
    """The user's case: a retrained model exported with fewer formats into the folder of the old one left
    the old model's .onnx, which validate then failed. An export of the same model with fewer formats
    (``--tflite`` then ``--quantize int8``, as the quick start does) keeps the earlier files: still
    current."""
    out = tmp_path / "out"
    assert export(models.a, out, "--tflite", "--onnx").exit_code == 0
    before = sums(out)
    assert "tiny.onnx" in before
    result = export(models.a, out, "--tflite")  # the same model, fewer formats
    assert result.exit_code == 0, result.output
    assert set(sums(out)) == set(before) and sums(out)["tiny.onnx"] == before["tiny.onnx"]
    assert "kept tiny.onnx: an earlier export of this same model wrote them" in result.output
    assert "tiny.onnx" in record(out)["files"]
    result = export(models.b, out, "--tflite")  # another model: a's .onnx is stale, removed
    assert result.exit_code == 0, result.output
    after = sums(out)
    assert set(after) == set(before) - {"tiny.onnx"}
    assert "removed tiny.onnx: stale, written by an earlier export of another model" in result.output
    assert "--keep-stale" in result.output
    assert "tiny.onnx" not in record(out)["files"]
    assert "tiny.onnx" not in json.loads((out / "model.json").read_text())["files"]
    # The same files again: the folder keeps what it has (the same file names; nothing removed).
    result = export(models.b, out, "--tflite")
    assert result.exit_code == 0 and "  removed " not in result.output, result.output
    assert set(sums(out)) == set(after)


def test_a_folder_exported_before_the_record_is_read_from_its_model_json(models, tmp_path):
    """A folder an earlier kerascnn exported (no record; its model.json lists the files): the export
    replaces those files without --force and removes none of them (their model is not known)."""
    out = tmp_path / "out"
    assert export(models.a, out, "--tflite", "--onnx").exit_code == 0
    (out / RECORD).unlink()
    (out / "notes.txt").write_text("mine\n")
    before = sums(out)
    result = export(models.b, out, "--tflite")
    assert result.exit_code == 0, result.output
    after = sums(out)
    assert set(after) == set(before) | {RECORD}
    assert after["tiny.onnx"] == before["tiny.onnx"] and after["notes.txt"] == before["notes.txt"]
    assert after["tiny_float32.tflite"] != before["tiny_float32.tflite"]  # b's, replacing a's


def test_a_file_the_user_put_there_is_never_touched(models, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("my notes\n")
    shutil.copy(models.b, out / "mine.keras")  # a model file of the user's, beside the export
    mine = sums(out)
    for args in (("--tflite", "--onnx"), ("--tflite",), ("--onnx", "--force")):
        result = export(models.a, out, *args)
        assert result.exit_code == 0, result.output
        now = sums(out)
        assert {k: now[k] for k in mine} == mine, args
        assert "notes.txt" not in record(out)["files"] and "mine.keras" not in record(out)["files"]
    assert "left alone: mine.keras: not written by kerascnn export" in result.output
    # Another model into the same folder: the user's files still stay as they are.
    result = export(models.b, out, "--tflite")
    assert result.exit_code == 0, result.output
    now = sums(out)
    assert {k: now[k] for k in mine} == mine
    assert "removed tiny.onnx" in result.output


def test_a_recorded_file_modified_since_is_kept_and_named_stale(models, tmp_path):
    out = tmp_path / "out"
    assert export(models.a, out, "--tflite", "--onnx").exit_code == 0
    with open(out / "tiny.onnx", "ab") as f:  # the user changed it (an optimizer pass, say)
        f.write(b"edited")
    edited = sums(out)["tiny.onnx"]
    result = export(models.a, out, "--tflite")
    assert result.exit_code == 0, result.output
    assert "stale, left in place: tiny.onnx: written by an earlier export and modified since" in result.output
    assert "  removed " not in result.output
    after = sums(out)
    assert after["tiny.onnx"] == edited
    assert record(out)["files"]["tiny.onnx"]["sha256"] != edited  # what the export wrote, not the edit
    # An export that would replace it stops before writing anything, naming it and --force.
    result = export(models.a, out, "--tflite", "--onnx")
    assert result.exit_code == 1, result.output
    assert "tiny.onnx (modified since the export of" in result.output and "--force" in result.output
    assert sums(out) == after
    result = export(models.a, out, "--tflite", "--onnx", "--force")
    assert result.exit_code == 0, result.output
    assert sums(out)["tiny.onnx"] != edited
    assert record(out)["files"]["tiny.onnx"]["sha256"] == sums(out)["tiny.onnx"]


def test_validate_names_a_stale_file_of_another_model(models, tmp_path):
    out = tmp_path / "out"
    assert export(models.a, out, "--tflite", "--onnx").exit_code == 0
    shutil.copy(out / "tiny.onnx", tmp_path / "a.onnx")
    result = export(models.b, out, "--tflite", "--keep-stale")  # a's .onnx stays, beside b's files
    assert result.exit_code == 0, result.output
    assert "kept (--keep-stale) tiny.onnx" in result.output
    shutil.copy(tmp_path / "a.onnx", out / "copied.onnx")  # and one no export wrote
    before = sums(out)
    report = tmp_path / "v.json"
    result = CliRunner().invoke(
        main,
        ["validate", str(out), "--data", "fashion_mnist", "--limit", "50", "--no-mediapipe",
         "--json", str(report)],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "not validating 2 stale file(s): copied.onnx, tiny.onnx" in result.output
    rows = {r["file"]: r for r in json.loads(report.read_text())["rows"] if not r["format"].startswith("gpu")}
    assert rows["tiny.onnx"]["status"] == "stale" and rows["copied.onnx"]["status"] == "stale"
    assert "earlier export" in rows["tiny.onnx"]["error"] and "another model" in rows["tiny.onnx"]["error"]
    assert str(models.a.resolve()) in rows["tiny.onnx"]["error"]  # the model it came from
    assert str(models.b.resolve()) in rows["tiny.onnx"]["error"]  # and the folder's
    assert "does not list it" in rows["copied.onnx"]["error"]
    assert rows["tiny.keras"]["status"] == "ok" and rows["tiny_float32.tflite"]["status"] == "ok"
    assert rows["tiny_float32.tflite"]["agreement"] == 100.0
    assert any(line.split()[1:3] == ["tiny.onnx", "stale"] for line in result.output.splitlines())
    assert sums(out) == before
    # Named on its own, the stale file is validated (on the data alone: no Keras model beside it).
    rows, summary = _validate([out / "tiny.onnx"])
    assert [(r.file, r.status) for r in rows] == [("tiny.onnx", "ok")] and summary["stale"] == []


def test_the_model_being_exported_in_its_export_folder_is_left_as_it_is(models, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    shutil.copy(models.a, out / "tiny.keras")  # the name of the export's own reference copy
    before = sums(out)
    result = export(out / "tiny.keras", out, "--tflite")
    assert result.exit_code == 1, result.output
    assert "tiny.keras (not written by kerascnn export; it is the model being exported)" in result.output
    assert sums(out) == before
    (out / "tiny.keras").rename(out / "user.keras")
    result = export(out / "user.keras", out, "--tflite")
    assert result.exit_code == 0 and "left alone" not in result.output, result.output
    assert sums(out)["user.keras"] == before["tiny.keras"]
    rows, summary = _validate([out])
    statuses = {r.file: r.status for r in rows if not r.format.startswith("gpu")}
    assert statuses == {"tiny.keras": "ok", "user.keras": "stale", "tiny_float32.tflite": "ok"}, rows
    assert "the model file the folder's export was made from" in rows[1].error and summary["passed"]


def test_an_export_that_stops_midway_leaves_the_earlier_files_and_the_next_one_goes_on(
    models, tmp_path, monkeypatch
):
    out = tmp_path / "out"
    export_model(resolve_source(models.a), out, ExportOptions(tflite=("none",), onnx=True), **QUIET)
    before = sums(out)
    from kerascnn.export import tflite as ktflite

    def killed(*args, **kwargs):  # the process dies in the middle of the export
        raise KeyboardInterrupt

    with monkeypatch.context() as m:
        m.setattr(ktflite, "convert", killed)
        with pytest.raises(KeyboardInterrupt):
            export_model(resolve_source(models.b), out, ExportOptions(tflite=("none",)), **QUIET)
    after = sums(out)
    assert set(after) == set(before)  # nothing removed: the earlier export's .onnx is still there
    changed = {k for k in before if before[k] != after[k]}
    assert changed == {"tiny.keras", RECORD}  # b's .keras was written (atomically); the rest is a's
    assert "tiny_float32.tflite" in record(out)["pending"]
    # The next export knows the files of the one that stopped as its own: no --force needed.
    result = export(models.b, out, "--tflite")
    assert result.exit_code == 0, result.output
    assert "removed tiny.onnx" in result.output and "pending" not in record(out)
    assert set(sums(out)) == set(before) - {"tiny.onnx"}


def _validate(paths):
    from kerascnn.export.validate import validate

    return validate(paths, "fashion_mnist", limit=50, latency_runs=1, mediapipe=False, **QUIET)
