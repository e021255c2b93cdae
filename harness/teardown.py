"""Removing a run, from its state alone: what a run does at its end, what `down` and `prune`
do to a kept one, and what preflight does to the leftovers of a killed one.

Every step is idempotent and the run's state file goes last, so a teardown that was itself
killed halfway is finished by the next one. A step that fails is reported, never hides the
others: the caller gets the list of what could not be removed.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from harness import aptcache, guestnet, lan, log, pebble, proc, virt
from harness.errors import HarnessError
from harness.state import STATE_FILE, RunState, Status


def stop_services(run: RunState, *, network: bool = False) -> list[str]:
    """Stop what the run started on the controller (Pebble, the package cache) and forget it;
    with ``network``, the machines' relays too (which carry their SSH: only when they go)."""
    problems = []
    if run.pebble_pids:
        try:
            pebble.stop(run.pebble_pids, Path(run.pebble_dir) if run.pebble_dir else None)
            log.info("stopped Pebble and removed its state")
            run.pebble_pids = []
        except (HarnessError, OSError) as exc:
            problems.append(f"Pebble (pids {run.pebble_pids}): {exc}")
    if run.cache_pid:
        try:
            aptcache.stop(run.cache_pid)
            log.info("stopped the run's package cache")
            run.cache_pid = 0
        except (HarnessError, OSError) as exc:
            problems.append(f"package cache (pid {run.cache_pid}): {exc}")
    for machine in run.machines if network else []:
        if machine.relay_pid:
            try:
                guestnet.stop_relay(machine.relay_pid)
                log.info(f"stopped the network relay of {machine.name}")
                machine.relay_pid = 0
            except (HarnessError, OSError) as exc:
                problems.append(f"network relay of {machine.name} (pid {machine.relay_pid}): {exc}")
    for name, pid in list(run.lan_pids.items()) if network else []:
        try:
            lan.stop(pid)
            log.info(f"stopped the hub of network {name}")
            del run.lan_pids[name]
        except (HarnessError, OSError) as exc:
            problems.append(f"hub of network {name} (pid {pid}): {exc}")
    if run.dir.is_dir():
        run.save()
    return problems


def remove_domains(run: RunState) -> list[str]:
    """Destroy and undefine every domain of the run: those its state names, and any other
    that carries its id in libvirt metadata (defined just before a crash)."""
    problems = []
    try:
        with virt.connect(run.uri) as conn:
            names = {m.domain for m in run.machines}
            names |= {name for name, _active, meta in virt.list_runs(conn) if meta.get("run") == run.run_id}
            for name in sorted(names):
                try:
                    if virt.undefine(conn, name):
                        log.info(f"removed domain {name}")
                except HarnessError as exc:
                    problems.append(f"domain {name}: {exc.message}")
    except HarnessError as exc:
        problems.append(f"domains of run {run.run_id}: {exc.message}")
    return problems


def end_processes(run: RunState) -> list[str]:
    """Kill whatever still carries the run's tag: Ansible, pytest, ssh masters, Pebble."""
    killed = proc.kill_tagged(run.run_id)
    if killed:
        log.info(f"ended {len(killed)} leftover process(es) of run {run.run_id}: pids {killed}")
    left = proc.tagged_pids(run.run_id)
    return [f"processes still running: pids {left}"] if left else []


def remove_files(run: RunState) -> list[str]:
    """The run directory (overlay, seed, key, console, secrets), its state file last."""
    return remove_files_of(run.dir)


def remove_files_of(directory: Path) -> list[str]:
    """Remove ``directory``, its state file last; returns what could not be removed."""
    if not directory.is_dir():
        return []
    problems = []
    for child in sorted(directory.iterdir()):
        if child.name == STATE_FILE:
            continue
        try:
            if child.is_dir() and not child.is_symlink():
                shutil.rmtree(child)
            else:
                child.unlink()
        except OSError as exc:
            problems.append(f"{child}: {exc.strerror}")
    if problems:
        return problems  # the state stays, so the next prune can try again
    try:
        shutil.rmtree(directory)
    except OSError as exc:
        return [f"{directory}: {exc.strerror}"]
    return []


def teardown(run: RunState) -> list[str]:
    """Remove everything of ``run``; returns what could not be removed (empty: all gone)."""
    if run.dir.is_dir():
        run.status = Status.TEARING_DOWN
        run.save()
    problems = [
        *stop_services(run, network=True),
        *end_processes(run),
        *remove_domains(run),
    ]
    if problems:
        # A domain that could not be removed still needs its overlay: keep the files.
        for problem in problems:
            log.warn(f"teardown of run {run.run_id}: {problem}")
        return problems
    problems = remove_files(run)
    for problem in problems:
        log.warn(f"teardown of run {run.run_id}: could not remove {problem}")
    return problems
