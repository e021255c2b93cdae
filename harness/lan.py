"""A scenario's private network: one hub process per network, joining the machines' second NICs
and nothing else (docs/decisions/027).

Each member's QEMU connects a ``-netdev stream`` to its own unix socket of the hub (a file in
the run's directory, as the hermetic uplink's passt socket is). QEMU frames every Ethernet
frame with its length (4 bytes, big-endian); the hub reads each frame from one member and
writes it to every other member, as a hub, not a switch, does. That is all it can do: it has
no socket on any IP network, so whatever the guests send on this network reaches the run's own
guests or nobody (the issue's "traffic stays inside the run", by construction).

A member whose QEMU restarts (the emulator-fault retry powers the domain off and on) connects
again and replaces its old connection. A member that does not read is not waited for: frames
beyond :data:`BACKLOG_LIMIT` of its backlog are dropped and counted, as a full switch port
drops them. On SIGTERM the hub logs its counts and exits.

Run as ``python -m harness.lan CONFIG.json`` by :func:`start`, never by hand.
"""

from __future__ import annotations

import hashlib
import json
import os
import selectors
import signal
import socket
import struct
import sys
from dataclasses import dataclass, field
from pathlib import Path

from harness import log, proc
from harness.errors import HarnessError
from harness.poll import NotYet, wait_until

LENGTH = struct.Struct("!I")  # QEMU's stream netdev: each frame after its length
MAX_FRAME = 65536 + 64  # a jumbo frame with headroom; anything longer is a broken stream
BACKLOG_LIMIT = 4 * 1024 * 1024  # bytes waiting for a member before its frames are dropped
READY_NAME = "ready"
READY_TIMEOUT = 30.0
PROGRAM = Path(sys.executable).name  # what /proc/PID/cmdline's first word says
MAC_PREFIX = "52:54:00"  # QEMU's own prefix: locally administered space for virtual NICs


@dataclass(frozen=True)
class Hub:
    network: str
    pid: int
    sockets: dict[str, Path]  # member → the unix socket its QEMU connects to
    log: Path


def mac_address(run_id: str, machine: str, network: str) -> str:
    """The machine's NIC on ``network``: stable within the run, distinct between machines."""
    digest = hashlib.sha256(f"{run_id}/{machine}/{network}".encode()).digest()
    return MAC_PREFIX + "".join(f":{byte:02x}" for byte in digest[:3])


def start(directory: Path, network: str, members: list[str], qemu: tuple[int, int] | None) -> Hub:
    """Make ``directory``, start the hub of ``network`` in it, and return once every member's
    socket is there for its QEMU (owned by QEMU's user where that is not us)."""
    directory.mkdir(mode=0o700)
    if qemu is not None and os.geteuid() == 0:
        os.chown(directory, *qemu)
    sockets = {member: directory / f"{member}.sock" for member in members}
    ready, hub_log = directory / READY_NAME, directory / "lan.log"
    config_file = directory / "lan.json"
    config_file.write_text(
        json.dumps(
            {
                "network": network,
                "sockets": {m: str(p) for m, p in sockets.items()},
                "owner": list(qemu) if qemu is not None and os.geteuid() == 0 else None,
                "ready": str(ready),
            },
            indent=2,
        ),
        encoding="utf-8",
    )
    pid = proc.spawn(
        [sys.executable, "-m", "harness.lan", str(config_file)],
        logfile=hub_log,
        env={"PYTHONPATH": str(Path(__file__).resolve().parents[1]), "PYTHONUNBUFFERED": "1"},
    )

    def up() -> None:
        status = proc.exit_status(pid)
        if status is not None:
            raise HarnessError(
                f"the hub of network {network} exited with status {status}:\n{proc.log_tail(hub_log)}"
            )
        if not ready.exists():
            raise NotYet(f"the hub's sockets in {directory}")

    try:
        wait_until(up, what=f"the hub of network {network}", timeout=READY_TIMEOUT, interval=0.1)
    except BaseException:
        stop(pid)
        raise
    log.info(f"network {network}: hub (pid {pid}) for {', '.join(members)}")
    return Hub(network=network, pid=pid, sockets=sockets, log=hub_log)


def stop(pid: int) -> None:
    """End a hub (it logs its counts on the way out)."""
    if pid:
        proc.stop(pid, PROGRAM)


# -- the hub itself (runs in its own process) ---------------------------------------------------


