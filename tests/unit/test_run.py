"""A run owns its machines: keep policy × outcome, evidence before teardown, a signal during
teardown, a dead owner reaped, two runs racing for the slot, private files — on libvirt's
fake driver, with the guest-side tools replaced by stand-ins (nothing boots)."""

from __future__ import annotations

import dataclasses
import os
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import libvirt
import pytest

from harness import config, lock, owner, paths, proc, signals, teardown, virt
from harness.accel import Accel
from harness.errors import BadInput, HarnessError, VerificationFailed
from harness.image.golden import GoldenImage
from harness.liveness import GuestDead
from harness.machine import Machine
from harness.provision import MachineRequest
from harness.run import ADMISSION_LOCK, Keep, Run, RunSpec, SlotTaken, max_runs, slots_taken
from harness.signals import DeadlineExceeded, Interrupted
from harness.state import MachineState, Status, all_runs, load

TEST_URI = "test:///default"

# Stand-ins for the programs provisioning runs, each making the file it would make.
FAKE_TOOLS = {
    "qemu-img": 'for last; do :; done; : > "$last"\n',
    "genisoimage": 'while [ "$1" != -output ]; do shift; done; : > "$2"\n',
    "ssh-keygen": ('while [ "$1" != -f ]; do shift; done; umask 077; echo key > "$2"; '
                   'echo "ssh-ed25519 AAAA x" > "$2.pub"\n'),
}


@pytest.fixture
def world(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, conn: libvirt.virConnect) -> Iterator[Path]:
    for name in ("BOMA_RUNS_DIR", "BOMA_ARTIFACTS_DIR", "BOMA_CACHE_DIR"):
        monkeypatch.setenv(name, str(tmp_path / name.lower()))
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool, body in FAKE_TOOLS.items():
        script = bin_dir / tool
        script.write_text("#!/bin/sh\n" + body, encoding="utf-8")
        script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    yield tmp_path


def spec(tmp: Path, keep: Keep = Keep.ON_FAILURE, run_id: str = "") -> RunSpec:
    return RunSpec(label="askari", tier="internal", uri=TEST_URI, keep=keep,
                   artifacts=tmp / "artifacts" / (run_id or "x"), run_id=run_id)


def request(tmp: Path) -> MachineRequest:
    disk = tmp / "golden.qcow2"
    disk.write_bytes(b"")
    return MachineRequest(name="askari", profile=config.load_profile("askari"), accel=Accel.TCG,
                          direct_boot=None, golden=GoldenImage(disk, None, None, "", "k"))


def domains(conn: libvirt.virConnect) -> list[str]:
    return [name for name, _active, _meta in virt.list_runs(conn)]


# -- keep policy × outcome ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("keep", "failure", "kept"),
    [
        (Keep.ON_FAILURE, None, False),
        (Keep.ALWAYS, None, True),
        (Keep.NEVER, None, False),
        (Keep.ON_FAILURE, VerificationFailed("a check failed"), True),
        (Keep.NEVER, VerificationFailed("a check failed"), False),
        (Keep.ON_FAILURE, HarnessError("libvirt broke"), True),
        (Keep.ON_FAILURE, GuestDead("emergency shell"), False),
        (Keep.ON_FAILURE, DeadlineExceeded("too slow"), False),
        (Keep.ALWAYS, Interrupted("SIGINT"), False),
        (Keep.ON_FAILURE, RuntimeError("a bug"), True),
    ],
)
def test_keep_policy_by_outcome(world: Path, conn: libvirt.virConnect, monkeypatch: pytest.MonkeyPatch,
                                keep: Keep, failure: BaseException | None, kept: bool) -> None:
    monkeypatch.setattr(Machine, "collect_evidence", lambda self, reason, label="evidence": world)
    run = Run(spec(world, keep))
    with pytest.raises(type(failure)) if failure else _nothing(), run:
        run.add_machine(request(world))
        run.admitted()
        if failure:
            raise failure
    assert run.kept is kept
    assert (domains(conn) == ["boma-it-askari-" + run.run_id]) is kept
    assert run.state.dir.is_dir() is kept
    if kept:
        assert load(run.state.dir / "state.json").status is Status.KEPT
    assert lock.holder(run.state.lock_file) is None, "the run lock outlived the run"


