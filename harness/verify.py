"""The verify phase: the profile's pytest-testinfra suite against the VM, in and outside it.

The suite reaches the guest through the rendered inventory (``ansible://`` spec: the same
inventory Ansible used) and the controller-side probes read the run's state file for the
loopback forwards (``BOMA_RUN_STATE``).

A cycle verifies in :data:`PHASES`: the ``controller``-marked checks before the reboot (a host
without published ports may have none: that phase then has nothing to check, which is not an
error), then the whole suite after it (which must hold at least one check).
:func:`check_suite` proves both before anything boots.
"""

from __future__ import annotations

import json
import os
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from harness import log, paths, proc, report
from harness.config import Profile
from harness.errors import BadInput, HarnessError, VerificationFailed
from harness.inventory import RenderedInventory

ENV_RUN_STATE = "BOMA_RUN_STATE"
# Checks every profile gets, run beside its own suite (the reboot's proof inside the guest).
EVERY_HOST_SUITE = paths.SUITES_DIR / "every_host"
# pytest's exit statuses (pytest.ExitCode), read here without importing pytest.
PYTEST_OK = 0
PYTEST_TESTS_FAILED = 1
PYTEST_INTERRUPTED = 2  # also: errors during collection (a suite that does not import)
PYTEST_NO_TESTS = 5  # nothing collected, or every test deselected by -m

# Checks marked so run from the controller alone; the cycle runs them before the reboot too.
CONTROLLER_MARKER = "controller"

# Collection names a host for testinfra's `host` fixture but never connects to it: `local://`
# stands in for the VM, one host as the rendered inventory has, so the counts are the same.
COLLECT_HOSTS = "local://"
COLLECT_TIMEOUT = 120.0
# A whole suite against the VM: askari's takes under a minute even on a slow day.
SUITE_TIMEOUT = 900.0
COLLECT_ERROR_LINES = 15
# The suite's files run side by side (pytest-xdist, a file per worker, so that a module's
# fixtures and its one wait per port stay in one process): most checks wait on the guest, whose
# two vCPUs then serve two at once. askari's verify on one kept VM: 15.8 / 16.9 s with one
# process, 10.9 / 10.3 s with 2 workers, 11.0 s with 3 (2026-12-04). 0 runs them in pytest's own
# process (BOMA_VERIFY_WORKERS=0: a debugger, or print-debugging a check).
VERIFY_WORKERS = 2
ENV_WORKERS = "BOMA_VERIFY_WORKERS"
# pytest's JUnit message for a module that did not import (under pytest-xdist, a result).
JUNIT_COLLECTION_FAILURE = "collection failure"
_COLLECTED = re.compile(r"^(?:(?P<selected>\d+)/)?(?P<total>\d+) tests? collected")


class Outcome(StrEnum):
    """How a verify phase ended when it did not raise."""

    PASSED = "passed"
    NOTHING_SELECTED = "nothing-selected"  # the phase's marker selects no check of the suite


@dataclass(frozen=True)
class SuiteResult:
    outcome: Outcome
    message: str  # one line for the log, e.g. "no controller checks for this profile"
    junit: Path


@dataclass(frozen=True)
class VerifyPhase:
    """One pytest run of a cycle: its label (log and JUnit file names) and marker."""

    label: str
    marker: str | None
    required: bool  # must collect at least one check, or the phase proves nothing


BEFORE_REBOOT = VerifyPhase("verify-before-reboot", CONTROLLER_MARKER, required=False)
FINAL = VerifyPhase("verify", None, required=True)
PHASES = (BEFORE_REBOOT, FINAL)


def workers(environ: Mapping[str, str] = os.environ) -> int:
    """How many pytest-xdist workers run a suite: :data:`VERIFY_WORKERS`, or ``BOMA_VERIFY_WORKERS``."""
    raw = environ.get(ENV_WORKERS, "").strip()
    if not raw:
        return VERIFY_WORKERS
    if not raw.isdigit():
        raise BadInput(f"{ENV_WORKERS}={raw!r} is not a number of workers", hint="e.g. 0 (one process) or 2")
    return int(raw)


def pytest_argv(
    suite: Path,
    inventory: RenderedInventory,
    junit: Path,
    marker: str | None = None,
    also: tuple[Path, ...] = (),
    *,
    suite_name: str | None = None,
    parallel: int = VERIFY_WORKERS,
) -> list[str]:
    return [
        sys.executable,
        "-m",
        "pytest",
        str(suite),
        *(str(extra) for extra in also),
        f"--hosts={inventory.testinfra_spec}",
        "--sudo",
        f"--junitxml={junit}",
        "-p",
        "no:cacheprovider",
        "-rfEs",
        "-v",
        "-o",
        "junit_family=xunit2",
        *(["-o", f"junit_suite_name={suite_name}"] if suite_name else []),
        *(["-m", marker] if marker else []),
        *(["-n", str(parallel), "--dist", "loadfile"] if parallel else []),
    ]


def junit_suite_name(state_file: Path) -> str | None:
    """``<host>-<tier>``, the JUnit suite's name, from the machine's view the suite reads
    (``BOMA_RUN_STATE``: its profile and the run's tier); ``None`` (pytest's own) without one."""
    try:
        view = json.loads(state_file.read_text(encoding="utf-8"))
        return f"{view['host']}-{view['tier']}"
    except (OSError, ValueError, KeyError, TypeError):
        return None


