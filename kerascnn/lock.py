"""One writer at a time: an exclusive lock on a run folder or an index file while a command writes it.

The lock is an advisory ``flock`` on a small hidden file (``<folder>/.kerascnn.lock`` for a run folder,
``.<name>.lock`` next to an index). The kernel drops it when its process ends, however it ends, so a
lock left by a killed process is free for the next command at once (it only finds the dead holder's
details in the file, and overwrites them). A second writer is refused at once, with the holder's PID and
command line, instead of waiting: two commands writing one run folder would interleave their files.

The lock file is never deleted: unlinking a lock file that another process has opened would let two
processes each hold "the" lock on a different inode.
"""

from __future__ import annotations

import json
import os
import shlex
import sys
import time
from pathlib import Path

from .errors import KerascnnError

RUN_LOCK_NAME = ".kerascnn.lock"


class LockedError(KerascnnError, RuntimeError):
    """Another process is writing the folder or file; the message names it, its PID and command."""


def _holder_text(lock_file: Path) -> str:
    try:
        info = json.loads(lock_file.read_text())
        since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(float(info["since"])))
        return f"PID {int(info['pid'])} ({info['command']}, since {since})"
    except (OSError, ValueError, KeyError, TypeError):
        return "another process"


class WriteLock:
    """An exclusive, non-blocking lock held for a ``with`` block (or from :meth:`acquire` to
    :meth:`release`). ``what`` names the locked thing in the error ("run folder 'runs/x'")."""

    def __init__(self, lock_file, what: str):
        self.lock_file = Path(lock_file)
        self.what = what
        self._fd: int | None = None

    @classmethod
    def for_run(cls, run_dir) -> WriteLock:
        run_dir = Path(run_dir)
        return cls(run_dir / RUN_LOCK_NAME, f"run folder '{run_dir}'")

    @classmethod
    def for_file(cls, path) -> WriteLock:
        path = Path(path)
        return cls(path.with_name(f".{path.name}.lock"), f"'{path}'")

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> WriteLock:
        if self._fd is not None:
            return self
        self.lock_file.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.lock_file, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            _lock(fd)
        except BlockingIOError:
            os.close(fd)
            raise LockedError(
                f"{self.what} is being written by {_holder_text(self.lock_file)}; wait for it to finish "
                "or stop it (one command writes a run folder or an index at a time)"
            ) from None
        except BaseException:
            os.close(fd)
            raise
        info = {"pid": os.getpid(), "command": shlex.join(sys.argv) or sys.executable, "since": time.time()}
        try:  # who holds it, for the message a second writer gets (a full disk only loses this text)
            os.ftruncate(fd, 0)
            os.pwrite(fd, json.dumps(info).encode(), 0)
        except OSError:
            pass
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)  # closing drops the flock

    def __enter__(self) -> WriteLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


if sys.platform == "win32":  # pragma: no cover - kerascnn is tested on Linux
    import msvcrt

    def _lock(fd: int) -> None:
        try:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
        except OSError as e:
            raise BlockingIOError(str(e)) from e

else:
    import fcntl

    def _lock(fd: int) -> None:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
