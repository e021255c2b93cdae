"""The harness's commands that go over the shared connection (Ansible's and testinfra's), and
the reboot's order: the boot_id before is read over it, it is closed, the reboot is asked for on
a connection of its own, and the settled boot opens a new one.

The options are checked with the real ssh client (``ssh -G`` prints the configuration a command
line resolves to, without connecting): ssh keeps the first value it is given, so a mistake in
the order would leave the shared command on a connection of its own, or the others on the shared
one."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness import machine, proc, ssh
from harness.ssh import Endpoint
from tests.unit.test_emulator_fault import a_machine


def endpoint(tmp_path: Path, *, shared_path: bool = True) -> Endpoint:
    return Endpoint(
        alias="boma-it-askari-0001",
        port=40022,
        user="ansible",
        key=tmp_path / "id_ed25519",
        control_path=tmp_path / "cm-%C" if shared_path else None,
    )


def effective(argv: list[str]) -> dict[str, str]:
    """What ssh makes of a command line (the remote command dropped), as ``ssh -G`` prints it."""
    assert argv[0] == "ssh"
    printed = proc.run(["ssh", "-G", *argv[1:-1]], quiet=True).stdout
    return dict(line.split(" ", 1) for line in printed.splitlines() if " " in line)


def test_a_shared_command_goes_over_the_shared_connection_and_keeps_it_up(tmp_path: Path) -> None:
    config = effective(ssh.command_argv(endpoint(tmp_path), ["true"], shared=True))
    assert config["controlmaster"] == "auto"
    assert config["controlpath"].startswith(str(tmp_path / "cm-"))
    assert config["controlpersist"] == str(ssh.CONTROL_PERSIST)
    assert config["loglevel"] == "INFO"  # still the harness's own level, for the transients
    assert config["batchmode"] == "yes"


def test_the_harness_commands_are_otherwise_on_connections_of_their_own(tmp_path: Path) -> None:
    config = effective(ssh.command_argv(endpoint(tmp_path), ["true"]))
    assert config["controlmaster"] == "false"
    assert "controlpath" not in config  # `ControlPath none`: ssh -G prints no path at all
    assert "controlpersist" not in config or config["controlpersist"] == "no"


def test_without_a_control_path_shared_changes_nothing(tmp_path: Path) -> None:
    bare = endpoint(tmp_path, shared_path=False)
    assert ssh.command_argv(bare, ["true"], shared=True) == ssh.command_argv(bare, ["true"])


def test_ansible_and_testinfra_share_the_same_connection(tmp_path: Path) -> None:
    """The harness's shared commands and the inventory's ssh arguments name one connection."""
    point = endpoint(tmp_path)
    given = point.multiplex_args().removeprefix("-o ").split(" -o ")
    options = dict(option.split("=", 1) for option in given)
    assert options["ControlMaster"] == "auto"
    assert options["ControlPath"] == str(point.control_path)
    shared = point.shared_args()
    assert f"ControlPath={point.control_path}" in shared


def test_a_reboot_reads_the_boot_id_shared_closes_it_and_reboots_on_its_own(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    vm = a_machine(tmp_path, "tcg")
    calls: list[tuple[str, bool]] = []

    def run_retrying(point: Endpoint, command: list[str], **kwargs: object) -> proc.Result:
        what = "boot_id" if list(command) == list(ssh.BOOT_ID_COMMAND) else " ".join(command)
        calls.append((what, bool(kwargs.get("shared"))))
        out = "old-boot-id\n" if what == "boot_id" else "running\n"
        return proc.Result(tuple(command), 0, out, "")

    def run_disconnecting(point: Endpoint, command: list[str], **_kwargs: object) -> None:
        calls.append((" ".join(command), False))

    monkeypatch.setattr(machine.ssh, "run_retrying", run_retrying)
    monkeypatch.setattr(machine.ssh, "run_disconnecting", run_disconnecting)
    monkeypatch.setattr(machine.ssh, "close_master", lambda point: calls.append(("close the shared", False)))
    monkeypatch.setattr(machine.Machine, "wait_for_ssh", lambda self, **kw: "new-boot-id")
    monkeypatch.setattr(machine.Machine, "_save", lambda self: None)

    assert vm.reboot() == "new-boot-id"
    assert calls == [
        ("boot_id", True),
        ("close the shared", False),
        ("sudo systemctl reboot", False),
        ("systemctl is-system-running --wait", True),
    ]
    assert vm.state.boot_ids == ["old-boot-id", "new-boot-id"]
