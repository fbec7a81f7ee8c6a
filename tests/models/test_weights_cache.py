"""The weights cache never takes a wrong file, every download ends, a damaged side file is an error
(issue 43). Each test takes the sha256 of every file in the folders that could lose data (the Keras
cache, the source of `weights add`, the --out of `weights fetch`) before and after, and fails on any
change, a temporary file or a `.fetch-*` folder left behind. The files are small random MobileNetV2s
(alpha 0.35 / 0.5 at 96 px) written under the published names (test_pretrained.publish); the servers
are local threads: one that accepts and never answers, one that sends its headers then stalls, and
test_pretrained's mirror of a folder."""

from __future__ import annotations

import errno
import hashlib
import json
import shutil
import socket
import threading
import time
from pathlib import Path

import h5py
import keras
import pytest
import requests
from click.testing import CliRunner

from kerascnn import models
from kerascnn.cli import main
from kerascnn.models import pretrained

from .test_pretrained import publish, twin, weights_server  # noqa: F401 - the fixture

NAME = pretrained.weights_file("mobilenet_v2", 0.35, 96).name  # ..._0.35_96_no_top.h5, no published md5
FETCH = ["weights", "fetch", "mobilenet_v2", "--alpha", "0.35", "--input-size", "96"]


def sums(*folders) -> dict[str, str]:
    """{path: sha256, or "dir"} of everything under ``folders``, hidden files and empty folders too."""
    out = {}
    for folder in map(Path, folders):
        for p in sorted(folder.rglob("*")) if folder.exists() else []:
            out[str(p)] = hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
    return out


def mobilenet(folder, alpha=0.35, seed=0, name=NAME, top=False) -> Path:
    """A random MobileNetV2 of width ``alpha`` (96 px) in the published layout, saved as ``folder/name``."""
    return publish(twin("mobilenet_v2", (96, 96, 3), alpha=alpha, top=top, seed=seed), name, folder)


def refused(result, *parts):
    """The command failed as `Error: message` (exit 1, no traceback) and the message says ``parts``."""
    assert result.exit_code == 1, result.output
    assert isinstance(result.exception, SystemExit), result.exception
    assert "Error: " in result.output and "Traceback" not in result.output
    for part in parts:
        assert part in result.output, (part, result.output)


@pytest.fixture
def quick(monkeypatch):
    """Downloads that give up after 1 s (KERASCNN_CONNECT_TIMEOUT / KERASCNN_READ_TIMEOUT)."""
    monkeypatch.setenv("KERASCNN_CONNECT_TIMEOUT", "1")
    monkeypatch.setenv("KERASCNN_READ_TIMEOUT", "1")


@pytest.fixture
def silent_server():
    """A server that accepts connections (the kernel does, from the listen backlog) and never answers."""
    sock = socket.create_server(("127.0.0.1", 0), backlog=16)
    yield f"http://127.0.0.1:{sock.getsockname()[1]}/"
    sock.close()


@pytest.fixture
def stalling_server():
    """A server that answers 200 with the headers of a 2 MB file (Content-Length 2028672), sends 100
    bytes, then sends nothing more."""
    sock = socket.create_server(("127.0.0.1", 0), backlog=16)
    sock.settimeout(0.2)
    stop = threading.Event()
    held = []

    def serve():
        while not stop.is_set():
            try:
                conn, _ = sock.accept()
            except OSError:
                continue
            held.append(conn)
            conn.recv(65536)
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2028672\r\n\r\n" + b"\x89HDF" * 25)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{sock.getsockname()[1]}/"
    stop.set()
    thread.join(5)
    for conn in held:
        conn.close()
    sock.close()


# ------------------------------------------------------------------------------------------------
# 1. The cache never takes a wrong file
# ------------------------------------------------------------------------------------------------


