"""harness.portwait: a published port awaited inside the guest first, then from outside."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from harness import portwait
from harness.poll import NotYet


def _answers(*outcomes: object) -> Callable[[], object]:
    """A probe that returns or raises each outcome in turn (NotYet for ``None``), then the last."""
    seen: Iterator[object] = iter(outcomes)
    last: list[object] = [None]

    def probe() -> object:
        last[0] = next(seen, last[0])
        if last[0] is None:
            raise NotYet("no answer")
        return last[0]

    return probe


def _given(probe: Callable[[], object], seen: list[float] | None = None) -> Callable[[float], object]:
    """An outside probe: ``probe``'s outcomes, recording the seconds each call was given."""

    def outside(timeout: float) -> object:
        if seen is not None:
            seen.append(timeout)
        return probe()

    return outside


def _never_called() -> object:
    raise AssertionError("the guest was asked although the port answered at once")


FAST = {"startup": 0.2, "grace": 0.2, "interval": 0.01}


def test_a_port_that_answers_at_once_is_not_awaited_inside() -> None:
    assert portwait.await_port(lambda _timeout: 200, _never_called, what="x to answer", **FAST) == 200


def test_a_port_that_comes_up_is_awaited_inside_then_outside() -> None:
    outside = _given(_answers(None, None, 308))
    inside = _answers(None, 308)
    assert portwait.await_port(outside, inside, what="x to answer", **FAST) == 308


def test_a_port_nothing_serves_says_so() -> None:
    reason = portwait.await_port(_given(_answers(None)), _answers(None), what="127.0.0.1:1 to answer", **FAST)
    assert isinstance(reason, str)
    assert "127.0.0.1:1 to answer, inside the guest" in reason and portwait.NOTHING_SIGN in reason


def test_a_port_served_inside_but_silent_outside_is_the_incidents_signature() -> None:
    reason = portwait.await_port(
        _given(_answers(None)), _answers(200), what="127.0.0.1:1 to answer from the controller", **FAST
    )
    assert isinstance(reason, str)
    assert reason.startswith("timed out after 0s waiting for 127.0.0.1:1 to answer from the controller")
    assert portwait.INSIDE_SIGN in reason and "last seen: no answer" in reason


def test_the_grace_is_wall_clock_time_a_probe_gets_what_is_left_of_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A dead port costs the grace, not the grace plus a whole probe's patience (RED's verify
    paid 45 s for a 15 s grace when each probe could take 10 s)."""
    monkeypatch.setattr(portwait, "LAST_PROBE", 0.01)
    given: list[float] = []
    reason = portwait.await_port(
        _given(_answers(None), given),
        _answers(200),
        what="x",
        startup=1,
        grace=0.3,
        interval=0.05,
        patience=7,
    )
    assert isinstance(reason, str) and portwait.INSIDE_SIGN in reason
    first, *within = given
    assert first == 7, "the probe before the inside wait gets the whole patience"
    assert len(within) >= 2 and all(0.01 <= t <= 0.3 for t in within), within
    assert within == sorted(within, reverse=True), f"each probe gets what is left, no more: {within}"
    assert within[-1] == 0.01, f"the last probe, after the grace, still gets its floor: {within}"


@dataclass
class Ran:
    rc: int
    stdout: str = ""
    stderr: str = ""


@dataclass
class FakeHost:
    reply: Ran
    commands: list[tuple[str, tuple[str, ...]]] = field(default_factory=list)

    def run(self, command: str, *args: str) -> Ran:
        self.commands.append((command, args))
        return self.reply


def test_the_guest_probe_runs_the_probe_script_with_its_arguments() -> None:
    host = FakeHost(Ran(0, json.dumps({"connected": True, "status": 308})))
    assert portwait.guest_probe(host, "127.0.0.1", 80, "http") == {"connected": True, "status": 308}
    ((command, args),) = host.commands
    assert command.startswith("python3 -c %s")
    assert args == (portwait.GUEST_PROBE, "127.0.0.1", "80", "http", "-", "5.0")


def test_a_probe_that_fails_in_the_guest_is_an_error_not_an_exception() -> None:
    host = FakeHost(Ran(127, stderr="sh: python3: not found"))
    result: dict[str, Any] = portwait.guest_probe(host, "127.0.0.1", 443, "https", "a.example", timeout=2)
    assert result["connected"] is False and "python3: not found" in result["error"]


def test_served_inside_waits_for_a_status() -> None:
    refused = FakeHost(Ran(0, json.dumps({"connected": False, "error": "ConnectionRefusedError"})))
    with pytest.raises(NotYet, match="ConnectionRefused"):
        portwait.served_inside(refused, 443, "https", "a.example", timeout=1)()
    served = FakeHost(Ran(0, json.dumps({"connected": True, "status": 200, "der": ""})))
    assert portwait.served_inside(served, 443, "https", "a.example", timeout=1)() == 200
    assert served.commands[0][1][1:] == ("127.0.0.1", "443", "https", "a.example", "1")
