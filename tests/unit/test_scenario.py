"""Scenarios and client profiles: the real files load; every bad input is BadInput naming the
key, before anything is created."""

from __future__ import annotations

import dataclasses
import textwrap
from pathlib import Path

import pytest

from harness import config, cycle, matrix, verify
from harness.errors import BadInput
from harness.scenario import load_scenario, scenario_names

GOOD = """\
description: two machines on one private network
networks:
  wan: {cidr: 10.90.0.0/24}
machines:
  - {name: askari, profile: askari, addresses: {wan: 10.90.0.10}}
  - {name: peer, profile: peer, addresses: {wan: 10.90.0.20}}
apply: [askari]
cert_tiers: [internal]
suites:
  - {path: scenarios/offsite_peer, from: peer, against: askari}
"""


def load(tmp_path: Path, text: str, name: str = "s") -> object:
    (tmp_path / f"{name}.yml").write_text(textwrap.dedent(text), encoding="utf-8")
    return load_scenario(name, scenarios=tmp_path)


def problems(tmp_path: Path, text: str) -> list[str]:
    with pytest.raises(config.InvalidFile) as caught:
        load(tmp_path, text)
    return list(caught.value.problems)


def test_the_real_scenario_loads_with_its_machines_and_network() -> None:
    assert scenario_names() == ["offsite-peer"]
    scenario = load_scenario("offsite-peer")
    assert [m.name for m in scenario.machines] == ["askari", "peer"]
    assert scenario.machine("peer").profile.is_client
    assert scenario.apply == ("askari",) and scenario.reboot == ("askari",)
    assert scenario.memory_mib == 2048 + 768
    assert scenario.network("wan").address("10.90.0.10") == "10.90.0.10/24"
    assert [m.name for m in scenario.members("wan")] == ["askari", "peer"]
    assert set(scenario.cert_tiers) <= set(scenario.machine("askari").profile.cert_tiers)


def test_reboot_defaults_to_every_applied_host(tmp_path: Path) -> None:
    assert load(tmp_path, GOOD).reboot == ("askari",)  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (("10.90.0.0/24", "8.8.8.0/24"), "networks.wan.cidr: 8.8.8.0/24 is not a private range"),
        (("10.90.0.0/24", "10.0.0.0/8"), "networks.wan.cidr: the prefix must be /16../29"),
        (("10.90.0.0/24", "10.0.2.0/24"), "overlaps the guests' own uplink"),
        (("10.90.0.0/24", "10.90.0.1/24"), "is not an IPv4 network in CIDR form"),
        (("wan: 10.90.0.20", "wan: 10.91.0.20"), "machines[1].addresses.wan: 10.91.0.20 is not a host"),
        (("wan: 10.90.0.20", "wan: 10.90.0.10"), "machines[1].addresses.wan: 10.90.0.10 is also askari's"),
        (("wan: 10.90.0.20", "wan: 10.90.0.255"), "is not a host address of wan"),
        (("{wan: 10.90.0.20}", "{lan: 10.90.0.20}"), "machines[1].addresses.lan: no network 'lan'"),
        (("profile: peer", "profile: nobody"), "machines[1].profile: no profile 'nobody'"),
        (("name: peer", "name: askari"), "machines: name 'askari' listed more than once"),
        (("apply: [askari]", "apply: [askari, peer]"), "apply[1]: 'peer' is a client: it is applied nothing"),
        (("apply: [askari]", "apply: [peer]"), "apply: host 'askari' is missing"),
        (("apply: [askari]", "apply: [askari]\nreboot: [peer]"), "reboot[0]: 'peer' is not applied"),
        (("[internal]", "[le-staging]"), "'le-staging' needs the internet; a scenario runs on the hermetic"),
        (("[internal]", "[nope]"), "cert_tiers[0]: no cert tier 'nope'"),
        (("from: peer", "from: askari"), "suites[0]: from and against are both 'askari'"),
        (("from: peer", "from: ghost"), "suites[0].from: no machine 'ghost'"),
        (("path: scenarios/offsite_peer", "path: ../../etc"), "must name a folder inside tests/integration/"),
        (("path: scenarios/offsite_peer", "path: nowhere"), "test suite tests/integration/nowhere not found"),
        (("description: two", "descripton: two"), "descripton: unknown key; did you mean 'description'?"),
    ],
)
def test_a_bad_scenario_names_the_key(tmp_path: Path, change: tuple[str, str], expected: str) -> None:
    old, new = change
    assert old in GOOD
    found = problems(tmp_path, GOOD.replace(old, new, 1))
    assert any(expected in p for p in found), found


def test_a_network_of_one_machine_and_overlapping_networks_are_refused(tmp_path: Path) -> None:
    wan = "  wan: {cidr: 10.90.0.0/24}"
    text = GOOD.replace(wan, wan + "\n  dmz: {cidr: 10.90.0.0/25}")
    text = text.replace("addresses: {wan: 10.90.0.10}", "addresses: {wan: 10.90.0.10, dmz: 10.90.0.11}")
    found = problems(tmp_path, text)
    assert any("networks.dmz: 10.90.0.0/25 overlaps networks.wan" in p for p in found), found
    assert any("networks.dmz: joins 1 machine(s)" in p for p in found), found


def test_every_problem_comes_back_at_once(tmp_path: Path) -> None:
    text = GOOD.replace("from: peer", "from: ghost").replace("[internal]", "[le-staging]")
    assert len(problems(tmp_path, text)) >= 2


def test_malformed_yaml_and_unknown_names_are_bad_input(tmp_path: Path) -> None:
    with pytest.raises(BadInput, match="malformed YAML"):
        load(tmp_path, "machines: [\n")
    with pytest.raises(BadInput, match="unknown scenario 'nope'"):
        load_scenario("nope")


