"""The verify phase read from pytest's exit status, and a suite collected before anything boots.

Real pytest runs against temporary suites: the checks there use no ``host`` fixture, so
testinfra never needs a VM, and the statuses are pytest's own.
"""

from __future__ import annotations

import dataclasses
import textwrap
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from harness import config, verify
from harness.errors import BadInput, ExitCode, HarnessError, VerificationFailed
from harness.inventory import RenderedInventory
from harness.verify import Outcome

SUITE = {
    "test_guest.py": """\
        def test_in_guest(host):
            assert host is not None


        def test_another_in_guest(host):
            pass
        """,
    "test_ports.py": """\
        import pytest

        pytestmark = pytest.mark.controller


        @pytest.mark.parametrize("port", [80, 443])
        def test_answers(port):
            pass
        """,
}


def write_suite(directory: Path, files: dict[str, str]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (directory / name).write_text(textwrap.dedent(text), encoding="utf-8")
    return directory


def run(suite: Path, tmp_path: Path, marker: str | None = None) -> verify.SuiteResult:
    inventory = RenderedInventory(tmp_path / "inventory", "boma-it-vm-0001", tmp_path / "connection.yml")
    return verify.run_suite(suite, inventory, tmp_path / "state.json", tmp_path / "junit.xml",
                            tmp_path / "verify.log", marker=marker)


# -- collection, without any VM ---------------------------------------------------------------


def test_collected_counts_every_check_and_the_marked_ones(tmp_path: Path) -> None:
    suite = write_suite(tmp_path / "suite", SUITE)
    assert verify.collected(suite) == 4  # one host (local://), as the rendered inventory has
    assert verify.collected(suite, verify.CONTROLLER_MARKER) == 2


def test_a_marker_that_selects_nothing_collects_zero(tmp_path: Path) -> None:
    suite = write_suite(tmp_path / "suite", {"test_guest.py": SUITE["test_guest.py"]})
    assert verify.collected(suite, verify.CONTROLLER_MARKER) == 0


def test_an_empty_suite_collects_zero(tmp_path: Path) -> None:
    suite = write_suite(tmp_path / "suite", {"helpers.py": "X = 1\n"})
    assert verify.collected(suite) == 0


def test_a_suite_that_does_not_import_is_bad_input(tmp_path: Path) -> None:
    suite = write_suite(tmp_path / "suite", {**SUITE, "test_broken.py": "import no_such_module_4e2\n"})
    with pytest.raises(BadInput) as caught:
        verify.collected(suite)
    assert caught.value.exit_code == ExitCode.BAD_INPUT
    assert "does not collect" in caught.value.message
    assert "no_such_module_4e2" in caught.value.message


def test_the_phases_are_the_controller_checks_then_the_whole_suite() -> None:
    assert [p.label for p in verify.PHASES] == ["verify-before-reboot", "verify"]
    assert verify.BEFORE_REBOOT.marker == verify.CONTROLLER_MARKER
    assert not verify.BEFORE_REBOOT.required
    assert verify.FINAL.marker is None
    assert verify.FINAL.required


@pytest.mark.parametrize("name", [n for n in config.profile_names() if not config.load_profile(n).is_client])
def test_every_real_suite_collects_for_every_phase(name: str) -> None:
    profile = config.load_profile(name)
    counts = verify.check_suite(profile)
    assert set(counts) == {phase.label for phase in verify.PHASES}
    assert counts[verify.FINAL.label] > 0
    controller_checks = counts[verify.BEFORE_REBOOT.label]
    # A controller check probes a published port from outside the guest: no port, no such check.
    assert (controller_checks > 0) == bool(profile.published_ports), (
        f"{name}: {controller_checks} controller checks for {len(profile.published_ports)} published ports")


def test_a_suite_with_no_checks_is_refused_before_anything_boots(tmp_path: Path) -> None:
    empty = write_suite(tmp_path / "empty", {"conftest.py": "\n"})
    profile = dataclasses.replace(config.load_profile("askari"), suite=empty)
    with pytest.raises(BadInput, match="holds no checks") as caught:
        verify.check_suite(profile)
    assert caught.value.exit_code == 2


def test_a_suite_without_controller_checks_is_fine(tmp_path: Path) -> None:
    suite = write_suite(tmp_path / "suite", {"test_guest.py": SUITE["test_guest.py"]})
    profile = dataclasses.replace(config.load_profile("askari"), suite=suite)
    assert verify.check_suite(profile) == {"verify-before-reboot": 0, "verify": 2}


# -- running the suite: pytest's status decides --------------------------------------------


def test_passing_checks_pass(tmp_path: Path) -> None:
    suite = write_suite(tmp_path / "suite", {"test_a.py": "def test_ok():\n    pass\n"})
    result = run(suite, tmp_path)
    assert result.outcome is Outcome.PASSED
    assert result.junit == tmp_path / "junit.xml"
    assert result.junit.is_file()


def test_the_junit_suite_is_named_host_tier_from_the_machines_view(tmp_path: Path) -> None:
    # The view the harness writes for the suite (harness.state: the run's tier, the machine's
    # profile as "host"); a report that merges several cells' JUnit files tells them apart.
    (tmp_path / "state.json").write_text('{"run_id": "0001", "tier": "internal", "host": "askari"}')
    suite = write_suite(tmp_path / "suite", {"test_a.py": "def test_ok():\n    pass\n"})
    run(suite, tmp_path)
    suites = ET.parse(tmp_path / "junit.xml").getroot().findall("testsuite")
    assert [s.get("name") for s in suites] == ["askari-internal"]
    # Without a view (a suite run by hand), pytest names the suite itself.
    assert verify.junit_suite_name(tmp_path / "missing.json") is None
    argv = verify.pytest_argv(Path("suite"), RenderedInventory(tmp_path, "h", tmp_path), tmp_path / "j.xml")
    assert not any(arg.startswith("junit_suite_name=") for arg in argv)


def test_the_suite_runs_a_file_per_worker_unless_told_otherwise(tmp_path: Path) -> None:
    inventory = RenderedInventory(tmp_path, "h", tmp_path)
    argv = verify.pytest_argv(Path("suite"), inventory, tmp_path / "j.xml", parallel=verify.workers({}))
    assert argv[argv.index("-n") + 1] == str(verify.VERIFY_WORKERS)
    assert argv[argv.index("--dist") + 1] == "loadfile"
    assert "-n" not in verify.pytest_argv(Path("suite"), inventory, tmp_path / "j.xml", parallel=0)
    assert verify.workers({verify.ENV_WORKERS: "0"}) == 0
    with pytest.raises(BadInput, match="BOMA_VERIFY_WORKERS='two' is not a number"):
        verify.workers({verify.ENV_WORKERS: "two"})


def test_failing_checks_are_the_system_under_test(tmp_path: Path) -> None:
    suite = write_suite(tmp_path / "suite", {"test_a.py": "def test_bad():\n    assert False\n"})
    with pytest.raises(VerificationFailed) as caught:
        run(suite, tmp_path)
    assert caught.value.exit_code == ExitCode.SUT_FAILED


def test_a_phase_whose_marker_selects_nothing_is_not_an_error(tmp_path: Path) -> None:
    suite = write_suite(tmp_path / "suite", {"test_a.py": "def test_in_guest():\n    pass\n"})
    result = run(suite, tmp_path, marker=verify.CONTROLLER_MARKER)
    assert result.outcome is Outcome.NOTHING_SELECTED
    assert "no controller checks for this profile" in result.message


def test_a_marked_phase_still_fails_on_failing_checks(tmp_path: Path) -> None:
    suite = write_suite(tmp_path / "suite", {"test_a.py": textwrap.dedent("""\
        import pytest


        @pytest.mark.controller
        def test_port():
            assert False
        """)})
    with pytest.raises(VerificationFailed):
        run(suite, tmp_path, marker=verify.CONTROLLER_MARKER)


def test_a_whole_suite_with_nothing_to_run_is_a_harness_error(tmp_path: Path) -> None:
    """Nothing judged the VM: passing would hide that."""
    suite = write_suite(tmp_path / "suite", {"helpers.py": "X = 1\n"})
    with pytest.raises(HarnessError, match="holds no checks") as caught:
        run(suite, tmp_path)
    assert caught.value.exit_code == ExitCode.HARNESS_BROKE


@pytest.mark.parametrize(
    ("workers", "says"),
    [("0", r"\(exit status 2\)"), ("2", r": test_a did not collect")],
    ids=["serial", "xdist"],
)
def test_a_suite_that_cannot_run_is_a_harness_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, workers: str, says: str
) -> None:
    """In one process pytest exits 2; under pytest-xdist the import error is a result (exit 1)."""
    monkeypatch.setenv(verify.ENV_WORKERS, workers)
    suite = write_suite(
        tmp_path / "suite",
        {"test_a.py": "import no_such_module_4e2\n", "test_b.py": "def test_ok():\n    pass\n"},
    )
    with pytest.raises(HarnessError, match=r"pytest could not run the suite .*" + says) as caught:
        run(suite, tmp_path)
    assert not isinstance(caught.value, VerificationFailed)
    assert caught.value.exit_code == ExitCode.HARNESS_BROKE


def test_a_bad_worker_count_is_refused_before_anything_boots(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(verify.ENV_WORKERS, "-1")
    with pytest.raises(BadInput, match="BOMA_VERIFY_WORKERS='-1' is not a number of workers"):
        verify.check_suite(config.load_profile("askari"))
