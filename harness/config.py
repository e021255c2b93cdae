"""Host profiles (``profiles/<host>.yml``) and cert tiers (``certs/<tier>.yml``), validated.

One schema for both, used by the harness, by the nox matrix (:mod:`harness.matrix`) and by the
unit tests: pydantic models for the shape, whose validators also check what each value names
(playbooks, overrides, suites, tiers, and groups and hosts of ``inventories/production``),
then the rules between the keys of a tier. pydantic rather than jsonschema because its
validators run Python against the repository in the same pass as the shape, and every error
comes back at once with its location, which is what a message needs to name the key.

Everything here is pure: it reads YAML and returns frozen dataclasses, or raises
:class:`BadInput` (:class:`InvalidFile` for a file that does not validate) naming the file,
and every problem in it with its key path, one per line:
``profiles/x.yml: published_ports[1].guest: must be 1..65535``. Nothing is created on a bad
input.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
import typing
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path, PurePosixPath
from typing import Annotated, Any, Literal, TypeVar

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, ValidationInfo
from pydantic_core import ErrorDetails, PydanticCustomError

from harness import packagelayer, paths, plays
from harness.errors import BadInput
from harness.image.recipe import PACKAGE_NAME

NAME_RE = re.compile(r"^[a-z][a-z0-9-]{0,30}$")
TIER_META_KEY = "boma_tier"
TIER_VAR_PREFIX = "reverse_proxy__"
# The role that runs Caddy: a run builds the Caddy image, and a tier may run Pebble as its ACME
# CA, only for a profile whose steps apply it.
CADDY_ROLE = "reverse_proxy"
# Pebble validates HTTP-01 and TLS-ALPN-01 through the loopback forwards of these guest ports.
PEBBLE_GUEST_PORTS = frozenset({80, 443})
# Groups every inventory has: a profile names the groups its host is put in, never these.
IMPLICIT_GROUPS = frozenset({"all", "ungrouped"})


class Need(StrEnum):
    """What a tier needs from the controller beyond this repository."""

    INTERNET = "internet"
    GANDI_TOKEN = "gandi_token"  # noqa: S105  (the name of a need, not a secret)


@dataclass(frozen=True)
class PlaybookStep:
    playbook: str
    tags: tuple[str, ...] = ()


@dataclass(frozen=True)
class PublishedPort:
    name: str
    guest: int
    sni: str | None = None  # host name to present when probing a TLS port from the controller


@dataclass(frozen=True)
class Allowance:
    """A difference the profile expects, and why: a task that changes on every run (matched
    on ``play``/``role``/``task`` by :func:`fnmatch.fnmatchcase`), or a state path that the
    reboot is expected to change (see :mod:`harness.statediff`)."""

    pattern: str
    reason: str


class Kind(StrEnum):
    """What a profile's machine is."""

    HOST = "host"  # mirrors a host of the real inventory: its groups, its playbooks, its suite
    # A test-only machine that mirrors no real host and is applied nothing: a scenario's
    # client, probing the hosts from outside as the internet does (scenarios/).
    CLIENT = "client"


@dataclass(frozen=True)
class Profile:
    name: str
    path: Path
    description: str
    inventory_host: str
    groups: tuple[str, ...]
    steps: tuple[PlaybookStep, ...]
    overrides: tuple[Path, ...]
    published_ports: tuple[PublishedPort, ...]
    cert_tiers: tuple[str, ...]
    suite: Path | None  # None for a client: a scenario's suites judge it
    memory_mib: int
    vcpus: int
    # Tasks allowed to report "changed" when the steps are applied again after the reboot.
    idempotence_allow: tuple[Allowance, ...] = ()
    # State paths allowed to differ across the reboot.
    reboot_diff_allow: tuple[Allowance, ...] = ()
    # Packages installed into this profile's golden image at build time (harness.packagelayer).
    package_layer: tuple[str, ...] = ()
    kind: Kind = Kind.HOST

    @property
    def is_client(self) -> bool:
        return self.kind is Kind.CLIENT

    @property
    def needs_caddy(self) -> bool:
        """Whether the steps apply the reverse proxy (and so need its image, and may take a
        Pebble tier)."""
        return CADDY_ROLE in roles_applied(self)


