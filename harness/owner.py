"""Who owns a run: a process named by its pid *and* its start time, so a reused pid is no owner.

Recorded in the run's state and in its domains' libvirt metadata. A run whose owner is gone
was killed (SIGKILL, a crashed CI runner): preflight and ``prune`` reap it.
"""

from __future__ import annotations

import os
import platform
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

# /proc/<pid>/stat: field 22 (1-based) is the start time in clock ticks since boot. The command
# name (field 2) is in parentheses and may itself hold spaces or parentheses.
_STARTTIME_AFTER_COMM = 19


@dataclass(frozen=True)
class Owner:
    pid: int
    start: int  # clock ticks since boot, from /proc/<pid>/stat
    node: str  # the controller's host name: an owner on another machine cannot be judged here

    def alive(self, proc_root: Path = Path("/proc")) -> bool:
        """Whether the owning process still runs (on this machine: elsewhere, assume so)."""
        if self.node != platform.node():
            return True
        return start_ticks(self.pid, proc_root) == self.start

    def describe(self) -> str:
        return f"pid {self.pid} on {self.node}"

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Owner:
        return cls(pid=int(data["pid"]), start=int(data["start"]), node=str(data["node"]))


def start_ticks(pid: int, proc_root: Path = Path("/proc")) -> int | None:
    """The start time of ``pid``, or None when no such process runs."""
    try:
        stat = (proc_root / str(pid) / "stat").read_text(encoding="utf-8")
    except OSError:
        return None
    after_comm = stat[stat.rindex(")") + 2 :].split()
    return int(after_comm[_STARTTIME_AFTER_COMM])


def current() -> Owner:
    pid = os.getpid()
    ticks = start_ticks(pid)
    if ticks is None:  # no /proc: never on the machines this runs on
        raise RuntimeError("cannot read this process's start time from /proc")
    return Owner(pid=pid, start=ticks, node=platform.node())
