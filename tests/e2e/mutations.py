"""The generic checks catch what nobody wrote a test for: three mutants, each must fail a cycle.

Each mutant is made in a throwaway git worktree of HEAD, then one full askari/internal cycle
runs there (``python -m harness cycle --no-keep``). The mutant is caught only if the cycle
exits 1 (the system under test is wrong) in the expected phase, with a reason that names
what the mutant broke:

* ``always-changed``: base gains a ``command`` task without ``changed_when`` → the
  idempotence check after the reboot fails, naming that task;
* ``started-not-enabled``: base starts a service it never enables, and askari's hand-written
  checks are gone → the state diff fails, naming the unit;
* ``fix-reverted``: the incident's fix is taken out of docker_host (as ``revert_fix.py``
  does), and askari's hand-written checks are gone → the state diff fails, naming the
  published port that does not answer. (With the fix gone from the role, the port is dead
  before the reboot as well, so there is no difference to see: what catches it is that a
  port the profile publishes must answer after the reboot.)

    .venv/bin/python tests/e2e/mutations.py [--only NAME]     # or: nox -s e2e_mutations

One VM at a time, one full cycle per mutant (10 to 25 minutes each under TCG). Writes
docs/bench/<date>-mutations.json and .md; exit status 0 only if every mutant was caught.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from revert_fix import revert_the_fix, throwaway_worktree

from harness import log, paths, proc
from harness.errors import ExitCode

CYCLE_TIMEOUT = 3900.0
REPORT_DIR = paths.REPO / "docs" / "bench"
BASE_TASKS = Path("roles/base/tasks/main.yml")
PROFILE = Path("profiles/askari.yml")
ALWAYS_CHANGED_TASK = "Mutant: a command that always reports changed"
MUTANT_UNIT = "boma-mutant.service"

ALWAYS_CHANGED = f"""
- name: "{ALWAYS_CHANGED_TASK}"
  ansible.builtin.command: /bin/true
"""

STARTED_NOT_ENABLED = f"""
- name: "Mutant: install a service unit"
  ansible.builtin.copy:
    dest: /etc/systemd/system/{MUTANT_UNIT}
    mode: "0644"
    content: |
      [Unit]
      Description=boma mutant: started by the role, never enabled
      [Service]
      ExecStart=/bin/sleep infinity
      [Install]
      WantedBy=multi-user.target

- name: "Mutant: start it without enabling it"
  ansible.builtin.systemd_service:
    name: {MUTANT_UNIT}
    state: started
    enabled: false
    daemon_reload: true
"""


def append_to_base(tree: Path, tasks: str) -> None:
    path = tree / BASE_TASKS
    path.write_text(path.read_text(encoding="utf-8").rstrip("\n") + "\n" + tasks, encoding="utf-8")


def without_askaris_checks(tree: Path) -> None:
    """askari's own suite goes; the profile then runs only the checks every host gets."""
    for test in (tree / "tests/integration/askari").glob("test_*.py"):
        test.unlink()
    path = tree / PROFILE
    text = path.read_text(encoding="utf-8")
    if "suite: askari\n" not in text:
        raise SystemExit(f"{PROFILE} no longer says 'suite: askari'; update this script")
    path.write_text(text.replace("suite: askari\n", "suite: every_host\n"), encoding="utf-8")


def always_changed(tree: Path) -> None:
    append_to_base(tree, ALWAYS_CHANGED)


def started_not_enabled(tree: Path) -> None:
    append_to_base(tree, STARTED_NOT_ENABLED)
    without_askaris_checks(tree)


def fix_reverted(tree: Path) -> None:
    revert_the_fix(tree)
    without_askaris_checks(tree)


@dataclass(frozen=True)
class Mutant:
    name: str
    what: str
    mutate: Callable[[Path], None]
    phase: str  # the phase that must fail
    names: str  # what the failure's reason must name


MUTANTS = (
    Mutant(
        "always-changed", f"base: {ALWAYS_CHANGED_TASK!r}", always_changed, "idempotence", ALWAYS_CHANGED_TASK
    ),
    Mutant(
        "started-not-enabled",
        f"base starts {MUTANT_UNIT} without enabling it; askari's own checks removed",
        started_not_enabled,
        "state-diff",
        f"units/{MUTANT_UNIT}",
    ),
    Mutant(
        "fix-reverted",
        "docker_host's container-forward fix reverted; askari's own checks removed",
        fix_reverted,
        "state-diff",
        "ports/https (443)",
    ),
)


