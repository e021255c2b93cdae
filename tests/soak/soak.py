"""Soak: the same boot (or full cycle) many times over, to count flakes, not to judge the roles.

    .venv/bin/python tests/soak/soak.py --boots 20 [--host askari]    # up → reboot → down
    .venv/bin/python tests/soak/soak.py --cycles 10 [--host askari]   # cycle --no-keep

Each iteration runs the harness's own commands and records each step's exit status, wall time
and retried transients (from the run's summary.json or steps.jsonl; for up and down, from
their log lines). A failed iteration runs once more, unchanged, at once: a
pass then is a flake. Every run this driver started is removed on failure and on Ctrl-C, with
``down --run ID`` (never ``prune``: it would remove other people's VMs too). The report goes
to docs/bench/<date>-soak.json and .md, the step logs to artifacts/soak-<time>/. Hours of VM
time: no test session runs this. Exit status 0 when every iteration passed at once, else 1.
"""

from __future__ import annotations

import argparse
import json
import platform
import re
import signal
import statistics
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # run as a script from anywhere

from harness import log, paths, proc
from harness.errors import ExitCode, HarnessError
from harness.transient import RETRY_MARK

TIER = "internal"
DEFAULT_HOST = "askari"
STEP_TIMEOUT = 3900.0  # one harness command; a cycle's own global deadline is an hour
REPORT_DIR = paths.REPO / "docs" / "bench"
# The run id appears as "(run 0badf00d)", "run 0badf00d: ..." or in the domain name.
RUN_ID = (re.compile(r"\brun[ =]([0-9a-f]{8})\b"), re.compile(r"\bboma-it-[a-z0-9-]+-([0-9a-f]{8})\b"))


@dataclass
class Step:
    name: str
    status: int
    seconds: float
    retries: int


@dataclass
class Attempt:
    run_id: str | None = None
    steps: list[Step] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return bool(self.steps) and all(s.status == ExitCode.OK for s in self.steps)


@dataclass
class Iteration:
    number: int
    first: Attempt
    retry: Attempt | None = None

    @property
    def attempts(self) -> list[Attempt]:
        return [self.first] if self.retry is None else [self.first, self.retry]

    @property
    def verdict(self) -> str:
        if self.first.passed:
            return "pass"
        return "flake" if self.retry is not None and self.retry.passed else "fail"


def step_retries(name: str, artifacts: Path, log_text: str) -> int:
    """The step's retries as its run recorded them; its log lines where the run records none."""
    try:
        if name == "cycle":
            summary = json.loads((artifacts / "summary.json").read_text(encoding="utf-8"))
            return sum(int(n) for n in summary.get("retries", {}).values())
        lines = (artifacts / "steps.jsonl").read_text(encoding="utf-8").splitlines()
        mine = [entry for entry in map(json.loads, lines) if entry.get("step") == name]
        if mine and "retries" in mine[-1]:
            return int(mine[-1]["retries"])
    except (OSError, ValueError):
        pass
    return sum(RETRY_MARK in line for line in log_text.splitlines())


