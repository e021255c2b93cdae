"""The idempotence check: what the callback records of each task, and how the harness judges it.

The callback is exercised by a real ansible-playbook run on the controller (local connection):
the same playbook applied twice, as the cycle does after the reboot.
"""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import pytest

from harness import ansible, config, idempotence, paths, proc
from harness.ansible import TaskRecord
from harness.config import Allowance
from harness.errors import ExitCode

ROLE_TASKS = """\
- name: Write the settings file
  ansible.builtin.copy:
    dest: "{{ target }}"
    content: "setting = {{ setting }}\\n"
    mode: "0600"
- name: Run a command that always reports changed
  ansible.builtin.command: "true"
  when: always_changed | bool
- name: Skipped on purpose
  ansible.builtin.debug:
    msg: never
  when: false
"""

PLAYBOOK = """\
- name: Idempotence play
  hosts: all
  gather_facts: false
  roles:
    - demo
"""


def apply(
    tmp_path: Path, *, setting: str, always_changed: bool = False, diff: bool = True
) -> list[TaskRecord]:
    role = tmp_path / "roles" / "demo" / "tasks"
    role.mkdir(parents=True, exist_ok=True)
    (role / "main.yml").write_text(ROLE_TASKS, encoding="utf-8")
    playbook = tmp_path / "play.yml"
    playbook.write_text(PLAYBOOK, encoding="utf-8")
    sink = tmp_path / f"tasks-{setting}-{always_changed}.jsonl"
    argv = [
        "ansible-playbook",
        "-i",
        "localhost,",
        "-c",
        "local",
        "-e",
        f"ansible_python_interpreter={sys.executable}",
        "-e",
        f"target={tmp_path / 'settings.conf'}",
        "-e",
        f"setting={setting}",
        "-e",
        f"always_changed={always_changed}",
        str(playbook),
    ]
    if diff:
        argv.insert(1, "--diff")
    env = {**ansible.ANSIBLE_ENV, **ansible.timing_env(sink), "ANSIBLE_ROLES_PATH": str(tmp_path / "roles")}
    result = proc.run(argv, env=env, cwd=paths.REPO, quiet=True)
    assert result.returncode == 0, result.stdout + result.stderr
    return ansible.task_records(sink)


def by_name(records: list[TaskRecord]) -> dict[str, TaskRecord]:
    return {r.task.split(" : ", 1)[-1]: r for r in records}


def test_the_callback_records_status_role_and_the_diff_of_a_changed_task(tmp_path: Path) -> None:
    first = by_name(apply(tmp_path, setting="one"))
    written = first["Write the settings file"]
    assert written.status == "changed"
    assert written.role == "demo"
    assert written.play == "Idempotence play"
    assert "setting = one" in written.diff  # --diff: what the task changed, as data
    assert first["Skipped on purpose"].status == "skipped"
    assert first["Run a command that always reports changed"].status == "skipped"

    again = by_name(apply(tmp_path, setting="one"))
    assert again["Write the settings file"].status == "ok"
    assert again["Write the settings file"].diff == ""
    assert idempotence.judge(list(again.values())).idempotent


def test_a_second_apply_that_changes_is_named_with_its_place_and_diff(tmp_path: Path) -> None:
    apply(tmp_path, setting="one")
    records = apply(tmp_path, setting="two", always_changed=True)
    verdict = idempotence.judge(records)
    assert not verdict.idempotent
    names = {r.task for r in verdict.changed}
    assert names == {"demo : Write the settings file", "demo : Run a command that always reports changed"}
    text = idempotence.report(verdict)
    assert "-setting = one" in text and "+setting = two" in text
    with pytest.raises(idempotence.NotIdempotent) as caught:
        idempotence.check(verdict, tmp_path / "idempotence.txt")
    assert caught.value.exit_code == ExitCode.SUT_FAILED
    message = caught.value.render().splitlines()[-1]  # the last line names the tasks
    assert "play 'Idempotence play' / role demo / task 'demo : Write the settings file'" in message
    assert "Run a command that always reports changed" in message
    assert str(tmp_path / "idempotence.txt") in message


def record(task: str, status: str, role: str = "r") -> TaskRecord:
    return TaskRecord(play="p", role=role, task=task, seconds=1.0, status=status)


def test_an_allowed_change_does_not_fail_and_keeps_its_reason() -> None:
    records = [
        record("r : Refresh the cache", "changed"),
        record("r : Other", "ok"),
        record("r : Skip", "skipped"),
    ]
    allow = (Allowance("r : Refresh*", "the cache is refreshed on every run"),)
    verdict = idempotence.judge(records, allow)
    assert verdict.idempotent
    assert verdict.tasks == 3
    assert verdict.as_dict()["allowed"] == [
        "play 'p' / role r / task 'r : Refresh the cache': the cache is refreshed on every run"
    ]
    idempotence.check(verdict, Path("unused"))  # nothing to raise
    assert "allowed  play 'p'" in idempotence.report(verdict)


def test_an_allowance_matches_the_whole_name_only() -> None:
    allow = (Allowance("Refresh", "a reason"),)
    verdict = idempotence.judge([record("r : Refresh the cache", "changed")], allow)
    assert [r.task for r in verdict.changed] == ["r : Refresh the cache"]


def test_many_changed_tasks_are_counted_not_all_named() -> None:
    records = [record(f"r : task {n}", "changed") for n in range(8)]
    with pytest.raises(idempotence.NotIdempotent) as caught:
        idempotence.check(idempotence.judge(records), Path("report.txt"))
    assert caught.value.message.startswith("8 tasks changed")
    assert "and 3 more" in caught.value.message


def test_failed_and_unreachable_tasks_are_not_counted_as_changed() -> None:
    verdict = idempotence.judge([record("a", "failed"), record("b", "unreachable")])
    assert verdict.idempotent  # a failed apply is ApplyFailed's to report, not this check's


PROFILE = """\
description: t
inventory_host: askari
groups: [offsite_hosts]
steps: [{playbook: site.yml}]
suite: askari
"""


def test_a_profile_declares_allowed_changes_each_with_a_reason(tmp_path: Path) -> None:
    (tmp_path / "vm.yml").write_text(
        PROFILE
        + textwrap.dedent("""\
            idempotence_allow:
              - task: "base : Refresh *"
                reason: "refreshed   on every run"
            reboot_diff_allow:
              - path: "units/foo.service"
                reason: "foo starts only after a reboot"
            """),
        encoding="utf-8",
    )
    profile = config.load_profile("vm", directory=tmp_path)
    assert profile.idempotence_allow == (Allowance("base : Refresh *", "refreshed on every run"),)
    assert profile.reboot_diff_allow == (Allowance("units/foo.service", "foo starts only after a reboot"),)


@pytest.mark.parametrize(
    "block",
    [
        "idempotence_allow: {task: x, reason: y}",
        "idempotence_allow:\n  - task: x",
        "idempotence_allow:\n  - {task: x, reason: ''}",
        "idempotence_allow:\n  - {path: x, reason: y}",
        "reboot_diff_allow:\n  - {task: x, reason: y}",
        "reboot_diff_allow:\n  - {path: x, reason: y, extra: z}",
    ],
)
def test_an_allowance_without_its_reason_or_in_the_wrong_shape_is_bad_input(
    tmp_path: Path, block: str
) -> None:
    (tmp_path / "vm.yml").write_text(PROFILE + block + "\n", encoding="utf-8")
    with pytest.raises(config.BadInput) as caught:
        config.load_profile("vm", directory=tmp_path)
    assert "allow" in caught.value.message
