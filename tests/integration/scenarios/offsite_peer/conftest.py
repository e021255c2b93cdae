"""Fixtures of a suite that runs from one machine of a scenario against another.

``host`` (testinfra's, from the harness's ``--hosts``) is the machine the suite runs *from*;
``target`` is the one it probes, reached the same way; the scenario's view (``BOMA_RUN_STATE``,
written by harness/scenario_run.py) names both, with their addresses on the private networks.
"""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path
from typing import Any

import pytest
import testinfra
import yaml

from harness import portwait

REPO = Path(__file__).resolve().parents[4]


@pytest.fixture(scope="session")
def view() -> dict[str, Any]:
    path = os.environ.get("BOMA_RUN_STATE")
    if not path:
        pytest.skip("not started by the harness (BOMA_RUN_STATE unset): python -m harness scenario")
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    if "scenario" not in data:
        pytest.skip("BOMA_RUN_STATE is a single machine's view: this suite runs in a scenario only")
    return data


@pytest.fixture(scope="session")
def target(view: dict[str, Any]) -> Any:
    return testinfra.get_host(view["machines"][view["target"]]["inventory"], sudo=True)


@pytest.fixture(scope="session")
def target_address(view: dict[str, Any]) -> str:
    addresses = view["machines"][view["target"]]["addresses"]
    shared = set(addresses) & set(view["machines"][view["source"]]["addresses"])
    assert shared, f"{view['source']} and {view['target']} share no network"
    return addresses[sorted(shared)[0]]


@pytest.fixture(scope="session")
def target_profile(view: dict[str, Any]) -> dict[str, Any]:
    host = view["machines"][view["target"]]["host"]
    return yaml.safe_load((REPO / "profiles" / f"{host}.yml").read_text(encoding="utf-8"))


@pytest.fixture(scope="session")
def tier(view: dict[str, Any]) -> dict[str, Any]:
    data = yaml.safe_load((REPO / "certs" / f"{view['tier']}.yml").read_text(encoding="utf-8"))
    return data["boma_tier"]


@pytest.fixture(scope="module")  # testinfra's host is module-scoped
def probe(host: Any) -> Any:
    """``probe(address, port, mode, sni=None, timeout=5.0)``: one probe from the source machine,
    in its guest with its python3 (harness/portwait.py); a certificate comes back as DER."""

    def run(address: str, port: int, mode: str, sni: str | None = None, timeout: float = 5.0) -> dict:
        result = portwait.guest_probe(host, address, port, mode, sni, timeout=timeout)
        if "der" in result:
            result["der"] = base64.b64decode(result["der"])
        return result

    return run
