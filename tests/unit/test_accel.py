"""Accelerator choice: KVM only with kvm_intel/kvm_amd behind /dev/kvm, TCG otherwise."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness import accel
from harness.accel import Accel
from harness.errors import BadInput


def machine(tmp_path: Path, *modules: str, dev_kvm: bool = True) -> tuple[Path, Path]:
    """A fake /sys/module with ``modules`` loaded and, optionally, a /dev/kvm node."""
    sys_module = tmp_path / "sys" / "module"
    sys_module.mkdir(parents=True)
    for module in ("kvm", *modules):
        (sys_module / module).mkdir()
    kvm = tmp_path / "dev" / "kvm"
    if dev_kvm:
        kvm.parent.mkdir()
        kvm.touch()
    return sys_module, kvm


@pytest.mark.parametrize("module", ["kvm_intel", "kvm_amd"])
def test_hardware_kvm_module_means_kvm(tmp_path: Path, module: str) -> None:
    chosen, why = accel.detect(*machine(tmp_path, module))
    assert chosen is Accel.KVM
    assert module in why


def test_nested_pvm_means_tcg_even_with_dev_kvm(tmp_path: Path) -> None:
    chosen, why = accel.detect(*machine(tmp_path, "kvm_pvm"))
    assert chosen is Accel.TCG
    assert "kvm_pvm" in why


def test_pvm_wins_over_a_hardware_module(tmp_path: Path) -> None:
    assert accel.detect(*machine(tmp_path, "kvm_pvm", "kvm_intel"))[0] is Accel.TCG


def test_no_dev_kvm_means_tcg(tmp_path: Path) -> None:
    chosen, why = accel.detect(*machine(tmp_path, "kvm_intel", dev_kvm=False))
    assert chosen is Accel.TCG
    assert "no /dev/kvm" in why


def test_dev_kvm_without_a_known_module_means_tcg(tmp_path: Path) -> None:
    chosen, why = accel.detect(*machine(tmp_path))
    assert chosen is Accel.TCG
    assert "neither kvm_intel nor kvm_amd" in why


@pytest.mark.parametrize(("wanted", "expected"), [("kvm", Accel.KVM), ("TCG", Accel.TCG)])
def test_override_argument(monkeypatch: pytest.MonkeyPatch, wanted: str, expected: Accel) -> None:
    monkeypatch.delenv(accel.ENV_OVERRIDE, raising=False)
    assert accel.choose(wanted) == (expected, "chosen by override")


def test_override_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BOMA_ACCEL", "tcg")
    assert accel.choose() == (Accel.TCG, "chosen by override")


def test_argument_beats_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BOMA_ACCEL", "tcg")
    assert accel.choose("kvm")[0] is Accel.KVM


def test_without_override_detect_decides(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("BOMA_ACCEL", raising=False)
    monkeypatch.setattr(accel, "detect", lambda: (Accel.KVM, "fake detection"))
    assert accel.choose() == (Accel.KVM, "fake detection")


@pytest.mark.parametrize("source", ["argument", "environment"])
def test_bad_override_is_bad_input(monkeypatch: pytest.MonkeyPatch, source: str) -> None:
    monkeypatch.delenv("BOMA_ACCEL", raising=False)
    if source == "environment":
        monkeypatch.setenv("BOMA_ACCEL", "hvf")
    with pytest.raises(BadInput, match="unknown accelerator 'hvf'") as caught:
        accel.choose("hvf" if source == "argument" else None)
    assert caught.value.exit_code == 2
    assert caught.value.hint == "use kvm or tcg"


def test_vcpus_override_wins() -> None:
    assert accel.guest_vcpus(4, 3) == (3, "chosen by --vcpus")


def test_vcpus_override_below_one_is_bad_input() -> None:
    with pytest.raises(BadInput, match="at least 1"):
        accel.guest_vcpus(2, 0)


def test_without_an_override_the_guest_gets_the_profile_s_vcpus() -> None:
    assert accel.guest_vcpus(4) == (4, "the profile's")
