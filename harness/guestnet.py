"""The guest's network: hermetic unless its tier needs the internet (docs/decisions/026).

**Hermetic** (every tier that does not need the internet): the machine's network is passt in a
namespace of its own, reached by QEMU through a unix socket, with :mod:`harness.relay` as the
only way in or out. The guest reaches exactly the run's declared egress ports, as its
gateway's (``10.0.2.2:PORT`` → the controller's ``127.0.0.1:PORT``): the package cache and,
for acme-local, Pebble. Nothing else answers, not even the controller's other loopback
services: a connection to anything else is refused or unreachable inside the namespace.

**Open** (the Let's Encrypt tiers): QEMU's user-mode network as before, loopback forwards in,
the controller's whole network out. The summary says which, and docs/security records why.

The guest sees the same addresses either way (``10.0.2.15/24``, gateway ``10.0.2.2``), so the
roles, overlays and checks do not care which network they are on.
"""

from __future__ import annotations

import json
import os
import pwd
import sys
from dataclasses import dataclass
from pathlib import Path

from harness import config, log, proc
from harness.errors import HarnessError
from harness.poll import NotYet, wait_until
from harness.private import let_traverse
from harness.relay import GATEWAY, READY_NAME
from harness.virt import Forward

PACKAGE_CACHE = "package cache"
PEBBLE = "Pebble"
HERMETIC = "hermetic"
OPEN = "open"
READY_TIMEOUT = 60.0
TOOLS = ("passt", "ip", "apt-cacher-ng", "flock")  # on the controller, for a hermetic run
RELAY_PROGRAM = Path(sys.executable).name  # what /proc/PID/cmdline's first word says


@dataclass(frozen=True)
class Egress:
    """One destination the guest may reach: ``10.0.2.2:port`` is the controller's loopback port."""

    name: str
    port: int

    def describe(self) -> str:
        return f"{self.name} ({GATEWAY}:{self.port} → 127.0.0.1:{self.port})"


@dataclass(frozen=True)
class Plan:
    mode: str  # HERMETIC or OPEN
    egress: tuple[Egress, ...] = ()
    why: str = ""

    @property
    def hermetic(self) -> bool:
        return self.mode == HERMETIC

    @property
    def apt_proxy(self) -> str | None:
        """The URL the guest's apt goes through, on a hermetic network."""
        found = [e.port for e in self.egress if e.name == PACKAGE_CACHE]
        return f"http://{GATEWAY}:{found[0]}" if self.hermetic and found else None

    def describe(self) -> str:
        if not self.hermetic:
            return f"network: open, the controller's whole network ({self.why})"
        allowed = ", ".join(e.describe() for e in self.egress) or "nothing"
        return f"network: hermetic; the guest may reach {allowed}"


OPEN_NETWORK = Plan(OPEN, why="no network plan given")


def open_because(tier: config.CertTier, *, force_open: bool = False) -> str | None:
    """Why the tier's machines get the open network, or ``None``: they get the hermetic one."""
    if config.Need.INTERNET in tier.needs:
        return f"tier {tier.name} needs the internet"
    return "--open-network" if force_open else None


def plan_for(tier: config.CertTier, egress: tuple[Egress, ...], *, force_open: bool = False) -> Plan:
    """Hermetic unless the tier needs the internet (or the user asked for ``--open-network``)."""
    why = open_because(tier, force_open=force_open)
    return Plan(OPEN, why=why) if why else Plan(HERMETIC, egress)


@dataclass(frozen=True)
class Relay:
    pid: int
    socket: Path
    log: Path


def passt_identity(qemu: tuple[int, int] | None) -> tuple[int, int]:
    """Who passt runs as: libvirt's QEMU user (so QEMU may open its socket), else nobody."""
    if qemu is not None:
        return qemu
    nobody = pwd.getpwnam("nobody")
    return nobody.pw_uid, nobody.pw_gid


def start_relay(
    directory: Path, forwards: tuple[Forward, ...], egress: tuple[Egress, ...], qemu: tuple[int, int] | None
) -> Relay:
    """Make ``directory`` (passt's, as the user it drops to), start the machine's relay and
    passt in it, and return once passt's socket is there for QEMU."""
    if os.geteuid() != 0:
        raise HarnessError(
            "the hermetic network needs root (a network namespace of its own for each machine)",
            hint="run as root, as CI does, or pass --open-network for QEMU's user-mode network",
        )
    for program in TOOLS:
        proc.require(program)
    runas = passt_identity(qemu)
    if qemu is None:
        # The run's directories let QEMU's group through, and passt runs as QEMU's user; where
        # QEMU is root, passt is nobody, and nobody is let through the machine's directories.
        for parent in (directory.parent, directory.parent.parent):
            let_traverse(parent, runas[0])
    directory.mkdir(mode=0o700)
    os.chown(directory, *runas)
    config_file = directory / "relay.json"
    socket_path, ready = directory / "passt.socket", directory / READY_NAME
    relay_log, passt_log = directory / "relay.log", directory / "passt.log"
    ready.unlink(missing_ok=True)
    config_file.write_text(
        json.dumps(
            {
                "socket": str(socket_path),
                "runas": f"{runas[0]}:{runas[1]}",
                "inbound": [[f.host_port, f.guest_port] for f in forwards],
                "egress": [e.port for e in egress],
                "passt_log": str(passt_log),
                "ready": str(ready),
            },
            indent=2,
        ),
        encoding="utf-8",
    )
    pid = proc.spawn(
        [sys.executable, "-m", "harness.relay", str(config_file)],
        logfile=relay_log,
        env={"PYTHONPATH": str(Path(__file__).resolve().parents[1]), "PYTHONUNBUFFERED": "1"},
    )

    def up() -> None:
        status = proc.exit_status(pid)
        if status is not None:
            raise HarnessError(
                f"the network relay exited with status {status} before passt was up:\n"
                f"{proc.log_tail(relay_log)}\n{proc.log_tail(passt_log)}",
                hint="the hermetic network needs root, passt and iproute2 (make bootstrap); "
                "--open-network runs with QEMU's user-mode network instead",
            )
        if not ready.exists():
            raise NotYet(f"passt's socket {socket_path}")

    try:
        wait_until(up, what="the network relay and passt", timeout=READY_TIMEOUT, interval=0.1)
    except BaseException:
        stop_relay(pid)
        raise
    log.info(f"network relay (pid {pid}): {proc.log_tail(relay_log, 1)}")
    return Relay(pid=pid, socket=socket_path, log=relay_log)


def stop_relay(pid: int) -> None:
    """End the relay (it ends its passt; both carry the run's tag for the reaper anyway)."""
    if pid:
        proc.stop(pid, RELAY_PROGRAM)