def run_suite(
    suite: Path,
    inventory: RenderedInventory,
    state_file: Path,
    junit: Path,
    logfile: Path,
    *,
    marker: str | None = None,
    also: tuple[Path, ...] = (),
    suite_name: str | None = None,
) -> SuiteResult:
    """Run the suite (or only the checks with ``marker``) against the VM; the JUnit suite is
    named ``suite_name``, by default ``<host>-<tier>`` (:func:`junit_suite_name`).

    Returns :attr:`Outcome.PASSED`, or :attr:`Outcome.NOTHING_SELECTED` when ``marker`` selects
    no check. Raises :class:`VerificationFailed` (checks failed) or :class:`HarnessError`
    (pytest could not run the suite, or the whole suite holds no check: nothing was judged).
    """
    status = proc.stream(
        pytest_argv(
            suite,
            inventory,
            junit,
            marker,
            also,
            suite_name=suite_name or junit_suite_name(state_file),
            parallel=workers(),
        ),
        logfile=logfile,
        env={ENV_RUN_STATE: str(state_file), "PYTHONDONTWRITEBYTECODE": "1"},
        timeout=SUITE_TIMEOUT,
    )
    if status == PYTEST_OK:
        return SuiteResult(Outcome.PASSED, f"checks passed; see {junit}", junit)
    if status == PYTEST_TESTS_FAILED and (broken := not_collected(junit)):
        # Under pytest-xdist a module that does not import is an error among the results
        # (exit 1), not pytest's own exit 2: still the suite broken, not the VM judged.
        raise HarnessError(
            f"pytest could not run the suite {suite}: {', '.join(broken)} did not collect",
            hint=f"see {logfile}",
        )
    if status == PYTEST_TESTS_FAILED:
        raise VerificationFailed(f"checks failed against the VM; see {junit} and {logfile}")
    if status == PYTEST_NO_TESTS and marker:
        message = f"no {marker} checks for this profile in {suite}: nothing to check in this phase"
        log.info(message)
        return SuiteResult(Outcome.NOTHING_SELECTED, message, junit)
    if status == PYTEST_NO_TESTS:
        raise HarnessError(
            f"the suite {suite} holds no checks: the VM was not judged",
            hint="add test_*.py files to it (tests/integration/README.md)",
        )
    raise HarnessError(
        f"pytest could not run the suite {suite} (exit status {status})", hint=f"see {logfile}"
    )


def not_collected(junit: Path) -> list[str]:
    """The modules a JUnit file reports as collection failures (none if it cannot be read)."""
    _counts, checks = report.read_junit(junit)
    return [c.name for c in checks if c.outcome == "error" and c.message == JUNIT_COLLECTION_FAILURE]


def collect_argv(suite: Path, marker: str | None = None, hosts: str = COLLECT_HOSTS) -> list[str]:
    return [
        sys.executable,
        "-m",
        "pytest",
        str(suite),
        "--collect-only",
        "-q",
        f"--hosts={hosts}",
        "--sudo",
        "-p",
        "no:cacheprovider",
        *(["-m", marker] if marker else []),
    ]


def collected(suite: Path, marker: str | None = None, *, hosts: str = COLLECT_HOSTS) -> int:
    """How many checks pytest collects from ``suite`` (only those with ``marker``, if given),
    without any VM: testinfra makes its host objects at collection but connects only when a
    check runs. ``hosts`` may name the rendered inventory instead (testinfra then reads it
    with ``ansible-inventory``).

    Raises :class:`BadInput` when the suite does not collect (an import error, a bad
    parametrization) and :class:`HarnessError` when pytest itself could not run.
    """
    result = proc.run(
        collect_argv(suite, marker, hosts),
        check=False,
        quiet=True,
        timeout=COLLECT_TIMEOUT,
        env={"PYTHONDONTWRITEBYTECODE": "1"},
    )
    if result.returncode == PYTEST_NO_TESTS:
        return 0
    lines = result.stdout.splitlines()
    if result.returncode == PYTEST_INTERRUPTED:
        errors = [line for line in lines if line.startswith(("E ", "ERROR "))][-COLLECT_ERROR_LINES:]
        raise BadInput(
            f"the test suite {suite} does not collect: " + ("; ".join(errors) or "see pytest's output"),
            hint=f"run: {proc.render(collect_argv(suite, marker, hosts))}",
        )
    for line in reversed(lines) if result.returncode == PYTEST_OK else ():
        if match := _COLLECTED.match(line.strip()):
            return int(match["selected"] or match["total"])
    tail = "\n".join((result.stdout + result.stderr).strip().splitlines()[-COLLECT_ERROR_LINES:])
    raise HarnessError(
        f"pytest could not collect the suite {suite} (exit status {result.returncode})",
        hint=f"pytest said:\n{tail}" if tail else None,
    )


def check_suite(profile: Profile) -> dict[str, int]:
    """Collect the profile's suite for every phase of :data:`PHASES` before anything boots;
    return the count of checks per phase label. Raises :class:`BadInput` (exit 2) when a
    required phase (the final verify) would collect nothing, or the suite does not collect."""
    suite = profile.suite
    if suite is None:
        raise BadInput(
            f"profile {profile.name!r} is a client: it has no suite of its own and no cycle",
            hint="clients run in scenarios (scenarios/*.yml): python -m harness scenario --name NAME",
        )
    workers()  # a bad BOMA_VERIFY_WORKERS is refused now, not after a boot and an apply
    counts = {phase.label: collected(suite, phase.marker) for phase in PHASES}
    for phase in PHASES:
        if phase.required and counts[phase.label] == 0:
            raise BadInput(
                f"the test suite {suite} of host {profile.name!r} holds no checks: "
                "a cycle would judge nothing",
                hint="add test_*.py files to it (docs/runbooks/integration-testing.md, "
                "'Adding a host profile')",
            )
    log.info(
        f"suite {suite.name}: "
        + ", ".join(
            f"{phase.label} {counts[phase.label]} check(s)"
            + ("" if counts[phase.label] or phase.marker is None else f" (none marked {phase.marker})")
            for phase in PHASES
        )
    )
    return counts
