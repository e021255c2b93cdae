"""The subprocess doorway: argument lists only, missing tools named with their package, failures
that say what failed, and long commands teed to a log."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest

from harness import proc
from harness.errors import HarnessError
from harness.proc import CommandFailed


@pytest.fixture
def empty_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """PATH holds only an empty directory, so only the venv's bin and /usr/sbin, /sbin remain."""
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))


def test_run_refuses_a_shell_string() -> None:
    with pytest.raises(TypeError, match="argument list"):
        proc.run("echo hello; rm -rf /tmp/nothing")  # type: ignore[arg-type]


def test_stream_refuses_a_shell_string(tmp_path: Path) -> None:
    log = tmp_path / "out.log"
    with pytest.raises(TypeError, match="argument list"):
        proc.stream("w", logfile=log, echo=False)  # type: ignore[arg-type]
    assert not log.exists()


def test_run_captures_output_of_an_argument_list() -> None:
    result = proc.run([sys.executable, "-c", "print('a b;c')"], quiet=True)
    assert result.returncode == 0
    assert result.stdout == "a b;c\n"
    assert result.argv == (sys.executable, "-c", "print('a b;c')")


@pytest.mark.usefixtures("empty_path")
def test_missing_known_program_hints_its_debian_package() -> None:
    assert proc.PACKAGE_OF["genisoimage"] == "genisoimage"
    with pytest.raises(HarnessError) as caught:
        proc.require("genisoimage")
    assert "'genisoimage' is not installed" in caught.value.message
    assert caught.value.hint is not None
    assert "apt-get install genisoimage" in caught.value.hint


@pytest.mark.usefixtures("empty_path")
def test_missing_program_maps_to_its_package_not_its_name() -> None:
    with pytest.raises(HarnessError) as caught:
        proc.run(["qemu-img", "info", "x.qcow2"], quiet=True)
    assert caught.value.hint is not None
    assert "apt-get install qemu-utils" in caught.value.hint


@pytest.mark.usefixtures("empty_path")
def test_missing_unknown_program_still_fails_clearly() -> None:
    with pytest.raises(HarnessError) as caught:
        proc.run(["boma-no-such-tool-xyz", "--help"], quiet=True)
    assert "'boma-no-such-tool-xyz' is not installed" in caught.value.message
    assert caught.value.hint is not None
    assert "apt-get install ?" in caught.value.hint


@pytest.mark.usefixtures("empty_path")
def test_the_venvs_own_programs_are_found_without_path() -> None:
    assert Path(proc.require("python3")).parent == Path(sys.executable).parent


def test_failure_names_command_exit_status_and_stderr_tail() -> None:
    script = "import sys; sys.stderr.write('disk full\\n'); sys.exit(3)"
    with pytest.raises(CommandFailed) as caught:
        proc.run(["python3", "-c", script], quiet=True)
    message = caught.value.message
    assert "exit status 3" in message
    assert "python3 -c" in message
    assert "disk full" in message
    assert caught.value.result.returncode == 3
    assert isinstance(caught.value, HarnessError)


def test_failure_keeps_only_the_tail_of_stderr() -> None:
    script = "import sys; [print(f'line{i:03d}', file=sys.stderr) for i in range(100)]; sys.exit(1)"
    with pytest.raises(CommandFailed) as caught:
        proc.run(["python3", "-c", script], quiet=True)
    message = caught.value.message
    assert "line099" in message
    assert f"line{100 - proc.STDERR_TAIL_LINES:03d}" in message
    assert f"line{100 - proc.STDERR_TAIL_LINES - 1:03d}" not in message


def test_unchecked_failure_returns_the_result() -> None:
    result = proc.run(["python3", "-c", "import sys; sys.exit(5)"], check=False, quiet=True)
    assert result.returncode == 5


def test_run_timeout_is_a_harness_error() -> None:
    with pytest.raises(HarnessError, match=r"timed out after 0s"):
        proc.run(["python3", "-c", "import time; time.sleep(5)"], timeout=0.2, quiet=True)


