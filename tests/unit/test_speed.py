"""The speed levers (harness.speed): presets, what each changes, and what a run says of them."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from dataclasses import fields, replace
from pathlib import Path

import pytest
import yaml

from harness import ansible, cli, inventory, speed, statediff, virt
from harness.errors import BadInput, HarnessError
from tests.unit.test_inventory import endpoint, fake_real, render, write  # noqa: F401 (a fixture)
from tests.unit.test_virt import spec


def test_the_presets_differ_where_the_docs_say() -> None:
    assert speed.Levers(
        package_layer=False,
        ssh_compression=True,
        disk_cache_unsafe=False,
        cloud_init_once=False,
        mitogen=False,
        one_process=False,
    ) == speed.BASELINE
    assert replace(speed.DEFAULT, mitogen=True, one_process=True) == speed.FAST
    assert not speed.DEFAULT.mitogen, "the test command's runs keep Ansible's own way of running modules"
    assert not speed.DEFAULT.one_process, "the test command runs the playbooks one by one, as on the hosts"


def test_every_lever_that_changes_what_is_tested_has_a_risk_and_the_others_do_not() -> None:
    names = {f.name for f in fields(speed.Levers)}
    assert set(speed.RISKS) <= names
    assert set(speed.RISKS) == {"package_layer", "cloud_init_once", "mitogen", "one_process"}


@pytest.mark.parametrize("name", list(speed.PRESETS))
def test_notes_name_the_preset_and_every_risk_taken(name: str) -> None:
    levers = speed.PRESETS[name]
    lines = speed.notes(levers)
    assert lines[0].startswith(f"speed: {name} (")
    taken = {n for n in speed.RISKS if getattr(levers, n)}
    assert {line.split(":")[0].removeprefix("speed lever ") for line in lines[1:]} == taken


def test_a_custom_combination_is_called_so() -> None:
    assert speed.name_of(replace(speed.FAST, disk_cache_unsafe=False)) == "custom"


def test_an_unknown_preset_is_bad_input() -> None:
    with pytest.raises(BadInput, match="unknown speed preset 'turbo'"):
        speed.preset("turbo")


def test_levers_survive_the_run_state_and_an_old_state_means_the_baseline() -> None:
    assert speed.Levers.from_json(json.loads(json.dumps(speed.FAST.as_json()))) == speed.FAST
    assert speed.Levers.from_json({}) == speed.BASELINE
    assert speed.Levers.from_json({**speed.DEFAULT.as_json(), "gone_lever": True}) == speed.DEFAULT


def test_the_cli_takes_a_preset_and_no_package_layer_wins_over_it() -> None:
    parser = cli.build_parser()
    args = parser.parse_args(["cycle", "--host", "askari", "--speed", "fast", "--no-package-layer"])
    assert cli._levers(args) == replace(speed.FAST, package_layer=False)
    assert cli._levers(parser.parse_args(["up", "--host", "askari"])) == speed.DEFAULT
    with pytest.raises(SystemExit):
        parser.parse_args(["cycle", "--host", "askari", "--speed", "turbo"])


def test_no_compression_comes_first_in_ssh_args_and_the_baseline_keeps_ansibles_default() -> None:
    assert ansible.speed_env(speed.DEFAULT) == {"ANSIBLE_SSH_ARGS": "-o Compression=no"}
    assert ansible.speed_env(speed.BASELINE) == {}


def test_mitogen_is_its_strategy_from_the_installed_package() -> None:
    env = ansible.speed_env(speed.FAST)
    assert env["ANSIBLE_STRATEGY"] == "mitogen_linear"
    assert (Path(env["ANSIBLE_STRATEGY_PLUGINS"]) / "mitogen_linear.py").is_file()


def test_missing_mitogen_is_a_harness_error_naming_the_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ansible.importlib.util, "find_spec", lambda _name: None)
    with pytest.raises(HarnessError) as caught:
        ansible.speed_env(speed.FAST)
    assert "requirements.txt" in (caught.value.hint or "")


@pytest.mark.parametrize(("cache", "attribute"), [("unsafe", "unsafe"), ("", None)])
def test_the_overlay_cache_is_unsafe_only_when_asked(cache: str, attribute: str | None) -> None:
    driver = ET.fromstring(virt.domain_xml(replace(spec(), disk_cache=cache))).find("devices/disk/driver")
    assert driver is not None
    assert driver.get("cache") == attribute


def test_mitogens_compression_follows_the_lever(tmp_path: Path) -> None:
    conn = inventory.connection_vars(endpoint(tmp_path), ssh_compression=False)
    assert conn["mitogen_ssh_compression"] is False


def test_an_inherited_mitogen_variable_breaks_isolation(tmp_path: Path, fake_real: Path) -> None:  # noqa: F811
    # mitogen_via would route the connection through another (real) host.
    write(fake_real / "group_vars" / "offsite_hosts" / "mitogen.yml", "mitogen_via: askari\n")
    rendered = render(tmp_path, fake_real)
    with pytest.raises(HarnessError, match="mitogen_via"):
        inventory.assert_isolated(rendered, fake_real)


def test_a_mitogen_variable_in_host_vars_is_not_copied(tmp_path: Path, fake_real: Path) -> None:  # noqa: F811
    write(fake_real / "host_vars" / "askari" / "mitogen.yml", "mitogen_via: bastion\n")
    rendered = render(tmp_path, fake_real)
    host_vars = yaml.safe_load(
        (rendered.path / "host_vars" / f"{rendered.host}.yml").read_text(encoding="utf-8")
    )
    assert "mitogen_via" not in host_vars


# What the bench's fast cycle saw across the reboot (2026-12-03) before the state diff knew
# the cloud_init_once lever: cloud-init's units were gone after the reboot.
CLOUD_INIT_UNITS = {
    "units/cloud-config.target": "active/active",
    "units/cloud-init-hotplugd.socket": "active/listening",
    "units/cloud-init.target": "active/active",
}


def test_cloud_init_gone_after_the_reboot_is_expected_only_when_the_harness_turned_it_off() -> None:
    before = {**CLOUD_INIT_UNITS, "units/caddy.service": "active/running"}
    after = {"units/caddy.service": "active/running"}

    def diff(levers: speed.Levers) -> list[statediff.Difference]:
        return statediff.compare(before, after, (), statediff.EXPECTED + speed.reboot_changes(levers))

    with_lever, without = diff(speed.DEFAULT), diff(speed.BASELINE)

    assert [d.path for d in with_lever] == sorted(CLOUD_INIT_UNITS)
    assert statediff.unexpected(with_lever) == []
    assert all("speed lever cloud_init_once" in (d.why_expected or "") for d in with_lever)
    assert [d.path for d in statediff.unexpected(without)] == sorted(CLOUD_INIT_UNITS)


def test_the_lever_excuses_only_cloud_inits_units() -> None:
    before = {"units/caddy.service": "active/running", "units/cloudflared.service": "active/running"}
    differences = statediff.compare(before, {}, (), statediff.EXPECTED + speed.reboot_changes(speed.FAST))
    assert [d.path for d in statediff.unexpected(differences)] == sorted(before)


def test_an_apply_takes_only_the_apply_levers_of_another_preset() -> None:
    booted = replace(speed.DEFAULT, package_layer=False)
    applied = speed.for_apply(booted, speed.FAST)
    assert (applied.mitogen, applied.one_process) == (True, True)
    # What the machine was made with stays: its image, its disk, its boots, its compression.
    assert applied.package_layer is False
    assert applied.disk_cache_unsafe == booted.disk_cache_unsafe
    assert applied.cloud_init_once == booted.cloud_init_once
    assert applied.ssh_compression == booted.ssh_compression
    assert speed.for_apply(speed.BASELINE, speed.FAST).ssh_compression is True
    assert speed.for_apply(speed.FAST, speed.DEFAULT) == speed.DEFAULT


def test_the_risks_an_apply_adds_are_those_of_the_levers_it_turns_on() -> None:
    booted = replace(speed.DEFAULT, package_layer=False)
    assert speed.risks_added(booted, speed.for_apply(booted, speed.FAST)) == [
        f"speed lever {name}: {speed.RISKS[name]}" for name in ("mitogen", "one_process")
    ]
    assert speed.risks_added(speed.FAST, speed.FAST) == []
