"""Advisory locks (``flock``): the admission lock of the machine and each run's own lock.

A lock held by a process ends with it, even under SIGKILL: so "this run's lock is held" is
the truth about whether its owner is alive, and no stale lock file can wedge the next run.
The holder writes a one-line note into the file, which a refused caller quotes.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

from harness.errors import HarnessError


class LockBusy(HarnessError):
    """Another live process holds the lock."""

    def __init__(self, path: Path, holder: str) -> None:
        super().__init__(f"{path} is held by {holder or 'another process'}")
        self.path = path
        self.holder = holder


def _note(fd: int) -> str:
    os.lseek(fd, 0, os.SEEK_SET)
    return os.read(fd, 4096).decode(errors="replace").strip()


@contextlib.contextmanager
def exclusive(path: Path, note: str, mode: int = 0o600) -> Iterator[None]:
    """Hold ``path`` exclusively for the block, or raise :class:`LockBusy` at once.

    ``mode``: who else may take the lock in turn (0660: everyone in the file's group, for the
    machine's admission lock that every operator and the CI runner share).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    # O_CLOEXEC (Python's default): no child of the harness inherits and outlives the lock.
    fd = os.open(path, os.O_RDWR | os.O_CREAT, mode)
    with contextlib.suppress(PermissionError):  # made by another user: its mode is theirs
        os.fchmod(fd, mode)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise LockBusy(path, _note(fd)) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, (note + "\n").encode(), 0)
        yield
    finally:
        os.close(fd)  # closing the only descriptor releases the lock


def holder(path: Path) -> str | None:
    """The note of whoever holds ``path`` now, or None when nobody does."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    except PermissionError:
        return "another user (their run is private)"
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return _note(fd) or "another process"
        return None
    finally:
        os.close(fd)