@dataclass(frozen=True)
class CertTier:
    name: str
    path: Path
    description: str
    needs: tuple[Need, ...]
    on_demand: bool
    issuer_contains: str | None
    pebble: bool
    variables: dict[str, Any]


@dataclass(frozen=True)
class Layout:
    """Where a profile's names point: the repository's folders (another repository's in a
    test, or the nox matrix of a copy)."""

    root: Path
    profiles: Path
    certs: Path
    playbooks: Path
    overrides: Path
    suites: Path
    inventory: Path
    roles: Path

    @classmethod
    def current(cls) -> Layout:
        """This repository, as :mod:`harness.paths` says now (tests may point it elsewhere)."""
        return cls(
            root=paths.REPO,
            profiles=paths.PROFILES_DIR,
            certs=paths.CERTS_DIR,
            playbooks=paths.PLAYBOOKS_DIR,
            overrides=paths.OVERRIDES_DIR,
            suites=paths.SUITES_DIR,
            inventory=paths.PRODUCTION_INVENTORY,
            roles=paths.REPO / "roles",
        )

    @classmethod
    def of(cls, repo: Path) -> Layout:
        """The folders of the repository at ``repo``, laid out as this one."""
        return cls(
            root=repo,
            profiles=repo / "profiles",
            certs=repo / "certs",
            playbooks=repo / "playbooks",
            overrides=repo / "tests" / "integration" / "overrides",
            suites=repo / "tests" / "integration",
            inventory=repo / "inventories" / "production",
            roles=repo / "roles",
        )

    def show(self, path: Path) -> str:
        """``path`` as a message names it: relative to the repository when inside it."""
        try:
            return str(path.relative_to(self.root))
        except ValueError:
            return str(path)


class InvalidFile(BadInput):
    """A profile or tier file that does not validate: every problem, each with its key path."""

    def __init__(self, path: Path, shown: str, problems: Sequence[str]) -> None:
        self.path = path
        self.problems = tuple(f"{shown}: {problem}" for problem in problems)
        if len(self.problems) == 1:
            message = self.problems[0]
        else:
            message = f"{shown}: {len(self.problems)} errors\n" + "\n".join(f"  {p}" for p in self.problems)
        super().__init__(message)


# -- reading -------------------------------------------------------------------------------------


class _UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML keeps the last of two equal keys; a profile that says ``cert_tiers`` twice
    would lose one without a word. Refused instead."""


def _construct_mapping(loader: yaml.SafeLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=True)
        try:
            duplicate = key in seen
            seen.add(key)
        except TypeError:  # an unhashable key: construct_mapping says so itself
            continue
        if duplicate:
            raise yaml.constructor.ConstructorError(
                None, None, f"key {key!r} appears twice", key_node.start_mark
            )
    return loader.construct_mapping(node, deep=True)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def _load_yaml(path: Path, shown: str) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidFile(path, shown, [f"cannot read it: {exc}"]) from exc
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506  (a SafeLoader)
    except yaml.YAMLError as exc:
        raise InvalidFile(path, shown, [" ".join(f"malformed YAML: {exc}".split())]) from exc
    if not isinstance(data, dict):
        raise InvalidFile(path, shown, [f"expected a mapping at the top level, got {type(data).__name__}"])
    return data


def _names(directory: Path) -> list[str]:
    return sorted(p.stem for p in directory.glob("*.yml"))


def profile_names(directory: Path | None = None) -> list[str]:
    return _names(directory or paths.PROFILES_DIR)


def tier_names(directory: Path | None = None) -> list[str]:
    return _names(directory or paths.CERTS_DIR)


@dataclass(frozen=True)
class InventoryNames:
    """The host and group names of a real inventory's YAML files."""

    hosts: frozenset[str]
    groups: frozenset[str]  # every group but the implicit ``all`` and ``ungrouped``


