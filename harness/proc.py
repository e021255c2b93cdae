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
import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn, TextIO

from harness import heartbeat, log
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
    "setfacl": "acl",
    "umount": "mount",
    "passt": "passt",
    "ip": "iproute2",
    "apt-cacher-ng": "apt-cacher-ng",
    "flock": "util-linux",
}

STDERR_TAIL_LINES = 20
STOP_TIMEOUT = 10.0
# Every child has a bound. These are the defaults; callers with longer work (an apply, an image
# build) pass their own.
RUN_TIMEOUT = 300.0
STREAM_TIMEOUT = 1800.0
# On Ctrl-C a CI runner kills the whole tree about 10 s after its first signal: a child gets
# this long to end after SIGTERM before SIGKILL, so the run's own teardown still fits.
TERMINATE_GRACE = 3.0
STREAM_POLL_INTERVAL = 0.2
READER_JOIN_TIMEOUT = 5.0

# The environment children get: an allow-list, never the operator's whole environment. An
# exported ANSIBLE_SSH_EXTRA_ARGS with a ProxyJump, an SSH_AUTH_SOCK or a LIBVIRT_DEFAULT_URI
# must not steer what a test run connects to.
ENV_ALLOWED = frozenset(
    {
        "PATH",
        "HOME",
        "USER",
        "LOGNAME",
        "LANG",
        "LANGUAGE",
        "TZ",
        "TERM",
        "TMPDIR",
        "http_proxy",
        "https_proxy",
        "no_proxy",
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "NO_PROXY",
    }
)
ENV_ALLOWED_PREFIXES = ("LC_", "BOMA_")
# Every child of a run carries the run's id, and so does everything it starts (ssh control
# masters, Ansible's workers): the reaper finds them by it even after the harness was killed.
ENV_RUN_TAG = "BOMA_RUN"
_run_tag: str | None = None


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


def child_environment(base: Mapping[str, str], extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """``base`` cut to the allow-list, then the caller's ``extra`` and the run's tag on top."""
    allowed = {k: v for k, v in base.items() if k in ENV_ALLOWED or k.startswith(ENV_ALLOWED_PREFIXES)}
    allowed.pop(ENV_RUN_TAG, None)
    merged = {**allowed, **(extra or {})}
    if _run_tag is not None:
        merged[ENV_RUN_TAG] = _run_tag
    merged["PATH"] = _venv_path(merged.get("PATH"))
    return merged


@contextlib.contextmanager
def tagged(run_id: str) -> Iterator[None]:
    """Tag every child started inside the block with ``run_id`` (see :func:`tagged_pids`)."""
    global _run_tag  # noqa: PLW0603  (one process, one run at a time: the tag is process state)
    previous, _run_tag = _run_tag, run_id
    try:
        yield
    finally:
        _run_tag = previous


def _short(argv: Sequence[str]) -> str:
    """A command as a heartbeat names it: the program (``python -m pytest``) and its last word."""
    program = Path(argv[0]).name
    if len(argv) > 2 and argv[1] == "-m":
        return f"{program} -m {argv[2]}"
    return f"{program} … {heartbeat.shorten(argv[-1], 60)}" if len(argv) > 1 else program


def _prepare(argv: Sequence[str], env: Mapping[str, str] | None) -> tuple[list[str], dict[str, str]]:
    """The checked command and its environment, for every way of starting a program."""
    if isinstance(argv, str):
        raise TypeError("proc takes an argument list, never a shell string")
    return [require(argv[0]), *argv[1:]], child_environment(os.environ, env)


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
    timeout: float = RUN_TIMEOUT,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    quiet: bool = False,
) -> Result:
    """Run ``argv`` to completion, capturing its output."""
    full, merged_env = _prepare(argv, env)
    if not quiet:
        log.info(f"$ {render(argv)}")
    try:
        with heartbeat.beating(f"{_short(argv)} to finish", idle="nothing (its output is read at its end)"):
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
        raise HarnessError(f"command timed out after {timeout:.0f}s: {render(argv)}") from exc
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
    timeout: float = STREAM_TIMEOUT,
    echo: bool = True,
) -> int:
    """Run a long command, teeing its combined output to ``logfile`` (and the console).

    Returns the exit status: a long command's failure (ansible, pytest) is judged by the
    caller, who knows whether it means the harness broke or the system under test is wrong.
    The bound holds even when the child stops printing: output is read by a thread while
    this one waits on the clock, and a child past ``timeout`` is ended, with a HarnessError.
    Python children write unbuffered, so the log grows line by line as they print; a child
    that runs longer than :data:`harness.heartbeat.INTERVAL` gets heartbeats with its last line.
    """
    full, merged_env = _prepare(argv, {"PYTHONUNBUFFERED": "1", **(env or {})})
    log.info(f"$ {render(argv)}  (log: {logfile})")
    logfile.parent.mkdir(parents=True, exist_ok=True)
    with logfile.open("a", encoding="utf-8") as sink:
        sink.write(f"$ {render(argv)}\n")
        sink.flush()
        child = subprocess.Popen(
            full,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=merged_env,
            cwd=cwd,
            start_new_session=True,
        )
        with heartbeat.beating(f"{_short(argv)} (pid {child.pid}) to finish") as beat:
            reader = threading.Thread(target=_pump, args=(child, sink, echo, beat, log.tag()), daemon=True)
            reader.start()
            try:
                status = _wait_exit(child, what=render(argv[:2]), timeout=timeout)
            except BaseException:
                terminate(child)
                raise
            finally:
                reader.join(READER_JOIN_TIMEOUT)
        return status


