"""ubongo, checked from inside the guest after the reboot: what the harness needs of a control
node (roles/integration_test), so the real ubongo can run a cycle after the same playbooks."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from harness import preflight, seed

OVERLAY = Path(__file__).resolve().parents[1] / "overrides" / "ubongo.yml"
LIBVIRT_URI = "qemu:///system"
LIBVIRT_SOCKET = "unix:///run/libvirt/libvirt-sock"
# libvirt probes QEMU's capabilities on its first answer after a start; under TCG inside a
# TCG guest that may take minutes. Past this, libvirt is declared not answering.
VIRSH_TIMEOUT = 240
# What the role creates, at the harness's own defaults (harness/paths.py): shared by every
# operator through the libvirt group.
SHARED_DIRS = ("/var/cache/boma", "/var/lib/boma/runs")
SHARED_GROUP = "libvirt"
SHARED_MODE = 0o775
OPERATOR_GROUPS = ("libvirt", "kvm")
# The programs preflight requires; ansible-* come from the venv (make venv), not from the role.
TOOLS = [tool for tool in preflight.TOOLS + preflight.IMAGE_TOOLS if not tool.startswith("ansible-")]


def _operators() -> list[str]:
    return yaml.safe_load(OVERLAY.read_text(encoding="utf-8"))["integration_test__operators"]


def _virsh_version(host):
    return host.run("timeout %s virsh --connect %s version", str(VIRSH_TIMEOUT), LIBVIRT_URI)


def test_libvirtd_active_and_enabled(host):
    libvirtd = host.service("libvirtd")
    assert libvirtd.is_running, "libvirtd did not come back after the reboot"
    assert libvirtd.is_enabled


def test_libvirt_socket_listens(host):
    assert host.socket(LIBVIRT_SOCKET).is_listening, f"nothing listens on {LIBVIRT_SOCKET}"


def test_libvirt_answers(host):
    result = _virsh_version(host)
    assert result.rc == 0, f"virsh version on {LIBVIRT_URI} failed (exit status {result.rc}): {result.stderr}"
    assert "QEMU" in result.stdout, f"libvirt answered without a QEMU hypervisor:\n{result.stdout}"


def test_an_operator_reaches_libvirt_without_root(host):
    # The VM's one account of its own is the harness's admin user; the overlay makes it an operator.
    assert seed.ADMIN_USER in _operators(), f"{OVERLAY} must list {seed.ADMIN_USER} as an operator"
    with host.sudo(seed.ADMIN_USER):
        result = _virsh_version(host)
    assert result.rc == 0, (
        f"{seed.ADMIN_USER}, in the {SHARED_GROUP} group, cannot use {LIBVIRT_URI} "
        f"(exit status {result.rc}): {result.stderr}")


@pytest.mark.parametrize("tool", TOOLS)
def test_harness_tool_present(host, tool):
    assert host.exists(tool), f"{tool} is missing: preflight would refuse a cycle on this control node"


@pytest.mark.parametrize("path", SHARED_DIRS)
def test_shared_directory(host, path):
    directory = host.file(path)
    assert directory.is_directory, f"{path} is missing"
    assert directory.user == "root"
    assert directory.group == SHARED_GROUP, f"{path} is not shared through the {SHARED_GROUP} group"
    assert directory.mode == SHARED_MODE, f"{path} has mode {directory.mode:o}, not {SHARED_MODE:o}"


def test_operators_join_the_operator_groups(host):
    user = host.user(seed.ADMIN_USER)
    assert user.exists, f"the harness's admin user {seed.ADMIN_USER} is missing from the guest"
    missing = sorted(set(OPERATOR_GROUPS) - set(user.groups))
    assert not missing, f"operator {seed.ADMIN_USER} is not in {', '.join(missing)}"


def test_operators_without_an_account_are_not_created(host):
    for name in _operators():
        if name != seed.ADMIN_USER:
            assert not host.user(name).exists, f"the role created an account for operator {name}"
