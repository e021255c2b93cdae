"""The two kinds of failure, kept apart so a person can tell them from the last line.

* :class:`HarnessError` — the harness or its environment broke (missing tool, boot timeout,
  libvirt error). Exit status 3, with a hint.
* :class:`BadInput` — the request itself is wrong (unknown host, malformed profile). Exit
  status 2; raised before anything is created.
* :class:`VerificationFailed` — the system under test is wrong. Exit status 1; the details are
  in pytest's report and in the evidence bundle.
"""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    OK = 0
    SUT_FAILED = 1
    BAD_INPUT = 2
    HARNESS_BROKE = 3
    INTERRUPTED = 130


class BomaError(Exception):
    """Base of every error the CLI turns into a one-line message."""

    exit_code: ExitCode = ExitCode.HARNESS_BROKE
    label = "harness error"

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def render(self) -> str:
        text = f"{self.label}: {self.message}"
        if self.hint:
            text += f"\n  hint: {self.hint}"
        return text


class HarnessError(BomaError):
    """The harness or the environment broke; the system under test was not judged."""


class BadInput(BomaError):
    """Input that can never work (unknown host, tier, malformed YAML); nothing was created."""

    exit_code = ExitCode.BAD_INPUT
    label = "bad input"


class VerificationFailed(BomaError):
    """The system under test is wrong: a check failed against the VM."""

    exit_code = ExitCode.SUT_FAILED
    label = "FAILED (system under test)"
