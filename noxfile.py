"""boma's sessions: the integration matrix (host profile × cert tier), lint and unit tests.

`nox -l` lists them; posargs reach the harness:
    nox -s "integration(host='askari', certs='internal')" -- --keep
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

import nox

if TYPE_CHECKING:
    from harness.matrix import Broken, Cell, ScenarioCell

sys.path.insert(0, str(Path(__file__).resolve().parent))  # nox does not put the repo on sys.path

nox.options.sessions = ["lint", "unit"]
nox.options.reuse_venv = "yes"  # libvirt-python compiles on install; reuse it between runs
nox.options.error_on_missing_interpreters = True


def _survey() -> tuple[list[Cell], list[Broken], list[ScenarioCell]]:
    """The valid cells, and the files that keep cells out, validated by harness/config.py.

    Never raises: lint and unit must stay listed whatever a profile or tier file says. Each
    broken file is printed on stderr with its first error, and is a `broken(file=...)`
    session whose run prints every error and fails."""
    try:
        from harness.matrix import survey  # noqa: PLC0415  (pydantic, PyYAML: the venv's nox)
    except ImportError as exc:
        print(
            f"boma: no integration sessions: {exc}; use the venv's nox (make venv; .venv/bin/nox)",
            file=sys.stderr,
        )
        return [], [], []
    try:
        found = survey()
    except Exception as exc:  # a bug in the survey: say so, and keep lint and unit listed
        print(f"boma: no integration sessions: the matrix could not be read: {exc!r}", file=sys.stderr)
        return [], [], []
    for broken in found.broken:
        print(f"boma: {broken.warning()}", file=sys.stderr)
    return found.cells, found.broken, found.scenarios


MATRIX, BROKEN, SCENARIOS = _survey()
# On Ctrl-C nox by default sends SIGTERM 0.3 s after the interrupt and SIGKILL 0.2 s later,
# which cuts the harness's teardown short and leaks the VM. The harness handles the signal
# itself and its teardown is bounded; nox only steps in if that bound is broken.
HARNESS_SIGNALS = {"interrupt_timeout": 120.0, "terminate_timeout": 30.0}
# The unit suite's processes at most: its tests are small, more workers than this cost their
# start-up for nothing.
UNIT_WORKERS = 4


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
@nox.parametrize(
    ["name", "certs"],
    [nox.param(c.name, c.certs, id=None) for c in SCENARIOS],
)
def scenario(session: nox.Session, name: str, certs: str) -> None:
    """Boot a scenario's machines as one run (scenarios/), apply, reboot for real, verify."""
    cell = next(c for c in SCENARIOS if (c.name, c.certs) == (name, certs))
    session.log(cell.description)
    session.install("-r", "requirements.txt")
    session.run(
        "python",
        "-m",
        "harness",
        "scenario",
        "--name",
        name,
        "--certs",
        certs,
        *session.posargs,
        **HARNESS_SIGNALS,
    )


if BROKEN:

    @nox.session(venv_backend="none")
    @nox.parametrize("file", [nox.param(b.file, id=None) for b in BROKEN])
    def broken(session: nox.Session, file: str) -> None:
        """A profile or tier file with errors, so cells are missing: run it to see every error."""
        problem = next(b for b in BROKEN if b.file == file)
        session.error("\n".join((f"{file} {problem.left_out}:", *problem.problems)))


@nox.session
def e2e_revert_fix(session: nox.Session) -> None:
    """On demand: with the fix reverted in roles/docker_host, the incident test must fail in GREEN."""
    session.install("-r", "requirements.txt")
    session.run("python", "tests/e2e/revert_fix.py", **HARNESS_SIGNALS)


@nox.session
def e2e_scenario(session: nox.Session) -> None:
    """On demand: the incident from the peer of scenario offsite-peer: RED must fail, GREEN pass."""
    session.install("-r", "requirements.txt")
    session.run("pytest", "tests/e2e", "-m", "scenario", "-v", "-s", *session.posargs, **HARNESS_SIGNALS)


@nox.session
def e2e_mutations(session: nox.Session) -> None:
    """On demand: three mutants, one cycle each; the state diff and idempotence must catch all.

    A task that always changes, a service started but never enabled, the incident's fix reverted.
    """
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
def bench(session: nox.Session) -> None:
    """On demand: the baseline and the fast configuration back to back, ratios into docs/bench/."""
    session.install("-r", "requirements.txt")
    session.run("python", "tests/bench/bench.py", *session.posargs, **HARNESS_SIGNALS)


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
    """Fast unit tests: no VM (libvirt's test:///default driver at most), on up to four cores
    (pytest-xdist: 79 s serial against 46 s on 2 cores, 2026-12-03). `-- -n 0` runs them in one process."""
    session.install("-r", "requirements.txt")
    session.run("pytest", "tests/unit", "-n", "auto", "--maxprocesses", str(UNIT_WORKERS), *session.posargs)


@nox.session
def e2e(session: nox.Session) -> None:
    """The 2026-06-17 incident, end to end: RED must fail for the right reason, GREEN must pass."""
    session.install("-r", "requirements.txt")
    # -s: the harness logs each phase as it goes; a quiet 15-minute test looks hung.
    session.run("pytest", "tests/e2e", "-m", "e2e", "-v", "-s", *session.posargs, **HARNESS_SIGNALS)
