"""The NoCloud seed: a per-run ``ansible`` user with passwordless sudo and the run's own key."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

import yaml

from harness import proc

ADMIN_USER = "ansible"


APT_PROXY_FILE = "/etc/apt/apt.conf.d/00boma-package-cache"
# systemd-networkd takes the first file that matches a link, in name order: these come before
# the image's catch-all DHCP on en* (80-boma-dhcp.network).
LAN_NETWORK_FILE = "/etc/systemd/network/10-boma-lan-{network}.network"


@dataclass(frozen=True)
class LanAddress:
    """The guest's NIC on a scenario network: found by its MAC, a static address, no gateway."""

    network: str
    mac: str
    address: str  # with its prefix: 10.90.0.10/24

    def networkd_file(self) -> str:
        # No Gateway= and no DHCP: nothing on this link routes anywhere but the network itself.
        return (
            f"# boma scenario network {self.network}: exists only inside the test run\n"
            f"[Match]\nMACAddress={self.mac}\n\n"
            f"[Network]\nAddress={self.address}\nLinkLocalAddressing=no\nIPv6AcceptRA=no\n"
        )


def user_data(
    hostname: str, public_key: str, apt_proxy: str | None = None, lans: tuple[LanAddress, ...] = ()
) -> str:
    """The guest's first-boot configuration; with ``apt_proxy`` (a hermetic network), apt goes
    through the run's package cache, its only way to the archive; with ``lans``, the NICs of a
    scenario's networks get their addresses (a file networkd reads at every boot after)."""
    config: dict[str, object] = {
        "hostname": hostname,
        "users": [
            {
                "name": ADMIN_USER,
                "groups": ["sudo"],
                "shell": "/bin/bash",
                "sudo": "ALL=(ALL) NOPASSWD:ALL",
                "lock_passwd": True,
                "ssh_authorized_keys": [public_key.strip()],
            }
        ],
        "disable_root": True,
    }
    files = []
    if apt_proxy:
        files.append(
            {
                "path": APT_PROXY_FILE,
                "permissions": "0644",
                "content": f'Acquire::http::Proxy "{apt_proxy}";\n',
            }
        )
    for lan in lans:
        path = LAN_NETWORK_FILE.format(network=lan.network)
        files.append({"path": path, "permissions": "0644", "content": lan.networkd_file()})
    if files:
        config["write_files"] = files
    if lans:
        # networkd read its files before cloud-init wrote these; the harness waits for this.
        config["runcmd"] = [["networkctl", "reload"]]
    return "#cloud-config\n" + yaml.safe_dump(config, sort_keys=False)


def meta_data(instance_id: str, hostname: str) -> str:
    return yaml.safe_dump({"instance-id": instance_id, "local-hostname": hostname}, sort_keys=False)


def write_seed(
    iso: Path,
    *,
    instance_id: str,
    hostname: str,
    public_key: str,
    apt_proxy: str | None = None,
    lans: tuple[LanAddress, ...] = (),
) -> Path:
    """Write the seed ISO (volume label ``cidata``, as NoCloud expects)."""
    with tempfile.TemporaryDirectory(prefix="boma-seed-") as tmp:
        src = Path(tmp)
        (src / "user-data").write_text(user_data(hostname, public_key, apt_proxy, lans), encoding="utf-8")
        (src / "meta-data").write_text(meta_data(instance_id, hostname), encoding="utf-8")
        proc.run(
            [
                "genisoimage",
                "-quiet",
                "-output",
                str(iso),
                "-volid",
                "cidata",
                "-joliet",
                "-rock",
                str(src / "user-data"),
                str(src / "meta-data"),
            ],
            quiet=True,
        )
    iso.chmod(0o644)
    return iso
