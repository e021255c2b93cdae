"""Transients told from verdicts, and the one bounded way to retry them.

A transient is a failure that says nothing about the system under test: ssh could not reach the
guest or lost it (sshd restarting during first boot), Ansible found the host unreachable, or an
apt/dpkg lock was held by another process. A verdict is the command's own answer. The harness
retries a transient a bounded number of times and counts every retry (the run's summary shows
them per phase), so a flaky environment is visible instead of reported as a broken guest.

How ssh's outcome is read (``ssh`` exits with the remote command's status, or 255 when ssh
itself failed, and then prints why as the last line of stderr):

* 255 with a message of ssh's own about the connection: a transient. :attr:`Kind.UNREACHABLE`
  when no session was set up (the command never ran); :attr:`Kind.DROPPED` when the connection
  was lost, or may have been lost, after that (the command may have run). "Connection reset by
  HOST port N" reads the same before and after the session started, so it counts as dropped.
* 255 with an authentication message ("Permission denied (publickey)"): :attr:`Kind.REFUSED`,
  a harness error (the wrong key, or cloud-init did not install it); retrying will not help.
* 255 with none of those messages, an empty stderr included: the remote command's own
  ``exit 255``, a :attr:`Kind.VERDICT`. This holds because the harness runs ssh at
  ``LogLevel=INFO`` (``ssh.RUN_LOG_LEVEL``): at ERROR, ssh fails silently on a keepalive timeout
  or a connection closed after the banner, and a silent 255 could be either.
* any other non-zero status with an apt/dpkg lock message: :attr:`Kind.LOCKED`; without it,
  a verdict.

The pattern lists and the classifiers are pure (text in, :class:`Kind` out), so the unit tests
feed them recorded outputs (``tests/unit/data/transients/``).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import TypeVar

from harness import log
from harness.errors import HarnessError
from harness.poll import NotYet, wait_until

T = TypeVar("T")

SSH_EXIT_OWN_FAILURE = 255
# ssh prints its own reason last (one or two lines); only that tail is read, so a remote command
# that printed "Broken pipe" earlier in its output is not taken for ssh's failure. apt and dpkg
# print their lock error a few lines from the end, before a note.
SSH_TAIL_LINES = 3
LOCK_TAIL_LINES = 6


class Kind(StrEnum):
    """What a command's outcome says."""

    OK = "ok"
    VERDICT = "verdict"  # the command's own failure: the system under test answered
    UNREACHABLE = "unreachable"  # transient: no connection was set up
    DROPPED = "dropped"  # transient: an established connection was lost
    LOCKED = "locked"  # transient: another process held the apt/dpkg lock
    REFUSED = "refused"  # harness: ssh could not log in with the run's key
    BROKEN = "broken"  # harness or bad input: the tool could not run at all
    EMULATOR = "emulator"  # transient: the emulator, not the guest's own code, crashed the boot

    @property
    def transient(self) -> bool:
        return self in TRANSIENT

    @property
    def describe(self) -> str:
        return DESCRIPTION[self]


TRANSIENT = frozenset({Kind.UNREACHABLE, Kind.DROPPED, Kind.LOCKED, Kind.EMULATOR})
DESCRIPTION = {
    Kind.OK: "succeeded",
    Kind.VERDICT: "failed",
    Kind.UNREACHABLE: "could not connect to the guest",
    Kind.DROPPED: "lost the connection to the guest",
    Kind.LOCKED: "found the apt/dpkg lock held by another process",
    Kind.REFUSED: "could not log in to the guest",
    Kind.EMULATOR: "hit a known fault of software emulation (TCG) that crashed the guest's kernel",
    Kind.BROKEN: "could not run",
}

