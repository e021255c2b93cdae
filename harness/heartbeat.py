"""Progress heartbeats: a wait or a child that takes long says so, every :data:`INTERVAL`.

Written once, for the one polling loop (:func:`harness.poll.wait_until`) and the children of
:mod:`harness.proc`: while a step runs longer than :data:`INTERVAL`, one log line every
:data:`INTERVAL` gives the seconds elapsed, what is awaited and the last thing seen (the probe's
last :class:`~harness.poll.NotYet`, the child's last output line). A step shorter than that
prints nothing. Only the outermost heartbeat of a thread speaks: the poll for a streamed child's
exit, or the SSH command inside a wait for SSH, add nothing to the one already beating.

The line is printed from a thread of its own, so it comes on time even while a probe or a
child blocks the caller; it is scrubbed of secrets like everything else the harness prints.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

from harness import log
from harness.secrets import scrub_text

INTERVAL = 20.0  # seconds between two heartbeats of one step; tests make it tiny
LAST_WIDTH = 160  # the last line seen, cut to this many characters
JOIN_TIMEOUT = 1.0
MARK = "…"

_active = threading.local()


def shorten(text: str, width: int = LAST_WIDTH) -> str:
    """``text`` on one line, at most ``width`` characters (cut with an ellipsis)."""
    flat = " ".join(text.split())
    return flat if len(flat) <= width else flat[: width - 1] + "…"


class Heartbeat:
    """What one step waits for, and the last thing it saw; :meth:`saw` may be called from any
    thread (a reader of a child's output)."""

    def __init__(self, what: str, *, began: float, idle: str = "nothing yet") -> None:
        self.what = what
        self.began = began
        self._last = idle

    def saw(self, line: str) -> None:
        """Remember ``line`` as the last thing seen; a blank line keeps the previous one."""
        if line.strip():
            self._last = line  # one assignment: atomic for the thread that prints it

    def line(self, now: float) -> str:
        return f"{MARK} {now - self.began:.0f}s waiting for {self.what}; last seen: {shorten(self._last)}"


@contextmanager
def beating(what: str, *, idle: str = "nothing yet") -> Iterator[Heartbeat]:
    """Beat for the block: a line every :data:`INTERVAL` while it runs, none if it is shorter.

    Inside another heartbeat of the same thread the block stays silent (the outer one speaks).
    """
    beat = Heartbeat(what, began=time.monotonic(), idle=idle)
    if getattr(_active, "beating", False):
        yield beat
        return
    every, stop = INTERVAL, threading.Event()

    def speak() -> None:
        while not stop.wait(every):
            log.info(scrub_text(beat.line(time.monotonic())))

    _active.beating = True
    speaker = threading.Thread(target=speak, name=f"heartbeat: {shorten(what, 40)}", daemon=True)
    speaker.start()
    try:
        yield beat
    finally:
        _active.beating = False  # first: a signal that cuts the join short leaves no stale flag
        stop.set()
        speaker.join(JOIN_TIMEOUT)
