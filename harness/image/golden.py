"""The golden VM image: built once per recipe key from the Debian archive, then reused.

``ensure_golden(GoldenRecipe())`` returns the cached image at ``cache_dir()/golden-<key>/`` or
builds it there: mmdebstrap makes the root filesystem tarball (see :mod:`harness.image.recipe`
for what goes in), :mod:`harness.image.disk` makes the bootable qcow2, and the kernel and
initrd are copied beside it for direct kernel boot. VMs boot from copy-on-write overlays of
``disk.qcow2``; the golden image itself is never written.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

from harness import log
from harness.errors import HarnessError
from harness.image import bootstrap, cache, disk
from harness.image.recipe import (
    GOLDEN_CUSTOMIZE,
    GoldenRecipe,
    golden_early_files,
    golden_files,
)
from harness.paths import cache_dir

DISK = "disk.qcow2"
KERNEL = "vmlinuz"
INITRD = "initrd.img"
MANIFEST = "image.json"
BUILD_LOG = "build.log"


@dataclass(frozen=True)
class GoldenImage:
    """A golden image: boot ``disk`` through GRUB, or ``kernel``/``initrd``/``cmdline``.

    A downloaded official image has no kernel beside it: it boots through its firmware only.
    """

    disk: Path
    kernel: Path | None
    initrd: Path | None
    cmdline: str
    key: str


def golden_dir(recipe: GoldenRecipe) -> Path:
    """Where the image of ``recipe`` lives once built."""
    return cache_dir() / f"golden-{recipe.key()}"


def ensure_golden(recipe: GoldenRecipe) -> GoldenImage:
    """Return the cached golden image of ``recipe``, building it first if it is not there."""
    key = recipe.key()
    cached = _load(golden_dir(recipe), recipe)
    if cached is not None:
        log.info(f"golden image {key} is cached: {cached.disk}")
        return cached
    with (
        log.step(f"build golden image {key} ({recipe.suite}, {recipe.disk_size})"),
        cache.build_lock("golden", key),
    ):
        # Another process may have finished the same build while this one waited.
        cached = _load(golden_dir(recipe), recipe)
        if cached is not None:
            log.info(f"golden image {key} was built meanwhile: {cached.disk}")
            return cached
        with cache.staging_dir("golden", key) as staging:
            _build(recipe, staging)
            cache.publish(staging, golden_dir(recipe))
        (cache_dir() / f"golden-{key}.failed.log").unlink(missing_ok=True)
    image = _load(golden_dir(recipe), recipe)
    if image is None:
        raise HarnessError(f"golden image {key} was built but {golden_dir(recipe)} is incomplete")
    return image


def is_cached(recipe: GoldenRecipe) -> bool:
    """Whether ``recipe``'s image is in the cache (a run then builds nothing)."""
    return _load(golden_dir(recipe), recipe) is not None


def _load(directory: Path, recipe: GoldenRecipe) -> GoldenImage | None:
    """The image in ``directory`` if it is complete (it only appears there by rename)."""
    image = GoldenImage(
        disk=directory / DISK,
        kernel=directory / KERNEL,
        initrd=directory / INITRD,
        cmdline=recipe.cmdline,
        key=recipe.key(),
    )
    parts = (image.disk, directory / KERNEL, directory / INITRD, directory / MANIFEST)
    return image if all(p.is_file() for p in parts) else None


def _build(recipe: GoldenRecipe, out: Path) -> None:
    key = recipe.key()
    began = time.monotonic()
    work = out / ".work"
    work.mkdir()
    rootfs = work / "rootfs.tar"
    logfile = out / BUILD_LOG
    with cache.keep_on_failure(logfile, cache_dir() / f"golden-{key}.failed.log"):
        with log.step("bootstrap the root filesystem (mmdebstrap)"):
            bootstrap.run(
                bootstrap.Bootstrap(
                    suite=recipe.suite,
                    variant="apt",
                    sources=tuple(recipe.apt_sources()),
                    packages=recipe.packages,
                    essential_hooks=(f"sync-in {_stage(golden_early_files(recipe), work / 'early')} /",),
                    customize_hooks=(
                        *_layer_hooks(recipe, work),
                        f"sync-in {_stage(golden_files(recipe), work / 'files')} /",
                        str(bootstrap.write_hook(work / "customize.sh", GOLDEN_CUSTOMIZE)),
                    ),
                    output=rootfs,
                    logfile=logfile,
                    scratch=work / "tmp",
                )
            )
            log.info(f"root filesystem: {rootfs.stat().st_size / 2**20:.0f} MiB tar")
        with log.step("assemble the disk"):
            version = disk.assemble(
                disk.DiskSpec(
                    rootfs_tar=rootfs,
                    size_bytes=recipe.disk_bytes,
                    workdir=work,
                    qcow2=out / DISK,
                    kernel=out / KERNEL,
                    initrd=out / INITRD,
                )
            )
    cache.remove_tree(work)
    if work.exists():
        raise HarnessError(f"could not clean the build's scratch space {work}")
    manifest = {
        "key": key,
        "recipe": asdict(recipe),
        "kernel_version": version,
        "cmdline": recipe.cmdline,
        "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "build_seconds": round(time.monotonic() - began, 1),
    }
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    size = (out / DISK).stat().st_size
    log.info(f"golden image {key}: {size / 2**20:.0f} MiB qcow2, kernel {version}")


def _layer_hooks(recipe: GoldenRecipe, work: Path) -> tuple[str, ...]:
    """The package layer's hook, first of the customize hooks (before the files and the
    clean-up that every clone relies on), or none."""
    hook = recipe.layer_hook()
    return (str(bootstrap.write_hook(work / "layer.sh", hook)),) if hook else ()


def _stage(files: Mapping[str, str], stage: Path) -> Path:
    """Lay out ``files`` (guest path → content) as a tree for mmdebstrap's ``sync-in`` hook."""
    bootstrap.check_hook_path(stage)
    for guest_path, content in files.items():
        target = stage / guest_path.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(content, encoding="utf-8")
        target.chmod(0o644)
    # sync-in copies directory modes too: never let a private staging dir leak onto /etc.
    for directory in [stage, *(p for p in stage.rglob("*") if p.is_dir())]:
        directory.chmod(0o755)
    return stage
