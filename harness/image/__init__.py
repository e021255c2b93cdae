"""Images the harness boots and imports, built from the Debian archive and cached by recipe key.

* :func:`ensure_golden` — the golden VM disk (qcow2) plus kernel/initrd for direct boot.
* :func:`ensure_caddy_tarball` — a Caddy root filesystem tarball for ``docker import``.
* :func:`download_verified` — the alternative source on hosts that can reach an official image.
"""

from __future__ import annotations

from harness.image.caddy import ensure_caddy_tarball
from harness.image.download import download_verified
from harness.image.golden import GoldenImage, ensure_golden
from harness.image.recipe import RECIPE_VERSION, CaddyRecipe, GoldenRecipe

__all__ = [
    "RECIPE_VERSION",
    "CaddyRecipe",
    "GoldenImage",
    "GoldenRecipe",
    "download_verified",
    "ensure_caddy_tarball",
    "ensure_golden",
]
