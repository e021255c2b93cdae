"""Progress heartbeats: a wait or a child that takes long says so, every :data:`INTERVAL`.

Written once, for the one polling loop (:func:`harness.poll.wait_until`) and the children of
:mod:`harness.proc`: while a step runs longer than :data:`INTERVAL`, one log line every
:data:`INTERVAL` gives the seconds elapsed, what is awaited and the last thing seen (the probe's
last :class:`~harness.poll.NotYet`, the child's last output line). A step shorter than that
prints nothing. One line per beat, however the waits nest: the outermost step's elapsed time
and what it waits for, then what it last saw, or, while it has seen nothing, what the
outermost nested step that has seen anything saw (a retried playbook's wait shows the
playbook's last output line, not its own empty probe).

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
        self.seen = False

    def saw(self, line: str) -> None:
        """Remember ``line`` as the last thing seen; a blank line keeps the previous one."""
        if line.strip():
            self._last = line  # one assignment: atomic for the thread that prints it
            self.seen = True

    @property
    def last(self) -> str:
        return self._last

    def line(self, now: float, inner: Heartbeat | None = None) -> str:
        """The beat's line; ``inner``, a step nested in this one, says what was last seen."""
        source = inner if inner is not None and inner is not self else self
        step = f" ({shorten(source.what, 80)})" if source is not self else ""
        return (
            f"{MARK} {now - self.began:.0f}s waiting for {self.what}{step}; last seen: {shorten(source.last)}"
        )


@contextmanager
def beating(what: str, *, idle: str = "nothing yet") -> Iterator[Heartbeat]:
    """Beat for the block: a line every :data:`INTERVAL` while it runs, none if it is shorter.

    Inside another heartbeat of the same thread the block adds no speaker of its own: the
    outer one speaks, with what this one saw when it has seen anything.
    """
    beat = Heartbeat(what, began=time.monotonic(), idle=idle)
    stack: list[Heartbeat] = getattr(_active, "stack", None) or []
    _active.stack = stack
    stack.append(beat)
    if len(stack) > 1:
        try:
            yield beat
        finally:
            stack.remove(beat)
        return
    every, stop = INTERVAL, threading.Event()
    who = log.current_machine()  # the speaker's lines name the machine its step is about

    def speak() -> None:
        with log.machine(who):
            _speak()

    def _speak() -> None:
        while not stop.wait(every):
            # What the step itself saw; else what the outermost nested step that saw anything
            # saw (a retried playbook: the playbook's output, not the exit poll inside it).
            inner = None if beat.seen else next((b for b in stack[1:] if b.seen), None)
            log.info(scrub_text(beat.line(time.monotonic(), inner)))

    speaker = threading.Thread(target=speak, name=f"heartbeat: {shorten(what, 40)}", daemon=True)
    speaker.start()
    try:
        yield beat
    finally:
        stack.clear()  # first: a signal that cuts the join short leaves no stale step
        stop.set()
        speaker.join(JOIN_TIMEOUT)
