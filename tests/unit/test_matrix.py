"""The integration matrix, read with the stdlib only: the cells, their skips, and agreement with
the full validation in harness.config."""

from __future__ import annotations

import ast
import inspect
import textwrap
from pathlib import Path

import pytest

from harness import config, matrix
from harness.matrix import Cell

HAS_ALL = {"BOMA_HAS_INTERNET": "1", "GANDI_BEARER_TOKEN": "sentinel-token-9f8e7d"}


def pairs(cells: list[Cell]) -> list[tuple[str, str]]:
    return [(cell.host, cell.certs) for cell in cells]


def test_default_matrix_from_the_real_repo() -> None:
    found = pairs(matrix.cells(env={}))
    assert ("askari", "internal") in found
    assert ("askari", "acme-local") in found
    assert ("askari", "le-staging") in found
    assert ("askari", "le-prod-wildcard") not in found


def test_on_demand_tiers_only_when_asked_for() -> None:
    assert ("askari", "le-prod-wildcard") not in pairs(matrix.cells(env={"BOMA_ON_DEMAND_TIERS": "0"}))
    assert ("askari", "le-prod-wildcard") in pairs(matrix.cells(env={"BOMA_ON_DEMAND_TIERS": "1"}))


def test_reads_the_process_environment_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BOMA_ON_DEMAND_TIERS", "1")
    assert ("askari", "le-prod-wildcard") in pairs(matrix.cells())
    monkeypatch.delenv("BOMA_ON_DEMAND_TIERS")
    assert ("askari", "le-prod-wildcard") not in pairs(matrix.cells())


def test_matrix_agrees_with_the_full_validation() -> None:
    cells = matrix.cells(env={"BOMA_ON_DEMAND_TIERS": "1"})
    expected = [(host, tier) for host in config.profile_names()
                for tier in config.load_profile(host).cert_tiers]
    assert pairs(cells) == expected
    for cell in cells:
        assert cell.needs == tuple(need.value for need in config.load_tier(cell.certs).needs)
        assert cell.description.startswith(f"{cell.host}: ")


def cell(certs: str) -> Cell:
    """The first profile's cell for a tier: gating depends on the tier alone."""
    return next(c for c in matrix.cells(env={"BOMA_ON_DEMAND_TIERS": "1"}) if c.certs == certs)


@pytest.mark.parametrize("host", config.profile_names())
def test_every_profile_is_in_the_matrix_with_its_tiers(host: str) -> None:
    tiers = [c.certs for c in matrix.cells(env={"BOMA_ON_DEMAND_TIERS": "1"}) if c.host == host]
    assert tiers == list(config.load_profile(host).cert_tiers)


def test_staging_without_internet_or_token_names_both() -> None:
    reason = cell("le-staging").skip_reason(env={})
    assert reason is not None
    assert reason.startswith("tier 'le-staging' needs ")
    assert "internet" in reason
    assert "BOMA_HAS_INTERNET=1" in reason
    assert "GANDI_BEARER_TOKEN" in reason


@pytest.mark.parametrize(
    ("env", "names", "omits"),
    [({"BOMA_HAS_INTERNET": "1"}, "GANDI_BEARER_TOKEN", "internet"),
     ({"GANDI_BEARER_TOKEN": "sentinel-token-9f8e7d"}, "internet", "GANDI_BEARER_TOKEN"),
     ({"BOMA_HAS_INTERNET": "0", "GANDI_BEARER_TOKEN": ""}, "GANDI_BEARER_TOKEN", "nothing")],
)
def test_staging_names_only_what_is_missing(env: dict[str, str], names: str, omits: str) -> None:
    reason = cell("le-staging").skip_reason(env=env)
    assert reason is not None
    assert names in reason
    assert omits not in reason


def test_staging_runs_with_internet_and_token() -> None:
    assert cell("le-staging").skip_reason(env=HAS_ALL) is None


@pytest.mark.parametrize("certs", ["internal", "acme-local"])
def test_offline_tiers_never_skip(certs: str) -> None:
    assert cell(certs).skip_reason(env={}) is None
    assert cell(certs).skip_reason(env=HAS_ALL) is None


def test_skip_reason_reads_the_process_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in HAS_ALL.items():
        monkeypatch.setenv(name, value)
    assert cell("le-staging").skip_reason() is None
    monkeypatch.delenv("GANDI_BEARER_TOKEN")
    assert "GANDI_BEARER_TOKEN" in (cell("le-staging").skip_reason() or "")


def test_matrix_imports_no_yaml() -> None:
    """The noxfile lists sessions from this module, where PyYAML may not be installed."""
    tree = ast.parse(inspect.getsource(matrix))
    imported = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import)
                for alias in node.names}
    imported |= {(node.module or "").split(".")[0] for node in ast.walk(tree)
                 if isinstance(node, ast.ImportFrom)}
    assert "yaml" not in imported
    assert imported <= {"__future__", "os", "re", "dataclasses", "pathlib"}


def write_repo(root: Path, on_demand: str) -> Path:
    (root / "profiles").mkdir(parents=True)
    (root / "certs").mkdir()
    profile = "description: a vm\ncert_tiers: [prod, lab]\n"
    (root / "profiles" / "vm.yml").write_text(profile, encoding="utf-8")
    (root / "certs" / "prod.yml").write_text(textwrap.dedent(f"""\
        boma_tier:
          description: production # real rate limits
          needs: [internet]
          on_demand: {on_demand}
        """), encoding="utf-8")
    (root / "certs" / "lab.yml").write_text("boma_tier:\n  description: lab\n  needs: []\n", encoding="utf-8")
    return root


@pytest.mark.parametrize("spelling", ["true", "true  # never by default", "True", "yes", "On", "'true'"])
def test_on_demand_is_recognised_however_yaml_spells_true(tmp_path: Path, spelling: str) -> None:
    """An on-demand tier in the default matrix would spend production quota on every run."""
    repo = write_repo(tmp_path, spelling)
    assert pairs(matrix.cells(repo, env={})) == [("vm", "lab")]
    assert pairs(matrix.cells(repo, env={"BOMA_ON_DEMAND_TIERS": "1"})) == [("vm", "prod"), ("vm", "lab")]
    [prod] = [c for c in matrix.cells(repo, env={"BOMA_ON_DEMAND_TIERS": "1"}) if c.certs == "prod"]
    assert prod.description == "vm: a vm; certs: production"
    assert prod.needs == ("internet",)
