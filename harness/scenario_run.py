"""A scenario's cycle: every machine of ``scenarios/<name>.yml`` as one run.

Admitted as one unit (one slot, the memory check sums the machines), booted at once (each
machine waits for its guest in a thread of its own, every log line naming it), the hosts
applied in the scenario's order, then, before and after each host's real reboot, the hosts'
own suites and the suites that run from one machine against another. Any failure collects the
evidence of every machine and keeps or removes all of them by the same rules as a single-host
cycle (:class:`harness.run.Run`).

    python -m harness scenario --name offsite-peer --certs internal
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

from harness import (
    accel,
    config,
    cycle,
    lan,
    log,
    matrix,
    packagelayer,
    parallel,
    paths,
    preflight,
    runvars,
    speed,
    verify,
    virt,
)
from harness.errors import BadInput, BomaError, HarnessError, VerificationFailed
from harness.image.caddy import ensure_caddy_tarball
from harness.image.golden import GoldenImage, ensure_golden, is_cached
from harness.image.recipe import CaddyRecipe
from harness.machine import Machine
from harness.provision import LanAttachment, MachineRequest
from harness.run import Keep, Run
from harness.scenario import CrossSuite, Scenario, load_scenario
from harness.state import new_run_id, write_private
from harness.summary import Summary


@dataclass(frozen=True)
class ScenarioOptions:
    name: str
    certs: str
    keep: Keep = Keep.ON_FAILURE
    accel: str | None = None
    uri: str = virt.DEFAULT_URI
    deadline: float = cycle.DEFAULT_DEADLINE
    extra_overrides: tuple[Path, ...] = ()
    idempotence: bool = True
    vcpus: int | None = None
    levers: speed.Levers = speed.DEFAULT


def resolve(options: ScenarioOptions) -> tuple[Scenario, config.CertTier]:
    """Validate every input before anything is created: the scenario (its profiles too), the
    tier, the overrides and every suite that will run."""
    scenario = load_scenario(options.name)
    if options.certs not in scenario.cert_tiers:
        raise BadInput(
            f"scenario {options.name!r} does not take cert tier {options.certs!r}",
            hint=f"its tiers: {', '.join(scenario.cert_tiers)}",
        )
    tier = config.load_tier(options.certs)
    for file in options.extra_overrides:
        if not file.is_file():
            raise BadInput(f"override file {file} not found")
    if reason := matrix.unmet_needs(tier.name, tuple(n.value for n in tier.needs)):
        raise BadInput(f"cannot run here: {reason}")
    for name in scenario.apply:
        profile = scenario.machine(name).profile
        config.check_tier_fits(profile, tier)
        verify.check_suite(profile)
    for suite in scenario.suites:
        if verify.collected(suite.path) == 0:
            raise BadInput(f"the suite {suite.path} of scenario {scenario.name!r} holds no checks")
    return scenario, tier


def _images(
    options: ScenarioOptions, scenario: Scenario, tier: config.CertTier
) -> tuple[dict[str, GoldenImage], Path | None]:
    goldens = {}
    for machine in scenario.machines:
        goldens[machine.name] = ensure_golden(cycle.golden_recipe(options.levers, machine.profile))
        layer = packagelayer.describe(machine.profile.package_layer, options.levers.package_layer)
        if layer:
            log.info(f"{machine.name}: {layer}")
    wants = any(runvars.wants_caddy_archive(m.profile, tier) for m in scenario.machines)
    return goldens, ensure_caddy_tarball(CaddyRecipe()) if wants else None


def _unbuilt(options: ScenarioOptions, scenario: Scenario) -> str | None:
    recipes = {cycle.golden_recipe(options.levers, m.profile) for m in scenario.machines}
    missing = sorted(recipe.key() for recipe in recipes if not is_cached(recipe))
    return f"the golden image(s) {', '.join(missing)}" if missing else None


@contextmanager
def booted(options: ScenarioOptions, summary: Summary) -> Iterator[tuple[Run, Scenario, dict[str, Machine]]]:
    """Preflight, images, the networks' hubs and every machine booted; yield them ready."""
    scenario, tier = resolve(options)
    run = cycle.new_run(
        scenario.name, tier, uri=options.uri, keep=options.keep, levers=options.levers, summary=summary
    )
    try:
        with ExitStack() as stack:
            with summary.phase("preflight", sut=False):
                chosen, why = accel.choose(options.accel)
                log.info(f"accelerator: {chosen.value} ({why})")
                preflight.check_tools(with_image_build=True)
                preflight.check_privileges(build_image=_unbuilt(options, scenario), hermetic=True)
                preflight.ensure_libvirt(options.uri)
                preflight.check_resources(scenario.memory_mib)
                log.info(
                    f"scenario {scenario.name}: {len(scenario.machines)} machines, "
                    f"{scenario.memory_mib} MiB in all"
                )
                stack.enter_context(run)
            with summary.phase("image", sut=False):
                run.mark("image")
                goldens, caddy = _images(options, scenario, tier)
            with summary.phase("boot", sut=True):
                run.mark("boot")
                summary.accel, summary.boot_mode = chosen.value, cycle.BootMode.DIRECT.value
                network = run.network_plan(tier, force_open=False)
                if not network.hermetic:  # load_scenario refused such a tier: a bug if seen
                    raise HarnessError(
                        f"scenario {scenario.name}: the uplink is not hermetic ({network.why})"
                    )
                summary.network = {"mode": network.mode, "egress": [e.describe() for e in network.egress]}
                summary.notes.append(network.describe())
                hubs = _start_hubs(run, scenario)
                machines: dict[str, Machine] = {}
                for member in scenario.machines:
                    vcpus, why_vcpus = accel.guest_vcpus(member.profile.vcpus, options.vcpus)
                    log.info(f"{member.name}: {vcpus} vCPU(s) ({why_vcpus}), {member.profile.memory_mib} MiB")
                    lans = tuple(
                        LanAttachment(
                            net, scenario.network(net).address(address), hubs[net].sockets[member.name]
                        )
                        for net, address in member.addresses.items()
                    )
                    with log.machine(member.name):
                        machines[member.name] = run.add_machine(
                            MachineRequest(
                                name=member.name,
                                profile=member.profile,
                                accel=chosen,
                                direct_boot=cycle.direct_boot(goldens[member.name], cycle.BootMode.DIRECT),
                                golden=goldens[member.name],
                                vcpus=vcpus,
                                network=network,
                                lans=lans,
                                own_artifacts=True,
                            )
                        )
                run.admitted()
                run.prepare_tier(tier, caddy, machines[scenario.apply[0]])
                parallel.each({name: vm.wait_ready for name, vm in machines.items()}, tag=True)
            yield run, scenario, machines
    finally:
        summary.kept = run.kept


