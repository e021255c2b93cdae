"""The integration matrix, read through harness.config: the cells, their skips, agreement with
the full validation, and broken files named instead of crashing nox or vanishing from it."""

from __future__ import annotations

import ast
import inspect
import json
import os
import shutil
import subprocess
import sys
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


def test_matrix_has_no_reader_of_its_own() -> None:
    """One schema: the matrix reads the files through harness.config, never with a parser that
    could disagree with it (a stdlib one dropped `cert_tier:` and crashed on a missing tier)."""
    tree = ast.parse(inspect.getsource(matrix))
    imported = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import)
                for alias in node.names}
    imported |= {(node.module or "").split(".")[0] for node in ast.walk(tree)
                 if isinstance(node, ast.ImportFrom)}
    assert imported <= {"__future__", "os", "dataclasses", "pathlib", "harness"}
    assert "config" in {alias.name for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)
                        for alias in node.names}


REPO = Path(__file__).resolve().parents[2]
LINKED = ("playbooks", "roles", "inventories", "tests")  # what profiles name, read only
VM_PROFILE = """\
description: a vm
inventory_host: askari
groups: [offsite_hosts]
steps: [{playbook: site.yml}]
suite: askari
"""


def write_repo(root: Path, on_demand: str = "true") -> Path:
    """A repository of its own profiles and tiers, whose profiles name this one's playbooks,
    suites and inventory."""
    (root / "profiles").mkdir(parents=True)
    (root / "certs").mkdir()
    for name in LINKED:
        (root / name).symlink_to(REPO / name)
    (root / "profiles" / "vm.yml").write_text(VM_PROFILE + "cert_tiers: [prod, lab]\n", encoding="utf-8")
    (root / "certs" / "prod.yml").write_text(textwrap.dedent(f"""\
        boma_tier:
          description: production # real rate limits
          needs: [internet]
          on_demand: {on_demand}
        """), encoding="utf-8")
    (root / "certs" / "lab.yml").write_text(
        "boma_tier:\n  description: lab\n  needs: []\nreverse_proxy__tls_internal: true\n", encoding="utf-8")
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
    assert matrix.survey(repo, env={}).broken == []


def break_files(repo: Path) -> None:
    """Three broken files beside the good vm.yml, each the way one used to slip through."""
    profiles, certs = repo / "profiles", repo / "certs"
    # A tier with no certs/<tier>.yml (nox -l raised FileNotFoundError), and two errors more.
    (profiles / "missing.yml").write_text(
        VM_PROFILE.replace("offsite_hosts", "offsite_host") + "cert_tiers: [lab, no-such-tier]\nvcpus: 0\n",
        encoding="utf-8")
    # `cert_tier:` (the host vanished from the matrix without a word).
    (profiles / "typo.yml").write_text(VM_PROFILE + "cert_tier: [lab]\n", encoding="utf-8")
    # A tier that does not validate: vm.yml names it, so that cell goes, and vm's others stay.
    (certs / "prod.yml").write_text("boma_tier:\n  needs: [a_pony]\n", encoding="utf-8")


def test_a_broken_file_is_named_with_its_errors_and_the_valid_cells_stay(tmp_path: Path) -> None:
    repo = write_repo(tmp_path)
    break_files(repo)
    found = matrix.survey(repo, env={"BOMA_ON_DEMAND_TIERS": "1"})
    assert pairs(found.cells) == [("vm", "lab")]
    broken = {b.file: b for b in found.broken}
    # Named as in the repository they are in.
    assert sorted(broken) == ["certs/prod.yml", "profiles/missing.yml", "profiles/typo.yml"]
    missing = broken["profiles/missing.yml"]
    assert [p.split(": ", 2)[1] for p in missing.problems] == ["groups[0]", "cert_tiers[1]", "vcpus"]
    assert missing.warning().startswith(f"{missing.file} does not validate; none of its cells is listed: "
                                        "groups[0]: 'offsite_host' is not a group of ")
    assert missing.warning().endswith("(and 2 more)")
    typo = broken["profiles/typo.yml"]
    assert typo.warning() == (f"{typo.file} does not validate; none of its cells is listed: "
                              "cert_tier: unknown key; did you mean 'cert_tiers'?")
    prod = broken["certs/prod.yml"]
    assert "no cell with this tier is listed: boma_tier.needs[0]: must be one of" in prod.warning()


