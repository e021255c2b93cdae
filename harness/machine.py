"""One test VM and its verbs: create, wait_ready, apply, reboot, verify, collect_evidence, destroy.

A :class:`TestVM` is built from a :class:`RunState` on disk, so the single-step CLI commands
(``apply``, ``reboot``, ``verify``, ``down``) work on a VM kept by an earlier command.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from enum import StrEnum
from functools import cached_property
from pathlib import Path

from harness import (
    ansible,
    config,
    evidence,
    inventory,
    log,
    paths,
    pebble,
    proc,
    runvars,
    seed,
    ssh,
    virt,
)
from harness.accel import Accel
from harness.errors import BomaError, ExitCode, HarnessError
from harness.image.golden import GoldenImage
from harness.ports import free_loopback_ports
from harness.state import RunState, domain_name
from harness.verify import run_suite

# Sized for TCG on a 2-core controller (FACTS.md: boot ≈ 80 s, reboot ≈ 84 s, cloud-init and
# first-boot key generation on top); KVM hosts finish far sooner and never wait this long.
BOOT_TIMEOUT = 900.0
CLOUD_INIT_TIMEOUT = 900.0
REBOOT_TIMEOUT = 900.0
REBOOT_REQUEST_TIMEOUT = 60.0
# SSH answers before boot has finished (Docker, containers): checks start once systemd says
# startup is over. A unit that hangs past this is the verify suite's to judge, not a crash.
SETTLE_TIMEOUT = 300.0
SLOWEST_TASKS_SHOWN = 5


class ApplyFailed(BomaError):
    """A playbook step failed against the VM: the roles are wrong, not the harness."""

    exit_code = ExitCode.SUT_FAILED
    label = "FAILED (playbook apply)"


class BootMode(StrEnum):
    """How the VM boots: the image's own kernel directly (faster under TCG), or BIOS + GRUB."""

    DIRECT = "direct"
    FIRMWARE = "firmware"


@dataclass(frozen=True)
class VMRequest:
    profile: config.Profile
    tier: config.CertTier
    accel: Accel
    uri: str
    boot: BootMode
    golden: GoldenImage
    caddy_archive: Path


def _direct_boot(request: VMRequest) -> virt.DirectBoot | None:
    golden = request.golden
    if request.boot is not BootMode.DIRECT or golden.kernel is None or golden.initrd is None:
        return None
    return virt.DirectBoot(golden.kernel, golden.initrd, golden.cmdline)