class _nothing:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *_exc: object) -> None:
        return None


def test_evidence_is_collected_before_teardown_and_not_on_a_signal(
    world: Path, conn: libvirt.virConnect, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[list[str]] = []

    def collect(self: Machine, reason: str, label: str = "evidence") -> Path:
        seen.append(domains(conn))  # what exists while evidence is taken
        return world

    monkeypatch.setattr(Machine, "collect_evidence", collect)
    run = Run(spec(world, Keep.NEVER))
    with pytest.raises(VerificationFailed), run:
        run.add_machine(request(world))
        raise VerificationFailed("the published port is dead")
    assert seen == [["boma-it-askari-" + run.run_id]], "evidence came after teardown, or not at all"
    assert domains(conn) == []

    seen.clear()
    run = Run(spec(world, Keep.NEVER))
    with pytest.raises(Interrupted), run:
        run.add_machine(request(world))
        raise Interrupted("SIGTERM")
    assert seen == [], "an interrupted run spends the runner's last seconds on evidence"
    assert domains(conn) == []


def test_a_second_signal_during_teardown_does_not_abandon_the_domain(
    world: Path, conn: libvirt.virConnect, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_remove = teardown.remove_domains

    def impatient(run_state: object) -> list[str]:
        os.kill(os.getpid(), signal.SIGINT)  # the user presses Ctrl-C again, mid-teardown
        return real_remove(run_state)  # type: ignore[arg-type]

    monkeypatch.setattr(teardown, "remove_domains", impatient)
    # Started in the background (nohup, `cmd &`), the test run inherits SIGINT ignored, and
    # cancellable() respects an inherited ignore by design: start from the default handler.
    inherited = signal.signal(signal.SIGINT, signal.SIG_DFL)
    run = Run(spec(world, Keep.ON_FAILURE))
    try:
        with pytest.raises(Interrupted), signals.cancellable(), run:
            run.add_machine(request(world))
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(5)  # the handler raises here at the latest, inside the body
    finally:
        signal.signal(signal.SIGINT, inherited)
    assert domains(conn) == []
    assert not run.state.dir.exists()


# -- ownership: a killed run is reaped by the next ---------------------------------------------


def dead_owner() -> owner.Owner:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    start = owner.start_ticks(child.pid)
    child.wait()
    return owner.Owner(pid=child.pid, start=start or 1, node=owner.current().node)


def test_a_run_whose_owner_died_is_reaped_by_the_next_preflight(
    world: Path, conn: libvirt.virConnect, monkeypatch: pytest.MonkeyPatch
) -> None:
    killed = Run(spec(world, run_id="dead0001"))
    killed.__enter__()
    killed.add_machine(request(world))
    # SIGKILL: no __exit__ ran, nothing was torn down; the lock went with the process.
    killed._resources.pop_all()
    killed._admission.close()
    killed._holds.close()
    killed.state.owner = dead_owner().to_json()
    killed.state.save()
    assert domains(conn) == ["boma-it-askari-dead0001"]

    run = Run(spec(world, run_id="live0002"))
    with run:
        assert not killed.state.dir.exists(), "the dead run's directory survived"
        assert "boma-it-askari-dead0001" not in domains(conn)
    assert [r.run_id for r in all_runs()] == []


def test_a_teardown_cut_short_is_finished_by_the_next_prune(world: Path, conn: libvirt.virConnect) -> None:
    run = Run(spec(world, Keep.ALWAYS, run_id="half0003"))
    with run:
        run.add_machine(request(world))
    state = run.state
    state.status = Status.TEARING_DOWN  # killed right after marking it
    state.save()
    from harness import cli  # noqa: PLC0415

    assert cli.main(["prune", "--uri", TEST_URI]) == 0
    assert not state.dir.exists()
    assert domains(conn) == []


# -- admission ---------------------------------------------------------------------------------


HOLD = textwrap.dedent(
    """
    import fcntl, os, sys, time
    fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX)
    os.write(fd, b"run f00dcafe (askari/internal, pid %d)" % os.getpid())
    print("held", flush=True)
    time.sleep(30)
    """
)


@pytest.fixture
def other_process_holds(world: Path) -> Iterator[Path]:
    path = paths.runs_dir() / ADMISSION_LOCK
    path.parent.mkdir(parents=True, exist_ok=True)
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(path)], stdout=subprocess.PIPE, text=True)
    assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
    yield path
    holder.kill()
    holder.wait()