# ssh's own messages, as OpenSSH prints them (see the recorded outputs).
SSH_REFUSED = (
    re.compile(r"Permission denied \("),
    re.compile(r"Host key verification failed"),
    re.compile(r"Too many authentication failures"),
    re.compile(r"Load key \".*\": "),
    re.compile(r"no such identity: "),
    re.compile(r"UNPROTECTED PRIVATE KEY FILE"),
)
SSH_UNREACHABLE = (
    re.compile(r"ssh: connect to host \S+ port \d+: "),
    re.compile(r"kex_exchange_identification: "),
    re.compile(r"ssh_exchange_identification: "),
    re.compile(r"banner exchange: "),
    re.compile(r"Connection timed out during banner exchange"),
    re.compile(r"^Connection closed by \S+ port \d+"),
)
SSH_DROPPED = (
    re.compile(r"Connection to \S+ closed by remote host"),
    re.compile(r"^Connection reset by \S+ port \d+"),
    re.compile(r"client_loop: send disconnect: "),
    re.compile(r"Timeout, server \S+ not responding"),
    re.compile(r"Read from remote host \S+: "),
    re.compile(r"packet_write_wait: "),
    re.compile(r"ssh_dispatch_run_fatal: "),
    re.compile(r"Broken pipe"),
    re.compile(r"Connection reset by peer"),
)
APT_LOCKED = (
    re.compile(r"Could not get lock /var/(lib/dpkg|lib/apt/lists|cache/apt/archives)/lock"),
    re.compile(r"Unable to acquire the dpkg frontend lock"),
    re.compile(r"Unable to lock the administration directory"),
    re.compile(r"dpkg frontend lock (is|was) locked by another process"),
    re.compile(r"dpkg status database is locked by another process"),
)

# ansible-playbook's exit statuses (ansible/cli/__init__.py, executor/task_queue_manager.py).
ANSIBLE_OK = 0
ANSIBLE_HOST_FAILED = 2
ANSIBLE_UNREACHABLE_OR_PARSE_ERROR = 4
ANSIBLE_UNREACHABLE_MARKER = "UNREACHABLE!"
# argparse's own usage error exits 2 as well; it is a bad command line, not a failed host.
ANSIBLE_USAGE_ERROR = re.compile(r"^ansible-playbook: error: ", re.MULTILINE)


def tail(text: str, lines: int = LOCK_TAIL_LINES) -> str:
    """The last non-empty ``lines`` of ``text``."""
    kept = [line.rstrip("\r") for line in text.strip().splitlines() if line.strip()]
    return "\n".join(kept[-lines:])


def first_match(patterns: tuple[re.Pattern[str], ...], text: str) -> str | None:
    """The first line of ``text`` that one of ``patterns`` matches, if any."""
    for line in text.splitlines():
        if any(pattern.search(line) for pattern in patterns):
            return line.strip()
    return None


def classify_ssh(returncode: int, stderr: str, stdout: str = "") -> Kind:
    """What ``ssh HOST COMMAND``'s exit status and output say (see the module docstring)."""
    if returncode == 0:
        return Kind.OK
    last = tail(stderr, SSH_TAIL_LINES)
    if returncode == SSH_EXIT_OWN_FAILURE:
        for kind, patterns in (
            (Kind.REFUSED, SSH_REFUSED),
            (Kind.UNREACHABLE, SSH_UNREACHABLE),
            (Kind.DROPPED, SSH_DROPPED),
        ):
            if first_match(patterns, last):
                return kind
    if first_match(APT_LOCKED, tail(stderr)) or first_match(APT_LOCKED, tail(stdout)):
        return Kind.LOCKED
    return Kind.VERDICT


def classify_playbook(returncode: int, output: str) -> Kind:
    """What ansible-playbook's exit status and its output say.

    0 ok; 2 a host failed (a verdict on the roles), unless it is argparse's usage error; 4 with
    ``UNREACHABLE!`` the host could not be reached (a transient), unless ssh could not log in
    (:attr:`Kind.REFUSED`, as for the harness's own ssh); everything else (4 without it is a
    parse error, 5 a bad option, 1 an Ansible error, 99 interrupted, 250 an unexpected
    exception) means ansible-playbook could not do its job, and says nothing about the guest.
    """
    if returncode == ANSIBLE_OK:
        return Kind.OK
    if returncode == ANSIBLE_HOST_FAILED and not ANSIBLE_USAGE_ERROR.search(output):
        return Kind.VERDICT
    if returncode == ANSIBLE_UNREACHABLE_OR_PARSE_ERROR and ANSIBLE_UNREACHABLE_MARKER in output:
        unreachable = [line for line in output.splitlines() if ANSIBLE_UNREACHABLE_MARKER in line]
        return Kind.REFUSED if first_match(SSH_REFUSED, "\n".join(unreachable)) else Kind.UNREACHABLE
    return Kind.BROKEN


