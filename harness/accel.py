"""Choose the accelerator: KVM where it really works, TCG otherwise (docs/platform.md).

``/dev/kvm`` alone proves nothing: on these machines it is a nested "PVM" hypervisor that
cannot run a stock Debian kernel. KVM is chosen only with ``kvm_intel`` or ``kvm_amd`` loaded.
"""

from __future__ import annotations

import os
from enum import StrEnum
from pathlib import Path

from harness.errors import BadInput

ENV_OVERRIDE = "BOMA_ACCEL"


class Accel(StrEnum):
    KVM = "kvm"
    TCG = "tcg"


def detect(sys_module: Path = Path("/sys/module"), dev_kvm: Path = Path("/dev/kvm")) -> tuple[Accel, str]:
    """Return the accelerator this machine can really use and why."""
    if not dev_kvm.exists():
        return Accel.TCG, "no /dev/kvm"
    if (sys_module / "kvm_pvm").exists():
        return Accel.TCG, "/dev/kvm is the nested kvm_pvm hypervisor, which cannot run stock kernels"
    for module in ("kvm_intel", "kvm_amd"):
        if (sys_module / module).exists():
            return Accel.KVM, f"{module} is loaded"
    return Accel.TCG, "neither kvm_intel nor kvm_amd is loaded"


def choose(override: str | None = None) -> tuple[Accel, str]:
    """The accelerator for this run: ``override`` (or ``$BOMA_ACCEL``), else :func:`detect`."""
    wanted = override or os.environ.get(ENV_OVERRIDE)
    if wanted:
        try:
            return Accel(wanted.lower()), "chosen by override"
        except ValueError:
            raise BadInput(f"unknown accelerator {wanted!r}", hint="use kvm or tcg") from None
    return detect()


def guest_vcpus(profile_vcpus: int, override: int | None = None) -> tuple[int, str]:
    """How many vCPUs the guest gets, and why: ``override`` if given, else the profile's."""
    if override is not None:
        if override < 1:
            raise BadInput(f"--vcpus must be at least 1, not {override}")
        return override, "chosen by --vcpus"
    return profile_vcpus, "the profile's"
