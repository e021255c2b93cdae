"""roles/integration_test must prepare what the harness expects to find.

The role ran for real on a Debian 12 machine without systemd (see
docs/runbooks/ci-runner.md); these checks keep its defaults from drifting
away from the harness's own defaults and tool list.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from harness import guestnet, paths, preflight, proc

ROLE = Path(__file__).resolve().parents[2] / "roles" / "integration_test"


def defaults() -> dict[str, Any]:
    loaded = yaml.safe_load((ROLE / "defaults" / "main.yml").read_text(encoding="utf-8"))
    assert isinstance(loaded, dict)
    return loaded


def test_directories_are_the_harness_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("BOMA_CACHE_DIR", raising=False)
    monkeypatch.delenv("BOMA_RUNS_DIR", raising=False)
    assert Path(defaults()["integration_test__cache_dir"]) == paths.cache_dir()
    assert Path(defaults()["integration_test__runs_dir"]) == paths.runs_dir()


def test_libvirt_daemons_are_the_ones_the_harness_starts() -> None:
    assert defaults()["integration_test__libvirt_daemons"] == ["virtlogd", "libvirtd"]
    assert defaults()["integration_test__libvirt_uri"] == "qemu:///system"


# Which Debian package brings each program the harness's preflight requires.
PROVIDER = {
    "qemu-system-x86_64": "qemu-system-x86",
    "qemu-img": "qemu-utils",
    "genisoimage": "genisoimage",
    "ssh": "openssh-client",
    "ssh-keygen": "openssh-client",
    "mmdebstrap": "mmdebstrap",
    "sfdisk": "fdisk",
    "mkfs.ext4": "e2fsprogs",
    "grub-mkimage": "grub-common",
}


def test_packages_bring_the_hermetic_networks_tools() -> None:
    packages = set(defaults()["integration_test__packages"])
    for tool in guestnet.TOOLS:
        package = proc.PACKAGE_OF[tool]
        assert package in packages, f"{tool} needs {package} in integration_test__packages"


def test_packages_bring_the_tools_preflight_requires() -> None:
    packages = set(defaults()["integration_test__packages"])
    for tool in preflight.TOOLS + preflight.IMAGE_TOOLS:
        if tool in PROVIDER:
            assert PROVIDER[tool] in packages, f"{tool} needs {PROVIDER[tool]} in integration_test__packages"