def inventory_names(real_inventory: Path) -> InventoryNames:
    """Every host and group in the real inventory's YAML files (groups nest under ``children``)."""
    hosts: set[str] = set()
    groups: set[str] = set()

    def walk(name: str, group: object) -> None:
        groups.add(name)
        if not isinstance(group, dict):
            return
        members, children = group.get("hosts"), group.get("children")
        hosts.update(members if isinstance(members, dict) else {})
        for child, sub in (children if isinstance(children, dict) else {}).items():
            walk(child, sub)

    for file in sorted(real_inventory.glob("*.y*ml")):
        try:
            data = yaml.safe_load(file.read_text(encoding="utf-8")) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise BadInput(f"{file}: cannot read the inventory: {exc}".replace("\n", " ")) from exc
        for name, group in data.items() if isinstance(data, dict) else ():
            walk(name, group)
    return InventoryNames(hosts=frozenset(hosts), groups=frozenset(groups - IMPLICIT_GROUPS))


def _check_name(kind: str, name: str, known: list[str], directory: Path, layout: Layout) -> None:
    if name not in known:
        raise BadInput(
            f"unknown {kind} {name!r}",
            hint=f"known {kind}s: {', '.join(n for n in known if NAME_RE.match(n)) or '(none)'}",
        )
    if not NAME_RE.match(name):
        path = directory / f"{name}.yml"
        raise InvalidFile(path, layout.show(path), [f"the name must match {NAME_RE.pattern}"])


# -- the schema -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Context:
    """What the validators check names against (pydantic's validation context)."""

    layout: Layout
    name: str  # the profile's, from its file name
    tiers: tuple[str, ...]
    inventory: InventoryNames
    defaulted: frozenset[str]  # keys the file leaves out, filled in from its name


def _context(info: ValidationInfo) -> _Context:
    context = info.context
    if not isinstance(context, _Context):  # pragma: no cover  (only this module validates)
        raise TypeError("the profile schema validates with a _Context")
    return context


def _problem(message: str) -> PydanticCustomError:
    """An error of ours, in our words (without a context, pydantic formats nothing in it)."""
    return PydanticCustomError("boma", message)


def _inside(kind: str, base: Path, layout: Layout, value: str) -> Path:
    """``base/value``, refused unless ``value`` is a relative path that stays inside ``base``."""
    relative = PurePosixPath(value)
    if not value or relative.is_absolute() or ".." in relative.parts:
        raise _problem(f"must name a {kind} inside {layout.show(base)}/, not {value!r}")
    return base / value


def _playbook(value: str, info: ValidationInfo) -> str:
    layout = _context(info).layout
    if not _inside("playbook", layout.playbooks, layout, value).is_file():
        raise _problem(f"playbook {value!r} not found in {layout.show(layout.playbooks)}/")
    return value


def _override(value: str, info: ValidationInfo) -> str:
    layout = _context(info).layout
    file = _inside("file", layout.overrides, layout, value)
    if not file.is_file():
        raise _problem(f"override file {layout.show(file)} not found")
    try:
        _read_override(file)
    except BadInput as exc:
        raise _problem(exc.message) from exc
    return value


def _suite(value: str, info: ValidationInfo) -> str:
    context = _context(info)
    layout = context.layout
    suite = _inside("folder", layout.suites, layout, value)
    if not suite.is_dir():
        default = " (suite defaults to the profile's name)" if "suite" in context.defaulted else ""
        raise _problem(f"test suite {layout.show(suite)} not found{default}")
    return value


