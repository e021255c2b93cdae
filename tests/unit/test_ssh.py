"""SSH to the guest: the run's own key pair, and options that survive a reboot through the forward."""

from __future__ import annotations

import contextlib
import json
import socket
import threading
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from harness import proc, ssh, transient
from harness.errors import HarnessError
from harness.poll import NotYet
from harness.ssh import Endpoint
from harness.transient import Kind


def endpoint(tmp_path: Path) -> Endpoint:
    return Endpoint(alias="boma-it-askari-0001", port=40022, user="ansible", key=tmp_path / "id_ed25519")


class Listener:
    """A loopback listener that greets each connection with ``greeting`` (nothing if empty) once
    the client has sent a line, as the hermetic network delivers sshd's banner only then; it
    holds the connection open until the test ends, as a booting guest's forward does."""

    def __init__(self, greeting: bytes) -> None:
        self.greeting = greeting
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port: int = self.server.getsockname()[1]
        self.accepted: list[socket.socket] = []
        self.heard: list[bytes] = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.server.accept()
            except OSError:
                return
            self.accepted.append(conn)
            threading.Thread(target=self._greet, args=(conn,), daemon=True).start()

    def _greet(self, conn: socket.socket) -> None:
        with contextlib.suppress(OSError):
            self.heard.append(conn.makefile("rb").readline())
            if self.greeting:
                conn.sendall(self.greeting)

    def close(self) -> None:
        for conn in [*self.accepted, self.server]:
            conn.close()


@pytest.fixture
def listening() -> Iterator[Callable[[bytes], Listener]]:
    made: list[Listener] = []

    def make(greeting: bytes) -> Listener:
        made.append(Listener(greeting))
        return made[-1]

    yield make
    for listener in made:
        listener.close()


def test_a_banner_is_sshds_identification_line(
    tmp_path: Path, listening: Callable[[bytes], Listener]
) -> None:
    sshd = listening(b"a line before it, which RFC 4253 allows\r\nSSH-2.0-OpenSSH_10.0p2 Debian-7\r\n")
    assert ssh.banner(replace(endpoint(tmp_path), port=sshd.port)) == "SSH-2.0-OpenSSH_10.0p2 Debian-7"
    assert sshd.heard == [ssh.IDENTIFICATION], "the probe says who it is first, as an SSH client does"


def test_a_connection_that_hangs_without_a_banner_is_given_up_soon(
    tmp_path: Path, listening: Callable[[bytes], Listener]
) -> None:
    """What a booting guest's forward does: it accepts, and nothing comes until ssh gives up."""
    silent = listening(b"")
    with pytest.raises(NotYet, match=r"no SSH banner on 127\.0\.0\.1:\d+ within 0s"):
        ssh.banner(replace(endpoint(tmp_path), port=silent.port), timeout=0.2)


def test_no_banner_when_something_else_answers_or_nothing_listens(
    tmp_path: Path, listening: Callable[[bytes], Listener]
) -> None:
    other = listening(b"HTTP/1.1 400 Bad Request\r\n")
    with pytest.raises(NotYet, match=r"it said 'HTTP/1\.1 400 Bad Request'"):
        ssh.banner(replace(endpoint(tmp_path), port=other.port), timeout=0.5)
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        free = unused.getsockname()[1]
    with pytest.raises(NotYet, match="ConnectionRefusedError"):
        ssh.banner(replace(endpoint(tmp_path), port=free), timeout=0.5)


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
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, listening: Callable[[bytes], Listener]
) -> None:
    sshd = listening(b"SSH-2.0-OpenSSH_10.0\r\n")
    answers = iter([(255, ""), (0, "old-id\n"), (0, "new-id\n")])

    def fake_run(argv: list[str], **_kwargs: object) -> proc.Result:
        status, out = next(answers)
        return proc.Result(tuple(argv), status, out, "Connection refused" if status else "")

    monkeypatch.setattr(ssh.proc, "run", fake_run)
    monkeypatch.setattr(ssh, "SSH_PROBE_INTERVAL", 0.0)
    found = ssh.wait_for_boot(replace(endpoint(tmp_path), port=sshd.port), timeout=5, not_boot_id="old-id")
    assert found == "new-id"


