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
