"""What a profile's playbook steps apply, read from the playbooks: host patterns, tags, imports."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from harness import plays
from harness.config import PlaybookStep
from harness.errors import BadInput


@pytest.mark.parametrize(
    ("pattern", "groups", "matches"),
    [
        ("all", ["control"], True),
        ("*", ["control"], True),
        ("control", ["control"], True),
        ("docker_hosts", ["control"], False),
        ("offsite_hosts,control", ["control"], True),
        ("offsite_hosts:control", ["control"], True),
        ("offsite_*", ["offsite_hosts"], True),
        ("~^off.*", ["offsite_hosts"], True),
        ("offsite_hosts:&docker_hosts", ["offsite_hosts"], False),
        ("offsite_hosts:&docker_hosts", ["offsite_hosts", "docker_hosts"], True),
        ("all:!control", ["control"], False),
        ("!control", ["offsite_hosts"], True),
        ("askari", ["offsite_hosts"], False),  # a real host's name never names the VM
        ("", ["control"], False),
    ],
)
def test_host_patterns(pattern: str, groups: list[str], matches: bool) -> None:
    assert plays.pattern_matches(pattern, groups) is matches


@pytest.mark.parametrize(
    ("raw", "extra_vars", "resolved"),
    [
        ("control", {}, "control"),
        (["a", "b"], {}, "a,b"),
        ("{{ workstation__hosts | default('control') }}", {}, "control"),
        ('{{ workstation__hosts|default("control") }}', {}, "control"),
        ("{{ workstation__hosts | default('control') }}", {"workstation__hosts": "localhost"}, "localhost"),
        ("{{ workstation__hosts | default('control') }}", {"workstation__hosts": ["x", "y"]}, "x,y"),
        ("{{ target }}", {"target": "edge"}, "edge"),
        ("{{ target }}", {}, None),  # undefined: Ansible fails the play; not ours to guess
        ("{{ groups | first }}", {}, None),
    ],
)
def test_hosts_expressions(raw: object, extra_vars: dict[str, object], resolved: str | None) -> None:
    assert plays.resolve_hosts(raw, extra_vars) == resolved


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text), encoding="utf-8")


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    write(tmp_path / "playbooks" / "main.yml", """\
        ---
        - name: Everyone
          hosts: all
          roles:
            - common
        - ansible.builtin.import_playbook: web.yml
          tags: [web]
        """)
    write(tmp_path / "playbooks" / "web.yml", """\
        ---
        - name: Web servers
          hosts: "{{ web__hosts | default('web') }}"
          roles:
            - role: proxy
              tags: [proxy]
          tasks:
            - name: Pull in the metrics role
              ansible.builtin.include_role:
                name: metrics
        - ansible.builtin.import_playbook: main.yml
        """)
    write(tmp_path / "roles" / "common" / "tasks" / "main.yml", """\
        ---
        - name: Firewall
          ansible.builtin.debug:
            msg: !unsafe '{{ not templated }}'
          tags: [firewall]
        """)
    write(tmp_path / "roles" / "proxy" / "meta" / "main.yml", "---\ndependencies:\n  - role: tls\n")
    for role in ("proxy", "tls"):
        tasks = f"---\n- name: {role}\n  ansible.builtin.debug:\n"
        write(tmp_path / "roles" / role / "tasks" / "main.yml", tasks)
    return tmp_path


def applied(repo: Path, steps: list[PlaybookStep], groups: list[str], **extra: object) -> frozenset[str]:
    return plays.roles_applied(steps, groups, playbooks_dir=repo / "playbooks", roles_dir=repo / "roles",
                               extra_vars=extra)


def test_imports_dependencies_and_included_roles(repo: Path) -> None:
    everything = {"common", "proxy", "tls", "metrics"}
    assert applied(repo, [PlaybookStep("main.yml")], ["web"]) == everything
    assert applied(repo, [PlaybookStep("main.yml")], ["db"]) == {"common"}
    assert applied(repo, [PlaybookStep("main.yml")], ["db"], web__hosts="db") == everything


def test_tags_select_roles_by_their_own_tags_and_their_tasks(repo: Path) -> None:
    assert applied(repo, [PlaybookStep("main.yml", ("proxy",))], ["web"]) == {"proxy", "tls"}
    assert applied(repo, [PlaybookStep("main.yml", ("firewall",))], ["web"]) == {"common"}
    # Tags on import_playbook reach every play it imports.
    assert applied(repo, [PlaybookStep("main.yml", ("web",))], ["web"]) == {"proxy", "tls", "metrics"}
    assert applied(repo, [PlaybookStep("main.yml", ("nothing",))], ["web"]) == set()


def test_a_playbook_that_is_not_a_list_of_plays_is_bad_input(repo: Path) -> None:
    write(repo / "playbooks" / "odd.yml", "---\nhosts: all\n")
    with pytest.raises(BadInput, match="a playbook must be a list of plays"):
        applied(repo, [PlaybookStep("odd.yml")], ["web"])
