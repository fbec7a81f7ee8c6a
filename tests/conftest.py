import contextlib
import fcntl
import os
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")


@pytest.fixture(scope="session")
def shared_dir(tmp_path_factory, worker_id):
    """``shared_dir(name)``: a context manager yielding (folder, built) for an artifact that every
    pytest-xdist worker of this run shares: the first worker builds it under an exclusive lock, the
    others wait and reuse it. ``built`` is False when the caller must build it now. Without xdist the
    folder is this session's own."""
    base = tmp_path_factory.getbasetemp()
    root = base.parent if worker_id != "master" else base  # pytest-N/, shared by this run's workers

    @contextlib.contextmanager
    def shared(name: str):
        folder = Path(root) / f"shared-{name}"
        with open(Path(root) / f"shared-{name}.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            done = folder / ".done"
            yield folder, done.exists()
            folder.mkdir(parents=True, exist_ok=True)
            done.touch()

    return shared


@pytest.fixture(scope="session")
def trained_lenet(shared_dir):
    """A run folder: LeNet-5 on all of Fashion-MNIST for 4 epochs (~30 s), 88.0% top-1. Trained once per
    test run and shared by the xdist workers (retrieval needs a latent space better than pixels: its
    precision@1 is 0.871 against the pixels' 0.853, as after 12 epochs (0.873); the phone runtime tests
    need a model whose predictions mean something)."""
    from kerascnn.train import TrainConfig, train

    with shared_dir("trained-lenet") as (folder, built):
        if not built:
            train(
                TrainConfig(
                    model="lenet5", input_shape=(28, 28, 1), batch_size=128, epochs=4, lr=3e-3, quiet=True,
                    output=str(folder / "lenet"), augment="none",
                )
            )  # fmt: skip
    return folder / "lenet"


@pytest.fixture
def keras_home(tmp_path, monkeypatch):
    """An empty Keras cache (KERAS_HOME), and no downloads (KERASCNN_OFFLINE=1): ImageNet weights are
    only what a test writes there (tests/models/test_pretrained.py::publish)."""
    home = tmp_path / "keras_home"
    monkeypatch.setenv("KERAS_HOME", str(home))
    monkeypatch.setenv("KERASCNN_OFFLINE", "1")
    return home
