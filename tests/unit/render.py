"""Render the roles' templates with ansible-core's own templating engine, as the template module does.

Usage::

    variables = load_vars(role_defaults("reverse_proxy"), *group_vars(PRODUCTION, "all"),
                          role_vars("reverse_proxy"))
    text = render(role_template("reverse_proxy", "etc/caddy/Caddyfile.j2"), variables)

Variable files are read with Ansible's DataLoader, so their ``{{ }}`` values stay templates
(trusted, as Ansible trusts inventory and role files) and resolve lazily like in a play.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ansible.parsing.dataloader import DataLoader
from ansible.template import Templar, trust_as_template

REPO = Path(__file__).resolve().parents[2]
PRODUCTION = REPO / "inventories" / "production"

# Ansible's default `ansible_managed` string; fixed here so renders are reproducible.
ANSIBLE_MANAGED = "Ansible managed"


def role_defaults(role: str) -> Path:
    """The role's defaults/main.yml."""
    return REPO / "roles" / role / "defaults" / "main.yml"


def role_vars(role: str) -> Path:
    """The role's vars/main.yml: read after the inventory's vars, which it outranks in a play."""
    return REPO / "roles" / role / "vars" / "main.yml"


def role_template(role: str, relative: str) -> Path:
    """A template of the role, by its path under templates/."""
    return REPO / "roles" / role / "templates" / relative


def group_vars(inventory: Path, group: str) -> list[Path]:
    """The group's vars files, in the order Ansible reads them (a file, or a directory sorted)."""
    base = inventory / "group_vars"
    single = [base / f"{group}.yml", base / f"{group}.yaml"]
    directory = base / group
    nested = (
        sorted(p for p in directory.glob("*") if p.suffix in {".yml", ".yaml"}) if directory.is_dir() else []
    )
    return [p for p in single if p.is_file()] + nested


def load_vars(*files: Path, overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Merge variable files, later ones winning (top-level replace, like Ansible's default
    hash_behaviour), then ``overrides`` (what -e would give)."""
    loader = DataLoader()
    merged: dict[str, Any] = {}
    for file in files:
        data = loader.load_from_file(str(file), trusted_as_template=True)
        merged.update(data or {})
    merged.update(overrides or {})
    return merged


def render(template: Path, variables: Mapping[str, Any]) -> str:
    """The file the template module would write for ``variables``."""
    available = {"ansible_managed": ANSIBLE_MANAGED, **variables}
    templar = Templar(loader=DataLoader(), variables=available)
    source = trust_as_template(template.read_text(encoding="utf-8"))
    result = templar.template(source, escape_backslashes=False)
    return "" if result is None else str(result)
