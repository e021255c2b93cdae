"""``python -m harness``: the full cycle and its single steps.

Exit status: 0 pass · 1 the system under test is wrong · 2 bad input (nothing created) ·
3 the harness or environment broke (or the slot is taken) · 130 interrupted.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import replace
from pathlib import Path

from harness import (
    aptcache,
    config,
    cycle,
    idempotence,
    lock,
    log,
    narrow,
    packagelayer,
    paths,
    preflight,
    proc,
    scenario_run,
    signals,
    speed,
    teardown,
    virt,
)
from harness.cycle import BootMode
from harness.errors import BadInput, BomaError, ExitCode
from harness.image.caddy import ensure_caddy_tarball
from harness.image.golden import ensure_golden
from harness.image.recipe import CaddyRecipe, GoldenRecipe
from harness.machine import Machine
from harness.run import Keep, attach, stray_domains
from harness.secrets import scrub_text, scrub_tree
from harness.state import RunState, Status, all_runs, find, new_run_id, run_dirs
from harness.summary import Summary, record_step

DEFAULT_TIER = "internal"
# A single step on a kept VM is bounded too: an apply of a fresh VM is the longest.
STEP_DEADLINE = 3600.0
IMAGE_DEADLINE = 2400.0
FRESH_DIR_AGE = 60.0


def _vm_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--host", required=True, help="host profile (profiles/<host>.yml)")
    p.add_argument("--certs", default=DEFAULT_TIER, help="cert tier (certs/<tier>.yml)")
    p.add_argument("--accel", choices=["kvm", "tcg"], help="override the detected accelerator")
    p.add_argument("--vcpus", type=int, metavar="N", help="the guest's vCPUs (default: see docs/platform.md)")
    p.add_argument(
        "--speed",
        choices=list(speed.PRESETS),
        default="default",
        help="speed levers: baseline (what the bench compares against), default, fast (adds Mitogen); "
        "see docs/bench/README.md",
    )
    p.add_argument(
        "--no-package-layer",
        action="store_true",
        help="boot the plain golden image even if the profile declares a package layer (a fresh host)",
    )
    p.add_argument(
        "--open-network",
        action="store_true",
        help="QEMU's user-mode network (the controller's whole network) instead of the hermetic one",
    )
    p.add_argument(
        "--boot",
        choices=[b.value for b in BootMode],
        default=BootMode.DIRECT.value,
        help="direct kernel boot (default, faster) or BIOS+GRUB",
    )
    p.add_argument("--uri", default=virt.DEFAULT_URI, help="libvirt URI")
    p.add_argument(
        "--image-url",
        metavar="URL",
        help="boot the official cloud image from URL instead of building one "
        "(with --image-sums; verified, refused on mismatch)",
    )
    p.add_argument("--image-sums", metavar="URL", help="the SHA512SUMS file for --image-url")
    p.add_argument("--deadline", type=float, default=cycle.DEFAULT_DEADLINE, help="seconds for the whole run")
    p.add_argument("--kernel-append", default="", metavar="ARGS", help="extra kernel arguments (direct boot)")


def _image_source(args: argparse.Namespace) -> tuple[str | None, str | None]:
    if bool(args.image_url) != bool(args.image_sums):
        raise BadInput("--image-url and --image-sums go together")
    return args.image_url, args.image_sums


def _override_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--override",
        action="append",
        type=Path,
        default=[],
        metavar="FILE",
        help="extra -e @FILE overlay after the profile's and the tier's (repeatable)",
    )


def _run_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--run", help="run id (or prefix, or domain name); default: the newest run")
    p.add_argument("--machine", help="which machine of the run (default: its only one)")


def build_parser() -> argparse.ArgumentParser:
    # `boma` once installed (pip install -e .), `python -m harness` from the repository.
    prog = "boma" if Path(sys.argv[0]).name == "boma" else "python -m harness"
    parser = argparse.ArgumentParser(
        prog=prog, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("cycle", help="boot, apply, reboot, verify, tear down")
    _vm_args(p)
    _override_arg(p)
    keep = p.add_mutually_exclusive_group()
    keep.add_argument("--keep", action="store_true", help="keep the VM even on success")
    keep.add_argument("--no-keep", action="store_true", help="destroy the VM even on failure")
    p.add_argument("--no-reboot", action="store_true", help="skip the reboot (faster, less faithful)")
    p.add_argument(
        "--no-idempotence",
        action="store_true",
        help="skip applying the steps again after the reboot (the inner loop; the summary says so)",
    )
    p = sub.add_parser("scenario", help="a scenario's machines as one run: boot, apply, reboot, verify")
    p.add_argument("--name", required=True, help="scenario (scenarios/<name>.yml)")
    p.add_argument("--certs", default=DEFAULT_TIER, help="cert tier (certs/<tier>.yml)")
    p.add_argument("--accel", choices=["kvm", "tcg"], help="override the detected accelerator")
    p.add_argument("--vcpus", type=int, metavar="N", help="every guest's vCPUs (default: each profile's)")
    p.add_argument("--uri", default=virt.DEFAULT_URI, help="libvirt URI")
    p.add_argument("--deadline", type=float, default=cycle.DEFAULT_DEADLINE, help="seconds for the whole run")
    p.add_argument("--speed", choices=list(speed.PRESETS), default="default", help="speed levers (see cycle)")
    p.add_argument("--no-package-layer", action="store_true", help="boot the plain golden image")
    p.add_argument("--no-idempotence", action="store_true", help="skip applying again after the reboot")
    keep = p.add_mutually_exclusive_group()
    keep.add_argument("--keep", action="store_true", help="keep every machine even on success")
    keep.add_argument("--no-keep", action="store_true", help="remove every machine even on failure")
    _override_arg(p)
    image = sub.add_parser("image", help="build (or find cached) the golden image and the Caddy tarball")
    image.add_argument(
        "--host",
        action="append",
        default=[],
        help="also the golden image with this profile's package layer (repeatable)",
    )
    _vm_args(sub.add_parser("up", help="boot a VM and keep it (for the apply/verify inner loop)"))
    p = sub.add_parser("apply", help="apply the profile's playbooks to a kept VM")
    _run_arg(p)
    _override_arg(p)
    p.add_argument(
        "--idempotence",
        action="store_true",
        help="apply with --diff and fail (exit 1) if a task changes that the profile does not allow",
    )
    p.add_argument(
        "--tags",
        action="append",
        default=[],
        metavar="TAG[,TAG]",
        help="only the tasks with these tags (tests/tags.yml; repeatable): a narrowed apply for the "
        "inner loop on one role, which proves less than the whole profile a cycle applies",
    )
    for name, text in (
        ("reboot", "reboot a kept VM, proving it by a changed boot_id"),
        ("verify", "run the verify suite against a kept VM"),
        ("evidence", "collect the evidence bundle from a kept VM"),
        ("down", "destroy a kept run: its VMs and files"),
        ("login", "an interactive shell in a kept VM"),
    ):
        _run_arg(sub.add_parser(name, help=text))
    p = sub.add_parser("exec", help="run a command in a kept VM: exec [--run ID] -- CMD...")
    _run_arg(p)
    p.add_argument("argv", nargs=argparse.REMAINDER, help="the command (after --)")
    p = sub.add_parser("console", help="print a kept VM's serial console log")
    _run_arg(p)
    p.add_argument("--follow", "-f", action="store_true", help="keep printing as it grows (Ctrl-C ends)")
    p = sub.add_parser("list", help="list runs: state, last step, outcome, age, ports")
    p.add_argument("--uri", default=virt.DEFAULT_URI, help="libvirt URI")
    p.add_argument("--json", action="store_true", help="one JSON document")
    p = sub.add_parser("prune", help="remove runs nobody is using, stray VMs and half-built images")
    p.add_argument("--uri", default=virt.DEFAULT_URI, help="libvirt URI")
    p.add_argument("--force", action="store_true", help="also remove runs whose owner is still alive")
    p.add_argument("--dry-run", action="store_true", help="say what would be removed, remove nothing")
    p.add_argument(
        "--cache", action="store_true", help="also empty the package cache (unless a run is using it)"
    )
    return parser


def _keep_policy(args: argparse.Namespace) -> Keep:
    return Keep.ALWAYS if args.keep else Keep.NEVER if args.no_keep else Keep.ON_FAILURE


def _levers(args: argparse.Namespace) -> speed.Levers:
    levers = speed.preset(args.speed)
    return replace(levers, package_layer=False) if args.no_package_layer else levers


def _options(args: argparse.Namespace, keep: Keep, overrides: tuple[Path, ...] = ()) -> cycle.CycleOptions:
    image_url, image_sums_url = _image_source(args)
    return cycle.CycleOptions(
        host=args.host,
        certs=args.certs,
        keep=keep,
        reboot=not getattr(args, "no_reboot", False),
        accel=args.accel,
        boot=BootMode(args.boot),
        uri=args.uri,
        deadline=args.deadline,
        extra_overrides=overrides,
        image_url=image_url,
        image_sums_url=image_sums_url,
        kernel_append=args.kernel_append,
        idempotence=not getattr(args, "no_idempotence", False),
        vcpus=args.vcpus,
        levers=_levers(args),
        open_network=args.open_network,
    )


def cmd_cycle(args: argparse.Namespace) -> int:
    options = _options(args, _keep_policy(args), tuple(args.override))
    with signals.cancellable(options.deadline):
        summary = cycle.run_cycle_retrying(options)
    log.info(f"PASS: {summary.host} with certs {summary.tier} in {summary.total_s:.0f}s")
    return ExitCode.OK


def cmd_scenario(args: argparse.Namespace) -> int:
    options = scenario_run.ScenarioOptions(
        name=args.name,
        certs=args.certs,
        keep=_keep_policy(args),
        accel=args.accel,
        uri=args.uri,
        deadline=args.deadline,
        extra_overrides=tuple(args.override),
        idempotence=not args.no_idempotence,
        vcpus=args.vcpus,
        levers=_levers(args),
    )
    with signals.cancellable(options.deadline):
        summary = scenario_run.run_scenario(options)
    log.info(f"PASS: scenario {summary.host} with certs {summary.tier} in {summary.total_s:.0f}s")
    return ExitCode.OK


def cmd_image(args: argparse.Namespace) -> int:
    profiles = [config.load_profile(host) for host in args.host]  # bad input before any build
    with signals.cancellable(IMAGE_DEADLINE):
        golden = ensure_golden(GoldenRecipe())
        log.info(f"golden image: {golden.disk}")
        for profile in profiles:
            if profile.package_layer:
                layered = ensure_golden(packagelayer.golden_recipe(profile.package_layer))
                log.info(f"golden image with {profile.name}'s package layer: {layered.disk}")
            else:
                log.info(f"{profile.name} declares no package layer: it boots the golden image")
        log.info(f"caddy tarball: {ensure_caddy_tarball(CaddyRecipe())}")
    return ExitCode.OK


def cmd_up(args: argparse.Namespace) -> int:
    options = _options(args, Keep.ALWAYS)
    summary = Summary(run_id=new_run_id(), host=args.host, tier=args.certs)
    with signals.cancellable(options.deadline), cycle.recorded(summary), cycle.booted(options, summary):
        pass
    return ExitCode.OK


def _kept(args: argparse.Namespace) -> Machine:
    state = find(args.run)
    return Machine(state, state.machine(args.machine))


def _timed_step(vm: Machine, name: str, action: Callable[[], object], *, tags: tuple[str, ...] = ()) -> int:
    """Run one single step on a kept VM: holding the run, bounded, logged and recorded in the
    run's steps.jsonl (with ``tags``, the step was narrowed to them)."""
    began, outcome = time.monotonic(), "fail"
    with ExitStack() as stack:
        stack.enter_context(attach(vm.run))
        stack.callback(scrub_tree, vm.artifacts)
        stack.callback(lambda: record_step(vm.artifacts, name, time.monotonic() - began, outcome, tags=tags))
        stack.enter_context(signals.cancellable(STEP_DEADLINE))
        vm.run.step = name
        vm.run.save()
        with log.step(f"{name} {vm.state.domain}"):
            action()
        outcome = "pass"
    return ExitCode.OK