def _pump(
    child: subprocess.Popen[str], sink: TextIO, echo: bool, beat: heartbeat.Heartbeat, who: str = ""
) -> None:
    """Copy the child's output, line by line, to the log file and the console (each line after
    ``who``, the machine the child works on in a scenario)."""
    # Secrets are cut from every line before it reaches the log file or the console:
    # no_log in the roles is the first defence, this is the second.
    secrets = known_secrets()
    assert child.stdout is not None
    with contextlib.suppress(ValueError, OSError):  # the sink closed under us: the run ended
        for raw in child.stdout:
            line = scrub_text(raw, secrets) if secrets else raw
            sink.write(line)
            sink.flush()  # ansible.log is read while it grows
            beat.saw(line)
            if echo:
                print("    │ " + who + line, end="", flush=True)


def _wait_exit(child: subprocess.Popen[str], *, what: str, timeout: float) -> int:
    def exited() -> int:
        status = child.poll()
        if status is None:
            raise NotYet(f"pid {child.pid} still running")
        return status

    try:
        return wait_until(exited, what=f"{what} to finish", timeout=timeout, interval=STREAM_POLL_INTERVAL)
    except HarnessError as exc:
        raise HarnessError(
            f"{what} exceeded its bound of {timeout:.0f}s and was stopped", hint=exc.message
        ) from exc


def terminate(child: subprocess.Popen[str]) -> None:
    """Stop a child and its process group: SIGTERM, then SIGKILL after a short grace."""
    if child.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(child.pid, signal.SIGTERM)
    try:
        wait_until(
            lambda: _exited_or_not_yet(child),
            what=f"pid {child.pid} to end after SIGTERM",
            timeout=TERMINATE_GRACE,
            interval=0.1,
        )
    except HarnessError:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(child.pid, signal.SIGKILL)
        child.wait()


def _exited_or_not_yet(child: subprocess.Popen[str]) -> None:
    if child.poll() is None:
        raise NotYet("still running")


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


def tagged_pids(run_id: str, proc_root: Path = Path("/proc")) -> list[int]:
    """Every process on this machine that carries ``run_id``'s tag in its environment."""
    needle = f"{ENV_RUN_TAG}={run_id}".encode()
    found = []
    for entry in proc_root.iterdir() if proc_root.is_dir() else []:
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            environ = (entry / "environ").read_bytes()
        except OSError:
            continue  # gone, or not ours to read
        if needle in environ.split(b"\0"):
            found.append(int(entry.name))
    return sorted(found)


def kill_tagged(run_id: str) -> list[int]:
    """SIGKILL every process tagged with ``run_id`` (a run's leftovers); returns their pids."""
    pids = tagged_pids(run_id)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
    return pids


def replace_process(argv: Sequence[str]) -> NoReturn:
    """Become ``argv`` (``login``, ``exec``: ssh takes over the terminal), with the allow-listed
    environment like every other child."""
    full, merged_env = _prepare(argv, None)
    log.info(f"$ {render(argv)}")
    os.execve(full[0], full, merged_env)  # noqa: S606  (an argument list, no shell)