def _start_hubs(run: Run, scenario: Scenario) -> dict[str, lan.Hub]:
    hubs = {}
    for network in scenario.networks:
        members = [m.name for m in scenario.members(network.name)]
        hub = lan.start(run.state.dir / f"lan-{network.name}", network.name, members, run.qemu)
        run.state.lan_pids[network.name] = hub.pid
        run.state.save()
        hubs[network.name] = hub
    return hubs


def scenario_view(run: Run, scenario: Scenario, suite: CrossSuite, machines: dict[str, Machine]) -> Path:
    """What a cross suite reads (``BOMA_RUN_STATE``): the scenario, the tier, which machine it
    runs from and against, and each machine's addresses, ports and inventory. Private: it names
    the machines' keys."""
    view = {
        "scenario": scenario.name,
        "tier": run.state.tier,
        "source": suite.source,
        "target": suite.target,
        "machines": {
            name: {
                "host": vm.state.host,
                "domain": vm.state.domain,
                "addresses": {net: address.split("/")[0] for net, address in vm.state.lans.items()},
                "published_ports": [p.guest for p in vm.profile.published_ports],
                "inventory": vm.inventory.testinfra_spec,
            }
            for name, vm in machines.items()
        },
    }
    path = run.state.dir / f"scenario-{suite.path.name}.json"
    write_private(path, json.dumps(view, indent=2))
    return path