def cmd_apply(args: argparse.Namespace) -> int:
    vm = _kept(args)
    for file in args.override:
        if not file.is_file():
            raise BadInput(f"override file {file} not found")
    overrides = tuple(args.override)
    # Refused before the run is touched: an unknown tag, or a step that selects tags of its own.
    tags = narrow.requested(args.tags, narrow.vocabulary())
    narrow.narrowed(vm.profile.steps, tags)
    if args.idempotence:

        def again() -> None:
            idempotence.check(vm.apply_again(overrides, tags=tags), vm.idempotence_report)

        return _timed_step(vm, "idempotence", again, tags=tags)
    return _timed_step(vm, "apply", lambda: vm.apply(overrides, tags=tags), tags=tags)


def cmd_reboot(args: argparse.Namespace) -> int:
    vm = _kept(args)
    return _timed_step(vm, "reboot", vm.reboot)


def cmd_verify(args: argparse.Namespace) -> int:
    vm = _kept(args)
    return _timed_step(vm, "verify", vm.verify)


def cmd_evidence(args: argparse.Namespace) -> int:
    vm = _kept(args)
    return _timed_step(
        vm,
        "evidence",
        lambda: vm.collect_evidence(reason="collected on request (python -m harness evidence)"),
    )


def cmd_down(args: argparse.Namespace) -> int:
    state = find(args.run)
    preflight.ensure_libvirt(state.uri)
    with attach(state), signals.cancellable(), signals.shielded(), log.step(f"down run {state.run_id}"):
        problems = teardown.teardown(state)
    if problems:
        raise BomaError(f"run {state.run_id} was not fully removed: {'; '.join(problems)}")
    return ExitCode.OK