def test_a_tier_the_host_cannot_take_is_named_and_its_other_cells_stay(tmp_path: Path) -> None:
    repo = write_repo(tmp_path)
    shutil.copy(REPO / "certs" / "acme-local.yml", repo / "certs" / "acme-local.yml")
    ubongo = (REPO / "profiles" / "ubongo.yml").read_text(encoding="utf-8")
    (repo / "profiles" / "ubongo.yml").write_text(
        ubongo.replace("cert_tiers: [internal]", "cert_tiers: [lab, acme-local]"), encoding="utf-8")
    found = matrix.survey(repo, env={})
    assert ("ubongo", "lab") in pairs(found.cells)
    assert ("ubongo", "acme-local") not in pairs(found.cells)
    [broken] = found.broken
    assert broken.warning().startswith(
        f"{broken.file} names a tier it cannot take; not listed: "
        "integration(host='ubongo', certs='acme-local'): cert_tiers[1]: cert tier 'acme-local' runs Pebble")


def copy_for_nox(root: Path) -> Path:
    """This repository's noxfile and harness, over the profiles and tiers of write_repo."""
    repo = write_repo(root)
    shutil.copy2(REPO / "noxfile.py", repo / "noxfile.py")
    shutil.copytree(REPO / "harness", repo / "harness", ignore=shutil.ignore_patterns("__pycache__"))
    return repo


def nox_list(repo: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "BOMA_ON_DEMAND_TIERS")}
    argv = [sys.executable, "-m", "nox", "--list", *args, "--noxfile", str(repo / "noxfile.py")]
    return subprocess.run(argv, cwd=repo, env={**env, "PYTHONDONTWRITEBYTECODE": "1"}, capture_output=True,
                          text=True, timeout=60, check=False)


def test_nox_lists_the_valid_cells_and_names_each_broken_file(tmp_path: Path) -> None:
    repo = copy_for_nox(tmp_path)
    break_files(repo)
    done = nox_list(repo)
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    assert "integration(host='vm', certs='lab')" in done.stdout
    assert "certs='prod'" not in done.stdout
    for file in ("profiles/missing.yml", "profiles/typo.yml", "certs/prod.yml"):
        assert f"broken(file='{file}')" in done.stdout  # a session named after it, failing if run
        assert f"boma: {file} does not validate" in done.stderr  # and a line with its first error
    assert "boma: profiles/typo.yml does not validate; none of its cells is listed: cert_tier: unknown key" \
        in done.stderr
    listed = nox_list(repo, "--json", "--sessions", "integration")
    assert listed.returncode == 0, listed.stderr
    assert [s["session"] for s in json.loads(listed.stdout)] == ["integration(host='vm', certs='lab')"]


def test_nox_lists_no_broken_session_when_every_file_validates(tmp_path: Path) -> None:
    done = nox_list(copy_for_nox(tmp_path))
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    assert "broken(" not in done.stdout
    assert "integration(host='vm', certs='lab')" in done.stdout


BROKEN_SESSION = textwrap.dedent("""\
    import runpy, sys

    class Failed(Exception):
        pass

    class Session:
        def error(self, message):
            raise Failed(message)

    noxfile = runpy.run_path(sys.argv[1])
    try:
        noxfile["broken"](Session(), file="profiles/missing.yml")
    except Failed as exc:
        print(exc)
""")


def test_the_broken_session_fails_with_every_error(tmp_path: Path) -> None:
    """Run without nox (no session of nox is run here): what `nox -s "broken(file=...)"` says."""
    repo = copy_for_nox(tmp_path)
    break_files(repo)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run([sys.executable, "-c", BROKEN_SESSION, str(repo / "noxfile.py")], cwd=repo,
                          env={**env, "PYTHONDONTWRITEBYTECODE": "1"}, capture_output=True, text=True,
                          timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "profiles/missing.yml does not validate; none of its cells is listed:"
    assert [line.split(": ", 2)[1] for line in lines[1:]] == ["groups[0]", "cert_tiers[1]", "vcpus"]
