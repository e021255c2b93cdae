"""A run's state on disk: saved and loaded whole, found by id prefix or domain, newest by default."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from harness import owner, state
from harness.errors import BadInput
from harness.state import MachineState, RunState


@pytest.fixture
def runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "runs"
    root.mkdir()
    monkeypatch.setenv("BOMA_RUNS_DIR", str(root))
    return root


def make(runs: Path, run_id: str, created: float) -> RunState:
    run_dir = runs / run_id
    (run_dir / "askari").mkdir(parents=True)
    run = RunState(
        run_id=run_id, label="askari", tier="internal", uri="test:///default", run_dir=str(run_dir),
        artifacts=str(runs.parent / "artifacts" / run_id), owner=owner.current().to_json(), created=created,
        machines=[MachineState(name="askari", host="askari", domain=state.domain_name("askari", run_id),
                               accel="tcg", boot="direct", ssh_port=40022, ports={"443": 40443, "80": 40080},
                               golden="/cache/golden.qcow2", artifacts=str(runs.parent / "artifacts"))],
    )
    run.save()
    return run


def test_new_run_ids_are_short_hex_and_differ() -> None:
    ids = {state.new_run_id() for _ in range(20)}
    assert len(ids) == 20
    assert all(len(i) == 8 and int(i, 16) >= 0 for i in ids)


def test_domain_name_carries_the_test_prefix() -> None:
    assert state.domain_name("askari", "0a1b2c3d") == "boma-it-askari-0a1b2c3d"


def test_save_and_load_round_trip(runs: Path) -> None:
    run = make(runs, "0a1b2c3d", 100.0)
    run.machine().boot_ids.extend(["first", "second"])
    run.status = state.Status.KEPT
    run.save()
    assert not (runs / "0a1b2c3d" / "state.json.tmp").exists()
    loaded = state.load(runs / "0a1b2c3d" / "state.json")
    assert loaded == run
    assert loaded.status is state.Status.KEPT
    assert loaded.machine("askari").host_port(443) == 40443
    assert loaded.lock_file == runs / "0a1b2c3d" / "run.lock"
    # The machine's own view, which its verify suite reads, follows the state.
    view = json.loads((runs / "0a1b2c3d" / "askari" / "machine.json").read_text(encoding="utf-8"))
    assert (view["host"], view["tier"], view["ports"], view["boot_ids"]) == (
        "askari", "internal", {"443": 40443, "80": 40080}, ["first", "second"])
    assert stat.S_IMODE((runs / "0a1b2c3d" / "state.json").stat().st_mode) == 0o600


def test_a_machine_name_the_run_lacks_is_bad_input(runs: Path) -> None:
    with pytest.raises(BadInput, match="has no machine 'peer'"):
        make(runs, "0a1b2c3e", 100.0).machine("peer")


def test_find_newest_by_default(runs: Path) -> None:
    make(runs, "aaaa0001", 300.0)
    make(runs, "bbbb0002", 100.0)
    make(runs, "cccc0003", 200.0)
    assert state.find(None).run_id == "aaaa0001"


def test_find_by_prefix_or_full_id_or_domain(runs: Path) -> None:
    make(runs, "aaaa0001", 100.0)
    make(runs, "bbbb0002", 200.0)
    assert state.find("aa").run_id == "aaaa0001"
    assert state.find("bbbb0002").run_id == "bbbb0002"
    assert state.find("boma-it-askari-aaaa0001").run_id == "aaaa0001"


def test_find_with_no_runs_is_bad_input(runs: Path) -> None:
    with pytest.raises(BadInput, match="no kept run") as caught:
        state.find(None)
    assert caught.value.exit_code == 2


def test_find_ambiguous_prefix_is_bad_input(runs: Path) -> None:
    make(runs, "abcd0001", 100.0)
    make(runs, "abcd0002", 200.0)
    with pytest.raises(BadInput, match="no single run matches 'abcd'") as caught:
        state.find("abcd")
    assert caught.value.hint is not None
    assert "abcd0001" in caught.value.hint
    assert "abcd0002" in caught.value.hint


def test_find_no_match_is_bad_input(runs: Path) -> None:
    make(runs, "abcd0001", 100.0)
    with pytest.raises(BadInput, match="no single run matches 'ffff'"):
        state.find("ffff")


def test_half_written_state_is_skipped(runs: Path) -> None:
    make(runs, "abcd0001", 100.0)
    (runs / "broken").mkdir()
    (runs / "broken" / "state.json").write_text('{"run_id": "broken"', encoding="utf-8")
    (runs / "other").mkdir()
    (runs / "other" / "state.json").write_text('{"run_id": "other"}', encoding="utf-8")
    assert [r.run_id for r in state.all_runs()] == ["abcd0001"]
