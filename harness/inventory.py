"""The transient single-host inventory: only the VM, in the profile's groups, with the real
inventory's group_vars and host_vars behind it.

It is the one inventory of a run: ``ansible-playbook`` and testinfra both read it. The real
inventory is never edited, and no host of it can be in scope: the rendered inventory holds
only the VM, whose connection variables point at loopback and win over anything inherited.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from harness import config, proc
from harness.errors import HarnessError
from harness.ssh import Endpoint
from harness.virt import NAME_PREFIX

LOOPBACK = "127.0.0.1"
# Variables that decide where and how Ansible connects: inherited values are never trusted
# (Mitogen's too: a ``mitogen_via`` would route the connection through another host).
CONNECTION_VAR = re.compile(
    r"^(ansible_(host|port|user|connection|(ssh|sftp|scp)_.*|private_key_file|password|become_password|"
    r"python_interpreter)|mitogen_.*)$"
)
# Set to nothing in the connection overlay, which beats every inventory variable: extra
# arguments could carry a ProxyJump or a ProxyCommand to a real host.
FORCED_EMPTY = ("ansible_ssh_extra_args", "ansible_sftp_extra_args", "ansible_scp_extra_args")
VAULT_HEADER = "$ANSIBLE_VAULT"


@dataclass(frozen=True)
class RenderedInventory:
    path: Path  # the inventory directory (hosts.yml, group_vars/, host_vars/)
    host: str
    connection_vars: Path  # extra-vars file with the connection variables (highest precedence)

    @property
    def testinfra_spec(self) -> str:
        return f"ansible://{self.host}?ansible_inventory={self.path / 'hosts.yml'}"


def connection_vars(endpoint: Endpoint, *, ssh_compression: bool = True) -> dict[str, Any]:
    """``ssh_compression``: what Mitogen's connection does (harness.speed; Ansible's own ssh
    takes it from ``ANSIBLE_SSH_ARGS``, see harness.ansible.speed_env)."""
    return {
        "ansible_host": LOOPBACK,
        "ansible_port": endpoint.port,
        "ansible_user": endpoint.user,
        "ansible_connection": "ssh",
        "ansible_ssh_private_key_file": str(endpoint.key),
        "ansible_ssh_common_args": endpoint.multiplex_args(),
        "ansible_python_interpreter": "/usr/bin/python3",
        "mitogen_ssh_compression": ssh_compression,
        **dict.fromkeys(FORCED_EMPTY, ""),
    }


def real_hosts(real_inventory: Path) -> set[str]:
    """Every host name in the real inventory's YAML files (groups nest under ``children``),
    read as the profiles' ``inventory_host`` and ``groups`` are checked against it."""
    return set(config.inventory_names(real_inventory).hosts)


def _is_vault(path: Path) -> bool:
    """Encrypted, or named as a vault (a plaintext ``vault.yml`` holds secrets all the same)."""
    if path.stem.startswith("vault") or any(part.startswith("vault") for part in path.parent.parts[-1:]):
        return True
    with path.open("rb") as handle:
        return handle.read(len(VAULT_HEADER)).decode(errors="replace") == VAULT_HEADER


def _var_files(base: Path) -> Iterator[Path]:
    """``base.yml``/``base.yaml`` and every YAML file under the directory ``base``."""
    for suffix in (".yml", ".yaml"):
        if base.with_suffix(suffix).is_file():
            yield base.with_suffix(suffix)
    if base.is_dir():
        yield from sorted(p for p in base.rglob("*") if p.suffix in (".yml", ".yaml") and p.is_file())


