"""Checks before anything boots: tools, the libvirt daemon, memory and disk.

Capacity (how many test VMs may run at once) is the run's admission: :mod:`harness.run`.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from harness import log, paths, proc, virt
from harness.errors import HarnessError
from harness.poll import NotYet, wait_until

TOOLS = (
    "qemu-system-x86_64",
    "qemu-img",
    "genisoimage",
    "ssh",
    "ssh-keygen",
    "ansible-playbook",
    "ansible-inventory",
)
IMAGE_TOOLS = ("mmdebstrap", "sfdisk", "losetup", "mkfs.ext4", "grub-mkimage", "tar")
LIBVIRT_START_TIMEOUT = 30.0
MEMORY_HEADROOM_MIB = 512
MIN_FREE_DISK_GIB = 6


def check_tools(with_image_build: bool) -> None:
    for tool in TOOLS + (IMAGE_TOOLS if with_image_build else ()):
        proc.require(tool)


def check_privileges(*, build_image: str | None, hermetic: bool) -> None:
    """Say at the start, before anything is made, what this run would need root for.

    ``build_image``: the image the run would build (it is not cached), or None. Building one
    needs root (a loop device and a mount, harness/image/disk.py); so does the hermetic network
    (a network namespace per machine). Everything else works as a member of the libvirt group.
    """
    if os.geteuid() == 0:
        return
    needs, ways = [], []
    if build_image:
        needs.append(f"building {build_image} (a loop device and a mount)")
        ways.append("build the images once as root (sudo .venv/bin/python -m harness image --host HOST)")
    if hermetic:
        needs.append("the hermetic network (a network namespace per machine)")
        ways.append("--open-network gives QEMU's user-mode network instead")
    if needs:
        raise HarnessError(
            "this run needs root for " + " and ".join(needs),
            hint="; ".join([*ways, "or run as root, as CI does"]),
        )


def systemd_is_init() -> bool:
    return Path("/run/systemd/system").is_dir()


LIBVIRT_DAEMONS = ("virtlogd", "libvirtd")
OPERATOR_HINT = "make bootstrap, run as that user, adds them (integration_test__operators); then log in again"


def ensure_libvirt(uri: str) -> None:
    """Make sure the daemon answers; where no systemd runs, start it ourselves (docs/platform.md)."""
    if uri.startswith("test:"):
        return

    def answers() -> None:
        try:
            with virt.connect(uri):
                return
        except HarnessError as exc:
            raise NotYet(exc.message) from exc

    try:
        answers()
        return
    except NotYet as exc:
        refusal = str(exc)
    if systemd_is_init():
        raise HarnessError(
            f"libvirt at {uri} does not answer: {refusal}",
            hint="sudo systemctl start libvirtd virtlogd (or: make bootstrap); "
            "a user who is not root must be in the libvirt group: " + OPERATOR_HINT,
        )
    stopped = [d for d in LIBVIRT_DAEMONS if proc.run(["pgrep", "-x", d], check=False, quiet=True).returncode]
    uid = os.geteuid()
    if not stopped and uid != 0:
        # Its daemons run and it refuses this user: waiting would change nothing.
        raise HarnessError(
            f"libvirt at {uri} refuses this user (uid {uid}): {refusal}",
            hint="without systemd (and polkit) only root may use qemu:///system here; "
            "elsewhere a member of the libvirt group may: " + OPERATOR_HINT,
        )
    with log.step("starting libvirt daemons (no systemd on this machine)"):
        for daemon in stopped:
            proc.run([daemon, "-d"])
        wait_until(answers, what=f"libvirt at {uri}", timeout=LIBVIRT_START_TIMEOUT, interval=1)


def mem_available_mib() -> int:
    for line in Path("/proc/meminfo").read_text(encoding="utf-8").splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) // 1024
    raise HarnessError("cannot read MemAvailable from /proc/meminfo")


def check_resources(memory_mib: int) -> None:
    available = mem_available_mib()
    if available < memory_mib + MEMORY_HEADROOM_MIB:
        raise HarnessError(
            f"only {available} MiB of memory available; the VM needs {memory_mib} MiB "
            f"plus {MEMORY_HEADROOM_MIB} MiB headroom",
            hint="stop kept VMs (python -m harness list / prune)",
        )
    for where in (paths.cache_dir(), paths.runs_dir()):
        probe = where
        while not probe.exists():
            probe = probe.parent
        free_gib = shutil.disk_usage(probe).free / 2**30
        if free_gib < MIN_FREE_DISK_GIB:
            raise HarnessError(
                f"only {free_gib:.1f} GiB free under {where}; need {MIN_FREE_DISK_GIB} GiB",
                hint="python -m harness prune, or point BOMA_CACHE_DIR elsewhere",
            )
