"""Talking to the guest over SSH through its loopback forward.

The options here are the ones that survive a guest reboot through QEMU's user-mode forward
(docs/platform.md: a persistent control master hung Ansible's reboot until it was killed).
"""

from __future__ import annotations

import re
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from harness import log, proc, transient
from harness.errors import HarnessError
from harness.poll import NotYet, wait_until
from harness.transient import Kind

# Options every SSH client of the run uses: Ansible, testinfra and the harness itself.
SSH_OPTIONS: tuple[tuple[str, str], ...] = (
    ("StrictHostKeyChecking", "no"),  # the guest's host keys are new at every boot of a new VM
    ("UserKnownHostsFile", "/dev/null"),
    ("IdentitiesOnly", "yes"),  # never offer the operator's own keys to a test VM
    ("ControlMaster", "no"),
    ("ControlPath", "none"),
    ("ServerAliveInterval", "5"),
    ("ServerAliveCountMax", "3"),
    ("ConnectTimeout", "10"),
    ("LogLevel", "ERROR"),
    ("BatchMode", "yes"),
)
SSH_PROBE_INTERVAL = 1.0
# How long a boot probe waits for sshd's banner before it drops the connection and opens a new
# one. The hermetic network's relay and passt accept the controller's connection at once and send
# the guest a SYN; one sent before the guest's network was up is lost, and the connection then
# hangs until passt's 10 s handshake timeout or the client gives up: with ssh's ConnectTimeout of
# 10 s each probe of a booting guest took 13 s, and sshd's start was seen 11–13 s late
# (2026-12-04). A banner takes milliseconds once sshd listens.
BANNER_TIMEOUT = 3.0
BANNER = b"SSH-"
# The probe's own identification, sent first: through the hermetic network's relay and passt a
# server's first bytes reach the client only once the client has sent something (measured:
# nothing in 10 s, while the guest's sshd logged each connection), and RFC 4253 lets either side
# send its line first.
IDENTIFICATION = b"SSH-2.0-boma_boot_probe\r\n"
BANNER_LINES = 5  # RFC 4253 lets a server send other lines before its identification
# A transient (sshd restarting during first boot, a dropped forward) is retried this often, this
# far apart: long enough for sshd to come back, short enough that a dead guest fails in a minute.
SSH_RETRIES = 5
SSH_RETRY_INTERVAL = 5.0
BOOT_ID_TIMEOUT = 30.0
# The harness's own commands run ssh at INFO, not ERROR: at ERROR, OpenSSH 9 exits 255 without a
# word when a keepalive times out or the connection is closed or reset after the banner
# (recorded in tests/unit/data/transients/ssh/), which cannot be told from a remote `exit 255`.
# ssh keeps the first value it is given for an option, so this goes before SSH_OPTIONS.
RUN_LOG_LEVEL = "INFO"
# The one line INFO adds to every connection (the known hosts file is /dev/null): not the command's.
KNOWN_HOSTS_WARNING = re.compile(
    r"^Warning: Permanently added .* to the list of known hosts\.\r?\n?", re.MULTILINE
)
BOOT_ID_COMMAND = ("cat", "/proc/sys/kernel/random/boot_id")
CONTROL_PERSIST = 120


@dataclass(frozen=True)
class Endpoint:
    """How to reach one guest: a loopback port, a user and the run's private key."""

    alias: str
    port: int
    user: str
    key: Path
    host: str = "127.0.0.1"
    # Where Ansible's and testinfra's shared SSH connection lives. Multiplexing saves one
    # handshake per task, which is seconds under TCG; the harness closes the master before
    # every reboot (docs/platform.md: a stale master hung Ansible's reboot) and at teardown.
    control_path: Path | None = None

    def _sharing(self) -> dict[str, str]:
        """The options that put a connection on the shared one, opening it if none is up."""
        if self.control_path is None:
            return {}
        return {
            "ControlMaster": "auto",
            "ControlPersist": f"{CONTROL_PERSIST}s",
            "ControlPath": str(self.control_path),
        }

    def multiplex_args(self) -> str:
        """SSH options for Ansible and testinfra: the harness's own, plus multiplexing."""
        options = dict(SSH_OPTIONS) | self._sharing()
        return " ".join(f"-o {key}={value}" for key, value in options.items())

    def shared_args(self) -> list[str]:
        """Options for one of the harness's own commands that goes over the shared connection
        (see :func:`run`'s ``shared``); they come before :meth:`option_args`, whose
        ``ControlMaster no`` they override: ssh keeps the first value it is given."""
        args = []
        for key, value in self._sharing().items():
            args += ["-o", f"{key}={value}"]
        return args

    def option_args(self) -> list[str]:
        args = ["-i", str(self.key), "-p", str(self.port)]
        for key, value in SSH_OPTIONS:
            args += ["-o", f"{key}={value}"]
        return args

    def config_text(self) -> str:
        lines = [
            f"Host {self.alias}",
            f"  HostName {self.host}",
            f"  Port {self.port}",
            f"  User {self.user}",
            f"  IdentityFile {self.key}",
        ]
        lines += [f"  {key} {value}" for key, value in SSH_OPTIONS]
        return "\n".join(lines) + "\n"


