"""A run's state on disk (``<runs_dir>/<run_id>/state.json``): what a later command, or the
reaper after a crash, needs to find, use or remove everything the run made.

A run holds one or more machines. Each machine also gets a small view of its own
(``<run_dir>/<machine>/machine.json``) that its verify suite reads (``BOMA_RUN_STATE``).
"""

from __future__ import annotations

import json
import os
import secrets
import threading
import time
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from harness import paths
from harness.errors import BadInput
from harness.owner import Owner
from harness.virt import NAME_PREFIX

STATE_FILE = "state.json"
MACHINE_VIEW = "machine.json"
RUN_LOCK = "run.lock"
PRIVATE_FILE = 0o600
_SAVING = threading.Lock()


def new_run_id() -> str:
    return secrets.token_hex(4)


class Status(StrEnum):
    """Where a run is in its life; the reaper reads it after a crash."""

    STARTING = "starting"  # admitted: files, images, domains being made
    RUNNING = "running"  # its machines are up and in use
    KEPT = "kept"  # left up on purpose (`up`, --keep, or a failure kept for inspection)
    TEARING_DOWN = "tearing-down"  # being removed; a killed teardown is finished by the reaper


@dataclass
class MachineState:
    name: str  # the machine's name within its run (a single-host run: the profile's name)
    host: str  # its profile
    domain: str
    accel: str
    boot: str
    ssh_port: int
    ports: dict[str, int]  # guest port (as text, JSON keys are strings) → loopback host port
    golden: str
    artifacts: str
    boot_ids: list[str] = field(default_factory=list)
    network: str = "open"  # harness.guestnet: "hermetic" (passt and the relay) or "open" (user-mode)
    relay_pid: int = 0  # the hermetic network's relay, which also holds the forwards
    egress: dict[str, int] = field(default_factory=dict)  # what a hermetic guest may reach: name → port
    lans: dict[str, str] = field(default_factory=dict)  # a scenario's networks: name → address/prefix

    def host_port(self, guest_port: int) -> int:
        return self.ports[str(guest_port)]


@dataclass
class RunState:
    run_id: str
    label: str  # what the run is of: the host profile, or a scenario
    tier: str
    uri: str
    run_dir: str
    artifacts: str
    owner: dict[str, Any]
    status: Status = Status.STARTING
    step: str = ""  # the last step begun, for `list`
    outcome: str = ""  # the last verdict: pass, fail, error, interrupted
    machines: list[MachineState] = field(default_factory=list)
    overrides: list[str] = field(default_factory=list)
    caddy_archive: str = ""
    # Services the run started on the controller (the acme-local tier's Pebble).
    pebble_pids: list[int] = field(default_factory=list)
    pebble_dir: str = ""
    cache_pid: int = 0  # the run's apt-cacher-ng (harness.aptcache), for a hermetic network
    cache_port: int = 0
    cache_log: str = ""  # its transfer log's folder, in the run's artifacts
    created: float = field(default_factory=time.time)
    # The speed levers the run was made with (harness.speed): later single steps use the same.
    levers: dict[str, bool] = field(default_factory=dict)
    lan_pids: dict[str, int] = field(default_factory=dict)  # a scenario's network hubs: name → pid

    @property
    def dir(self) -> Path:
        return Path(self.run_dir)

    @property
    def artifacts_dir(self) -> Path:
        return Path(self.artifacts)

    @property
    def lock_file(self) -> Path:
        return self.dir / RUN_LOCK

    @property
    def run_owner(self) -> Owner:
        return Owner.from_json(self.owner)

    def machine(self, name: str | None = None) -> MachineState:
        """The machine called ``name``, or the run's only machine."""
        if name is None and len(self.machines) == 1:
            return self.machines[0]
        for machine in self.machines:
            if machine.name == name:
                return machine
        known = ", ".join(m.name for m in self.machines) or "(none yet)"
        raise BadInput(f"run {self.run_id} has no machine {name!r}", hint=f"its machines: {known}")

    def machine_dir(self, name: str) -> Path:
        return self.dir / name

    def save(self) -> None:
        """Write atomically, readable by the owner only (it names the run's key and files);
        one writer at a time (a scenario's machines boot in threads of one process)."""
        with _SAVING:
            self._save()

    def _save(self) -> None:
        _write_private(self.dir / STATE_FILE, json.dumps(asdict(self), indent=2) + "\n")
        for machine in self.machines:
            if self.machine_dir(machine.name).is_dir():
                view = {"run_id": self.run_id, "tier": self.tier, **asdict(machine)}
                _write_private(self.machine_dir(machine.name) / MACHINE_VIEW, json.dumps(view, indent=2))


def write_private(path: Path, text: str) -> None:
    """Write ``path`` atomically, mode 0600."""
    _write_private(path, text)


def _write_private(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, PRIVATE_FILE)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)
    tmp.replace(path)


def domain_name(host: str, run_id: str) -> str:
    return f"{NAME_PREFIX}{host}-{run_id}"


def load(path: Path) -> RunState:
    data = json.loads(path.read_text(encoding="utf-8"))
    machines = [MachineState(**m) for m in data.pop("machines", [])]
    status = Status(data.pop("status", Status.STARTING))
    return RunState(**data, machines=machines, status=status)


def run_dirs() -> list[Path]:
    """Every run directory on disk, readable state or not."""
    root = paths.runs_dir()
    return sorted(p for p in root.iterdir() if p.is_dir()) if root.is_dir() else []


def all_runs() -> list[RunState]:
    found = []
    for directory in run_dirs():
        try:
            found.append(load(directory / STATE_FILE))
        except (OSError, ValueError, TypeError, KeyError):
            continue  # no state or a half-written one: `prune` removes such a directory
    return sorted(found, key=lambda r: r.created)


def find(run_id: str | None) -> RunState:
    """The run named by ``run_id`` (or an unambiguous prefix, or a domain name), or the newest."""
    runs = all_runs()
    if not runs:
        raise BadInput("no kept run on this machine", hint="start one: python -m harness up --host HOST")
    if run_id is None:
        return runs[-1]
    matches = [r for r in runs if r.run_id.startswith(run_id) or any(m.domain == run_id for m in r.machines)]
    if len(matches) != 1:
        known = ", ".join(f"{r.run_id} ({r.label})" for r in runs)
        raise BadInput(f"no single run matches {run_id!r}", hint=f"kept runs: {known}")
    return matches[0]
