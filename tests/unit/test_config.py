"""Host profiles and cert tiers: the real files load as expected; every bad input is BadInput."""

from __future__ import annotations

import dataclasses
import itertools
import re
import textwrap
from pathlib import Path

import pytest
import yaml

from harness import config, inventory, paths, proc
from harness.config import Need, PlaybookStep, PublishedPort
from harness.errors import BadInput, ExitCode
from harness.ssh import Endpoint

GOOD_PROFILE = """\
description: a test host
groups: [offsite_hosts]
steps:
  - playbook: site.yml
    tags: [base]
overrides: [askari.yml]
published_ports:
  - {name: https, guest: 443}
cert_tiers: [internal]
suite: askari
"""

INTERNAL_META = "boma_tier:\n  description: t\n  needs: []\n"


def write(directory: Path, name: str, text: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{name}.yml"
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def bad_profile(tmp_path: Path, text: str, name: str = "vm") -> BadInput:
    write(tmp_path, name, text)
    with pytest.raises(BadInput) as caught:
        config.load_profile(name, directory=tmp_path)
    assert caught.value.exit_code == ExitCode.BAD_INPUT == 2
    return caught.value


def bad_tier(tmp_path: Path, text: str, name: str = "tier") -> BadInput:
    write(tmp_path, name, text)
    with pytest.raises(BadInput) as caught:
        config.load_tier(name, directory=tmp_path)
    assert caught.value.exit_code == ExitCode.BAD_INPUT == 2
    return caught.value


# -- the real files ------------------------------------------------------------------------


def test_askari_profile_loads_as_the_real_host_is_built() -> None:
    profile = config.load_profile("askari")
    assert profile.name == "askari"
    assert profile.inventory_host == "askari"
    assert profile.groups == ("offsite_hosts", "docker_hosts")
    assert profile.steps == (PlaybookStep("site.yml"), PlaybookStep("offsite.yml"))
    assert profile.overrides == (paths.OVERRIDES_DIR / "askari.yml",)
    assert profile.published_ports == (
        PublishedPort("https", 443, "cloud.boma.example"),
        PublishedPort("http", 80, None),
    )
    assert profile.cert_tiers == ("internal", "acme-local", "le-staging", "le-prod-wildcard")
    assert profile.suite == paths.SUITES_DIR / "askari"
    assert (profile.memory_mib, profile.vcpus) == (2048, 2)


def test_ubongo_profile_loads_as_the_control_node_is_built() -> None:
    profile = config.load_profile("ubongo")
    assert profile.inventory_host == "ubongo"
    assert profile.groups == ("control",)
    assert profile.steps == (PlaybookStep("site.yml"), PlaybookStep("workstation.yml"))
    assert profile.overrides == (paths.OVERRIDES_DIR / "ubongo.yml",)
    assert profile.published_ports == ()
    assert profile.cert_tiers == ("internal",)
    assert profile.suite == paths.SUITES_DIR / "ubongo"
    assert (profile.memory_mib, profile.vcpus) == (2048, 2)


def real_groups(host: str) -> set[str]:
    """The groups ``host`` is in, in the real inventory (nested groups included)."""
    found: set[str] = set()

    def walk(name: str, group: dict, parents: tuple[str, ...]) -> None:
        if host in (group.get("hosts") or {}):
            found.update((*parents, name))
        for child, sub in (group.get("children") or {}).items():
            walk(child, sub or {}, (*parents, name))

    for file in sorted(paths.PRODUCTION_INVENTORY.glob("*.y*ml")):
        for name, group in (yaml.safe_load(file.read_text(encoding="utf-8")) or {}).items():
            walk(name, group or {}, ())
    return found - {"all"}


@pytest.mark.parametrize("name", config.profile_names())
def test_every_profile_mirrors_a_real_host_and_its_groups(name: str) -> None:
    profile = config.load_profile(name)
    assert profile.inventory_host in inventory.real_hosts(paths.PRODUCTION_INVENTORY)
    assert set(profile.groups) == real_groups(profile.inventory_host), (
        f"{name}: the VM must be in {profile.inventory_host}'s real groups, so the same group_vars apply")


def test_profile_names_come_from_the_profiles_folder() -> None:
    assert {"askari", "ubongo"} <= set(config.profile_names())
    assert config.profile_names() == sorted(p.stem for p in paths.PROFILES_DIR.glob("*.yml"))
    assert config.tier_names() == ["acme-local", "internal", "le-prod-wildcard", "le-staging"]


@pytest.mark.parametrize("name", config.tier_names())
def test_every_tier_loads(name: str) -> None:
    tier = config.load_tier(name)
    assert tier.name == name
    assert tier.description
    assert config.TIER_META_KEY not in tier.variables
    assert all(key.startswith("reverse_proxy__") for key in tier.variables)


def test_tiers_say_what_they_need() -> None:
    internal = config.load_tier("internal")
    assert internal.needs == ()
    assert internal.variables == {"reverse_proxy__tls_internal": True}
    assert not internal.on_demand
    staging = config.load_tier("le-staging")
    assert staging.needs == (Need.INTERNET, Need.GANDI_TOKEN)
    assert not staging.on_demand
    assert config.load_tier("le-prod-wildcard").on_demand
    acme_local = config.load_tier("acme-local")
    assert acme_local.pebble
    assert acme_local.needs == ()


# -- bad profiles ----------------------------------------------------------------------------


def test_unknown_host_names_the_known_ones() -> None:
    with pytest.raises(BadInput) as caught:
        config.load_profile("nosuchhost")
    assert "unknown host profile 'nosuchhost'" in caught.value.message
    assert caught.value.hint is not None
    assert "askari" in caught.value.hint
    assert caught.value.exit_code == 2


@pytest.mark.parametrize("name", ["../profiles/askari", "Askari", "askari.yml", ""])
def test_host_names_that_are_not_plain_names_are_unknown(name: str) -> None:
    with pytest.raises(BadInput, match="unknown host profile"):
        config.load_profile(name)


def test_unknown_tier() -> None:
    with pytest.raises(BadInput, match="unknown cert tier 'le-nope'") as caught:
        config.load_tier("le-nope")
    assert caught.value.exit_code == 2


def test_good_tmp_profile_loads(tmp_path: Path) -> None:
    write(tmp_path, "vm", GOOD_PROFILE)
    profile = config.load_profile("vm", directory=tmp_path)
    assert profile.steps == (PlaybookStep("site.yml", ("base",)),)
    assert profile.inventory_host == "vm"
    assert profile.published_ports == (PublishedPort("https", 443),)


def test_malformed_yaml(tmp_path: Path) -> None:
    error = bad_profile(tmp_path, "groups: [offsite_hosts\nsteps: {\n")
    assert "malformed YAML" in error.message
    assert "\n" not in error.message


@pytest.mark.parametrize("text", ["- a\n- b\n", "just a string\n", ""])
def test_top_level_must_be_a_mapping(tmp_path: Path, text: str) -> None:
    assert "expected a mapping at the top level" in bad_profile(tmp_path, text).message


def test_unknown_key(tmp_path: Path) -> None:
    error = bad_profile(tmp_path, GOOD_PROFILE + "colour: blue\n")
    assert "unknown key(s): colour" in error.message


def test_missing_playbook(tmp_path: Path) -> None:
    text = GOOD_PROFILE.replace("playbook: site.yml", "playbook: no-such-play.yml")
    assert "playbook 'no-such-play.yml' not found" in bad_profile(tmp_path, text).message


def test_step_without_playbook(tmp_path: Path) -> None:
    text = GOOD_PROFILE.replace("  - playbook: site.yml\n    tags: [base]\n", "  - tags: [base]\n")
    assert "each step needs a 'playbook'" in bad_profile(tmp_path, text).message


def test_missing_override_file(tmp_path: Path) -> None:
    text = GOOD_PROFILE.replace("overrides: [askari.yml]", "overrides: [no-such-override.yml]")
    assert "no-such-override.yml not found" in bad_profile(tmp_path, text).message


@pytest.mark.parametrize(
    "port",
    ["{name: https, guest: 70000}", "{name: https, guest: 0}", "{name: https, guest: '443'}",
     "{guest: 443}", "443"],
)
def test_bad_port(tmp_path: Path, port: str) -> None:
    text = GOOD_PROFILE.replace("{name: https, guest: 443}", port)
    assert "published port" in bad_profile(tmp_path, text).message


@pytest.mark.parametrize(
    ("replace", "by", "says"),
    [
        ("groups: [offsite_hosts]", "groups: []", "'groups' must be"),
        ("groups: [offsite_hosts]", "groups: offsite_hosts", "'groups' must be"),
        ("cert_tiers: [internal]", "cert_tiers: [bogus]", "cert tier 'bogus' has no file"),
        ("suite: askari", "suite: no-such-suite", "test suite"),
        ("suite: askari", "suite: askari\nmemory_mib: 128", "'memory_mib' must be"),
        ("suite: askari", "suite: askari\nvcpus: 0", "'vcpus' must be"),
        ("    tags: [base]", "    tags: base", "'tags' must be a list"),
    ],
)
def test_other_bad_profiles(tmp_path: Path, replace: str, by: str, says: str) -> None:
    assert replace in GOOD_PROFILE
    assert says in bad_profile(tmp_path, GOOD_PROFILE.replace(replace, by)).message


@pytest.mark.parametrize(
    ("key", "value"),
    [("overrides", ""), ("overrides", "askari.yml"), ("published_ports", ""), ("published_ports", "443"),
     ("cert_tiers", ""), ("cert_tiers", "internal")],
)
def test_a_key_that_is_not_a_list_is_bad_input_not_a_crash(tmp_path: Path, key: str, value: str) -> None:
    data = yaml.safe_load(GOOD_PROFILE)
    del data[key]
    error = bad_profile(tmp_path, yaml.safe_dump(data) + f"{key}: {value}\n")
    assert f"'{key}' must be a list" in error.message


# -- bad tiers --------------------------------------------------------------------------------


def test_good_tmp_tier_loads(tmp_path: Path) -> None:
    write(tmp_path, "tier", INTERNAL_META + "reverse_proxy__tls_internal: true\n")
    assert config.load_tier("tier", directory=tmp_path).variables == {"reverse_proxy__tls_internal": True}


def test_tier_without_meta(tmp_path: Path) -> None:
    error = bad_tier(tmp_path, "reverse_proxy__tls_internal: true\n")
    assert "missing the 'boma_tier' mapping" in error.message


def test_tier_unknown_meta_key(tmp_path: Path) -> None:
    text = INTERNAL_META + "  colour: red\nreverse_proxy__tls_internal: true\n"
    assert "unknown boma_tier key(s): colour" in bad_tier(tmp_path, text).message


@pytest.mark.parametrize("variable", ["reverse_proxy__no_such_var", "base__firewall_apply", "tls_internal"])
def test_tier_unknown_variable(tmp_path: Path, variable: str) -> None:
    text = INTERNAL_META + f"reverse_proxy__tls_internal: true\n{variable}: 1\n"
    error = bad_tier(tmp_path, text)
    assert "unknown variable(s) for the reverse_proxy role" in error.message
    assert variable in error.message


def test_tier_unknown_need(tmp_path: Path) -> None:
    text = "boma_tier:\n  needs: [a_pony]\nreverse_proxy__tls_internal: true\n"
    error = bad_tier(tmp_path, text)
    assert "a_pony" in error.message
    assert "gandi_token" in error.message


@pytest.mark.parametrize("needs", ["", "internet", "5"])
def test_tier_needs_that_are_not_a_list_are_bad_input_not_a_crash(tmp_path: Path, needs: str) -> None:
    text = f"boma_tier:\n  description: t\n  needs: {needs}\nreverse_proxy__tls_internal: true\n"
    assert "'boma_tier.needs' must be a list" in bad_tier(tmp_path, text).message


@pytest.mark.parametrize(
    ("meta", "variables", "says"),
    [
        ("needs: [gandi_token]", "reverse_proxy__tls_internal: true\nreverse_proxy__acme_dns_provider: gandi",
         "tls_internal contradicts a DNS provider"),
        ("needs: []", "reverse_proxy__tls_internal: true\nreverse_proxy__acme_ca: https://ca.invalid/dir",
         "tls_internal contradicts an acme_ca"),
        ("pebble: true", "reverse_proxy__tls_internal: true", "tls_internal contradicts pebble"),
        ("needs: [internet]", "reverse_proxy__acme_ca: https://ca.invalid/dir\n"
         "reverse_proxy__acme_dns_provider: gandi", "a DNS provider needs the token"),
        ("needs: [gandi_token]", "reverse_proxy__acme_ca: https://ca.invalid/dir",
         "sets no gandi DNS provider"),
        ("needs: []", "reverse_proxy__tls_internal: false", "a tier must choose a CA"),
    ],
)
def test_contradictory_tier(tmp_path: Path, meta: str, variables: str, says: str) -> None:
    text = f"boma_tier:\n  description: t\n  {meta}\n{variables}\n"
    assert says in bad_tier(tmp_path, text).message


def test_bad_tier_message_names_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, "tier", "boma_tier: {}\nreverse_proxy__tls_internal: false\n")
    with pytest.raises(BadInput) as caught:
        config.load_tier("tier", directory=tmp_path)
    assert str(path) in caught.value.message