@dataclass
class Result:
    mutant: str
    what: str
    expected: str
    status: int
    failed_phase: str | None
    reason: str | None
    seconds: float
    caught: bool
    artifacts: str


def run_mutant(mutant: Mutant, artifacts: Path) -> Result:
    out = artifacts / mutant.name
    out.mkdir(parents=True)
    started = time.monotonic()
    with throwaway_worktree(f"boma-mutant-{mutant.name}-") as tree:
        mutant.mutate(tree)
        diff = proc.run(["git", "diff", "--stat"], cwd=tree, quiet=True).stdout
        log.info(f"mutant {mutant.name}: {mutant.what}\n{diff}")
        status = proc.stream(
            [sys.executable, "-m", "harness", "cycle", "--host", "askari", "--certs", "internal",
             "--no-keep"],
            logfile=out / "cycle.log",
            cwd=tree,
            env={"BOMA_ARTIFACTS_DIR": str(out)},
            timeout=CYCLE_TIMEOUT,
        )
    summaries = sorted(out.glob("*/summary.json"))
    summary = json.loads(summaries[-1].read_text(encoding="utf-8")) if summaries else {}
    phase, reason = summary.get("failed_phase"), summary.get("reason")
    caught = status == ExitCode.SUT_FAILED and phase == mutant.phase and mutant.names in (reason or "")
    return Result(
        mutant=mutant.name,
        what=mutant.what,
        expected=f"exit 1 in {mutant.phase}, naming {mutant.names!r}",
        status=status,
        failed_phase=phase,
        reason=reason,
        seconds=round(time.monotonic() - started, 1),
        caught=caught,
        artifacts=str(out.relative_to(paths.REPO) if out.is_relative_to(paths.REPO) else out),
    )


def write_report(results: list[Result]) -> Path:
    day = time.strftime("%Y-%m-%d")
    revision = proc.run(["git", "rev-parse", "--short", "HEAD"], cwd=paths.REPO, quiet=True).stdout.strip()
    REPORT_DIR.mkdir(parents=True, exist_ok=True)
    path = REPORT_DIR / f"{day}-mutations.json"
    document = {
        "date": day,
        "revision": revision,
        "command": "nox -s e2e_mutations",
        "results": [asdict(r) for r in results],
    }
    path.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
    lines = [
        f"# Mutations, {day} (revision {revision})",
        "",
        "Each mutant ran one full askari/internal cycle in a throwaway worktree "
        "(`nox -s e2e_mutations`). Caught = exit 1 in the expected phase, naming the mutant.",
        "",
        "| mutant | expected | exit | failed phase | caught | seconds |",
        "|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {r.mutant} | {r.expected} | {r.status} | {r.failed_phase} | {'yes' if r.caught else 'NO'} "
        f"| {r.seconds:.0f} |"
        for r in results
    ]
    lines += ["", "Reasons, as the cycle printed them:", ""]
    lines += [f"- **{r.mutant}**: {r.reason}" for r in results]
    path.with_suffix(".md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--only", choices=[m.name for m in MUTANTS], action="append", help="run only these")
    args = parser.parse_args(argv)
    chosen = [m for m in MUTANTS if not args.only or m.name in args.only]
    artifacts = paths.artifacts_dir() / f"mutations-{time.strftime('%Y%m%d-%H%M%S')}"
    results = []
    for mutant in chosen:
        result = run_mutant(mutant, artifacts)
        verdict = "caught" if result.caught else "MISSED"
        log.info(
            f"{mutant.name}: {verdict} (exit {result.status}, phase {result.failed_phase}): {result.reason}"
        )
        results.append(result)
    report = write_report(results)
    missed = [r.mutant for r in results if not r.caught]
    log.info(f"report: {report}; " + (f"MISSED: {', '.join(missed)}" if missed else "every mutant caught"))
    return 1 if missed else 0


if __name__ == "__main__":
    raise SystemExit(main())