class ConnectionFailed(HarnessError):
    """ssh itself could not reach the guest, or lost it: a transient, never the command's answer.

    ``kind`` is :attr:`Kind.UNREACHABLE` (the command never ran) or :attr:`Kind.DROPPED` (it may
    have); ``tail`` is the end of ssh's stderr.
    """

    def __init__(self, endpoint: Endpoint, remote: str, result: proc.Result, kind: Kind) -> None:
        self.kind = kind
        self.result = result
        self.tail = transient.tail(result.stderr)
        self.evidence = transient.evidence_line(kind, result.stderr)
        super().__init__(
            f"ssh to {endpoint.host}:{endpoint.port} {kind.describe} (running {remote!r}): {self.evidence}",
            hint=transient.HINT.get(kind),
        )


class AccessRefused(HarnessError):
    """The guest's sshd answered but refused the run's key: retrying will not help."""

    def __init__(self, endpoint: Endpoint, result: proc.Result) -> None:
        self.result = result
        super().__init__(
            f"ssh to {endpoint.user}@{endpoint.host}:{endpoint.port} was refused: "
            + transient.evidence_line(Kind.REFUSED, result.stderr),
            hint=f"did cloud-init install the run's key ({endpoint.key}.pub)? see the serial console",
        )


def keygen(private_key: Path, comment: str) -> str:
    """Generate the run's own ed25519 key pair; return the public key text."""
    proc.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(private_key)], quiet=True
    )
    return private_key.with_suffix(".pub").read_text(encoding="utf-8")


def command_argv(endpoint: Endpoint, command: Sequence[str], *, shared: bool = False) -> list[str]:
    """The ssh command line that runs ``command`` (quoted for the remote shell) in the guest;
    ``shared`` puts it on the shared connection (:func:`run`)."""
    return [
        "ssh",
        "-o",
        f"LogLevel={RUN_LOG_LEVEL}",
        *(endpoint.shared_args() if shared else ()),
        *endpoint.option_args(),
        f"{endpoint.user}@{endpoint.host}",
        proc.render(command),
    ]


def run(
    endpoint: Endpoint,
    command: Sequence[str],
    *,
    check: bool = True,
    timeout: float = 120,
    quiet: bool = False,
    shared: bool = False,
) -> proc.Result:
    """Run ``command`` (an argument list, quoted for the remote shell) in the guest.

    The result's status is the remote command's own: when ssh itself failed, this raises
    :class:`ConnectionFailed` (could not connect, or lost the connection) or
    :class:`AccessRefused` instead. A non-zero remote status raises
    :class:`~harness.proc.CommandFailed` with ``check``, else is returned for the caller to judge.

    ``shared`` runs it over the connection Ansible and testinfra share (the endpoint's
    ``control_path``), opening that connection if none is up; it then stays up for them, and
    saves each of them a handshake (about 1.3 s under TCG). The harness's commands are
    otherwise on connections of their own, and the shared one is closed before every reboot
    (:func:`close_master`).
    """
    remote = proc.render(command)
    raw = proc.run(command_argv(endpoint, command, shared=shared), check=False, timeout=timeout, quiet=quiet)
    result = proc.Result(raw.argv, raw.returncode, raw.stdout, KNOWN_HOSTS_WARNING.sub("", raw.stderr))
    kind = transient.classify_ssh(result.returncode, result.stderr)
    if kind in (Kind.UNREACHABLE, Kind.DROPPED):
        raise ConnectionFailed(endpoint, remote, result, kind)
    if kind is Kind.REFUSED:
        raise AccessRefused(endpoint, result)
    if check and result.returncode != 0:
        raise proc.CommandFailed(result)
    return result


def run_retrying(
    endpoint: Endpoint,
    command: Sequence[str],
    *,
    what: str,
    timeout: float,
    check: bool = True,
    retries: int | None = None,
    quiet: bool = False,
    shared: bool = False,
) -> proc.Result:
    """:func:`run`, with a transient retried: ssh could not connect or lost the connection, or
    an apt/dpkg lock was held. For commands that may run twice (a status query, a read).

    At most ``retries`` (default :data:`SSH_RETRIES`) retries, each logged and counted in the
    run's summary; then a :class:`~harness.transient.TransientPersisted` names the transient and
    the count. ``timeout`` bounds each attempt; ``what`` names the work in logs and errors.
    """

    def attempt() -> proc.Result:
        try:
            result = run(endpoint, command, check=False, timeout=timeout, quiet=quiet, shared=shared)
        except ConnectionFailed as exc:
            raise transient.Transient(exc.kind, exc.evidence) from exc
        if transient.classify_ssh(result.returncode, result.stderr, result.stdout) is Kind.LOCKED:
            seen = transient.evidence_line(Kind.LOCKED, f"{result.stdout}\n{result.stderr}")
            raise transient.Transient(Kind.LOCKED, seen)
        if check and result.returncode != 0:
            raise proc.CommandFailed(result)
        return result

    return transient.retrying(
        attempt,
        what=what,
        retries=SSH_RETRIES if retries is None else retries,
        interval=SSH_RETRY_INTERVAL,
        attempt_timeout=timeout,
    )


