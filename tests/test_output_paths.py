"""Issue 43, item 8: an output option whose path is a file where a folder is wanted (or the reverse, or
under a file) is refused before any work starts, naming the option and the path; an OSError about a file
met while writing (a full disk) is one ``Error:`` line, never a traceback. The folders' sums before and
after show nothing was written."""

from __future__ import annotations

import errno
import hashlib

import click
import pytest
from click.testing import CliRunner

from kerascnn.cli import main, os_error_text


def tree_sum(folder) -> str:
    digest = hashlib.sha256()
    for p in sorted(folder.rglob("*")):
        digest.update(str(p.relative_to(folder)).encode())
        if p.is_file():
            digest.update(p.read_bytes())
    return digest.hexdigest()


CASES = [
    (["train", "--model", "lenet5", "--output", "{file}"], "--output", "is a file"),
    (["train", "--model", "lenet5", "--output", "{file}/sub"], "--output", "is a file"),
    (["explain", "m.keras", "x.png", "--out", "{file}"], "--out", "is a file"),
    (["search", "i.npz", "x.png", "--out", "{file}"], "--out", "is a file"),
    (["weights", "fetch", "mobilenet_v2", "--out", "{file}"], "--out", "is a file"),
    (["validate", "x.tflite", "--data", "d", "--json", "{dir}"], "--json", "is a folder"),
    (["evaluate", "run", "--json", "{dir}"], "--json", "is a folder"),
    (["index", "run", "--data", "d", "--out", "{dir}"], "--out", "is a folder"),
    (["export", "run", "--out", "{file}"], "--out", "is a file"),
    (["lab", "gap_shift", "--out", "{file}/x"], "--out", "is a file"),
]


@pytest.mark.parametrize("args,option,words", CASES, ids=[" ".join(c[0][:2]) + " " + c[1] for c in CASES])
def test_output_path_of_the_wrong_kind_is_refused_before_work(tmp_path, monkeypatch, args, option, words):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "afile.txt").write_text("a user's notes\n")
    (tmp_path / "adir").mkdir()
    (tmp_path / "adir" / "keep.txt").write_text("kept\n")
    before = tree_sum(tmp_path)
    args = [a.format(file="afile.txt", dir="adir") for a in args]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert f"Invalid value for '{option}'" in result.output and words in result.output, result.output
    assert "Traceback" not in result.output
    assert tree_sum(tmp_path) == before


def test_os_error_about_a_file_is_one_line():
    full = OSError(errno.ENOSPC, "No space left on device", "/cache/models/x.h5")
    assert os_error_text(full).startswith("/cache/models/x.h5: No space left on device (free some space")
    moved = OSError(errno.EACCES, "Permission denied", "a", None, "b")
    assert os_error_text(moved) == "a -> b: Permission denied"


def test_cli_turns_a_file_os_error_into_an_error_line(monkeypatch):
    """The group's backstop: an OSError naming a file, raised inside any command, is ``Error: ...``."""
    from kerascnn.cli import zoo

    def full_disk(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", "/x/y.keras")

    monkeypatch.setattr(zoo, "_print_models", full_disk, raising=False)
    monkeypatch.setattr(click, "echo", full_disk)
    result = CliRunner().invoke(main, ["models"])
    assert result.exit_code == 1
    assert "Error: /x/y.keras: No space left on device" in result.output
