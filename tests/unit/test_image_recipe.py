"""The recipe key: stable for the same recipe, different as soon as anything built changes."""

from __future__ import annotations

import dataclasses
import re

import pytest

from harness.errors import BadInput
from harness.image import recipe as recipe_module
from harness.image.recipe import CaddyRecipe, GoldenRecipe, golden_early_files, golden_files


def test_golden_key_is_short_hex_and_stable() -> None:
    key = GoldenRecipe().key()
    assert re.fullmatch(r"[0-9a-f]{12}", key)
    assert GoldenRecipe().key() == key
    assert GoldenRecipe(packages=tuple(recipe_module.GOLDEN_PACKAGES)).key() == key


@pytest.mark.parametrize(
    "change",
    [
        {"packages": (*recipe_module.GOLDEN_PACKAGES, "nftables")},
        {"packages": recipe_module.GOLDEN_PACKAGES[:-1]},
        {"suite": "bookworm"},
        {"mirror": "http://mirror.example/debian"},
        {"disk_size": "20G"},
        {"cmdline": recipe_module.KERNEL_CMDLINE + " quiet"},
    ],
)
def test_golden_key_changes_with_each_field(change: dict[str, object]) -> None:
    assert dataclasses.replace(GoldenRecipe(), **change).key() != GoldenRecipe().key()  # type: ignore[arg-type]


def test_keys_change_with_recipe_version(monkeypatch: pytest.MonkeyPatch) -> None:
    golden, caddy = GoldenRecipe().key(), CaddyRecipe().key()
    monkeypatch.setattr(recipe_module, "RECIPE_VERSION", recipe_module.RECIPE_VERSION + 1)
    assert GoldenRecipe().key() != golden
    assert CaddyRecipe().key() != caddy


def test_key_changes_with_the_build_script(monkeypatch: pytest.MonkeyPatch) -> None:
    before = GoldenRecipe().key()
    monkeypatch.setattr(recipe_module, "GOLDEN_CUSTOMIZE", recipe_module.GOLDEN_CUSTOMIZE + "\n# x\n")
    assert GoldenRecipe().key() != before


def test_caddy_key_is_stable_and_distinct() -> None:
    assert CaddyRecipe().key() == CaddyRecipe().key()
    assert CaddyRecipe().key() != GoldenRecipe().key()
    assert CaddyRecipe(packages=("caddy", "curl")).key() != CaddyRecipe().key()


def test_files_carry_the_cmdline_and_cloud_init_limits() -> None:
    files = golden_files(GoldenRecipe())
    assert f"linux /vmlinuz {recipe_module.KERNEL_CMDLINE}" in files["/boot/grub/grub.cfg"]
    assert "datasource_list: [NoCloud, None]" in files["/etc/cloud/cloud.cfg.d/99-boma.cfg"]
    assert "LABEL=root / ext4 errors=remount-ro 0 1" in golden_early_files(GoldenRecipe())["/etc/fstab"]
    assert "console=ttyS0,115200n8" in GoldenRecipe().cmdline


@pytest.mark.parametrize(("size", "expected"), [("10G", 10 * 2**30), ("4096M", 4 * 2**30)])
def test_disk_bytes(size: str, expected: int) -> None:
    assert GoldenRecipe(disk_size=size).disk_bytes == expected


@pytest.mark.parametrize("size", ["10", "10GB", "0G", "1.5G", "-1G"])
def test_disk_bytes_refuses_bad_sizes(size: str) -> None:
    with pytest.raises(BadInput):
        _ = GoldenRecipe(disk_size=size).disk_bytes
