"""The integration matrix (host profile × cert tier), read from files with the stdlib only.

The noxfile imports this to list sessions, so ``nox -l`` works without libvirt, Ansible or
even PyYAML installed. Full validation happens in :mod:`harness.config` when a cell runs.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
ENV_ON_DEMAND = "BOMA_ON_DEMAND_TIERS"  # "1": include on-demand tiers (le-prod-wildcard)
ENV_INTERNET = "BOMA_HAS_INTERNET"  # "1": this controller may reach the internet
NEED_ENV = {"gandi_token": "GANDI_BEARER_TOKEN"}

_FLOW_LIST = re.compile(r"^\s*{key}:\s*\[(?P<items>[^\]]*)\]\s*(#.*)?$", re.M)
_SCALAR = re.compile(r"^\s*{key}:\s*(?P<value>[^#\n]*?)\s*(#.*)?$", re.M)


def _flow_list(text: str, key: str) -> list[str]:
    """A list written ``key: [a, b]`` or as a block of ``- a`` lines under ``key:``."""
    match = re.search(_FLOW_LIST.pattern.format(key=re.escape(key)), text, re.M)
    if match:
        return [item.strip().strip("'\"") for item in match["items"].split(",") if item.strip()]
    block = re.search(
        rf"^(?P<indent>\s*){re.escape(key)}:\s*(#.*)?\n(?P<body>(?:(?P=indent)\s*- .*\n?)+)", text, re.M
    )
    if not block:
        return []
    return [line.strip()[2:].split("#")[0].strip().strip("'\"") for line in block["body"].splitlines()]


def _scalar(text: str, key: str) -> str:
    match = re.search(_SCALAR.pattern.format(key=re.escape(key)), text, re.M)
    return match["value"].strip().strip("'\"") if match else ""


@dataclass(frozen=True)
class Cell:
    host: str
    certs: str
    description: str
    needs: tuple[str, ...]

    def skip_reason(self, env: dict[str, str] | None = None) -> str | None:
        """Why this cell cannot run on this controller, or None."""
        return unmet_needs(self.certs, self.needs, env)


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


def cells(repo: Path = REPO, env: dict[str, str] | None = None) -> list[Cell]:
    env = dict(os.environ) if env is None else env
    found = []
    for profile in sorted((repo / "profiles").glob("*.yml")):
        text = profile.read_text(encoding="utf-8")
        host_desc = _scalar(text, "description")
        for tier in _flow_list(text, "cert_tiers"):
            tier_text = (repo / "certs" / f"{tier}.yml").read_text(encoding="utf-8")
            # Every spelling YAML (and so harness.config) reads as true: an on-demand tier must
            # never slip into the default matrix.
            on_demand = _scalar(tier_text, "on_demand").lower() in ("true", "yes", "on")
            if on_demand and env.get(ENV_ON_DEMAND) != "1":
                continue
            desc = f"{profile.stem}: {host_desc}; certs: {_scalar(tier_text, 'description')}"
            found.append(Cell(profile.stem, tier, desc, tuple(_flow_list(tier_text, "needs"))))
    return found
