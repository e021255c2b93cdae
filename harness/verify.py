"""The verify phase: the profile's pytest-testinfra suite against the VM, in and outside it.

The suite reaches the guest through the rendered inventory (``ansible://`` spec: the same
inventory Ansible used) and the controller-side probes read the run's state file for the
loopback forwards (``BOMA_RUN_STATE``).
"""

from __future__ import annotations

import sys
from pathlib import Path

from harness import proc
from harness.errors import HarnessError, VerificationFailed
from harness.inventory import RenderedInventory

ENV_RUN_STATE = "BOMA_RUN_STATE"
PYTEST_TESTS_FAILED = 1


# Checks marked so run from the controller alone; the cycle runs them before the reboot too.
CONTROLLER_MARKER = "controller"


def pytest_argv(
    suite: Path, inventory: RenderedInventory, junit: Path, marker: str | None = None
) -> list[str]:
    return [
        sys.executable,
        "-m",
        "pytest",
        str(suite),
        f"--hosts={inventory.testinfra_spec}",
        "--sudo",
        f"--junitxml={junit}",
        "-p",
        "no:cacheprovider",
        "-rfEs",
        "-v",
        "-o",
        "junit_family=xunit2",
        *(["-m", marker] if marker else []),
    ]


def run_suite(
    suite: Path,
    inventory: RenderedInventory,
    state_file: Path,
    junit: Path,
    logfile: Path,
    *,
    marker: str | None = None,
) -> None:
    """Pass, or raise :class:`VerificationFailed` (checks failed) or :class:`HarnessError`
    (pytest itself could not run the suite)."""
    status = proc.stream(
        pytest_argv(suite, inventory, junit, marker),
        logfile=logfile,
        env={ENV_RUN_STATE: str(state_file), "PYTHONDONTWRITEBYTECODE": "1"},
    )
    if status == PYTEST_TESTS_FAILED:
        raise VerificationFailed(f"checks failed against the VM; see {junit} and {logfile}")
    if status != 0:
        raise HarnessError(
            f"pytest could not run the suite {suite} (exit status {status})", hint=f"see {logfile}"
        )