def render(
    target: Path,
    *,
    vm: str,
    groups: tuple[str, ...],
    inventory_host: str,
    endpoint: Endpoint,
    real_inventory: Path,
    ssh_compression: bool = True,
) -> RenderedInventory:
    """Write the transient inventory for ``vm`` into ``target`` and return it."""
    if not vm.startswith(NAME_PREFIX) or vm in real_hosts(real_inventory):
        raise HarnessError(f"refusing to render an inventory for {vm!r}: not a test VM name")
    target.mkdir(parents=True, exist_ok=True)
    conn = connection_vars(endpoint, ssh_compression=ssh_compression)
    tree: dict[str, Any]
    if groups:
        first, *rest = groups
        tree = {"all": {"children": {first: {"hosts": {vm: conn}}}}}
        for group in rest:
            tree["all"]["children"][group] = {"hosts": {vm: None}}
    else:  # a scenario's client: no group, nothing of the real inventory behind it
        tree = {"all": {"hosts": {vm: conn}}}
    (target / "hosts.yml").write_text(
        "# Rendered by the boma harness for one test VM. Never edit; never commit.\n"
        + yaml.safe_dump(tree, sort_keys=False),
        encoding="utf-8",
    )
    conn_file = target / "connection.yml"
    conn_file.write_text(yaml.safe_dump(conn, sort_keys=True), encoding="utf-8")

    # group_vars: linked file by file, so vault files stay out: a test run's secrets come from
    # the environment into the run's own 0600 file, never from the production vault.
    group_dir = target / "group_vars"
    group_dir.mkdir(exist_ok=True)
    real_groups = real_inventory / "group_vars"
    for source in sorted(real_groups.rglob("*")) if real_groups.is_dir() and groups else []:
        if not source.is_file() or source.suffix not in (".yml", ".yaml"):
            continue
        if _is_vault(source):
            continue
        link = group_dir / source.relative_to(real_groups)
        link.parent.mkdir(parents=True, exist_ok=True)
        if not link.exists():
            link.symlink_to(source)

    # host_vars of the mirrored host, copied minus connection variables: host_vars files beat
    # inline inventory variables, so a real ansible_host there would otherwise win.
    merged: dict[str, Any] = {}
    for source in _var_files(real_inventory / "host_vars" / inventory_host) if inventory_host else []:
        if _is_vault(source):
            continue
        data = yaml.safe_load(source.read_text(encoding="utf-8")) or {}
        merged.update({k: v for k, v in data.items() if not CONNECTION_VAR.match(k)})
    host_dir = target / "host_vars"
    host_dir.mkdir(exist_ok=True)
    (host_dir / f"{vm}.yml").write_text(
        f"# host_vars of {inventory_host}, without connection variables\n"
        + yaml.safe_dump(merged, sort_keys=True),
        encoding="utf-8",
    )
    return RenderedInventory(path=target, host=vm, connection_vars=conn_file)


def assert_isolated(inventory: RenderedInventory, real_inventory: Path) -> None:
    """Ask Ansible itself what the rendered inventory resolves to, and refuse anything but the VM."""
    result = proc.run(
        ["ansible-inventory", "-i", str(inventory.path / "hosts.yml"), "--list"],
        quiet=True,
        env={"ANSIBLE_INVENTORY_UNPARSED_WARNING": "False"},
    )
    data = json.loads(result.stdout)
    hostvars: dict[str, dict[str, Any]] = data.get("_meta", {}).get("hostvars", {})
    hosts = set(hostvars)
    forbidden = hosts & real_hosts(real_inventory)
    if hosts != {inventory.host} or forbidden:
        raise HarnessError(f"inventory isolation violated: resolves to {sorted(hosts)}")
    resolved = hostvars[inventory.host]
    address = resolved.get("ansible_host")
    if address != LOOPBACK:
        raise HarnessError(f"inventory isolation violated: {inventory.host} resolves to {address!r}")
    # Linked group_vars are not filtered: a connection variable the harness did not set itself
    # (ansible_ssh_extra_args with a ProxyJump, say) would be inherited from production.
    ours = yaml.safe_load(inventory.connection_vars.read_text(encoding="utf-8")) or {}
    inherited = sorted(k for k, v in resolved.items() if CONNECTION_VAR.match(k) and ours.get(k) != v)
    if inherited:
        raise HarnessError(
            f"inventory isolation violated: {inventory.host} inherits connection "
            f"variable(s) {', '.join(inherited)} from the real inventory"
        )
