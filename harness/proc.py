"""The one doorway to subprocesses: argument lists only, never a shell.

A missing program is a :class:`HarnessError` naming the Debian package that provides it; a
failing command names itself, its exit status and the tail of its stderr.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import signal
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from harness import log
from harness.errors import HarnessError
from harness.poll import NotYet, wait_until
from harness.secrets import known_secrets, scrub_text

# Program → the Debian package that provides it, for the hint of a missing-tool error.
PACKAGE_OF: Mapping[str, str] = {
    "qemu-system-x86_64": "qemu-system-x86",
    "qemu-img": "qemu-utils",
    "virsh": "libvirt-clients",
    "libvirtd": "libvirt-daemon-system",
    "virtlogd": "libvirt-daemon-system",
    "mmdebstrap": "mmdebstrap",
    "genisoimage": "genisoimage",
    "cloud-localds": "cloud-image-utils",
    "grub-mkimage": "grub-common",
    "sfdisk": "fdisk",
    "losetup": "mount",
    "mkfs.ext4": "e2fsprogs",
    "ssh": "openssh-client",
    "ssh-keygen": "openssh-client",
    "ansible-playbook": "ansible-core (pip, in the venv: make venv)",
    "ansible-inventory": "ansible-core (pip, in the venv: make venv)",
    "pebble": "pebble",
    "tar": "tar",
    "git": "git",
    "pgrep": "procps",
    "pebble-challtestsrv": "pebble",
    "openssl": "openssl",
    "mount": "mount",
    "umount": "mount",
}

STDERR_TAIL_LINES = 20
STOP_TIMEOUT = 10.0


@dataclass(frozen=True)
class Result:
    argv: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str


class CommandFailed(HarnessError):
    """A command exited non-zero. Carries the result so callers may judge it themselves."""

    def __init__(self, result: Result) -> None:
        tail = "\n".join(result.stderr.strip().splitlines()[-STDERR_TAIL_LINES:])
        super().__init__(
            f"command failed with exit status {result.returncode}: {render(result.argv)}"
            + ("\n  stderr (tail):\n    " + tail.replace("\n", "\n    ") if tail else "")
        )
        self.result = result


def render(argv: Sequence[str]) -> str:
    return shlex.join(argv)


def _venv_path(path: str | None = None) -> str:
    """PATH with the venv's own bin dir first: ansible-playbook, pytest and ansible-inventory
    (which testinfra runs through a shell) come from the venv the harness runs in, even when
    that venv is not on PATH (``.venv/bin/python -m harness``)."""
    return os.pathsep.join([str(Path(sys.executable).parent), path or os.environ.get("PATH", "")])


def _prepare(argv: Sequence[str], env: Mapping[str, str] | None) -> tuple[list[str], dict[str, str]]:
    """The checked command and its environment, for every way of starting a program."""
    if isinstance(argv, str):
        raise TypeError("proc takes an argument list, never a shell string")
    merged = {**os.environ, **(env or {})}
    merged["PATH"] = _venv_path(merged.get("PATH"))
    return [require(argv[0]), *argv[1:]], merged


def require(program: str) -> str:
    """Return the full path of ``program`` or fail with the package that provides it."""
    found = shutil.which(program, path=os.pathsep.join([_venv_path(), "/usr/sbin", "/sbin"]))
    if found is None:
        package = PACKAGE_OF.get(program, "?")
        raise HarnessError(
            f"required program {program!r} is not installed",
            hint=f"apt-get install {package}  (or: make bootstrap)",
        )
    return found


def run(
    argv: Sequence[str],
    *,
    check: bool = True,
    input_text: str | None = None,
    timeout: float | None = None,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    quiet: bool = False,
) -> Result:
    """Run ``argv`` to completion, capturing its output."""
    full, merged_env = _prepare(argv, env)
    if not quiet:
        log.info(f"$ {render(argv)}")
    try:
        done = subprocess.run(
            full,
            input=input_text,
            capture_output=True,
            text=True,
            timeout=timeout,
            env=merged_env,
            cwd=cwd,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise HarnessError(f"command timed out after {timeout}s: {render(argv)}") from exc
    result = Result(tuple(argv), done.returncode, done.stdout, done.stderr)
    if check and done.returncode != 0:
        raise CommandFailed(result)
    return result


def stream(
    argv: Sequence[str],
    *,
    logfile: Path,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    timeout: float | None = None,
    echo: bool = True,
) -> int:
    """Run a long command, teeing its combined output to ``logfile`` (and the console).

    Returns the exit status: a long command's failure (ansible, pytest) is judged by the
    caller, who knows whether it means the harness broke or the system under test is wrong.
    """
    full, merged_env = _prepare(argv, env)
    log.info(f"$ {render(argv)}  (log: {logfile})")
    logfile.parent.mkdir(parents=True, exist_ok=True)
    with logfile.open("a", encoding="utf-8") as sink:
        sink.write(f"$ {render(argv)}\n")
        sink.flush()
        proc = subprocess.Popen(
            full,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=merged_env,
            cwd=cwd,
            start_new_session=True,
        )
        # Secrets are cut from every line before it reaches the log file or the console:
        # no_log in the roles is the first defence, this is the second.
        secrets = known_secrets()
        try:
            assert proc.stdout is not None
            for raw in proc.stdout:
                line = scrub_text(raw, secrets) if secrets else raw
                sink.write(line)
                if echo:
                    print("    │ " + line, end="", flush=True)
            return proc.wait(timeout=timeout)
        except BaseException:
            _terminate(proc)
            raise


def _terminate(proc: subprocess.Popen[str]) -> None:
    """Stop a child and its process group; used on Ctrl-C and timeouts."""
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=10)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)


def spawn(argv: Sequence[str], *, logfile: Path, env: Mapping[str, str] | None = None) -> int:
    """Start a service the run needs (Pebble) in its own session, output to ``logfile``.

    Returns its pid; the caller records it and ends it with :func:`stop`, also from a later
    command (a kept VM's services outlive the command that started them).
    """
    full, merged_env = _prepare(argv, env)
    log.info(f"$ {render(argv)} &  (log: {logfile})")
    with logfile.open("a", encoding="utf-8") as sink:
        child = subprocess.Popen(
            full,
            stdin=subprocess.DEVNULL,
            stdout=sink,
            stderr=subprocess.STDOUT,
            env=merged_env,
            start_new_session=True,
        )
    return child.pid


def exit_status(pid: int) -> int | None:
    """The exit status of a child started by :func:`spawn` once it has ended, else ``None``.

    Only for children of this process (Pebble while its run starts); it reaps the child.
    """
    reaped, status = os.waitpid(pid, os.WNOHANG)
    return os.waitstatus_to_exitcode(status) if reaped == pid else None


def log_tail(logfile: Path, lines: int = STDERR_TAIL_LINES) -> str:
    """The last lines of a spawned service's log, scrubbed, for an error message."""
    try:
        text = logfile.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        return f"(no log: {exc.strerror})"
    tail = "\n".join(text.splitlines()[-lines:]) or "(empty log)"
    return scrub_text(tail, known_secrets())


def _reaped(pid: int) -> bool | None:
    """For a child of this process: whether it has exited (reaping it). ``None`` otherwise."""
    try:
        reaped, _status = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return None
    return reaped == pid


def _still_ours(pid: int, program: str) -> bool:
    """Whether ``pid`` is still the running service we started (and not a reused pid).

    A child of this process cannot have its pid reused before it is reaped, so it is ours for
    sure (its /proc cmdline may even read empty for a moment after exec). A pid recorded by an
    earlier command is ours only if it still runs ``program``.
    """
    exited = _reaped(pid)
    if exited is not None:
        return not exited
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode()
    except OSError:
        return False  # already gone
    return Path(cmdline).name == program


def stop(pid: int, program: str) -> None:
    """End a process group started by :func:`spawn`, if it is still the program we started."""
    if not _still_ours(pid, program):
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGTERM)

    def gone() -> None:
        exited = _reaped(pid)
        if exited is None:  # started by an earlier command: just watch it go
            exited = not Path(f"/proc/{pid}").exists()
        if not exited:
            raise NotYet(f"pid {pid} still running")

    try:
        wait_until(gone, what=f"{program} (pid {pid}) to exit", timeout=STOP_TIMEOUT, interval=0.2)
    except HarnessError:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, 0)  # our own child: reap it, so no zombie outlives the run
