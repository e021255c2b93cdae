"""boma's sessions: the integration matrix (host profile × cert tier), lint and unit tests.

`nox -l` lists them; posargs reach the harness:
    nox -s "integration(host='askari', certs='internal')" -- --keep
"""

from __future__ import annotations

import sys
from pathlib import Path

import nox

sys.path.insert(0, str(Path(__file__).resolve().parent))  # nox does not put the repo on sys.path
from harness.matrix import cells  # stdlib-only: listing needs nothing installed

nox.options.sessions = ["lint", "unit"]
nox.options.reuse_venv = "yes"  # libvirt-python compiles on install; reuse it between runs
nox.options.error_on_missing_interpreters = True

MATRIX = cells()
# On Ctrl-C nox by default sends SIGTERM 0.3 s after the interrupt and SIGKILL 0.2 s later,
# which cuts the harness's teardown short and leaks the VM. The harness handles the signal
# itself and its teardown is bounded; nox only steps in if that bound is broken.
HARNESS_SIGNALS = {"interrupt_timeout": 120.0, "terminate_timeout": 30.0}


@nox.session
@nox.parametrize(
    ["host", "certs"],
    [nox.param(c.host, c.certs, id=None) for c in MATRIX],
)
def integration(session: nox.Session, host: str, certs: str) -> None:
    """Boot a VM for one host profile and cert tier, apply, reboot for real, verify."""
    cell = next(c for c in MATRIX if (c.host, c.certs) == (host, certs))
    session.log(cell.description)  # nox -l can show one docstring per parametrized session only
    if reason := cell.skip_reason():
        session.skip(reason)
    session.install("-r", "requirements.txt")
    session.run(
        "python",
        "-m",
        "harness",
        "cycle",
        "--host",
        host,
        "--certs",
        certs,
        *session.posargs,
        **HARNESS_SIGNALS,
    )


@nox.session
def e2e_revert_fix(session: nox.Session) -> None:
    """On demand: with the fix reverted in roles/docker_host, the incident test must fail in GREEN."""
    session.install("-r", "requirements.txt")
    session.run("python", "tests/e2e/revert_fix.py", **HARNESS_SIGNALS)


@nox.session
def e2e_mutations(session: nox.Session) -> None:
    """On demand: three mutants (a task that always changes, a service never enabled, the fix
    reverted), one cycle each; the idempotence check and the state diff must catch every one."""
    session.install("-r", "requirements.txt")
    session.run("python", "tests/e2e/mutations.py", *session.posargs, **HARNESS_SIGNALS)


@nox.session
def torture(session: nox.Session) -> None:
    """On demand: cancel, kill, race and starve real runs; count leaks into docs/bench/."""
    session.install("-r", "requirements.txt")
    session.run("python", "tests/torture/torture.py", *session.posargs, **HARNESS_SIGNALS)


@nox.session
def soak(session: nox.Session) -> None:
    """On demand: N boots (--boots N) or N full cycles (--cycles N) back to back; flakes counted."""
    session.install("-r", "requirements.txt")
    session.run("python", "tests/soak/soak.py", *(session.posargs or ["--boots", "20"]), **HARNESS_SIGNALS)


@nox.session
def lint(session: nox.Session) -> None:
    """ruff, mypy --strict on harness/, ansible-lint, yamllint, the tag check, actionlint."""
    session.install("-r", "requirements-dev.txt")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", "harness", "noxfile.py")
    session.run("mypy")
    session.run("yamllint", "-s", ".")
    session.run("ansible-lint")
    session.run("python", "tests/check_tags.py")
    for playbook in ("site.yml", "offsite.yml", "workstation.yml"):
        session.run(
            "ansible-playbook",
            "-i",
            "inventories/production",
            "--syntax-check",
            f"playbooks/{playbook}",
            env={"ANSIBLE_CONFIG": "ansible.cfg"},
        )
    session.run("actionlint")


@nox.session
def unit(session: nox.Session) -> None:
    """Fast unit tests: no VM (libvirt's test:///default driver at most)."""
    session.install("-r", "requirements.txt")
    session.run("pytest", "tests/unit", *session.posargs)


@nox.session
def e2e(session: nox.Session) -> None:
    """The 2026-06-17 incident, end to end: RED must fail for the right reason, GREEN must pass."""
    session.install("-r", "requirements.txt")
    # -s: the harness logs each phase as it goes; a quiet 15-minute test looks hung.
    session.run("pytest", "tests/e2e", "-m", "e2e", "-v", "-s", *session.posargs, **HARNESS_SIGNALS)
