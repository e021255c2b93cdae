"""What a cancelled or killed run relies on, without a VM: children get an allow-listed
environment and the run's tag, the tag finds them after the harness is gone, every child has
a bound even when it stops talking, the locks end with their holder, owners are told apart from
reused pids, a dead guest is recognised from its console, and signals are shielded while a
teardown runs."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from harness import lock, owner, proc, signals
from harness.errors import HarnessError
from harness.liveness import GuestDead, Watch

# -- the environment children get ----------------------------------------------------------------


def test_children_get_an_allow_listed_environment_and_the_run_tag(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ANSIBLE_SSH_EXTRA_ARGS", "-o ProxyJump=askari.example")
    monkeypatch.setenv("SSH_AUTH_SOCK", "/tmp/agent.sock")
    monkeypatch.setenv("LIBVIRT_DEFAULT_URI", "qemu+ssh://askari/system")
    monkeypatch.setenv("GANDI_BEARER_TOKEN", "sentinel-token-0123456789")
    monkeypatch.setenv("LC_ALL", "C.UTF-8")
    script = "import json, os; print(json.dumps(dict(os.environ)))"
    with proc.tagged("0a1b2c3d"):
        env = json.loads(proc.run([sys.executable, "-c", script], quiet=True, env={"EXTRA": "1"}).stdout)
    for leaked in ("ANSIBLE_SSH_EXTRA_ARGS", "SSH_AUTH_SOCK", "LIBVIRT_DEFAULT_URI", "GANDI_BEARER_TOKEN"):
        assert leaked not in env, f"{leaked} reached a child"
    assert env["BOMA_RUN"] == "0a1b2c3d"
    assert env["EXTRA"] == "1"
    assert env["LC_ALL"] == "C.UTF-8"
    assert env["PATH"].split(os.pathsep)[0] == str(Path(sys.executable).parent)


def test_a_child_cannot_claim_another_runs_tag(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BOMA_RUN", "feedf00d")  # inherited from an outer run: not ours
    assert "BOMA_RUN" not in proc.child_environment(dict(os.environ))


def test_the_tag_finds_a_runs_processes_and_kill_tagged_ends_them(tmp_path: Path) -> None:
    with proc.tagged("7a6b5c4d"):
        pid = proc.spawn([sys.executable, "-c", "import time; time.sleep(60)"], logfile=tmp_path / "s.log")
    untagged = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        deadline = time.monotonic() + 10
        while pid not in proc.tagged_pids("7a6b5c4d") and time.monotonic() < deadline:
            time.sleep(0.05)  # the child's environ is readable once it has exec'd
        assert proc.tagged_pids("7a6b5c4d") == [pid]
        assert proc.kill_tagged("7a6b5c4d") == [pid]
        with contextlib.suppress(ChildProcessError):  # kill_tagged may have reaped it already
            os.waitpid(pid, 0)
        assert proc.tagged_pids("7a6b5c4d") == []
        assert untagged.poll() is None, "a process of no run was killed"
    finally:
        untagged.kill()
        untagged.wait()


# -- every child has a bound -----------------------------------------------------------------------


def test_stream_ends_a_child_that_stops_talking_at_its_bound(tmp_path: Path) -> None:
    began = time.monotonic()
    with pytest.raises(HarnessError, match="exceeded its bound of 1s"):
        proc.stream([sys.executable, "-c", "print('working', flush=True); import time; time.sleep(60)"],
                    logfile=tmp_path / "out.log", timeout=1, echo=False)
    assert time.monotonic() - began < 1 + proc.TERMINATE_GRACE + 2
    assert "working" in (tmp_path / "out.log").read_text(encoding="utf-8")


def test_stream_ends_a_child_that_ignores_sigterm(tmp_path: Path) -> None:
    stubborn = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(60)"
    began = time.monotonic()
    with pytest.raises(HarnessError, match="exceeded its bound"):
        proc.stream([sys.executable, "-c", stubborn], logfile=tmp_path / "out.log", timeout=0.5, echo=False)
    assert time.monotonic() - began < 0.5 + proc.TERMINATE_GRACE + 2


def test_stream_writes_the_log_line_by_line_while_the_child_runs(tmp_path: Path) -> None:
    logfile, release = tmp_path / "out.log", tmp_path / "release"
    script = ("import pathlib, sys, time\nprint('line 0', flush=True)\n"
              "while not pathlib.Path(sys.argv[1]).exists(): time.sleep(0.05)\nprint('line 1')\n")
    done: list[int] = []
    runner = threading.Thread(target=lambda: done.append(
        proc.stream([sys.executable, "-c", script, str(release)], logfile=logfile, timeout=30, echo=False)))
    runner.start()
    try:
        deadline = time.monotonic() + 10
        while "line 0" not in (logfile.read_text(encoding="utf-8") if logfile.exists() else ""):
            assert time.monotonic() < deadline, "the log lagged the running child"
            time.sleep(0.05)
    finally:
        release.touch()
        runner.join(30)
    assert done == [0]
    assert logfile.read_text(encoding="utf-8").splitlines()[-2:] == ["line 0", "line 1"]


# -- locks and owners ------------------------------------------------------------------------------


def test_a_lock_names_its_holder_and_ends_with_it(tmp_path: Path) -> None:
    path = tmp_path / "admission.lock"
    assert lock.holder(path) is None
    with lock.exclusive(path, "run 0a1b2c3d (askari/internal, pid 1)"):
        assert lock.holder(path) == "run 0a1b2c3d (askari/internal, pid 1)"
        with pytest.raises(lock.LockBusy) as busy, lock.exclusive(path, "second"):
            pytest.fail("a held lock was taken twice")
        assert busy.value.holder == "run 0a1b2c3d (askari/internal, pid 1)"
    assert lock.holder(path) is None
    # SIGKILL of the holder frees it: the kernel drops the lock with the process.
    script = ("import fcntl, os, sys, time; fd = os.open(sys.argv[1], os.O_RDWR); "
              "fcntl.flock(fd, fcntl.LOCK_EX); print('held', flush=True); time.sleep(60)")
    holder = subprocess.Popen([sys.executable, "-c", script, str(path)], stdout=subprocess.PIPE, text=True)
    assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
    assert lock.holder(path) is not None
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    assert lock.holder(path) is None


def test_an_owner_is_its_pid_and_start_time() -> None:
    me = owner.current()
    assert me.alive()
    assert not owner.Owner(me.pid, me.start + 1, me.node).alive(), "a reused pid passed for the owner"
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    start = owner.start_ticks(child.pid)
    child.wait()
    assert start is not None
    assert not owner.Owner(child.pid, start, me.node).alive()
    assert owner.Owner(1, 1, "another-controller").alive(), "an owner elsewhere cannot be judged dead here"
    assert owner.Owner.from_json(me.to_json()) == me


# -- a dead guest, from its console --------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_a_booting_guest_is_alive_while_its_console_talks(tmp_path: Path) -> None:
    console, clock = tmp_path / "console.log", Clock()
    console.write_text("[    0.0] Linux version 6.12\n", encoding="utf-8")
    watch = Watch(console, lambda: True, silence_limit=100, clock=clock)
    for step in range(10):
        clock.now += 60
        with console.open("a", encoding="utf-8") as handle:
            handle.write(f"[  OK  ] Started unit {step}\n")
        watch.check()
    assert watch.longest_silence == 60


@pytest.mark.parametrize(
    "line",
    [
        "You are in emergency mode. After logging in, type \"journalctl -xb\" to view",
        "Cannot open access to console, the root account is locked.",
        "[   12.1] Kernel panic - not syncing: VFS: Unable to mount root fs on unknown-block(0,0)",
        "You are in rescue mode. After logging in, type \"journalctl -xb\"",
        "[   40.2] reboot: Power down",
    ],
)
def test_a_console_that_says_the_boot_failed_ends_the_wait(tmp_path: Path, line: str) -> None:
    console = tmp_path / "console.log"
    console.write_text("[    0.0] Linux version 6.12\n", encoding="utf-8")
    watch = Watch(console, lambda: True)
    with console.open("a", encoding="utf-8") as handle:
        handle.write(line + "\n")
    with pytest.raises(GuestDead, match="cannot boot"):
        watch.check()


def test_an_old_boots_lines_do_not_count(tmp_path: Path) -> None:
    """The console is appended across reboots: only this boot's lines are judged."""
    console = tmp_path / "console.log"
    console.write_text("[   40.2] reboot: Power down\n", encoding="utf-8")
    Watch(console, lambda: True).check()