# -- client profiles ------------------------------------------------------------------------


def test_the_peer_is_a_client_with_nothing_to_apply() -> None:
    peer = config.load_profile("peer")
    assert peer.is_client and peer.kind is config.Kind.CLIENT
    assert peer.steps == () and peer.groups == () and peer.suite is None and peer.cert_tiers == ()
    assert 512 <= peer.memory_mib <= 1024


def test_a_client_takes_only_its_own_keys(tmp_path: Path) -> None:
    (tmp_path / "c.yml").write_text("kind: client\nsteps: [{playbook: site.yml}]\n", encoding="utf-8")
    with pytest.raises(config.InvalidFile, match="steps: unknown key"):
        config.load_profile("c", tmp_path)


def test_an_unknown_kind_is_named(tmp_path: Path) -> None:
    (tmp_path / "k.yml").write_text("kind: router\ninventory_host: askari\ngroups: [offsite_hosts]\n"
                                    "steps: [{playbook: site.yml}]\nsuite: askari\n", encoding="utf-8")
    with pytest.raises(config.InvalidFile, match="kind: must be one of host, client, not 'router'"):
        config.load_profile("k", tmp_path)


def test_a_client_has_no_cycle_and_no_suite_of_its_own() -> None:
    with pytest.raises(BadInput, match="'peer' is a client"):
        cycle.resolve("peer", "internal", ())
    with pytest.raises(BadInput, match="is a client"):
        verify.check_suite(config.load_profile("peer"))


# -- the matrix -----------------------------------------------------------------------------


def test_the_matrix_lists_each_scenario_per_tier_and_no_cell_for_a_client() -> None:
    found = matrix.survey()
    cells = {(c.name, c.certs) for c in found.scenarios}
    assert cells == {("offsite-peer", "internal"), ("offsite-peer", "acme-local")}
    assert "peer" not in {c.host for c in found.cells}
    assert found.broken == []


def test_a_broken_scenario_is_listed_as_broken_not_dropped(tmp_path: Path) -> None:
    import shutil  # noqa: PLC0415

    repo = tmp_path / "repo"
    for part in ("profiles", "certs", "playbooks", "tests", "inventories", "roles"):
        shutil.copytree(Path(config.paths.REPO) / part, repo / part, symlinks=True)
    (repo / "scenarios").mkdir()
    (repo / "scenarios" / "bad.yml").write_text(GOOD.replace("from: peer", "from: ghost"), encoding="utf-8")
    found = matrix.survey(repo)
    assert found.scenarios == []
    assert [b.file for b in found.broken] == ["scenarios/bad.yml"]
    assert "suites[0].from: no machine 'ghost'" in found.broken[0].first


def test_a_scenario_refuses_a_tier_it_does_not_list() -> None:
    from harness import scenario_run  # noqa: PLC0415

    with pytest.raises(BadInput, match="does not take cert tier 'le-staging'"):
        scenario_run.resolve(scenario_run.ScenarioOptions(name="offsite-peer", certs="le-staging"))
    with pytest.raises(BadInput, match="override file"):
        scenario_run.resolve(dataclasses.replace(
            scenario_run.ScenarioOptions(name="offsite-peer", certs="internal"),
            extra_overrides=(Path("/nonexistent.yml"),),
        ))


def test_a_failing_suite_does_not_keep_the_others_from_running(monkeypatch: pytest.MonkeyPatch) -> None:
    """RED: the controller's probe of askari fails after the reboot; the peer's must still run,
    so the evidence holds both views, and the phase fails naming both."""
    from harness import scenario_run  # noqa: PLC0415
    from harness.errors import VerificationFailed  # noqa: PLC0415
    from harness.summary import Summary  # noqa: PLC0415

    ran = []

    class Askari:
        name = "askari"

        def verify(self, label: str, marker: str | None = None) -> None:
            ran.append("askari")
            raise VerificationFailed("askari's 443 is dead from the controller")

    def cross(run: object, scenario: object, suite: object, machines: object, label: str) -> None:
        ran.append("peer")
        raise VerificationFailed("askari's 443 is dead from the peer")

    class FakeRun:
        def mark(self, step: str) -> None:
            pass

    monkeypatch.setattr(scenario_run, "run_cross_suite", cross)
    scenario = load_scenario("offsite-peer")
    summary = Summary(run_id="r", host="offsite-peer", tier="internal")
    with pytest.raises(VerificationFailed) as caught:
        scenario_run._verify_all(FakeRun(), scenario, {"askari": Askari()}, summary, verify.FINAL)  # type: ignore[arg-type, dict-item]
    assert ran == ["askari", "peer"]
    assert "from the controller" in caught.value.message and "from the peer" in caught.value.message
    assert summary.failed_phase == "verify (askari)"


def test_a_kept_scenario_says_which_machine_to_get_into(tmp_path: Path) -> None:
    from harness.machine import Machine  # noqa: PLC0415
    from harness.state import MachineState, RunState  # noqa: PLC0415

    def state(name: str) -> MachineState:
        return MachineState(name=name, host=name, domain=f"boma-it-{name}-r1", accel="tcg", boot="direct",
                            ssh_port=1, ports={}, golden="", artifacts="")

    run = RunState(run_id="r1", label="offsite-peer", tier="internal", uri="test:///default",
                   run_dir=str(tmp_path), artifacts=str(tmp_path), owner={}, machines=[state("askari")])
    assert "login --run r1 " in Machine(run, run.machines[0]).how_to_get_in()
    run.machines.append(state("peer"))
    text = Machine(run, run.machines[1]).how_to_get_in()
    assert "login --run r1 --machine peer" in text and "console --run r1 --machine peer" in text
    assert "down --run r1\n" in text + "\n"
