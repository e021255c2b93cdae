"""Ansible invocation, in one module: one playbook step of a profile against the test VM."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from harness import paths, proc
from harness.config import PlaybookStep
from harness.inventory import RenderedInventory

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


def playbook_argv(inventory: RenderedInventory, step: PlaybookStep, extra_vars: Sequence[Path]) -> list[str]:
    """The exact command for one step. ``--limit`` names the VM: belt and braces with the
    isolated inventory; the connection file comes last so it wins over every overlay."""
    argv = ["ansible-playbook", "-i", str(inventory.path / "hosts.yml"), "--limit", inventory.host]
    for file in (*extra_vars, inventory.connection_vars):
        argv += ["-e", f"@{file}"]
    if step.tags:
        argv += ["--tags", ",".join(step.tags)]
    argv.append(str(paths.PLAYBOOKS_DIR / step.playbook))
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


def timing_env(sink: Path) -> dict[str, str]:
    """Record each task's wall time to ``sink`` (JSON lines) through the harness's callback."""
    return {
        "ANSIBLE_CALLBACK_PLUGINS": str(Path(__file__).parent / "ansible_callbacks"),
        "ANSIBLE_CALLBACKS_ENABLED": "boma_timing",
        "BOMA_TASK_TIMES": str(sink),
    }


@dataclass(frozen=True)
class TaskTime:
    play: str
    task: str
    seconds: float


def task_times(sink: Path) -> list[TaskTime]:
    """The tasks recorded in ``sink``, slowest first; none if nothing was recorded."""
    if not sink.exists():
        return []
    times = []
    for line in sink.read_text(encoding="utf-8").splitlines():
        entry = json.loads(line)
        times.append(TaskTime(entry["play"], entry["task"], float(entry["seconds"])))
    return sorted(times, key=lambda t: t.seconds, reverse=True)


def run_step(
    inventory: RenderedInventory,
    step: PlaybookStep,
    extra_vars: Sequence[Path],
    *,
    logfile: Path,
    fact_cache: Path,
    task_sink: Path,
) -> int:
    """Run one step, output teed to ``logfile`` and task times appended to ``task_sink``;
    returns ansible-playbook's exit status."""
    return proc.stream(
        playbook_argv(inventory, step, extra_vars),
        logfile=logfile,
        env={**ANSIBLE_ENV, **fact_cache_env(fact_cache), **timing_env(task_sink)},
        cwd=paths.REPO,
    )
