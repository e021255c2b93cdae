"""A play that skips fact gathering must not apply a role that reads facts.

``gather_facts: false`` saves each play ~10 s under emulation (and on the real hosts, a few),
but a role that reads ``ansible_facts`` under such a play would find them undefined on a real
host while a test that gathered them elsewhere passed. So every role such a play applies, and
every role those depend on, is read here for facts, old-style fact names included.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from harness import paths

REPO = paths.REPO
PLAYBOOKS = sorted(paths.PLAYBOOKS_DIR.glob("*.yml"))
# ansible_facts, and the names Ansible injects for them (INJECT_FACTS_AS_VARS): any use is a read.
FACT_READ = re.compile(
    r"\bansible_facts\b|\bansible_(?:distribution\w*|os_family|default_ipv[46]|all_ipv[46]_addresses"
    r"|hostname|fqdn|nodename|domain|pkg_mgr|service_mgr|architecture|machine\w*|kernel\w*"
    r"|interfaces|memtotal_mb|memory_mb|processor\w*|lsb|env|date_time|mounts|system\w*"
    r"|virtualization_\w+|selinux|apparmor|python|dns|user_\w+|local)\b"
)
# Modules that read facts themselves (or gather them) when the play did not.
FACT_MODULES = re.compile(r"^\s*(?:ansible\.builtin\.)?(?:package|service|setup|gather_facts):", re.M)


def role_files(role: str) -> Iterator[Path]:
    yield from (p for p in (REPO / "roles" / role).rglob("*") if p.is_file() and p.suffix in {".yml", ".j2"})


def role_closure(role: str) -> set[str]:
    """``role`` and every role its meta/main.yml depends on, recursively."""
    seen, todo = set(), [role]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        meta = REPO / "roles" / name / "meta" / "main.yml"
        if meta.is_file():
            for dep in (yaml.safe_load(meta.read_text(encoding="utf-8")) or {}).get("dependencies") or []:
                todo.append(dep["role"] if isinstance(dep, dict) else dep)
    return seen


def factless_plays() -> Iterator[tuple[str, str, list[str]]]:
    for playbook in PLAYBOOKS:
        for play in yaml.safe_load(playbook.read_text(encoding="utf-8")) or []:
            if isinstance(play, dict) and play.get("gather_facts") is False:
                roles = [r["role"] if isinstance(r, dict) else r for r in play.get("roles") or []]
                yield playbook.name, play.get("name", "?"), roles


def test_the_plays_that_skip_facts_are_the_ones_expected() -> None:
    assert {(book, name) for book, name, _ in factless_plays()} == {
        ("site.yml", "Apply the baseline"),
        ("site.yml", "Set up the Docker hosts"),
        ("offsite.yml", "Run the offsite reverse proxy"),
    }


@pytest.mark.parametrize(("playbook", "play", "roles"), list(factless_plays()), ids=str)
def test_no_role_under_a_factless_play_reads_facts(playbook: str, play: str, roles: list[str]) -> None:
    readers = []
    for role in sorted(set().union(*(role_closure(r) for r in roles))):
        for path in role_files(role):
            text = path.read_text(encoding="utf-8")
            for match in (*FACT_READ.finditer(text), *FACT_MODULES.finditer(text)):
                line = text.count("\n", 0, match.start()) + 1
                readers.append(f"{path.relative_to(REPO)}:{line}: {match.group(0).strip()}")
    assert not readers, f"{playbook} / {play} skips facts, but its roles read them: {readers}"


def test_the_check_sees_a_fact_read() -> None:
    """The pattern is not blind: the reads a role would write are found."""
    for text in (
        "{{ ansible_facts['distribution'] }}",
        "{{ ansible_distribution_release }}",
        "when: ansible_os_family == 'Debian'",
        "{{ ansible_default_ipv4.address }}",
    ):
        assert FACT_READ.search(text), text
    assert FACT_MODULES.search("- name: x\n  ansible.builtin.service:\n    name: y\n")
    for text in ("{{ ansible_managed }}", "{{ ansible_check_mode }}", "ansible_host", "ansible_version"):
        assert not FACT_READ.search(text), text