def test_two_runs_racing_for_the_slot_one_is_refused_and_creates_nothing(
    world: Path, other_process_holds: Path
) -> None:
    with pytest.raises(SlotTaken) as refused, Run(spec(world)):
        pytest.fail("admitted while another run held the admission lock")
    assert "run f00dcafe" in refused.value.message
    assert refused.value.exit_code == 3
    assert [p.name for p in paths.runs_dir().iterdir()] == [ADMISSION_LOCK]


def test_a_kept_run_holds_the_slot_and_is_named(world: Path, conn: libvirt.virConnect) -> None:
    kept = Run(spec(world, Keep.ALWAYS))
    with kept:
        kept.add_machine(request(world))
    with pytest.raises(SlotTaken) as refused, Run(spec(world)):
        pytest.fail("admitted beyond the slot limit")
    assert f"boma-it-askari-{kept.run_id}" in refused.value.message
    assert "python -m harness down --run ID" in (refused.value.hint or "")
    assert teardown.teardown(kept.state) == []


def test_prune_refuses_a_live_run_unless_forced_and_dry_run_removes_nothing(
    world: Path, conn: libvirt.virConnect
) -> None:
    from harness import cli  # noqa: PLC0415

    run = Run(spec(world, Keep.ALWAYS))
    with run:
        run.add_machine(request(world))
        # Inside the block the run's lock is held: its owner (this test) is alive.
        assert cli.main(["prune", "--uri", TEST_URI]) == 0
        assert run.state.dir.is_dir(), "prune removed a run in progress"
        assert cli.main(["prune", "--dry-run", "--force", "--uri", TEST_URI]) == 0
        assert run.state.dir.is_dir(), "--dry-run removed something"
    assert cli.main(["prune", "--force", "--uri", TEST_URI]) == 0
    assert not run.state.dir.exists()
    assert domains(conn) == []