def evidence_line(kind: Kind, text: str) -> str:
    """The line of ``text`` that shows ``kind``, for a log line or an error message."""
    patterns = {
        Kind.REFUSED: SSH_REFUSED,
        Kind.UNREACHABLE: SSH_UNREACHABLE,
        Kind.DROPPED: SSH_DROPPED,
        Kind.LOCKED: APT_LOCKED,
    }.get(kind, ())
    found = first_match(patterns, tail(text)) if patterns else None
    return (found or tail(text, 1) or "(no output)")[:300]


# -- the retry registry ------------------------------------------------------------------


@dataclass(frozen=True)
class Retry:
    kind: Kind
    what: str


# One process, one run: the summary reads the count before and after each phase.
_retries: list[Retry] = []


def retry_count() -> int:
    """How many retries this process has made so far."""
    return len(_retries)


def recorded_retries() -> tuple[Retry, ...]:
    """Every retry this process has made, oldest first."""
    return tuple(_retries)


def reset_retries() -> None:
    """Forget the retries made so far (for tests, and a driver that runs several runs)."""
    _retries.clear()


# -- the bounded retry -------------------------------------------------------------------


HINT: dict[Kind, str] = {
    Kind.UNREACHABLE: "the guest's sshd did not answer: see the serial console (python -m harness console)",
    Kind.DROPPED: "the guest kept closing the connection: did a role restart sshd, or the guest reboot?",
    Kind.LOCKED: "another apt or dpkg process in the guest held the lock (apt-daily? cloud-init?)",
}
# Every retry's log line starts so; a driver that reads a run's output counts them by it.
RETRY_MARK = "↻ retrying"


class Transient(Exception):
    """Raised by an attempt that met a transient; :func:`retrying` tries again."""

    def __init__(self, kind: Kind, detail: str) -> None:
        super().__init__(f"{kind.describe}: {detail}")
        self.kind = kind
        self.detail = detail


class TransientPersisted(HarnessError):
    """A transient came back after every retry: the environment is broken, not the guest."""

    def __init__(self, what: str, kind: Kind, attempts: int, detail: str) -> None:
        super().__init__(
            f"{what}: {kind.describe}, {attempts} times in a row (gave up after {attempts - 1} retries); "
            f"last: {detail}",
            hint=HINT.get(kind),
        )
        self.kind = kind
        self.attempts = attempts


def retrying(
    attempt: Callable[[], T],
    *,
    what: str,
    retries: int,
    interval: float,
    attempt_timeout: float,
) -> T:
    """Call ``attempt`` until it returns; each :class:`Transient` it raises is retried.

    At most ``retries`` retries, ``interval`` seconds apart, through the one polling loop. Each
    retry is logged and counted; when the bound runs out, :class:`TransientPersisted` names the
    transient and the count. ``attempt_timeout`` is the longest one attempt may take (its caller
    bounds it): the loop's own timeout covers every allowed attempt, so the count, not the
    clock, is what ends the retries.
    """
    failures = 0

    def probe() -> T:
        nonlocal failures
        try:
            return attempt()
        except Transient as met:
            failures += 1
            if failures > retries:
                raise TransientPersisted(what, met.kind, failures, met.detail) from met
            _retries.append(Retry(met.kind, what))
            log.info(
                f"{RETRY_MARK} {what}: {met.kind.describe} ({met.detail}); retry {failures} of {retries}"
            )
            raise NotYet(str(met)) from met

    window = (retries + 1) * (attempt_timeout + interval)
    return wait_until(probe, what=what, timeout=window, interval=interval)
