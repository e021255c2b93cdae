"""The roles ask apt only for what dpkg does not report installed (roles/base/tasks/packages.yml,
roles/docker_host/tasks/main.yml). The expressions are the task files' own, evaluated with
ansible-core's templar against what dpkg-query prints."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from ansible.parsing.dataloader import DataLoader
from ansible.template import Templar, trust_as_template

from tests.unit.render import REPO

# (task file, the query task's register, the apt task's name, its missing-list variable, wanted)
ROLES = [
    ("roles/base/tasks/packages.yml", "base__packages_installed", "Install the baseline packages",
     "base__packages_missing",
     {"base__packages": ["ca-certificates", "python3-apt"], "base__extra_packages": ["jq"]}),
    ("roles/docker_host/tasks/main.yml", "docker_host__packages_installed", "Install Docker",
     "docker_host__packages_missing", {"docker_host__packages": ["docker.io", "python3-apt"]}),
]


def tasks(file: str) -> list[dict[str, Any]]:
    return DataLoader().load_from_file(str(REPO / file), trusted_as_template=True)


def named(file: str, name: str) -> dict[str, Any]:
    return next(task for task in tasks(file) if task.get("name") == name)


def evaluate(expression: str, variables: dict[str, Any]) -> Any:
    return Templar(loader=DataLoader(), variables=variables).template(trust_as_template(expression))


def condition(expression: str, variables: dict[str, Any]) -> Any:
    """A ``when`` or ``failed_when``, evaluated as Ansible evaluates one."""
    return evaluate("{{ " + expression + " }}", variables)


def missing(file: str, register: str, apt_task: str, var: str, wanted: dict[str, Any],
            stdout: str) -> list[str]:
    task = named(file, apt_task)
    variables = {**wanted, register: {"rc": 1, "stdout_lines": stdout.splitlines()}}
    result = evaluate(str(task["vars"][var]), variables)
    assert condition(task["when"], {**variables, var: result}) == bool(result)
    return sorted(result)  # apt takes them in any order; Ansible's difference keeps none


@pytest.mark.parametrize(("file", "register", "apt_task", "var", "wanted"), ROLES)
def test_only_what_dpkg_does_not_report_installed_goes_to_apt(file, register, apt_task, var, wanted) -> None:
    names = sorted(name for value in wanted.values() for name in value)
    first, *rest = names
    # All installed: the apt task is skipped.
    assert missing(file, register, apt_task, var, wanted, "\n".join(f"{n} installed" for n in names)) == []
    # One unknown to dpkg (dpkg-query prints nothing for it) and one half-configured go to
    # apt; the installed ones do not. A package removed with its config left goes too.
    stdout = f"{rest[0]} half-configured\n" + "\n".join(f"{n} installed" for n in rest[1:])
    assert missing(file, register, apt_task, var, wanted, stdout) == sorted([first, rest[0]])
    assert missing(file, register, apt_task, var, wanted, f"{first} config-files") == names


@pytest.mark.parametrize(("file", "register", "apt_task", "var", "wanted"), ROLES)
def test_the_query_fails_only_when_dpkg_query_broke(file, register, apt_task, var, wanted) -> None:
    query = next(task for task in tasks(file) if task.get("register") == register)
    argv = evaluate(str(query["ansible.builtin.command"]["argv"]), wanted)
    assert argv[:2] == ["dpkg-query", "--show"]
    assert argv[3:] == [name for value in wanted.values() for name in value]
    for rc, fails in ((0, False), (1, False), (2, True)):
        assert condition(query["failed_when"], {register: {"rc": rc}}) is fails
    assert query["changed_when"] is False and query["check_mode"] is False


def test_nftables_goes_to_apt_unless_dpkg_reports_it_installed() -> None:
    file = "roles/base/tasks/firewall.yml"
    task = named(file, "Install nftables")
    for status, runs in (("installed", False), ("half-configured", True), ("", True)):
        assert condition(task["when"], {"base__nftables_status": {"stdout": status}}) is runs
    assert "nftables" in Path(REPO / file).read_text(encoding="utf-8")
