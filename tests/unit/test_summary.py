"""The per-run summary: total, harness overhead and a JSON file that reads back the same."""

from __future__ import annotations

import json
import re
import types
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from harness import summary as summary_module
from harness import transient
from harness.summary import Summary, record_step
from harness.transient import Kind, Transient

STARTED = 1_750_000_000.0


@pytest.fixture(autouse=True)
def no_retries_yet() -> Iterator[None]:
    transient.reset_retries()
    yield
    transient.reset_retries()


def at(monkeypatch: pytest.MonkeyPatch, now: float) -> None:
    monkeypatch.setattr(summary_module, "time", types.SimpleNamespace(time=lambda: now))


def test_finish_computes_total_and_overhead(monkeypatch: pytest.MonkeyPatch) -> None:
    run = Summary(run_id="0001", host="askari", tier="internal", started=STARTED)
    run.phases = {"preflight": 4.0, "image": 6.0, "boot": 80.0, "apply": 300.0, "reboot": 84.0,
                  "verify": 20.0, "teardown": 3.0}
    run.sut_phases = ["boot", "apply", "reboot", "verify"]
    at(monkeypatch, STARTED + 500.04)
    run.finish("pass")
    assert run.verdict == "pass"
    assert run.total_s == 500.0
    assert run.overhead_s == 16.0  # 500 − (80 + 300 + 84 + 20)


def test_overhead_is_never_negative(monkeypatch: pytest.MonkeyPatch) -> None:
    run = Summary(run_id="0001", host="askari", tier="internal", started=STARTED)
    run.phases = {"boot": 90.0}
    run.sut_phases = ["boot"]
    at(monkeypatch, STARTED + 60)
    run.finish("error")
    assert (run.total_s, run.overhead_s) == (60.0, 0.0)


def test_write_round_trips_through_json(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run = Summary(run_id="0001", host="askari", tier="le-staging", accel="tcg", boot_mode="direct",
                  failed_phase="verify", reason="checks failed", started=STARTED, kept=True)
    run.phases = {"boot": 80.5, "verify": 10.0}
    run.sut_phases = ["boot", "verify"]
    at(monkeypatch, STARTED + 100)
    run.finish("fail")
    path = run.write(tmp_path / "artifacts" / "askari-le-staging-0001")
    assert path == tmp_path / "artifacts" / "askari-le-staging-0001" / "summary.json"
    data = json.loads(path.read_text(encoding="utf-8"))
    assert data["verdict"] == "fail"
    assert data["phases"] == {"boot": 80.5, "verify": 10.0}
    assert Summary(**data) == run


def test_table_lists_phases_and_the_total(monkeypatch: pytest.MonkeyPatch) -> None:
    run = Summary(run_id="0001", host="askari", tier="internal", started=STARTED)
    run.phases = {"boot": 80.0, "apply": 20.0}
    run.sut_phases = ["boot", "apply"]
    at(monkeypatch, STARTED + 110)
    run.finish("pass")
    lines = run.table().splitlines()
    assert [line.split()[0] for line in lines] == ["boot", "apply", "total"]
    assert "110.0s" in lines[-1]
    assert "harness overhead 10.0s" in lines[-1]


def test_failed_phase_is_the_first_phase_that_raised() -> None:
    summary = Summary(run_id="r", host="askari", tier="internal")
    with summary.phase("boot", sut=True):
        pass
    with pytest.raises(RuntimeError), summary.phase("apply", sut=True):
        raise RuntimeError("playbook failed")
    with pytest.raises(RuntimeError), summary.phase("teardown", sut=False):
        raise RuntimeError("later trouble")
    assert summary.failed_phase == "apply"
    assert set(summary.phases) == {"boot", "apply", "teardown"}


def test_overhead_counts_only_phases_not_marked_as_the_system_under_test(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The incident test names its own phases ("RED: reboot", ...): they are SUT time all the same.
    run = Summary(run_id="r", host="askari", tier="internal", started=STARTED)
    monkeypatch.setattr(summary_module.log, "step", _instant_step)
    for name, sut in (("preflight", False), ("RED: apply", True), ("GREEN: reboot", True)):
        with run.phase(name, sut=sut):
            pass
    run.phases.update({"preflight": 5.0, "RED: apply": 270.0, "GREEN: reboot": 50.0})
    at(monkeypatch, STARTED + 330)
    run.finish("pass")
    assert run.sut_phases == ["RED: apply", "GREEN: reboot"]
    assert run.overhead_s == 10.0  # 330 − (270 + 50): preflight and the gaps are overhead


@contextmanager
def _instant_step(name: str, phases: dict[str, float]) -> Iterator[None]:
    yield


def test_table_aligns_long_phase_names(monkeypatch: pytest.MonkeyPatch) -> None:
    run = Summary(run_id="r", host="askari", tier="internal", started=STARTED)
    run.phases = {"boot": 34.1, "verify-before-reboot": 9.8}
    at(monkeypatch, STARTED + 50)
    run.finish("pass")
    ends = {re.search(r"\d+\.\ds", line).end() for line in run.table().splitlines()}  # type: ignore[union-attr]
    assert len(ends) == 1, run.table()  # every duration ends in the same column


def retried(kind: Kind = Kind.UNREACHABLE) -> None:
    """One transient met and retried, as ssh.run_retrying would."""
    met: list[int] = []

    def attempt() -> None:
        if not met:
            met.append(1)
            raise Transient(kind, "kex_exchange_identification: read: Connection reset by peer")

    transient.retrying(attempt, what="cloud-init status", retries=3, interval=0, attempt_timeout=1)


def test_retries_are_counted_in_the_phase_that_made_them(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(summary_module.log, "step", _instant_step)
    run = Summary(run_id="r", host="askari", tier="internal", started=STARTED)
    with run.phase("boot", sut=True):
        retried()
        retried(Kind.DROPPED)
    with run.phase("apply", sut=True):
        pass
    with pytest.raises(RuntimeError), run.phase("verify", sut=True):
        retried()
        raise RuntimeError("checks failed")
    assert run.retries == {"boot": 2, "verify": 1}


def test_table_shows_retries_only_where_there_were_some(monkeypatch: pytest.MonkeyPatch) -> None:
    run = Summary(run_id="r", host="askari", tier="internal", started=STARTED)
    run.phases = {"boot": 80.0, "apply": 20.0, "reboot": 40.0}
    run.retries = {"boot": 2, "reboot": 1}
    at(monkeypatch, STARTED + 150)
    run.finish("pass")
    lines = run.table().splitlines()
    assert lines[0].endswith("80.0s  (2 retries)")
    assert lines[1].endswith("20.0s")
    assert lines[2].endswith("40.0s  (1 retry)")


def test_retries_are_written_with_the_summary(tmp_path: Path) -> None:
    run = Summary(run_id="r", host="askari", tier="internal", started=STARTED)
    run.retries = {"boot": 1}
    data = json.loads(run.write(tmp_path).read_text(encoding="utf-8"))
    assert data["retries"] == {"boot": 1}
    assert Summary(**data) == run
    del data["retries"]  # a summary written before retries were counted still reads back
    assert Summary(**data).retries == {}


def test_a_single_step_records_its_retries(tmp_path: Path) -> None:
    retried()
    record_step(tmp_path, "reboot", 42.04, "pass")
    [line] = (tmp_path / "steps.jsonl").read_text(encoding="utf-8").splitlines()
    entry = json.loads(line)
    assert (entry["step"], entry["seconds"], entry["outcome"]) == ("reboot", 42.0, "pass")
    assert entry["retries"] == 1
