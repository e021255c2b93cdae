"""Checks the harness runs for every host profile, beside the profile's own suite."""

from __future__ import annotations

import pytest


def test_reboot_really_happened(host, run_state):
    boot_ids = run_state["boot_ids"]
    if len(boot_ids) < 2:
        pytest.skip("this run did not reboot (--no-reboot): post-reboot outcomes are unproven")
    assert boot_ids[-1] != boot_ids[-2], "boot_id did not change across the reboot"
    now = host.file("/proc/sys/kernel/random/boot_id").content_string.strip()
    assert now == boot_ids[-1], f"guest boot_id {now} is not the post-reboot one {boot_ids[-1]}"