def _ssh_argv(vm: Machine, command: Sequence[str]) -> list[str]:
    tty = "-t" if not command else "-T"
    return ["ssh", tty, "-F", str(vm.dir / "ssh_config"), vm.state.domain, *command]


def cmd_login(args: argparse.Namespace) -> int:
    vm = _kept(args)
    log.info(f"login to {vm.state.domain} (run {vm.run.run_id}); exit the shell to leave")
    proc.replace_process(_ssh_argv(vm, []))


def cmd_exec(args: argparse.Namespace) -> int:
    command = args.argv[1:] if args.argv[:1] == ["--"] else args.argv
    if not command:
        raise BadInput("exec needs a command: python -m harness exec [--run ID] -- CMD ...")
    vm = _kept(args)
    proc.replace_process(_ssh_argv(vm, [proc.render(command)]))


def cmd_console(args: argparse.Namespace) -> int:
    state = find(args.run)
    console = Machine(state, state.machine(args.machine)).console_log
    with console.open(encoding="utf-8", errors="replace") as handle:
        sys.stdout.write(scrub_text(handle.read()))
        while args.follow:
            chunk = handle.read()
            if chunk:
                sys.stdout.write(scrub_text(chunk))
                sys.stdout.flush()
            else:
                time.sleep(0.5)
    return ExitCode.OK


