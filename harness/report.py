"""The run's reports for people: ``summary.md`` beside ``summary.json``, and an HTML page per
JUnit file of the verify phases.

``summary.md`` holds the run id, host, tier, verdict and reason, the phase table, the notes, a
Mermaid Gantt chart of the phases (GitHub renders it, also in a job's step summary) and the
checks that failed, read from the run's ``junit-*.xml``. Both are rendered from what the run
directory holds when the summary is written (the cycle scrubs that directory first) and are
scrubbed again as they are written. A report that cannot be made never changes the verdict: an
unreadable JUnit file is named in the report, a failed HTML rendering is a warning.
"""

from __future__ import annotations

import dataclasses
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from harness import log
from harness.secrets import scrub_text

if TYPE_CHECKING:
    from harness.summary import Summary

MARKDOWN = "summary.md"
JUNIT_GLOB = "junit-*.xml"
MESSAGE_WIDTH = 200


@dataclass(frozen=True)
class Check:
    """A check that did not pass: its JUnit file's phase label, its name, how and why."""

    phase: str
    name: str
    outcome: str  # failed | error
    message: str


@dataclass(frozen=True)
class SuiteCounts:
    """One JUnit file: the phase it records and its counts (``problem`` when it cannot be read)."""

    phase: str
    suite: str
    tests: int = 0
    failed: int = 0
    errors: int = 0
    skipped: int = 0
    problem: str | None = None


def _first_line(text: str | None) -> str:
    line = next((line.strip() for line in (text or "").splitlines() if line.strip()), "")
    return line if len(line) <= MESSAGE_WIDTH else line[: MESSAGE_WIDTH - 1] + "…"


def read_junit(path: Path) -> tuple[SuiteCounts, list[Check]]:
    """The counts and the failed or errored checks of one JUnit file written by pytest."""
    phase = path.stem.removeprefix("junit-")
    try:
        # Written by the pytest this harness ran, in the run's own artifacts directory.
        root = ET.parse(path).getroot()  # noqa: S314
    except (ET.ParseError, OSError) as exc:
        return SuiteCounts(phase, "", problem=f"unreadable: {exc}"), []
    suites = [root] if root.tag == "testsuite" else root.findall("testsuite")
    cases = list(root.iter("testcase"))
    checks = []
    for case in cases:
        name = "::".join(part for part in (case.get("classname", ""), case.get("name", "")) if part)
        for tag, outcome in (("failure", "failed"), ("error", "error")):
            if (found := case.find(tag)) is not None:
                message = _first_line(found.get("message")) or _first_line(found.text)
                checks.append(Check(phase, name, outcome, message))
    return SuiteCounts(
        phase,
        suite=", ".join(sorted({s.get("name", "") for s in suites} - {""})),
        tests=len(cases),
        failed=sum(c.outcome == "failed" for c in checks),
        errors=sum(c.outcome == "error" for c in checks),
        skipped=sum(case.find("skipped") is not None for case in cases),
    ), checks


def _cell(text: str) -> str:
    """``text`` safe inside a Markdown table cell."""
    return " ".join(text.split()).replace("|", "\\|") or " "


def _code(text: str) -> str:
    return f"`{text}`" if "`" not in text else _cell(text)


def _row(*cells: object) -> str:
    return "| " + " | ".join(str(cell) for cell in cells) + " |"


def _gantt(summary: Summary) -> list[str]:
    """The phases one after the other, in the order they ran, on an axis of minutes:seconds."""
    lines = [
        "```mermaid",
        "gantt",
        f"    title {summary.host} / {summary.tier}, run {summary.run_id}",
        "    dateFormat x",
        "    axisFormat %M:%S",
        "    section phases",
    ]
    start = 0
    for number, (name, seconds) in enumerate(summary.phases.items()):
        length = max(1, round(seconds * 1000))
        state = "crit, " if name == summary.failed_phase else ""
        label = "".join(c if c.isalnum() or c in " -_." else " " for c in name)
        lines.append(f"    {label} ({seconds:.1f}s) :{state}p{number}, {start}, {length}ms")
        start += length
    lines.append("```")
    return lines