class Soak:
    """Runs the iterations; keeps the ids of the runs it started until they are gone."""

    def __init__(self, host: str, logs: Path) -> None:
        self.host, self.logs = host, logs
        self.pending: set[str] = set()
        self.vm_args: list[str] = []  # passed to up and cycle

    def harness(self, name: str, args: list[str], attempt: Attempt, where: Path) -> int:
        logfile, began = where / f"{name}.log", time.monotonic()
        argv = [sys.executable, "-m", "harness", *args]
        try:
            status = proc.stream(argv, logfile=logfile, cwd=paths.REPO, timeout=STEP_TIMEOUT)
        except HarnessError as exc:  # the command overran its bound
            log.warn(exc.message)
            status = ExitCode.HARNESS_BROKE
        finally:  # on Ctrl-C too: a run that was started must be found to be removed
            text = logfile.read_text(encoding="utf-8", errors="replace") if logfile.is_file() else ""
            found = [m.group(1) for pattern in RUN_ID if (m := pattern.search(text))]
            if attempt.run_id is None and found:
                attempt.run_id = found[0]
                self.pending.add(found[0])
        artifacts = paths.run_artifacts(self.host, TIER, attempt.run_id or "none")
        seconds = round(time.monotonic() - began, 1)
        attempt.steps.append(Step(name, status, seconds, step_retries(name, artifacts, text)))
        return status

    def boot(self, where: Path) -> Attempt:
        attempt = Attempt()
        try:
            up = ["up", "--host", self.host, "--certs", TIER, *self.vm_args]
            if self.harness("up", up, attempt, where) == 0:
                if attempt.run_id is None:
                    raise HarnessError(f"no run id in {where / 'up.log'}: have the harness's logs changed?")
                self.harness("reboot", ["reboot", "--run", attempt.run_id], attempt, where)
        finally:
            if attempt.run_id:
                self.down(attempt.run_id, where, attempt)
        return attempt

    def cycle(self, where: Path) -> Attempt:
        attempt = Attempt()
        argv = ["cycle", "--host", self.host, "--certs", TIER, "--no-keep", *self.vm_args]
        self.harness("cycle", argv, attempt, where)
        self.pending.discard(attempt.run_id or "")  # --no-keep: the cycle removed its own VM
        return attempt

    def down(self, run_id: str, where: Path, attempt: Attempt | None = None) -> None:
        status = self.harness("down", ["down", "--run", run_id], attempt or Attempt(run_id), where)
        if status in (ExitCode.OK, ExitCode.BAD_INPUT):  # removed, or already gone
            self.pending.discard(run_id)

    def clean_up(self) -> None:
        for run_id in sorted(self.pending):
            log.info(f"removing run {run_id}, left behind by a failed or interrupted iteration")
            self.down(run_id, self.logs)

    def iteration(self, number: int, cycles: bool) -> Iteration:
        def once(attempt_no: int) -> Attempt:
            where = self.logs / f"iteration-{number:03d}-attempt-{attempt_no}"
            where.mkdir(parents=True, exist_ok=True)
            with log.step(f"iteration {number}, attempt {attempt_no}"):
                return self.cycle(where) if cycles else self.boot(where)

        result = Iteration(number, once(1))
        if not result.first.passed:
            log.info(f"iteration {number} failed: running it again, unchanged")
            result.retry = once(2)
        log.info(f"iteration {number}: {result.verdict}")
        return result


def spread(iterations: list[Iteration]) -> dict[str, dict[str, float]]:
    """min/median/max of each step's wall time, over the steps that succeeded."""
    times: dict[str, list[float]] = {}
    for step in (s for it in iterations for a in it.attempts for s in a.steps if s.status == 0):
        times.setdefault(step.name, []).append(step.seconds)
    return {
        name: {"n": len(t), "min": min(t), "median": round(statistics.median(t), 1), "max": max(t)}
        for name, t in times.items()
    }


def report(
    iterations: list[Iteration], *, mode: str, host: str, command: str, started: float
) -> dict[str, Any]:
    """The soak's figures, as the JSON report holds them."""
    verdicts = [it.verdict for it in iterations]
    return {
        "command": command,
        "mode": mode,
        "host": host,
        "tier": TIER,
        "controller": platform.node(),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(started)),
        "iterations": [{**asdict(it), "verdict": it.verdict} for it in iterations],
        "passed": verdicts.count("pass"),
        "flakes": verdicts.count("flake"),
        "failed": verdicts.count("fail"),
        "retries": sum(s.retries for it in iterations for a in it.attempts for s in a.steps),
        "spread_s": spread(iterations),
    }