def run_cross_suite(
    run: Run, scenario: Scenario, suite: CrossSuite, machines: dict[str, Machine], label: str
) -> None:
    source = machines[suite.source]
    artifacts = run.state.artifacts_dir / "scenario"
    artifacts.mkdir(parents=True, exist_ok=True, mode=0o700)
    watches = [machines[n].watch_up(f"the guest died during {label}") for n in (suite.source, suite.target)]
    try:
        verify.run_suite(
            suite.path,
            source.inventory,
            scenario_view(run, scenario, suite, machines),
            artifacts / f"junit-{label}-{suite.path.name}.xml",
            artifacts / f"{label}-{suite.path.name}.log",
            suite_name=f"{scenario.name}-{run.state.tier}-{suite.path.name}",
        )
    except BomaError:
        for watch in watches:
            watch.check()  # a guest that died under the checks is not a verdict on the roles
        raise


def run_scenario(options: ScenarioOptions) -> Summary:
    """One scenario cycle. Returns the summary; raises on failure (after writing the summary
    and every machine's evidence)."""
    summary = Summary(run_id=new_run_id(), host=options.name, tier=options.certs)
    log.info(
        f"run {summary.run_id}: artifacts {paths.run_artifacts(options.name, options.certs, summary.run_id)}"
    )
    with cycle.recorded(summary), booted(options, summary) as (run, scenario, machines):
        hosts = [machines[name] for name in scenario.apply]
        for vm in hosts:
            with summary.phase(f"apply ({vm.name})", sut=True), log.machine(vm.name):
                run.mark(f"apply ({vm.name})")
                vm.apply(options.extra_overrides)
        _verify_all(run, scenario, machines, summary, verify.BEFORE_REBOOT)
        before = {}
        for name in scenario.reboot:
            vm = machines[name]
            with summary.phase(f"state-before-reboot ({name})", sut=True), log.machine(name):
                before[name] = vm.capture_state("before-reboot").state
            with summary.phase(f"reboot ({name})", sut=True), log.machine(name):
                run.mark(f"reboot ({name})")
                vm.reboot()
        _verify_all(run, scenario, machines, summary, verify.FINAL)
        for name, state in before.items():
            with summary.phase(f"state-diff ({name})", sut=True), log.machine(name):
                cycle.state_diff(machines[name], state, summary)
        if options.idempotence:
            for vm in hosts:
                with summary.phase(f"idempotence ({vm.name})", sut=True), log.machine(vm.name):
                    cycle.idempotent(vm, options.extra_overrides, summary)
        else:
            summary.notes.append("idempotence: skipped (--no-idempotence)")
    return summary


def _verify_all(
    run: Run, scenario: Scenario, machines: dict[str, Machine], summary: Summary, phase: verify.VerifyPhase
) -> None:
    """Each host's own suite (in the phase's selection), then every cross suite (all of it).
    A suite whose checks fail does not stop the others: every view of the failure is in the
    artifacts (the controller's probe and the peer's), then the phase fails naming them all."""
    failed: list[str] = []
    for name in scenario.apply:
        vm = machines[name]
        with _judged(failed), summary.phase(f"{phase.label} ({name})", sut=True), log.machine(name):
            run.mark(f"{phase.label} ({name})")
            result = vm.verify(phase.label, marker=phase.marker)
            if result.outcome is verify.Outcome.NOTHING_SELECTED:
                summary.notes.append(f"{phase.label} ({name}): {result.message}")
    for suite in scenario.suites:
        with (
            _judged(failed),
            summary.phase(f"{phase.label} ({suite.label})", sut=True),
            log.machine(suite.source),
        ):
            run.mark(f"{phase.label} ({suite.path.name})")
            run_cross_suite(run, scenario, suite, machines, phase.label)
    if failed:
        raise VerificationFailed(f"{phase.label}: " + "; ".join(failed))


@contextmanager
def _judged(failed: list[str]) -> Iterator[None]:
    """Note a suite's failing checks in ``failed`` and go on; anything else still ends the run."""
    try:
        yield
    except VerificationFailed as exc:
        failed.append(exc.message)
