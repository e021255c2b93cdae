"""Run mmdebstrap to make a Debian root filesystem tarball from the archive."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from harness import proc
from harness.errors import HarnessError

# bookworm's keyring already holds the trixie keys (docs/platform.md).
ARCHIVE_KEYRING = Path("/usr/share/keyrings/debian-archive-keyring.gpg")
# dpkg without fsync: the rootfs is thrown away if the build fails anyway.
EATMYDATA_HOOKS = Path("/usr/share/mmdebstrap/hooks/eatmydata")
LOG_TAIL_LINES = 25


@dataclass(frozen=True)
class Bootstrap:
    """One mmdebstrap run: what to install from where, which hooks, and where the tar goes."""

    suite: str
    variant: str
    sources: tuple[str, ...]
    packages: tuple[str, ...]
    customize_hooks: tuple[str, ...]
    output: Path
    logfile: Path
    # mmdebstrap's chroot goes here (TMPDIR), inside the build's staging dir: if mmdebstrap is
    # killed before it unmounts /proc, /sys and /dev in it, the staging dir's cleanup does.
    scratch: Path
    # Run after the Essential packages, before the --include'd ones are installed.
    essential_hooks: tuple[str, ...] = ()


def run(spec: Bootstrap) -> None:
    """Build ``spec.output`` (a tar); mmdebstrap's output goes to ``spec.logfile`` only."""
    if not ARCHIVE_KEYRING.exists():
        raise HarnessError(f"{ARCHIVE_KEYRING} is missing", hint="apt-get install debian-archive-keyring")
    argv = [
        "mmdebstrap",
        "--verbose",
        "--format=tar",
        f"--variant={spec.variant}",
        f"--keyring={ARCHIVE_KEYRING}",
    ]
    if spec.packages:
        argv.append("--include=" + ",".join(spec.packages))
    if EATMYDATA_HOOKS.is_dir():
        argv.append(f"--hook-dir={EATMYDATA_HOOKS}")
    argv += [f"--essential-hook={hook}" for hook in spec.essential_hooks]
    argv += [f"--customize-hook={hook}" for hook in spec.customize_hooks]
    argv += [spec.suite, str(spec.output), *spec.sources]
    spec.scratch.mkdir(parents=True, exist_ok=True)
    status = proc.stream(argv, logfile=spec.logfile, echo=False, env={"TMPDIR": str(spec.scratch)})
    if status != 0:
        raise HarnessError(
            f"mmdebstrap failed with exit status {status} building {spec.output.name}\n"
            + _tail(spec.logfile),
            hint="read the build log (its path is logged above) for the failing step",
        )
    if not spec.output.is_file() or spec.output.stat().st_size == 0:
        raise HarnessError(f"mmdebstrap exited 0 but wrote no {spec.output}")


def _tail(logfile: Path, lines: int = LOG_TAIL_LINES) -> str:
    try:
        text = logfile.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""
    tail: Sequence[str] = text.rstrip().splitlines()[-lines:]
    return "  log (tail):\n    " + "\n    ".join(tail)


def write_hook(path: Path, script: str) -> Path:
    """Write an executable hook script; mmdebstrap execs it with the new root as ``$1``."""
    check_hook_path(path)
    path.write_text(script, encoding="utf-8")
    path.chmod(0o755)
    return path


def check_hook_path(path: Path) -> None:
    """mmdebstrap splits hook arguments on whitespace: refuse paths that contain any."""
    if any(c.isspace() for c in str(path)):
        raise HarnessError(
            f"the build path {path} contains whitespace, which mmdebstrap hooks cannot take",
            hint="set BOMA_CACHE_DIR to a path without spaces",
        )
