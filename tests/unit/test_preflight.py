"""Checks before anything boots: the libvirt daemon, memory and disk headroom."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import pytest

from harness import config, cycle, preflight
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


def test_root_may_build_and_isolate(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(preflight.os, "geteuid", lambda: 0)
    preflight.check_privileges(build_image="the golden image abc", hermetic=True)


def test_a_user_with_a_cached_image_on_the_open_network_needs_no_root(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(preflight.os, "geteuid", lambda: 1000)
    preflight.check_privileges(build_image=None, hermetic=False)


@pytest.mark.parametrize(
    ("build_image", "hermetic", "named"),
    [
        ("the golden image abc", False, ["building the golden image abc"]),
        (None, True, ["the hermetic network"]),
        ("the golden image abc", True, ["building the golden image abc", "the hermetic network"]),
    ],
)
def test_a_user_is_told_at_the_start_what_needs_root_and_the_way_round_it(
    build_image: str | None, hermetic: bool, named: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(preflight.os, "geteuid", lambda: 1000)
    with pytest.raises(HarnessError) as caught:
        preflight.check_privileges(build_image=build_image, hermetic=hermetic)
    hint = caught.value.hint or ""
    assert all(part in caught.value.message for part in named)
    assert ("python -m harness image" in hint) == (build_image is not None)
    assert ("--open-network" in hint) == hermetic


def test_unbuilt_image_names_the_image_only_when_the_cache_lacks_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BOMA_CACHE_DIR", str(tmp_path))
    profile = config.load_profile("askari")
    options = cycle.CycleOptions(host="askari", certs="internal")
    assert "golden image" in (cycle.unbuilt_image(options, profile) or "")
    assert cycle.unbuilt_image(replace(options, image_url="https://example.invalid/x.qcow2"), profile) is None


def test_a_running_libvirt_that_refuses_a_user_fails_at_once_naming_the_group(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def refuse(uri: str) -> None:
        raise HarnessError(f"cannot connect to libvirt at {uri}: authentication failed")

    started: list[list[str]] = []

    def run(argv: list[str], **_kwargs: object) -> SimpleNamespace:
        started.append(argv)
        return SimpleNamespace(returncode=0)  # pgrep: both daemons run

    monkeypatch.setattr(preflight.virt, "connect", refuse)
    monkeypatch.setattr(preflight, "systemd_is_init", lambda: False)
    monkeypatch.setattr(preflight.proc, "run", run)
    monkeypatch.setattr(preflight.os, "geteuid", lambda: 1000)
    with pytest.raises(HarnessError) as caught:
        preflight.ensure_libvirt("qemu:///system")
    assert "refuses this user (uid 1000)" in caught.value.message
    assert "authentication failed" in caught.value.message
    assert "libvirt group" in (caught.value.hint or "")
    assert all(argv[0] == "pgrep" for argv in started)  # nothing started, no wait
