"""Scenarios (``scenarios/<name>.yml``): several machines, each one of ``profiles/``, on private
networks between them, validated whole before anything boots.

The same schema machinery as profiles and tiers (:mod:`harness.config`): pydantic models for
the shape, validators that check what each value names (profiles, networks, machines, suites,
tiers), then the rules between the keys; every problem comes back at once with its key path,
``scenarios/x.yml: machines[1].addresses.wan: 10.9.0.5 is not inside wan (10.90.0.0/24)``.

A scenario's networks exist only inside the run (:mod:`harness.lan`): their addresses are the
guests' second NIC, with no gateway, so nothing routes from them anywhere else. They run on
the hermetic uplink only (docs/decisions/027), so a tier that needs the internet is refused.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

from pydantic import AfterValidator, Field, ValidationInfo

from harness import config, paths
from harness.config import (
    NAME_RE,
    InvalidFile,
    Layout,
    _check_name,
    _collapsed,
    _inside,
    _load_yaml,
    _names,
    _problem,
    _Schema,
    _unique,
    _validate,
)
from harness.errors import BadInput
from harness.relay import GATEWAY, PREFIX

# The guests' own uplink (passt or user-mode: 10.0.2.0/24): a scenario network may not
# overlap it, or a guest would not know which NIC an address is on.
UPLINK = ipaddress.IPv4Network(f"{GATEWAY}/{PREFIX}", strict=False)
MAX_MACHINES = 4  # a scenario is one run on one controller: its memory is summed
MIN_PREFIX, MAX_PREFIX = 16, 29
MIN_MEMBERS = 2  # a network is between machines


@dataclass(frozen=True)
class Network:
    name: str
    cidr: ipaddress.IPv4Network

    def address(self, host: str) -> str:
        """``host`` with the network's prefix, as the guest configures it (``10.90.0.10/24``)."""
        return f"{host}/{self.cidr.prefixlen}"


@dataclass(frozen=True)
class ScenarioMachine:
    name: str  # its name in the run (log lines, artifacts, ``--machine``)
    profile: config.Profile
    addresses: dict[str, str]  # network name → the machine's address on it


@dataclass(frozen=True)
class CrossSuite:
    """A suite that runs from one machine (its ``host`` fixture) against another."""

    path: Path
    source: str
    target: str

    @property
    def label(self) -> str:
        return f"{self.path.name} ({self.source} → {self.target})"


@dataclass(frozen=True)
class Scenario:
    name: str
    path: Path
    description: str
    networks: tuple[Network, ...]
    machines: tuple[ScenarioMachine, ...]
    apply: tuple[str, ...]  # machine names, in the order their profiles' steps are applied
    reboot: tuple[str, ...]  # the machines that get the real reboot
    cert_tiers: tuple[str, ...]
    suites: tuple[CrossSuite, ...]

    def machine(self, name: str) -> ScenarioMachine:
        return next(m for m in self.machines if m.name == name)

    @property
    def memory_mib(self) -> int:
        return sum(m.profile.memory_mib for m in self.machines)

    def network(self, name: str) -> Network:
        return next(n for n in self.networks if n.name == name)

    def members(self, network: str) -> list[ScenarioMachine]:
        return [m for m in self.machines if network in m.addresses]


def scenario_names(directory: Path | None = None) -> list[str]:
    return _names(directory or paths.REPO / "scenarios")


# -- the schema -------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Context:
    layout: Layout
    profiles: dict[str, config.Profile | BadInput]  # every profile, loaded or why not
    tiers: tuple[str, ...]


def _context(info: ValidationInfo) -> _Context:
    context = info.context
    if not isinstance(context, _Context):  # pragma: no cover  (only this module validates)
        raise TypeError("the scenario schema validates with a _Context")
    return context


def _cidr(value: str) -> str:
    try:
        network = ipaddress.IPv4Network(value, strict=True)
    except ValueError as exc:
        raise _problem(f"{value!r} is not an IPv4 network in CIDR form (10.90.0.0/24): {exc}") from exc
    if not network.is_private:
        raise _problem(
            f"{value} is not a private range: a scenario's network must never look like a real one"
        )
    if not MIN_PREFIX <= network.prefixlen <= MAX_PREFIX:
        raise _problem(f"the prefix must be /{MIN_PREFIX}../{MAX_PREFIX}, not /{network.prefixlen}")
    if network.overlaps(UPLINK):
        raise _problem(f"{value} overlaps the guests' own uplink {UPLINK}")
    return value


