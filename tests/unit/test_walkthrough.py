"""The runbook's "Adding a host profile", followed in a copy of the repository: if it and the
code disagree, this fails.

The profile, overlay and suite come from the runbook's own code blocks (fenced blocks with a
``title="<path>"`` info string), written into the copy exactly as shown; the block for the real
inventory, which the new host must be in, is merged into the copy's. Then everything short
of booting runs against the copy, with the copy's own harness (its paths resolve to the copy):
loading the profile and its tiers, the suite's collection for every verify phase, the nox
matrix, the rendered inventory and Ansible's isolation check.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
RUNBOOK = REPO / "docs" / "runbooks" / "integration-testing.md"
SECTION = "## Adding a host profile"
# Copied: what the walkthrough writes into, and the harness whose paths must resolve to the copy.
COPIED = ("profiles", "certs", "playbooks", "inventories", "tests/integration", "harness",
          "noxfile.py", "pyproject.toml", "ansible.cfg")
LINKED = ("roles",)  # read only, and large
BLOCK = re.compile(
    r'^(?P<indent>[ \t]*)```(?P<lang>[\w-]+)[ \t]+title="(?P<path>[^"]+)"[ \t]*\n'
    r"(?P<body>.*?)^(?P=indent)```[ \t]*$",
    re.M | re.S,
)
STEP_TIMEOUT = 60
# The one file a block adds to rather than creates: the new host goes into the real inventory.
INVENTORY = "inventories/production/hosts.yml"

# Runs inside the copy (cwd), so `import harness` is the copy's harness. Prints one JSON object.
DRIVER = textwrap.dedent("""\
    import json, sys
    from pathlib import Path
    from harness import config, inventory, matrix, paths, runvars, ssh, verify
    from harness.errors import BomaError

    host, work = sys.argv[1], Path(sys.argv[2])
    try:
        profile = config.load_profile(host)
        tiers = [config.load_tier(name) for name in profile.cert_tiers]
        for tier in tiers:
            config.check_tier_fits(profile, tier)
        counts = verify.check_suite(profile)
        vm = f"boma-it-{host}-0a1b2c3d"
        endpoint = ssh.Endpoint(alias=vm, port=40022, user="ansible", key=work / "id_ed25519",
                                control_path=work / "cm-%C")
        rendered = inventory.render(work / "inventory", vm=vm, groups=profile.groups,
                                    inventory_host=profile.inventory_host, endpoint=endpoint,
                                    real_inventory=paths.PRODUCTION_INVENTORY)
        inventory.assert_isolated(rendered, paths.PRODUCTION_INVENTORY)
        # One inventory, two consumers: testinfra reads the rendered one (no connection yet).
        through_inventory = verify.collected(profile.suite, hosts=rendered.testinfra_spec)
    except BomaError as exc:
        print(exc.render(), file=sys.stderr)
        sys.exit(int(exc.exit_code))
    print(json.dumps({
        "repo": str(paths.REPO),
        "profile": str(profile.path),
        "suite": str(profile.suite),
        "overrides": [str(p) for p in profile.overrides],
        "roles": sorted(config.roles_applied(profile)),
        "needs_caddy": profile.needs_caddy,
        "caddy_archive": {t.name: runvars.wants_caddy_archive(profile, t) for t in tiers},
        "tiers": list(profile.cert_tiers),
        "counts": counts,
        "final": verify.FINAL.label,
        "through_inventory": through_inventory,
        "cells": [[c.host, c.certs] for c in matrix.cells(env={})],
    }))
""")


def runbook_blocks() -> dict[str, str]:
    """The titled code blocks of the runbook's section: path → content, dedented."""
    text = RUNBOOK.read_text(encoding="utf-8")
    assert SECTION in text, f"{RUNBOOK} lost its section {SECTION!r}"
    section = text.split(SECTION, 1)[1].split("\n## ", 1)[0]
    blocks = {}
    for match in BLOCK.finditer(section):
        indent = match["indent"]
        lines = [line.removeprefix(indent) for line in match["body"].splitlines()]
        blocks[match["path"]] = "\n".join(lines) + "\n"
    return blocks


def merged(base: object, extra: object) -> object:
    """``extra`` merged into ``base``, mapping by mapping."""
    if isinstance(base, dict) and isinstance(extra, dict):
        return {**base, **{key: merged(base.get(key), value) for key, value in extra.items()}}
    return extra


def hosts_in(inventory_text: str) -> set[str]:
    """The hosts of an inventory file's text (groups nest under ``children``)."""
    found: set[str] = set()

    def walk(group: object) -> None:
        if isinstance(group, dict):
            found.update(group.get("hosts") or {})
            for child in (group.get("children") or {}).values():
                walk(child)

    for group in (yaml.safe_load(inventory_text) or {}).values():
        walk(group)
    return found


