"""A run's files are its owner's alone; the QEMU user gets exactly what it needs to boot."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from harness import private, proc


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_qemu_identity_reads_qemu_conf(tmp_path: Path) -> None:
    conf = tmp_path / "qemu.conf"
    conf.write_text('#user = "nobody"\nuser = "+0"\n', encoding="utf-8")
    assert private.qemu_identity(conf) is None, "QEMU as root needs nothing handed to it"
    conf.write_text('user = "65534"\ngroup = "65534"\n', encoding="utf-8")
    assert private.qemu_identity(conf) == (65534, 65534)


def test_only_the_system_instance_hands_files_over() -> None:
    assert private.qemu_owner("test:///default") is None
    assert private.qemu_owner("qemu:///session") is None


def test_without_a_qemu_user_everything_is_0700_and_0600(tmp_path: Path) -> None:
    private.make_private_dir(tmp_path / "run", None)
    assert mode(tmp_path / "run") == 0o700
    disk = tmp_path / "run" / "overlay.qcow2"
    disk.write_bytes(b"")
    disk.chmod(0o644)
    private.hand_to_qemu(disk, None)
    assert mode(disk) == 0o600
    assert mode(private.private_file(tmp_path / "run" / "secrets.yml")) == 0o600


@pytest.mark.skipif(os.geteuid() != 0, reason="handing a file to another user by chown needs root")
def test_as_root_the_qemu_user_owns_its_disks_and_its_group_may_traverse(tmp_path: Path) -> None:
    qemu = (65534, 65534)  # nobody:nogroup stands in for libvirt-qemu
    private.make_private_dir(tmp_path / "run", qemu)
    run_dir = (tmp_path / "run").stat()
    assert (stat.S_IMODE(run_dir.st_mode), run_dir.st_gid) == (0o710, 65534)
    disk = tmp_path / "run" / "seed.iso"
    disk.write_bytes(b"")
    private.hand_to_qemu(disk, qemu)
    assert (mode(disk), disk.stat().st_uid) == (0o600, 65534)


def test_as_another_user_the_qemu_user_gets_an_acl_not_world_bits(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    granted: list[tuple[str, ...]] = []
    monkeypatch.setattr(private.os, "geteuid", lambda: 1000)
    monkeypatch.setattr(private.proc, "run", lambda argv, **_: granted.append(tuple(argv)) or
                        proc.Result(tuple(argv), 0, "", ""))
    private.make_private_dir(tmp_path / "run", (64055, 64055))
    disk = tmp_path / "run" / "overlay.qcow2"
    disk.write_bytes(b"")
    private.hand_to_qemu(disk, (64055, 64055))
    assert mode(tmp_path / "run") == 0o700 and mode(disk) == 0o600
    assert granted == [("setfacl", "-m", "u:64055:x", str(tmp_path / "run")),
                       ("setfacl", "-m", "u:64055:rw", str(disk))]
    assert proc.PACKAGE_OF["setfacl"] == "acl"
