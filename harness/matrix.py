"""The integration matrix (host profile × cert tier), read through :mod:`harness.config`.

The noxfile lists its sessions from :func:`survey`: the cells are the pairs the harness would
accept, validated by the same schema as a run. A file that does not validate is never a crash
and never silently dropped: it is one of :attr:`Survey.broken`, with every error, and the
noxfile names it (see ``noxfile.py``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from harness import config
from harness.errors import BadInput

REPO = Path(__file__).resolve().parent.parent
ENV_ON_DEMAND = "BOMA_ON_DEMAND_TIERS"  # "1": include on-demand tiers (le-prod-wildcard)
ENV_INTERNET = "BOMA_HAS_INTERNET"  # "1": this controller may reach the internet
NEED_ENV = {"gandi_token": "GANDI_BEARER_TOKEN"}
BROKEN_PROFILE = "does not validate; none of its cells is listed"
BROKEN_TIER = "does not validate; no cell with this tier is listed"
BROKEN_SCENARIO = "does not validate; none of its sessions is listed"


@dataclass(frozen=True)
class Cell:
    host: str
    certs: str
    description: str
    needs: tuple[str, ...]

    def skip_reason(self, env: dict[str, str] | None = None) -> str | None:
        """Why this cell cannot run on this controller, or None."""
        return unmet_needs(self.certs, self.needs, env)


@dataclass(frozen=True)
class Broken:
    """A profile or tier file with problems, and what the matrix leaves out because of them."""

    file: str  # as messages name it: profiles/x.yml
    problems: tuple[str, ...]  # each "file: key.path: what is wrong"
    left_out: str  # what is wrong with it and what the matrix leaves out, as one phrase

    @property
    def first(self) -> str:
        return self.problems[0]

    def warning(self) -> str:
        """One line: the file, what is left out, and its first error."""
        more = f" (and {len(self.problems) - 1} more)" if len(self.problems) > 1 else ""
        first = self.first.removeprefix(f"{self.file}: ")
        return f"{self.file} {self.left_out}: {first}{more}"


@dataclass(frozen=True)
class ScenarioCell:
    name: str
    certs: str
    description: str


@dataclass(frozen=True)
class Survey:
    cells: list[Cell] = field(default_factory=list)
    broken: list[Broken] = field(default_factory=list)
    scenarios: list[ScenarioCell] = field(default_factory=list)


def unmet_needs(tier: str, needs: tuple[str, ...], env: dict[str, str] | None = None) -> str | None:
    """What a tier needs that this controller lacks, as one sentence, or None."""
    env = dict(os.environ) if env is None else env
    missing = []
    for need in needs:
        if need == "internet" and env.get(ENV_INTERNET) != "1":
            missing.append(f"internet access (set {ENV_INTERNET}=1 on a controller that has it)")
        elif need in NEED_ENV and not env.get(NEED_ENV[need]):
            missing.append(f"{NEED_ENV[need]} in the environment")
    return f"tier {tier!r} needs " + " and ".join(missing) if missing else None


def _problems(exc: BadInput, shown: str) -> tuple[str, ...]:
    if isinstance(exc, config.InvalidFile):
        return exc.problems
    return (f"{shown}: {exc.message}",)


def survey(repo: Path | None = None, env: dict[str, str] | None = None) -> Survey:
    """Every cell the harness would accept (on-demand tiers only with ``BOMA_ON_DEMAND_TIERS=1``),
    and every file that keeps cells out. ``repo``: another repository laid out as this one."""
    env = dict(os.environ) if env is None else env
    layout = config.Layout.current() if repo is None else config.Layout.of(repo)
    found = Survey()
    tiers: dict[str, config.CertTier] = {}
    for name in config.tier_names(layout.certs):
        shown = layout.show(layout.certs / f"{name}.yml")
        try:
            tiers[name] = config.load_tier(name, layout=layout)
        except BadInput as exc:
            found.broken.append(Broken(shown, _problems(exc, shown), BROKEN_TIER))
    for host in config.profile_names(layout.profiles):
        path = layout.profiles / f"{host}.yml"
        shown = layout.show(path)
        try:
            profile = config.load_profile(host, layout=layout)
        except BadInput as exc:
            found.broken.append(Broken(shown, _problems(exc, shown), BROKEN_PROFILE))
            continue
        unfit: list[tuple[str, str]] = []
        for at, name in enumerate(profile.cert_tiers):
            tier = tiers.get(name)
            if tier is None:
                continue  # its own file is among the broken
            try:
                config.check_tier_fits(profile, tier)
            except BadInput as exc:
                unfit.append((name, f"{shown}: cert_tiers[{at}]: {exc.message}"))
                continue
            if tier.on_demand and env.get(ENV_ON_DEMAND) != "1":
                continue  # every spelling YAML reads as true: never in the default matrix
            desc = f"{host}: {profile.description}; certs: {tier.description}"
            found.cells.append(Cell(host, name, desc, tuple(need.value for need in tier.needs)))
        if unfit:
            cut = ", ".join(f"integration(host={host!r}, certs={name!r})" for name, _ in unfit)
            problems = tuple(problem for _, problem in unfit)
            found.broken.append(Broken(shown, problems, f"names a tier it cannot take; not listed: {cut}"))
    found.scenarios.extend(_scenarios(layout, found))
    return found


def _scenarios(layout: config.Layout, found: Survey) -> list[ScenarioCell]:
    """Every (scenario, tier) pair the harness would accept; a scenario file with errors is
    one of the broken."""
    from harness import scenario  # noqa: PLC0415  (scenario imports config, as this module does)

    directory = layout.root / "scenarios"
    cells = []
    for name in scenario.scenario_names(directory):
        shown = layout.show(directory / f"{name}.yml")
        try:
            loaded = scenario.load_scenario(name, layout=layout, scenarios=directory)
        except BadInput as exc:
            found.broken.append(Broken(shown, _problems(exc, shown), BROKEN_SCENARIO))
            continue
        cells += [ScenarioCell(name, tier, f"{name}: {loaded.description}") for tier in loaded.cert_tiers]
    return cells


def cells(repo: Path | None = None, env: dict[str, str] | None = None) -> list[Cell]:
    """The cells of :func:`survey`."""
    return survey(repo, env).cells
