"""The one polling loop. Every wait in the harness goes through :func:`wait_until`."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

from harness import heartbeat
from harness.errors import HarnessError

T = TypeVar("T")


class NotYet(Exception):
    """Raised by a probe that has not seen what it waits for; its message is what it saw."""


def wait_until(
    probe: Callable[[], T],
    *,
    what: str,
    timeout: float,
    interval: float = 2.0,
    error: type[Exception] = HarnessError,
) -> T:
    """Call ``probe`` until it returns without raising :class:`NotYet`, on a monotonic clock.

    On timeout, the probe is called one last time, and the error says what was awaited and
    what the probe last saw. A wait longer than :data:`harness.heartbeat.INTERVAL` logs a
    heartbeat with the probe's last observation.
    """
    deadline = time.monotonic() + timeout
    last = "nothing yet"
    with heartbeat.beating(what) as beat:
        while True:
            try:
                return probe()
            except NotYet as seen:
                last = str(seen) or last
                beat.saw(last)
            if time.monotonic() >= deadline:
                break
            time.sleep(min(interval, max(0.0, deadline - time.monotonic())))
        try:
            return probe()
        except NotYet as seen:
            last = str(seen) or last
    raise error(f"timed out after {timeout:.0f}s waiting for {what}; last seen: {last}")
