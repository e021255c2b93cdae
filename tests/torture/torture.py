"""The torture suite: cancel, kill, race and starve real runs, then count what they left behind.

    python tests/torture/torture.py [--case NAME ...] [--host askari]     (or: nox -s torture)

Each case starts the harness through a real entry point, induces its cause at a named moment
(a line of the harness log, e.g. the start of a phase), waits for the exit, runs what a CI job
would run afterwards (if anything), and audits the machine: test domains, leftover processes
(QEMU, Pebble, Ansible, pytest, anything carrying a run's tag), run directories, secrets files,
loop devices and mounts, and a sentinel token searched in everything the run wrote and in the
environment of every surviving process. It writes docs/bench/<date>-torture.json and .md.

It boots VMs (one at a time) and takes about three minutes a case on a slow machine.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from harness import paths  # noqa: E402

PY = str(REPO / ".venv" / "bin" / "python")
NOX = str(REPO / ".venv" / "bin" / "nox")
SENTINEL = "sentinel-torture-7f3a9c2e51"
CAUSE_TIMEOUT = 1200.0  # the longest wait for a case's moment (a cold apply under TCG)
EXIT_TIMEOUT = 300.0
GITHUB_TERM_AFTER = 2.5  # GitHub: SIGINT to the step's shell, SIGTERM, then the tree killed
GITHUB_KILL_AFTER = 10.0


@dataclass
class Row:
    case: str
    entry: str
    exit_status: int | None = None
    seconds_cause_to_exit: float | None = None
    leaked_domains: list[str] = field(default_factory=list)
    leaked_processes: list[str] = field(default_factory=list)
    leaked_files: list[str] = field(default_factory=list)
    secrets_found: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        return not (self.leaked_domains or self.leaked_processes or self.leaked_files or self.secrets_found)


class Harness:
    """One started entry point, in its own process group like a terminal's foreground job."""

    def __init__(self, argv: list[str], log: Path, env: dict[str, str] | None = None) -> None:
        self.log = log
        self.handle = log.open("w", encoding="utf-8")
        self.proc = subprocess.Popen(
            argv,
            cwd=REPO,
            stdout=self.handle,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**os.environ, **(env or {})},
            start_new_session=True,
        )

    def text(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")

    def wait_for(self, pattern: str, timeout: float = CAUSE_TIMEOUT) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if re.search(pattern, self.text()):
                return True
            if self.proc.poll() is not None:
                return False
            time.sleep(0.5)
        return False

    def signal_group(self, signum: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signum)

    def wait_exit(self, timeout: float = EXIT_TIMEOUT) -> int | None:
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.signal_group(signal.SIGKILL)
            return None
        finally:
            self.handle.flush()

    def harness_pid(self) -> int | None:
        """The `python -m harness` process under this entry point."""
        out = subprocess.run(
            ["pgrep", "-f", "-g", str(self.proc.pid), "-m harness"],
            capture_output=True,
            text=True,
            check=False,
        ).stdout.split()
        return int(out[0]) if out else None


def verdict_line(text: str) -> str:
    """The harness's own last word: its verdict line, as a person reads it."""
    lines = [
        line
        for line in text.splitlines()
        if re.match(r"(harness error|bad input|interrupted|FAILED|PASS)", line)
    ]
    return (lines or text.strip().splitlines() or ["(no output)"])[-1][:200]


def audit(row: Row, since: float) -> None:
    """What is left on the machine, and where the sentinel shows up."""
    listed = subprocess.run(
        [PY, "-m", "harness", "list", "--json"], cwd=REPO, capture_output=True, text=True, check=False
    )
    with contextlib.suppress(json.JSONDecodeError):
        data = json.loads(listed.stdout)
        row.leaked_domains = [m["domain"] for r in data["runs"] for m in r["machines"]]
        row.leaked_domains += [s["domain"] for s in data["stray_domains"]]
        row.leaked_files += [f"run {r['run']} ({r['state']})" for r in data["runs"]]
    procs = subprocess.run(["ps", "-eo", "pid,args"], capture_output=True, text=True, check=False).stdout
    for line in procs.splitlines()[1:]:
        if (
            re.search(r"qemu-system|pebble|ansible-playbook|-m pytest|-m harness", line)
            and "torture" not in line
        ):
            row.leaked_processes.append(line.strip()[:160])
    for pid in (p for p in os.listdir("/proc") if p.isdigit()):
        with contextlib.suppress(OSError):
            environ = Path(f"/proc/{pid}/environ").read_bytes()
            if b"BOMA_RUN=" in environ and int(pid) != os.getpid():
                row.leaked_processes.append(f"pid {pid} tagged {environ.split(b'BOMA_RUN=')[1][:8].decode()}")
            if SENTINEL.encode() in environ and int(pid) not in (os.getpid(), os.getppid()):
                row.secrets_found.append(f"environment of pid {pid}")
    runs = paths.runs_dir()
    row.leaked_files += [str(p) for p in runs.glob("*/secrets.yml")]
    loops = subprocess.run(["losetup", "-a"], capture_output=True, text=True, check=False).stdout
    row.leaked_files += [line for line in loops.splitlines() if "boma" in line]
    row.leaked_files += [line for line in Path("/proc/mounts").read_text().splitlines() if "boma" in line]
    for root in (paths.artifacts_dir(), runs):
        for file in root.rglob("*") if root.is_dir() else []:
            with contextlib.suppress(OSError):
                if (
                    file.is_file()
                    and file.stat().st_mtime >= since
                    and SENTINEL.encode() in file.read_bytes()
                ):
                    row.secrets_found.append(str(file))
    row.leaked_processes = sorted(set(row.leaked_processes))


# -- the cases -----------------------------------------------------------------------------------

CYCLE = [PY, "-m", "harness", "cycle", "--certs", "internal"]


def entry(name: str, host: str) -> list[str]:
    return {
        "harness": [*CYCLE, "--host", host],
        "nox": [NOX, "-s", f"integration(host='{host}', certs='internal')"],
        "make": ["make", "test-integration", f"HOST={host}"],
    }[name]


def ctrl_c(row: Row, host: str, entry_name: str, moment: str, work: Path) -> None:
    """A terminal Ctrl-C: SIGINT to the whole foreground process group, at ``moment``."""
    h = Harness(entry(entry_name, host), work / f"{row.case}.log", {"GANDI_BEARER_TOKEN": SENTINEL})
    if not h.wait_for(moment):
        row.notes.append(f"never reached {moment!r}")
    cause = time.monotonic()
    h.signal_group(signal.SIGINT)
    row.exit_status = h.wait_exit()
    row.seconds_cause_to_exit = round(time.monotonic() - cause, 1)
    row.notes.append(verdict_line(h.text()))
    if "interrupted" not in h.text():
        row.notes.append("no 'interrupted' verdict in the log")


def github_cancel(row: Row, host: str, work: Path) -> None:
    """GitHub's cancel: SIGINT to the step's shell, SIGTERM, the tree killed ~10 s later; then
    the workflow's `if: always()` cleanup step."""
    step = [
        "bash",
        "-e",
        "-c",
        f"{NOX} --session \"integration(host='{host}', certs='internal')\" -- --no-keep",
    ]
    h = Harness(step, work / f"{row.case}.log")
    h.wait_for(r"▶ apply")
    cause = time.monotonic()
    os.kill(h.proc.pid, signal.SIGINT)
    time.sleep(GITHUB_TERM_AFTER)
    with contextlib.suppress(ProcessLookupError):
        os.kill(h.proc.pid, signal.SIGTERM)
    time.sleep(GITHUB_KILL_AFTER - GITHUB_TERM_AFTER)
    h.signal_group(signal.SIGKILL)
    row.exit_status = h.wait_exit()
    subprocess.run([PY, "-m", "harness", "prune"], cwd=REPO, check=False, capture_output=True)
    row.seconds_cause_to_exit = round(time.monotonic() - cause, 1)


def sigkill_then_new_run(row: Row, host: str, moment: str, work: Path) -> None:
    """SIGKILL of the harness itself; the next run must start without `prune`."""
    h = Harness([*CYCLE, "--host", host], work / f"{row.case}.log")
    h.wait_for(moment)
    cause = time.monotonic()
    h.proc.send_signal(signal.SIGKILL)
    row.exit_status = h.wait_exit()
    row.seconds_cause_to_exit = round(time.monotonic() - cause, 1)
    nxt = Harness([PY, "-m", "harness", "up", "--host", host], work / f"{row.case}-next.log")
    status = nxt.wait_exit(CAUSE_TIMEOUT)
    row.notes.append(
        f"the next `up` exited {status}" + (", reaping the killed run" if "reaping run" in nxt.text() else "")
    )
    subprocess.run([PY, "-m", "harness", "down"], cwd=REPO, check=False, capture_output=True)


def two_at_once(row: Row, host: str, work: Path) -> None:
    first = Harness([PY, "-m", "harness", "up", "--host", host], work / f"{row.case}-1.log")
    time.sleep(0.1)
    second = Harness([PY, "-m", "harness", "up", "--host", host], work / f"{row.case}-2.log")
    row.exit_status = second.wait_exit(60)
    row.notes.append("second: " + verdict_line(second.text()))
    cause = time.monotonic()
    first.wait_for(r"▶ wait for SSH")
    first.signal_group(signal.SIGINT)
    first.wait_exit()
    row.seconds_cause_to_exit = round(time.monotonic() - cause, 1)


def prune_during_run(row: Row, host: str, work: Path) -> None:
    live = Harness([PY, "-m", "harness", "up", "--host", host], work / f"{row.case}.log")
    live.wait_for(r"▶ wait for SSH")
    pruned = subprocess.run(
        [PY, "-m", "harness", "prune"], cwd=REPO, capture_output=True, text=True, check=False
    )
    row.notes.append(
        f"prune exited {pruned.returncode}: " + (pruned.stderr.strip().splitlines() or [""])[-1][:160]
    )
    if "in use by" not in pruned.stderr:
        row.notes.append("prune did not refuse the live run")
    cause = time.monotonic()
    live.signal_group(signal.SIGINT)
    row.exit_status = live.wait_exit()
    row.seconds_cause_to_exit = round(time.monotonic() - cause, 1)


def never_boots(row: Row, host: str, work: Path) -> None:
    h = Harness(
        [*CYCLE, "--host", host, "--kernel-append", "systemd.unit=emergency.target"], work / f"{row.case}.log"
    )
    h.wait_for(r"▶ wait for SSH")
    cause = time.monotonic()  # the cause is the boot itself: the guest is dead from here on
    row.exit_status = h.wait_exit(CAUSE_TIMEOUT)
    row.seconds_cause_to_exit = round(time.monotonic() - cause, 1)
    row.notes.append(verdict_line(h.text()))


def _unreadable_by_others(row: Row) -> None:
    """A live run's disks and secrets, read as an unprivileged user, must not open."""
    for name in ("*/overlay.qcow2", "*/seed.iso", "*/id_ed25519", "state.json", "harness-vars.yml"):
        for file in paths.runs_dir().glob(f"*/{name}"):
            read = subprocess.run(
                ["runuser", "-u", "nobody", "--", "cat", str(file)], capture_output=True, check=False
            )
            if read.returncode == 0:
                row.secrets_found.append(f"{file} readable by nobody")
            else:
                row.notes.append(f"{file.name} unreadable by nobody")


def failing_apply_with_sentinel(row: Row, host: str, work: Path) -> None:
    broken = work / "broken-overlay.yml"
    broken.write_text("base__packages: [boma-no-such-package]\n", encoding="utf-8")
    h = Harness(
        [*CYCLE, "--host", host, "--no-keep", "--override", str(broken)],
        work / f"{row.case}.log",
        {"GANDI_BEARER_TOKEN": SENTINEL},
    )
    h.wait_for(r"▶ apply")
    _unreadable_by_others(row)
    h.wait_for(r"fatal: \[")  # the cause: the task that fails
    cause = time.monotonic()
    row.exit_status = h.wait_exit(CAUSE_TIMEOUT)
    row.seconds_cause_to_exit = round(time.monotonic() - cause, 1)
    row.notes.append(verdict_line(h.text()))
    if SENTINEL in h.text():
        row.secrets_found.append("the harness's own output")


def full_disk(row: Row, host: str, work: Path) -> None:
    mount = work / "small-fs"
    mount.mkdir(exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(mount)], check=True)
    try:
        env = {"BOMA_RUNS_DIR": str(mount / "runs"), "BOMA_ARTIFACTS_DIR": str(mount / "artifacts")}
        h = Harness([*CYCLE, "--host", host], work / f"{row.case}.log", env)
        cause = time.monotonic()
        row.exit_status = h.wait_exit(120)
        row.seconds_cause_to_exit = round(time.monotonic() - cause, 1)
        row.notes.append((h.text().strip().splitlines() or [""])[-2][:200])
        row.leaked_files += [str(p) for p in mount.rglob("*") if p.is_file()]
    finally:
        subprocess.run(["umount", str(mount)], check=False)


