"""Ansible invocation, in one module: one playbook step of a profile against the test VM.

ansible-playbook's exit status says who broke (see :func:`harness.transient.classify_playbook`):
a failed task is the roles' fault (:class:`ApplyFailed`), an unreachable host is a transient
(retried), anything else is ansible-playbook unable to run (a :class:`HarnessError`).
"""

from __future__ import annotations

import importlib.util
import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from harness import paths, proc, speed, transient
from harness.config import PlaybookStep
from harness.errors import BomaError, ExitCode, HarnessError
from harness.inventory import RenderedInventory
from harness.transient import Kind

ANSIBLE_ENV = {
    "ANSIBLE_CONFIG": str(paths.REPO / "ansible.cfg"),
    "ANSIBLE_NOCOLOR": "1",
    "ANSIBLE_FORCE_COLOR": "0",
    "ANSIBLE_HOST_KEY_CHECKING": "False",
    # Pipelining saves SSH round trips per task, which matters under TCG; Debian's sudo does
    # not require a tty.
    "ANSIBLE_PIPELINING": "True",
    "ANSIBLE_RETRY_FILES_ENABLED": "False",
    "ANSIBLE_DISPLAY_SKIPPED_HOSTS": "False",
}
# An unreachable host is retried this often, this far apart: longer than ssh's keepalive
# (ServerAliveInterval 5 × ServerAliveCountMax 3) takes to end a shared connection that died
# with the guest, so a retry opens a fresh one instead of reusing the dead master.
ANSIBLE_RETRIES = 2
ANSIBLE_RETRY_INTERVAL = 20.0
# What a status means when it is not a verdict (2 then is argparse's usage error).
EXIT_MEANING = {
    1: "an Ansible error",
    2: "a bad command line",
    4: "a parse error",
    5: "a bad or incomplete option",
    99: "interrupted",
    250: "an unexpected exception in Ansible",
}
UNREACHABLE_RESULT = re.compile(r"UNREACHABLE! => (\{.*\})\s*$")
TASK_HEADER = re.compile(r"^(TASK|RUNNING HANDLER) \[(?P<name>.*)\]")
TASK_FAILED = re.compile(r"^(fatal|failed): \[")
# Ansible's own error lines: "[ERROR]: ..." (2.19), "ERROR! ..." (before), argparse's usage error.
ERROR_LINE = re.compile(r"^(\[ERROR\]:|ERROR[!:]|ansible-playbook: error:)")


class ApplyFailed(BomaError):
    """A playbook step failed against the VM: the roles are wrong, not the harness."""

    exit_code = ExitCode.SUT_FAILED
    label = "FAILED (playbook apply)"


# One playbook step's bound: a cold apply on the slowest day seen took 1161 s; twice that
# plus margin still ends a hung step long before the run's global deadline.
STEP_TIMEOUT = 2700.0


@dataclass(frozen=True)
class Batch:
    """Playbook steps that run in one ``ansible-playbook`` process, in order, with one set of
    tags: one step each, or the consecutive steps with equal tags (the ``one_process`` lever)."""

    playbooks: tuple[str, ...]
    tags: tuple[str, ...] = ()

    @property
    def name(self) -> str:
        return " + ".join(self.playbooks) + (f" --tags {','.join(self.tags)}" if self.tags else "")


def as_batch(step: PlaybookStep | Batch) -> Batch:
    return step if isinstance(step, Batch) else Batch((step.playbook,), step.tags)


def batches(steps: Sequence[PlaybookStep], *, one_process: bool) -> list[Batch]:
    """The processes that apply ``steps``: one per step, or (``one_process``) one per run of
    consecutive steps with the same tags, since one command line carries one ``--tags``."""
    grouped: list[Batch] = []
    for step in steps:
        if one_process and grouped and grouped[-1].tags == step.tags:
            grouped[-1] = Batch((*grouped[-1].playbooks, step.playbook), step.tags)
        else:
            grouped.append(as_batch(step))
    return grouped


def playbook_argv(
    inventory: RenderedInventory,
    step: PlaybookStep | Batch,
    extra_vars: Sequence[Path],
    *,
    diff: bool = False,
) -> list[str]:
    """The exact command for one step (or batch of steps). ``--limit`` names the VM: belt and
    braces with the isolated inventory; the connection file comes last so it wins over every
    overlay. ``diff`` adds ``--diff``: a changed task then records what it changed."""
    batch = as_batch(step)
    argv = ["ansible-playbook", "-i", str(inventory.path / "hosts.yml"), "--limit", inventory.host]
    if diff:
        argv.append("--diff")
    for file in (*extra_vars, inventory.connection_vars):
        argv += ["-e", f"@{file}"]
    if batch.tags:
        argv += ["--tags", ",".join(batch.tags)]
    argv += [str(paths.PLAYBOOKS_DIR / playbook) for playbook in batch.playbooks]
    return argv


