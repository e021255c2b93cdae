"""The disk assembly's steps that need no loop device: what it does to the extracted tree."""

from __future__ import annotations

import os
import time
from pathlib import Path

import yaml

from harness.image import disk

BASE_DEFAULTS = Path(__file__).resolve().parents[2] / "roles" / "base" / "defaults" / "main.yml"


def _apt_cache_age(root: Path) -> float:
    """Seconds since the last `apt-get update` as Ansible's apt module reckons it: the success
    stamp if there is one, else the lists directory's mtime."""
    stamp = root / "var/lib/apt/periodic/update-success-stamp"
    lists = root / "var/lib/apt/lists"
    return time.time() - os.stat(stamp if stamp.exists() else lists).st_mtime


def test_a_fresh_tree_is_stale_for_the_roles_apt_tasks(tmp_path: Path) -> None:
    valid = yaml.safe_load(BASE_DEFAULTS.read_text(encoding="utf-8"))["base__apt_cache_valid_time"]
    lists = tmp_path / "var/lib/apt/lists"
    (lists / "partial").mkdir(parents=True)
    (tmp_path / "var/lib/apt/periodic").mkdir()
    # As mmdebstrap leaves it: emptied during the build, so dated to the build.
    assert _apt_cache_age(tmp_path) < valid

    disk._package_lists_never_updated(tmp_path)

    assert _apt_cache_age(tmp_path) > valid
    assert [p.name for p in lists.iterdir()] == ["partial"]  # nothing else touched


def test_a_tree_without_apt_lists_is_left_alone(tmp_path: Path) -> None:
    disk._package_lists_never_updated(tmp_path)
    assert list(tmp_path.iterdir()) == []
