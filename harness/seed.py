"""The NoCloud seed: a per-run ``ansible`` user with passwordless sudo and the run's own key."""

from __future__ import annotations

import tempfile
from pathlib import Path

import yaml

from harness import proc

ADMIN_USER = "ansible"


APT_PROXY_FILE = "/etc/apt/apt.conf.d/00boma-package-cache"


def user_data(hostname: str, public_key: str, apt_proxy: str | None = None) -> str:
    """The guest's first-boot configuration; with ``apt_proxy`` (a hermetic network), apt goes
    through the run's package cache, its only way to the archive."""
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
    if apt_proxy:
        config["write_files"] = [
            {
                "path": APT_PROXY_FILE,
                "permissions": "0644",
                "content": f'Acquire::http::Proxy "{apt_proxy}";\n',
            }
        ]
    return "#cloud-config\n" + yaml.safe_dump(config, sort_keys=False)


def meta_data(instance_id: str, hostname: str) -> str:
    return yaml.safe_dump({"instance-id": instance_id, "local-hostname": hostname}, sort_keys=False)


def write_seed(
    iso: Path, *, instance_id: str, hostname: str, public_key: str, apt_proxy: str | None = None
) -> Path:
    """Write the seed ISO (volume label ``cidata``, as NoCloud expects)."""
    with tempfile.TemporaryDirectory(prefix="boma-seed-") as tmp:
        src = Path(tmp)
        (src / "user-data").write_text(user_data(hostname, public_key, apt_proxy), encoding="utf-8")
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
