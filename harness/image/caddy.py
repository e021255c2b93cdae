"""The Caddy container image, as a root filesystem tarball for ``docker import`` in the guest.

Built offline from the Debian archive (mmdebstrap variant ``essential`` plus ``caddy``), cached
as ``cache_dir()/caddy-<key>.tar`` with its build log beside it as ``caddy-<key>.build.log``.
"""

from __future__ import annotations

import tarfile
from pathlib import Path

from harness import log
from harness.errors import HarnessError
from harness.image import bootstrap, cache
from harness.image.recipe import CADDY_CUSTOMIZE, CaddyRecipe
from harness.paths import cache_dir

# What the tarball must hold for `docker import` + `caddy run --config /etc/caddy/Caddyfile`.
REQUIRED_MEMBERS = ("./usr/bin/caddy", "./etc/caddy")


def caddy_tarball(recipe: CaddyRecipe) -> Path:
    """Where the tarball of ``recipe`` lives once built."""
    return cache_dir() / f"caddy-{recipe.key()}.tar"


def ensure_caddy_tarball(recipe: CaddyRecipe) -> Path:
    """Return the cached Caddy root filesystem tarball, building it first if it is not there."""
    key = recipe.key()
    final = caddy_tarball(recipe)
    if final.is_file():
        log.info(f"caddy tarball {key} is cached: {final}")
        return final
    with (
        log.step(f"build caddy tarball {key} ({recipe.suite}, {recipe.variant})"),
        cache.build_lock("caddy", key),
    ):
        if final.is_file():
            log.info(f"caddy tarball {key} was built meanwhile: {final}")
            return final
        with cache.staging_dir("caddy", key) as staging:
            built = staging / "caddy.tar"
            logfile = staging / "build.log"
            with cache.keep_on_failure(logfile, cache_dir() / f"caddy-{key}.failed.log"):
                bootstrap.run(
                    bootstrap.Bootstrap(
                        suite=recipe.suite,
                        variant=recipe.variant,
                        sources=(f"deb {recipe.mirror} {recipe.suite} main",),
                        packages=recipe.packages,
                        customize_hooks=(
                            str(bootstrap.write_hook(staging / "customize.sh", CADDY_CUSTOMIZE)),
                        ),
                        output=built,
                        logfile=logfile,
                        scratch=staging / "tmp",
                    )
                )
                _check(built)
            cache.publish(logfile, cache_dir() / f"caddy-{key}.build.log")
            # The tarball appears last: its presence means the build completed.
            cache.publish(built, final)
        (cache_dir() / f"caddy-{key}.failed.log").unlink(missing_ok=True)
    log.info(f"caddy tarball {key}: {final.stat().st_size / 2**20:.0f} MiB")
    return final


def _check(tar: Path) -> None:
    with tarfile.open(tar) as archive:
        names = set(archive.getnames())
    missing = [m for m in REQUIRED_MEMBERS if m not in names and m.lstrip("./") not in names]
    if missing:
        raise HarnessError(f"the caddy tarball {tar} lacks {', '.join(missing)}")
