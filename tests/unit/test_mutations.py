"""The mutants of tests/e2e/mutations.py are made as intended, in seconds and without a VM:
each edit lands where the cycle will apply it, and the real profile still loads after it."""

from __future__ import annotations

import importlib.util
import shutil
import sys
from pathlib import Path

import pytest
import yaml

from harness import config, paths

sys.path.insert(0, str(paths.REPO / "tests" / "e2e"))  # mutations.py imports revert_fix
spec = importlib.util.spec_from_file_location("mutations", paths.REPO / "tests" / "e2e" / "mutations.py")
assert spec is not None and spec.loader is not None
mutations = importlib.util.module_from_spec(spec)
sys.modules["mutations"] = mutations  # its dataclasses look their module up
spec.loader.exec_module(mutations)
revert_fix = sys.modules["revert_fix"]


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    for part in ("roles", "profiles", "tests/integration", "playbooks", "certs"):
        shutil.copytree(paths.REPO / part, tmp_path / part)
    return tmp_path


def base_task_names(tree: Path) -> list[str]:
    return [t["name"] for t in yaml.safe_load((tree / mutations.BASE_TASKS).read_text(encoding="utf-8"))]


def test_always_changed_adds_one_unguarded_command_to_base(tree: Path) -> None:
    before = base_task_names(tree)
    mutations.always_changed(tree)
    tasks = yaml.safe_load((tree / mutations.BASE_TASKS).read_text(encoding="utf-8"))
    assert [t["name"] for t in tasks] == [*before, mutations.ALWAYS_CHANGED_TASK]
    assert "changed_when" not in tasks[-1]


def test_started_not_enabled_starts_a_unit_it_never_enables_and_drops_askaris_checks(tree: Path) -> None:
    mutations.started_not_enabled(tree)
    tasks = yaml.safe_load((tree / mutations.BASE_TASKS).read_text(encoding="utf-8"))
    start = tasks[-1]["ansible.builtin.systemd_service"]
    assert start == {
        "name": mutations.MUTANT_UNIT,
        "state": "started",
        "enabled": False,
        "daemon_reload": True,
    }
    assert not list((tree / "tests/integration/askari").glob("test_*.py"))
    assert yaml.safe_load((tree / mutations.PROFILE).read_text(encoding="utf-8"))["suite"] == "every_host"


def test_fix_reverted_takes_the_fix_out_and_drops_askaris_checks(tree: Path) -> None:
    mutations.fix_reverted(tree)
    names = [t["name"] for t in yaml.safe_load((tree / revert_fix.TASKS).read_text(encoding="utf-8"))]
    assert revert_fix.FIX_TASK not in names
    assert yaml.safe_load((tree / mutations.PROFILE).read_text(encoding="utf-8"))["suite"] == "every_host"


def test_every_mutant_names_a_phase_the_cycle_has() -> None:
    phases = {"idempotence", "state-diff"}
    assert {m.phase for m in mutations.MUTANTS} <= phases
    assert len({m.name for m in mutations.MUTANTS}) == len(mutations.MUTANTS) == 3


def test_a_mutant_edits_its_tree_and_never_the_repository(tree: Path) -> None:
    real = (paths.REPO / mutations.BASE_TASKS).read_text(encoding="utf-8")
    mutations.started_not_enabled(tree)
    assert (paths.REPO / mutations.BASE_TASKS).read_text(encoding="utf-8") == real
    assert config.load_profile("askari").suite.name == "askari"
    assert list((paths.SUITES_DIR / "askari").glob("test_*.py"))