def _tier(value: str, info: ValidationInfo) -> str:
    context = _context(info)
    if value not in context.tiers:
        raise _problem(
            f"cert tier {value!r} has no file in {context.layout.show(context.layout.certs)}/ "
            f"(known tiers: {', '.join(context.tiers) or '(none)'})"
        )
    return value


def _group(value: str, info: ValidationInfo) -> str:
    context = _context(info)
    known = context.inventory.groups
    if value not in known:
        raise _problem(
            f"{value!r} is not a group of {context.layout.show(context.layout.inventory)} "
            f"(known groups: {', '.join(sorted(known)) or '(none)'})"
        )
    return value


def _host(value: str, info: ValidationInfo) -> str:
    context = _context(info)
    known = context.inventory.hosts
    if value not in known:
        default = (
            " (inventory_host defaults to the profile's name)"
            if "inventory_host" in context.defaulted
            else ""
        )
        raise _problem(
            f"{value!r} is not a host of {context.layout.show(context.layout.inventory)}{default} "
            f"(known hosts: {', '.join(sorted(known)) or '(none)'})"
        )
    return value


def _layer_package(value: str, info: ValidationInfo) -> str:
    layout = _context(info).layout
    if not PACKAGE_NAME.match(value):
        raise _problem(f"{value!r} is not a Debian package name")
    if value not in packagelayer.installable(layout.roles, layout.inventory):
        raise _problem(
            f"{value!r} is installed by no role and listed by no inventory variable: the layer "
            "may only hold what the roles install anyway, or it would hide a missing install"
        )
    return value


def _between(low: int, high: int) -> Callable[[int], int]:
    def check(value: int) -> int:
        if not low <= value <= high:
            raise _problem(f"must be {low}..{high}")
        return value

    return check


def _stripped(value: str) -> str:
    if not value.strip():
        raise _problem("must not be empty")
    return value.strip()


def _collapsed(value: str) -> str:
    return " ".join(_stripped(value).split())


def _unique(what: str | None = None) -> Callable[[list[Any]], list[Any]]:
    """Refuse a list that names the same thing twice (``what``: the attribute that names it)."""

    def check(values: list[Any]) -> list[Any]:
        keys = [getattr(v, what) if what else v for v in values]
        twice = sorted({repr(k) for k in keys if keys.count(k) > 1})
        if twice:
            label = f"{what} " if what else ""
            raise _problem(f"{label}{', '.join(twice)} listed more than once")
        return values

    return check


_Pattern = Annotated[str, AfterValidator(_stripped)]
_Reason = Annotated[str, AfterValidator(_collapsed)]
# YAML's own spellings of true (yes, On, ...) and a quoted 'true': a tier must never take an
# on-demand spelling for false and slip into the default matrix.
_LaxBool = Annotated[bool, Field(strict=False)]


