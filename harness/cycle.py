"""The full cycle — preflight, image, boot, apply, reboot, verify — of one host profile.

What happens to the run at its end (evidence, keep or teardown) is :class:`harness.run.Run`'s
to decide; cancellation and the global deadline are :mod:`harness.signals`' (the CLI enters
:func:`harness.signals.cancellable` around every command).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from harness import (
    accel,
    aptcache,
    config,
    guestnet,
    hoststate,
    idempotence,
    liveness,
    log,
    matrix,
    packagelayer,
    paths,
    preflight,
    runvars,
    speed,
    statediff,
    transient,
    verify,
    virt,
)
from harness.errors import BadInput, BomaError, ExitCode
from harness.image.caddy import ensure_caddy_tarball
from harness.image.download import download_verified
from harness.image.golden import GoldenImage, ensure_golden, is_cached
from harness.image.recipe import CaddyRecipe, GoldenRecipe
from harness.machine import Machine
from harness.provision import MachineRequest
from harness.run import Keep, Run, RunSpec
from harness.secrets import scrub_text, scrub_tree
from harness.signals import Interrupted
from harness.state import new_run_id
from harness.summary import Summary
from harness.virt import DirectBoot

DEFAULT_DEADLINE = 3600.0
VERDICT_OF = {ExitCode.SUT_FAILED: "fail", ExitCode.BAD_INPUT: "bad-input"}


class BootMode(StrEnum):
    """How a machine boots: the image's own kernel directly (faster under TCG), or BIOS + GRUB."""

    DIRECT = "direct"
    FIRMWARE = "firmware"


@dataclass(frozen=True)
class CycleOptions:
    host: str
    certs: str
    keep: Keep = Keep.ON_FAILURE
    reboot: bool = True
    accel: str | None = None
    boot: BootMode = BootMode.DIRECT
    uri: str = virt.DEFAULT_URI
    deadline: float = DEFAULT_DEADLINE
    extra_overrides: tuple[Path, ...] = ()
    # The `download` image source, for real hosts that reach the official cloud image.
    image_url: str | None = None
    image_sums_url: str | None = None
    # Extra kernel arguments (direct boot only): debugging, and the torture suite's guest that
    # never boots (``systemd.unit=emergency.target``).
    kernel_append: str = ""
    # Apply the steps again after the reboot: every task must report ok or skipped.
    idempotence: bool = True
    # The guest's vCPUs, overriding the profile's (see accel.guest_vcpus).
    vcpus: int | None = None
    # The speed levers (harness.speed): the package layer, the disk cache, cloud-init, Mitogen.
    levers: speed.Levers = speed.DEFAULT
    open_network: bool = False  # QEMU's user-mode network even where the tier allows hermetic


def resolve(
    host: str, certs: str, extra_overrides: tuple[Path, ...]
) -> tuple[config.Profile, config.CertTier]:
    """Validate every input before anything is created."""
    profile = config.load_profile(host)
    if profile.is_client:
        raise BadInput(
            f"profile {host!r} is a client: it mirrors no host and runs only in a scenario",
            hint="python -m harness scenario --name NAME (scenarios/*.yml)",
        )
    tier = config.load_tier(certs)
    if tier.name not in profile.cert_tiers:
        raise BadInput(
            f"host {host!r} does not take cert tier {certs!r}",
            hint=f"its tiers: {', '.join(profile.cert_tiers) or '(none)'}",
        )
    for file in extra_overrides:
        if not file.is_file():
            raise BadInput(f"override file {file} not found")
    config.check_tier_fits(profile, tier)
    if tier.on_demand and os.environ.get(matrix.ENV_ON_DEMAND) != "1":
        raise BadInput(
            f"cert tier {certs!r} runs on demand only",
            hint=f"set {matrix.ENV_ON_DEMAND}=1 (see docs/security/accepted-risks.md)",
        )
    if reason := matrix.unmet_needs(tier.name, tuple(n.value for n in tier.needs)):
        raise BadInput(f"cannot run here: {reason}")
    verify.check_suite(profile)  # a suite that collects nothing is bad input, found before boot
    return profile, tier


def images(
    options: CycleOptions, profile: config.Profile, tier: config.CertTier
) -> tuple[GoldenImage, Path | None, BootMode]:
    """The golden image (built, cached or downloaded), the Caddy tarball if the profile runs
    Caddy from it, and the boot mode."""
    boot = options.boot
    if options.image_url and options.image_sums_url:
        disk = download_verified(options.image_url, options.image_sums_url, paths.cache_dir() / "downloads")
        golden = GoldenImage(disk=disk, kernel=None, initrd=None, cmdline="", key=disk.name)
        if boot is BootMode.DIRECT:
            log.info("a downloaded image boots through its own firmware and GRUB")
            boot = BootMode.FIRMWARE
    else:
        golden = ensure_golden(golden_recipe(options.levers, profile))
    caddy = ensure_caddy_tarball(CaddyRecipe()) if runvars.wants_caddy_archive(profile, tier) else None
    return golden, caddy, boot


