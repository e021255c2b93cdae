"""Nested, timed log steps a person can follow.

``with step("boot"):`` prints the start, the end and the duration of a phase, indented by
nesting depth, and records the duration in the run's :class:`PhaseClock` when one is given.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TextIO

_stream: TextIO = sys.stderr
_start = time.monotonic()


class _Thread(threading.local):
    """Each thread's nesting depth and machine name (a scenario boots its machines at once)."""

    depth = 0
    who = ""


_here = _Thread()


def _prefix() -> str:
    return f"[{time.monotonic() - _start:7.1f}s] " + "  " * _here.depth + tag()


def current_machine() -> str:
    """The machine this thread's lines are about ("" outside a scenario's machine)."""
    return _here.who


def tag() -> str:
    """``[name] `` for a line about a machine, else nothing (for output echoed line by line)."""
    return f"[{_here.who}] " if _here.who else ""


@contextmanager
def machine(name: str) -> Iterator[None]:
    """Every line this thread logs inside the block carries ``[name]``."""
    before = _here.who
    _here.who = name
    try:
        yield
    finally:
        _here.who = before


def info(message: str) -> None:
    """Log one line at the current nesting depth (one write: a heartbeat's thread logs too)."""
    _stream.write(_prefix() + message + "\n")
    _stream.flush()


def warn(message: str) -> None:
    info(f"WARNING: {message}")


@contextmanager
def step(name: str, phases: dict[str, float] | None = None) -> Iterator[None]:
    """Log a timed step; store its duration under ``name`` in ``phases`` if given."""
    info(f"▶ {name}")
    began = time.monotonic()
    _here.depth += 1
    outcome = "failed"
    try:
        yield
        outcome = "done"
    except KeyboardInterrupt:
        outcome = "interrupted"
        raise
    finally:
        _here.depth -= 1
        took = time.monotonic() - began
        if phases is not None:
            phases[name] = round(phases.get(name, 0.0) + took, 1)
        info(f"{'✔' if outcome == 'done' else '✘'} {name} {outcome} in {took:.1f}s")
