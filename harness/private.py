"""Files and directories of a run that only their owner may read.

A run's directory holds its SSH key, its secrets and its guests' disks. Where libvirt's
system QEMU runs as its own user, the disks handed to it become that user's (mode 0600), and
that user's group may traverse the directories to reach them, but not list them.
"""

from __future__ import annotations

import grp
import os
import pwd
import re
from pathlib import Path

from harness import proc

QEMU_CONF = Path("/etc/libvirt/qemu.conf")
DEFAULT_QEMU_USER = "libvirt-qemu"
PRIVATE_DIR = 0o700
PRIVATE_FILE = 0o600
QEMU_TRAVERSABLE_DIR = 0o710


def qemu_identity(conf: Path = QEMU_CONF) -> tuple[int, int] | None:
    """The uid and gid libvirt's system QEMU processes run with, or None if they run as root.

    libvirt opens a disk as that uid and gid alone (not the user's other groups) before it
    starts QEMU, and Debian's build runs QEMU as libvirt-qemu:libvirt-qemu unless qemu.conf
    says otherwise.
    """
    user, group = DEFAULT_QEMU_USER, DEFAULT_QEMU_USER
    try:
        text = conf.read_text(encoding="utf-8")
    except OSError:
        text = ""
    for key, value in re.findall(r'^\s*(user|group)\s*=\s*"([^"]*)"', text, re.M):
        if key == "user":
            user = value.lstrip("+")
        else:
            group = value.lstrip("+")
    try:
        uid = int(user) if user.isdigit() else pwd.getpwnam(user).pw_uid
        gid = int(group) if group.isdigit() else grp.getgrnam(group).gr_gid
    except KeyError:
        return None
    return None if uid == 0 else (uid, gid)


def qemu_owner(uri: str) -> tuple[int, int] | None:
    """The QEMU user the machine files are handed to, if libvirt's QEMU is not us."""
    if uri.startswith("qemu:///system"):
        identity = qemu_identity()
        if identity is not None and identity[0] != os.geteuid():
            return identity
    return None


def _grant(path: Path, uid: int, permissions: str) -> None:
    """Give the QEMU user ``permissions`` on ``path`` alone, through a POSIX ACL: a user who is
    not root cannot hand a file to another user, and group or world bits would open it to all."""
    proc.run(["setfacl", "-m", f"u:{uid}:{permissions}", str(path)], quiet=True)


def make_private_dir(path: Path, qemu: tuple[int, int] | None) -> None:
    """Create ``path`` readable by its owner only; where libvirt's system QEMU runs as another
    user, that user may traverse it (to open the files it was handed), not list it."""
    as_root = os.geteuid() == 0
    mode = QEMU_TRAVERSABLE_DIR if qemu is not None and as_root else PRIVATE_DIR
    path.mkdir(mode=mode)
    path.chmod(mode)
    if qemu is None:
        return
    if as_root:
        os.chown(path, -1, qemu[1])
    else:
        _grant(path, qemu[0], "x")


def let_traverse(path: Path, uid: int) -> None:
    """Let user ``uid`` pass through the directory ``path`` (not list it), by an ACL."""
    _grant(path, uid, "x")


def hand_to_qemu(path: Path, qemu: tuple[int, int] | None) -> None:
    """Make ``path`` (mode 0600) readable and writable by the QEMU user and its owner only."""
    path.chmod(PRIVATE_FILE)
    if qemu is None:
        return
    if os.geteuid() == 0:
        os.chown(path, *qemu)
    else:
        _grant(path, qemu[0], "rw")


def private_file(path: Path) -> Path:
    """Create ``path`` empty, mode 0600."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, PRIVATE_FILE)
    os.close(fd)
    path.chmod(PRIVATE_FILE)
    return path