class _Schema(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class _Step(_Schema):
    playbook: Annotated[str, AfterValidator(_playbook)]
    tags: list[str] = []


class _Port(_Schema):
    name: Annotated[str, AfterValidator(_stripped)]
    guest: Annotated[int, AfterValidator(_between(1, 65535))]
    sni: str | None = None


class _TaskAllowance(_Schema):
    task: _Pattern
    reason: _Reason


class _PathAllowance(_Schema):
    path: _Pattern
    reason: _Reason


class _ProfileFile(_Schema):
    kind: Literal["host"] = "host"
    description: str = ""
    inventory_host: Annotated[str, AfterValidator(_host)]
    groups: Annotated[
        list[Annotated[str, AfterValidator(_group)]], Field(min_length=1), AfterValidator(_unique())
    ]
    steps: Annotated[list[_Step], Field(min_length=1)]
    overrides: list[Annotated[str, AfterValidator(_override)]] = []
    published_ports: Annotated[
        list[_Port], AfterValidator(_unique("name")), AfterValidator(_unique("guest"))
    ] = []
    cert_tiers: Annotated[list[Annotated[str, AfterValidator(_tier)]], AfterValidator(_unique())] = []
    suite: Annotated[str, AfterValidator(_suite)]
    memory_mib: Annotated[int, AfterValidator(_between(512, 65536))] = 2048
    vcpus: Annotated[int, AfterValidator(_between(1, 64))] = 2
    idempotence_allow: list[_TaskAllowance] = []
    reboot_diff_allow: list[_PathAllowance] = []
    package_layer: Annotated[
        list[Annotated[str, AfterValidator(_layer_package)]], AfterValidator(_unique())
    ] = []


class _ClientFile(_Schema):
    """A client profile: no inventory host, groups, steps, overrides or suite of its own."""

    kind: Literal["client"]
    description: str = ""
    memory_mib: Annotated[int, AfterValidator(_between(512, 65536))] = 1024
    vcpus: Annotated[int, AfterValidator(_between(1, 64))] = 1


class _TierMeta(_Schema):
    description: str = ""
    needs: list[Annotated[Need, Field(strict=False)]] = []
    on_demand: _LaxBool = False
    issuer_contains: str | None = None
    pebble: _LaxBool = False


class _TierFile(_Schema):
    # Every other top-level key is a variable of the reverse_proxy role, checked against its
    # defaults below.
    model_config = ConfigDict(extra="allow")

    boma_tier: _TierMeta


_SHAPES = {
    "missing": "required",
    "list_type": "must be a list",
    "string_type": "must be a string",
    "int_type": "must be an integer",
    "bool_type": "must be true or false",
    "bool_parsing": "must be true or false",
    "model_type": "must be a mapping",
    "model_attributes_type": "must be a mapping",
    "dict_type": "must be a mapping",
    "too_short": "must not be empty",
    "invalid_key": "keys must be strings",
}


def _key_path(loc: Iterable[int | str]) -> str:
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def _model_at(model: type[BaseModel], loc: Sequence[int | str]) -> type[BaseModel] | None:
    """The schema class that holds the key at ``loc`` (list indices skipped)."""
    for part in loc:
        if isinstance(part, int):
            continue
        field = model.model_fields.get(part)
        inner = _inner_model(field.annotation) if field else None
        if inner is None:
            return None
        model = inner
    return model


def _inner_model(annotation: object) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in typing.get_args(annotation):
        if found := _inner_model(arg):
            return found
    return None


def _describe(error: ErrorDetails, schema: type[BaseModel]) -> str:
    """One pydantic error as ``key.path: what is wrong``."""
    loc = error["loc"]
    kind = error["type"]
    if kind == "boma":
        what = error["msg"]
    elif kind == "extra_forbidden":
        holder = _model_at(schema, loc[:-1])
        known = sorted(holder.model_fields) if holder else []
        close = difflib.get_close_matches(str(loc[-1]), known, n=1)
        what = (
            f"unknown key; did you mean {close[0]!r}?"
            if close
            else f"unknown key (known: {', '.join(known)})"
        )
    elif kind == "literal_error" and loc == ("kind",):
        what = f"must be one of {', '.join(k.value for k in Kind)}, not {error['input']!r}"
    elif kind == "enum":
        what = f"must be one of {error.get('ctx', {}).get('expected', '?')}, not {error['input']!r}"
    else:
        what = _SHAPES.get(kind, error["msg"])
    return f"{_key_path(loc)}: {what}" if loc else what


_M = TypeVar("_M", bound=BaseModel)


def _validate(schema: type[_M], data: dict[str, Any], context: object) -> tuple[_M | None, list[str]]:
    try:
        return schema.model_validate(data, context=context), []
    except ValidationError as exc:
        return None, [_describe(error, schema) for error in exc.errors()]


# -- profiles -------------------------------------------------------------------------------------


def load_profile(name: str, directory: Path | None = None, *, layout: Layout | None = None) -> Profile:
    """The profile ``profiles/<name>.yml`` (or ``<directory>/<name>.yml``), validated whole."""
    layout = layout or Layout.current()
    if directory is not None:
        layout = dataclasses.replace(layout, profiles=directory)
    _check_name("host profile", name, profile_names(layout.profiles), layout.profiles, layout)
    path = layout.profiles / f"{name}.yml"
    shown = layout.show(path)
    data = _load_yaml(path, shown)
    if data.get("kind") == Kind.CLIENT.value:
        return _client_profile(name, path, shown, data)
    defaults = {"inventory_host": name, "suite": name}
    context = _Context(
        layout=layout,
        name=name,
        tiers=tuple(tier_names(layout.certs)),
        inventory=inventory_names(layout.inventory),
        defaulted=frozenset(defaults) - set(data),
    )
    model, problems = _validate(_ProfileFile, {**defaults, **data}, context)
    if model is None:
        raise InvalidFile(path, shown, problems)
    return Profile(
        name=name,
        path=path,
        description=model.description.strip(),
        inventory_host=model.inventory_host,
        groups=tuple(model.groups),
        steps=tuple(PlaybookStep(step.playbook, tuple(step.tags)) for step in model.steps),
        overrides=tuple(layout.overrides / entry for entry in model.overrides),
        published_ports=tuple(PublishedPort(p.name, p.guest, p.sni) for p in model.published_ports),
        cert_tiers=tuple(model.cert_tiers),
        suite=layout.suites / model.suite,
        memory_mib=model.memory_mib,
        vcpus=model.vcpus,
        idempotence_allow=tuple(Allowance(a.task, a.reason) for a in model.idempotence_allow),
        reboot_diff_allow=tuple(Allowance(a.path, a.reason) for a in model.reboot_diff_allow),
        package_layer=tuple(model.package_layer),
    )


def _client_profile(name: str, path: Path, shown: str, data: dict[str, Any]) -> Profile:
    model, problems = _validate(_ClientFile, data, None)
    if model is None:
        raise InvalidFile(path, shown, problems)
    return Profile(
        name=name,
        path=path,
        description=model.description.strip(),
        inventory_host="",
        groups=(),
        steps=(),
        overrides=(),
        published_ports=(),
        cert_tiers=(),
        suite=None,
        memory_mib=model.memory_mib,
        vcpus=model.vcpus,
        kind=Kind.CLIENT,
    )


def _read_override(file: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise BadInput(f"{file}: malformed YAML: {exc}".replace("\n", " ")) from exc
    if not isinstance(data, dict | None):
        raise BadInput(f"{file}: an override must be a mapping of variables")
    return data or {}


def overlay_variables(profile: Profile) -> dict[str, Any]:
    """The variables of the profile's overrides merged in order (later wins), as Ansible
    reads them."""
    merged: dict[str, Any] = {}
    for file in profile.overrides:
        merged.update(_read_override(file))
    return merged


def roles_applied(profile: Profile) -> frozenset[str]:
    """Every role the profile's playbook steps may apply to its groups (see
    :mod:`harness.plays`: a role behind a ``when:`` counts)."""
    return plays.roles_applied(
        profile.steps,
        profile.groups,
        playbooks_dir=paths.PLAYBOOKS_DIR,
        roles_dir=paths.REPO / "roles",
        extra_vars=overlay_variables(profile),
    )


def check_tier_fits(profile: Profile, tier: CertTier) -> None:
    """Refuse (:class:`BadInput`) a tier the host cannot take, before anything is created:
    Pebble is an ACME CA for the reverse proxy and validates through guest ports 80 and 443."""
    if not tier.pebble:
        return
    if not profile.needs_caddy:
        raise BadInput(
            f"cert tier {tier.name!r} runs Pebble for the {CADDY_ROLE} role, "
            f"which host {profile.name!r} does not apply",
            hint=f"remove {tier.name!r} from cert_tiers in {profile.path}",
        )
    if not {p.guest for p in profile.published_ports} >= PEBBLE_GUEST_PORTS:
        raise BadInput(
            f"cert tier {tier.name!r} needs host {profile.name!r} to publish guest ports 80 and 443",
            hint="Pebble validates through those forwards",
        )


# -- tiers ----------------------------------------------------------------------------------------


def _role_variables(roles: Path, role: str) -> set[str]:
    defaults = roles / role / "defaults" / "main.yml"
    data = yaml.safe_load(defaults.read_text(encoding="utf-8")) if defaults.is_file() else {}
    return set(data or {})


def role_variables(role: str) -> set[str]:
    """The variable names a role declares in its defaults: the vocabulary tiers may set."""
    return _role_variables(paths.REPO / "roles", role)


def load_tier(name: str, directory: Path | None = None, *, layout: Layout | None = None) -> CertTier:
    """The tier ``certs/<name>.yml`` (or ``<directory>/<name>.yml``), validated whole."""
    layout = layout or Layout.current()
    if directory is not None:
        layout = dataclasses.replace(layout, certs=directory)
    _check_name("cert tier", name, tier_names(layout.certs), layout.certs, layout)
    path = layout.certs / f"{name}.yml"
    shown = layout.show(path)
    data = _load_yaml(path, shown)
    model, problems = _validate(_TierFile, data, None)
    known = sorted(v for v in _role_variables(layout.roles, CADDY_ROLE) if v.startswith(TIER_VAR_PREFIX))
    defaults = layout.show(layout.roles / CADDY_ROLE / "defaults" / "main.yml")
    variables = {k: v for k, v in data.items() if k != TIER_META_KEY}
    for key in variables:
        if key not in known:
            close = difflib.get_close_matches(str(key), known, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            problems.append(f"{key}: unknown variable for the {CADDY_ROLE} role ({defaults}){hint}")
    if model is None:
        # The rules between keys need boma_tier in shape; they are checked once it is.
        raise InvalidFile(path, shown, problems)
    meta = model.boma_tier
    tier = CertTier(
        name=name,
        path=path,
        description=meta.description.strip(),
        needs=tuple(meta.needs),
        on_demand=meta.on_demand,
        issuer_contains=meta.issuer_contains,
        pebble=meta.pebble,
        variables=variables,
    )
    problems += _contradictions(tier)
    if problems:
        raise InvalidFile(path, shown, problems)
    return tier


def _contradictions(tier: CertTier) -> list[str]:
    """What makes a tier contradict itself, all of it, found before anything boots."""
    v = tier.variables
    internal = bool(v.get("reverse_proxy__tls_internal", False))
    provider = v.get("reverse_proxy__acme_dns_provider") or ""
    acme_ca = v.get("reverse_proxy__acme_ca") or ""
    needs = f"{TIER_META_KEY}.needs"
    rules = [
        (
            internal and provider,
            "reverse_proxy__tls_internal: tls_internal contradicts a DNS provider "
            "(no DNS-01 for the internal CA)",
        ),
        (
            internal and acme_ca,
            "reverse_proxy__tls_internal: tls_internal contradicts an acme_ca (internal CA is not ACME)",
        ),
        (
            internal and tier.pebble,
            "reverse_proxy__tls_internal: tls_internal contradicts pebble (pebble is an ACME CA)",
        ),
        (
            provider and Need.GANDI_TOKEN not in tier.needs,
            f"{needs}: a DNS provider needs the token: add 'gandi_token' to needs",
        ),
        (
            Need.GANDI_TOKEN in tier.needs and provider != "gandi",
            f"{needs}: needs gandi_token but sets no gandi DNS provider",
        ),
        (
            not (internal or acme_ca or tier.pebble or tier.on_demand),
            "a tier must choose a CA: tls_internal, acme_ca, or pebble",
        ),
    ]
    return [message for broken, message in rules if broken]
