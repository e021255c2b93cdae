"""SSH to the guest: the run's own key pair, and options that survive a reboot through the forward."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness import proc, ssh
from harness.errors import HarnessError
from harness.ssh import Endpoint


def endpoint(tmp_path: Path) -> Endpoint:
    return Endpoint(alias="boma-it-askari-0001", port=40022, user="ansible", key=tmp_path / "id_ed25519")


def test_keygen_makes_a_key_pair_and_returns_the_public_key(tmp_path: Path) -> None:
    private = tmp_path / "id_ed25519"
    public = ssh.keygen(private, comment="boma-run-0001")
    assert public.startswith("ssh-ed25519 ")
    assert public.strip().endswith(" boma-run-0001")
    assert (tmp_path / "id_ed25519.pub").read_text(encoding="utf-8") == public
    assert "PRIVATE KEY" in private.read_text(encoding="utf-8")
    assert private.stat().st_mode & 0o077 == 0


def test_config_text_is_one_host_entry_at_loopback(tmp_path: Path) -> None:
    lines = endpoint(tmp_path).config_text().splitlines()
    assert lines[0] == "Host boma-it-askari-0001"
    options = dict(line.strip().split(" ", 1) for line in lines[1:])
    assert options["HostName"] == "127.0.0.1"
    assert options["Port"] == "40022"
    assert options["User"] == "ansible"
    assert options["IdentityFile"] == str(tmp_path / "id_ed25519")
    assert options["StrictHostKeyChecking"] == "no"
    assert options["UserKnownHostsFile"] == "/dev/null"
    assert options["ServerAliveInterval"] == "5"
    assert options["ControlMaster"] == "no"
    assert options["IdentitiesOnly"] == "yes"


def test_option_args_carry_the_same_options(tmp_path: Path) -> None:
    args = endpoint(tmp_path).option_args()
    assert args[:4] == ["-i", str(tmp_path / "id_ed25519"), "-p", "40022"]
    given = [args[i + 1] for i, arg in enumerate(args) if arg == "-o"]
    assert given == [f"{k}={v}" for k, v in ssh.SSH_OPTIONS]
    assert "ControlMaster=no" in given
    assert "BatchMode=yes" in given


def test_run_quotes_the_remote_command(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[list[str]] = []

    def fake_run(argv: list[str], **_kwargs: object) -> proc.Result:
        seen.append(argv)
        return proc.Result(tuple(argv), 0, "", "")

    monkeypatch.setattr(ssh.proc, "run", fake_run)
    ssh.run(endpoint(tmp_path), ["echo", "a b", "$HOME;true"])
    [argv] = seen
    assert argv[0] == "ssh"
    assert argv[-2] == "ansible@127.0.0.1"
    assert argv[-1] == "echo 'a b' '$HOME;true'"


def test_wait_for_boot_wants_a_new_boot_id_after_a_reboot(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    answers = iter([(255, ""), (0, "old-id\n"), (0, "new-id\n")])

    def fake_run(argv: list[str], **_kwargs: object) -> proc.Result:
        status, out = next(answers)
        return proc.Result(tuple(argv), status, out, "Connection refused" if status else "")

    monkeypatch.setattr(ssh.proc, "run", fake_run)
    monkeypatch.setattr(ssh, "SSH_PROBE_INTERVAL", 0.0)
    assert ssh.wait_for_boot(endpoint(tmp_path), timeout=5, not_boot_id="old-id") == "new-id"


def test_wait_for_boot_times_out_saying_what_it_saw(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def fake_run(argv: list[str], **_kwargs: object) -> proc.Result:
        return proc.Result(tuple(argv), 0, "same-id\n", "")

    monkeypatch.setattr(ssh.proc, "run", fake_run)
    monkeypatch.setattr(ssh, "SSH_PROBE_INTERVAL", 0.01)
    with pytest.raises(HarnessError) as caught:
        ssh.wait_for_boot(endpoint(tmp_path), timeout=0.05, not_boot_id="same-id")
    assert "SSH on 127.0.0.1:40022 with a new boot_id" in caught.value.message
    assert "boot_id is still same-id" in caught.value.message