def test_wait_for_boot_runs_ssh_only_once_sshd_has_sent_its_banner(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, listening: Callable[[bytes], Listener]
) -> None:
    silent = listening(b"")

    def fake_run(argv: list[str], **_kwargs: object) -> proc.Result:
        raise AssertionError("ssh was run although no banner came")

    monkeypatch.setattr(ssh.proc, "run", fake_run)
    monkeypatch.setattr(ssh, "BANNER_TIMEOUT", 0.05)
    monkeypatch.setattr(ssh, "SSH_PROBE_INTERVAL", 0.01)
    with pytest.raises(HarnessError, match=r"last seen: no SSH banner on 127\.0\.0\.1:"):
        ssh.wait_for_boot(replace(endpoint(tmp_path), port=silent.port), timeout=0.3)
    assert len(silent.accepted) >= 2, "each probe opens a fresh connection"


def test_wait_for_boot_times_out_saying_what_it_saw(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, listening: Callable[[bytes], Listener]
) -> None:
    sshd = listening(b"SSH-2.0-OpenSSH_10.0\r\n")

    def fake_run(argv: list[str], **_kwargs: object) -> proc.Result:
        return proc.Result(tuple(argv), 0, "same-id\n", "")

    monkeypatch.setattr(ssh.proc, "run", fake_run)
    monkeypatch.setattr(ssh, "SSH_PROBE_INTERVAL", 0.01)
    with pytest.raises(HarnessError) as caught:
        ssh.wait_for_boot(replace(endpoint(tmp_path), port=sshd.port), timeout=0.05, not_boot_id="same-id")
    assert f"SSH on 127.0.0.1:{sshd.port} with a new boot_id" in caught.value.message
    assert "boot_id is still same-id" in caught.value.message


# -- ssh's own failures are not the remote command's status -------------------------------------

DATA = Path(__file__).parent / "data" / "transients" / "ssh"


def recorded(case: str) -> tuple[int, str, str]:
    data = json.loads((DATA / f"{case}.json").read_text(encoding="utf-8"))
    return int(data["exit"]), str(data["stdout"]), str(data["stderr"])


@pytest.fixture(autouse=True)
def no_retries_yet() -> Iterator[None]:
    transient.reset_retries()
    yield
    transient.reset_retries()


def replay(monkeypatch: pytest.MonkeyPatch, *cases: str) -> list[list[str]]:
    """Make ``proc.run`` answer with the recorded ``cases`` in turn (the last one for good)."""
    seen: list[list[str]] = []

    def fake_run(argv: list[str], **_kwargs: object) -> proc.Result:
        status, out, err = recorded(cases[min(len(seen), len(cases) - 1)])
        seen.append(argv)
        return proc.Result(tuple(argv), status, out, err)

    monkeypatch.setattr(ssh.proc, "run", fake_run)
    monkeypatch.setattr(ssh, "SSH_RETRY_INTERVAL", 0.0)
    return seen


def test_the_harness_runs_ssh_at_info_so_that_ssh_says_why_it_failed(tmp_path: Path) -> None:
    argv = ssh.command_argv(endpoint(tmp_path), ["true"])
    levels = [
        argv[i + 1] for i, arg in enumerate(argv) if arg == "-o" and argv[i + 1].startswith("LogLevel=")
    ]
    assert levels[0] == "LogLevel=INFO"  # ssh keeps the first value it is given
    assert levels[1:] == ["LogLevel=ERROR"]  # the shared options, unchanged for Ansible and testinfra


