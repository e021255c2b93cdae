"""A run owns its machines: admission, its directory, its lock, its services and machines, all
entered into one ExitStack and released in reverse on any exit.

    with Run(RunSpec(...)) as run:          # admitted: the slot is ours, the directory made
        machine = run.add_machine(request)  # recorded, then defined and started
        run.admitted()                      # every domain is defined: let the next run in
        ...                                 # on exit: evidence on failure, then keep or teardown

What happens at the end (:meth:`Run.__exit__`):

* success: everything goes, unless the keep policy is ``always``;
* a failure (the system under test, or the harness): the evidence of every machine is
  collected first, then the machines are kept for inspection (policy ``on-failure``) or go;
* a dead guest or the global deadline: evidence, then everything goes (keeping a guest that
  cannot come up only blocks the next run);
* a signal: everything goes at once, no evidence (a CI runner kills the tree ~10 s later).

Teardown runs shielded from further signals and is resumable (:mod:`harness.teardown`).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from types import TracebackType

import libvirt

from harness import (
    aptcache,
    config,
    guestnet,
    lock,
    log,
    owner,
    paths,
    pebble,
    proc,
    provision,
    runvars,
    signals,
    speed,
    teardown,
    virt,
)
from harness.errors import BadInput, BomaError, ExitCode, HarnessError
from harness.liveness import GuestDead
from harness.machine import Machine
from harness.ports import free_loopback_port
from harness.private import make_private_dir, qemu_owner
from harness.state import STATE_FILE, RunState, Status, all_runs, new_run_id, run_dirs

ADMISSION_LOCK = ".admission.lock"
SHARED_LOCK = 0o660  # operators and the CI runner share one runs directory through its group
ENV_MAX_RUNS = "BOMA_MAX_RUNS"
ENV_MAX_RUNS_OLD = "BOMA_MAX_VMS"  # its name while every run held one machine: still read
# One run per controller by default: under TCG two runs on a small controller starve each
# other and turn every timeout into a lottery. A big KVM host may raise it. A run is one slot
# whatever its machines (a scenario's are one unit); the memory check sums them.
DEFAULT_MAX_RUNS = 1


class Keep(StrEnum):
    """What happens to the machines when the run ends."""

    ON_FAILURE = "on-failure"  # the default: a failed machine stays for inspection
    ALWAYS = "always"  # --keep / `up`: stays even on success, for the inner loop
    NEVER = "never"  # --no-keep: CI and tests; evidence is still collected first


class SlotTaken(HarnessError):
    """Another run holds the slot this one needs; nothing was created."""


@dataclass(frozen=True)
class RunSpec:
    label: str  # what the run is of: a host profile, or a scenario
    tier: str
    uri: str
    keep: Keep
    artifacts: Path
    levers: speed.Levers = speed.DEFAULT
    run_id: str = ""  # empty: a new id


def _ours(directory: Path) -> bool:
    """Whether this user may judge ``directory`` (root judges all; others their own runs)."""
    return os.geteuid() == 0 or directory.stat().st_uid == os.geteuid()


def reap_stale(uri: str) -> None:
    """Remove the runs whose owner is gone without keeping them (killed, crashed, a teardown
    cut short), and the half-made directories nobody holds; say which."""
    for run in all_runs():
        if run.status is Status.KEPT or lock.holder(run.lock_file) is not None:
            continue
        log.warn(
            f"reaping run {run.run_id} ({run.label}, {run.status}): its owner "
            f"{run.run_owner.describe()} is gone"
        )
        teardown.teardown(run)
    for directory in run_dirs():
        if not _ours(directory) or lock.holder(directory / "run.lock") is not None:
            continue
        if not (directory / STATE_FILE).exists():
            log.warn(f"removing {directory}: a run directory with no state and no owner")
            teardown.remove_files_of(directory)
    with virt.connect(uri) as conn:
        for name in stray_domains(conn):
            log.warn(f"removing domain {name}: no run state and its owner is gone")
            virt.undefine(conn, name)


def stray_domains(conn: libvirt.virConnect, force: bool = False) -> list[str]:
    """The test domains no run directory claims and whose recorded owner is gone (with
    ``force``: every test domain). A run directory that exists is somebody's run, readable by
    us or not."""
    claimed = {directory.name for directory in run_dirs()}
    return [
        name
        for name, _active, meta in virt.list_runs(conn)
        if force or not (meta.get("run") in claimed or owner_alive(meta))
    ]


def owner_alive(meta: dict[str, str]) -> bool:
    try:
        return owner.Owner(int(meta["owner_pid"]), int(meta["owner_start"]), meta["owner_node"]).alive()
    except (KeyError, ValueError):
        return False  # made by a harness that recorded no owner: nobody can still be using it


def max_runs(env: dict[str, str] | None = None) -> int:
    """How many runs this controller holds at once (``BOMA_MAX_RUNS``, or its old name)."""
    env = dict(os.environ) if env is None else env
    name = ENV_MAX_RUNS if ENV_MAX_RUNS in env else ENV_MAX_RUNS_OLD
    text = env.get(name, str(DEFAULT_MAX_RUNS))
    try:
        limit = int(text)
    except ValueError:
        limit = 0
    if limit < 1:
        raise BadInput(f"{name}={text!r}: must be a whole number of runs, 1 or more")
    return limit


def slots_taken(uri: str) -> list[str]:
    """One line per slot held: each run on disk (kept or in progress, all its machines named)
    and each running test domain that no run state claims."""
    taken = []
    known = set()
    for run in all_runs():
        known.add(run.run_id)
        who = (
            lock.holder(run.lock_file) or f"kept since {time.strftime('%H:%M', time.localtime(run.created))}"
        )
        names = ", ".join(m.domain for m in run.machines) or "no machine yet"
        taken.append(f"run {run.run_id} ({run.label}: {names}) [{run.status}; {who}]")
    with virt.connect(uri) as conn:
        taken += [
            f"{name} (no run state)"
            for name, active, meta in virt.list_runs(conn)
            if active and meta.get("run") not in known
        ]
    return taken


class Run:
    """One run and everything it owns (see the module's docstring)."""

    def __init__(self, spec: RunSpec) -> None:
        self.spec = spec
        self.run_id = spec.run_id or new_run_id()
        self.machines: list[Machine] = []
        self.kept = False
        self._holds = ExitStack()  # released last: the run's tag and lock
        self._admission = ExitStack()  # released once every domain is defined
        self._resources = ExitStack()  # what teardown removes
        self._state: RunState | None = None
        self.qemu: tuple[int, int] | None = None  # who its disks are handed to (see private)
        self._pebble_port: int | None = None  # chosen with the network plan, taken by Pebble

    @property
    def state(self) -> RunState:
        if self._state is None:
            raise RuntimeError("the run has not been entered")
        return self._state

    # -- entering: admission ----------------------------------------------------------------
    def __enter__(self) -> Run:
        try:
            self._enter()
        except BaseException:
            with signals.shielded():
                self._resources.close()
                self._admission.close()
                self._holds.close()
            raise
        return self

    def _enter(self) -> None:
        spec = self.spec
        root = paths.runs_dir()
        root.mkdir(parents=True, exist_ok=True)
        me = owner.current()
        note = f"run {self.run_id} ({spec.label}/{spec.tier}, {me.describe()})"
        self._holds.enter_context(proc.tagged(self.run_id))
        try:
            self._admission.enter_context(lock.exclusive(root / ADMISSION_LOCK, note, SHARED_LOCK))
        except lock.LockBusy as busy:
            raise SlotTaken(
                f"another run is being admitted: {busy.holder}",
                hint="wait for it, or remove it: python -m harness prune",
            ) from None
        reap_stale(spec.uri)
        limit = max_runs()
        taken = slots_taken(spec.uri)
        if len(taken) + 1 > limit:
            raise SlotTaken(
                f"{len(taken)} run(s) hold the {limit} slot(s) of this machine: {'; '.join(taken)}",
                hint=f"python -m harness down --run ID, python -m harness prune, or raise {ENV_MAX_RUNS}",
            )
        run_dir = root / self.run_id
        self.qemu = qemu_owner(spec.uri)
        make_private_dir(run_dir, self.qemu)
        spec.artifacts.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._state = RunState(
            run_id=self.run_id,
            label=spec.label,
            tier=spec.tier,
            uri=spec.uri,
            run_dir=str(run_dir),
            artifacts=str(spec.artifacts),
            owner=me.to_json(),
            levers=spec.levers.as_json(),
        )
        self._holds.enter_context(lock.exclusive(self.state.lock_file, note))
        self.state.save()
        # One callback removes it all, in the reverse order of setup, from the state on disk:
        # the same code `down`, `prune` and the reaper run, so a cut teardown can be finished.
        self._resources.callback(self._teardown)
        log.info(f"run {self.run_id}: directory {run_dir}, artifacts {spec.artifacts}")

    def add_machine(self, request: provision.MachineRequest) -> Machine:
        machine = provision.provision(self.state, request, self.qemu)
        self.machines.append(machine)
        return machine

    def network_plan(self, tier: config.CertTier, *, force_open: bool) -> guestnet.Plan:
        """The machines' network, and what it needs started first: on a hermetic network the
        package cache, and the port Pebble will take (the relay allows only what it is told)."""
        if guestnet.open_because(tier, force_open=force_open):
            return guestnet.plan_for(tier, (), force_open=force_open)
        state = self.state
        log_dir = state.artifacts_dir / aptcache.ARTIFACTS_NAME
        cache = aptcache.start(state.dir, log_dir)
        state.cache_pid, state.cache_port, state.cache_log = cache.pid, cache.port, str(log_dir)
        state.save()
        egress = [guestnet.Egress(guestnet.PACKAGE_CACHE, cache.port)]
        if tier.pebble:
            self._pebble_port = free_loopback_port()
            egress.append(guestnet.Egress(guestnet.PEBBLE, self._pebble_port))
        return guestnet.plan_for(tier, tuple(egress))

    def prepare_tier(self, tier: config.CertTier, caddy_archive: Path | None, machine: Machine) -> None:
        """What the tier needs from the controller (Pebble for acme-local) and the run's
        overlays (``harness-vars.yml``, the 0600 ``secrets.yml``)."""
        state, pebble_vars = self.state, {}
        if tier.pebble:
            started = pebble.start(
                state.dir / "pebble",
                http_port=machine.state.host_port(80),
                tls_port=machine.state.host_port(443),
                acme_port=self._pebble_port,
            )
            state.pebble_pids, state.pebble_dir = list(started.pids), str(started.directory)
            state.save()
            pebble_vars = started.guest_vars()
        state.caddy_archive = str(caddy_archive) if caddy_archive else ""
        runvars.write_harness_vars(state.dir, tier, caddy_archive, pebble_vars)
        runvars.write_secrets(state.dir, tier)
        state.save()

    def admitted(self) -> None:
        """Every domain is defined: the next run may be admitted (and will see ours)."""
        self.state.status = Status.RUNNING
        self.state.save()
        self._admission.close()

    def mark(self, step: str) -> None:
        """Record the step the run is in (``list`` shows it)."""
        self.state.step = step
        self.state.save()

    # -- leaving: evidence, then keep or teardown -------------------------------------------
    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        try:
            self._admission.close()
            if exc is not None and not isinstance(exc, KeyboardInterrupt):
                self._collect_evidence(exc)
            self.kept = self._keeps(exc)
            self.state.outcome = _outcome(exc) if self._state is not None else ""
            with signals.shielded():
                if self.kept:
                    self._keep()
                else:
                    self._resources.close()
        finally:
            with signals.shielded():
                self._holds.close()

    def _keeps(self, exc: BaseException | None) -> bool:
        if not self.machines:
            return False
        if exc is None:
            return self.spec.keep is Keep.ALWAYS
        if isinstance(exc, KeyboardInterrupt | GuestDead | signals.DeadlineExceeded):
            return False
        return self.spec.keep is not Keep.NEVER

    def _collect_evidence(self, exc: BaseException) -> None:
        reason = exc.render() if isinstance(exc, BomaError) else f"unexpected {type(exc).__name__}: {exc}"
        for machine in self.machines:
            with log.step(f"evidence ({machine.name})"):
                try:
                    machine.collect_evidence(reason=reason)
                except (BomaError, OSError) as failed:
                    log.warn(f"evidence of {machine.name} incomplete: {failed}")

    def _keep(self) -> None:
        state = self.state
        state.status = Status.KEPT
        if self.spec.keep is not Keep.ALWAYS:
            teardown.stop_services(state)  # kept for inspection, not for use: Pebble ends
        state.save()
        self._resources.pop_all()  # the state on disk is how `down` finds them later
        for machine in self.machines:
            log.info(f"KEPT {machine.state.domain} (run {self.run_id}):\n{machine.how_to_get_in()}")

    def _teardown(self) -> None:
        with log.step("teardown"):
            problems = teardown.teardown(self.state)
        if problems:
            log.warn(
                f"run {self.run_id} was not fully removed; the next preflight or "
                "`python -m harness prune` finishes it"
            )


def _outcome(exc: BaseException | None) -> str:
    if exc is None:
        return "pass"
    if isinstance(exc, KeyboardInterrupt):
        return "interrupted"
    if isinstance(exc, BomaError) and exc.exit_code == ExitCode.SUT_FAILED:
        return "fail"
    return "error"


class RunBusy(HarnessError):
    """Another live process is working on this run."""


@contextmanager
def attach(state: RunState) -> Iterator[None]:
    """Work on a kept run for one step: hold its lock (refuse if another step holds it) and
    tag what the step starts, so a killed step's children are found by the reaper too."""
    note = f"a step on run {state.run_id} ({owner.current().describe()})"
    with ExitStack() as stack:
        try:
            stack.enter_context(lock.exclusive(state.lock_file, note))
        except lock.LockBusy as busy:
            raise RunBusy(
                f"run {state.run_id} is in use by {busy.holder}",
                hint="wait for it to finish (or: python -m harness prune --force)",
            ) from None
        stack.enter_context(proc.tagged(state.run_id))
        yield
