"""Fixtures shared by every host suite: the run's state, written by the harness.

These suites run only through the harness (``python -m harness verify`` or a cycle), which
passes the rendered inventory as ``--hosts`` and the state file as ``BOMA_RUN_STATE``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def run_state() -> dict[str, Any]:
    path = os.environ.get("BOMA_RUN_STATE")
    if not path:
        pytest.skip("not started by the harness (BOMA_RUN_STATE unset): run `python -m harness verify`")
    return json.loads(Path(path).read_text(encoding="utf-8"))


@pytest.fixture(scope="session")
def profile(run_state: dict[str, Any]) -> dict[str, Any]:
    return yaml.safe_load((REPO / "profiles" / f"{run_state['host']}.yml").read_text(encoding="utf-8"))


@pytest.fixture(scope="session")
def tier(run_state: dict[str, Any]) -> dict[str, Any]:
    data = yaml.safe_load((REPO / "certs" / f"{run_state['tier']}.yml").read_text(encoding="utf-8"))
    return data["boma_tier"]
