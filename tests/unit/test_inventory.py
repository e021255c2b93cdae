"""The rendered single-host inventory, and the invariant behind it: no host of the real inventory
is ever in scope, and the VM always resolves to loopback."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest
import yaml

from harness import inventory, paths, proc
from harness.errors import HarnessError
from harness.inventory import LOOPBACK, RenderedInventory
from harness.ssh import Endpoint

VM = "boma-it-askari-c0ffee01"
GROUPS = ("offsite_hosts", "docker_hosts")


def endpoint(tmp_path: Path) -> Endpoint:
    return Endpoint(alias=VM, port=40022, user="ansible", key=tmp_path / "run" / "id_ed25519")


def render(tmp_path: Path, real: Path, *, vm: str = VM) -> RenderedInventory:
    return inventory.render(tmp_path / "inventory", vm=vm, groups=GROUPS, inventory_host="askari",
                            endpoint=endpoint(tmp_path), real_inventory=real)


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


@pytest.fixture
def fake_real(tmp_path: Path) -> Path:
    """A real-looking inventory whose askari host_vars and group_vars point at a public address."""
    root = tmp_path / "real"
    write(root / "hosts.yml", """\
        all:
          children:
            offsite_hosts:
              hosts:
                askari:
                  ansible_host: 203.0.113.7
            docker_hosts:
              hosts:
                askari: {}
                boma-it-impostor: {}
        """)
    write(root / "host_vars" / "askari.yml", """\
        ansible_host: 203.0.113.7
        ansible_port: 2222
        ansible_ssh_common_args: -o ProxyJump=bastion.example
        ansible_python_interpreter: /opt/python
        askari_site_colour: green
        """)
    write(root / "host_vars" / "askari" / "extra.yml", "askari_extra_var: 7\nansible_user: root\n")
    write(root / "group_vars" / "offsite_hosts" / "vars.yml", "offsite_var: offsite\n")
    # Group variables are linked as they are: the VM's own connection variables must beat them.
    write(root / "group_vars" / "docker_hosts.yml", "docker_var: docker\nansible_host: 198.51.100.1\n")
    write(root / "group_vars" / "all" / "vault.yml", "$ANSIBLE_VAULT;1.1;AES256\n6162636465\n")
    return root


def hosts_in(tree: object) -> set[str]:
    """Every host name anywhere in a hosts.yml tree."""
    found: set[str] = set()
    if isinstance(tree, dict):
        found.update((tree.get("hosts") or {}).keys())
        for value in tree.values():
            found |= hosts_in(value)
    return found


# -- the real production inventory --------------------------------------------------------------


def test_render_holds_only_the_vm_in_the_profiles_groups(tmp_path: Path) -> None:
    rendered = render(tmp_path, paths.PRODUCTION_INVENTORY)
    tree = yaml.safe_load((rendered.path / "hosts.yml").read_text(encoding="utf-8"))
    assert hosts_in(tree) == {VM}
    assert set(tree["all"]["children"]) == set(GROUPS)
    for group in GROUPS:
        assert list(tree["all"]["children"][group]["hosts"]) == [VM]
    inline = tree["all"]["children"][GROUPS[0]]["hosts"][VM]
    assert inline["ansible_host"] == LOOPBACK
    assert inline["ansible_port"] == 40022
    assert rendered.host == VM
    assert rendered.testinfra_spec == f"ansible://{VM}?ansible_inventory={rendered.path / 'hosts.yml'}"


def test_render_links_the_real_group_vars(tmp_path: Path) -> None:
    rendered = render(tmp_path, paths.PRODUCTION_INVENTORY)
    for name in ("all/reverse_proxy.yml", "offsite_hosts/vars.yml"):
        link = rendered.path / "group_vars" / name
        assert link.is_symlink()
        assert link.resolve() == (paths.PRODUCTION_INVENTORY / "group_vars" / name).resolve()
    # Not a vars file for Ansible, so not for the VM either.
    assert not (rendered.path / "group_vars" / "all" / "vault.yml.example").exists()


def test_connection_file_points_at_loopback(tmp_path: Path) -> None:
    rendered = render(tmp_path, paths.PRODUCTION_INVENTORY)
    conn = yaml.safe_load(rendered.connection_vars.read_text(encoding="utf-8"))
    assert conn["ansible_host"] == LOOPBACK
    assert conn["ansible_port"] == 40022
    assert conn["ansible_ssh_private_key_file"] == str(tmp_path / "run" / "id_ed25519")
    assert "StrictHostKeyChecking=no" in conn["ansible_ssh_common_args"]
    assert "IdentitiesOnly=yes" in conn["ansible_ssh_common_args"]


def test_rendered_real_inventory_is_isolated(tmp_path: Path) -> None:
    rendered = render(tmp_path, paths.PRODUCTION_INVENTORY)
    inventory.assert_isolated(rendered, paths.PRODUCTION_INVENTORY)


def test_rendering_leaves_the_real_inventory_untouched(tmp_path: Path) -> None:
    real = paths.PRODUCTION_INVENTORY
    before = {p: p.read_bytes() for p in real.rglob("*") if p.is_file()}
    render(tmp_path, real)
    assert {p: p.read_bytes() for p in real.rglob("*") if p.is_file()} == before


# -- the invariant ------------------------------------------------------------------------------


def test_real_hosts_reads_nested_groups() -> None:
    assert inventory.real_hosts(paths.PRODUCTION_INVENTORY) == {"askari", "ubongo"}


@pytest.mark.parametrize("vm", ["askari", "ubongo", "askari-test", "it-askari", ""])
def test_render_refuses_anything_but_a_test_vm_name(tmp_path: Path, vm: str) -> None:
    with pytest.raises(HarnessError, match="not a test VM name"):
        render(tmp_path, paths.PRODUCTION_INVENTORY, vm=vm)
    assert not (tmp_path / "inventory").exists()


def test_render_refuses_a_test_vm_name_that_is_a_real_host(tmp_path: Path, fake_real: Path) -> None:
    with pytest.raises(HarnessError, match="not a test VM name"):
        render(tmp_path, fake_real, vm="boma-it-impostor")
    assert not (tmp_path / "inventory").exists()


def test_real_connection_vars_never_reach_the_vm(tmp_path: Path, fake_real: Path) -> None:
    rendered = render(tmp_path, fake_real)
    host_vars = yaml.safe_load((rendered.path / "host_vars" / f"{VM}.yml").read_text(encoding="utf-8"))
    assert host_vars == {"askari_site_colour": "green", "askari_extra_var": 7}
    assert "203.0.113.7" not in "".join(
        p.read_text(encoding="utf-8") for p in rendered.path.rglob("*") if p.is_file())
    inventory.assert_isolated(rendered, fake_real)  # despite group_vars/docker_hosts.yml


def test_group_vars_files_and_folders_are_linked(tmp_path: Path, fake_real: Path) -> None:
    group_vars = render(tmp_path, fake_real).path / "group_vars"
    assert (group_vars / "offsite_hosts" / "vars.yml").is_symlink()
    assert (group_vars / "docker_hosts.yml").is_symlink()


def test_vault_files_are_never_linked_encrypted_or_not(tmp_path: Path, fake_real: Path) -> None:
    write(fake_real / "group_vars" / "offsite_hosts" / "vault.yml", "vault_gandi_pat: plaintext-secret\n")
    write(fake_real / "group_vars" / "docker_hosts" / "vault" / "tokens.yml", "token: plaintext-secret\n")
    group_vars = render(tmp_path, fake_real).path / "group_vars"
    for vault in (group_vars / "all" / "vault.yml", group_vars / "offsite_hosts" / "vault.yml",
                  group_vars / "docker_hosts" / "vault" / "tokens.yml"):
        assert not vault.exists() and not vault.is_symlink(), vault
    assert (group_vars / "offsite_hosts" / "vars.yml").is_symlink()


def test_vault_host_vars_are_never_copied(tmp_path: Path, fake_real: Path) -> None:
    write(fake_real / "host_vars" / "askari" / "vault.yml", "$ANSIBLE_VAULT;1.1;AES256\n6162\n")
    rendered = render(tmp_path, fake_real)
    text = (rendered.path / "host_vars" / f"{VM}.yml").read_text(encoding="utf-8")
    assert "ANSIBLE_VAULT" not in text


@pytest.mark.parametrize(
    "variable", ["ansible_ssh_extra_args", "ansible_sftp_extra_args", "ansible_scp_extra_args"])
def test_extra_args_from_group_vars_are_forced_empty(tmp_path: Path, fake_real: Path, variable: str) -> None:
    """A ProxyJump in production's group_vars must never reach a test run's ssh, sftp or scp."""
    write(fake_real / "group_vars" / "offsite_hosts" / "transfer.yml", f"{variable}: -o ProxyJump=askari\n")
    rendered = render(tmp_path, fake_real)
    conn = yaml.safe_load(rendered.connection_vars.read_text(encoding="utf-8"))
    assert conn[variable] == ""
    inventory.assert_isolated(rendered, fake_real)  # neutralised: the VM's own value wins
    listed = json.loads(proc.run(["ansible-inventory", "-i", str(rendered.path / "hosts.yml"), "--list"],
                                 quiet=True).stdout)
    assert listed["_meta"]["hostvars"][VM][variable] == ""


def test_a_second_host_in_the_rendered_inventory_is_refused(tmp_path: Path) -> None:
    rendered = render(tmp_path, paths.PRODUCTION_INVENTORY)
    hosts_file = rendered.path / "hosts.yml"
    tree = yaml.safe_load(hosts_file.read_text(encoding="utf-8"))
    tree["all"]["children"]["docker_hosts"]["hosts"]["askari"] = {"ansible_host": "77.42.120.136"}
    hosts_file.write_text(yaml.safe_dump(tree), encoding="utf-8")
    with pytest.raises(HarnessError, match="isolation violated") as caught:
        inventory.assert_isolated(rendered, paths.PRODUCTION_INVENTORY)
    assert "askari" in caught.value.message


def test_a_vm_that_resolves_elsewhere_is_refused(tmp_path: Path) -> None:
    rendered = render(tmp_path, paths.PRODUCTION_INVENTORY)
    hosts_file = rendered.path / "hosts.yml"
    text = hosts_file.read_text(encoding="utf-8")
    assert "ansible_host: 127.0.0.1" in text
    hosts_file.write_text(text.replace("ansible_host: 127.0.0.1", "ansible_host: 77.42.120.136"),
                          encoding="utf-8")
    with pytest.raises(HarnessError, match=r"resolves to '77\.42\.120\.136'"):
        inventory.assert_isolated(rendered, paths.PRODUCTION_INVENTORY)


def test_an_inherited_connection_variable_is_refused(tmp_path: Path, fake_real: Path) -> None:
    """group_vars are linked whole; one that changes how SSH runs (and that the harness does not
    set itself) must stop the run."""
    write(fake_real / "group_vars" / "offsite_hosts" / "ssh.yml",
          "ansible_ssh_executable: /usr/local/bin/ssh-via-askari\n")
    rendered = render(tmp_path, fake_real)
    with pytest.raises(HarnessError, match=r"inherits connection variable.*ansible_ssh_executable"):
        inventory.assert_isolated(rendered, fake_real)
