"""Checks of roles/github_runner that need no network and no systemd.

The role cannot run here (no route to GitHub), so these tests render its
systemd unit with ansible-core's own Templar and the role's defaults, and read
its task files to prove the registration token is never logged.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from ansible.parsing.dataloader import DataLoader
from ansible.plugins.loader import init_plugin_loader
from ansible.template import Templar, trust_as_template

# What ansible-playbook does at start-up; without it lookups such as
# ansible.builtin.env are not found.
init_plugin_loader()

REPO = Path(__file__).resolve().parents[2]
ROLE = REPO / "roles" / "github_runner"
UNIT_TEMPLATE = ROLE / "templates" / "etc" / "systemd" / "system" / "actions-runner.service.j2"
INTEGRATION_WORKFLOW = REPO / ".github" / "workflows" / "integration.yml"

# Stands for a real registration token; must never show up in rendered output.
SENTINEL_TOKEN = "AABBCCSENTINELTOKEN0123456789"
REPO_URL = "https://github.com/example/boma"
# What references the secret: the variable, the environment lookup behind it,
# or config.sh's flag that carries it.
TOKEN_REFERENCE = re.compile(r"registration_token|lookup\([^)]*GITHUB_RUNNER_TOKEN|--token")

Unit = dict[str, list[tuple[str, str]]]


def load_role_file(relative: str) -> Any:
    # Ansible trusts a role's own files as templates when it loads them; do the same.
    return DataLoader().load_from_file(str(ROLE / relative), trusted_as_template=True)


def role_defaults() -> dict[str, Any]:
    return dict(load_role_file("defaults/main.yml"))


def templar(**overrides: Any) -> Templar:
    variables: dict[str, Any] = {
        **role_defaults(),
        "ansible_managed": "Ansible managed: do not edit",
        "inventory_hostname": "control",
        "github_runner__url": REPO_URL,
        "github_runner__registration_token": SENTINEL_TOKEN,
        **overrides,
    }
    return Templar(loader=DataLoader(), variables=variables)


def render_unit(**overrides: Any) -> str:
    source = trust_as_template(UNIT_TEMPLATE.read_text(encoding="utf-8"))
    rendered = templar(**overrides).template(source)
    assert isinstance(rendered, str)
    return rendered


def parse_unit(text: str) -> Unit:
    """Sections of a systemd unit as ordered (key, value) pairs; keys may repeat."""
    sections: Unit = {}
    current: list[tuple[str, str]] | None = None
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], [])
            continue
        assert current is not None, f"setting outside any section: {line!r}"
        key, sep, value = line.partition("=")
        assert sep, f"not a key=value line: {line!r}"
        current.append((key.strip(), value.strip()))
    return sections


def values(unit: Unit, section: str, key: str) -> list[str]:
    return [value for name, value in unit.get(section, []) if name == key]


def single(unit: Unit, section: str, key: str) -> str:
    found = values(unit, section, key)
    assert len(found) == 1, f"[{section}] {key}= appears {len(found)} times"
    return found[0]


def iter_tasks(
    tasks: list[dict[str, Any]] | None, inherited_no_log: bool = False
) -> Iterator[tuple[dict[str, Any], bool]]:
    """Every task, blocks flattened, with the no_log it ends up with."""
    for task in tasks or []:
        no_log = task.get("no_log", inherited_no_log)
        if "block" in task:
            for key in ("block", "rescue", "always"):
                yield from iter_tasks(task.get(key), no_log)
        else:
            yield task, no_log


def role_task_files() -> list[Path]:
    return sorted((ROLE / "tasks").glob("*.yml")) + sorted((ROLE / "handlers").glob("*.yml"))


@pytest.fixture(scope="module")
def unit() -> Unit:
    return parse_unit(render_unit())


def test_defaults_declare_every_input() -> None:
    defaults = role_defaults()
    for name in (
        "github_runner__version",
        "github_runner__sha256",
        "github_runner__url",
        "github_runner__labels",
        "github_runner__user",
        "github_runner__dir",
        "github_runner__registration_token",
    ):
        assert name in defaults, f"{name} missing from defaults/main.yml"
    assert defaults["github_runner__user"] == "gh-runner"
    assert defaults["github_runner__labels"] == ["self-hosted", "linux", "kvm"]
    assert {"libvirt", "kvm"} <= set(defaults["github_runner__groups"])


def test_token_default_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GITHUB_RUNNER_TOKEN", SENTINEL_TOKEN)
    t = Templar(loader=DataLoader(), variables=role_defaults())
    assert t.template(role_defaults()["github_runner__registration_token"]) == SENTINEL_TOKEN


def test_default_checksum_is_a_placeholder_the_role_refuses() -> None:
    inputs = load_role_file("tasks/inputs.yml")
    (check,) = [
        task for task in inputs if "github_runner__sha256" in str(task.get("ansible.builtin.assert", {}))
    ]
    conditions = check["ansible.builtin.assert"]["that"]

    def passes(sha256: str) -> bool:
        t = templar(github_runner__sha256=sha256)
        return all(t.evaluate_expression(condition) for condition in conditions)

    assert not passes(role_defaults()["github_runner__sha256"])
    assert not passes("not-a-checksum")
    assert passes("a" * 64)


def test_download_url_follows_the_version() -> None:
    url = templar(github_runner__version="9.8.7").template(role_defaults()["github_runner__archive_url"])
    assert (
        url
        == "https://github.com/actions/runner/releases/download/v9.8.7/actions-runner-linux-x64-9.8.7.tar.gz"
    )


def test_unit_starts_with_the_managed_header() -> None:
    first = render_unit().splitlines()[:3]
    assert all(line.startswith("#") for line in first)
    assert any("Ansible managed" in line for line in first)


def test_unit_runs_the_runner_as_its_own_user(unit: Unit) -> None:
    assert single(unit, "Service", "User") == "gh-runner"
    assert single(unit, "Service", "Group") == "gh-runner"
    assert set(single(unit, "Service", "SupplementaryGroups").split()) == {"libvirt", "kvm"}
    assert single(unit, "Service", "WorkingDirectory") == "/opt/actions-runner"
    assert single(unit, "Service", "ExecStart") == "/opt/actions-runner/run.sh"
    assert single(unit, "Service", "Restart") == "always"
    assert single(unit, "Install", "WantedBy") == "multi-user.target"
    assert "libvirtd.service" in single(unit, "Unit", "After").split()


def test_unit_shares_the_harness_directories(unit: Unit) -> None:
    assert values(unit, "Service", "Environment") == [
        "BOMA_CACHE_DIR=/var/cache/boma",
        "BOMA_RUNS_DIR=/var/lib/boma/runs",
    ]
    elsewhere = parse_unit(
        render_unit(integration_test__cache_dir="/srv/cache", integration_test__runs_dir="/srv/runs")
    )
    assert values(elsewhere, "Service", "Environment") == [
        "BOMA_CACHE_DIR=/srv/cache",
        "BOMA_RUNS_DIR=/srv/runs",
    ]


def test_unit_hardening_keeps_libvirt_and_kvm_reachable(unit: Unit) -> None:
    assert single(unit, "Service", "NoNewPrivileges") == "true"
    assert single(unit, "Service", "ProtectSystem") == "full"
    assert "AF_UNIX" in single(unit, "Service", "RestrictAddressFamilies").split()
    settings = {key for key, _ in unit["Service"]}
    # Each of these would cut the jobs off /dev/kvm or from libvirt's QEMU.
    for forbidden in (
        "PrivateDevices",
        "ProtectClock",
        "DeviceAllow",
        "DevicePolicy",
        "PrivateTmp",
        "PrivateNetwork",
    ):
        assert forbidden not in settings, f"{forbidden}= would break the harness"


def test_unit_can_allow_privilege_escalation() -> None:
    relaxed = parse_unit(render_unit(github_runner__no_new_privileges=False))
    assert single(relaxed, "Service", "NoNewPrivileges") == "false"


def test_unit_never_contains_the_token() -> None:
    assert SENTINEL_TOKEN not in render_unit()
    assert "token" not in render_unit().lower()


def test_registration_passes_labels_and_url_to_config_sh() -> None:
    register = load_role_file("tasks/register.yml")
    (task,) = [task for task in register if "config.sh" in str(task)]
    command = task["ansible.builtin.command"]
    argv = [templar().template(arg) for arg in command["argv"]]
    assert argv[0] == "/opt/actions-runner/config.sh"
    for flag in ("--unattended", "--replace"):
        assert flag in argv
    assert argv[argv.index("--url") + 1] == REPO_URL
    assert argv[argv.index("--labels") + 1] == "self-hosted,linux,kvm"
    assert argv[argv.index("--name") + 1] == "control"
    assert argv[argv.index("--token") + 1] == SENTINEL_TOKEN
    assert command["creates"] == "{{ github_runner__dir }}/.runner"
    # Labels and name are public; only the --token slot may carry the secret.
    assert [arg for arg in argv if SENTINEL_TOKEN in arg] == [SENTINEL_TOKEN]


def test_runner_is_named_after_the_host_not_the_inventory_alias() -> None:
    name = role_defaults()["github_runner__name"]
    assert (
        templar(ansible_facts={"hostname": "kilima"}, inventory_hostname="localhost").template(name)
        == "kilima"
    )
    assert templar().template(name) == "control"


def test_every_task_that_touches_the_token_has_no_log() -> None:
    touching = []
    for path in role_task_files():
        for task, no_log in iter_tasks(yaml.safe_load(path.read_text(encoding="utf-8"))):
            text = yaml.safe_dump(task)
            if TOKEN_REFERENCE.search(text):
                touching.append(task.get("name"))
                assert no_log is True, (
                    f"{path.name}: task {task.get('name')!r} uses the token without no_log: true"
                )
    # Guards against the test passing because it found nothing to check.
    assert "Register the runner" in touching


def test_argument_spec_hides_the_token() -> None:
    specs = yaml.safe_load((ROLE / "meta" / "argument_specs.yml").read_text(encoding="utf-8"))
    option = specs["argument_specs"]["main"]["options"]["github_runner__registration_token"]
    assert option["no_log"] is True


@pytest.mark.skipif(not INTEGRATION_WORKFLOW.exists(), reason="integration workflow not written yet")
def test_integration_workflow_asks_for_labels_the_runner_has() -> None:
    workflow = yaml.safe_load(INTEGRATION_WORKFLOW.read_text(encoding="utf-8"))
    labels = set(role_defaults()["github_runner__labels"])
    for name, job in workflow["jobs"].items():
        runs_on = job["runs-on"]
        wanted = {runs_on} if isinstance(runs_on, str) else set(runs_on)
        if "self-hosted" in wanted:
            assert wanted <= labels, f"job {name} asks for {sorted(wanted - labels)} that the runner lacks"