# -- privacy -----------------------------------------------------------------------------------


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_run_files_are_readable_by_their_owner_only(world: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GANDI_BEARER_TOKEN", "sentinel-token-0123456789")
    tier = config.load_tier("le-staging")
    run = Run(spec(world, Keep.ALWAYS))
    with run:
        machine = run.add_machine(request(world))
        from harness import runvars  # noqa: PLC0415

        runvars.write_secrets(run.state.dir, tier)
        assert mode(run.state.dir) == 0o700
        assert mode(machine.dir) == 0o700
        for private in (run.state.dir / "state.json", run.state.dir / "secrets.yml", machine.key,
                        machine.dir / "overlay.qcow2", machine.dir / "seed.iso", machine.console_log,
                        machine.view_file):
            assert mode(private) == 0o600, private
        assert mode(run.state.artifacts_dir) == 0o700
    assert teardown.teardown(run.state) == []


# -- capacity ----------------------------------------------------------------------------------


def stray_vm(conn: libvirt.virConnect, name: str, owner_of: owner.Owner | None = None) -> libvirt.virDomain:
    meta = [("run", name[-4:]), ("host", "askari"), ("tier", "internal")]
    if owner_of is not None:
        meta += [("owner_pid", str(owner_of.pid)), ("owner_start", str(owner_of.start)),
                 ("owner_node", owner_of.node)]
    return virt.define_and_start(conn, virt.DomainSpec(
        name=name, memory_mib=512, vcpus=1, accel=Accel.TCG, disk=Path("/nonexistent/overlay.qcow2"),
        seed=Path("/nonexistent/seed.iso"), console_log=Path("/nonexistent/console.log"), forwards=(),
        metadata=tuple(meta),
    ))


def test_a_stray_vm_of_a_live_owner_holds_the_slot(world: Path, conn: libvirt.virConnect,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("BOMA_MAX_VMS", raising=False)
    monkeypatch.delenv("BOMA_MAX_RUNS", raising=False)
    assert conn.lookupByName("test").isActive()  # the fake driver's own VM is not ours
    stray_vm(conn, "boma-it-askari-0001", owner.current())
    with pytest.raises(SlotTaken, match=r"boma-it-askari-0001 \(no run state\)"), Run(spec(world)):
        pytest.fail("admitted beyond the default limit of one")
    monkeypatch.setenv("BOMA_MAX_VMS", "2")  # the old name is still read
    with Run(spec(world)):
        pass
    monkeypatch.setenv("BOMA_MAX_RUNS", "1")  # the new name wins
    with pytest.raises(SlotTaken), Run(spec(world)):
        pytest.fail("admitted beyond BOMA_MAX_RUNS")


def test_a_run_is_one_slot_whatever_its_machines(world: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BOMA_MAX_RUNS", "2")
    with Run(spec(world)) as first:
        for name in ("askari", "peer"):
            first.state.machines.append(MachineState(
                name=name, host=name, domain=f"boma-it-{name}-{first.run_id}", accel="tcg", boot="direct",
                ssh_port=1, ports={}, golden="", artifacts=str(world)))
        first.state.save()
        taken = slots_taken(first.spec.uri)
        assert len(taken) == 1 and "askari" in taken[0] and "peer" in taken[0], taken
        first.state.machines.clear()
        first.state.save()


@pytest.mark.parametrize("value", ["0", "-1", "two", ""])
def test_a_slot_limit_that_is_not_a_positive_number_is_bad_input(value: str) -> None:
    with pytest.raises(BadInput, match="BOMA_MAX_RUNS"):
        max_runs({"BOMA_MAX_RUNS": value})


def test_a_stray_vm_whose_owner_is_gone_is_removed(world: Path, conn: libvirt.virConnect) -> None:
    stray_vm(conn, "boma-it-askari-0002", dead_owner())
    stray_vm(conn, "boma-it-askari-0003")  # made before owners were recorded: nobody's
    with Run(spec(world)):
        assert domains(conn) == []


@pytest.mark.skipif(os.geteuid() != 0, reason="the hermetic network needs root (a network namespace each)")
def test_a_hermetic_machines_relay_and_package_cache_end_with_its_run(
    world: Path, conn: libvirt.virConnect, monkeypatch: pytest.MonkeyPatch
) -> None:
    # passt drops to nobody here (the fake driver has no QEMU user): the run directory must
    # not sit under pytest's 0700 temporary root, which nobody cannot pass.
    runs = Path(tempfile.mkdtemp(prefix="boma-runs-"))
    runs.chmod(0o711)
    monkeypatch.setenv("BOMA_RUNS_DIR", str(runs))
    defined: list[virt.DomainSpec] = []
    real_define = virt.define_and_start
    monkeypatch.setattr(virt, "define_and_start",
                        lambda conn, spec: (defined.append(spec), real_define(conn, spec))[1])
    try:
        run = Run(spec(world, Keep.NEVER))
        with run:
            plan = run.network_plan(config.load_tier("internal"), force_open=False)
            assert plan.hermetic
            assert plan.apt_proxy == f"http://10.0.2.2:{run.state.cache_port}"
            machine = run.add_machine(dataclasses.replace(request(world), network=plan))
            run.admitted()
            relay, cache = machine.state.relay_pid, run.state.cache_pid
            assert Path(f"/proc/{relay}").exists() and Path(f"/proc/{cache}").exists()
            [made] = defined  # QEMU is given passt's socket, which the relay made
            assert made.passt_socket is not None and made.passt_socket.is_socket()
            assert "hostfwd" not in virt.domain_xml(made)
            assert load(run.state.dir / "state.json").machines[0].network == "hermetic"
        assert proc.tagged_pids(run.run_id) == [], "a process of the run outlived it"
        assert domains(conn) == []
    finally:
        shutil.rmtree(runs, ignore_errors=True)
