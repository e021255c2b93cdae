"""``python -m harness``: the full cycle and its single steps.

Exit status: 0 pass · 1 the system under test is wrong · 2 bad input (nothing created) ·
3 the harness or environment broke · 130 interrupted.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from harness import cycle, log, paths, preflight, ssh, virt
from harness.errors import BadInput, BomaError, ExitCode
from harness.image.caddy import ensure_caddy_tarball
from harness.image.golden import ensure_golden
from harness.image.recipe import CaddyRecipe, GoldenRecipe
from harness.machine import BootMode, TestVM
from harness.secrets import scrub_tree
from harness.state import all_runs, find, new_run_id
from harness.summary import Summary, record_step

DEFAULT_TIER = "internal"


def _vm_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--host", required=True, help="host profile (profiles/<host>.yml)")
    p.add_argument("--certs", default=DEFAULT_TIER, help="cert tier (certs/<tier>.yml)")
    p.add_argument("--accel", choices=["kvm", "tcg"], help="override the detected accelerator")
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m harness", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("cycle", help="boot, apply, reboot, verify, tear down")
    _vm_args(p)
    _override_arg(p)
    keep = p.add_mutually_exclusive_group()
    keep.add_argument("--keep", action="store_true", help="keep the VM even on success")
    keep.add_argument("--no-keep", action="store_true", help="destroy the VM even on failure")
    p.add_argument("--no-reboot", action="store_true", help="skip the reboot (faster, less faithful)")
    p.add_argument("--deadline", type=float, default=cycle.DEFAULT_DEADLINE, help="seconds for the whole run")
    sub.add_parser("image", help="build (or find cached) the golden image and the Caddy tarball")
    p = sub.add_parser("up", help="boot a VM and keep it (for the apply/verify inner loop)")
    _vm_args(p)
    p = sub.add_parser("apply", help="apply the profile's playbooks to a kept VM")
    _run_arg(p)
    _override_arg(p)
    for name, text in (
        ("reboot", "reboot a kept VM, proving it by a changed boot_id"),
        ("verify", "run the verify suite against a kept VM"),
        ("evidence", "collect the evidence bundle from a kept VM"),
        ("down", "destroy a kept VM and its files"),
        ("console", "print a kept VM's serial console log"),
    ):
        _run_arg(sub.add_parser(name, help=text))
    for name, text in (
        ("list", "list test VMs and kept runs"),
        ("prune", "remove every test VM, run directory and half-built image"),
    ):
        sub.add_parser(name, help=text).add_argument("--uri", default=virt.DEFAULT_URI, help="libvirt URI")
    return parser


def cmd_cycle(args: argparse.Namespace) -> int:
    image_url, image_sums_url = _image_source(args)
    options = cycle.CycleOptions(
        host=args.host,
        certs=args.certs,
        keep=cycle.Keep.ALWAYS if args.keep else cycle.Keep.NEVER if args.no_keep else cycle.Keep.ON_FAILURE,
        reboot=not args.no_reboot,
        accel=args.accel,
        boot=BootMode(args.boot),
        uri=args.uri,
        deadline=args.deadline,
        extra_overrides=tuple(args.override),
        image_url=image_url,
        image_sums_url=image_sums_url,
    )
    summary = cycle.run_cycle(options)
    log.info(f"PASS: {summary.host} with certs {summary.tier} in {summary.total_s:.0f}s")
    return ExitCode.OK


def cmd_image(_args: argparse.Namespace) -> int:
    golden = ensure_golden(GoldenRecipe())
    log.info(f"golden image: {golden.disk}")
    log.info(f"caddy tarball: {ensure_caddy_tarball(CaddyRecipe())}")
    return ExitCode.OK


def cmd_up(args: argparse.Namespace) -> int:
    image_url, image_sums_url = _image_source(args)
    options = cycle.CycleOptions(
        host=args.host,
        certs=args.certs,
        accel=args.accel,
        boot=BootMode(args.boot),
        uri=args.uri,
        keep=cycle.Keep.ALWAYS,
        image_url=image_url,
        image_sums_url=image_sums_url,
    )
    summary = Summary(run_id=new_run_id(), host=args.host, tier=args.certs)
    with cycle.guarded(options.deadline):
        request = cycle.prepare(options, summary)
        with cycle.running_vm(request, summary, cycle.Keep.ALWAYS):
            pass
    return ExitCode.OK


def _kept(args: argparse.Namespace) -> TestVM:
    return TestVM(find(args.run))


def _timed_step(vm: TestVM, name: str, action: Callable[[], object]) -> int:
    """Run one single step on a kept VM, logged and recorded in the run's steps.jsonl."""
    began, outcome = time.monotonic(), "fail"
    try:
        with log.step(f"{name} {vm.state.domain}"):
            action()
        outcome = "pass"
    finally:
        record_step(vm.state.artifacts_dir, name, time.monotonic() - began, outcome)
        scrub_tree(vm.state.artifacts_dir)
    return ExitCode.OK


