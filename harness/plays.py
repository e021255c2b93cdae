"""Which roles a profile's playbook steps apply to the VM, read from the playbooks themselves.

The rendered inventory puts the VM in the profile's groups, so a play applies when its
``hosts:`` pattern matches one of those groups (or ``all``). What a run prepares (the Caddy
image, Pebble) follows from the answer, not from a second list kept by hand.

The answer is a safe over-approximation: a role behind a ``when:`` counts (its condition is
decided on the host), and so does a ``hosts:`` expression this module cannot resolve. Preparing
something a run does not use costs time; leaving out something it needs breaks the run.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

import yaml

from harness.errors import BadInput

ALL = "all"
# `{{ name }}` or `{{ name | default('value') }}`: how this repository's plays take their hosts
# from a variable (workstation.yml: bootstrap runs it with -e workstation__hosts=localhost).
_HOSTS_VAR = re.compile(
    r"^\s*\{\{\s*(?P<var>[A-Za-z_][A-Za-z0-9_]*)\s*"
    r"(?:\|\s*default\(\s*(?P<quote>['\"])(?P<default>[^'\"]*)(?P=quote)\s*\)\s*)?\}\}\s*$"
)
_IMPORT_PLAYBOOK = ("import_playbook", "ansible.builtin.import_playbook")
_ROLE_TASKS = (
    "include_role",
    "import_role",
    "ansible.builtin.include_role",
    "ansible.builtin.import_role",
)
_PLAY_TASK_LISTS = ("pre_tasks", "tasks", "post_tasks", "handlers")
# Tags that select a task whatever --tags says (`always`), or that --tags uses to mean "every".
_ALWAYS, _EVERY = "always", "all"


class Step(Protocol):
    """One playbook step of a profile (:class:`harness.config.PlaybookStep`)."""

    @property
    def playbook(self) -> str: ...

    @property
    def tags(self) -> tuple[str, ...]: ...


class _AnsibleLoader(yaml.SafeLoader):
    """A safe loader that reads Ansible's own tags (``!unsafe``, ``!vault``) as plain values:
    only the structure of plays and tasks matters here."""


def _untagged(loader: yaml.SafeLoader, _suffix: str, node: yaml.Node) -> object:
    if isinstance(node, yaml.MappingNode):
        return loader.construct_mapping(node)
    if isinstance(node, yaml.SequenceNode):
        return loader.construct_sequence(node)
    return loader.construct_scalar(node)  # type: ignore[arg-type]


_AnsibleLoader.add_multi_constructor("!", _untagged)


def _load(path: Path) -> Any:  # noqa: ANN401  (YAML of any shape; callers check it)
    try:
        return yaml.load(path.read_text(encoding="utf-8"), Loader=_AnsibleLoader)  # noqa: S506
    except (OSError, yaml.YAMLError) as exc:
        raise BadInput(f"{path}: cannot read it: {exc}".replace("\n", " ")) from exc


def _tags(node: Mapping[str, Any]) -> set[str]:
    raw = node.get("tags", [])
    return {str(t) for t in (raw if isinstance(raw, list) else [raw])}


def _walk(node: object) -> Iterator[Mapping[str, Any]]:
    """Every mapping in a YAML tree (tasks, blocks, their rescue and always lists)."""
    if isinstance(node, Mapping):
        yield node
        for value in node.values():
            yield from _walk(value)
    elif isinstance(node, list):
        for item in node:
            yield from _walk(item)


def _role_name(entry: object) -> str | None:
    if isinstance(entry, str):
        return entry
    if isinstance(entry, Mapping):
        name = entry.get("role", entry.get("name"))
        return str(name) if name else None
    return None


def resolve_hosts(raw: object, extra_vars: Mapping[str, Any]) -> str | None:
    """A play's ``hosts:`` as a plain pattern, or None when it is a Jinja expression this
    module cannot evaluate. A variable is looked up in ``extra_vars`` (the overlays), then in
    its ``default(...)``."""
    if isinstance(raw, list):
        return ",".join(str(item) for item in raw)
    text = str(raw)
    if "{{" not in text and "{%" not in text:
        return text
    match = _HOSTS_VAR.match(text)
    if match is None:
        return None
    value = extra_vars.get(match["var"])
    if value is None:
        return match["default"]
    if isinstance(value, list):
        return ",".join(str(item) for item in value)
    return None if "{{" in str(value) else str(value)


def pattern_matches(pattern: str, groups: Sequence[str]) -> bool:
    """Whether an Ansible host pattern (``a,b``, ``a:b``, ``a:&b``, ``a:!b``, wildcards) selects
    a host that is in ``groups`` (and so in ``all``)."""
    names = {ALL, *groups}

    def hit(term: str) -> bool:
        if term.startswith("~"):
            return any(re.match(term[1:], name) for name in names)
        return term == "*" or any(fnmatch.fnmatchcase(name, term) for name in names)

    terms = [t.strip() for t in re.split(r"[,:]", pattern) if t.strip()]
    if not terms:
        return False
    plain = [t for t in terms if t[0] not in "&!"]
    # Ansible reads a pattern that starts with an intersection or exclusion as `all` first.
    selected = any(hit(t) for t in plain) if plain else True
    selected = selected and all(hit(t[1:]) for t in terms if t.startswith("&"))
    return selected and not any(hit(t[1:]) for t in terms if t.startswith("!"))


class _Reader:
    """Walks playbooks and roles once per question; remembers each role's tags and includes."""

    def __init__(self, roles_dir: Path, groups: Sequence[str], extra_vars: Mapping[str, Any]) -> None:
        self.roles_dir = roles_dir
        self.groups = groups
        self.extra_vars = extra_vars
        self._role_info: dict[str, tuple[set[str], list[str]]] = {}

    def role_info(self, role: str) -> tuple[set[str], list[str]]:
        """The tags inside a role's task files, and the roles it pulls in (meta dependencies,
        include_role/import_role)."""
        if role not in self._role_info:
            self._role_info[role] = (set(), [])  # a dependency cycle ends here
            root = self.roles_dir / role
            tags: set[str] = set()
            pulled: list[str] = []
            meta = root / "meta" / "main.yml"
            meta_data = _load(meta) if meta.is_file() else None
            if isinstance(meta_data, Mapping):
                pulled += [n for d in meta_data.get("dependencies") or [] if (n := _role_name(d))]
            for file in sorted((root / "tasks").rglob("*.y*ml")) if (root / "tasks").is_dir() else []:
                for node in _walk(_load(file)):
                    tags |= _tags(node)
                    pulled += [n for key in _ROLE_TASKS if (n := _role_name(node.get(key)))]
            self._role_info[role] = (tags, pulled)
        return self._role_info[role]

    def expand(self, role: str, seen: set[str]) -> set[str]:
        """A role and every role it pulls in, transitively."""
        if role in seen:
            return set()
        seen.add(role)
        found = {role}
        for other in self.role_info(role)[1]:
            found |= self.expand(other, seen)
        return found

    def selected(self, role: str, outer_tags: set[str], wanted: tuple[str, ...]) -> bool:
        """Whether ``--tags wanted`` runs anything of ``role`` (no tags: everything runs)."""
        if not wanted or _EVERY in wanted:
            return True
        tags = outer_tags | self.role_info(role)[0]
        return _ALWAYS in tags or bool(tags & set(wanted))

    def playbook(self, path: Path, step: Step, inherited: set[str], seen: set[Path]) -> set[str]:
        if path.resolve() in seen:
            return set()
        seen = seen | {path.resolve()}
        plays = _load(path)
        if not isinstance(plays, list):
            raise BadInput(f"{path}: a playbook must be a list of plays")
        roles: set[str] = set()
        for play in plays:
            if not isinstance(play, Mapping):
                continue
            tags = inherited | _tags(play)
            imported = next((play[key] for key in _IMPORT_PLAYBOOK if key in play), None)
            if imported is not None:
                roles |= self.playbook(path.parent / str(imported), step, tags, seen)
                continue
            pattern = resolve_hosts(play.get("hosts", ""), self.extra_vars)
            if pattern is not None and not pattern_matches(pattern, self.groups):
                continue
            entries = [
                (e, tags | _tags(e) if isinstance(e, Mapping) else tags) for e in play.get("roles") or []
            ]
            for key in _PLAY_TASK_LISTS:
                for node in _walk(play.get(key) or []):
                    entries += [(node.get(k), tags | _tags(node)) for k in _ROLE_TASKS if k in node]
            for entry, entry_tags in entries:
                name = _role_name(entry)
                if name is None:
                    continue
                for role in self.expand(name, set()):
                    if self.selected(role, entry_tags, step.tags):
                        roles.add(role)
        return roles


def roles_applied(
    steps: Sequence[Step],
    groups: Sequence[str],
    *,
    playbooks_dir: Path,
    roles_dir: Path,
    extra_vars: Mapping[str, Any] | None = None,
) -> frozenset[str]:
    """Every role the steps' plays may apply to a host in ``groups``, with the overlays'
    variables (``extra_vars``) deciding variable ``hosts:`` patterns."""
    reader = _Reader(roles_dir, groups, extra_vars or {})
    found: set[str] = set()
    for step in steps:
        found |= reader.playbook(playbooks_dir / step.playbook, step, set(), set())
    return frozenset(found)