def _describe(run: RunState, domains: dict[str, bool]) -> dict[str, object]:
    holder = lock.holder(run.lock_file)
    state = "in progress" if holder else ("kept" if run.status is Status.KEPT else "stale (owner gone)")
    return {
        "run": run.run_id,
        "host": run.label,
        "tier": run.tier,
        "state": state,
        "step": run.step,
        "outcome": run.outcome,
        "age_s": round(time.time() - run.created),
        "machines": [
            {
                "name": m.name,
                "domain": m.domain,
                "running": domains.get(m.domain, False),
                "ssh": f"127.0.0.1:{m.ssh_port}",
                "ports": {guest: f"127.0.0.1:{host}" for guest, host in m.ports.items()},
                "network": m.network,
                "egress": {name: f"10.0.2.2:{port}" for name, port in m.egress.items()},
                "lans": dict(m.lans),
            }
            for m in run.machines
        ],
        "held_by": holder or "",
    }


def cmd_list(args: argparse.Namespace) -> int:
    preflight.ensure_libvirt(args.uri)
    with virt.connect(args.uri) as conn:
        listed = virt.list_runs(conn)
    domains = {name: active for name, active, _ in listed}
    runs = [_describe(r, domains) for r in all_runs()]
    known = {m["domain"] for r in runs for m in r["machines"]}  # type: ignore[attr-defined]
    strays = [{"domain": n, "running": a, "run": meta.get("run")} for n, a, meta in listed if n not in known]
    if args.json:
        print(json.dumps({"runs": runs, "stray_domains": strays}, indent=2))
        return ExitCode.OK
    for r in runs:
        age = f"{int(r['age_s']) // 60}m"  # type: ignore[call-overload]
        print(
            f"{r['run']}  {r['host']}/{r['tier']}  {r['state']}  step={r['step'] or '-'}  "
            f"outcome={r['outcome'] or '-'}  age={age}"
        )
        for m in r["machines"]:  # type: ignore[attr-defined]
            ports = " ".join(f"{g}→{h}" for g, h in m["ports"].items())
            print(
                f"    {m['domain']}  {'running' if m['running'] else 'stopped'}  ssh {m['ssh']}  {ports}  "
                f"network={m['network']}"
                + "".join(f"  {net}={address}" for net, address in m["lans"].items())
            )
    for s in strays:
        print(f"{s['domain']}  {'running' if s['running'] else 'stopped'}  no run state: prune it")
    if not runs and not strays:
        print("no test VMs and no runs")
    return ExitCode.OK


