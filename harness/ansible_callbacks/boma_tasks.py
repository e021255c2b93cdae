"""Ansible callback: every task's outcome and wall time, one JSON line per task, as data.

Enabled by the harness only (``harness/ansible.py``), never by the repository's ansible.cfg.
Each line holds the play, the role, the task, its seconds and its status (``ok``,
``changed``, ``skipped``, ``failed``, ``unreachable``); a changed task also carries its diff
when Ansible ran with ``--diff`` (hidden for ``no_log`` tasks). The harness reads these lines
for the slowest tasks and for the idempotence check (:mod:`harness.idempotence`).
"""

from __future__ import annotations

import json
import os
import time
from typing import Any, Protocol

from ansible.plugins.callback import CallbackBase

SINK_ENV = "BOMA_TASK_TIMES"
NO_LOG_DIFF = "(diff hidden: the task is no_log)"
# One task's diff is cut here: a changed template's diff belongs in the record, a file's
# whole content does not.
DIFF_LIMIT = 20000


class _Named(Protocol):  # Ansible's Play and Task, as far as this callback uses them
    def get_name(self) -> str: ...


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "aggregate"
    CALLBACK_NAME = "boma_tasks"
    CALLBACK_NEEDS_ENABLED = True

    def __init__(self) -> None:
        super().__init__()
        self._sink = os.environ.get(SINK_ENV, "")
        self._play = ""
        self._task: dict[str, Any] | None = None

    def _close(self) -> None:
        if self._task is not None and self._sink:
            started = self._task.pop("started")
            self._task["seconds"] = round(time.monotonic() - started, 2)
            self._task.setdefault("status", "ok")  # a task with no result for this host (e.g. run_once)
            with open(self._sink, "a", encoding="utf-8") as sink:
                sink.write(json.dumps(self._task) + "\n")
        self._task = None

    def _open(self, task: _Named, handler: bool = False) -> None:
        self._close()
        role = getattr(task, "_role", None)
        self._task = {
            "play": self._play,
            "role": role.get_name() if role is not None else "",
            "task": task.get_name().strip(),
            "handler": handler,
            "started": time.monotonic(),
        }

    def _result(self, result: object, status: str) -> None:
        if self._task is None:
            return
        body: dict[str, Any] = getattr(result, "_result", {}) or {}
        if status == "ok" and body.get("changed"):
            status = "changed"
        self._task["status"] = status
        if status == "changed":
            diff = self._diff_text(result, body)
            if diff:
                self._task["diff"] = diff[:DIFF_LIMIT]

    def _diff_text(self, result: object, body: dict[str, Any]) -> str:
        task = getattr(result, "_task", None)
        if task is not None and getattr(task, "no_log", False):
            return NO_LOG_DIFF
        diffs: list[Any] = []
        if body.get("diff"):
            diffs.append(body["diff"])
        for item in body.get("results") or []:  # a loop: each changed item's own diff
            if isinstance(item, dict) and item.get("changed") and item.get("diff"):
                diffs.append(item["diff"])
        text = []
        for diff in diffs:
            try:
                text.append(self._get_diff(diff))
            except Exception:  # a diff Ansible cannot render is recorded raw
                text.append(json.dumps(diff, default=str)[:DIFF_LIMIT])
        return "".join(text)

    def v2_playbook_on_play_start(self, play: _Named) -> None:
        self._close()
        self._play = play.get_name().strip()

    def v2_playbook_on_task_start(self, task: _Named, is_conditional: bool) -> None:
        self._open(task)

    def v2_playbook_on_handler_task_start(self, task: _Named) -> None:
        self._open(task, handler=True)

    def v2_runner_on_ok(self, result: object) -> None:
        self._result(result, "ok")

    def v2_runner_on_failed(self, result: object, ignore_errors: bool = False) -> None:
        self._result(result, "failed")
        if self._task is not None:
            self._task["ignored"] = bool(ignore_errors)

    def v2_runner_on_skipped(self, result: object) -> None:
        self._result(result, "skipped")

    def v2_runner_on_unreachable(self, result: object) -> None:
        self._result(result, "unreachable")

    def v2_playbook_on_stats(self, stats: object) -> None:
        self._close()
