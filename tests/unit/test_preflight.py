"""Checks before anything boots: the libvirt daemon, memory and disk headroom."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from harness import preflight
from harness.errors import HarnessError

TEST_URI = "test:///default"  # libvirt's in-process fake driver: nothing boots




def test_ensure_libvirt_leaves_the_fake_driver_alone() -> None:
    preflight.ensure_libvirt(TEST_URI)


@pytest.fixture
def roomy_disk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BOMA_CACHE_DIR", str(tmp_path / "cache" / "not-yet-made"))
    monkeypatch.setenv("BOMA_RUNS_DIR", str(tmp_path / "runs"))
    monkeypatch.setattr(preflight.shutil, "disk_usage", lambda _p: SimpleNamespace(free=100 * 2**30))


@pytest.mark.usefixtures("roomy_disk")
def test_absurd_memory_is_refused() -> None:
    with pytest.raises(HarnessError) as caught:
        preflight.check_resources(10**9)
    assert "MiB of memory available" in caught.value.message
    assert "1000000000 MiB" in caught.value.message


@pytest.mark.usefixtures("roomy_disk")
def test_memory_needs_headroom(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(preflight, "mem_available_mib", lambda: 2048 + preflight.MEMORY_HEADROOM_MIB)
    preflight.check_resources(2048)
    with pytest.raises(HarnessError, match="headroom"):
        preflight.check_resources(2049)


def test_memory_is_read_from_proc_meminfo() -> None:
    assert preflight.mem_available_mib() > 0


def test_too_little_disk_names_the_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cache = tmp_path / "cache" / "deep" / "not-yet-made"
    monkeypatch.setenv("BOMA_CACHE_DIR", str(cache))
    monkeypatch.setenv("BOMA_RUNS_DIR", str(tmp_path))
    monkeypatch.setattr(preflight, "mem_available_mib", lambda: 10**6)
    probed: list[Path] = []

    def disk_usage(path: Path) -> SimpleNamespace:
        probed.append(path)
        return SimpleNamespace(free=2 * 2**30)

    monkeypatch.setattr(preflight.shutil, "disk_usage", disk_usage)
    with pytest.raises(HarnessError, match=f"only 2.0 GiB free under {cache}; need 6 GiB"):
        preflight.check_resources(512)
    assert probed == [tmp_path]  # the nearest folder that exists