def copy_repo(target: Path) -> Path:
    for name in COPIED:
        source, dest = REPO / name, target / name
        dest.parent.mkdir(parents=True, exist_ok=True)
        if source.is_dir():
            shutil.copytree(source, dest, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(source, dest)
    for name in LINKED:
        (target / name).symlink_to(REPO / name)
    return target


def clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "BOMA_RUN_STATE")}
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


def run(argv: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, cwd=cwd, env=clean_env(), capture_output=True, text=True,
                          timeout=STEP_TIMEOUT, check=False)


@pytest.fixture(scope="module")
def blocks() -> dict[str, str]:
    return runbook_blocks()


@pytest.fixture(scope="module")
def host(blocks: dict[str, str]) -> str:
    profiles = [p for p in blocks if re.fullmatch(r"profiles/[a-z][a-z0-9-]*\.yml", p)]
    assert len(profiles) == 1, f"the runbook's section shows {len(profiles)} profile blocks, expected 1"
    return Path(profiles[0]).stem


@pytest.fixture(scope="module")
def walked(tmp_path_factory: pytest.TempPathFactory, blocks: dict[str, str], host: str) -> dict:
    """The copy with the runbook's files written in, and what the copy's harness made of it."""
    root = tmp_path_factory.mktemp("walkthrough")
    copy = copy_repo(root / "repo")
    for relative, content in blocks.items():
        path = copy / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        if relative == INVENTORY:  # the host joins the real inventory of the copy
            whole = merged(yaml.safe_load(path.read_text(encoding="utf-8")), yaml.safe_load(content))
            path.write_text(yaml.safe_dump(whole, sort_keys=False), encoding="utf-8")
        else:
            path.write_text(content, encoding="utf-8")
    work = root / "run"
    work.mkdir()
    done = run([sys.executable, "-c", DRIVER, host, str(work)], copy)
    assert done.returncode == 0, f"the walkthrough stops (exit {done.returncode}):\n{done.stderr[-3000:]}"
    result = json.loads(done.stdout.strip().splitlines()[-1])
    return {"copy": copy, "result": result}


def test_the_section_shows_a_profile_an_overlay_and_a_suite(blocks: dict[str, str], host: str) -> None:
    assert f"tests/integration/overrides/{host}.yml" in blocks
    assert any(re.fullmatch(rf"tests/integration/{host}/test_\w+\.py", p) for p in blocks), (
        f"no suite file tests/integration/{host}/test_*.py among {sorted(blocks)}")
    for relative, content in blocks.items():
        if relative == INVENTORY:
            assert host not in hosts_in((REPO / INVENTORY).read_text(encoding="utf-8")), (
                f"{host} is already in {INVENTORY}: the walkthrough must add a new host")
            assert host in hosts_in(content), f"the {INVENTORY} block does not add {host}"
            continue
        assert not (REPO / relative).exists(), (
            f"{relative} exists in the repository: the walkthrough must add a new host")


def test_the_copy_runs_its_own_harness(walked: dict) -> None:
    copy, result = walked["copy"], walked["result"]
    assert Path(result["repo"]).resolve() == copy.resolve()
    assert Path(result["profile"]).is_relative_to(copy)


def test_the_profile_loads_with_the_files_the_runbook_wrote(walked: dict, host: str,
                                                            blocks: dict[str, str]) -> None:
    copy, result = walked["copy"], walked["result"]
    assert result["suite"] == str(copy / "tests" / "integration" / host)
    written = {str(copy / p) for p in blocks}
    assert set(result["overrides"]) <= written
    assert result["tiers"], "the example takes no cert tier: nox would list no cell for it"


def test_the_suite_collects_for_every_phase(walked: dict) -> None:
    """The pre-reboot (controller) phase may be empty; the final one must not be."""
    result = walked["result"]
    counts = result["counts"]
    assert counts[result["final"]] > 0
    assert all(n >= 0 for n in counts.values())
    assert result["through_inventory"] == counts[result["final"]], (
        "testinfra collects a different suite through the rendered inventory than without a VM")


def test_the_matrix_lists_the_new_cells(walked: dict, host: str) -> None:
    result = walked["result"]
    assert [[host, tier] for tier in result["tiers"]] == [c for c in result["cells"] if c[0] == host]


def test_nox_lists_the_new_cells(walked: dict, host: str) -> None:
    copy, result = walked["copy"], walked["result"]
    # nox of the venv the tests run in (requirements.txt installs it into every session's venv).
    done = run([sys.executable, "-m", "nox", "--list", "--json", "--sessions", "integration",
                "--noxfile", str(copy / "noxfile.py")], copy)
    assert done.returncode == 0, done.stderr
    sessions = {s["session"] for s in json.loads(done.stdout)}
    for tier in result["tiers"]:
        assert f"integration(host='{host}', certs='{tier}')" in sessions


def test_a_baseline_host_prepares_no_caddy(walked: dict) -> None:
    result = walked["result"]
    assert "reverse_proxy" not in result["roles"]
    assert result["needs_caddy"] is False
    assert not any(result["caddy_archive"].values())
