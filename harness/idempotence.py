"""The idempotence check: the profile's steps, applied again after the real reboot, change
nothing.

Molecule checks idempotence in a container, before any reboot. Here it runs on the rebooted
guest, with its real kernel, firewall and Docker: a task that changes again is either not
idempotent or repairing something the reboot broke, and both are the roles' fault. A profile
may name tasks that legitimately change on every run (``idempotence_allow``), each with its
reason. Pure: it judges task records (:class:`harness.ansible.TaskRecord`), it runs nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from fnmatch import fnmatchcase
from pathlib import Path

from harness.ansible import TaskRecord
from harness.config import Allowance
from harness.errors import VerificationFailed

# How many changed tasks the one-line failure names before it says "and N more".
NAMED_IN_MESSAGE = 5


class NotIdempotent(VerificationFailed):
    """A task changed when the steps were applied again after the reboot."""

    label = "FAILED (idempotence after the reboot)"


@dataclass(frozen=True)
class Verdict:
    tasks: int  # tasks that ran
    changed: tuple[TaskRecord, ...]  # changed, not allowed: each one fails the cycle
    allowed: tuple[tuple[TaskRecord, Allowance], ...]  # changed, and the profile says why

    @property
    def idempotent(self) -> bool:
        return not self.changed

    def as_dict(self) -> dict[str, object]:
        """For the run's summary."""
        return {
            "tasks": self.tasks,
            "changed": [t.where for t in self.changed],
            "allowed": [f"{t.where}: {a.reason}" for t, a in self.allowed],
        }


def allowance_for(record: TaskRecord, allow: Sequence[Allowance]) -> Allowance | None:
    """The allowance whose pattern matches the task's name as Ansible prints it
    (``role : task`` inside a role), or ``None``."""
    return next((a for a in allow if fnmatchcase(record.task, a.pattern)), None)


def judge(records: Sequence[TaskRecord], allow: Sequence[Allowance] = ()) -> Verdict:
    changed: list[TaskRecord] = []
    allowed: list[tuple[TaskRecord, Allowance]] = []
    for record in records:
        if record.status != "changed":
            continue
        if (allowance := allowance_for(record, allow)) is not None:
            allowed.append((record, allowance))
        else:
            changed.append(record)
    return Verdict(tasks=len(records), changed=tuple(changed), allowed=tuple(allowed))


def report(verdict: Verdict) -> str:
    """The readable record: every changed task with its place and its diff."""
    lines = [
        f"Idempotence after the reboot: {verdict.tasks} tasks ran, "
        f"{len(verdict.changed)} changed unexpectedly, {len(verdict.allowed)} changed as the profile allows.",
        "",
    ]
    for record in verdict.changed:
        lines += [
            f"CHANGED  {record.where}",
            _indented(record.diff or "(no diff: the module reports none)"),
            "",
        ]
    for record, allowance in verdict.allowed:
        lines += [f"allowed  {record.where}: {allowance.reason}", ""]
    return "\n".join(lines).rstrip() + "\n"


def _indented(text: str) -> str:
    return "\n".join(f"    {line}" for line in text.rstrip().splitlines())


def check(verdict: Verdict, report_file: Path) -> None:
    """Raise :class:`NotIdempotent` naming the changed tasks (their diffs are in
    ``report_file``); return when nothing changed that the profile does not allow."""
    if verdict.idempotent:
        return
    named = [t.where for t in verdict.changed[:NAMED_IN_MESSAGE]]
    more = len(verdict.changed) - len(named)
    names = "; ".join(named) + (f"; and {more} more" if more else "")
    count = len(verdict.changed)
    raise NotIdempotent(
        f"{count} {'task' if count == 1 else 'tasks'} changed when the steps were applied again "
        f"after the reboot (diffs: {report_file}): {names}"
    )