def test_add_refuses_another_width_under_the_name_and_keeps_the_cached_file(keras_home, tmp_path):
    mobilenet(pretrained.cache_dir())  # the good file, cached
    source = tmp_path / "source"
    mobilenet(source, alpha=0.5)  # an alpha 0.5 file under the alpha 0.35 name
    before = sums(keras_home, source)
    result = CliRunner().invoke(main, ["weights", "add", str(source / NAME)])
    refused(
        result,
        "its layer 'block_1_project' holds weights of shapes [(1, 1, 48, 16)], the mobilenet_v2 alpha 0.35 "
        "at 96 without its classifier's [(1, 1, 48, 8)]",
        "it looks like mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0.5_96_no_top.h5",
        "was not changed",
    )
    assert sums(keras_home, source) == before
    with pytest.raises(pretrained.WeightsError, match="block_1_project"):
        pretrained.add(source, force=True)  # --force replaces good files only
    assert sums(keras_home, source) == before


def test_add_refuses_a_dense_only_file_and_a_with_top_file_under_a_no_top_name(keras_home, tmp_path):
    mobilenet(pretrained.cache_dir())
    dense = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, name="dense")])
    source = tmp_path / "dense"
    publish(dense, NAME, source)
    assert (source / NAME).stat().st_size < 20_000
    before = sums(keras_home, source)
    refused(
        CliRunner().invoke(main, ["weights", "add", str(source)]),
        f"{source / NAME}: not the {NAME} Keras publishes: it holds no layer 'Conv1', which the mobilenet_v2 "
        "alpha 0.35 at 96 without its classifier has (the file's layers: dense)",
    )
    assert sums(keras_home, source) == before

    top = tmp_path / "top"
    mobilenet(top, top=True)
    before = sums(keras_home, top)
    refused(
        CliRunner().invoke(main, ["weights", "add", str(top)]),
        "it holds a layer 'predictions' that the mobilenet_v2 alpha 0.35 at 96 without its classifier does "
        "not have; it looks like mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0.35_96.h5",
    )
    assert sums(keras_home, top) == before


def test_add_refuses_a_file_whose_md5_is_not_the_one_keras_publishes(keras_home, tmp_path):
    name = "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5"
    cache = pretrained.cache_dir()
    cache.mkdir(parents=True)
    (cache / name).write_bytes(b"the cached file")  # whatever it is, it must stay
    source = tmp_path / "source"
    publish(keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)]), name, source)  # a real .h5
    before = sums(keras_home, source)
    for args in (["weights", "add", str(source)], ["weights", "add", "--force", str(source / name)]):
        refused(
            CliRunner().invoke(main, args),
            f"not the {name} Keras publishes: its md5 is",
            "the published file's 4d473c1dd8becc155b73f8504c6f6626",
            "was not changed",
        )
        assert sums(keras_home, source) == before


def test_a_different_good_file_needs_force_and_the_same_bytes_are_a_no_op(keras_home, tmp_path):
    cached = mobilenet(pretrained.cache_dir(), seed=0)
    same, other = tmp_path / "same", tmp_path / "other"
    shutil.copytree(pretrained.cache_dir(), same)
    mobilenet(other, seed=1)  # as good, other bytes
    before = sums(keras_home, same, other)

    result = CliRunner().invoke(main, ["weights", "add", str(same)])
    assert (
        result.exit_code == 0
        and f"{cached}  (mobilenet_v2 alpha 0.35 at 96): already cached" in result.output
    )
    assert sums(keras_home, same, other) == before

    refused(
        CliRunner().invoke(main, ["weights", "add", str(other)]),
        f"{cached}: the cache already holds another good {NAME}",
        f"`kerascnn weights add --force {other}` replaces it",
    )
    assert sums(keras_home, same, other) == before

    result = CliRunner().invoke(main, ["weights", "add", "--force", str(other)])
    assert result.exit_code == 0 and ": replaced" in result.output, result.output
    assert cached.read_bytes() == (other / NAME).read_bytes()
    assert sorted(p.name for p in pretrained.cache_dir().iterdir()) == [NAME]  # no temporary file


# ------------------------------------------------------------------------------------------------
# 2. Every download ends
# ------------------------------------------------------------------------------------------------


