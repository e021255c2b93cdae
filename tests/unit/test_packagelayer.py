"""The package layer: only what the roles install anyway, a golden image of its own, and a
summary that says which image a run booted."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from harness import config, packagelayer, paths
from harness.errors import BadInput
from harness.image.recipe import GOLDEN_PACKAGES, GoldenRecipe

PROFILE = """\
inventory_host: askari
groups: [offsite_hosts]
steps:
  - playbook: site.yml
cert_tiers: [internal]
suite: askari
"""


def bad_profile(tmp_path: Path, text: str) -> BadInput:
    (tmp_path / "vm.yml").write_text(text, encoding="utf-8")
    with pytest.raises(BadInput) as caught:
        config.load_profile("vm", directory=tmp_path)
    return caught.value


def put(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text), encoding="utf-8")


def test_installable_reads_role_lists_apt_tasks_blocks_and_inventory_variables(tmp_path: Path) -> None:
    roles, inventory = tmp_path / "roles", tmp_path / "inventory"
    put(roles / "a" / "defaults" / "main.yml", "a__packages: [docker.io]\na__other: [not-a-package]\n")
    put(
        roles / "a" / "tasks" / "main.yml",
        """\
        - name: literal
          ansible.builtin.apt: {name: nftables, state: present}
        - name: templated
          ansible.builtin.apt: {name: "{{ a__packages }}"}
        - block:
            - name: in a block
              apt: {name: [jq, "{{ x }}"]}
        """,
    )
    put(inventory / "group_vars" / "all" / "vars.yml", "base__extra_packages: [htop]\n")
    put(roles / "b" / "tasks" / "broken.yml", "- [unclosed\n")  # not ours to report
    assert packagelayer.installable(roles, inventory) == {"docker.io", "nftables", "jq", "htop"}


def test_the_repository_s_roles_install_what_askari_s_layer_holds() -> None:
    askari = config.load_profile("askari")
    assert askari.package_layer, "askari declares its layer"
    installed = packagelayer.installable(paths.REPO / "roles", paths.PRODUCTION_INVENTORY)
    assert set(askari.package_layer) <= installed


def test_a_package_no_role_installs_is_refused_with_the_reason(tmp_path: Path) -> None:
    error = bad_profile(tmp_path, PROFILE + "package_layer: [docker.io, cowsay]\n")
    assert "package_layer[1]: 'cowsay' is installed by no role" in error.message
    assert "hide a missing install" in error.message


def test_a_name_that_is_no_debian_package_name_is_refused(tmp_path: Path) -> None:
    error = bad_profile(tmp_path, PROFILE + "package_layer: [Docker_IO]\n")
    assert "'Docker_IO' is not a Debian package name" in error.message


def test_a_package_listed_twice_is_refused(tmp_path: Path) -> None:
    error = bad_profile(tmp_path, PROFILE + "package_layer: [nftables, nftables]\n")
    assert "listed more than once" in error.message


def test_a_layer_is_a_golden_image_of_its_own_and_off_is_the_plain_one() -> None:
    plain = GoldenRecipe()
    layered = packagelayer.golden_recipe(("docker.io", "nftables", "docker.io"))
    assert layered.packages == GOLDEN_PACKAGES  # the plain image's packages, untouched
    assert layered.layer == ("docker.io", "nftables")  # once each
    assert layered.key() != plain.key()
    assert plain.layer_hook() is None
    assert packagelayer.golden_recipe(("docker.io",), enabled=False) == plain
    assert packagelayer.golden_recipe(()) == plain


def test_the_summary_says_which_image_the_run_booted() -> None:
    assert packagelayer.describe((), used=True) is None
    on = packagelayer.describe(("docker.io",), used=True)
    off = packagelayer.describe(("docker.io",), used=False)
    assert on is not None and on.startswith("package layer: docker.io in the golden image")
    assert off is not None and off.startswith("package layer off:")


def test_the_layer_is_installed_with_its_recommends_as_the_roles_apt_tasks_do() -> None:
    # 2026-12-02: --include left docker-cli (a Recommends of docker.io) out, the role's task
    # found docker.io present, and `docker import` failed: no docker command.
    hook = packagelayer.golden_recipe(("docker.io", "nftables")).layer_hook()
    assert hook is not None
    assert 'chroot "$1" env DEBIAN_FRONTEND=noninteractive apt-get install --yes --install-recommends' in hook
    assert hook.rstrip().endswith("docker.io nftables")


def test_a_layer_name_that_could_be_a_shell_word_is_refused_at_the_recipe_too() -> None:
    with pytest.raises(BadInput, match="not a Debian package name"):
        GoldenRecipe(layer=("docker.io; reboot",)).layer_hook()
