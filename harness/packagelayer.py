"""The package layer: a profile's heaviest Debian packages installed into its golden image at
build time (with their Recommends, as the roles' apt tasks install them), so a cold apply
finds them present instead of unpacking them under emulation.

Under TCG the biggest share of a cold apply is dpkg: `docker_host : Install Docker` alone is
about 45 % of askari's (313 of 710 s on 2026-12-02). At image build time the same packages are
unpacked by the controller's own CPU, and the layered image is cached by its recipe like the
plain one.

What it must never do is hide a missing install: a package in the layer that no role installs
would make a role that forgot it pass here and fail on a fresh host. So a profile's
``package_layer`` may name only packages that a role or the inventory already lists
(:func:`installable`), and the roles still ask dpkg for them on the VM (finding them installed,
they skip apt, as on a real host that has them). A run without the layer
(``--no-package-layer``, and the test command's e2e) boots the plain image, as a fresh host
is, and its apt tasks install them from the archive; the summary says which it was.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import yaml

from harness.image.recipe import GoldenRecipe

APT_MODULES = frozenset({"apt", "ansible.builtin.apt"})
PACKAGE_LIST_KEY = re.compile(r"_packages$")


def _yaml(path: Path) -> object:
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return None  # a broken file is the schema's or ansible-lint's to report, not ours


def _names(value: object) -> Iterator[str]:
    """The literal package names in a ``name:`` value or a package list (templates skipped)."""
    items = [value] if isinstance(value, str) else value if isinstance(value, list) else []
    for item in items:
        if isinstance(item, str) and "{{" not in item:
            yield item.strip()


def _listed_in_vars(data: object) -> Iterator[str]:
    if isinstance(data, dict):
        for key, value in data.items():
            if isinstance(key, str) and PACKAGE_LIST_KEY.search(key):
                yield from _names(value)


def _installed_by_tasks(data: object) -> Iterator[str]:
    """Literal names of every apt task in a task file, blocks included."""
    for task in data if isinstance(data, list) else []:
        if not isinstance(task, dict):
            continue
        for key in ("block", "rescue", "always"):
            yield from _installed_by_tasks(task.get(key))
        for module in APT_MODULES & task.keys():
            args = task[module]
            if isinstance(args, dict):
                yield from _names(args.get("name", args.get("pkg")))


def installable(roles_dir: Path, inventory_dir: Path) -> frozenset[str]:
    """Every package a role or the inventory names for installation: the roles' default
    ``*_packages`` lists, the literal names of their apt tasks, and the inventory's
    ``*_packages`` variables."""
    found: set[str] = set()
    for defaults in sorted(roles_dir.glob("*/defaults/*.yml")):
        found.update(_listed_in_vars(_yaml(defaults)))
    for tasks in sorted(roles_dir.glob("*/tasks/*.yml")):
        found.update(_installed_by_tasks(_yaml(tasks)))
    for variables in sorted(inventory_dir.glob("**/*_vars/**/*.yml")):
        found.update(_listed_in_vars(_yaml(variables)))
    return frozenset(found)


def golden_recipe(package_layer: tuple[str, ...], *, enabled: bool = True) -> GoldenRecipe:
    """The golden image to boot: the plain one, or the plain one with ``package_layer``."""
    if not enabled or not package_layer:
        return GoldenRecipe()
    return GoldenRecipe(layer=tuple(dict.fromkeys(package_layer)))


def describe(package_layer: tuple[str, ...], used: bool) -> str | None:
    """The summary's note on the layer, or None for a profile that declares none."""
    if not package_layer:
        return None
    names = ", ".join(package_layer)
    if used:
        return f"package layer: {names} in the golden image since its build (--no-package-layer: fresh)"
    return f"package layer off: the roles installed {names} under emulation, as on a fresh host"
