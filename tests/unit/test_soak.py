"""The soak driver (tests/soak/soak.py) without a VM: its flake count, its clean-up, its report."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

from harness import paths, transient

spec = importlib.util.spec_from_file_location("soak", paths.REPO / "tests" / "soak" / "soak.py")
assert spec is not None and spec.loader is not None
soak = importlib.util.module_from_spec(spec)
sys.modules["soak"] = soak  # dataclasses look their module up while the class is made
spec.loader.exec_module(soak)

Step, Attempt, Iteration = soak.Step, soak.Attempt, soak.Iteration


def boots(*steps: tuple[str, int, float, int]) -> Attempt:
    return Attempt(run_id="0badf00d", steps=[Step(*s) for s in steps])


PASS = boots(("up", 0, 120.0, 0), ("reboot", 0, 90.0, 1), ("down", 0, 4.0, 0))
FAIL = boots(("up", 3, 900.0, 5), ("down", 0, 4.0, 0))


def fake_iterations() -> list[Iteration]:
    return [
        Iteration(1, PASS),
        Iteration(2, FAIL, retry=boots(("up", 0, 100.0, 2), ("reboot", 0, 80.0, 0), ("down", 0, 3.0, 0))),
        Iteration(3, FAIL, retry=FAIL),
    ]


def test_a_failure_that_passes_on_its_retry_is_a_flake() -> None:
    assert [it.verdict for it in fake_iterations()] == ["pass", "flake", "fail"]


def test_the_report_counts_and_spreads(tmp_path: Path) -> None:
    data = soak.report(fake_iterations(), mode="boots", host="askari", command="soak --boots 3", started=0)
    assert (data["passed"], data["flakes"], data["failed"]) == (1, 1, 1)
    assert data["retries"] == 1 + 5 + 2 + 5 + 5
    # only steps that succeeded count in the spread: a failed boot's 900 s is not a boot time
    assert data["spread_s"]["up"] == {"n": 2, "min": 100.0, "median": 110.0, "max": 120.0}
    assert data["spread_s"]["down"]["n"] == 5
    json_path, md_path = soak.write_report(data, tmp_path, "2026-12-02")
    assert json_path == tmp_path / "2026-12-02-soak.json"
    written = json.loads(json_path.read_text(encoding="utf-8"))
    assert written["iterations"][1]["verdict"] == "flake"
    assert written["iterations"][1]["retry"]["steps"][0] == {
        "name": "up",
        "status": 0,
        "seconds": 100.0,
        "retries": 2,
    }
    assert written["iterations"][0]["retry"] is None
    text = md_path.read_text(encoding="utf-8")
    assert "**1 passed, 1 flakes, 1 failed** of 3 iterations; 18 transients retried." in text
    assert "| 2 | flake | retry | 0badf00d | up 0 100.0s ↻2, reboot 0 80.0s ↻0, down 0 3.0s ↻0 |" in text
    assert "| up | 2 | 100.0 | 110.0 | 120.0 |" in text


def test_a_second_soak_on_the_same_day_keeps_the_first_report(tmp_path: Path) -> None:
    data = soak.report([], mode="cycles", host="askari", command="soak --cycles 0", started=0)
    first = soak.write_report(data, tmp_path, "2026-12-02")
    second = soak.write_report(data, tmp_path, "2026-12-02")
    assert second[0].name == "2026-12-02-soak-2.json"
    assert first[0].exists()


def test_retries_come_from_the_run_s_own_records(tmp_path: Path) -> None:
    (tmp_path / "summary.json").write_text(json.dumps({"retries": {"boot": 2, "apply": 1}}))
    (tmp_path / "steps.jsonl").write_text(
        json.dumps({"step": "reboot", "retries": 1})
        + "\n"
        + json.dumps({"step": "reboot", "retries": 3})
        + "\n"
    )
    log_text = (
        f"[  1.0s] {transient.RETRY_MARK} boot_id: could not connect to the guest (...); retry 1 of 5\n"
    )
    assert soak.step_retries("cycle", tmp_path, "") == 3
    assert soak.step_retries("reboot", tmp_path, "") == 3  # the newest entry
    assert soak.step_retries("up", tmp_path, log_text) == 1  # up writes no record: its log says
    assert soak.step_retries("cycle", tmp_path / "absent", log_text) == 1


def test_a_flaky_boot_is_run_again_and_every_run_is_removed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ran: list[list[str]] = []
    statuses = iter([0, 3, 0, 0, 0, 0])  # up, reboot (fails), down; then up, reboot, down

    def fake_stream(argv: list[str], *, logfile: Path, **_kwargs: object) -> int:
        ran.append(argv[3:])
        run_id = "0badf00d" if len(ran) <= 3 else "cafe1234"
        logfile.write_text(f"KEPT boma-it-askari-{run_id} for inspection (run {run_id}):\n")
        return next(statuses)

    monkeypatch.setattr(soak.proc, "stream", fake_stream)
    driver = soak.Soak("askari", tmp_path)
    result = driver.iteration(1, cycles=False)
    assert result.verdict == "flake"
    assert [args[0] for args in ran] == ["up", "reboot", "down", "up", "reboot", "down"]
    assert ran[2] == ["down", "--run", "0badf00d"]
    assert ran[5] == ["down", "--run", "cafe1234"]
    assert driver.pending == set()


def test_an_interrupted_boot_is_removed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ran: list[list[str]] = []

    def fake_stream(argv: list[str], *, logfile: Path, **_kwargs: object) -> int:
        ran.append(argv[3:])
        if argv[3] == "up":
            logfile.write_text("run 0badf00d: directory /var/lib/boma/runs/0badf00d\n")
            raise KeyboardInterrupt
        return 0

    monkeypatch.setattr(soak.proc, "stream", fake_stream)
    driver = soak.Soak("askari", tmp_path)
    with pytest.raises(KeyboardInterrupt):
        driver.iteration(1, cycles=False)
    assert ran == [["up", "--host", "askari", "--certs", "internal"], ["down", "--run", "0badf00d"]]
    assert driver.pending == set()
