"""The full cycle — preflight, image, boot, apply, reboot, verify — and its cleanup rules.

Success destroys everything the run made. A failure collects the evidence bundle first, then
keeps the VM (unless told not to) and prints how to get in. Ctrl-C, SIGTERM and the global
deadline tear down at any phase.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from types import FrameType

from harness import accel, config, log, matrix, paths, preflight, virt
from harness.errors import BadInput, BomaError, ExitCode, HarnessError
from harness.image.caddy import ensure_caddy_tarball
from harness.image.download import download_verified
from harness.image.golden import GoldenImage, ensure_golden
from harness.image.recipe import CaddyRecipe, GoldenRecipe
from harness.machine import BootMode, TestVM, VMRequest
from harness.secrets import scrub_text, scrub_tree
from harness.state import new_run_id
from harness.summary import Summary
from harness.verify import CONTROLLER_MARKER

DEFAULT_DEADLINE = 3600.0
VERDICT_OF = {ExitCode.SUT_FAILED: "fail", ExitCode.BAD_INPUT: "bad-input"}


class Keep(StrEnum):
    """What happens to the VM when the run ends."""

    ON_FAILURE = "on-failure"  # the default: a failed VM stays for inspection
    ALWAYS = "always"  # --keep: stays even on success, for the apply/verify inner loop
    NEVER = "never"  # --no-keep: CI and tests; evidence is still collected first


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


class DeadlineExceeded(HarnessError):
    pass


@contextmanager
def guarded(deadline: float) -> Iterator[None]:
    """Turn SIGTERM into KeyboardInterrupt (so CI cancellation cleans up) and bound the run
    by a global deadline."""

    def on_term(_sig: int, _frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    def on_alarm(_sig: int, _frame: FrameType | None) -> None:
        raise DeadlineExceeded(f"the run exceeded its global deadline of {deadline:.0f}s")

    old_term = signal.signal(signal.SIGTERM, on_term)
    old_alarm = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, deadline)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old_alarm)
        signal.signal(signal.SIGTERM, old_term)


def resolve(
    host: str, certs: str, extra_overrides: tuple[Path, ...]
) -> tuple[config.Profile, config.CertTier]:
    """Validate every input before anything is created."""
    profile = config.load_profile(host)
    tier = config.load_tier(certs)
    if tier.name not in profile.cert_tiers:
        raise BadInput(
            f"host {host!r} does not take cert tier {certs!r}",
            hint=f"its tiers: {', '.join(profile.cert_tiers) or '(none)'}",
        )
    for file in extra_overrides:
        if not file.is_file():
            raise BadInput(f"override file {file} not found")
    guest_ports = {p.guest for p in profile.published_ports}
    if tier.pebble and not {80, 443} <= guest_ports:
        raise BadInput(
            f"cert tier {certs!r} needs host {host!r} to publish guest ports 80 and 443",
            hint="Pebble validates through those forwards",
        )
    if tier.on_demand and os.environ.get(matrix.ENV_ON_DEMAND) != "1":
        raise BadInput(
            f"cert tier {certs!r} runs on demand only",
            hint=f"set {matrix.ENV_ON_DEMAND}=1 (see docs/security/accepted-risks.md)",
        )
    if reason := matrix.unmet_needs(tier.name, tuple(n.value for n in tier.needs)):
        raise BadInput(f"cannot run here: {reason}")
    return profile, tier


def prepare(options: CycleOptions, summary: Summary) -> VMRequest:
    """Preflight and images: everything a VM needs before it can boot."""
    profile, tier = resolve(options.host, options.certs, options.extra_overrides)
    chosen, why = accel.choose(options.accel)
    golden_recipe, caddy_recipe = GoldenRecipe(), CaddyRecipe()
    with summary.phase("preflight", sut=False):
        log.info(f"accelerator: {chosen.value} ({why})")
        preflight.check_tools(with_image_build=True)
        preflight.ensure_libvirt(options.uri)
        preflight.check_resources(profile.memory_mib)
        preflight.check_capacity(options.uri)
    boot = options.boot
    with summary.phase("image", sut=False):
        if options.image_url and options.image_sums_url:
            disk = download_verified(
                options.image_url, options.image_sums_url, paths.cache_dir() / "downloads"
            )
            golden = GoldenImage(disk=disk, kernel=None, initrd=None, cmdline="", key=disk.name)
            if boot is BootMode.DIRECT:
                log.info("a downloaded image boots through its own firmware and GRUB")
                boot = BootMode.FIRMWARE
        else:
            golden = ensure_golden(golden_recipe)
        caddy = ensure_caddy_tarball(caddy_recipe)
    return VMRequest(
        profile=profile,
        tier=tier,
        accel=chosen,
        uri=options.uri,
        boot=boot,
        golden=golden,
        caddy_archive=caddy,
    )


@contextmanager
def running_vm(request: VMRequest, summary: Summary, keep: Keep) -> Iterator[TestVM]:
    """Boot a VM and yield it ready; on exit apply the cleanup rules above."""
    vm: TestVM | None = None
    kept = False
    try:
        try:
            with summary.phase("boot", sut=True):
                vm = TestVM.create(request, summary.run_id)
                summary.accel, summary.boot_mode = request.accel.value, request.boot.value
                vm.wait_ready()
            yield vm
        except BomaError as exc:
            if vm is not None:
                with log.step("evidence", summary.phases):
                    vm.collect_evidence(reason=exc.render())
                kept = keep is not Keep.NEVER and not isinstance(exc, DeadlineExceeded)
            raise
        kept = keep is Keep.ALWAYS
    finally:
        summary.kept = kept
        if vm is not None and kept:
            if keep is not Keep.ALWAYS:
                vm.stop_services()  # kept for inspection, not for use: Pebble ends with the run
            log.info(f"KEPT {vm.state.domain} for inspection (run {vm.state.run_id}):\n{vm.how_to_get_in()}")
        elif vm is not None:
            with log.step("teardown", summary.phases):
                vm.destroy()


def run_cycle(options: CycleOptions) -> Summary:
    """One full cycle. Returns the summary; raises a :class:`BomaError` on failure (after
    writing the summary and, where a VM existed, the evidence bundle)."""
    run_id = new_run_id()
    summary = Summary(run_id=run_id, host=options.host, tier=options.certs)
    out = paths.run_artifacts(options.host, options.certs, run_id)
    try:
        with guarded(options.deadline):
            request = prepare(options, summary)
            with running_vm(request, summary, options.keep) as vm:
                with summary.phase("apply", sut=True):
                    vm.apply(options.extra_overrides)
                if options.reboot:
                    # What the controller sees must hold before the reboot and after it: the
                    # incident was a port that answered until the host rebooted.
                    with summary.phase("verify-before-reboot", sut=True):
                        vm.verify("verify-before-reboot", marker=CONTROLLER_MARKER)
                    with summary.phase("reboot", sut=True):
                        vm.reboot()
                with summary.phase("verify", sut=True):
                    vm.verify()
        summary.finish("pass")
        return summary
    except BomaError as exc:
        summary.reason = scrub_text(exc.message.splitlines()[0])
        summary.finish(VERDICT_OF.get(exc.exit_code, "error"))
        raise
    except KeyboardInterrupt:
        summary.finish("interrupted")
        raise
    finally:
        if summary.verdict != "bad-input":
            # Everything the run wrote, not only the evidence bundle, is scrubbed of secrets.
            scrub_tree(out)
            log.info(f"summary ({summary.verdict}):\n{summary.table()}")
            log.info(f"summary file: {summary.write(out)}")
