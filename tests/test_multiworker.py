"""`--strategy multiworker`: two worker processes on 127.0.0.1 train one short epoch together."""

from __future__ import annotations

import json
import os
import socket
import subprocess

import keras
import numpy as np

from tests.test_train import cli_train_args


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_workers_end_with_identical_weights(tmp_path):
    """On a folder streamed from its files (--cache none): each worker reads only its own half."""
    from tests.data.test_streaming import make_photos

    photos = make_photos(tmp_path / "photos", per_class=40)
    out = tmp_path / "mw"
    workers = [f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"]
    args = cli_train_args(
        out, "--strategy", "multiworker", "--data", str(photos), "--cache", "none", fraction="1"
    )
    args[args.index("--input-shape") + 1] = "28,28,3"
    procs = []
    for index in range(2):
        env = dict(
            os.environ,
            TF_CONFIG=json.dumps(
                {"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}}
            ),
        )
        log = open(tmp_path / f"worker{index}.log", "w")  # noqa: SIM115 - closed below
        procs.append((subprocess.Popen(args, env=env, stdout=log, stderr=subprocess.STDOUT), log))
    for proc, log in procs:
        try:
            proc.wait(timeout=300)
        finally:
            proc.kill()
            log.close()
    logs = [(tmp_path / f"worker{i}.log").read_text()[-3000:] for i in range(2)]
    assert [p.returncode for p, _ in procs] == [0, 0], logs

    chief = keras.saving.load_model(out / "model_last.keras")
    other = keras.saving.load_model(out / "worker1" / "model_last.keras")
    for a, b in zip(chief.get_weights(), other.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    assert json.loads((out / "state.json").read_text())["epoch"] == 1
    assert json.loads((out / "worker1" / "state.json").read_text())["epoch"] == 1
    assert "CollectiveAllReduceStrategy, 2 replica(s)" in (out / "run.log").read_text()
