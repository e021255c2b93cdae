"""The per-run summary: each phase's duration, its retried transients and the verdict, as
``summary.json`` and, for people, ``summary.md`` (:mod:`harness.report`)."""

from __future__ import annotations

import json
import platform
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

from harness import log, report, transient
from harness.secrets import scrub_text


@dataclass
class Summary:
    run_id: str
    host: str
    tier: str
    accel: str = ""
    boot_mode: str = ""
    vcpus: int = 0
    verdict: str = "running"  # pass | fail | error | interrupted | bad-input
    failed_phase: str | None = None
    reason: str | None = None
    phases: dict[str, float] = field(default_factory=dict)
    # Transients retried in each phase (see harness.transient); a phase with none is absent.
    retries: dict[str, int] = field(default_factory=dict)
    # What a reader should know that no duration shows: a phase with nothing to check, a
    # lever that changes what was tested.
    notes: list[str] = field(default_factory=list)
    # The checks every cycle gets: what the steps changed when applied again after the reboot
    # (harness.idempotence), and what the reboot changed in the host's state (harness.statediff).
    idempotence: dict[str, object] | None = None
    state_diff: dict[str, object] | None = None
    # The guest's network (harness.guestnet) and, on a hermetic one, what its package cache did.
    network: dict[str, object] = field(default_factory=dict)
    package_cache: dict[str, int] | None = None
    levers: dict[str, bool] = field(default_factory=dict)  # harness.speed: how the run was sped up
    sut_phases: list[str] = field(default_factory=list)  # the rest of the total is overhead
    started: float = field(default_factory=time.time)
    total_s: float = 0.0
    overhead_s: float = 0.0
    kept: bool = False
    controller: str = field(default_factory=platform.node)

    @contextmanager
    def phase(self, name: str, *, sut: bool) -> Iterator[None]:
        """A timed, logged phase; the first phase that raises is the run's failed phase.

        ``sut`` says whether the phase's time is the system under test at work (booting,
        applying, rebooting, verifying) rather than the harness's own overhead.
        """
        if sut and name not in self.sut_phases:
            self.sut_phases.append(name)
        retried_before = transient.retry_count()
        try:
            with log.step(name, self.phases):
                yield
        except BaseException:
            if self.failed_phase is None:
                self.failed_phase = name
            raise
        finally:
            # Phases do not nest: every retry made while this one ran is its own.
            if retried := transient.retry_count() - retried_before:
                self.retries[name] = self.retries.get(name, 0) + retried

    def finish(self, verdict: str) -> None:
        self.verdict = verdict
        self.total_s = round(time.time() - self.started, 1)
        sut = sum(self.phases.get(p, 0.0) for p in self.sut_phases)
        self.overhead_s = round(max(0.0, self.total_s - sut), 1)

    def write(self, directory: Path) -> Path:
        """Write ``summary.json`` and, beside it, ``summary.md`` (with the failing checks of the
        run's JUnit files); both scrubbed. Returns the JSON's path."""
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / "summary.json"
        path.write_text(scrub_text(json.dumps(asdict(self), indent=2) + "\n"), encoding="utf-8")
        report.write(self, directory)
        return path

    def table(self) -> str:
        width = max((len(name) for name in [*self.phases, "total"]), default=0)
        rows = []
        for name, secs in self.phases.items():
            retried = self.retries.get(name, 0)
            note = f"  ({retried} {'retry' if retried == 1 else 'retries'})" if retried else ""
            rows.append(f"  {name:<{width}} {secs:8.1f}s{note}")
        rows.append(f"  {'total':<{width}} {self.total_s:8.1f}s  (harness overhead {self.overhead_s:.1f}s)")
        rows += [f"  note: {note}" for note in self.notes]
        return "\n".join(rows)


def record_step(
    directory: Path, name: str, seconds: float, outcome: str, *, tags: tuple[str, ...] = ()
) -> None:
    """Append one single step's duration (the warm inner loop) to ``steps.jsonl``, with the
    transients it retried, and the tags it was narrowed to (an apply with ``--tags``)."""
    directory.mkdir(parents=True, exist_ok=True)
    line: dict[str, object] = {
        "step": name,
        "seconds": round(seconds, 1),
        "outcome": outcome,
        # A single step is one CLI process: the process's retries are the step's.
        "retries": transient.retry_count(),
        "at": time.time(),
    }
    if tags:
        line["tags"] = list(tags)
    with (directory / "steps.jsonl").open("a", encoding="utf-8") as sink:
        sink.write(json.dumps(line) + "\n")
