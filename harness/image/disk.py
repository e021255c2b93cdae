"""Turn a root filesystem tarball into a BIOS-bootable qcow2 disk, without partition devices.

There are no partition loop devices and no udev on the build machines (docs/platform.md), so
``grub-install`` cannot run. Instead: an MBR with one partition at sector 2048, a loop device
over just that partition (``losetup --offset --sizelimit``), ext4 labelled ``root``, the tarball
extracted into it, and GRUB's ``boot.img`` (first 440 bytes) and ``core.img`` (from sector 1,
made by the guest's own ``grub-mkimage`` during the bootstrap) written into the gap before the
partition.
"""

from __future__ import annotations

import json
import os
import shutil
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

from harness import log, proc
from harness.errors import HarnessError

SECTOR = 512
PARTITION_START_SECTOR = 2048
MBR_BOOT_CODE_BYTES = 440  # the partition table starts at 446; the disk signature at 440
GRUB_DIR_IN_GUEST = Path("boot/grub/i386-pc")
APT_LISTS_IN_GUEST = Path("var/lib/apt/lists")
QEMU_IMG_TIMEOUT = 600.0
EXTRACT_TIMEOUT = 900.0


@dataclass(frozen=True)
class DiskSpec:
    """Inputs and outputs of one disk assembly."""

    rootfs_tar: Path
    size_bytes: int
    workdir: Path
    qcow2: Path
    kernel: Path
    initrd: Path


def assemble(spec: DiskSpec) -> str:
    """Build ``spec.qcow2`` and copy the guest's kernel and initrd out; return the kernel version."""
    spec.workdir.mkdir(parents=True, exist_ok=True)
    raw = spec.workdir / "disk.raw"
    with log.step("partition the disk (MBR, one partition at sector 2048)"):
        with raw.open("wb") as handle:
            handle.truncate(spec.size_bytes)
        proc.run(
            ["sfdisk", "--quiet", str(raw)],
            input_text=f"label: dos\nstart={PARTITION_START_SECTOR}, type=83, bootable\n",
        )
        start, sectors = _partition(raw)
    with ExitStack() as cleanup:
        device = _attach(raw, start * SECTOR, sectors * SECTOR, cleanup)
        with log.step("make the root filesystem (ext4, label root)"):
            # Inode tables are zeroed now, not by ext4lazyinit in every booted clone.
            proc.run(
                [
                    "mkfs.ext4",
                    "-q",
                    "-L",
                    "root",
                    "-E",
                    "lazy_itable_init=0,lazy_journal_init=0",
                    device,
                ]
            )
        mnt = spec.workdir / "mnt"
        mnt.mkdir(exist_ok=True)
        proc.run(["mount", "-t", "ext4", device, str(mnt)])
        cleanup.callback(_unmount, mnt)
        with log.step("extract the root filesystem"):
            proc.run(
                [
                    "tar",
                    "--extract",
                    "--same-permissions",
                    "--numeric-owner",
                    "--xattrs",
                    "--xattrs-include=*",
                    "--file",
                    str(spec.rootfs_tar),
                    "--directory",
                    str(mnt),
                ],
                timeout=EXTRACT_TIMEOUT,
            )
        _package_lists_never_updated(mnt)
        version = _copy_kernel(mnt, spec.kernel, spec.initrd)
        grub = mnt / GRUB_DIR_IN_GUEST
        boot_img = _read(grub / "boot.img")
        core_img = _read(grub / "core.img")
        # Leaving the stack unmounts and detaches before GRUB's sectors are written.
    with log.step("install GRUB's boot sectors"):
        _write_boot_sectors(raw, boot_img, core_img, start)
    with log.step("convert to qcow2"):
        proc.run(
            ["qemu-img", "convert", "-f", "raw", "-O", "qcow2", str(raw), str(spec.qcow2)],
            timeout=QEMU_IMG_TIMEOUT,
        )
    raw.unlink()
    return version


