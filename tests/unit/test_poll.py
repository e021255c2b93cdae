"""The one polling loop: returns on success, times out with what it waited for and saw last."""

from __future__ import annotations

import time

import pytest

from harness import poll
from harness.errors import BadInput, HarnessError
from harness.poll import NotYet, wait_until


class FakeClock:
    """Stands in for the ``time`` module inside :mod:`harness.poll`: monotonic and sleep only,
    so a loop that read the wall clock would fail with AttributeError."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def test_returns_the_probe_value_once_it_stops_saying_not_yet() -> None:
    calls = []

    def probe() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise NotYet(f"attempt {len(calls)}")
        return "ready"

    assert wait_until(probe, what="the thing", timeout=5, interval=0.01) == "ready"
    assert len(calls) == 3


def test_first_success_returns_without_sleeping(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = FakeClock()
    monkeypatch.setattr(poll, "time", clock)
    assert wait_until(lambda: 42, what="x", timeout=10) == 42
    assert clock.sleeps == []


def test_timeout_names_what_was_awaited_and_the_last_thing_seen() -> None:
    seen = iter(range(1000))

    def probe() -> None:
        raise NotYet(f"port closed (try {next(seen)})")

    began = time.monotonic()
    with pytest.raises(HarnessError) as caught:
        wait_until(probe, what="SSH on 127.0.0.1:2222", timeout=0.3, interval=0.05)
    took = time.monotonic() - began
    assert 0.3 <= took < 2.0
    message = caught.value.message
    assert "waiting for SSH on 127.0.0.1:2222" in message
    last_try = next(seen) - 1
    assert message.endswith(f"last seen: port closed (try {last_try})")


def test_an_empty_not_yet_keeps_the_previous_observation() -> None:
    answers = iter(["disk busy"])

    def probe() -> None:
        raise NotYet(next(answers, ""))

    with pytest.raises(HarnessError, match=r"last seen: disk busy$"):
        wait_until(probe, what="disk", timeout=0.1, interval=0.02)


def test_timeout_error_type_is_the_callers_choice() -> None:
    def probe() -> None:
        raise NotYet("no")

    with pytest.raises(BadInput, match="waiting for y"):
        wait_until(probe, what="y", timeout=0.05, interval=0.01, error=BadInput)


def test_other_exceptions_escape_at_once() -> None:
    calls = []

    def probe() -> None:
        calls.append(1)
        raise ValueError("broken probe")

    with pytest.raises(ValueError, match="broken probe"):
        wait_until(probe, what="z", timeout=5, interval=0.01)
    assert len(calls) == 1


def test_runs_on_the_monotonic_clock_and_never_sleeps_past_the_deadline(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = FakeClock()
    monkeypatch.setattr(poll, "time", clock)

    def probe() -> None:
        raise NotYet("not up")

    with pytest.raises(HarnessError, match="timed out after 10s"):
        wait_until(probe, what="boot", timeout=10, interval=3)
    # 3 + 3 + 3, then only the 1 s left: no sleep overshoots the deadline.
    assert clock.sleeps == [3, 3, 3, 1]
    assert clock.now == 1010.0


def test_a_last_call_after_the_deadline_can_still_succeed(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = FakeClock()
    monkeypatch.setattr(poll, "time", clock)
    deadline = clock.now + 5
    calls: list[float] = []

    def probe() -> str:
        calls.append(clock.now)
        if sum(1 for t in calls if t >= deadline) < 2:
            raise NotYet("booting")
        return "up"

    assert wait_until(probe, what="boot", timeout=5, interval=2) == "up"
    # The loop's own try at the deadline failed; the extra final call, with no sleep between
    # them, is what returned.
    assert calls == [1000.0, 1002.0, 1004.0, 1005.0, 1005.0]