def golden_recipe(levers: speed.Levers, profile: config.Profile) -> GoldenRecipe:
    """The recipe of the golden image a machine of ``profile`` boots: with the profile's
    package layer unless the levers turn it off."""
    return packagelayer.golden_recipe(profile.package_layer, enabled=levers.package_layer)


def unbuilt_image(options: CycleOptions, profile: config.Profile) -> str | None:
    """The golden image this run would have to build (not cached), named for a reader; None if
    it is cached or downloaded."""
    if options.image_url:
        return None
    recipe = golden_recipe(options.levers, profile)
    if is_cached(recipe):
        return None
    return f"the golden image {recipe.key()}"


def new_run(
    label: str, tier: config.CertTier, *, uri: str, keep: Keep, levers: speed.Levers, summary: Summary
) -> Run:
    """The run of ``summary`` (a host profile's or a scenario's), not entered yet; the summary
    learns its levers and what they change."""
    summary.levers = levers.as_json()
    summary.notes += speed.notes(levers)
    return Run(
        RunSpec(
            label=label,
            tier=tier.name,
            uri=uri,
            keep=keep,
            artifacts=paths.run_artifacts(label, tier.name, summary.run_id),
            run_id=summary.run_id,
            levers=levers,
        )
    )


def check_boot_options(options: CycleOptions) -> None:
    """Refuse, before anything is created, kernel arguments that no kernel would get: a
    firmware boot (or a downloaded image, which boots through its firmware) runs GRUB's own."""
    if options.kernel_append and (options.boot is BootMode.FIRMWARE or options.image_url):
        raise BadInput("--kernel-append needs the direct kernel boot (--boot direct, no --image-url)")


def direct_boot(golden: GoldenImage, boot: BootMode, append: str = "") -> DirectBoot | None:
    if boot is not BootMode.DIRECT or golden.kernel is None or golden.initrd is None:
        return None  # check_boot_options refused an append that would be lost here
    return DirectBoot(golden.kernel, golden.initrd, f"{golden.cmdline} {append}".strip())


@contextmanager
def booted(options: CycleOptions, summary: Summary) -> Iterator[tuple[Run, Machine]]:
    """Preflight, image and boot one machine for ``options.host``; yield it ready.

    On exit the run applies its rules (evidence on failure, then keep or teardown), and the
    summary learns whether the machine was kept.
    """
    profile, tier = resolve(options.host, options.certs, options.extra_overrides)
    check_boot_options(options)
    run = new_run(
        profile.name, tier, uri=options.uri, keep=options.keep, levers=options.levers, summary=summary
    )
    try:
        with ExitStack() as stack:
            with summary.phase("preflight", sut=False):
                chosen, why = accel.choose(options.accel)
                log.info(f"accelerator: {chosen.value} ({why})")
                vcpus, why_vcpus = accel.guest_vcpus(profile.vcpus, options.vcpus)
                log.info(f"guest vCPUs: {vcpus} ({why_vcpus})")
                preflight.check_tools(with_image_build=options.image_url is None)
                preflight.check_privileges(
                    build_image=unbuilt_image(options, profile),
                    hermetic=guestnet.open_because(tier, force_open=options.open_network) is None,
                )
                preflight.ensure_libvirt(options.uri)
                preflight.check_resources(profile.memory_mib)
                stack.enter_context(run)  # admission: the lock, the slot, the run directory
            with summary.phase("image", sut=False):
                run.mark("image")
                golden, caddy, boot = images(options, profile, tier)
                layer = packagelayer.describe(
                    profile.package_layer, options.levers.package_layer and not options.image_url
                )
                if layer:
                    log.info(layer)
                    summary.notes.append(layer)
            with summary.phase("boot", sut=True):
                run.mark("boot")
                summary.accel, summary.boot_mode, summary.vcpus = chosen.value, boot.value, vcpus
                network = run.network_plan(tier, force_open=options.open_network)
                summary.network = {"mode": network.mode, "egress": [e.describe() for e in network.egress]}
                summary.notes.append(network.describe())
                machine = run.add_machine(
                    MachineRequest(
                        name=profile.name,
                        profile=profile,
                        accel=chosen,
                        direct_boot=direct_boot(golden, boot, options.kernel_append),
                        golden=golden,
                        vcpus=vcpus,
                        network=network,
                    )
                )
                run.admitted()
                run.prepare_tier(tier, caddy, machine)
                machine.wait_ready()
            yield run, machine
    finally:
        summary.kept = run.kept