def test_fetch_from_a_server_that_never_answers_ends_at_the_read_timeout(
    keras_home, tmp_path, quick, silent_server
):
    out = tmp_path / "carry"
    mobilenet(out, alpha=0.5, name=pretrained.weights_file("mobilenet_v2", 0.5, 96).name)  # fetched before
    before = sums(keras_home, out)
    start = time.monotonic()
    result = CliRunner().invoke(main, [*FETCH, "--out", str(out), "--from", silent_server])
    assert time.monotonic() - start < 10
    refused(
        result,
        f"could not download {silent_server}{NAME}: no answer for 1 s (the read timeout); give it "
        "longer with KERASCNN_READ_TIMEOUT=SECONDS (or `kerascnn weights fetch --timeout SECONDS`), the "
        "default is 60 s",
        "Nothing was kept",
    )
    assert sums(keras_home, out) == before  # no .part file, no .fetch-* folder, no manifest

    result = CliRunner().invoke(
        main, [*FETCH, "--out", str(out), "--from", silent_server, "--timeout", "0.5"]
    )
    refused(result, "no answer for 0.5 s (the read timeout)")
    assert sums(keras_home, out) == before


def test_fetch_that_stalls_after_the_headers_ends_at_the_read_timeout(
    keras_home, tmp_path, quick, stalling_server
):
    out = tmp_path / "carry"
    before = sums(keras_home, out)
    start = time.monotonic()
    result = CliRunner().invoke(main, [*FETCH, "--out", str(out), "--from", stalling_server])
    assert time.monotonic() - start < 10
    refused(
        result,
        f"could not download {stalling_server}{NAME}: the download stalled at 0 of 2028672 bytes: no "
        "data for 1 s (the read timeout)",
    )
    assert sums(keras_home) == before and not any(out.iterdir())  # the folder it made, left empty


def test_weights_imagenet_through_a_stalled_proxy_ends(keras_home, monkeypatch, quick, silent_server):
    monkeypatch.delenv("KERASCNN_OFFLINE")
    for var in ("NO_PROXY", "no_proxy"):
        monkeypatch.delenv(var, raising=False)
    for var in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy"):
        monkeypatch.setenv(var, silent_server)
    start = time.monotonic()
    with pytest.raises(pretrained.WeightsError) as e:
        models.build(
            "mobilenet_v2", input_shape=(96, 96, 3), alpha=0.35, include_top=False, weights="imagenet"
        )
    assert time.monotonic() - start < 15
    message = str(e.value)
    assert f"could not download {pretrained.weights_file('mobilenet_v2', 0.35, 96).url}" in message
    assert f"through the proxy {silent_server}" in message and "timeout" in message
    assert "KERASCNN_READ_TIMEOUT" in message or "KERASCNN_CONNECT_TIMEOUT" in message
    assert sums(keras_home) == {str(pretrained.cache_dir()): "dir"}  # the cache folder, empty


def test_fetch_serves_checks_and_writes_the_manifest_and_ctrl_c_leaves_nothing(
    keras_home,
    tmp_path,
    monkeypatch,
    quick,
    weights_server,  # noqa: F811 - test_pretrained's fixture
):
    served, url = weights_server
    good = mobilenet(served)
    out = tmp_path / "carry"
    result = CliRunner().invoke(main, [*FETCH, "--out", str(out), "--from", url])
    assert result.exit_code == 0, result.output
    manifest = json.loads((out / pretrained.MANIFEST).read_text())
    sha = hashlib.sha256(good.read_bytes()).hexdigest()
    assert manifest["files"] == [{"name": NAME, "sha256": sha, "model": "mobilenet_v2"}]
    assert sorted(p.name for p in out.iterdir()) == sorted([NAME, pretrained.MANIFEST])
    result = CliRunner().invoke(main, ["weights", "add", str(out)])
    assert result.exit_code == 0 and ": added" in result.output, result.output

    before = sums(keras_home, out)
    mobilenet(served, alpha=0.5)  # the mirror now serves another width under the name
    refused(
        CliRunner().invoke(main, [*FETCH, "--out", str(out), "--from", url]),
        f"{url}{NAME} (downloaded): not the {NAME} Keras publishes: its layer 'block_1_project'",
    )
    assert sums(keras_home, out) == before

    mobilenet(served)  # the good file again; Ctrl-C after the first block
    real = requests.Response.iter_content

    def interrupted(self, *args, **kw):
        yield next(real(self, *args, **kw))
        raise KeyboardInterrupt

    monkeypatch.setattr(requests.Response, "iter_content", interrupted)
    with pytest.raises(KeyboardInterrupt):
        pretrained.fetch([pretrained.weights_file("mobilenet_v2", 0.35, 96)], out, url)
    assert sums(keras_home, out) == before


