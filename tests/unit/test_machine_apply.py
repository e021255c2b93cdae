"""One apply may run under other apply levers than its machine's preset (harness.speed.for_apply):
the e2e's GREEN half applies under Mitogen on a machine booted as a fresh host."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from harness import machine, speed
from harness.ansible import Batch
from harness.machine import Machine
from tests.unit.test_emulator_fault import a_machine as emulator_machine

FRESH_HOST = replace(speed.DEFAULT, package_layer=False)


def a_machine(tmp_path: Path, levers: speed.Levers) -> Machine:
    vm = emulator_machine(tmp_path, "tcg")
    vm.run.levers = levers.as_json()
    (tmp_path / "art").mkdir()
    return vm


@pytest.fixture
def steps_run(monkeypatch: pytest.MonkeyPatch) -> list[tuple[Batch, speed.Levers]]:
    """Each ansible-playbook process the apply would start, with the levers it was given."""
    seen: list[tuple[Batch, speed.Levers]] = []

    def run_step_checked(_inventory: object, batch: Batch, _vars: object, **kwargs: Any) -> None:
        seen.append((batch, kwargs["levers"]))

    monkeypatch.setattr(machine.ansible, "run_step_checked", run_step_checked)
    monkeypatch.setattr(machine.inventory, "assert_isolated", lambda *_: None)
    monkeypatch.setattr(Machine, "extra_vars", lambda self, extra=(): [])
    monkeypatch.setattr(Machine, "_save", lambda self: None)
    return seen


def test_an_apply_without_levers_runs_as_its_machine_was_made(tmp_path: Path, steps_run: list) -> None:
    vm = a_machine(tmp_path, FRESH_HOST)
    vm.apply()
    assert len(steps_run) == len(vm.profile.steps) > 1  # one process per playbook
    assert {levers for _, levers in steps_run} == {FRESH_HOST}


def test_an_apply_under_the_fast_levers_uses_mitogen_and_one_process(tmp_path: Path, steps_run: list) -> None:
    vm = a_machine(tmp_path, FRESH_HOST)
    vm.apply(levers=speed.FAST)
    assert len(steps_run) == 1, [batch for batch, _ in steps_run]  # askari's two playbooks, one process
    (batch, levers), = steps_run
    assert len(batch.playbooks) == len(vm.profile.steps)
    assert levers == replace(FRESH_HOST, mitogen=True, one_process=True)
    assert vm.levers == FRESH_HOST  # the machine's own levers are unchanged for the next step
