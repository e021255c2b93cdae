"""A run's state on disk (``<runs_dir>/<run_id>/state.json``), so single steps can find a kept VM."""

from __future__ import annotations

import json
import secrets
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from harness import paths
from harness.errors import BadInput
from harness.virt import NAME_PREFIX

STATE_FILE = "state.json"


def new_run_id() -> str:
    return secrets.token_hex(4)


@dataclass
class RunState:
    run_id: str
    host: str
    tier: str
    domain: str
    uri: str
    accel: str
    ssh_port: int
    ports: dict[str, int]  # guest port (as text, JSON keys are strings) → loopback host port
    run_dir: str
    artifacts: str
    golden: str
    caddy_archive: str
    boot_ids: list[str] = field(default_factory=list)
    overrides: list[str] = field(default_factory=list)
    # Services the run started on the controller (the acme-local tier's Pebble).
    pebble_pids: list[int] = field(default_factory=list)
    pebble_dir: str = ""
    created: float = field(default_factory=time.time)

    @property
    def dir(self) -> Path:
        return Path(self.run_dir)

    @property
    def artifacts_dir(self) -> Path:
        return Path(self.artifacts)

    @property
    def key(self) -> Path:
        return self.dir / "id_ed25519"

    @property
    def console_log(self) -> Path:
        return self.dir / "console.log"

    def host_port(self, guest_port: int) -> int:
        return self.ports[str(guest_port)]

    def save(self) -> None:
        tmp = self.dir / (STATE_FILE + ".tmp")
        tmp.write_text(json.dumps(asdict(self), indent=2) + "\n", encoding="utf-8")
        tmp.replace(self.dir / STATE_FILE)


def domain_name(host: str, run_id: str) -> str:
    return f"{NAME_PREFIX}{host}-{run_id}"


def load(path: Path) -> RunState:
    data = json.loads(path.read_text(encoding="utf-8"))
    return RunState(**data)


def all_runs() -> list[RunState]:
    root = paths.runs_dir()
    found = []
    for file in sorted(root.glob(f"*/{STATE_FILE}")):
        try:
            found.append(load(file))
        except (OSError, ValueError, TypeError):
            continue  # a half-written state is pruned by `prune`, not trusted here
    return sorted(found, key=lambda r: r.created)


def find(run_id: str | None) -> RunState:
    """The run named by ``run_id`` (or an unambiguous prefix), or the newest run."""
    runs = all_runs()
    if not runs:
        raise BadInput("no kept run on this machine", hint="start one: python -m harness up --host HOST")
    if run_id is None:
        return runs[-1]
    matches = [r for r in runs if r.run_id.startswith(run_id) or r.domain == run_id]
    if len(matches) != 1:
        known = ", ".join(f"{r.run_id} ({r.domain})" for r in runs)
        raise BadInput(f"no single run matches {run_id!r}", hint=f"kept runs: {known}")
    return matches[0]
