"""How a run is cancelled: SIGINT, SIGTERM, SIGHUP and the global deadline, and a shield
that keeps teardown from being cut short by a second signal.

Outside a shield, the first signal raises :class:`Interrupted` (a KeyboardInterrupt) in the
main thread, wherever it is; every resource then unwinds through the run's ExitStack. Inside
a shield (teardown), further signals are reported and otherwise ignored: a teardown is a few
seconds and always ends by itself, while a torn one leaks a VM.
"""

from __future__ import annotations

import ctypes
import os
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

from harness import log
from harness.errors import HarnessError

HANDLED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
# Inherited "ignore" is a decision of whoever started us (nohup ignores SIGHUP; a background
# job of a script ignores SIGINT): it is kept for these. SIGTERM is always handled.
RESPECT_IGNORED = (signal.SIGINT, signal.SIGHUP)
_PR_SET_PDEATHSIG = 1

_shield_depth = 0


class Interrupted(KeyboardInterrupt):
    """The run was cancelled by a signal; it tears down and exits 130."""

    def __init__(self, signame: str) -> None:
        super().__init__(signame)
        self.signame = signame


class DeadlineExceeded(HarnessError):
    """The run outlived its global deadline; it tears down and exits 3."""


def _on_signal(signum: int, _frame: FrameType | None) -> None:
    name = signal.Signals(signum).name
    if _shield_depth:
        log.warn(f"{name} received during teardown: teardown goes on, it ends by itself")
        return
    raise Interrupted(name)


@contextmanager
def cancellable(deadline: float | None = None) -> Iterator[None]:
    """Turn the cancelling signals into :class:`Interrupted` and bound the block by ``deadline``
    seconds (SIGALRM), restoring the previous handlers after."""

    def on_alarm(_sig: int, _frame: FrameType | None) -> None:
        if _shield_depth:
            log.warn("the global deadline passed during teardown: teardown goes on")
            return
        raise DeadlineExceeded(f"the run exceeded its global deadline of {deadline:.0f}s")

    previous = {}
    for signum in HANDLED:
        current = signal.getsignal(signum)
        previous[signum] = current
        if signum in RESPECT_IGNORED and current is signal.SIG_IGN:
            continue
        signal.signal(signum, _on_signal)
    old_alarm = signal.signal(signal.SIGALRM, on_alarm)
    if deadline:
        signal.setitimer(signal.ITIMER_REAL, deadline)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old_alarm)
        for signum, handler in previous.items():
            signal.signal(signum, handler)


@contextmanager
def shielded() -> Iterator[None]:
    """Run the block (a teardown) to its end: signals that arrive meanwhile are only logged."""
    global _shield_depth  # noqa: PLW0603  (signal handlers read process state; there is one)
    _shield_depth += 1
    try:
        yield
    finally:
        _shield_depth -= 1


def die_with_parent() -> None:
    """Ask the kernel for SIGTERM when our parent dies (nox or make killed by a CI runner's
    cancel): the run then tears itself down instead of living on as an orphan."""
    parent = os.getppid()
    if parent == 1:
        return  # started by init itself: there is no parent to outlive
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)
    except (OSError, AttributeError):
        return  # not Linux: the reaper still finds the run once its owner is gone
    if os.getppid() != parent:  # the parent died before the request took effect
        os.kill(os.getpid(), signal.SIGTERM)