@pytest.mark.parametrize(
    ("case", "kind"),
    [
        ("kex-read-reset-by-peer", Kind.UNREACHABLE),
        ("connect-refused", Kind.UNREACHABLE),
        ("banner-timeout", Kind.UNREACHABLE),
        ("closed-by-remote-host", Kind.DROPPED),
        ("keepalive-timeout", Kind.DROPPED),
    ],
)
def test_run_raises_connection_failed_when_ssh_itself_failed(
    case: str, kind: Kind, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    replay(monkeypatch, case)
    with pytest.raises(ssh.ConnectionFailed) as caught:
        ssh.run(endpoint(tmp_path), ["cloud-init", "status", "--wait"], check=False)
    assert caught.value.kind is kind
    assert isinstance(caught.value, HarnessError)
    _status, _out, stderr = recorded(case)
    assert caught.value.tail.splitlines()[-1] in stderr
    assert "Permanently added" not in caught.value.tail
    assert "127.0.0.1:40022" in caught.value.message
    assert "cloud-init status --wait" in caught.value.message


def test_a_remote_status_stays_the_remote_status(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    replay(monkeypatch, "remote-exit-255-silent")
    result = ssh.run(endpoint(tmp_path), ["sh", "-c", "exit 255"], check=False)
    assert (result.returncode, result.stderr) == (255, "")  # the known-hosts warning is dropped
    with pytest.raises(proc.CommandFailed) as caught:
        ssh.run(endpoint(tmp_path), ["sh", "-c", "exit 255"])
    assert not isinstance(caught.value, ssh.ConnectionFailed)


def test_a_refused_key_is_a_harness_error_not_a_transient(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen = replay(monkeypatch, "permission-denied")
    with pytest.raises(ssh.AccessRefused, match=r"Permission denied \(publickey"):
        ssh.run_retrying(endpoint(tmp_path), ["true"], what="true", timeout=5)
    assert len(seen) == 1
    assert transient.retry_count() == 0


def test_run_retrying_rides_out_sshd_restarting(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen = replay(monkeypatch, "kex-read-reset-by-peer", "closed-by-remote-host", "ok-boot-id")
    result = ssh.run_retrying(endpoint(tmp_path), ssh.BOOT_ID_COMMAND, what="boot_id", timeout=5)
    assert result.stdout.strip() == "6a7e7b17-ee8a-4bad-9f76-4e23ac0830a8"
    assert len(seen) == 3
    assert [r.kind for r in transient.recorded_retries()] == [Kind.UNREACHABLE, Kind.DROPPED]


def test_run_retrying_waits_out_an_apt_lock(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    replay(monkeypatch, "apt-lock", "dpkg-lock", "ok-boot-id")
    ssh.run_retrying(endpoint(tmp_path), ["apt-get", "install", "-y", "nftables"], what="apt-get", timeout=5)
    assert [r.kind for r in transient.recorded_retries()] == [Kind.LOCKED, Kind.LOCKED]


def test_run_retrying_gives_up_at_its_bound(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen = replay(monkeypatch, "kex-read-reset-by-peer")
    monkeypatch.setattr(ssh, "SSH_RETRIES", 3)
    with pytest.raises(transient.TransientPersisted) as caught:
        ssh.run_retrying(
            endpoint(tmp_path), ["cloud-init", "status", "--wait"], what="cloud-init status", timeout=5
        )
    assert len(seen) == 4
    assert caught.value.kind is Kind.UNREACHABLE
    assert "cloud-init status: could not connect to the guest, 4 times in a row" in caught.value.message
    assert "kex_exchange_identification: read: Connection reset by peer" in caught.value.message


def test_run_retrying_never_retries_a_verdict(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen = replay(monkeypatch, "remote-exit-1")
    result = ssh.run_retrying(
        endpoint(tmp_path), ["cat", "/etc/boma-absent"], what="cat", timeout=5, check=False
    )
    assert result.returncode == 1
    with pytest.raises(proc.CommandFailed):
        ssh.run_retrying(endpoint(tmp_path), ["cat", "/etc/boma-absent"], what="cat", timeout=5)
    assert len(seen) == 2
    assert transient.retry_count() == 0


def test_a_reboot_request_whose_connection_drops_is_done(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen = replay(monkeypatch, "closed-by-remote-host")
    assert (
        ssh.run_disconnecting(endpoint(tmp_path), ["sudo", "systemctl", "reboot"], what="reboot", timeout=5)
        is None
    )
    assert len(seen) == 1  # never sent twice


def test_a_reboot_request_that_never_connected_is_sent_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen = replay(monkeypatch, "kex-closed-before-banner", "ok-boot-id")
    status = ssh.run_disconnecting(
        endpoint(tmp_path), ["sudo", "systemctl", "reboot"], what="reboot", timeout=5
    )
    assert status == 0
    assert len(seen) == 2
    assert transient.retry_count() == 1


def test_boot_id_retries_a_transient(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    replay(monkeypatch, "reset-after-banner", "ok-boot-id")
    assert ssh.boot_id(endpoint(tmp_path)) == "6a7e7b17-ee8a-4bad-9f76-4e23ac0830a8"
    assert transient.retry_count() == 1