@dataclass
class Member:
    name: str
    listener: socket.socket
    conn: socket.socket | None = None
    inbox: bytearray = field(default_factory=bytearray)  # bytes read, not yet a whole frame
    outbox: bytearray = field(default_factory=bytearray)  # frames waiting to be written
    frames_in: int = 0
    frames_out: int = 0
    dropped: int = 0

    def counts(self) -> str:
        return (
            f"{self.name}: {self.frames_in} frames sent, {self.frames_out} received, {self.dropped} dropped"
        )


class HubLoop:
    """The frames of every member, to every other member."""

    def __init__(self, sockets: dict[str, str], owner: tuple[int, int] | None) -> None:
        self.selector = selectors.DefaultSelector()
        self.members: dict[str, Member] = {}
        for name, path in sockets.items():
            listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            Path(path).unlink(missing_ok=True)
            listener.bind(path)
            os.chmod(path, 0o600)
            if owner is not None:
                os.chown(path, *owner)
            listener.listen(1)
            listener.setblocking(False)
            member = Member(name, listener)
            self.members[name] = member
            self.selector.register(listener, selectors.EVENT_READ, ("accept", member))

    def run(self, stopped: list[bool]) -> None:
        while not stopped:
            for key, events in self.selector.select(timeout=0.5):
                action, member = key.data
                if action == "accept":
                    self._accept(member)
                    continue
                if key.fileobj is not member.conn:
                    continue  # dropped or replaced earlier in this round
                if events & selectors.EVENT_READ:
                    self._read(member)
                if events & selectors.EVENT_WRITE and member.conn is not None:
                    self._flush(member)

    def _watch(self, member: Member) -> None:
        if member.conn is None:
            return
        events = selectors.EVENT_READ | (selectors.EVENT_WRITE if member.outbox else 0)
        self.selector.modify(member.conn, events, ("conn", member))

    def _accept(self, member: Member) -> None:
        conn, _ = member.listener.accept()
        if member.conn is not None:  # its QEMU started again: the new connection is the member
            self._drop(member, "replaced by a new connection")
        conn.setblocking(False)
        member.conn = conn
        self.selector.register(conn, selectors.EVENT_READ, ("conn", member))
        print(f"{member.name}: connected", flush=True)

    def _drop(self, member: Member, why: str) -> None:
        if member.conn is None:
            return
        self.selector.unregister(member.conn)
        member.conn.close()
        member.conn = None
        member.inbox.clear()
        member.outbox.clear()
        print(f"{member.name}: disconnected ({why})", flush=True)

    def _read(self, member: Member) -> None:
        assert member.conn is not None
        try:
            data = member.conn.recv(1 << 16)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self._drop(member, str(exc))
            return
        if not data:
            self._drop(member, "closed by QEMU")
            return
        member.inbox += data
        while len(member.inbox) >= LENGTH.size:
            (size,) = LENGTH.unpack_from(member.inbox)
            if size > MAX_FRAME:
                self._drop(member, f"a frame of {size} bytes: not QEMU's stream")
                return
            if len(member.inbox) < LENGTH.size + size:
                break
            frame = bytes(member.inbox[: LENGTH.size + size])
            del member.inbox[: LENGTH.size + size]
            member.frames_in += 1
            self._forward(member, frame)

    def _forward(self, sender: Member, frame: bytes) -> None:
        for other in self.members.values():
            if other is sender or other.conn is None:
                continue
            if len(other.outbox) + len(frame) > BACKLOG_LIMIT:
                other.dropped += 1
                continue
            other.outbox += frame
            other.frames_out += 1
            self._flush(other)

    def _flush(self, member: Member) -> None:
        assert member.conn is not None
        try:
            sent = member.conn.send(member.outbox)
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError as exc:
            self._drop(member, str(exc))
            return
        del member.outbox[:sent]
        self._watch(member)

    def close(self) -> None:
        for member in self.members.values():
            print(member.counts(), flush=True)
            self._drop(member, "the hub stops")
            member.listener.close()


def main(argv: list[str]) -> int:
    config = json.loads(Path(argv[0]).read_text(encoding="utf-8"))
    stopped: list[bool] = []

    def stop_loop(_signum: int, _frame: object) -> None:
        stopped.append(True)

    signal.signal(signal.SIGTERM, stop_loop)
    signal.signal(signal.SIGINT, stop_loop)
    owner = (int(config["owner"][0]), int(config["owner"][1])) if config.get("owner") else None
    hub = HubLoop(config["sockets"], owner)
    Path(config["ready"]).touch()
    print(f"network {config['network']}: hub for {', '.join(config['sockets'])}", flush=True)
    try:
        hub.run(stopped)
    finally:
        hub.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
