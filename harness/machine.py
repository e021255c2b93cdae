"""One guest and its verbs, in the manner of the NixOS test driver.

A :class:`Machine` is built from its run's state, so single steps (``apply``, ``reboot``,
``verify``) work on a machine kept by an earlier command. It knows how to reach its guest and
what to do with it: ``succeed``, ``fail``, ``wait_for_unit``, ``wait_for_port``, ``boot_id``,
``reboot``, ``shutdown``, ``crash``, plus the harness's own ``wait_ready``, ``apply``,
``verify`` and ``collect_evidence``. Making its files and its domain is
:mod:`harness.provision`'s job; removing them is :mod:`harness.teardown`'s.
"""

from __future__ import annotations

import math
import shutil
from functools import cached_property
from pathlib import Path

from harness import (
    ansible,
    config,
    evidence,
    hoststate,
    idempotence,
    inventory,
    liveness,
    log,
    narrow,
    paths,
    runvars,
    seed,
    speed,
    ssh,
    statediff,
    transient,
    virt,
)
from harness.errors import HarnessError, VerificationFailed
from harness.poll import NotYet, wait_until
from harness.state import MACHINE_VIEW, MachineState, RunState
from harness.verify import EVERY_HOST_SUITE, SuiteResult, run_suite

# Sized for TCG on a 2-core controller (boot to SSH measured at 80–120 s, a reboot 85–136 s);
# a dead guest is caught by liveness within two minutes, so these bound only a slow live one.
BOOT_TIMEOUT = 900.0
CLOUD_INIT_TIMEOUT = 900.0
REBOOT_TIMEOUT = 900.0
REBOOT_REQUEST_TIMEOUT = 60.0
SHUTDOWN_TIMEOUT = 300.0
# SSH answers before boot has finished (Docker, containers): checks start once systemd says
# startup is over. A unit that hangs past this is the verify suite's to judge, not a crash.
SETTLE_TIMEOUT = 300.0
COMMAND_TIMEOUT = 120.0
UNIT_TIMEOUT = 300.0
PORT_TIMEOUT = 120.0
PROBE_INTERVAL = 3.0
EVIDENCE_REACH_TIMEOUT = 30.0
SLOWEST_TASKS_SHOWN = 5
# A boot killed by a known emulator fault is tried again this often (see wait_for_ssh).
EMULATOR_RETRIES = 1
CLOUD_INIT_DISABLED = "/etc/cloud/cloud-init.disabled"  # cloud-init's own off switch
IDEMPOTENCE_RECORD = "ansible-tasks-idempotence.jsonl"
IDEMPOTENCE_REPORT = "idempotence.txt"


