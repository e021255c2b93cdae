"""summary.md beside summary.json: the verdict, the phases (a table and a Mermaid Gantt chart) and
the checks that failed, read from the run's JUnit files; an HTML page per JUnit file."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import pytest
from junit2htmlreport import parser as junit2html

from harness import log, report
from harness.secrets import REDACTED
from harness.summary import Summary

# What pytest writes with `-o junit_family=xunit2 -o junit_suite_name=askari-internal`.
JUNIT = """<?xml version="1.0" encoding="utf-8"?><testsuites name="pytest tests">\
<testsuite name="askari-internal" errors="1" failures="1" skipped="1" tests="4" time="0.1">\
<testcase classname="test_ports" name="test_ok" time="0.0" />\
<testcase classname="test_ports" name="test_answers[8080]" time="0.0">\
<failure message="AssertionError: port 8080 | refused&#10;  second line">long text</failure></testcase>\
<testcase classname="test_guest" name="test_units" time="0.0">\
<error message="">&#10;E   RuntimeError: fixture broke&#10;more</error></testcase>\
<testcase classname="test_guest" name="test_skip" time="0.0"><skipped message="no" /></testcase>\
</testsuite></testsuites>
"""


def failed_run() -> Summary:
    run = Summary(run_id="0badf00d", host="askari", tier="internal", accel="tcg", boot_mode="direct")
    run.phases = {"preflight": 3.2, "boot": 81.5, "apply": 190.0, "verify": 14.9}
    run.retries = {"boot": 2}
    run.notes = ["verify-before-reboot: no controller checks for this profile"]
    run.failed_phase, run.reason = "verify", "checks failed against the VM; see junit-verify.xml"
    run.finish("fail")
    return run


def test_the_markdown_says_who_what_and_how_it_ended() -> None:
    text = report.markdown(failed_run(), [], [])
    assert text.startswith("# askari / internal: FAIL\n")
    for row in (
        "| run | `0badf00d` |",
        "| host | askari |",
        "| tier | internal |",
        "| verdict | **FAIL** |",
        "| failed phase | verify |",
        "| reason | checks failed against the VM; see junit-verify.xml |",
    ):
        assert row in text
    assert "| boot | 81.5 | 2 |" in text
    assert "| verify ✘ | 14.9 |  |" in text
    assert "- verify-before-reboot: no controller checks for this profile" in text
    assert "## Failing checks" not in text


def test_the_gantt_chart_lays_the_phases_end_to_end() -> None:
    text = report.markdown(failed_run(), [], [])
    chart = re.search(r"```mermaid\n(.*?)```", text, re.S)
    assert chart is not None
    body = chart[1].splitlines()
    assert body[:2] == ["gantt", "    title askari / internal, run 0badf00d"]
    assert "    dateFormat x" in body
    tasks = [line.strip() for line in body if " :" in line]
    assert tasks == [
        "preflight (3.2s) :p0, 0, 3200ms",
        "boot (81.5s) :p1, 3200, 81500ms",
        "apply (190.0s) :p2, 84700, 190000ms",
        "verify (14.9s) :crit, p3, 274700, 14900ms",
    ]


def test_a_run_without_phases_has_no_chart() -> None:
    run = Summary(run_id="0001", host="askari", tier="internal")
    run.finish("error")
    assert "mermaid" not in report.markdown(run, [], [])


def test_failing_checks_come_from_the_junit_files(tmp_path: Path) -> None:
    (tmp_path / "junit-verify.xml").write_text(JUNIT, encoding="utf-8")
    counts, checks = report.read_junit(tmp_path / "junit-verify.xml")
    assert (counts.phase, counts.suite, counts.tests, counts.failed, counts.errors, counts.skipped) == (
        "verify",
        "askari-internal",
        4,
        1,
        1,
        1,
    )
    port = "test_ports::test_answers[8080]"
    assert checks == [
        report.Check("verify", port, "failed", "AssertionError: port 8080 | refused"),
        report.Check("verify", "test_guest::test_units", "error", "E   RuntimeError: fixture broke"),
    ]
    text = report.markdown(failed_run(), [counts], checks)
    assert "| verify | askari-internal | 4 | 1 | 1 | 1 |" in text
    assert f"| verify | `{port}` | failed | AssertionError: port 8080 \\| refused |" in text


def test_an_unreadable_junit_file_is_named_not_raised(tmp_path: Path) -> None:
    (tmp_path / "junit-verify.xml").write_text(JUNIT[:200], encoding="utf-8")  # pytest was killed
    counts, checks = report.read_junit(tmp_path / "junit-verify.xml")
    assert checks == []
    assert counts.problem is not None
    assert counts.problem.startswith("unreadable: ")


def test_write_puts_summary_md_and_an_html_page_beside_summary_json(tmp_path: Path) -> None:
    (tmp_path / "junit-verify.xml").write_text(JUNIT, encoding="utf-8")
    (tmp_path / "junit-verify-before-reboot.xml").write_text(JUNIT[:100], encoding="utf-8")
    path = failed_run().write(tmp_path)
    assert path == tmp_path / "summary.json"
    assert json.loads(path.read_text(encoding="utf-8"))["verdict"] == "fail"
    text = (tmp_path / "summary.md").read_text(encoding="utf-8")
    assert "`test_ports::test_answers[8080]`" in text
    assert "| verify-before-reboot | unreadable: " in text
    html = (tmp_path / "junit-verify.html").read_text(encoding="utf-8")
    assert "test_answers[8080]" in html
    assert not (tmp_path / "junit-verify-before-reboot.html").exists()


def test_the_reports_are_scrubbed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GANDI_BEARER_TOKEN", "s3cr3t-sentinel-token")
    run = failed_run()
    run.reason = "apply failed: Bearer s3cr3t-sentinel-token"
    run.notes.append("the token s3cr3t-sentinel-token")
    run.write(tmp_path)
    for name in ("summary.md", "summary.json"):
        text = (tmp_path / name).read_text(encoding="utf-8")
        assert "s3cr3t-sentinel-token" not in text
        assert REDACTED in text


def test_an_html_rendering_that_fails_is_a_warning(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(**_kwargs: object) -> None:
        raise ValueError("no such theme")

    console = io.StringIO()
    monkeypatch.setattr(log, "_stream", console)
    monkeypatch.setattr(junit2html, "Junit", broken)
    (tmp_path / "junit-verify.xml").write_text(JUNIT, encoding="utf-8")
    failed_run().write(tmp_path)
    assert "WARNING: no HTML report for junit-verify.xml: ValueError: no such theme" in console.getvalue()
    assert (tmp_path / "summary.md").is_file()