def run_disconnecting(endpoint: Endpoint, command: Sequence[str], *, what: str, timeout: float) -> int | None:
    """Run a command that may end the connection under it (``systemctl reboot``).

    Returns the remote status, or ``None`` when the connection dropped: that is what such a
    command does, and proves nothing either way. A connection that was never made is retried
    as in :func:`run_retrying` (the command never ran).
    """

    def attempt() -> int | None:
        try:
            return run(endpoint, command, check=False, timeout=timeout, quiet=True).returncode
        except ConnectionFailed as exc:
            if exc.kind is Kind.DROPPED:
                log.info(f"{what}: the connection dropped ({exc.evidence})")
                return None
            raise transient.Transient(exc.kind, exc.evidence) from exc

    return transient.retrying(
        attempt, what=what, retries=SSH_RETRIES, interval=SSH_RETRY_INTERVAL, attempt_timeout=timeout
    )


def boot_id(endpoint: Endpoint) -> str:
    """The guest's current boot_id; a transient on the way is retried (it is only a read)."""
    result = run_retrying(
        endpoint, BOOT_ID_COMMAND, what="reading the boot_id", timeout=BOOT_ID_TIMEOUT, quiet=True
    )
    return result.stdout.strip()


def banner(endpoint: Endpoint, *, timeout: float = BANNER_TIMEOUT) -> str:
    """sshd's identification line on the endpoint's port; :class:`NotYet` if none came within
    ``timeout`` (a fresh connection next time: see :data:`BANNER_TIMEOUT`).

    The probe sends its own line (:data:`IDENTIFICATION`) and nothing more: sshd counts it as a
    client that left before authenticating, at most one penalty second per probe, far below what
    OpenSSH's PerSourcePenalties enforce."""
    where = f"{endpoint.host}:{endpoint.port}"
    said = b""
    try:
        with socket.create_connection((endpoint.host, endpoint.port), timeout=timeout) as sock:
            sock.sendall(IDENTIFICATION)
            lines = sock.makefile("rb")
            for _ in range(BANNER_LINES):
                line = lines.readline(256)
                if line.startswith(BANNER):
                    return line.decode("ascii", "replace").strip()
                if not line:
                    break
                said = line
    except TimeoutError as exc:
        if not said:
            raise NotYet(f"no SSH banner on {where} within {timeout:.0f}s") from exc
    except OSError as exc:
        raise NotYet(f"no SSH banner on {where} ({type(exc).__name__}: {exc})") from exc
    text = said.decode("ascii", "replace").strip()[:80]
    raise NotYet(f"no SSH banner on {where}: " + (f"it said {text!r}" if text else "the connection closed"))


def wait_for_boot(
    endpoint: Endpoint,
    *,
    timeout: float,
    not_boot_id: str | None = None,
    still_coming: Callable[[], None] | None = None,
) -> str:
    """Wait until SSH answers (and, after a reboot, with a new boot_id); return the boot_id.

    ``still_coming`` is asked whenever SSH does not answer yet; it raises to end the wait at
    once when the guest cannot come up any more (see :mod:`harness.liveness`).
    """

    def not_yet(seen: str) -> NotYet:
        if still_coming is not None:
            still_coming()
        return NotYet(seen)

    def probe() -> str:
        try:
            banner(endpoint, timeout=BANNER_TIMEOUT)
        except NotYet as exc:
            raise not_yet(str(exc)) from exc
        try:
            result = run(endpoint, BOOT_ID_COMMAND, check=False, timeout=BOOT_ID_TIMEOUT, quiet=True)
        except HarnessError as exc:  # ssh could not connect yet, or the ssh client timed out
            raise not_yet(exc.message) from exc
        if result.returncode != 0:
            raise not_yet(f"ssh exit {result.returncode}: {result.stderr.strip()[-200:] or 'no output'}")
        current = result.stdout.strip()
        if not_boot_id is not None and current == not_boot_id:
            raise not_yet(f"SSH answers but boot_id is still {current} (not rebooted yet)")
        return current

    what = f"SSH on 127.0.0.1:{endpoint.port}" + (" with a new boot_id" if not_boot_id else "")
    return wait_until(probe, what=what, timeout=timeout, interval=SSH_PROBE_INTERVAL)


def close_master(endpoint: Endpoint) -> None:
    """End the shared connection (and its ssh process) if one is open."""
    if endpoint.control_path is None:
        return
    proc.run(
        [
            "ssh",
            "-O",
            "exit",
            "-o",
            f"ControlPath={endpoint.control_path}",
            "-p",
            str(endpoint.port),
            f"{endpoint.user}@{endpoint.host}",
        ],
        check=False,
        quiet=True,
    )
