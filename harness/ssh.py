"""Talking to the guest over SSH through its loopback forward.

The options here are the ones that survive a guest reboot through QEMU's user-mode forward
(FACTS.md: a persistent control master hung Ansible's reboot until it was killed).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from harness import proc
from harness.errors import HarnessError
from harness.poll import NotYet, wait_until

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
SSH_PROBE_INTERVAL = 3.0
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
    # every reboot (FACTS.md: a stale master hung Ansible's reboot) and at teardown.
    control_path: Path | None = None

    def multiplex_args(self) -> str:
        """SSH options for Ansible and testinfra: the harness's own, plus multiplexing."""
        options = dict(SSH_OPTIONS)
        if self.control_path is not None:
            options.update(
                ControlMaster="auto", ControlPersist=f"{CONTROL_PERSIST}s", ControlPath=str(self.control_path)
            )
        return " ".join(f"-o {key}={value}" for key, value in options.items())

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


def keygen(private_key: Path, comment: str) -> str:
    """Generate the run's own ed25519 key pair; return the public key text."""
    proc.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(private_key)], quiet=True
    )
    return private_key.with_suffix(".pub").read_text(encoding="utf-8")


def run(
    endpoint: Endpoint,
    command: Sequence[str],
    *,
    check: bool = True,
    timeout: float = 120,
    quiet: bool = False,
) -> proc.Result:
    """Run ``command`` (an argument list, quoted for the remote shell) in the guest."""
    remote = proc.render(command)
    return proc.run(
        ["ssh", *endpoint.option_args(), f"{endpoint.user}@{endpoint.host}", remote],
        check=check,
        timeout=timeout,
        quiet=quiet,
    )


def boot_id(endpoint: Endpoint) -> str:
    return run(endpoint, BOOT_ID_COMMAND, quiet=True).stdout.strip()


def wait_for_boot(
    endpoint: Endpoint,
    *,
    timeout: float,
    not_boot_id: str | None = None,
    console: Path | None = None,
) -> str:
    """Wait until SSH answers (and, after a reboot, with a new boot_id); return the boot_id.

    With ``console``, a kernel panic on the serial console ends the wait at once instead of
    at the timeout.
    """

    def probe() -> str:
        if console is not None and (fatal := console_fatal(console)):
            raise HarnessError(
                f"the guest kernel died during boot: {fatal}", hint=f"see the serial console: {console}"
            )
        try:
            result = run(endpoint, BOOT_ID_COMMAND, check=False, timeout=30, quiet=True)
        except HarnessError as exc:  # the ssh client itself timed out
            raise NotYet(str(exc)) from exc
        if result.returncode != 0:
            raise NotYet(f"ssh exit {result.returncode}: {result.stderr.strip()[-200:] or 'no output'}")
        current = result.stdout.strip()
        if not_boot_id is not None and current == not_boot_id:
            raise NotYet(f"SSH answers but boot_id is still {current} (not rebooted yet)")
        return current

    what = f"SSH on 127.0.0.1:{endpoint.port}" + (" with a new boot_id" if not_boot_id else "")
    return wait_until(probe, what=what, timeout=timeout, interval=SSH_PROBE_INTERVAL)


FATAL_CONSOLE_MARKERS = ("Kernel panic - not syncing", "end Kernel panic")


def console_fatal(console: Path) -> str | None:
    """The first fatal kernel line on the serial console, if any."""
    try:
        text = console.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    for line in text.splitlines():
        if any(marker in line for marker in FATAL_CONSOLE_MARKERS):
            return line.strip()[:200]
    return None


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