def _prune_runs(args: argparse.Namespace) -> tuple[list[str], list[str]]:
    """Runs nobody holds (or all, with --force); returns (refused, could not remove)."""
    refused, failed = [], []
    for run in all_runs():
        holder = lock.holder(run.lock_file)
        if holder and not args.force:
            refused.append(f"run {run.run_id} is in use by {holder}")
        elif args.dry_run:
            print(f"would remove run {run.run_id} ({run.label}/{run.tier}, {run.status})")
        else:
            failed += teardown.teardown(run)
    known = {r.run_id for r in all_runs()}
    for directory in run_dirs():
        if directory.name in known or lock.holder(directory / "run.lock") is not None:
            continue
        if time.time() - directory.stat().st_mtime < FRESH_DIR_AGE:
            continue  # a run being admitted right now writes its state in a moment
        if args.dry_run:
            print(f"would remove {directory} (no state)")
        else:
            failed += teardown.remove_files_of(directory)
    return refused, failed


def _prune_leftovers(args: argparse.Namespace) -> list[str]:
    """Domains no run state knows (whose owner is gone), and half-built images."""
    failed: list[str] = []
    with virt.connect(args.uri) as conn:
        for name in stray_domains(conn, force=args.force):
            if args.dry_run:
                print(f"would remove domain {name}")
            elif virt.undefine(conn, name):
                log.info(f"removed domain {name}")
    cache = paths.cache_dir()
    for half in sorted(cache.glob(".tmp-*")) if cache.is_dir() else []:
        if args.dry_run:
            print(f"would remove half-built {half}")
        else:
            failed += teardown.remove_files_of(half)
    return failed


def cmd_prune(args: argparse.Namespace) -> int:
    preflight.ensure_libvirt(args.uri)
    with signals.cancellable(), signals.shielded():
        refused, failed = _prune_runs(args)
        failed += _prune_leftovers(args)
        if args.cache and args.dry_run:
            shared = aptcache.shared_dir()
            print(f"would empty the package cache {shared} ({aptcache.size_mib(shared)} MiB)")
        elif args.cache:
            failed += aptcache.empty()
    for line in refused:
        log.warn(f"{line}: not removed (--force removes it anyway)")
    if failed:
        raise BomaError(f"prune could not remove: {'; '.join(failed)}")
    return ExitCode.OK


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "cycle": cmd_cycle,
    "scenario": cmd_scenario,
    "image": cmd_image,
    "up": cmd_up,
    "apply": cmd_apply,
    "reboot": cmd_reboot,
    "verify": cmd_verify,
    "evidence": cmd_evidence,
    "down": cmd_down,
    "login": cmd_login,
    "exec": cmd_exec,
    "console": cmd_console,
    "list": cmd_list,
    "prune": cmd_prune,
}


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    signals.die_with_parent()
    try:
        return COMMANDS[args.command](args)
    except BomaError as exc:
        print(exc.render(), file=sys.stderr)
        return int(exc.exit_code)
    except KeyboardInterrupt as exc:
        how = f" by {exc.signame}" if isinstance(exc, signals.Interrupted) else ""
        what = {
            "cycle": "everything this run created was removed",
            "up": "everything this run created was removed",
            "scenario": "everything this run created was removed",
        }.get(args.command, "the kept run stays as it was (python -m harness list)")
        print(f"interrupted{how}: {what}", file=sys.stderr)
        return int(ExitCode.INTERRUPTED)
    except Exception as exc:
        # A bug or an environment the harness did not foresee (a full disk, a permission
        # error): still a harness error, never "the system under test is wrong".
        traceback.print_exc(file=sys.stderr)
        print(
            f"harness error: unexpected {type(exc).__name__}: {scrub_text(str(exc))}\n"
            "  hint: the traceback above says where; `python -m harness prune` removes leftovers",
            file=sys.stderr,
        )
        return int(ExitCode.HARNESS_BROKE)