class Machine:
    """One guest of a run, addressed through the run's state."""

    def __init__(self, run: RunState, state: MachineState) -> None:
        self.run = run
        self.state = state

    # Loaded when first needed: cleanup (prune, down) must work even if a profile or tier
    # file changed or vanished since the machine was kept.
    @cached_property
    def profile(self) -> config.Profile:
        return config.load_profile(self.state.host)

    @cached_property
    def tier(self) -> config.CertTier:
        return config.load_tier(self.run.tier)

    @property
    def levers(self) -> speed.Levers:
        return speed.Levers.from_json(self.run.levers)

    # -- identity -----------------------------------------------------------------------
    @property
    def name(self) -> str:
        return self.state.name

    @property
    def dir(self) -> Path:
        return self.run.machine_dir(self.state.name)

    @property
    def artifacts(self) -> Path:
        return Path(self.state.artifacts)

    @property
    def console_log(self) -> Path:
        return self.dir / "console.log"

    @property
    def key(self) -> Path:
        return self.dir / "id_ed25519"

    @property
    def view_file(self) -> Path:
        return self.dir / MACHINE_VIEW

    @property
    def endpoint(self) -> ssh.Endpoint:
        return ssh.Endpoint(
            alias=self.state.domain,
            port=self.state.ssh_port,
            user=seed.ADMIN_USER,
            key=self.key,
            control_path=self.dir / "cm-%C",
        )

    @property
    def inventory(self) -> inventory.RenderedInventory:
        root = self.dir / "inventory"
        return inventory.RenderedInventory(
            path=root, host=self.state.domain, connection_vars=root / "connection.yml"
        )

    def how_to_get_in(self) -> str:
        run = self.run.run_id
        if len(self.run.machines) > 1:  # a scenario's: say which machine
            run = f"{run} --machine {self.name}"
        return (
            f"  get in:   python -m harness login --run {run}"
            f"   (or: ssh -F {self.dir / 'ssh_config'} {self.state.domain})\n"
            f"  console:  python -m harness console --run {run}\n"
            f"  remove:   python -m harness down --run {self.run.run_id}"
        )

    def _save(self) -> None:
        self.run.save()

    # -- the NixOS driver's verbs ---------------------------------------------------------
    def succeed(self, *command: str, timeout: float = COMMAND_TIMEOUT) -> str:
        """Run ``command`` as root in the guest; return its output, fail on a non-zero status."""
        return ssh.run_retrying(
            self.endpoint, ["sudo", *command], what=" ".join(command), timeout=timeout, quiet=True
        ).stdout

    def fail(self, *command: str, timeout: float = COMMAND_TIMEOUT) -> str:
        """Run ``command`` as root; it must fail. Returns its stderr."""
        result = ssh.run_retrying(
            self.endpoint,
            ["sudo", *command],
            what=" ".join(command),
            timeout=timeout,
            check=False,
            quiet=True,
        )
        if result.returncode == 0:
            raise VerificationFailed(f"{' '.join(command)!r} succeeded in {self.name}; it should fail")
        return result.stderr

    def wait_for_unit(self, unit: str, timeout: float = UNIT_TIMEOUT) -> None:
        def active() -> None:
            state = ssh.run_retrying(
                self.endpoint,
                ["systemctl", "is-active", unit],
                what=f"state of {unit}",
                timeout=COMMAND_TIMEOUT,
                check=False,
                quiet=True,
            ).stdout.strip()
            if state == "failed":
                raise VerificationFailed(f"unit {unit} failed in {self.name}")
            if state != "active":
                raise NotYet(f"{unit} is {state or 'unknown'}")

        wait_until(active, what=f"unit {unit} in {self.name}", timeout=timeout, interval=PROBE_INTERVAL)

    def wait_for_port(self, port: int, timeout: float = PORT_TIMEOUT) -> None:
        """Wait until something listens on TCP ``port`` inside the guest."""

        def listening() -> None:
            out = self.succeed("ss", "-Htln", f"sport = :{port}")
            if not out.strip():
                raise NotYet(f"nothing listens on :{port}")

        wait_until(listening, what=f"port {port} in {self.name}", timeout=timeout, interval=PROBE_INTERVAL)

    def boot_id(self, *, shared: bool = False) -> str:
        """The guest's boot_id; ``shared`` reads it over the shared connection (:func:`ssh.run`)."""
        return ssh.run_retrying(
            self.endpoint,
            ssh.BOOT_ID_COMMAND,
            what="boot_id",
            timeout=COMMAND_TIMEOUT,
            quiet=True,
            shared=shared,
        ).stdout.strip()

    def domain_active(self) -> bool:
        with virt.connect(self.run.uri) as conn:
            return virt.is_active(conn, self.state.domain)

    def watch_up(self, verdict: str) -> liveness.Watch:
        """A liveness watch on a guest that is up: its console may stay quiet, but a panic on
        it, or a domain that stopped, is a death named by ``verdict``."""
        return liveness.Watch(self.console_log, self.domain_active, silence_limit=math.inf, verdict=verdict)

    def wait_for_ssh(self, *, timeout: float, not_boot_id: str | None = None) -> str:
        """Wait until SSH answers (with a new boot_id after a reboot); return the boot_id.
        A guest that cannot come up (see :mod:`harness.liveness`) ends the wait at once.

        Under TCG, a boot that a known emulator fault killed (:class:`liveness.EmulatorFault`)
        is a transient: the domain is powered off and started again from its disk, once,
        logged and counted. The disk is what the boot is about, so a cold start proves it as
        well; a guest that dies of anything else is never retried."""

        def attempt() -> str:
            watch = liveness.Watch(self.console_log, self.domain_active)
            try:
                found = ssh.wait_for_boot(
                    self.endpoint, timeout=timeout, not_boot_id=not_boot_id, still_coming=watch.check
                )
            except liveness.EmulatorFault as fault:
                if self.state.accel != "tcg":
                    raise
                with virt.connect(self.run.uri) as conn:
                    virt.restart(conn, self.state.domain)
                raise transient.Transient(transient.Kind.EMULATOR, fault.message) from fault
            log.info(f"longest console silence while waiting: {watch.longest_silence:.0f}s")
            return found

        return transient.retrying(
            attempt,
            what=f"the boot of {self.name}",
            retries=EMULATOR_RETRIES,
            interval=1.0,
            attempt_timeout=timeout,
        )

    def reboot(self) -> str:
        """A guest-initiated reboot, proven by a changed boot_id; returns the new one.

        The boot_id before is read over the shared connection, which the apply before has
        usually left up (a handshake saved), and which is then closed: the reboot itself is
        asked for on a connection of its own (docs/platform.md: a shared connection kept over a
        reboot hung Ansible). The boot then settles over a new shared one (:meth:`wait_settled`)."""
        before = self.boot_id(shared=True)
        ssh.close_master(self.endpoint)
        log.info(f"boot_id before: {before}")
        ssh.run_disconnecting(
            self.endpoint, ["sudo", "systemctl", "reboot"], what="reboot", timeout=REBOOT_REQUEST_TIMEOUT
        )
        after = self.wait_for_ssh(timeout=REBOOT_TIMEOUT, not_boot_id=before)
        log.info(f"boot_id after:  {after} (rebooted)")
        self.wait_settled()
        if not self.state.boot_ids or self.state.boot_ids[-1] != before:
            self.state.boot_ids.append(before)
        self.state.boot_ids.append(after)
        self._save()
        return after

    def shutdown(self, timeout: float = SHUTDOWN_TIMEOUT) -> None:
        """A clean power-off from inside the guest; returns once the domain has stopped."""
        ssh.close_master(self.endpoint)
        ssh.run_disconnecting(
            self.endpoint, ["sudo", "systemctl", "poweroff"], what="poweroff", timeout=REBOOT_REQUEST_TIMEOUT
        )

        def stopped() -> None:
            if self.domain_active():
                raise NotYet("domain still running")

        wait_until(
            stopped, what=f"{self.state.domain} to power off", timeout=timeout, interval=PROBE_INTERVAL
        )

    def crash(self) -> None:
        """Pull the plug: the domain stops at once, as in a power cut."""
        ssh.close_master(self.endpoint)
        with virt.connect(self.run.uri) as conn:
            virt.power_off(conn, self.state.domain)

    # -- the harness's steps --------------------------------------------------------------
    def wait_ready(self) -> None:
        """SSH answers and cloud-init has finished; records the first boot_id.

        A guest that dies after SSH first answered (a panic on its console while cloud-init
        runs) is a dead guest, not an SSH problem; under TCG, one killed by a known emulator
        fault is powered off and started again from its disk, once, as in :meth:`wait_for_ssh`."""

        def attempt() -> str:
            with log.step(f"wait for SSH ({self.name})"):
                first = self.wait_for_ssh(timeout=BOOT_TIMEOUT)
            with log.step(f"wait for cloud-init ({self.name})"):
                watch = self.watch_up(f"the guest died while cloud-init ran in {self.name}")
                try:
                    self._wait_cloud_init(first)
                except HarnessError as failed:
                    try:
                        watch.check()
                    except liveness.EmulatorFault as fault:
                        if self.state.accel != "tcg":
                            raise
                        with virt.connect(self.run.uri) as conn:
                            virt.restart(conn, self.state.domain)
                        raise transient.Transient(transient.Kind.EMULATOR, fault.message) from failed
                    raise
            return first

        first = transient.retrying(
            attempt,
            what=f"the first boot of {self.name}",
            retries=EMULATOR_RETRIES,
            interval=1.0,
            attempt_timeout=2 * BOOT_TIMEOUT + CLOUD_INIT_TIMEOUT,
        )
        self.wait_settled()
        self.state.boot_ids.append(first)
        self._save()

    def _wait_cloud_init(self, first: str) -> None:
        result = ssh.run_retrying(
            self.endpoint,
            ["cloud-init", "status", "--wait"],
            what="cloud-init status",
            check=False,
            timeout=CLOUD_INIT_TIMEOUT,
            quiet=True,
        )
        status = result.stdout.strip().splitlines()[-1:] or ["(no output)"]
        # 0 = done, 2 = done with recoverable warnings; anything else is a broken boot.
        if result.returncode not in (0, 2):
            raise HarnessError(
                f"cloud-init failed in the guest (exit status {result.returncode}): {status[0]}",
                hint="see the serial console and cloud-init.log in the evidence",
            )
        log.info(f"cloud-init: {status[0]} (boot_id {first})")
        if self.levers.cloud_init_once:
            # Its seed is per instance: later boots would only run its stages again.
            self.succeed("touch", CLOUD_INIT_DISABLED)

    def wait_settled(self) -> str:
        """Wait until systemd reports startup finished; return its state (running, degraded…).

        It asks over the shared connection, opening it: the apply or the verify that comes next
        (Ansible, testinfra's workers) finds it up instead of each making its own handshake."""
        with log.step(f"wait for boot to settle ({self.name})"):
            try:
                result = ssh.run_retrying(
                    self.endpoint,
                    ["systemctl", "is-system-running", "--wait"],
                    what="systemctl is-system-running",
                    check=False,
                    timeout=SETTLE_TIMEOUT,
                    quiet=True,
                    shared=True,
                )
                state = result.stdout.strip() or result.stderr.strip()
            except HarnessError as exc:
                state = f"unsettled ({exc.message})"
            log.info(f"system state: {state}")
        return state

    def extra_vars(self, extra_overrides: tuple[Path, ...] = ()) -> list[Path]:
        """This run's overlays, in precedence order (see :mod:`harness.runvars`)."""
        return runvars.overlays(self.run.dir, self.profile, self.tier, extra_overrides)

    def apply(
        self,
        extra_overrides: tuple[Path, ...] = (),
        *,
        diff: bool = False,
        record: str = "ansible-tasks.jsonl",
        tags: tuple[str, ...] = (),
        levers: speed.Levers | None = None,
    ) -> list[ansible.TaskRecord]:
        """Apply the profile's steps; return every task's record (its status among them).
        ``diff`` runs Ansible with ``--diff``; ``record`` names the file in the artifacts
        that keeps this apply's task records; ``tags`` narrows the apply to the tasks with
        those tags (:mod:`harness.narrow`); ``levers`` takes this apply's apply levers
        (Mitogen, one process) from a preset other than the machine's
        (:func:`harness.speed.for_apply`)."""
        levers = speed.for_apply(self.levers, levers) if levers else self.levers
        if levers != self.levers:
            log.info(f"this apply: {speed.notes(levers)[0]}")
        inventory.assert_isolated(self.inventory, paths.PRODUCTION_INVENTORY)
        steps = narrow.narrowed(self.profile.steps, tags)
        if tags:
            log.info(narrow.note(tags))
        self.run.overrides = [str(p) for p in extra_overrides]
        self._save()
        logfile = self.artifacts / "ansible.log"
        fact_cache = self.dir / "facts"
        shutil.rmtree(fact_cache, ignore_errors=True)
        task_sink = self.artifacts / record
        task_sink.unlink(missing_ok=True)  # this apply's tasks only
        try:
            for batch in ansible.batches(steps, one_process=levers.one_process):
                with log.step(f"playbook {batch.name}"):
                    ansible.run_step_checked(
                        self.inventory,
                        batch,
                        self.extra_vars(extra_overrides),
                        logfile=logfile,
                        fact_cache=fact_cache,
                        task_sink=task_sink,
                        diff=diff,
                        alive=self.watch_up(f"the guest died during playbook {batch.name}").check,
                        levers=levers,
                    )
        finally:
            slowest = ansible.task_times(task_sink)[:SLOWEST_TASKS_SHOWN]
            if slowest:
                log.info("slowest tasks: " + "; ".join(f"{t.task} {t.seconds:.1f}s" for t in slowest))
        return ansible.task_records(task_sink)

    def apply_again(
        self, extra_overrides: tuple[Path, ...] = (), *, tags: tuple[str, ...] = ()
    ) -> idempotence.Verdict:
        """Apply the steps once more, with ``--diff``, and judge what changed; the report
        (each changed task with its diff) goes to ``artifacts/idempotence.txt``. The caller
        decides (:func:`harness.idempotence.check`)."""
        records = self.apply(extra_overrides, diff=True, record=IDEMPOTENCE_RECORD, tags=tags)
        verdict = idempotence.judge(records, self.profile.idempotence_allow)
        self.idempotence_report.write_text(idempotence.report(verdict), encoding="utf-8")
        log.info(
            f"idempotence: {verdict.tasks} tasks, {len(verdict.changed)} changed, "
            f"{len(verdict.allowed)} changed as the profile allows"
        )
        return verdict

    @property
    def idempotence_report(self) -> Path:
        return self.artifacts / IDEMPOTENCE_REPORT

    def capture_state(self, label: str, expect: statediff.State | None = None) -> hoststate.Capture:
        """The state the reboot diff compares, written to ``artifacts/state/<label>.json``;
        with ``expect``, published ports that answered then get time to answer again."""
        return hoststate.capture(
            self.endpoint,
            ports=self.profile.published_ports,
            host_ports=self.state.ports,
            directory=self.artifacts / "state",
            label=label,
            expect=expect,
        )

    def verify(self, label: str = "verify", marker: str | None = None) -> SuiteResult:
        """Run the profile's suite (or only the checks with ``marker``)."""
        # Re-checked here too: verify reaches the guest through the same rendered inventory.
        inventory.assert_isolated(self.inventory, paths.PRODUCTION_INVENTORY)
        suite = self.profile.suite
        if suite is None:
            raise HarnessError(f"{self.name} is a client: it has no suite of its own to verify")
        watch = self.watch_up(f"the guest died during {label}")
        try:
            return run_suite(
                suite,
                self.inventory,
                self.view_file,
                self.artifacts / f"junit-{label}.xml",
                self.artifacts / f"{label}.log",
                marker=marker,
                also=(EVERY_HOST_SUITE,),
            )
        except VerificationFailed:
            watch.check()  # a guest that died under the checks is not a verdict on the roles
            raise

    def collect_evidence(self, reason: str, label: str = "evidence") -> Path:
        reachable = True
        try:
            ssh.run(self.endpoint, ["true"], timeout=EVIDENCE_REACH_TIMEOUT, quiet=True)
        except HarnessError:
            reachable = False
            log.warn(f"{self.name} unreachable over SSH: the bundle holds controller-side evidence only")
        bundle = evidence.collect(
            self.endpoint if reachable else None,
            self.console_log,
            self.artifacts / label,
            reason=reason,
        )
        for name in ("relay.log", "passt.log"):  # the hermetic network's side of the story
            source = self.dir / "net" / name
            if source.is_file():
                shutil.copyfile(source, bundle / name)
        for network in self.state.lans:  # a scenario network's hub: who connected, frame counts
            source = self.run.dir / f"lan-{network}" / "lan.log"
            if source.is_file():
                shutil.copyfile(source, bundle / f"lan-{network}.log")
        if self.run.pebble_dir:  # the controller-side CA's view of the issuance
            for name in ("pebble.log", "challtestsrv.log"):
                source = Path(self.run.pebble_dir) / name
                if source.is_file():
                    shutil.copyfile(source, bundle / name)
        return bundle
