"""Transients told from verdicts, on recorded ssh and ansible-playbook outputs, and the bounded retry.

The recordings (tests/unit/data/transients/, see its README) are real outputs of OpenSSH 9.2
and ansible-core 2.19 against a local sshd and fake servers; a new recording must be added to
the tables here, so every one of them is judged.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from harness import ssh, transient
from harness.errors import HarnessError
from harness.transient import Kind, Transient, TransientPersisted

DATA = Path(__file__).parent / "data" / "transients"

SSH_CASES = {
    "ok-boot-id": Kind.OK,
    # the remote command's own failure: a verdict, whatever it printed
    "remote-exit-1": Kind.VERDICT,
    "remote-exit-255-message": Kind.VERDICT,
    "remote-exit-255-silent": Kind.VERDICT,
    "remote-exit-7-connection-refused": Kind.VERDICT,
    # ssh never set up a session: the command did not run
    "connect-refused": Kind.UNREACHABLE,
    "kex-closed-before-banner": Kind.UNREACHABLE,
    "kex-read-reset-by-peer": Kind.UNREACHABLE,
    "closed-after-banner": Kind.UNREACHABLE,
    "banner-timeout": Kind.UNREACHABLE,
    "banner-exchange-timed-out": Kind.UNREACHABLE,
    # ssh lost the connection (or may have, after the session began)
    "reset-after-banner": Kind.DROPPED,
    "closed-by-remote-host": Kind.DROPPED,
    "keepalive-timeout": Kind.DROPPED,
    "client-loop-broken-pipe": Kind.DROPPED,
    # the guest refused the run's key: the harness's fault, never retried
    "permission-denied": Kind.REFUSED,
    # another apt or dpkg held the lock
    "apt-lock": Kind.LOCKED,
    "dpkg-lock": Kind.LOCKED,
    # at LogLevel=ERROR ssh says nothing: why the harness runs it at INFO (see below)
    "reset-after-banner-at-error": Kind.VERDICT,
    "keepalive-timeout-at-error": Kind.VERDICT,
}

PLAYBOOK_CASES = {
    "ok": Kind.OK,
    "task-failed": Kind.VERDICT,
    "task-failed-apt-lock": Kind.VERDICT,  # the roles ran apt into a held lock: theirs to fix
    "unreachable-connect-refused": Kind.UNREACHABLE,
    "unreachable-mid-play": Kind.UNREACHABLE,
    "unreachable-permission-denied": Kind.REFUSED,
    "parse-error-module": Kind.BROKEN,
    "parse-error-yaml": Kind.BROKEN,
    "missing-overlay": Kind.BROKEN,
    "usage-error": Kind.BROKEN,  # exit 2, like a failed host, but argparse's
    "playbook-not-found": Kind.BROKEN,
    "bad-config-value": Kind.BROKEN,
    "unexpected-exception": Kind.BROKEN,
}


def ssh_recording(case: str) -> dict[str, object]:
    data: dict[str, object] = json.loads((DATA / "ssh" / f"{case}.json").read_text(encoding="utf-8"))
    return data


def ssh_outcome(case: str) -> tuple[int, str, str]:
    """The exit status, stderr and stdout as :func:`harness.ssh.run` sees them."""
    data = ssh_recording(case)
    stderr = ssh.KNOWN_HOSTS_WARNING.sub("", str(data["stderr"]))
    return int(str(data["exit"])), stderr, str(data["stdout"])


def playbook_outcome(case: str) -> tuple[int, str]:
    base = DATA / "ansible" / case
    return int(base.with_suffix(".exit").read_text()), base.with_suffix(".log").read_text(encoding="utf-8")


@pytest.fixture(autouse=True)
def no_retries_yet() -> Iterator[None]:
    transient.reset_retries()
    yield
    transient.reset_retries()


def test_every_recording_is_judged_here() -> None:
    assert {p.stem for p in (DATA / "ssh").glob("*.json")} == set(SSH_CASES)
    assert {p.stem for p in (DATA / "ansible").glob("*.log")} == set(PLAYBOOK_CASES)


@pytest.mark.parametrize(("case", "kind"), SSH_CASES.items())
def test_ssh_outcomes(case: str, kind: Kind) -> None:
    assert transient.classify_ssh(*ssh_outcome(case)) is kind


@pytest.mark.parametrize(("case", "kind"), PLAYBOOK_CASES.items())
def test_playbook_outcomes(case: str, kind: Kind) -> None:
    assert transient.classify_playbook(*playbook_outcome(case)) is kind


@pytest.mark.parametrize(
    "case", ["remote-exit-1", "remote-exit-255-message", "remote-exit-255-silent", "permission-denied"]
)
def test_a_remote_failure_or_a_refused_key_is_never_a_transient(case: str) -> None:
    assert not transient.classify_ssh(*ssh_outcome(case)).transient


def test_at_loglevel_error_ssh_fails_in_silence_so_the_harness_runs_it_at_info() -> None:
    for case in ("reset-after-banner", "keepalive-timeout"):
        quiet, loud = ssh_recording(f"{case}-at-error"), ssh_recording(case)
        assert quiet["exit"] == loud["exit"] == 255
        assert quiet["stderr"] == ""  # indistinguishable from a remote `exit 255`
        assert transient.classify_ssh(*ssh_outcome(case)).transient
    assert ssh.RUN_LOG_LEVEL == "INFO"


def test_ssh_messages_count_only_with_ssh_s_own_exit_status() -> None:
    stderr = "kex_exchange_identification: read: Connection reset by peer\n"
    assert transient.classify_ssh(255, stderr) is Kind.UNREACHABLE
    assert transient.classify_ssh(1, stderr) is Kind.VERDICT


def test_only_the_tail_of_stderr_is_read_for_ssh_s_reason() -> None:
    stderr = "Connection to db closed by remote host.\n" + "".join(f"retrying {n}\n" for n in range(5))
    assert transient.classify_ssh(255, stderr) is Kind.VERDICT


def test_evidence_is_the_line_that_shows_the_kind() -> None:
    _status, stderr, _out = ssh_outcome("kex-read-reset-by-peer")
    assert transient.evidence_line(Kind.UNREACHABLE, stderr) == (
        "kex_exchange_identification: read: Connection reset by peer"
    )
    assert transient.evidence_line(Kind.DROPPED, "") == "(no output)"


def flaky(kinds: list[Kind], value: str = "done") -> tuple[list[int], Callable[[], str]]:
    """An attempt that meets ``kinds`` in turn, then returns ``value``."""
    calls: list[int] = []

    def attempt() -> str:
        calls.append(1)
        if len(calls) <= len(kinds):
            raise Transient(kinds[len(calls) - 1], f"seen at attempt {len(calls)}")
        return value

    return calls, attempt


def logged(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    lines: list[str] = []
    monkeypatch.setattr(transient.log, "info", lines.append)
    return lines


def test_retrying_returns_once_the_transient_is_gone_and_counts_each_retry(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    lines = logged(monkeypatch)
    calls, attempt = flaky([Kind.UNREACHABLE, Kind.DROPPED])
    got = transient.retrying(attempt, what="cloud-init status", retries=3, interval=0, attempt_timeout=1)
    assert got == "done"
    assert len(calls) == 3
    assert transient.retry_count() == 2
    assert [r.kind for r in transient.recorded_retries()] == [Kind.UNREACHABLE, Kind.DROPPED]
    mark = f"{transient.RETRY_MARK} cloud-init status:"
    assert lines == [
        f"{mark} could not connect to the guest (seen at attempt 1); retry 1 of 3",
        f"{mark} lost the connection to the guest (seen at attempt 2); retry 2 of 3",
    ]


def test_retrying_gives_up_at_the_bound_naming_the_transient_and_the_count() -> None:
    calls, attempt = flaky([Kind.LOCKED] * 10)
    with pytest.raises(TransientPersisted) as caught:
        transient.retrying(attempt, what="apt-get update", retries=2, interval=0, attempt_timeout=1)
    assert len(calls) == 3
    assert isinstance(caught.value, HarnessError)
    assert caught.value.kind is Kind.LOCKED
    assert caught.value.attempts == 3
    assert (
        "apt-get update: found the apt/dpkg lock held by another process, 3 times in a row"
        in caught.value.message
    )
    assert "gave up after 2 retries" in caught.value.message
    assert caught.value.hint
    assert transient.retry_count() == 2  # the last failure is not a retry


def test_retrying_does_not_retry_anything_else() -> None:
    calls: list[int] = []

    def attempt() -> str:
        calls.append(1)
        raise HarnessError("a verdict, or the harness broke")

    with pytest.raises(HarnessError, match="a verdict"):
        transient.retrying(attempt, what="x", retries=5, interval=0, attempt_timeout=1)
    assert calls == [1]
    assert transient.retry_count() == 0