def _profile(value: str, info: ValidationInfo) -> str:
    context = _context(info)
    if value not in context.profiles:
        known = ", ".join(sorted(context.profiles)) or "(none)"
        raise _problem(
            f"no profile {value!r} in {context.layout.show(context.layout.profiles)}/ (known: {known})"
        )
    loaded = context.profiles[value]
    if isinstance(loaded, BadInput):
        raise _problem(f"profile {value!r} does not validate: {loaded.message.splitlines()[0]}")
    return value


def _tier(value: str, info: ValidationInfo) -> str:
    context = _context(info)
    if value not in context.tiers:
        raise _problem(f"no cert tier {value!r} (known: {', '.join(context.tiers) or '(none)'})")
    return value


def _suite(value: str, info: ValidationInfo) -> str:
    layout = _context(info).layout
    if not _inside("folder", layout.suites, layout, value).is_dir():
        raise _problem(f"test suite {layout.show(layout.suites / value)} not found")
    return value


def _name(value: str) -> str:
    if not NAME_RE.match(value):
        raise _problem(f"{value!r}: a name must match {NAME_RE.pattern}")
    return value


_Name = Annotated[str, AfterValidator(_name)]


class _NetworkFile(_Schema):
    cidr: Annotated[str, AfterValidator(_cidr)]


class _MachineFile(_Schema):
    name: _Name
    profile: Annotated[str, AfterValidator(_profile)]
    addresses: Annotated[dict[_Name, str], Field(min_length=1)]


class _SuiteFile(_Schema):
    path: Annotated[str, AfterValidator(_suite)]
    source: Annotated[_Name, Field(alias="from")]
    target: Annotated[_Name, Field(alias="against")]


class _ScenarioFile(_Schema):
    description: Annotated[str, AfterValidator(_collapsed)]
    networks: Annotated[dict[_Name, _NetworkFile], Field(min_length=1)]
    machines: Annotated[
        list[_MachineFile],
        Field(min_length=2),
        AfterValidator(_unique("name")),
        AfterValidator(lambda v: _at_most(v, MAX_MACHINES)),
    ]
    apply: Annotated[list[_Name], Field(min_length=1), AfterValidator(_unique())]
    reboot: Annotated[list[_Name], AfterValidator(_unique())] | None = None
    cert_tiers: Annotated[
        list[Annotated[str, AfterValidator(_tier)]], Field(min_length=1), AfterValidator(_unique())
    ]
    suites: Annotated[list[_SuiteFile], Field(min_length=1)]


def _at_most(values: list[Any], most: int) -> list[Any]:
    if len(values) > most:
        raise _problem(f"at most {most} machines (one controller holds them all at once), not {len(values)}")
    return values


# -- the rules between the keys ----------------------------------------------------------------


def _rules(model: _ScenarioFile, context: _Context) -> list[str]:
    networks = {name: ipaddress.IPv4Network(net.cidr) for name, net in model.networks.items()}
    profiles = {m.name: context.profiles[m.profile] for m in model.machines}
    hosts = [n for n, p in profiles.items() if isinstance(p, config.Profile) and not p.is_client]
    problems = _network_rules(model, networks) + _apply_rules(model, profiles, hosts)
    for at, tier_name in enumerate(model.cert_tiers):
        problems += _tier_rules(f"cert_tiers[{at}]", tier_name, hosts, profiles, context)
    return problems + _suite_rules(model)


def _network_rules(model: _ScenarioFile, networks: dict[str, ipaddress.IPv4Network]) -> list[str]:
    problems = [
        f"networks.{b}: {net_b} overlaps networks.{a} ({net_a})"
        for (a, net_a), (b, net_b) in _pairs(networks)
        if net_a.overlaps(net_b)
    ]
    taken: dict[tuple[str, str], str] = {}
    for at, machine in enumerate(model.machines):
        for net, text in machine.addresses.items():
            problem = _address_problem(net, text, networks, taken)
            if problem:
                problems.append(f"machines[{at}].addresses.{net}: {problem}")
            else:
                taken[net, text] = machine.name
    for net in networks:
        members = [m.name for m in model.machines if net in m.addresses]
        if len(members) < MIN_MEMBERS:
            problems.append(f"networks.{net}: joins {len(members)} machine(s), not two or more")
    return problems


def _address_problem(
    net: str, text: str, networks: dict[str, ipaddress.IPv4Network], taken: dict[tuple[str, str], str]
) -> str | None:
    if net not in networks:
        return f"no network {net!r} (declared: {', '.join(networks)})"
    try:
        address = ipaddress.IPv4Address(text)
    except ValueError:
        return f"{text!r} is not an IPv4 address"
    cidr = networks[net]
    if address not in cidr or address in (cidr.network_address, cidr.broadcast_address):
        return f"{address} is not a host address of {net} ({cidr})"
    if (net, text) in taken:
        return f"{address} is also {taken[net, text]}'s"
    return None


