"""What goes into the golden VM image and the Caddy container tarball, and the cache key of each.

A recipe is a frozen dataclass. Its :meth:`key` hashes the recipe's fields together with every
file and script the build writes into the image, so editing any of them invalidates the cache.
Bump :data:`RECIPE_VERSION` when the build *steps* (disk assembly in :mod:`harness.image.disk`)
change in a way the hashed content does not show.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass

from harness.errors import BadInput

# 2: the disk assembly dates the apt lists directory to the epoch (disk._package_lists_never_updated).
RECIPE_VERSION = 2
KEY_LENGTH = 12
# Debian policy: lower case letters, digits, + - . ; at least two characters, a letter or digit first.
PACKAGE_NAME = re.compile(r"^[a-z0-9][a-z0-9+.-]+$")
DEBIAN_MIRROR = "http://deb.debian.org/debian"
DEBIAN_SECURITY_MIRROR = "http://deb.debian.org/debian-security"

GOLDEN_PACKAGES: tuple[str, ...] = (
    "linux-image-amd64",
    "systemd-sysv",
    "systemd-resolved",
    "dbus",
    "cloud-init",
    "openssh-server",
    "python3",
    "sudo",
    "grub-pc",
    "initramfs-tools",
    "e2fsprogs",
    "ca-certificates",
    "iproute2",
    "qemu-guest-agent",
)

# The serial console records everything from the first kernel line; `ro` lets the initramfs
# fsck the root before systemd remounts it read-write (per /etc/fstab).
KERNEL_CMDLINE = "root=LABEL=root ro console=ttyS0,115200n8 net.ifnames=1"

# The PCI slot of the guest's one uplink NIC (harness.virt.netdev_args puts it there).
UPLINK_PCI_SLOT = 0x09

_SIZE = re.compile(r"^([1-9][0-9]*)([MG])$")


def _digest(payload: object) -> str:
    blob = json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()[:KEY_LENGTH]


@dataclass(frozen=True)
class GoldenRecipe:
    """A bootable Debian VM disk: cloud-init (NoCloud), DHCP on ``en*``, serial console."""

    suite: str = "trixie"
    mirror: str = DEBIAN_MIRROR
    security_mirror: str = DEBIAN_SECURITY_MIRROR
    packages: tuple[str, ...] = GOLDEN_PACKAGES
    disk_size: str = "10G"
    cmdline: str = KERNEL_CMDLINE
    # A profile's package layer (harness.packagelayer): installed after the rest as the roles'
    # apt tasks would install them, Recommends included (see layer_hook).
    layer: tuple[str, ...] = ()

    def key(self) -> str:
        """Short sha256 over the fields, the files written into the image and the build script."""
        return _digest(
            {
                "kind": "golden",
                "version": RECIPE_VERSION,
                "recipe": asdict(self),
                "early_files": golden_early_files(self),
                "files": golden_files(self),
                "customize": GOLDEN_CUSTOMIZE,
            }
        )

    @property
    def disk_bytes(self) -> int:
        """``disk_size`` in bytes (``"10G"`` → 10 GiB)."""
        match = _SIZE.match(self.disk_size)
        if match is None:
            raise BadInput(
                f"disk size {self.disk_size!r} is not a whole number of MiB or GiB",
                hint='write it like "10G" or "4096M"',
            )
        unit = 1024**3 if match.group(2) == "G" else 1024**2
        return int(match.group(1)) * unit

    def layer_hook(self) -> str | None:
        """The customize hook that installs the layer, or None without one. mmdebstrap's
        ``--include`` leaves Recommends out, while apt (and so Ansible's apt module) installs
        them: ``docker.io`` without its Recommends has no ``docker`` command (``docker-cli``).
        The layer must hold what the role's task would have installed, no less."""
        if not self.layer:
            return None
        for name in self.layer:
            if not PACKAGE_NAME.match(name):
                raise BadInput(f"package layer: {name!r} is not a Debian package name")
        return (
            '#!/bin/sh\nset -eu\nchroot "$1" env DEBIAN_FRONTEND=noninteractive '
            f"apt-get install --yes --install-recommends {' '.join(self.layer)}\n"
        )

    def apt_sources(self) -> list[str]:
        """One-line sources for mmdebstrap: the release, its updates and its security fixes."""
        return [
            f"deb {self.mirror} {self.suite} main",
            f"deb {self.mirror} {self.suite}-updates main",
            f"deb {self.security_mirror} {self.suite}-security main",
        ]


@dataclass(frozen=True)
class CaddyRecipe:
    """A minimal Debian root filesystem with Debian's ``caddy``, for ``docker import``."""

    suite: str = "trixie"
    mirror: str = DEBIAN_MIRROR
    variant: str = "essential"
    packages: tuple[str, ...] = ("caddy",)

    def key(self) -> str:
        """Short sha256 over the fields and the build script."""
        return _digest(
            {
                "kind": "caddy",
                "version": RECIPE_VERSION,
                "recipe": asdict(self),
                "customize": CADDY_CUSTOMIZE,
            }
        )


def golden_early_files(recipe: GoldenRecipe) -> Mapping[str, str]:
    """Files in place before the packages are installed: guest path → content.

    The kernel's initramfs is generated while the packages are installed; its fsck hook
    needs /etc/fstab to list the root file system by then.
    """
    return {
        "/etc/fstab": "LABEL=root / ext4 errors=remount-ro 0 1\n",
        # The build cannot resolve LABEL=root to learn the type; zstd (a Recommends) is absent.
        "/etc/initramfs-tools/conf.d/boma.conf": "FSTYPE=ext4\nCOMPRESS=gzip\n",
    }


def golden_files(recipe: GoldenRecipe) -> Mapping[str, str]:
    """Files copied into the golden image after the packages: guest path → content."""
    keyring = "/usr/share/keyrings/debian-archive-keyring.gpg"
    return {
        # Only the NoCloud seed (a `cidata` ISO) is consulted, so boot never waits on probing
        # cloud metadata services. Networking is systemd-networkd's alone (below): cloud-init
        # neither renders nor restarts it, one source of truth and a faster first boot.
        "/etc/cloud/cloud.cfg.d/99-boma.cfg": (
            "datasource_list: [NoCloud, None]\nnetwork: {config: disabled}\nmanage_etc_hosts: true\n"
        ),
        # DHCP on the uplink only: the NIC in PCI slot 9 (harness.virt). A scenario's second
        # NIC is left unmanaged until its seed names its address; matched by Name=en*, it
        # waited for a DHCP server that is not there, and systemd-networkd-wait-online held
        # the first boot for its 120 s timeout.
        "/etc/systemd/network/80-boma-dhcp.network": (
            f"[Match]\nPath=pci-0000:00:{UPLINK_PCI_SLOT:02x}.0\n\n[Network]\nDHCP=yes\n"
        ),
        # A name without a dot (a container a route names that this host does not run, e.g.
        # Caddy's upstream `uptime-kuma`) goes to the unicast server like any other, whose
        # NXDOMAIN ends it at once (on the hermetic network, the gateway's: docs/decisions/026).
        # By default resolved asked LLMNR instead, which nothing on a test VM's networks
        # answers: about 4 s per query for nobody, and Caddy's 502 for that route came after
        # the controller's probe had given up. mDNS is off for the same reason.
        "/etc/systemd/resolved.conf.d/90-boma-unicast.conf": (
            "[Resolve]\nLLMNR=no\nMulticastDNS=no\nResolveUnicastSingleLabel=yes\n"
        ),
        "/etc/hostname": "debian\n",
        "/etc/hosts": "127.0.0.1 localhost\n::1 localhost ip6-localhost ip6-loopback\n",
        "/etc/apt/sources.list.d/debian.sources": (
            f"Types: deb\nURIs: {recipe.mirror}\n"
            f"Suites: {recipe.suite} {recipe.suite}-updates\nComponents: main\n"
            f"Signed-By: {keyring}\n\n"
            f"Types: deb\nURIs: {recipe.security_mirror}\n"
            f"Suites: {recipe.suite}-security\nComponents: main\n"
            f"Signed-By: {keyring}\n"
        ),
        # Host keys are removed from the image; cloud-init's ssh module makes new ones before
        # ssh.service starts. This covers a boot without a seed, where cloud-init stays off.
        "/etc/systemd/system/ssh.service.d/10-boma-host-keys.conf": (
            "[Service]\nExecStartPre=/usr/bin/ssh-keygen -A\n"
        ),
        # Password logins are off from the first boot. Set through cloud-init (ssh_pwauth)
        # instead, this would make cloud-init restart sshd in the middle of the first boot,
        # just after the harness's first probe got in: the next connection then failed.
        "/etc/ssh/sshd_config.d/05-boma-no-passwords.conf": "PasswordAuthentication no\n",
        # grub-install cannot run without partition devices; this config is what it would
        # have produced, booting /vmlinuz from the partition labelled `root`.
        "/boot/grub/grub.cfg": (
            "set default=0\nset timeout=0\n"
            "serial --unit=0 --speed=115200\n"
            "terminal_input serial console\nterminal_output serial console\n"
            "menuentry 'Debian GNU/Linux (boma golden image)' {\n"
            "    search --no-floppy --label root --set=root\n"
            f"    linux /vmlinuz {recipe.cmdline}\n"
            "    initrd /initrd.img\n"
            "}\n"
        ),
        # Should update-grub run in the guest (a kernel upgrade), it keeps the serial console.
        "/etc/default/grub.d/90-boma.cfg": (
            "GRUB_TIMEOUT=0\n"
            'GRUB_CMDLINE_LINUX_DEFAULT=""\n'
            f'GRUB_CMDLINE_LINUX="{_without_root(recipe.cmdline)}"\n'
            'GRUB_TERMINAL="serial console"\n'
            'GRUB_SERIAL_COMMAND="serial --unit=0 --speed=115200"\n'
        ),
    }


def _without_root(cmdline: str) -> str:
    return " ".join(w for w in cmdline.split() if not w.startswith("root=") and w not in {"ro", "rw"})


# Run by mmdebstrap as a customize hook, after golden_files() were synced in; $1 is the new root.
GOLDEN_CUSTOMIZE = r"""#!/bin/sh
set -eu
root="$1"

chroot "$root" systemctl enable systemd-networkd.service systemd-resolved.service
# A throwaway test VM must not start `apt-get update` behind the playbook's back: the dpkg
# lock it takes makes apt tasks fail at random.
chroot "$root" systemctl disable apt-daily.timer apt-daily-upgrade.timer

# Every clone must differ: host keys are made at first boot (cloud-init's ssh module), and an
# empty machine-id makes systemd generate one (it also seeds networkd's DHCP client id).
rm -f "$root"/etc/ssh/ssh_host_*
: > "$root/etc/machine-id"
rm -f "$root/var/lib/dbus/machine-id"

# GRUB for BIOS without grub-install: the guest's own GRUB modules (they must match core.img),
# and a core.img that finds them on the first MBR partition. The disk assembly dd's boot.img
# and core.img into place.
grub_dir="$root/boot/grub/i386-pc"
mkdir -p "$grub_dir"
cp "$root"/usr/lib/grub/i386-pc/*.mod "$root"/usr/lib/grub/i386-pc/*.lst "$grub_dir/"
cp "$root/usr/lib/grub/i386-pc/boot.img" "$grub_dir/"
chroot "$root" grub-mkimage -O i386-pc -o /boot/grub/i386-pc/core.img \
    -p '(hd0,msdos1)/boot/grub' biosdisk part_msdos ext2 search_label

# grub.cfg boots /vmlinuz and /initrd.img; make sure the symlinks exist.
version=$(ls "$root"/boot/vmlinuz-* | sed 's|.*/vmlinuz-||' | sort -V | tail -n 1)
[ -e "$root/vmlinuz" ] || ln -s "boot/vmlinuz-$version" "$root/vmlinuz"
[ -e "$root/initrd.img" ] || ln -s "boot/initrd.img-$version" "$root/initrd.img"

# Sources live in debian.sources (deb822), written with the other files.
rm -f "$root/etc/apt/sources.list"
# Last: mmdebstrap put the build host's resolv.conf here; the guest uses resolved's stub.
rm -f "$root/etc/resolv.conf"
ln -s ../run/systemd/resolve/stub-resolv.conf "$root/etc/resolv.conf"
"""

# Run by mmdebstrap as a customize hook for the Caddy root filesystem; $1 is the new root.
CADDY_CUSTOMIZE = r"""#!/bin/sh
set -eu
root="$1"
# The container gets its Caddyfile bind-mounted or copied here.
mkdir -p "$root/etc/caddy" "$root/var/lib/caddy" "$root/srv"
# A container has no hostname or resolver of its own: docker provides both.
rm -f "$root/etc/hostname"
install -m 0644 /dev/null "$root/etc/resolv.conf"
# Nobody reads translations, manuals or package docs in the container: 38 of the tarball's
# 149 MiB, which every cold apply copies into the guest and `docker import`s under emulation.
rm -rf "$root/usr/share/locale" "$root/usr/share/doc" "$root/usr/share/man" "$root/usr/share/info"
"""
