"""Ansible callback: every task's wall time, one JSON line per task, for the run's records.

Enabled by the harness only (``harness/ansible.py``), never by the repository's ansible.cfg.
Under TCG a warm apply costs minutes; this says which tasks they go to.
"""

from __future__ import annotations

import json
import os
import time
from typing import Protocol

from ansible.plugins.callback import CallbackBase

SINK_ENV = "BOMA_TASK_TIMES"


class _Named(Protocol):  # Ansible's Play and Task, as far as this callback uses them
    def get_name(self) -> str: ...


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "aggregate"
    CALLBACK_NAME = "boma_timing"
    CALLBACK_NEEDS_ENABLED = True

    def __init__(self) -> None:
        super().__init__()
        self._sink = os.environ.get(SINK_ENV, "")
        self._play = ""
        self._task: tuple[str, float] | None = None

    def _close(self) -> None:
        if self._task is not None and self._sink:
            name, started = self._task
            line = {"play": self._play, "task": name, "seconds": round(time.monotonic() - started, 2)}
            with open(self._sink, "a", encoding="utf-8") as sink:
                sink.write(json.dumps(line) + "\n")
        self._task = None

    def _open(self, task: _Named) -> None:
        self._close()
        self._task = (task.get_name().strip(), time.monotonic())

    def v2_playbook_on_play_start(self, play: _Named) -> None:
        self._close()
        self._play = play.get_name().strip()

    def v2_playbook_on_task_start(self, task: _Named, is_conditional: bool) -> None:
        self._open(task)

    def v2_playbook_on_handler_task_start(self, task: _Named) -> None:
        self._open(task)

    def v2_playbook_on_stats(self, stats: object) -> None:
        self._close()