def test_silence_without_ssh_is_death_and_a_stopped_domain_at_once(tmp_path: Path) -> None:
    console, clock = tmp_path / "console.log", Clock()
    console.write_text("[    3.1] Run /init as init process\n", encoding="utf-8")
    watch = Watch(console, lambda: True, silence_limit=100, clock=clock)
    clock.now = 99
    watch.check()
    clock.now = 101
    with pytest.raises(GuestDead, match=r"silent for 101s.*Run /init as init process"):
        watch.check()
    with pytest.raises(GuestDead, match="no longer running"):
        Watch(console, lambda: False).check()


# -- signals -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP])
def test_each_cancelling_signal_interrupts_and_handlers_are_restored(signum: int) -> None:
    # Under nohup SIGHUP arrives ignored, and an inherited ignore is respected by design (the
    # test below): start from the default handler, whatever the test run inherited.
    inherited = signal.signal(signum, signal.SIG_DFL)
    try:
        with pytest.raises(signals.Interrupted) as caught, signals.cancellable():
            os.kill(os.getpid(), signum)
            time.sleep(5)
        assert caught.value.signame == signal.Signals(signum).name
        assert signal.getsignal(signum) is signal.SIG_DFL
    finally:
        signal.signal(signum, inherited)


def test_a_signal_during_a_shielded_teardown_is_reported_not_raised() -> None:
    finished = False
    with signals.cancellable(), signals.shielded():
        os.kill(os.getpid(), signal.SIGINT)
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.1)
        finished = True
    assert finished


def test_the_deadline_raises_once_and_not_inside_a_shield() -> None:
    with pytest.raises(signals.DeadlineExceeded, match="deadline of 0s"), signals.cancellable(0.2):
        time.sleep(5)
    with signals.cancellable(0.1), signals.shielded():
        time.sleep(0.3)  # the alarm fires in here and is only logged


def test_an_ignored_sighup_stays_ignored(monkeypatch: pytest.MonkeyPatch) -> None:
    """nohup's decision is kept: a run started under it survives the terminal closing."""
    previous = signal.signal(signal.SIGHUP, signal.SIG_IGN)
    try:
        with signals.cancellable():
            assert signal.getsignal(signal.SIGHUP) is signal.SIG_IGN
            assert signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL
    finally:
        signal.signal(signal.SIGHUP, previous)