def fact_cache_env(cache: Path) -> dict[str, str]:
    """Gather facts once per apply, not once per play: each gathering costs seconds under TCG.
    The caller empties ``cache`` at the start of every apply, so no fact outlives a reboot."""
    return {
        "ANSIBLE_GATHERING": "smart",
        "ANSIBLE_CACHE_PLUGIN": "ansible.builtin.jsonfile",
        "ANSIBLE_CACHE_PLUGIN_CONNECTION": str(cache),
        "ANSIBLE_CACHE_PLUGIN_TIMEOUT": "86400",
    }


MITOGEN_STRATEGY = "mitogen_linear"


def mitogen_strategies() -> Path:
    """Where the installed Mitogen keeps its strategy plugins (PyPI ``mitogen``)."""
    found = importlib.util.find_spec("ansible_mitogen")
    if found is None or found.origin is None:
        raise HarnessError(
            "the fast speed preset needs Mitogen, which is not installed",
            hint="pip install -r requirements.txt (it lists mitogen), or --speed default",
        )
    return Path(found.origin).parent / "plugins" / "strategy"


def speed_env(levers: speed.Levers) -> dict[str, str]:
    """What the speed levers change in ansible-playbook's environment (harness.speed).

    Without compression, ``ssh_args`` says so first: ssh keeps the first value it is given, and
    Ansible's default ``ssh_args`` (``-C -o ControlMaster=auto -o ControlPersist=60s``) would
    otherwise come before the connection's own multiplexing options."""
    env = {}
    if not levers.ssh_compression:
        env["ANSIBLE_SSH_ARGS"] = "-o Compression=no"
    if levers.mitogen:
        env["ANSIBLE_STRATEGY_PLUGINS"] = str(mitogen_strategies())
        env["ANSIBLE_STRATEGY"] = MITOGEN_STRATEGY
    return env


def timing_env(sink: Path) -> dict[str, str]:
    """Record each task's outcome and wall time to ``sink`` (JSON lines) through the
    harness's callback (``harness/ansible_callbacks/boma_tasks.py``)."""
    return {
        "ANSIBLE_CALLBACK_PLUGINS": str(Path(__file__).parent / "ansible_callbacks"),
        "ANSIBLE_CALLBACKS_ENABLED": "boma_tasks",
        "BOMA_TASK_TIMES": str(sink),
    }


@dataclass(frozen=True)
class TaskRecord:
    """One task as the callback saw it run against the VM."""

    play: str
    role: str
    task: str
    seconds: float
    status: str  # ok | changed | skipped | failed | unreachable
    handler: bool = False
    diff: str = ""

    @property
    def where(self) -> str:
        """The task's place, for a reader: play, role and task name."""
        role = f" / role {self.role}" if self.role else ""
        return f"play {self.play!r}{role} / task {self.task!r}"


def task_records(sink: Path) -> list[TaskRecord]:
    """The tasks recorded in ``sink``, in the order they ran; none if nothing was recorded."""
    if not sink.exists():
        return []
    records = []
    for line in sink.read_text(encoding="utf-8").splitlines():
        entry = json.loads(line)
        records.append(
            TaskRecord(
                play=entry["play"],
                role=entry.get("role", ""),
                task=entry["task"],
                seconds=float(entry["seconds"]),
                status=entry.get("status", "ok"),
                handler=bool(entry.get("handler", False)),
                diff=entry.get("diff", ""),
            )
        )
    return records


def task_times(sink: Path) -> list[TaskRecord]:
    """The tasks recorded in ``sink``, slowest first."""
    return sorted(task_records(sink), key=lambda t: t.seconds, reverse=True)


def run_step(
    inventory: RenderedInventory,
    step: PlaybookStep | Batch,
    extra_vars: Sequence[Path],
    *,
    logfile: Path,
    fact_cache: Path,
    task_sink: Path,
    diff: bool = False,
    levers: speed.Levers = speed.DEFAULT,
) -> int:
    """Run one step, output teed to ``logfile`` and task records appended to ``task_sink``;
    returns ansible-playbook's exit status."""
    return proc.stream(
        playbook_argv(inventory, step, extra_vars, diff=diff),
        logfile=logfile,
        env={**ANSIBLE_ENV, **fact_cache_env(fact_cache), **timing_env(task_sink), **speed_env(levers)},
        cwd=paths.REPO,
        timeout=STEP_TIMEOUT,
    )


