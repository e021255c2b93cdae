"""Waits that run side by side: a scenario's machines booting at once, a host's ports probed
at once. One doorway, so that every such wait behaves the same under a signal and in the log.

The threads are daemons and the calling thread keeps waking while it waits for them, so a
signal (Ctrl-C, the deadline) ends the wait at once: the caller's clean-up then removes what
the threads were waiting on, and they end with the process.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from typing import TypeVar

from harness import log

T = TypeVar("T")
JOIN_INTERVAL = 0.5  # how often the waiting thread wakes: signals land within this


def each(jobs: Mapping[str, Callable[[], T]], *, tag: bool = False) -> dict[str, T]:
    """Run every job in a thread of its own and wait for all of them; their results by name.

    With ``tag``, each job's log lines carry its name (a scenario's machines); without, they
    carry the caller's machine, if any. Every job ends before anything is raised: then the
    first failure in the jobs' order is.
    """
    results: dict[str, T] = {}
    failures: dict[str, BaseException] = {}
    caller = log.current_machine()

    def work(name: str, job: Callable[[], T]) -> None:
        with log.machine(name if tag else caller):
            try:
                results[name] = job()
            except BaseException as exc:  # handed to the waiting thread, which raises it
                failures[name] = exc

    threads = [
        threading.Thread(target=work, args=(name, job), name=f"boma-{name}", daemon=True)
        for name, job in jobs.items()
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        while thread.is_alive():
            thread.join(JOIN_INTERVAL)
    for name in jobs:
        if name in failures:
            raise failures[name]
    return {name: results[name] for name in jobs}