def test_env_is_merged_over_the_callers_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BOMA_TEST_OUTER", "outer")
    script = "import os; print(os.environ['BOMA_TEST_OUTER'], os.environ['BOMA_TEST_INNER'])"
    result = proc.run(["python3", "-c", script], env={"BOMA_TEST_INNER": "inner"}, quiet=True)
    assert result.stdout.split() == ["outer", "inner"]


def test_stream_tees_combined_output_to_the_log_and_returns_the_status(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    log = tmp_path / "logs" / "ansible.log"
    script = "import sys; print('to stdout', flush=True); print('to stderr', file=sys.stderr); sys.exit(4)"
    status = proc.stream(["python3", "-c", script], logfile=log)
    assert status == 4
    text = log.read_text(encoding="utf-8")
    assert text.splitlines()[0].startswith("$ python3 -c ")
    assert "to stdout\n" in text
    assert "to stderr\n" in text
    assert "to stdout" in capsys.readouterr().out


def test_stream_appends_to_an_existing_log(tmp_path: Path) -> None:
    log = tmp_path / "verify.log"
    log.write_text("earlier run\n", encoding="utf-8")
    assert proc.stream(["python3", "-c", "print('second')"], logfile=log, echo=False) == 0
    lines = log.read_text(encoding="utf-8").splitlines()
    assert lines[0] == "earlier run"
    assert lines[-1] == "second"


def test_stream_logs_a_python_childs_line_before_the_child_ends_even_unflushed(tmp_path: Path) -> None:
    # ansible-playbook and pytest are Python: on a pipe they would buffer a whole block, and
    # ansible.log would lag the apply by minutes. The child waits until its line is in the log
    # (a line the command itself, logged first, does not hold).
    log = tmp_path / "ansible.log"
    script = (
        "import pathlib, sys, time\nline = 'TASK ' + '[first]'\nprint(line)\n"
        "deadline = time.monotonic() + 10\n"
        "while line not in pathlib.Path(sys.argv[1]).read_text() and time.monotonic() < deadline:\n"
        "    time.sleep(0.02)\n"
        "sys.exit(0 if time.monotonic() < deadline else 7)\n"
    )
    assert proc.stream([sys.executable, "-c", script, str(log)], logfile=log, echo=False, timeout=30) == 0


def test_exit_status_of_a_spawned_service_is_none_while_it_runs_then_its_code(tmp_path: Path) -> None:
    log = tmp_path / "service.log"
    pid = proc.spawn([sys.executable, "-c", "import sys; print('bye', flush=True); sys.exit(3)"], logfile=log)
    status = None
    for _ in range(100):  # the child exits at once; allow a slow machine 10 s
        status = proc.exit_status(pid)
        if status is not None:
            break
        time.sleep(0.1)
    assert status == 3
    assert proc.log_tail(log).endswith("bye")


def test_exit_status_is_none_for_a_running_service(tmp_path: Path) -> None:
    pid = proc.spawn([sys.executable, "-c", "import time; time.sleep(30)"], logfile=tmp_path / "s.log")
    try:
        assert proc.exit_status(pid) is None
    finally:
        proc.stop(pid, Path(sys.executable).name)
    assert not Path(f"/proc/{pid}").exists()


def test_log_tail_keeps_the_last_lines_and_says_when_there_is_no_log(tmp_path: Path) -> None:
    log = tmp_path / "service.log"
    log.write_text("".join(f"line {n}\n" for n in range(100)), encoding="utf-8")
    assert proc.log_tail(log, lines=2) == "line 98\nline 99"
    assert proc.log_tail(tmp_path / "absent.log").startswith("(no log:")


def test_log_tail_scrubs_secrets(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GANDI_BEARER_TOKEN", "s3cr3t-token-value")
    log = tmp_path / "service.log"
    log.write_text("auth with s3cr3t-token-value failed\n", encoding="utf-8")
    assert "s3cr3t-token-value" not in proc.log_tail(log)