def markdown(data: dict[str, Any]) -> str:
    """The report for people: one row per attempt, then the spread of each step's time."""
    lines = [
        f"# Soak: {data['mode']} of {data['host']} ({data['tier']}), {data['started']}",
        "",
        f"`{data['command']}` on {data['controller']}",
        "",
        f"**{data['passed']} passed, {data['flakes']} flakes, {data['failed']} failed** of "
        f"{len(data['iterations'])} iterations; {data['retries']} transients retried.",
        "",
        "| # | verdict | attempt | run | steps (exit status, seconds, ↻ retries) |",
        "|---|---|---|---|---|",
    ]
    for it in data["iterations"]:
        for label in ("first", "retry"):
            if attempt := it[label]:
                steps = ", ".join(
                    f"{s['name']} {s['status']} {s['seconds']}s ↻{s['retries']}" for s in attempt["steps"]
                )
                lines.append(
                    f"| {it['number']} | {it['verdict']} | {label} | {attempt['run_id'] or '-'} | {steps} |"
                )
    lines += ["", "| step | n | min s | median s | max s |", "|---|---|---|---|---|"]
    for name, s in data["spread_s"].items():
        lines.append(f"| {name} | {s['n']} | {s['min']} | {s['median']} | {s['max']} |")
    return "\n".join(lines) + "\n"


def write_report(data: dict[str, Any], directory: Path, day: str) -> tuple[Path, Path]:
    """Write ``<day>-soak.json`` and ``.md`` in ``directory``; a second soak that day gets ``-2``."""
    directory.mkdir(parents=True, exist_ok=True)
    stem, n = f"{day}-soak", 2
    while (directory / f"{stem}.json").exists():
        stem, n = f"{day}-soak-{n}", n + 1
    json_path, md_path = directory / f"{stem}.json", directory / f"{stem}.md"
    json_path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    md_path.write_text(markdown(data), encoding="utf-8")
    return json_path, md_path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    how = parser.add_mutually_exclusive_group(required=True)
    how.add_argument("--boots", type=int, metavar="N", help="N times: up, reboot, down")
    how.add_argument("--cycles", type=int, metavar="N", help="N times: cycle --no-keep")
    parser.add_argument("--host", default=DEFAULT_HOST, help="host profile (default: %(default)s)")
    parser.add_argument("--vcpus", type=int, metavar="N", help="passed to up and cycle")
    args = parser.parse_args(argv)
    cycles, started = args.cycles is not None, time.time()
    count: int = args.cycles if cycles else args.boots
    if count < 1:
        parser.error("N must be at least 1")
    soak = Soak(args.host, paths.artifacts_dir() / f"soak-{time.strftime('%Y%m%d-%H%M%S')}")
    if args.vcpus is not None:
        soak.vm_args = ["--vcpus", str(args.vcpus)]

    def on_term(_sig: int, _frame: FrameType | None) -> None:
        raise KeyboardInterrupt  # a killed soak cleans up as a Ctrl-C'd one does

    signal.signal(signal.SIGTERM, on_term)
    iterations: list[Iteration] = []
    try:
        for number in range(1, count + 1):
            iterations.append(soak.iteration(number, cycles))
    except (KeyboardInterrupt, HarnessError) as exc:
        why = "interrupted" if isinstance(exc, KeyboardInterrupt) else exc.message
        log.warn(f"stopped after {len(iterations)} iterations ({why}): cleaning up, then reporting those")
    finally:
        soak.clean_up()
    command = "python tests/soak/soak.py " + " ".join(sys.argv[1:] if argv is None else argv)
    mode = "cycles" if cycles else "boots"
    data = report(iterations, mode=mode, host=args.host, command=command, started=started)
    for path in write_report(data, REPORT_DIR, time.strftime("%Y-%m-%d", time.localtime(started))):
        log.info(f"report: {path}")
    log.info(f"{data['passed']} passed, {data['flakes']} flakes, {data['failed']} failed")
    return 0 if data["passed"] == len(iterations) == count else 1


if __name__ == "__main__":
    raise SystemExit(main())