def test_timeouts_come_from_the_environment_and_are_checked(monkeypatch):
    assert pretrained.timeouts() == (pretrained.CONNECT_TIMEOUT, pretrained.READ_TIMEOUT) == (15, 60)
    monkeypatch.setenv("KERASCNN_READ_TIMEOUT", "2.5")
    assert pretrained.timeouts() == (15, 2.5) and pretrained.timeouts(3) == (3, 3)
    monkeypatch.setenv("KERASCNN_CONNECT_TIMEOUT", "soon")
    with pytest.raises(
        pretrained.WeightsError, match="KERASCNN_CONNECT_TIMEOUT='soon': not a number of seconds"
    ):
        pretrained.timeouts()


# ------------------------------------------------------------------------------------------------
# 3. No traceback from a damaged side file; a full disk
# ------------------------------------------------------------------------------------------------

DAMAGED = {
    "truncated": '{"kerascnn_weights": 1, "files": [{"name": "mobilenet_v2_weights',
    "no files": '{"kerascnn_weights": 1}',
    "no name": '{"kerascnn_weights": 1, "files": [{"sha256": "00"}]}',
    "no sha256": json.dumps({"kerascnn_weights": 1, "files": [{"name": NAME}]}),
}


@pytest.mark.parametrize("damage", DAMAGED)
def test_a_damaged_manifest_is_an_error_that_says_how_to_mend_it(keras_home, tmp_path, silent_server, damage):
    mobilenet(pretrained.cache_dir(), seed=1)
    folder = tmp_path / "carry"
    mobilenet(folder)
    (folder / pretrained.MANIFEST).write_text(DAMAGED[damage])
    before = sums(keras_home, folder)
    manifest = f"{folder / pretrained.MANIFEST}: a damaged {pretrained.MANIFEST}"
    refused(
        CliRunner().invoke(main, ["weights", "add", str(folder)]),
        manifest,
        "To mend it: fetch again",
        f"or delete it and add the .h5 files directly (`kerascnn weights add {folder}`",
    )
    assert sums(keras_home, folder) == before
    refused(
        CliRunner().invoke(main, [*FETCH, "--out", str(folder), "--from", silent_server]),
        manifest,
        "To mend it: delete it and fetch again",
    )
    assert sums(keras_home, folder) == before


def test_add_onto_a_full_disk_says_so_and_keeps_the_cached_file(keras_home, tmp_path, monkeypatch):
    mobilenet(pretrained.cache_dir(), seed=0)
    source = tmp_path / "other"
    mobilenet(source, seed=1)
    before = sums(keras_home, source)

    def full(src, dst, *args, **kw):
        with open(src, "rb") as f, open(dst, "wb") as g:
            g.write(f.read(100_000))  # part of it, then no space
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(shutil, "copyfile", full)
    refused(
        CliRunner().invoke(main, ["weights", "add", "--force", str(source)]),
        f"the disk is full: could not copy {source / NAME} into {pretrained.cache_dir()} (No space left on "
        "device); the cache",
        "was not changed; free some space and add again",
    )
    assert sums(keras_home, source) == before  # the cached file whole, no temporary file
    with h5py.File(pretrained.cache_dir() / NAME) as f:  # and still a weights file
        assert "Conv1" in f.attrs["layer_names"].astype(str)