CASES: dict[str, Callable[[Row, str, Path], None]] = {
    "ctrl-c-harness-boot": lambda r, h, w: ctrl_c(r, h, "harness", r"▶ wait for SSH", w),
    "ctrl-c-harness-apply": lambda r, h, w: ctrl_c(r, h, "harness", r"TASK \[", w),
    "ctrl-c-nox-apply": lambda r, h, w: ctrl_c(r, h, "nox", r"TASK \[", w),
    "ctrl-c-make-boot": lambda r, h, w: ctrl_c(r, h, "make", r"▶ wait for SSH", w),
    "github-cancel-apply": github_cancel,
    "sigkill-boot-then-up": lambda r, h, w: sigkill_then_new_run(r, h, r"▶ wait for SSH", w),
    "two-runs-100ms-apart": two_at_once,
    "prune-during-run": prune_during_run,
    "guest-never-boots": never_boots,
    "failing-apply-sentinel": failing_apply_with_sentinel,
    "full-disk": full_disk,
}


def write_report(rows: list[Row], out_dir: Path, day: str) -> tuple[Path, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path = out_dir / f"{day}-torture.json"
    if json_path.is_file():  # cases run separately on one day make one table
        ran = {r.case for r in rows}
        earlier = [
            Row(**{k: v for k, v in r.items() if k != "clean"})
            for r in json.loads(json_path.read_text(encoding="utf-8"))["rows"]
            if r["case"] not in ran
        ]
        rows = [*earlier, *rows]
    revision = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True, check=False
    ).stdout.strip()
    data = {"date": day, "revision": revision, "rows": [asdict(r) | {"clean": r.clean} for r in rows]}
    json_path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    lines = [
        f"# Torture suite, {day} (revision {revision})",
        "",
        "| case | entry | exit | cause→exit s | leaked domains | leaked processes | leaked files "
        "| secrets found | notes |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r.case} | {r.entry} | {r.exit_status} | {r.seconds_cause_to_exit} | "
            f"{len(r.leaked_domains)} | {len(r.leaked_processes)} | {len(r.leaked_files)} | "
            f"{len(r.secrets_found)} | {'; '.join(r.notes).replace('|', '/')} |"
        )
    md_path = out_dir / f"{day}-torture.md"
    md_path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return json_path, md_path


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--case", action="append", choices=sorted(CASES), help="run only these (repeatable)")
    parser.add_argument("--host", default="askari")
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "bench")
    args = parser.parse_args()
    # A background job of a script starts with SIGINT ignored, and an ignored signal stays
    # ignored in its children: a Ctrl-C case would then test nothing. A handled one is reset
    # to the default at exec, as in a terminal's job.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    work = REPO / "artifacts" / "torture"
    work.mkdir(parents=True, exist_ok=True)
    rows = []
    for name in args.case or list(CASES):
        row = Row(case=name, entry=name.split("-")[2] if name.startswith("ctrl-c") else "-")
        since = time.time()
        print(f"== {name}", flush=True)
        try:
            CASES[name](row, args.host, work)
        finally:
            audit(row, since)
            # Never let one case's leftovers poison the next.
            subprocess.run(
                [PY, "-m", "harness", "prune", "--force"], cwd=REPO, check=False, capture_output=True
            )
        print(
            f"   exit {row.exit_status}, {row.seconds_cause_to_exit}s, clean={row.clean} {row.notes}",
            flush=True,
        )
        rows.append(row)
    json_path, md_path = write_report(rows, args.out, datetime.date.today().isoformat())
    print(f"wrote {json_path} and {md_path}")
    return 0 if all(r.clean for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