def cmd_apply(args: argparse.Namespace) -> int:
    vm = _kept(args)
    for file in args.override:
        if not file.is_file():
            raise BadInput(f"override file {file} not found")
    return _timed_step(vm, "apply", lambda: vm.apply(tuple(args.override)))


def cmd_reboot(args: argparse.Namespace) -> int:
    vm = _kept(args)
    return _timed_step(vm, "reboot", vm.reboot)


def cmd_verify(args: argparse.Namespace) -> int:
    vm = _kept(args)
    return _timed_step(vm, "verify", vm.verify)


def cmd_evidence(args: argparse.Namespace) -> int:
    vm = _kept(args)
    vm.collect_evidence(reason="collected on request (python -m harness evidence)")
    return ExitCode.OK


def cmd_down(args: argparse.Namespace) -> int:
    vm = _kept(args)
    preflight.ensure_libvirt(vm.state.uri)
    with log.step(f"down {vm.state.domain}"):
        vm.destroy()
    return ExitCode.OK


def cmd_console(args: argparse.Namespace) -> int:
    state = find(args.run)
    sys.stdout.write(state.console_log.read_text(encoding="utf-8", errors="replace"))
    return ExitCode.OK


def cmd_list(args: argparse.Namespace) -> int:
    runs = {r.domain: r for r in all_runs()}
    preflight.ensure_libvirt(args.uri)
    with virt.connect(args.uri) as conn:
        domains = virt.list_runs(conn)
    for name, active, meta in domains:
        run = runs.pop(name, None)
        where = f"ssh -F {run.dir / 'ssh_config'} {name}" if run else "(no state: prune it)"
        print(
            f"{name}  {'running' if active else 'stopped'}  run={meta.get('run')} "
            f"tier={meta.get('tier')}  {where}"
        )
    for name, run in runs.items():
        print(f"{name}  (no domain)  run={run.run_id}  state in {run.dir}: prune it")
    if not domains and not runs:
        print("no test VMs and no kept runs")
    return ExitCode.OK


def cmd_prune(args: argparse.Namespace) -> int:
    preflight.ensure_libvirt(args.uri)
    with virt.connect(args.uri) as conn:
        for name, _active, _meta in virt.list_runs(conn):
            virt.undefine(conn, name)
            log.info(f"removed domain {name}")
    for run in all_runs():
        # A kept run's controller-side processes (Pebble, the shared SSH connection) end
        # before its state goes.
        vm = TestVM(run)
        vm.stop_services()
        ssh.close_master(vm.endpoint)
    runs = paths.runs_dir()
    for child in sorted(runs.iterdir()) if runs.is_dir() else []:
        shutil.rmtree(child, ignore_errors=True)
        log.info(f"removed {child}")
    cache = paths.cache_dir()
    for half in sorted(cache.glob(".tmp-*")) if cache.is_dir() else []:
        shutil.rmtree(half, ignore_errors=True)
        log.info(f"removed half-built {half}")
    return ExitCode.OK


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "cycle": cmd_cycle,
    "image": cmd_image,
    "up": cmd_up,
    "apply": cmd_apply,
    "reboot": cmd_reboot,
    "verify": cmd_verify,
    "evidence": cmd_evidence,
    "down": cmd_down,
    "console": cmd_console,
    "list": cmd_list,
    "prune": cmd_prune,
}


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except BomaError as exc:
        print(exc.render(), file=sys.stderr)
        return int(exc.exit_code)
    except KeyboardInterrupt:
        print("interrupted: everything this run created was removed", file=sys.stderr)
        return int(ExitCode.INTERRUPTED)
