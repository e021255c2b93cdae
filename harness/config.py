"""Host profiles (``profiles/<host>.yml``) and cert tiers (``certs/<tier>.yml``), validated.

Everything here is pure: it reads YAML and returns frozen dataclasses, or raises
:class:`BadInput` naming the file and the problem. Nothing is created on a bad input.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

import yaml

from harness import paths, plays
from harness.errors import BadInput

NAME_RE = re.compile(r"^[a-z][a-z0-9-]{0,30}$")
PROFILE_KEYS = frozenset(
    {
        "description",
        "inventory_host",
        "groups",
        "steps",
        "overrides",
        "published_ports",
        "cert_tiers",
        "suite",
        "memory_mib",
        "vcpus",
        "idempotence_allow",
        "reboot_diff_allow",
    }
)
TIER_META_KEY = "boma_tier"
TIER_META_KEYS = frozenset({"description", "needs", "on_demand", "issuer_contains", "pebble"})
TIER_VAR_PREFIX = "reverse_proxy__"
# The role that runs Caddy: a run builds the Caddy image, and a tier may run Pebble as its ACME
# CA, only for a profile whose steps apply it.
CADDY_ROLE = "reverse_proxy"
# Pebble validates HTTP-01 and TLS-ALPN-01 through the loopback forwards of these guest ports.
PEBBLE_GUEST_PORTS = frozenset({80, 443})


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
    suite: Path
    memory_mib: int
    vcpus: int
    # Tasks allowed to report "changed" when the steps are applied again after the reboot.
    idempotence_allow: tuple[Allowance, ...] = ()
    # State paths allowed to differ across the reboot.
    reboot_diff_allow: tuple[Allowance, ...] = ()

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


def _load_yaml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise BadInput(f"{path}: no such file")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise BadInput(f"{path}: malformed YAML: {exc}".replace("\n", " ")) from exc
    if not isinstance(data, dict):
        raise BadInput(f"{path}: expected a mapping at the top level, got {type(data).__name__}")
    return data


def _names(directory: Path) -> list[str]:
    return sorted(p.stem for p in directory.glob("*.yml"))


def profile_names(directory: Path | None = None) -> list[str]:
    return _names(directory or paths.PROFILES_DIR)


def tier_names(directory: Path | None = None) -> list[str]:
    return _names(directory or paths.CERTS_DIR)


def _check_name(kind: str, name: str, known: list[str]) -> None:
    if not NAME_RE.match(name) or name not in known:
        raise BadInput(
            f"unknown {kind} {name!r}",
            hint=f"known {kind}s: {', '.join(known) or '(none)'}",
        )


def _need(path: Path, cond: bool, message: str) -> None:
    if not cond:
        raise BadInput(f"{path}: {message}")


def load_profile(name: str, directory: Path | None = None) -> Profile:
    directory = directory or paths.PROFILES_DIR
    _check_name("host profile", name, profile_names(directory))
    path = directory / f"{name}.yml"
    data = _load_yaml(path)
    unknown = set(data) - PROFILE_KEYS
    _need(path, not unknown, f"unknown key(s): {', '.join(sorted(unknown))}")
    groups: Any = data.get("groups")
    _need(
        path,
        isinstance(groups, list) and bool(groups) and all(isinstance(g, str) for g in groups),
        "'groups' must be a non-empty list of group names",
    )
    steps_raw: Any = data.get("steps")
    _need(path, isinstance(steps_raw, list) and bool(steps_raw), "'steps' must be a non-empty list")
    steps = []
    for raw in steps_raw:
        _need(
            path,
            isinstance(raw, dict) and isinstance(raw.get("playbook"), str),
            "each step needs a 'playbook'",
        )
        playbook = raw["playbook"]
        _need(path, (paths.PLAYBOOKS_DIR / playbook).is_file(), f"playbook {playbook!r} not found")
        tags = raw.get("tags", [])
        _need(path, isinstance(tags, list), f"step {playbook!r}: 'tags' must be a list")
        steps.append(PlaybookStep(playbook, tuple(str(t) for t in tags)))
    overrides = []
    overrides_raw = data.get("overrides", [])
    _need(path, isinstance(overrides_raw, list), "'overrides' must be a list")
    for entry in overrides_raw:
        file = paths.OVERRIDES_DIR / str(entry)
        _need(path, file.is_file(), f"override file {file} not found")
        overrides.append(file)
    ports = []
    ports_raw = data.get("published_ports", [])
    _need(path, isinstance(ports_raw, list), "'published_ports' must be a list")
    for raw in ports_raw:
        _need(
            path,
            isinstance(raw, dict)
            and isinstance(raw.get("guest"), int)
            and 0 < raw["guest"] < 65536
            and isinstance(raw.get("name"), str),
            "each published port needs 'name' and an integer 'guest' port",
        )
        ports.append(PublishedPort(raw["name"], raw["guest"], raw.get("sni")))
    tiers = data.get("cert_tiers", [])
    _need(path, isinstance(tiers, list), "'cert_tiers' must be a list")
    known_tiers = tier_names()
    for tier in tiers:
        _need(path, tier in known_tiers, f"cert tier {tier!r} has no file in {paths.CERTS_DIR}")
    suite = paths.SUITES_DIR / str(data.get("suite", name))
    _need(path, suite.is_dir(), f"test suite {suite} not found")
    memory, vcpus = data.get("memory_mib", 2048), data.get("vcpus", 2)
    _need(path, isinstance(memory, int) and 512 <= memory <= 65536, "'memory_mib' must be 512..65536")
    _need(path, isinstance(vcpus, int) and 1 <= vcpus <= 64, "'vcpus' must be 1..64")
    return Profile(
        name=name,
        path=path,
        description=str(data.get("description", "")).strip(),
        inventory_host=str(data.get("inventory_host", name)),
        groups=tuple(groups),
        steps=tuple(steps),
        overrides=tuple(overrides),
        published_ports=tuple(ports),
        cert_tiers=tuple(str(t) for t in tiers),
        suite=suite,
        memory_mib=memory,
        vcpus=vcpus,
        idempotence_allow=_allowances(path, data, "idempotence_allow", "task"),
        reboot_diff_allow=_allowances(path, data, "reboot_diff_allow", "path"),
    )


def _allowances(path: Path, data: dict[str, Any], key: str, field: str) -> tuple[Allowance, ...]:
    """``key``: a list of ``{<field>: pattern, reason: why}``; an allowance without its reason
    is refused, so that every exception says why it is one."""
    raw: Any = data.get(key, [])
    _need(path, isinstance(raw, list), f"'{key}' must be a list of {{{field}, reason}}")
    found = []
    for at, entry in enumerate(raw):
        _need(
            path,
            isinstance(entry, dict)
            and set(entry) == {field, "reason"}
            and isinstance(entry[field], str)
            and bool(entry[field].strip())
            and isinstance(entry["reason"], str)
            and bool(entry["reason"].strip()),
            f"{key}[{at}] must be {{{field}: <pattern>, reason: <why>}}, both non-empty",
        )
        found.append(Allowance(entry[field].strip(), " ".join(entry["reason"].split())))
    return tuple(found)


def overlay_variables(profile: Profile) -> dict[str, Any]:
    """The variables of the profile's overrides merged in order (later wins), as Ansible
    reads them."""
    merged: dict[str, Any] = {}
    for file in profile.overrides:
        try:
            data = yaml.safe_load(file.read_text(encoding="utf-8"))
        except yaml.YAMLError as exc:
            raise BadInput(f"{file}: malformed YAML: {exc}".replace("\n", " ")) from exc
        _need(file, isinstance(data, dict | None), "an override must be a mapping of variables")
        merged.update(data or {})
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


def role_variables(role: str) -> set[str]:
    """The variable names a role declares in its defaults: the vocabulary tiers may set."""
    defaults = paths.REPO / "roles" / role / "defaults" / "main.yml"
    data = yaml.safe_load(defaults.read_text(encoding="utf-8")) if defaults.is_file() else {}
    return set(data or {})


def load_tier(name: str, directory: Path | None = None) -> CertTier:
    directory = directory or paths.CERTS_DIR
    _check_name("cert tier", name, tier_names(directory))
    path = directory / f"{name}.yml"
    data = _load_yaml(path)
    meta: Any = data.get(TIER_META_KEY)
    _need(path, isinstance(meta, dict), f"missing the '{TIER_META_KEY}' mapping")
    unknown_meta = set(meta) - TIER_META_KEYS
    _need(path, not unknown_meta, f"unknown {TIER_META_KEY} key(s): {', '.join(sorted(unknown_meta))}")
    variables = {k: v for k, v in data.items() if k != TIER_META_KEY}
    known_vars = role_variables("reverse_proxy")
    unknown = sorted(k for k in variables if not k.startswith(TIER_VAR_PREFIX) or k not in known_vars)
    _need(path, not unknown, f"unknown variable(s) for the reverse_proxy role: {', '.join(unknown)}")
    needs_raw = meta.get("needs", [])
    _need(path, isinstance(needs_raw, list), f"'{TIER_META_KEY}.needs' must be a list")
    try:
        needs = tuple(Need(n) for n in needs_raw)
    except ValueError as exc:
        raise BadInput(f"{path}: {exc}; known needs: {', '.join(n.value for n in Need)}") from exc
    tier = CertTier(
        name=name,
        path=path,
        description=str(meta.get("description", "")).strip(),
        needs=needs,
        on_demand=bool(meta.get("on_demand", False)),
        issuer_contains=meta.get("issuer_contains"),
        pebble=bool(meta.get("pebble", False)),
        variables=variables,
    )
    _check_consistent(tier)
    return tier


def _check_consistent(tier: CertTier) -> None:
    """Refuse a tier that contradicts itself before anything boots."""
    v, path = tier.variables, tier.path
    internal = bool(v.get("reverse_proxy__tls_internal", False))
    provider = v.get("reverse_proxy__acme_dns_provider") or ""
    acme_ca = v.get("reverse_proxy__acme_ca") or ""
    _need(
        path,
        not (internal and provider),
        "tls_internal contradicts a DNS provider (no DNS-01 for the internal CA)",
    )
    _need(path, not (internal and acme_ca), "tls_internal contradicts an acme_ca (internal CA is not ACME)")
    _need(path, not (internal and tier.pebble), "tls_internal contradicts pebble (pebble is an ACME CA)")
    _need(
        path,
        not (provider and Need.GANDI_TOKEN not in tier.needs),
        "a DNS provider needs the token: add 'gandi_token' to needs",
    )
    _need(
        path,
        not (Need.GANDI_TOKEN in tier.needs and provider != "gandi"),
        "needs gandi_token but sets no gandi DNS provider",
    )
    _need(
        path,
        internal or bool(acme_ca) or tier.pebble or tier.on_demand,
        "a tier must choose a CA: tls_internal, acme_ca, or pebble",
    )