# -- what a profile's steps apply ------------------------------------------------------------


def test_the_roles_each_real_profile_applies() -> None:
    assert config.roles_applied(config.load_profile("askari")) == {"base", "docker_host", "reverse_proxy"}
    # github_runner is in workstation.yml behind `when: github_runner__enabled`, decided on the host.
    assert config.roles_applied(config.load_profile("ubongo")) == {
        "base", "integration_test", "github_runner"}
    assert config.load_profile("askari").needs_caddy
    assert not config.load_profile("ubongo").needs_caddy


VM = "boma-it-check-0a1b2c3d"
_PLAY_HOSTS = re.compile(r"hosts \(\d+\):\n(?P<hosts>(?:\s+\S+\n)*)")
_TASK = re.compile(r"^\s+(?P<role>[\w.-]+) : (?P<task>.*?)\tTAGS", re.M)
ARG_SPEC_TASK = "Validating arguments against arg spec"  # tagged always, does no work of the role


def ansible_roles(profile: config.Profile, tmp_path: Path) -> set[str]:
    """What Ansible itself lists for the profile's steps against its rendered inventory."""
    endpoint = Endpoint(alias=VM, port=40022, user="ansible", key=tmp_path / "id_ed25519")
    rendered = inventory.render(tmp_path / "inventory", vm=VM, groups=profile.groups,
                                inventory_host=profile.inventory_host, endpoint=endpoint,
                                real_inventory=paths.PRODUCTION_INVENTORY)
    roles: set[str] = set()
    for tags, steps in itertools.groupby(profile.steps, key=lambda step: step.tags):
        listing = proc.run(
            ["ansible-playbook", "-i", str(rendered.path / "hosts.yml"), "--list-hosts", "--list-tasks",
             *(["--tags", ",".join(tags)] if tags else []),
             *itertools.chain.from_iterable(("-e", f"@{file}") for file in profile.overrides),
             *(str(paths.PLAYBOOKS_DIR / step.playbook) for step in steps)],
            quiet=True,
        ).stdout
        for play in listing.split("  play #")[1:]:
            hosts = _PLAY_HOSTS.search(play)
            if hosts and VM in hosts["hosts"].split():
                roles |= {m["role"] for m in _TASK.finditer(play) if not m["task"].startswith(ARG_SPEC_TASK)}
    return roles


