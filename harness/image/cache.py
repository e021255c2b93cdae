"""Build discipline for cached artifacts: one builder per key, build aside, publish by rename.

An artifact is built in ``cache_dir()/.tmp-<kind>-<key>-<pid>`` under the lock
``cache_dir()/<kind>-<key>.lock`` and renamed into place only when complete, so an interrupted
build never leaves a half artifact in the cache. Leftovers of builds that died without cleaning
up (SIGKILL, power loss) are removed, mounts and loop devices included, by the next build of
the same key.
"""

from __future__ import annotations

import errno
import fcntl
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from harness import log, proc
from harness.errors import HarnessError
from harness.paths import cache_dir
from harness.poll import NotYet, wait_until

# Another process building the same key holds the lock: a golden build takes minutes.
LOCK_TIMEOUT = 3600.0
LOCK_POLL_INTERVAL = 2.0


@contextmanager
def build_lock(kind: str, key: str) -> Iterator[None]:
    """Hold the exclusive build lock of ``<kind>-<key>``; waits (bounded) for another builder."""
    root = cache_dir()
    root.mkdir(parents=True, exist_ok=True)
    path = root / f"{kind}-{key}.lock"
    with path.open("a") as handle:

        def try_lock() -> None:
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError as busy:
                raise NotYet(f"{path} is held by another build") from busy

        try:
            try_lock()
        except NotYet:
            log.info(f"another build of {kind}-{key} is running; waiting for {path}")
            wait_until(
                try_lock,
                what=f"the build lock {path}",
                timeout=LOCK_TIMEOUT,
                interval=LOCK_POLL_INTERVAL,
            )
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


@contextmanager
def staging_dir(kind: str, key: str) -> Iterator[Path]:
    """A fresh build directory, removed on exit (success, failure, Ctrl-C) if still there.

    Call under :func:`build_lock`: it also sweeps leftovers of dead builds of the same key.
    """
    root = cache_dir()
    for stale in root.glob(f".tmp-{kind}-{key}-*"):
        pid = stale.name.rsplit("-", 1)[-1]
        if not (pid.isdigit() and _alive(int(pid))):
            log.info(f"removing leftover of an interrupted build: {stale}")
            remove_tree(stale)
    path = root / f".tmp-{kind}-{key}-{os.getpid()}"
    if path.exists():
        remove_tree(path)
    path.mkdir(parents=True)
    try:
        yield path
    finally:
        if path.exists():
            remove_tree(path)


def remove_tree(path: Path) -> None:
    """Delete ``path`` after releasing mounts and loop devices beneath it.

    Never recurses into something still mounted: if a mount cannot be released, the tree is
    left in place and a warning says so.
    """
    release_mounts(path)
    if _mounts_under(path):
        log.warn(f"not deleting {path}: something is still mounted beneath it")
        return
    try:
        shutil.rmtree(path)
    except OSError as exc:
        log.warn(f"could not delete {path}: {exc}")


def release_mounts(path: Path) -> None:
    """Unmount everything mounted under ``path`` and detach loop devices backed by its files."""
    for mountpoint in sorted(_mounts_under(path), key=lambda p: len(p.parts), reverse=True):
        result = proc.run(["umount", str(mountpoint)], check=False)
        if result.returncode != 0:
            log.warn(f"could not unmount {mountpoint}: {result.stderr.strip()}")
    for device in _loops_under(path):
        result = proc.run(["losetup", "--detach", device], check=False)
        if result.returncode != 0:
            log.warn(f"could not detach {device}: {result.stderr.strip()}")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except OSError as exc:
        return exc.errno == errno.EPERM
    return True


def _within(candidate: Path, root: Path) -> bool:
    return candidate == root or root in candidate.parents


def _mounts_under(path: Path) -> list[Path]:
    root = path.resolve()
    found = []
    with open("/proc/self/mountinfo", encoding="utf-8") as table:
        for line in table:
            # Field 5 is the mount point, with spaces etc. octal-escaped.
            mountpoint = Path(line.split()[4].encode().decode("unicode_escape"))
            if _within(mountpoint, root):
                found.append(mountpoint)
    return found


def _loops_under(path: Path) -> list[str]:
    root = path.resolve()
    listing = proc.run(
        ["losetup", "--list", "--noheadings", "--raw", "--output", "NAME,BACK-FILE"],
        check=False,
        quiet=True,
    )
    devices = []
    for line in listing.stdout.splitlines():
        name, _, backing = line.partition(" ")
        backing = backing.removesuffix(" (deleted)").strip()
        if backing and _within(Path(backing), root):
            devices.append(name)
    return devices


def publish(built: Path, final: Path) -> None:
    """Move a complete artifact into place atomically (same filesystem)."""
    try:
        os.rename(built, final)
    except OSError as exc:
        raise HarnessError(f"could not move {built} into the cache as {final}: {exc}") from exc


@contextmanager
def keep_on_failure(logfile: Path, keep_as: Path) -> Iterator[None]:
    """If the body fails, copy ``logfile`` to ``keep_as`` before the staging dir is swept."""
    try:
        yield
    except BaseException:
        if logfile.exists():
            try:
                shutil.copyfile(logfile, keep_as)
                log.info(f"build log kept at {keep_as}")
            except OSError as exc:
                log.warn(f"could not keep the build log {logfile}: {exc}")
        raise
