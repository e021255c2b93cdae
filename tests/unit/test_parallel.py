"""harness.parallel: jobs side by side, their log lines, their failures; and the two waits
that use it (a scenario's machines booting, a host's published ports probed)."""

from __future__ import annotations

import io
import socket
import threading
import time
from collections.abc import Iterator

import pytest

from harness import hoststate, log, parallel
from harness.config import PublishedPort


@pytest.fixture
def logged() -> Iterator[io.StringIO]:
    stream = io.StringIO()
    old, log._stream = log._stream, stream
    try:
        yield stream
    finally:
        log._stream = old


def _messages(stream: io.StringIO) -> list[str]:
    return [line.split("] ", 1)[1] for line in stream.getvalue().splitlines()]


def test_results_come_back_by_name_in_the_jobs_order() -> None:
    def later(value: int) -> int:
        time.sleep(0.05 * value)
        return value

    results = parallel.each({"c": lambda: later(3), "a": lambda: later(1), "b": lambda: later(2)})
    assert list(results.items()) == [("c", 3), ("a", 1), ("b", 2)]


def test_the_jobs_really_run_at_the_same_time() -> None:
    meet = threading.Barrier(3, timeout=5)  # broken (an error) unless all three wait at once
    assert parallel.each({name: meet.wait for name in "xyz"}).keys() == {"x", "y", "z"}


def test_every_log_line_of_a_tagged_job_carries_its_name(logged: io.StringIO) -> None:
    parallel.each({"askari": lambda: log.info("booting"), "peer": lambda: log.info("booting")}, tag=True)
    log.info("back")
    lines = _messages(logged)
    assert sorted(lines[:2]) == ["[askari] booting", "[peer] booting"]
    assert lines[2] == "back"


def test_an_untagged_job_keeps_the_callers_machine(logged: io.StringIO) -> None:
    with log.machine("askari"):
        parallel.each({"https": lambda: log.info("probing"), "http": lambda: log.info("probing")})
    assert _messages(logged) == ["[askari] probing", "[askari] probing"]


def test_the_first_failure_is_raised_after_every_job_has_ended() -> None:
    ended = []

    def slow() -> None:
        time.sleep(0.3)
        ended.append("slow")

    def broken() -> None:
        raise ValueError("peer broke")

    def also_broken() -> None:
        raise KeyError("third")

    with pytest.raises(ValueError, match="peer broke"):
        parallel.each({"askari": slow, "peer": broken, "third": also_broken}, tag=True)
    assert ended == ["slow"]


def test_no_jobs_is_no_results() -> None:
    assert parallel.each({}) == {}


def test_the_published_ports_are_probed_at_the_same_time(monkeypatch: pytest.MonkeyPatch) -> None:
    """A silent port costs its probe's timeout: in turn, two silent ports cost two."""
    meet = threading.Barrier(2, timeout=5)

    def probe(host_port: int, sni: str | None) -> str:
        meet.wait()  # raises BrokenBarrierError unless the other port's probe is running too
        return hoststate.SILENT

    monkeypatch.setattr(hoststate, "probe_port", probe)
    ports = [PublishedPort("https", 443, "cloud.boma.example"), PublishedPort("http", 80)]
    answers = hoststate.port_answers(ports, {"443": 1, "80": 2})
    assert answers == {"https (443)": hoststate.SILENT, "http (80)": hoststate.SILENT}


def test_a_port_that_answered_before_is_waited_for_while_the_other_is_probed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    seen = {1: iter([hoststate.SILENT, hoststate.SILENT, "answers"]), 2: iter([hoststate.SILENT])}
    monkeypatch.setattr(hoststate, "probe_port", lambda host_port, sni: next(seen[host_port]))
    monkeypatch.setattr(hoststate, "PORT_PROBE_INTERVAL", 0.01)
    ports = [PublishedPort("http", 80), PublishedPort("alt", 8080)]
    expect = {"ports/http (80)": "answers", "ports/alt (8080)": hoststate.SILENT}
    answers = hoststate.port_answers(ports, {"80": 1, "8080": 2}, expect)
    assert answers == {"http (80)": "answers", "alt (8080)": hoststate.SILENT}


def test_a_dead_loopback_port_is_still_silent_when_probed_beside_another() -> None:
    with socket.socket() as a, socket.socket() as b:
        a.bind(("127.0.0.1", 0))
        b.bind(("127.0.0.1", 0))
        ports = {"80": a.getsockname()[1], "81": b.getsockname()[1]}
    answers = hoststate.port_answers([PublishedPort("http", 80), PublishedPort("alt", 81)], ports)
    assert answers == {"http (80)": hoststate.SILENT, "alt (81)": hoststate.SILENT}