def run_step_checked(
    inventory: RenderedInventory,
    step: PlaybookStep | Batch,
    extra_vars: Sequence[Path],
    *,
    logfile: Path,
    fact_cache: Path,
    task_sink: Path,
    diff: bool = False,
    alive: Callable[[], None] | None = None,
    levers: speed.Levers = speed.DEFAULT,
) -> None:
    """Run one step and judge it: return if it applied, raise :class:`ApplyFailed` if a task
    failed, retry it (at most :data:`ANSIBLE_RETRIES` times, logged and counted) if the host was
    unreachable, raise a :class:`HarnessError` naming the cause otherwise.

    ``alive`` is asked before an unreachable host is retried: it raises (a
    :class:`harness.liveness.GuestDead`) when the guest died, so a panicked kernel is named at
    once instead of after every retry has timed out as "could not connect".

    The judgement reads what this run appended to ``logfile``. A retried step runs whole again
    (the roles are idempotent), so ``task_sink`` holds the tasks of every attempt.
    """
    name = as_batch(step).name

    def attempt() -> None:
        offset = logfile.stat().st_size if logfile.exists() else 0
        status = run_step(
            inventory,
            step,
            extra_vars,
            logfile=logfile,
            fact_cache=fact_cache,
            task_sink=task_sink,
            diff=diff,
            levers=levers,
        )
        output = appended(logfile, offset)
        kind = transient.classify_playbook(status, output)
        if kind is Kind.OK:
            return
        if kind is Kind.UNREACHABLE:
            if alive is not None:
                alive()
            raise transient.Transient(kind, unreachable_reason(output))
        if kind is Kind.VERDICT:
            raise ApplyFailed(
                f"{name} failed against {inventory.host} (exit status {status}): {failed_task(output)}; "
                f"see {logfile}"
            )
        if kind is Kind.REFUSED:
            raise HarnessError(
                f"Ansible could not log in to {inventory.host} for {name}: {unreachable_reason(output)}",
                hint=f"the run's key or the guest's sshd is wrong, not the roles; see {logfile}",
            )
        raise HarnessError(
            f"ansible-playbook could not run {name} (exit status {status}, "
            f"{EXIT_MEANING.get(status, 'not a status Ansible documents')}): {error_line(output)}",
            hint=f"see {logfile}; the guest was not judged",
        )

    transient.retrying(
        attempt,
        what=f"playbook {name}",
        retries=ANSIBLE_RETRIES,
        interval=ANSIBLE_RETRY_INTERVAL,
        attempt_timeout=STEP_TIMEOUT,
    )


def appended(logfile: Path, offset: int) -> str:
    """What was written to ``logfile`` past its first ``offset`` bytes."""
    try:
        with logfile.open("rb") as log:
            log.seek(offset)
            return log.read().decode("utf-8", errors="replace")
    except FileNotFoundError:
        return ""


def unreachable_reason(output: str) -> str:
    """Ansible's own message for the unreachable host (ssh's stderr, as Ansible saw it)."""
    for line in reversed(output.splitlines()):
        if found := UNREACHABLE_RESULT.search(line):
            return (result_message(found.group(1)) or line.strip())[:300]
    return transient.tail(output, 1)[:300]


def failed_task(output: str) -> str:
    """The task that failed and its message, as ``task [name]: message``."""
    task = "?"
    for line in output.splitlines():
        if header := TASK_HEADER.match(line):
            task = header.group("name")
        elif TASK_FAILED.match(line):
            result = line.split("=>", 1)[-1].strip()
            message = result_message(result) or result[:300]
            if transient.first_match(transient.APT_LOCKED, line):
                message += " (another process in the guest held the apt/dpkg lock)"
            return f"task [{task}]: {message}"
    return f"no failed task in the output (last: {transient.tail(output, 1)[:200] or 'nothing'})"


def result_message(result: str) -> str | None:
    """A task result Ansible printed as one line of JSON, in short: its ``msg``, and the last
    line of the command's stderr when there is one."""
    try:
        parsed = json.loads(result)
    except ValueError:
        return None
    if not isinstance(parsed, dict) or not parsed.get("msg"):
        return None
    message = str(parsed["msg"])[:200]
    if stderr := transient.tail(str(parsed.get("stderr") or ""), 1):
        message += f": {stderr[:200]}"
    return message


def error_line(output: str) -> str:
    """Ansible's own error line (with the line after it: the file, or the rest of the sentence),
    or else the last line of its output."""
    lines = output.splitlines()
    for at, line in enumerate(lines):
        if ERROR_LINE.match(line):
            following = lines[at + 1].strip() if at + 1 < len(lines) else ""
            return (line.strip() + (f" — {following}" if following else ""))[:400]
    return transient.tail(output, 1)[:300] or "(no output)"
