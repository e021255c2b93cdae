"""The package cache: apt-cacher-ng on the controller's loopback, the guest's only way to the
Debian archive on a hermetic network (docs/decisions/026).

Each run starts its own apt-cacher-ng, owned by the run like Pebble (its pid in the run's
state, ended at teardown, found by the run's tag after a crash). The cache itself,
``<cache_dir>/apt``, outlives runs; one run at a time uses it (``flock`` holds its lock for as
long as apt-cacher-ng runs). A run that finds it busy gets a private, empty cache in its own
directory and says so. The cache is bounded (``BOMA_APT_CACHE_MAX_MIB``, default 4096): a
run that finds it larger empties it first. ``prune --cache`` empties it.

Its own configuration, not Debian's: no mirror remapping (Debian's file sends deb.debian.org
to ftp.debian.org, which a controller that reaches only its archive cannot), loopback only, and
a port below 32768 (apt-cacher-ng 3.7 on Debian 12 cannot bind a higher one: "Error resolving
address for binding"). With ``BOMA_APT_CACHE_OFFLINE=1`` it serves from the cache alone and
never touches the network. Its transfer log goes to the run's artifacts: each request it
served (``O``) and each download from the archive (``I``), which the summary counts.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
from dataclasses import dataclass
from pathlib import Path

from harness import lock, log, paths, proc
from harness.errors import HarnessError
from harness.poll import NotYet, wait_until
from harness.ports import free_loopback_port_below

PROGRAM = "flock"  # the process the run records: flock, holding the lock, runs apt-cacher-ng
ENV_MAX_MIB = "BOMA_APT_CACHE_MAX_MIB"
ENV_OFFLINE = "BOMA_APT_CACHE_OFFLINE"
DEFAULT_MAX_MIB = 4096
BUSY = 75  # flock's exit status when another run holds the cache
PORT_LIMIT = 32000  # apt-cacher-ng cannot bind ports above 32767
READY_TIMEOUT = 30.0
TRANSFER_LOG = "apt-cacher.log"
ARTIFACTS_NAME = "package-cache"  # the transfer log's folder in a run's artifacts


def shared_dir() -> Path:
    return paths.cache_dir() / "apt"


def lock_file() -> Path:
    return paths.cache_dir() / "apt.lock"


@dataclass(frozen=True)
class CacheRun:
    pid: int
    port: int
    cache_dir: Path
    log_dir: Path
    shared: bool


def size_mib(directory: Path) -> int:
    total = 0
    for root, _dirs, files in os.walk(directory):
        for name in files:
            with contextlib.suppress(OSError):
                total += (Path(root) / name).stat().st_size
    return total // 2**20


def max_mib() -> int:
    return int(os.environ.get(ENV_MAX_MIB, DEFAULT_MAX_MIB))


def _bounded() -> bool:
    """Empty the shared cache if it is over its bound; False if another run holds it."""
    try:
        with lock.exclusive(lock_file(), "the package cache's bound check"):
            directory = shared_dir()
            if directory.is_dir() and (size := size_mib(directory)) > max_mib():
                log.info(
                    f"the package cache holds {size} MiB, over its bound of {max_mib()} MiB: emptying it"
                )
                shutil.rmtree(directory)
    except lock.LockBusy:
        return False
    return True


def config_text(
    *, cache_dir: Path, log_dir: Path, port: int, offline: bool, upstream_proxy: str | None
) -> str:
    lines = [
        f"CacheDir: {cache_dir}",
        f"LogDir: {log_dir}",
        "SupportDir: /usr/lib/apt-cacher-ng",
        "BindAddress: 127.0.0.1",
        f"Port: {port}",
        # No admin socket (nothing uses it): a unix socket's path may not exceed 107 bytes,
        # and under a deep artifacts directory apt-cacher-ng then failed to start ("File name
        # too long", seen in the unit suite once pytest's temporary directory grew a digit).
        "SocketPath:",
        "ForeGround: 1",
        "ExThreshold: 4",
        "ReuseConnections: 1",
    ]
    if offline:
        lines.append("Offlinemode: 1")
    if upstream_proxy:
        lines.append(f"Proxy: {upstream_proxy}")
    return "\n".join(lines) + "\n"


def start(run_dir: Path, log_dir: Path, *, private: bool = False) -> CacheRun:
    """Start the run's apt-cacher-ng on loopback; return once it answers."""
    shared = not private and _bounded()
    cache = shared_dir() if shared else run_dir / "apt-cache"
    conf_dir = run_dir / "aptcache"
    for directory in (cache, conf_dir, log_dir):
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    port = free_loopback_port_below(PORT_LIMIT)
    (conf_dir / "acng.conf").write_text(
        config_text(
            cache_dir=cache,
            log_dir=log_dir,
            port=port,
            offline=os.environ.get(ENV_OFFLINE) == "1",
            upstream_proxy=os.environ.get("http_proxy") or os.environ.get("HTTP_PROXY"),
        ),
        encoding="utf-8",
    )
    # flock holds the shared cache's lock for as long as apt-cacher-ng runs; a private cache
    # takes a lock of its own, so the process the run records is flock either way.
    held = lock_file() if shared else conf_dir / "lock"
    argv = ["flock", "--nonblock", "--conflict-exit-code", str(BUSY), str(held)]
    argv += ["apt-cacher-ng", "-c", str(conf_dir)]
    output = log_dir / "apt-cacher-ng.out"
    pid = proc.spawn(argv, logfile=output)

    def answers() -> None:
        status = proc.exit_status(pid)
        if status == BUSY and shared:
            raise CacheBusy("the shared package cache was taken by another run")
        if status is not None:
            raise HarnessError(f"apt-cacher-ng exited with status {status}: {proc.log_tail(output)}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=2):
                return
        except OSError as exc:
            raise NotYet(f"127.0.0.1:{port}: {exc.strerror}") from exc

    try:
        wait_until(answers, what=f"apt-cacher-ng on 127.0.0.1:{port}", timeout=READY_TIMEOUT, interval=0.2)
    except CacheBusy:
        log.warn("the package cache is in use by another run: this run gets a private, empty one")
        return start(run_dir, log_dir, private=True)
    except BaseException:
        stop(pid)
        raise
    where = f"shared cache {cache}" if shared else f"private cache {cache} (the shared one is in use)"
    log.info(f"package cache: apt-cacher-ng on 127.0.0.1:{port}, {where}")
    return CacheRun(pid=pid, port=port, cache_dir=cache, log_dir=log_dir, shared=shared)


class CacheBusy(HarnessError):
    """Another run took the shared cache between our check and our start."""


def stop(pid: int) -> None:
    if pid:
        proc.stop(pid, PROGRAM)


@dataclass(frozen=True)
class Stats:
    requests: int  # what the guest asked for
    downloads: int  # what the cache fetched from the archive for it (misses)
    bytes_from_archive: int
    bytes_served: int

    @property
    def hits(self) -> int:
        return max(0, self.requests - self.downloads)

    def as_json(self) -> dict[str, int]:
        return {
            "requests": self.requests,
            "hits": self.hits,
            "misses": self.downloads,
            "bytes_from_archive": self.bytes_from_archive,
            "bytes_served": self.bytes_served,
        }

    def describe(self) -> str:
        fetched, served = self.bytes_from_archive / 2**20, self.bytes_served / 2**20
        return (
            f"package cache: {self.requests} requests, {self.hits} hits, {self.downloads} misses; "
            f"{fetched:.1f} MiB from the archive, {served:.1f} MiB served"
        )


def stats(log_dir: Path) -> Stats | None:
    """What the transfer log says (``time|I|bytes|client|path``: I in from the archive, O out
    to the guest); ``None`` without a log."""
    path = log_dir / TRANSFER_LOG
    if not path.is_file():
        return None
    counts = {"I": 0, "O": 0}
    sizes = {"I": 0, "O": 0}
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        fields = line.split("|")
        if len(fields) >= 3 and fields[1] in counts and fields[2].isdigit():
            counts[fields[1]] += 1
            sizes[fields[1]] += int(fields[2])
    return Stats(counts["O"], counts["I"], sizes["I"], sizes["O"])


def empty() -> list[str]:
    """``prune --cache``: empty the shared cache, unless a run is using it."""
    if not shared_dir().exists():
        return []
    try:
        with lock.exclusive(lock_file(), "prune --cache"):
            size = size_mib(shared_dir())
            shutil.rmtree(shared_dir())
    except lock.LockBusy:
        return [f"the package cache {shared_dir()} is in use by a run"]
    log.info(f"emptied the package cache {shared_dir()} ({size} MiB)")
    return []