class TestVM:
    """A running (or kept) test VM, addressed through its run state."""

    def __init__(self, state: RunState) -> None:
        self.state = state

    # Loaded when first needed: cleanup (prune, down) must work even if a profile or tier
    # file changed or vanished since the VM was kept.
    @cached_property
    def profile(self) -> config.Profile:
        return config.load_profile(self.state.host)

    @cached_property
    def tier(self) -> config.CertTier:
        return config.load_tier(self.state.tier)

    # -- identity -----------------------------------------------------------------------
    @property
    def endpoint(self) -> ssh.Endpoint:
        return ssh.Endpoint(
            alias=self.state.domain,
            port=self.state.ssh_port,
            user=seed.ADMIN_USER,
            key=self.state.key,
            control_path=self.state.dir / "cm-%C",
        )

    @property
    def inventory(self) -> inventory.RenderedInventory:
        root = self.state.dir / "inventory"
        return inventory.RenderedInventory(
            path=root, host=self.state.domain, connection_vars=root / "connection.yml"
        )

    @property
    def state_file(self) -> Path:
        return self.state.dir / "state.json"

    def how_to_get_in(self) -> str:
        return (
            f"  get in:   ssh -F {self.state.dir / 'ssh_config'} {self.state.domain}\n"
            f"  console:  python -m harness console --run {self.state.run_id}\n"
            f"  remove:   python -m harness down --run {self.state.run_id}   "
            f"(or: python -m harness prune)"
        )

    # -- create -------------------------------------------------------------------------
    @classmethod
    def create(cls, request: VMRequest, run_id: str) -> TestVM:
        """Write the run's files and define + start the domain. On any failure, everything
        created so far is removed before the error propagates."""
        profile = request.profile
        name = domain_name(profile.name, run_id)
        run_dir = paths.runs_dir() / run_id
        run_dir.mkdir(parents=True, mode=0o755)
        run_dir.chmod(0o755)  # libvirt's qemu user must reach the overlay and console log
        artifacts = paths.run_artifacts(profile.name, request.tier.name, run_id)
        artifacts.mkdir(parents=True, exist_ok=True)
        ssh_port, *host_ports = free_loopback_ports(1 + len(profile.published_ports))
        ports = {str(p.guest): port for p, port in zip(profile.published_ports, host_ports, strict=True)}
        state = RunState(
            run_id=run_id,
            host=profile.name,
            tier=request.tier.name,
            domain=name,
            uri=request.uri,
            accel=request.accel.value,
            ssh_port=ssh_port,
            ports=ports,
            run_dir=str(run_dir),
            artifacts=str(artifacts),
            golden=str(request.golden.disk),
            caddy_archive=str(request.caddy_archive),
        )
        vm = cls(state)
        try:
            vm._prepare_files(request)
            state.save()
            spec = virt.DomainSpec(
                name=name,
                memory_mib=profile.memory_mib,
                vcpus=profile.vcpus,
                accel=request.accel,
                disk=run_dir / "overlay.qcow2",
                seed=run_dir / "seed.iso",
                console_log=state.console_log,
                forwards=(
                    virt.Forward(state.ssh_port, 22),
                    *(virt.Forward(hp, int(gp)) for gp, hp in ports.items()),
                ),
                metadata=(
                    ("run", run_id),
                    ("host", profile.name),
                    ("tier", request.tier.name),
                    ("run_dir", str(run_dir)),
                ),
                direct_boot=_direct_boot(request),
            )
            with virt.connect(request.uri) as conn:
                virt.define_and_start(conn, spec)
            forwards = ", ".join(
                f"127.0.0.1:{hp}→{gp}" for gp, hp in [("22", state.ssh_port), *ports.items()]
            )
            log.info(f"started {name} ({request.accel.value}, {request.boot.value} boot; {forwards})")
            log.info(f"serial console: {state.console_log}")
        except BaseException:
            vm.destroy()
            raise
        return vm

    def _prepare_files(self, request: VMRequest) -> None:
        st = self.state
        public_key = ssh.keygen(st.key, comment=f"boma-run-{st.run_id}")
        seed.write_seed(
            st.dir / "seed.iso", instance_id=f"boma-{st.run_id}", hostname=st.domain, public_key=public_key
        )
        proc.run(
            [
                "qemu-img",
                "create",
                "-q",
                "-f",
                "qcow2",
                "-F",
                "qcow2",
                "-b",
                str(request.golden.disk),
                str(st.dir / "overlay.qcow2"),
            ],
            quiet=True,
        )
        st.console_log.touch(mode=0o644)
        (st.dir / "ssh_config").write_text(self.endpoint.config_text(), encoding="utf-8")
        inventory.render(
            st.dir / "inventory",
            vm=st.domain,
            groups=self.profile.groups,
            inventory_host=self.profile.inventory_host,
            endpoint=self.endpoint,
            real_inventory=paths.PRODUCTION_INVENTORY,
        )
        pebble_vars: dict[str, str] = {}
        if self.tier.pebble:
            run = pebble.start(st.dir / "pebble", http_port=st.host_port(80), tls_port=st.host_port(443))
            st.pebble_pids, st.pebble_dir = list(run.pids), str(run.directory)
            st.save()
            pebble_vars = run.guest_vars()
        runvars.write_harness_vars(st.dir, self.tier, request.caddy_archive, pebble_vars)
        runvars.write_secrets(st.dir, self.tier)

    # -- verbs --------------------------------------------------------------------------
    def wait_ready(self) -> None:
        """SSH answers and cloud-init has finished; records the first boot_id."""
        with log.step("wait for SSH"):
            first = ssh.wait_for_boot(self.endpoint, timeout=BOOT_TIMEOUT, console=self.state.console_log)
        with log.step("wait for cloud-init"):
            result = ssh.run(
                self.endpoint,
                ["cloud-init", "status", "--wait"],
                check=False,
                timeout=CLOUD_INIT_TIMEOUT,
                quiet=True,
            )
            status = result.stdout.strip().splitlines()[-1:] or ["(no output)"]
            # 0 = done, 2 = done with recoverable warnings; anything else is a broken boot.
            if result.returncode not in (0, 2):
                raise HarnessError(
                    f"cloud-init failed in the guest: {status[0]}",
                    hint="see the serial console and cloud-init.log in the evidence",
                )
            log.info(f"cloud-init: {status[0]} (boot_id {first})")
        self.wait_settled()
        self.state.boot_ids.append(first)
        self.state.save()

    def wait_settled(self) -> str:
        """Wait until systemd reports startup finished; return its state (running, degraded…)."""
        with log.step("wait for boot to settle"):
            try:
                result = ssh.run(
                    self.endpoint,
                    ["systemctl", "is-system-running", "--wait"],
                    check=False,
                    timeout=SETTLE_TIMEOUT,
                    quiet=True,
                )
                state = result.stdout.strip() or result.stderr.strip()
            except HarnessError as exc:
                state = f"unsettled ({exc.message})"
            log.info(f"system state: {state}")
        return state

    def extra_vars(self, extra_overrides: tuple[Path, ...] = ()) -> list[Path]:
        """This run's overlays, in precedence order (see :mod:`harness.runvars`)."""
        return runvars.overlays(self.state.dir, self.profile, self.tier, extra_overrides)

    def apply(self, extra_overrides: tuple[Path, ...] = ()) -> None:
        inventory.assert_isolated(self.inventory, paths.PRODUCTION_INVENTORY)
        self.state.overrides = [str(p) for p in extra_overrides]
        self.state.save()
        logfile = self.state.artifacts_dir / "ansible.log"
        fact_cache = self.state.dir / "facts"
        shutil.rmtree(fact_cache, ignore_errors=True)
        task_sink = self.state.artifacts_dir / "ansible-tasks.jsonl"
        task_sink.unlink(missing_ok=True)  # this apply's tasks only
        try:
            self._run_steps(extra_overrides, logfile, fact_cache, task_sink)
        finally:
            slowest = ansible.task_times(task_sink)[:SLOWEST_TASKS_SHOWN]
            if slowest:
                log.info("slowest tasks: " + "; ".join(f"{t.task} {t.seconds:.1f}s" for t in slowest))

    def _run_steps(
        self, extra_overrides: tuple[Path, ...], logfile: Path, fact_cache: Path, task_sink: Path
    ) -> None:
        for step in self.profile.steps:
            with log.step(
                f"playbook {step.playbook}" + (f" --tags {','.join(step.tags)}" if step.tags else "")
            ):
                status = ansible.run_step(
                    self.inventory,
                    step,
                    self.extra_vars(extra_overrides),
                    logfile=logfile,
                    fact_cache=fact_cache,
                    task_sink=task_sink,
                )
            if status != 0:
                raise ApplyFailed(
                    f"{step.playbook} failed against {self.state.domain} "
                    f"(exit status {status}); see {logfile}"
                )

    def reboot(self) -> str:
        """A guest-initiated reboot, proven by a changed boot_id; returns the new one."""
        ssh.close_master(self.endpoint)
        before = ssh.boot_id(self.endpoint)
        log.info(f"boot_id before: {before}")
        # The connection may drop before ssh reports: its exit status proves nothing either way.
        ssh.run(
            self.endpoint,
            ["sudo", "systemctl", "reboot"],
            check=False,
            timeout=REBOOT_REQUEST_TIMEOUT,
            quiet=True,
        )
        after = ssh.wait_for_boot(
            self.endpoint, timeout=REBOOT_TIMEOUT, not_boot_id=before, console=self.state.console_log
        )
        log.info(f"boot_id after:  {after} (rebooted)")
        self.wait_settled()
        if not self.state.boot_ids or self.state.boot_ids[-1] != before:
            self.state.boot_ids.append(before)
        self.state.boot_ids.append(after)
        self.state.save()
        return after

    def verify(self, label: str = "verify", marker: str | None = None) -> Path:
        """Run the profile's suite (or only the checks with ``marker``); returns the JUnit file."""
        junit = self.state.artifacts_dir / f"junit-{label}.xml"
        run_suite(
            self.profile.suite,
            self.inventory,
            self.state_file,
            junit,
            self.state.artifacts_dir / f"{label}.log",
            marker=marker,
        )
        return junit

    def collect_evidence(self, reason: str, label: str = "evidence") -> Path:
        reachable = True
        try:
            ssh.run(self.endpoint, ["true"], timeout=30, quiet=True)
        except HarnessError:
            reachable = False
            log.warn("guest unreachable over SSH: the bundle holds controller-side evidence only")
        bundle = evidence.collect(
            self.endpoint if reachable else None,
            self.state.console_log,
            self.state.artifacts_dir / label,
            reason=reason,
        )
        if self.state.pebble_dir:  # the controller-side CA's view of the issuance
            for name in ("pebble.log", "challtestsrv.log"):
                source = Path(self.state.pebble_dir) / name
                if source.is_file():
                    shutil.copyfile(source, bundle / name)
        return bundle

    def stop_services(self) -> None:
        """Stop what the run started on the controller (Pebble) and remove its state."""
        if self.state.pebble_pids:
            pebble.stop(self.state.pebble_pids, Path(self.state.pebble_dir))
            log.info("stopped Pebble and removed its state")
            self.state.pebble_pids = []
            if self.state.dir.is_dir():
                self.state.save()

    def destroy(self) -> None:
        """Remove the domain and the run directory (overlay, seed, key, console, inventory).
        Cleanup errors are logged, never raised over the first failure."""
        self.stop_services()
        if self.state.dir.is_dir():
            ssh.close_master(self.endpoint)
        try:
            with virt.connect(self.state.uri) as conn:
                if virt.undefine(conn, self.state.domain):
                    log.info(f"removed domain {self.state.domain}")
        except HarnessError as exc:
            log.warn(f"could not remove domain {self.state.domain}: {exc.message}")
        try:
            shutil.rmtree(self.state.dir)
        except FileNotFoundError:
            pass
        except OSError as exc:
            log.warn(f"could not remove {self.state.dir}: {exc}")
