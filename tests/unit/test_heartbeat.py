"""Heartbeats: a long wait or child says every INTERVAL how long, for what, and what it saw last;
a short one says nothing. The interval is made tiny here, so each test takes a fraction of a second."""

from __future__ import annotations

import io
import sys
import time
from pathlib import Path

import pytest

from harness import heartbeat, log, proc
from harness.heartbeat import Heartbeat, beating
from harness.poll import NotYet, wait_until
from harness.secrets import REDACTED

TINY = 0.03


@pytest.fixture
def console(monkeypatch: pytest.MonkeyPatch) -> io.StringIO:
    """What the harness logs, instead of stderr."""
    sink = io.StringIO()
    monkeypatch.setattr(log, "_stream", sink)
    return sink


@pytest.fixture
def tiny_interval(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(heartbeat, "INTERVAL", TINY)


def beats(console: io.StringIO) -> list[str]:
    return [line for line in console.getvalue().splitlines() if f"{heartbeat.MARK} " in line]


def test_the_line_says_elapsed_seconds_what_and_the_last_thing_seen() -> None:
    beat = Heartbeat("SSH on 127.0.0.1:2222", began=1000.0)
    expected = f"{heartbeat.MARK} 12s waiting for SSH on 127.0.0.1:2222; last seen: nothing yet"
    assert beat.line(1012.0) == expected
    beat.saw("connection refused\n")
    beat.saw("   \n")  # a blank line keeps what was seen before it
    assert beat.line(1040.4).endswith("40s waiting for SSH on 127.0.0.1:2222; last seen: connection refused")


def test_the_last_line_is_cut_to_its_width_on_one_line() -> None:
    beat = Heartbeat("ansible-playbook to finish", began=0.0)
    beat.saw("TASK [docker_host : a long task name]  " + "x" * 500 + "\n")
    last = beat.line(21.0).split("last seen: ", 1)[1]
    assert len(last) == heartbeat.LAST_WIDTH
    assert last.startswith("TASK [docker_host : a long task name] x")
    assert last.endswith("…")
    assert heartbeat.shorten("two\nlines") == "two lines"


@pytest.mark.usefixtures("tiny_interval")
def test_a_long_step_beats_every_interval_until_it_ends(console: io.StringIO) -> None:
    with beating("the thing") as beat:
        beat.saw("half way")
        time.sleep(TINY * 5)
    seen = beats(console)
    assert len(seen) >= 2
    assert all(line.endswith("waiting for the thing; last seen: half way") for line in seen)
    time.sleep(TINY * 3)
    assert len(beats(console)) == len(seen), "it beat after the step ended"


def test_a_step_shorter_than_the_interval_prints_nothing(
    console: io.StringIO, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(heartbeat, "INTERVAL", 0.5)
    began = time.monotonic()
    with beating("a quick thing") as beat:
        beat.saw("done already")
    assert console.getvalue() == ""
    assert time.monotonic() - began < 0.4, "leaving the block waited for the next beat"


@pytest.mark.usefixtures("tiny_interval")
def test_only_the_outermost_heartbeat_speaks(console: io.StringIO) -> None:
    with beating("the outer wait") as outer, beating("the inner command") as inner:
        outer.saw("outer news")
        inner.saw("inner news")
        time.sleep(TINY * 4)
    seen = beats(console)
    assert seen
    assert all("the outer wait; last seen: outer news" in line for line in seen)


@pytest.mark.usefixtures("tiny_interval")
def test_a_heartbeat_is_scrubbed_of_secrets(console: io.StringIO, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GANDI_BEARER_TOKEN", "s3cr3t-sentinel-token")
    with beating("the apply") as beat:
        beat.saw("Authorization: Bearer s3cr3t-sentinel-token")
        time.sleep(TINY * 3)
    assert beats(console)
    assert "s3cr3t-sentinel-token" not in console.getvalue()
    assert REDACTED in console.getvalue()


@pytest.mark.usefixtures("tiny_interval")
def test_wait_until_beats_with_the_probes_last_observation(console: io.StringIO) -> None:
    until = time.monotonic() + TINY * 5
    tries = iter(range(10_000))

    def probe() -> str:
        if time.monotonic() < until:
            raise NotYet(f"disk busy (try {next(tries)})")
        return "free"

    assert wait_until(probe, what="the disk", timeout=5, interval=0.005) == "free"
    seen = beats(console)
    assert seen
    assert all("waiting for the disk; last seen: disk busy (try " in line for line in seen)


@pytest.mark.usefixtures("tiny_interval")
def test_stream_beats_with_the_childs_last_output_line(console: io.StringIO, tmp_path: Path) -> None:
    script = "import time; print('TASK [docker_host : Install]'); print(''); time.sleep(0.5)"
    status = proc.stream([sys.executable, "-c", script], logfile=tmp_path / "out.log", echo=False)
    assert status == 0
    seen = beats(console)
    assert seen, console.getvalue()
    # One heartbeat speaks (the poll for the child's exit is nested in it): the child's. Once
    # the child has printed, every beat gives the last line it printed (the blank one after it
    # does not count). Before that (a loaded machine starts Python slowly) a beat may say what
    # the exit poll saw.
    assert all(" (pid " in line for line in seen)
    child_said = "to finish; last seen: TASK [docker_host : Install]"
    printed = [i for i, line in enumerate(seen) if line.endswith(child_said)]
    assert printed, seen
    assert all(line.endswith(child_said) for line in seen[printed[0] :])


@pytest.mark.usefixtures("tiny_interval")
def test_run_beats_while_a_captured_command_runs(console: io.StringIO) -> None:
    proc.run([sys.executable, "-c", "import time; time.sleep(0.2)"], quiet=True)
    seen = beats(console)
    assert seen
    assert all("to finish; last seen: nothing (its output is read at its end)" in line for line in seen)


@pytest.mark.usefixtures("tiny_interval")
def test_an_outer_wait_that_saw_nothing_speaks_with_what_its_child_printed(console: io.StringIO) -> None:
    """A retried playbook: the retry loop's own probe says nothing until it fails."""
    with beating("playbook site.yml"), beating("ansible-playbook (pid 42) to finish") as child:
        child.saw("TASK [docker_host : Install Docker]")
        with beating("ansible-playbook to exit") as poll:
            poll.saw("still running")
            time.sleep(TINY * 4)
    seen = beats(console)
    assert seen
    assert all(
        "waiting for playbook site.yml (ansible-playbook (pid 42) to finish); "
        "last seen: TASK [docker_host : Install Docker]" in line
        for line in seen
    ), seen
