"""A boot killed by a known fault of software emulation is retried once; any other death is not.

The console excerpt is the soak's iteration 20 of 2026-12-02: an untouched guest's kernel hit
an int3 oops in the network receive path as systemd-networkd came up, under multi-threaded TCG.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from harness import cycle, liveness, machine, transient
from harness.cycle import CycleOptions
from harness.errors import VerificationFailed
from harness.liveness import EmulatorFault, GuestDead, Watch
from harness.machine import Machine
from harness.state import MachineState, RunState
from harness.summary import Summary

INT3_OOPS = """\
[   19.517654] Oops: int3: 0000 [#1] PREEMPT SMP NOPTI
[   19.517863] CPU: 1 UID: 0 PID: 27 Comm: ksoftirqd/1 Not tainted 6.12.118+deb13-amd64 #1  Debian 6.12.118-1
[   19.517964] RIP: 0010:__netif_receive_skb_core.constprop.0+0x3b/0x10a0
[   19.520112] Kernel panic - not syncing: Fatal exception in interrupt
"""
OTHER_PANIC = "[   12.1] Kernel panic - not syncing: VFS: Unable to mount root fs on unknown-block(0,0)\n"


def watch_after(tmp_path: Path, text: str) -> Watch:
    console = tmp_path / "console.log"
    console.write_text("[    0.0] Linux version 6.12\n", encoding="utf-8")
    watch = Watch(console, lambda: True)
    with console.open("a", encoding="utf-8") as handle:
        handle.write(text)
    return watch


def test_an_int3_oops_panic_is_an_emulator_fault(tmp_path: Path) -> None:
    with pytest.raises(EmulatorFault, match=r"Fatal exception in interrupt \(after 'Oops: int3'\)"):
        watch_after(tmp_path, INT3_OOPS).check()


def test_any_other_panic_is_a_dead_guest_not_an_emulator_fault(tmp_path: Path) -> None:
    with pytest.raises(GuestDead) as caught:
        watch_after(tmp_path, OTHER_PANIC).check()
    assert not isinstance(caught.value, EmulatorFault)


def a_machine(tmp_path: Path, accel: str) -> Machine:
    run = RunState(run_id="0badf00d", label="askari", tier="internal", uri="test:///default",
                   run_dir=str(tmp_path / "run"), artifacts=str(tmp_path / "art"), owner={})
    state = MachineState(name="askari", host="askari", domain="boma-it-askari-0badf00d", accel=accel,
                         boot="direct", ssh_port=2222, ports={}, golden="g", artifacts=str(tmp_path / "art"))
    run.machines.append(state)
    return Machine(run, state)


@pytest.fixture
def boots(monkeypatch: pytest.MonkeyPatch) -> dict[str, list[str]]:
    """The first boot dies of the emulator fault, the second comes up; restarts are recorded."""
    seen: dict[str, list[str]] = {"boots": [], "restarts": []}

    def wait_for_boot(endpoint: object, **_kwargs: object) -> str:
        seen["boots"].append("boot")
        if len(seen["boots"]) == 1:
            raise EmulatorFault("the guest cannot boot: Kernel panic (after 'Oops: int3')")
        return "new-boot-id"

    class Conn:
        def __enter__(self) -> Conn:
            return self

        def __exit__(self, *exc: object) -> None:
            return None

    monkeypatch.setattr(machine.ssh, "wait_for_boot", wait_for_boot)
    monkeypatch.setattr(machine.virt, "connect", lambda uri: Conn())
    monkeypatch.setattr(machine.virt, "restart", lambda conn, name: seen["restarts"].append(name))
    quiet = lambda self, *a, **k: setattr(self, "longest_silence", 0.0)  # noqa: E731
    monkeypatch.setattr(liveness.Watch, "__init__", quiet)
    return seen


def test_under_tcg_the_boot_is_started_again_once_and_the_retry_counted(
    tmp_path: Path, boots: dict[str, list[str]]
) -> None:
    before = transient.retry_count()
    assert a_machine(tmp_path, "tcg").wait_for_ssh(timeout=5) == "new-boot-id"
    assert boots["restarts"] == ["boma-it-askari-0badf00d"]
    assert transient.retry_count() == before + 1


def test_under_kvm_the_same_death_is_not_retried(tmp_path: Path, boots: dict[str, list[str]]) -> None:
    with pytest.raises(EmulatorFault):
        a_machine(tmp_path, "kvm").wait_for_ssh(timeout=5)
    assert boots["restarts"] == []


def test_a_second_emulator_fault_in_a_row_gives_up_naming_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, boots: dict[str, list[str]]
) -> None:
    def always(endpoint: object, **_kwargs: object) -> str:
        raise EmulatorFault("the guest cannot boot: Kernel panic (after 'Oops: int3')")

    monkeypatch.setattr(machine.ssh, "wait_for_boot", always)
    with pytest.raises(transient.TransientPersisted, match="Oops: int3"):
        a_machine(tmp_path, "tcg").wait_for_ssh(timeout=5)
    assert len(boots["restarts"]) == machine.EMULATOR_RETRIES + 1


# -- a whole cycle killed by the emulator runs again from a new VM -----------------------------


def cycle_that_dies(deaths: list[BaseException]) -> tuple[list[int], Callable[[CycleOptions], Summary]]:
    calls: list[int] = []

    def one(options: CycleOptions) -> Summary:
        calls.append(1)
        if len(calls) <= len(deaths):
            raise deaths[len(calls) - 1]
        return Summary(run_id="0badf00d", host=options.host, tier=options.certs)

    return calls, one


OPTIONS = CycleOptions(host="askari", certs="internal", accel="tcg")
INT3_DEATH = EmulatorFault("the guest died during playbook site.yml: Kernel panic (after 'Oops: int3')")


def test_a_cycle_whose_guest_the_emulator_killed_runs_again_once_counted() -> None:
    transient.reset_retries()
    calls, one = cycle_that_dies([INT3_DEATH])
    summary = cycle.run_cycle_retrying(OPTIONS, one)
    assert summary.run_id == "0badf00d" and len(calls) == 2
    assert [r.kind for r in transient.recorded_retries()] == [transient.Kind.EMULATOR]
    transient.reset_retries()


def test_a_second_emulator_death_is_a_harness_error_naming_it() -> None:
    _calls, one = cycle_that_dies([INT3_DEATH, INT3_DEATH])
    with pytest.raises(transient.TransientPersisted, match="2 times in a row"):
        cycle.run_cycle_retrying(OPTIONS, one)
    transient.reset_retries()


@pytest.mark.parametrize(
    "death",
    [GuestDead("the guest cannot boot: Kernel panic - not syncing: VFS"), VerificationFailed("port dead")],
)
def test_any_other_failure_of_a_cycle_is_final(death: BaseException) -> None:
    calls, one = cycle_that_dies([death])
    with pytest.raises(type(death)):
        cycle.run_cycle_retrying(OPTIONS, one)
    assert len(calls) == 1


def test_under_kvm_the_same_oops_is_the_guest_s_own_and_final() -> None:
    calls, one = cycle_that_dies([INT3_DEATH])
    with pytest.raises(EmulatorFault):
        cycle.run_cycle_retrying(CycleOptions(host="askari", certs="internal", accel="kvm"), one)
    assert len(calls) == 1


def a_guest_that_panics_during_cloud_init(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                          accel: str) -> tuple[Machine, dict[str, list[str]]]:
    """SSH answers, then the kernel dies of the int3 oops while cloud-init runs (CI, 2026-12-03:
    ssh then failed six times and the run ended as 'could not connect to the guest')."""
    vm = a_machine(tmp_path, accel)
    vm.dir.mkdir(parents=True)
    vm.console_log.write_text("[    0.0] Linux version 6.12\n", encoding="utf-8")
    seen: dict[str, list[str]] = {"restarts": [], "cloud-init": []}

    def cloud_init(endpoint: object, command: list[str], **_kwargs: object) -> object:
        seen["cloud-init"].append("wait")
        if len(seen["cloud-init"]) == 1:
            with vm.console_log.open("a", encoding="utf-8") as handle:
                handle.write(INT3_OOPS)
            closed = "kex_exchange_identification: Connection closed by remote host"
            raise transient.TransientPersisted("cloud-init status", transient.Kind.UNREACHABLE, 6, closed)
        return type("Result", (), {"stdout": "status: done\n", "returncode": 0})()

    class Conn:
        def __enter__(self) -> Conn:
            return self

        def __exit__(self, *exc: object) -> None:
            return None

    monkeypatch.setattr(Machine, "wait_for_ssh", lambda self, timeout: "boot-id")
    monkeypatch.setattr(Machine, "domain_active", lambda self: True)
    monkeypatch.setattr(Machine, "wait_settled", lambda self: "running")
    monkeypatch.setattr(Machine, "succeed", lambda self, *a, **k: "")
    monkeypatch.setattr(machine.ssh, "run_retrying", cloud_init)
    monkeypatch.setattr(machine.virt, "connect", lambda uri: Conn())
    monkeypatch.setattr(machine.virt, "restart", lambda conn, name: seen["restarts"].append(name))
    return vm, seen


def test_a_panic_while_cloud_init_runs_restarts_the_guest_once_under_tcg(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    vm, seen = a_guest_that_panics_during_cloud_init(tmp_path, monkeypatch, "tcg")
    vm.wait_ready()
    assert seen["restarts"] == ["boma-it-askari-0badf00d"]
    assert seen["cloud-init"] == ["wait", "wait"]
    assert vm.state.boot_ids == ["boot-id"]


def test_under_kvm_a_panic_while_cloud_init_runs_is_a_dead_guest(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    vm, seen = a_guest_that_panics_during_cloud_init(tmp_path, monkeypatch, "kvm")
    with pytest.raises(EmulatorFault, match="died while cloud-init ran"):
        vm.wait_ready()
    assert seen["restarts"] == []