def _apply_rules(model: _ScenarioFile, profiles: dict[str, Any], hosts: list[str]) -> list[str]:
    problems = []
    names = ", ".join(profiles)
    for at, name in enumerate(model.apply):
        profile = profiles.get(name)
        if profile is None:
            problems.append(f"apply[{at}]: no machine {name!r} (machines: {names})")
        elif isinstance(profile, config.Profile) and profile.is_client:
            problems.append(f"apply[{at}]: {name!r} is a client: it is applied nothing")
    problems += [
        f"apply: host {name!r} is missing (every host is applied, in this order)"
        for name in hosts
        if name not in model.apply
    ]
    problems += [
        f"reboot[{at}]: {name!r} is not applied: only an applied host is rebooted"
        for at, name in enumerate(model.reboot or [])
        if name not in model.apply
    ]
    return problems


def _suite_rules(model: _ScenarioFile) -> list[str]:
    problems = []
    names = [m.name for m in model.machines]
    for at, suite in enumerate(model.suites):
        for key, name in (("from", suite.source), ("against", suite.target)):
            if name not in names:
                problems.append(f"suites[{at}].{key}: no machine {name!r} (machines: {', '.join(names)})")
        if suite.source == suite.target:
            problems.append(f"suites[{at}]: from and against are both {suite.source!r}")
    return problems


def _tier_rules(
    where: str, name: str, hosts: list[str], profiles: dict[str, Any], context: _Context
) -> list[str]:
    if name not in context.tiers:
        return []  # its own error is already there
    try:
        tier = config.load_tier(name, layout=context.layout)
    except BadInput as exc:
        return [f"{where}: tier {name!r} does not validate: {exc.message.splitlines()[0]}"]
    problems = []
    if config.Need.INTERNET in tier.needs:
        problems.append(
            f"{where}: tier {name!r} needs the internet; a scenario runs on the hermetic network only"
        )
    if tier.pebble and len(hosts) != 1:
        problems.append(
            f"{where}: tier {name!r} runs one Pebble for one host; this scenario has {len(hosts)}"
        )
    for host in hosts:
        profile = profiles[host]
        if name not in profile.cert_tiers:
            its = ", ".join(profile.cert_tiers)
            problems.append(f"{where}: host {host!r} does not take tier {name!r} (its tiers: {its})")
    return problems


def _pairs(items: dict[str, Any]) -> list[tuple[tuple[str, Any], tuple[str, Any]]]:
    entries = list(items.items())
    return [(entries[i], entries[j]) for i in range(len(entries)) for j in range(i + 1, len(entries))]


# -- loading -----------------------------------------------------------------------------------


def _all_profiles(layout: Layout) -> dict[str, config.Profile | BadInput]:
    found: dict[str, config.Profile | BadInput] = {}
    for name in config.profile_names(layout.profiles):
        try:
            found[name] = config.load_profile(name, layout=layout)
        except BadInput as exc:
            found[name] = exc
    return found


def load_scenario(name: str, *, layout: Layout | None = None, scenarios: Path | None = None) -> Scenario:
    """The scenario ``scenarios/<name>.yml``, validated whole (its machines' profiles too)."""
    layout = layout or Layout.current()
    directory = scenarios or layout.root / "scenarios"
    _check_name("scenario", name, scenario_names(directory), directory, layout)
    path = directory / f"{name}.yml"
    shown = layout.show(path)
    data = _load_yaml(path, shown)
    context = _Context(
        layout=layout, profiles=_all_profiles(layout), tiers=tuple(config.tier_names(layout.certs))
    )
    model, problems = _validate(_ScenarioFile, data, context)
    if model is None:
        raise InvalidFile(path, shown, problems)
    problems = _rules(model, context)
    if problems:
        raise InvalidFile(path, shown, problems)
    profiles = {name: p for name, p in context.profiles.items() if isinstance(p, config.Profile)}
    return Scenario(
        name=name,
        path=path,
        description=model.description,
        networks=tuple(Network(n, ipaddress.IPv4Network(net.cidr)) for n, net in model.networks.items()),
        machines=tuple(
            ScenarioMachine(m.name, profiles[m.profile], dict(m.addresses)) for m in model.machines
        ),
        apply=tuple(model.apply),
        reboot=tuple(model.reboot if model.reboot is not None else model.apply),
        cert_tiers=tuple(model.cert_tiers),
        suites=tuple(CrossSuite(layout.suites / s.path, s.source, s.target) for s in model.suites),
    )