@contextmanager
def recorded(summary: Summary) -> Iterator[None]:
    """Give the summary its verdict however the block ends, and write it (scrubbed) beside
    the run's artifacts; a request refused as bad input created nothing and writes nothing."""
    out = paths.run_artifacts(summary.host, summary.tier, summary.run_id)
    try:
        yield
        summary.finish("pass")
    except BomaError as exc:
        summary.reason = scrub_text(exc.message.splitlines()[0])
        summary.finish(VERDICT_OF.get(exc.exit_code, "error"))
        raise
    except Interrupted as exc:
        summary.reason = f"cancelled by {exc.signame}"
        summary.finish("interrupted")
        raise
    except KeyboardInterrupt:
        summary.finish("interrupted")
        raise
    except Exception as exc:
        summary.reason = scrub_text(f"unexpected {type(exc).__name__}: {exc}")
        summary.finish("error")
        raise
    finally:
        if summary.verdict != "bad-input" and out.is_dir():
            cache = aptcache.stats(out / aptcache.ARTIFACTS_NAME)
            if cache is not None:
                summary.package_cache = cache.as_json()
                summary.notes.append(cache.describe())
            # Everything the run wrote, not only the evidence bundle, is scrubbed of secrets.
            scrub_tree(out)
            log.info(f"summary ({summary.verdict}):\n{summary.table()}")
            log.info(f"summary file: {summary.write(out)}")


def run_cycle(options: CycleOptions) -> Summary:
    """One full cycle. Returns the summary; raises on failure (after writing the summary and,
    where a machine existed, the evidence bundle)."""
    summary = Summary(run_id=new_run_id(), host=options.host, tier=options.certs)
    log.info(
        f"run {summary.run_id}: artifacts {paths.run_artifacts(summary.host, summary.tier, summary.run_id)}"
    )
    with recorded(summary), booted(options, summary) as (run, vm):
        with summary.phase("apply", sut=True):
            run.mark("apply")
            vm.apply(options.extra_overrides)
        before: statediff.State | None = None
        if options.reboot:
            # What the controller sees must hold before the reboot and after it: the
            # incident was a port that answered until the host rebooted.
            with summary.phase(verify.BEFORE_REBOOT.label, sut=True):
                run.mark(verify.BEFORE_REBOOT.label)
                result = vm.verify(verify.BEFORE_REBOOT.label, marker=verify.BEFORE_REBOOT.marker)
                if result.outcome is verify.Outcome.NOTHING_SELECTED:
                    summary.notes.append(f"{verify.BEFORE_REBOOT.label}: {result.message}")
            with summary.phase("state-before-reboot", sut=True):
                run.mark("state-before-reboot")
                before = vm.capture_state("before-reboot").state
            with summary.phase("reboot", sut=True):
                run.mark("reboot")
                vm.reboot()
        with summary.phase("verify", sut=True):
            run.mark(verify.FINAL.label)
            vm.verify(verify.FINAL.label)
        if before is not None:
            with summary.phase("state-diff", sut=True):
                run.mark("state-diff")
                state_diff(vm, before, summary)
        if options.idempotence:
            with summary.phase("idempotence", sut=True):
                run.mark("idempotence")
                idempotent(vm, options.extra_overrides, summary)
        else:
            summary.notes.append("idempotence: skipped (--no-idempotence)")
    return summary


# A cycle whose guest a known emulator fault killed (liveness.EmulatorFault: multi-threaded
# TCG running a stale translation of the kernel's live code patching) is run again from a new
# VM, this often. The dead run is never kept; the second run is judged as any other.
CYCLE_EMULATOR_RETRIES = 1


def run_cycle_retrying(options: CycleOptions, one: Callable[[CycleOptions], Summary] = run_cycle) -> Summary:
    """:func:`run_cycle`, once more from scratch (logged and counted with ``↻``) if the first
    run's guest died of a known emulator fault under TCG; any other failure is final."""

    def attempt() -> Summary:
        try:
            return one(options)
        except liveness.EmulatorFault as fault:
            if accel.choose(options.accel)[0] is not accel.Accel.TCG:
                raise  # under KVM the CPU keeps code coherent: the same oops is the guest's own
            raise transient.Transient(transient.Kind.EMULATOR, fault.message) from fault

    return transient.retrying(
        attempt,
        what=f"the cycle of {options.host}/{options.certs}",
        retries=CYCLE_EMULATOR_RETRIES,
        interval=1.0,
        attempt_timeout=options.deadline,
    )


def state_diff(vm: Machine, before: statediff.State, summary: Summary) -> None:
    """Take the state after the reboot and compare it with ``before``; unexpected differences
    fail the cycle (:class:`harness.hoststate.StateChanged`)."""
    after = vm.capture_state("after-reboot", expect=before).state
    directory = vm.artifacts / "state"
    rules = statediff.EXPECTED + speed.reboot_changes(vm.levers)
    differences = hoststate.record(before, after, vm.profile.reboot_diff_allow, directory, rules)
    unexpected = statediff.unexpected(differences)
    silent = hoststate.silent_ports(after)
    summary.state_diff = {
        "entries": len(after),
        "unexpected": [d.line() for d in unexpected],
        "expected": len(differences) - len(unexpected),
        "silent_ports": silent,
    }
    hoststate.check(differences, directory, silent)


def idempotent(vm: Machine, extra_overrides: tuple[Path, ...], summary: Summary) -> None:
    """Apply the steps again; a task that changes fails the cycle
    (:class:`harness.idempotence.NotIdempotent`), unless the profile allows it with a reason."""
    verdict = vm.apply_again(extra_overrides)
    summary.idempotence = verdict.as_dict()
    idempotence.check(verdict, vm.idempotence_report)