@pytest.mark.parametrize("name", config.profile_names())
def test_roles_applied_agrees_with_ansible(name: str, tmp_path: Path) -> None:
    profile = config.load_profile(name)
    assert config.roles_applied(profile) == ansible_roles(profile, tmp_path)


def test_a_hosts_variable_set_in_an_override_decides_the_play(tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere.yml"
    elsewhere.write_text("---\nworkstation__hosts: some_other_group\n", encoding="utf-8")
    ubongo = config.load_profile("ubongo")
    moved = dataclasses.replace(ubongo, overrides=(*ubongo.overrides, elsewhere))
    assert config.roles_applied(moved) == {"base"}


def test_overlay_variables_merge_in_order(tmp_path: Path) -> None:
    first, second, empty = tmp_path / "a.yml", tmp_path / "b.yml", tmp_path / "c.yml"
    first.write_text("x: 1\ny: 1\n", encoding="utf-8")
    second.write_text("y: 2\n", encoding="utf-8")
    empty.write_text("---\n", encoding="utf-8")
    profile = dataclasses.replace(config.load_profile("ubongo"), overrides=(first, second, empty))
    assert config.overlay_variables(profile) == {"x": 1, "y": 2}
    assert config.overlay_variables(config.load_profile("ubongo"))["base__firewall_apply"] is True


@pytest.mark.parametrize(("text", "says"), [("- a\n", "must be a mapping"), ("x: [\n", "malformed YAML")])
def test_a_bad_override_is_bad_input(tmp_path: Path, text: str, says: str) -> None:
    bad = tmp_path / "bad.yml"
    bad.write_text(text, encoding="utf-8")
    profile = dataclasses.replace(config.load_profile("ubongo"), overrides=(bad,))
    with pytest.raises(BadInput, match=says):
        config.roles_applied(profile)


# -- which tiers a host can take ---------------------------------------------------------------


@pytest.mark.parametrize(("host", "tier"), [(h, t) for h in config.profile_names()
                                             for t in config.load_profile(h).cert_tiers])
def test_every_real_profile_takes_its_tiers(host: str, tier: str) -> None:
    config.check_tier_fits(config.load_profile(host), config.load_tier(tier))


def test_a_pebble_tier_needs_the_reverse_proxy() -> None:
    with pytest.raises(BadInput) as caught:
        config.check_tier_fits(config.load_profile("ubongo"), config.load_tier("acme-local"))
    message = caught.value.message
    assert "runs Pebble for the reverse_proxy role, which host 'ubongo' does not apply" in message
    assert caught.value.exit_code == 2


def test_a_pebble_tier_needs_ports_80_and_443() -> None:
    askari = config.load_profile("askari")
    only_https = dataclasses.replace(askari, published_ports=askari.published_ports[:1])
    with pytest.raises(BadInput, match="to publish guest ports 80 and 443"):
        config.check_tier_fits(only_https, config.load_tier("acme-local"))


@pytest.mark.parametrize("tier", ["internal", "le-staging"])
def test_a_tier_without_pebble_fits_any_host(tier: str) -> None:
    config.check_tier_fits(config.load_profile("ubongo"), config.load_tier(tier))