def _partition(raw: Path) -> tuple[int, int]:
    """Start sector and length in sectors of the disk's only partition."""
    dump = json.loads(proc.run(["sfdisk", "--json", str(raw)], quiet=True).stdout)
    partitions = dump["partitiontable"]["partitions"]
    if len(partitions) != 1:
        raise HarnessError(f"expected one partition on {raw}, sfdisk made {len(partitions)}")
    return int(partitions[0]["start"]), int(partitions[0]["size"])


def _attach(raw: Path, offset: int, size: int, cleanup: ExitStack) -> str:
    result = proc.run(
        [
            "losetup",
            "--find",
            "--show",
            "--offset",
            str(offset),
            "--sizelimit",
            str(size),
            str(raw),
        ]
    )
    device = result.stdout.strip()
    if not device.startswith("/dev/loop"):
        raise HarnessError(f"losetup printed no loop device for {raw}: {result.stdout!r}")
    cleanup.callback(_detach, device)
    return device


def _detach(device: str) -> None:
    result = proc.run(["losetup", "--detach", device], check=False)
    if result.returncode != 0:
        log.warn(f"could not detach {device}: {result.stderr.strip()}")


def _unmount(mnt: Path) -> None:
    result = proc.run(["umount", str(mnt)], check=False)
    if result.returncode != 0:
        log.warn(f"could not unmount {mnt}: {result.stderr.strip()}")


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise HarnessError(
            f"the root filesystem has no {path.name}: {exc}",
            hint="the bootstrap's customize hook makes it; read the build log",
        ) from exc


def _package_lists_never_updated(mnt: Path) -> None:
    """Date the guest's (empty) apt lists directory to the epoch.

    mmdebstrap empties ``/var/lib/apt/lists`` and leaves the directory dated to the build. The
    roles' apt tasks take that date for the last ``apt-get update`` (``cache_valid_time``), so
    within an hour of a build they skipped the update and ran against no package lists at all:
    a package missing from the image had no candidate then but had one an hour later, and every
    apt task was cheaper than on any later day. Dated to the epoch, the first apt task of
    every VM updates, whatever the image's age, as on a host whose lists are stale.
    """
    lists = mnt / APT_LISTS_IN_GUEST
    if lists.is_dir():
        os.utime(lists, (0, 0))


def _copy_kernel(mnt: Path, kernel: Path, initrd: Path) -> str:
    """Copy the newest ``/boot/vmlinuz-*`` and its initrd out, for direct kernel boot."""
    kernels = sorted((mnt / "boot").glob("vmlinuz-*"), key=lambda p: _version_key(p.name))
    if not kernels:
        raise HarnessError("the root filesystem has no /boot/vmlinuz-*")
    version = kernels[-1].name.removeprefix("vmlinuz-")
    source_initrd = mnt / "boot" / f"initrd.img-{version}"
    if not source_initrd.exists():
        raise HarnessError(f"the root filesystem has no /boot/initrd.img-{version}")
    for source, target in ((kernels[-1], kernel), (source_initrd, initrd)):
        shutil.copyfile(source, target)
        # Debian installs the kernel 0600; libvirt's qemu user must be able to read the copy.
        target.chmod(0o644)
    log.info(f"kernel {version} copied out for direct kernel boot")
    return version


def _version_key(name: str) -> list[tuple[int, str]]:
    parts = name.replace("-", ".").split(".")
    return [(int(p), "") if p.isdigit() else (-1, p) for p in parts]


def _write_boot_sectors(raw: Path, boot_img: bytes, core_img: bytes, start: int) -> None:
    room = (start - 1) * SECTOR
    if len(boot_img) < MBR_BOOT_CODE_BYTES:
        raise HarnessError(f"GRUB's boot.img is {len(boot_img)} bytes, expected 512")
    if len(core_img) > room:
        raise HarnessError(
            f"GRUB's core.img ({len(core_img)} bytes) does not fit before the partition ({room})"
        )
    with raw.open("r+b") as disk:
        disk.seek(0)
        disk.write(boot_img[:MBR_BOOT_CODE_BYTES])
        disk.seek(SECTOR)
        disk.write(core_img)
