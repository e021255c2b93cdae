"""The incident test guards the fix itself, not its toggle: revert the fix, the test must fail.

In a throwaway git worktree of HEAD, the container-forward fix is taken out of
``roles/docker_host`` the way a careless refactor would lose it (its task and its template
deleted; the toggle left alone). The incident test then runs there on a real VM. This script
passes only if that test FAILS, and fails for the right reason: RED behaved as always, and
GREEN's published-port check is among GREEN's failures.

    .venv/bin/python tests/e2e/revert_fix.py        # or: nox -s e2e_revert_fix

One VM, RED then GREEN, about 11 minutes under TCG. The worktree is removed at the end;
the mutant's artifacts stay in ``artifacts/revert-fix-<time>/``.
"""

from __future__ import annotations

import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import yaml

# Run as a script from anywhere: the repository (harness) and this folder (the incident test).
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from test_incident import PORT_CHECK, failed_checks

from harness import log, paths, proc

FIX_TASK = "Let container traffic through base's forward chain"
FIX_TEMPLATE = Path("roles/docker_host/templates/etc/nftables.d/10-docker-forward.nft.j2")
TASKS = Path("roles/docker_host/tasks/main.yml")
E2E_TIMEOUT = 3600.0


def revert_the_fix(tree: Path) -> None:
    """Delete the fix's task and template in ``tree``; refuse if the role no longer has them."""
    tasks = yaml.safe_load((tree / TASKS).read_text(encoding="utf-8"))
    kept = [task for task in tasks if task.get("name") != FIX_TASK]
    if len(kept) != len(tasks) - 1 or not (tree / FIX_TEMPLATE).is_file():
        raise SystemExit(f"the fix is no longer where this script looks ({TASKS}: {FIX_TASK!r}); update it")
    (tree / TASKS).write_text("---\n" + yaml.safe_dump(kept, sort_keys=False), encoding="utf-8")
    (tree / FIX_TEMPLATE).unlink()


@contextmanager
def throwaway_worktree(prefix: str) -> Iterator[Path]:
    """A detached git worktree of HEAD in a temporary folder, removed however the block ends."""
    with tempfile.TemporaryDirectory(prefix=prefix) as scratch:
        tree = Path(scratch) / "tree"
        proc.run(["git", "worktree", "add", "--detach", str(tree), "HEAD"], cwd=paths.REPO, quiet=True)
        try:
            yield tree
        finally:
            proc.run(["git", "worktree", "remove", "--force", str(tree)], cwd=paths.REPO, quiet=True)


def main() -> int:
    artifacts = paths.artifacts_dir() / f"revert-fix-{time.strftime('%Y%m%d-%H%M%S')}"
    artifacts.mkdir(parents=True)
    with throwaway_worktree("boma-revert-fix-") as tree:
        revert_the_fix(tree)
        log.info(f"fix reverted in {tree / TASKS} (task and template deleted); running the incident test")
        status = proc.stream(
            [
                sys.executable,
                "-m",
                "pytest",
                "tests/e2e/test_incident.py",
                "-p",
                "no:cacheprovider",
                "-rfE",
            ],
            logfile=artifacts / "e2e.log",
            cwd=tree,
            env={"BOMA_ARTIFACTS_DIR": str(artifacts)},
            timeout=E2E_TIMEOUT,
        )
    if status == 0:
        log.info("FAILED: the incident test PASSED with the fix reverted: it guards nothing")
        return 1
    red = list(artifacts.glob("*/junit-verify-red.xml"))
    green = list(artifacts.glob("*/junit-verify-green.xml"))
    if not red or not green:
        log.info(
            f"FAILED: the incident test broke before GREEN's checks ran, not on the fix; see {artifacts}"
        )
        return 1
    green_failed = failed_checks(green[0])
    if PORT_CHECK not in green_failed:
        log.info(
            f"FAILED: GREEN failed, but not on the published port ({sorted(green_failed)}); see {artifacts}"
        )
        return 1
    log.info(
        f"PASS: caught: with the fix reverted, GREEN failed {sorted(green_failed)}; artifacts in {artifacts}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