def markdown(summary: Summary, suites: list[SuiteCounts], checks: list[Check]) -> str:
    verdict = summary.verdict.upper()
    rows = [
        ("run", _code(summary.run_id)),
        ("host", summary.host),
        ("tier", summary.tier),
        ("verdict", f"**{verdict}**"),
        ("failed phase", summary.failed_phase or "—"),
        ("reason", _cell(summary.reason or "—")),
        ("accelerator", f"{summary.accel or '?'} ({summary.boot_mode or '?'} boot)"),
        ("guest vCPUs", str(summary.vcpus or "?")),
        ("total", f"{summary.total_s:.1f} s (harness overhead {summary.overhead_s:.1f} s)"),
        ("kept", "yes" if summary.kept else "no"),
        ("controller", _cell(summary.controller)),
    ]
    lines = [f"# {summary.host} / {summary.tier}: {verdict}", "", "| | |", "|---|---|"]
    lines += [_row(key, value) for key, value in rows]
    lines += ["", "## Phases", "", "| phase | seconds | retries |", "|---|---:|---:|"]
    for name, seconds in summary.phases.items():
        mark = " ✘" if name == summary.failed_phase else ""
        lines.append(_row(f"{_cell(name)}{mark}", f"{seconds:.1f}", summary.retries.get(name, "")))
    lines.append(_row("**total**", f"{summary.total_s:.1f}", sum(summary.retries.values()) or ""))
    if summary.notes:
        lines += ["", "## Notes", "", *(f"- {_cell(note)}" for note in summary.notes)]
    if summary.phases:
        lines += ["", "## Timeline", "", *_gantt(summary)]
    if suites:
        lines += ["", "## Checks", "", "| phase | suite | checks | failed | errors | skipped |"]
        lines.append("|---|---|---:|---:|---:|---:|")
        for s in suites:
            counts = ("", "", "", "") if s.problem else (s.tests, s.failed, s.errors, s.skipped)
            lines.append(_row(_cell(s.phase), _cell(s.problem or s.suite), *counts))
    if checks:
        lines += ["", "## Failing checks", "", "| phase | check | outcome | message |", "|---|---|---|---|"]
        lines += [_row(_cell(c.phase), _code(c.name), c.outcome, _cell(c.message)) for c in checks]
    return "\n".join(lines) + "\n"


def _write_html(junit: Path) -> None:
    """``junit-<phase>.html`` beside ``junit-<phase>.xml`` (junit2html), or a warning."""
    try:
        from junit2htmlreport import parser  # noqa: PLC0415  (only when there is a report to render)

        page = parser.Junit(filename=str(junit)).html()
        junit.with_suffix(".html").write_text(scrub_text(str(page)), encoding="utf-8")
    except Exception as exc:  # a report never decides a run's verdict
        log.warn(f"no HTML report for {junit.name}: {type(exc).__name__}: {exc}")


def write(summary: Summary, directory: Path) -> Path:
    """Write ``summary.md`` (and an HTML page per JUnit file) into ``directory``; return its path."""
    suites, checks = [], []
    # A scenario's machines and its cross suites each have a folder of their own.
    for junit in sorted(directory.glob(JUNIT_GLOB)) + sorted(directory.glob(f"*/{JUNIT_GLOB}")):
        counts, failing = read_junit(junit)
        if junit.parent != directory:
            where = f"{junit.parent.name}: {counts.phase}"
            counts = dataclasses.replace(counts, phase=where)
            failing = [dataclasses.replace(check, phase=where) for check in failing]
        suites.append(counts)
        checks += failing
        if counts.problem is None:
            _write_html(junit)
    path = directory / MARKDOWN
    path.write_text(scrub_text(markdown(summary, suites, checks)), encoding="utf-8")
    return path
