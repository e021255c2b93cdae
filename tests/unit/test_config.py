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
inventory_host: askari
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


HOST_PROFILES = [n for n in config.profile_names() if not config.load_profile(n).is_client]


def test_the_only_client_profile_is_the_peer() -> None:
    assert set(config.profile_names()) - set(HOST_PROFILES) == {"peer"}


@pytest.mark.parametrize("name", HOST_PROFILES)
def test_every_profile_mirrors_a_real_host_and_its_groups(name: str) -> None:
    profile = config.load_profile(name)
    assert profile.inventory_host in inventory.real_hosts(paths.PRODUCTION_INVENTORY)
    assert set(profile.groups) == real_groups(profile.inventory_host), (
        f"{name}: the VM must be in {profile.inventory_host}'s real groups, so the same group_vars apply")


def test_profile_and_tier_names_come_from_their_folders() -> None:
    """Any file added there is one more name (and so one more parametrized case below)."""
    assert {"askari", "ubongo"} <= set(config.profile_names())
    assert config.profile_names() == sorted(p.stem for p in paths.PROFILES_DIR.glob("*.yml"))
    assert {"acme-local", "internal", "le-prod-wildcard", "le-staging"} <= set(config.tier_names())
    assert config.tier_names() == sorted(p.stem for p in paths.CERTS_DIR.glob("*.yml"))


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
    assert profile.inventory_host == "askari"
    assert profile.published_ports == (PublishedPort("https", 443),)


def test_inventory_host_defaults_to_the_profile_name(tmp_path: Path) -> None:
    write(tmp_path, "askari", GOOD_PROFILE.replace("inventory_host: askari\n", ""))
    assert config.load_profile("askari", directory=tmp_path).inventory_host == "askari"


def test_malformed_yaml(tmp_path: Path) -> None:
    error = bad_profile(tmp_path, "groups: [offsite_hosts\nsteps: {\n")
    assert "malformed YAML" in error.message
    assert "\n" not in error.message


def test_a_key_given_twice_is_refused_not_silently_overwritten(tmp_path: Path) -> None:
    error = bad_profile(tmp_path, GOOD_PROFILE + "cert_tiers: [acme-local]\n")
    assert "key 'cert_tiers' appears twice" in error.message


@pytest.mark.parametrize("text", ["- a\n- b\n", "just a string\n", ""])
def test_top_level_must_be_a_mapping(tmp_path: Path, text: str) -> None:
    assert "expected a mapping at the top level" in bad_profile(tmp_path, text).message


def test_unknown_key(tmp_path: Path) -> None:
    error = bad_profile(tmp_path, GOOD_PROFILE + "colour: blue\n")
    assert "colour: unknown key (known: cert_tiers, description," in error.message


def test_a_misspelt_key_is_named_with_the_key_it_resembles(tmp_path: Path) -> None:
    """`cert_tier:` used to be dropped without a word: the host then had no cell in nox."""
    error = bad_profile(tmp_path, GOOD_PROFILE.replace("cert_tiers:", "cert_tier:"))
    assert "cert_tier: unknown key; did you mean 'cert_tiers'?" in error.message


def test_missing_playbook(tmp_path: Path) -> None:
    text = GOOD_PROFILE.replace("playbook: site.yml", "playbook: no-such-play.yml")
    assert "playbook 'no-such-play.yml' not found" in bad_profile(tmp_path, text).message


def test_step_without_playbook(tmp_path: Path) -> None:
    text = GOOD_PROFILE.replace("  - playbook: site.yml\n    tags: [base]\n", "  - tags: [base]\n")
    assert "steps[0].playbook: required" in bad_profile(tmp_path, text).message


def test_missing_override_file(tmp_path: Path) -> None:
    text = GOOD_PROFILE.replace("overrides: [askari.yml]", "overrides: [no-such-override.yml]")
    assert "no-such-override.yml not found" in bad_profile(tmp_path, text).message


@pytest.mark.parametrize(
    ("port", "says"),
    [("{name: https, guest: 70000}", "published_ports[0].guest: must be 1..65535"),
     ("{name: https, guest: 0}", "published_ports[0].guest: must be 1..65535"),
     ("{name: https, guest: '443'}", "published_ports[0].guest: must be an integer"),
     ("{name: https, guest: true}", "published_ports[0].guest: must be an integer"),
     ("{guest: 443}", "published_ports[0].name: required"),
     ("443", "published_ports[0]: must be a mapping")],
)
def test_bad_port(tmp_path: Path, port: str, says: str) -> None:
    text = GOOD_PROFILE.replace("{name: https, guest: 443}", port)
    assert says in bad_profile(tmp_path, text).message


@pytest.mark.parametrize(
    ("replace", "by", "says"),
    [
        ("groups: [offsite_hosts]", "groups: []", "groups: must not be empty"),
        ("groups: [offsite_hosts]", "groups: offsite_hosts", "groups: must be a list"),
        ("groups: [offsite_hosts]", "groups: [offsite_hosts, offsite_hosts]",
         "groups: 'offsite_hosts' listed more than once"),
        ("cert_tiers: [internal]", "cert_tiers: [bogus]", "cert_tiers[0]: cert tier 'bogus' has no file"),
        ("cert_tiers: [internal]", "cert_tiers: [internal, internal]",
         "cert_tiers: 'internal' listed more than once"),
        ("suite: askari", "suite: no-such-suite", "suite: test suite"),
        ("suite: askari", "suite: ../../profiles", "suite: must name a folder inside"),
        ("suite: askari", "suite: askari\nmemory_mib: 128", "memory_mib: must be 512..65536"),
        ("suite: askari", "suite: askari\nvcpus: 0", "vcpus: must be 1..64"),
        ("    tags: [base]", "    tags: base", "steps[0].tags: must be a list"),
        ("playbook: site.yml", "playbook: ../ansible.cfg", "steps[0].playbook: must name a playbook inside"),
        ("overrides: [askari.yml]", "overrides: [/etc/passwd]", "overrides[0]: must name a file inside"),
        ("{name: https, guest: 443}", "{name: https, guest: 443}\n  - {name: tls, guest: 443}",
         "published_ports: guest 443 listed more than once"),
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
    assert f"{key}: must be a list" in error.message


def test_every_error_at_once_each_with_its_file_and_key_path(tmp_path: Path) -> None:
    text = GOOD_PROFILE.replace("playbook: site.yml", "playbook: no-such-play.yml").replace(
        "published_ports:\n  - {name: https, guest: 443}",
        "published_ports:\n  - {name: https, guest: 443}\n  - {name: http, guest: 70000}",
    ) + "vcpus: 0\nidempotence_allow:\n  - {task: x}\n"
    error = bad_profile(tmp_path, text)
    shown = str(tmp_path / "vm.yml")
    lines = error.message.splitlines()
    assert lines[0] == f"{shown}: 4 errors"
    assert lines[1:] == [
        f"  {shown}: steps[0].playbook: playbook 'no-such-play.yml' not found in playbooks/",
        f"  {shown}: published_ports[1].guest: must be 1..65535",
        f"  {shown}: vcpus: must be 1..64",
        f"  {shown}: idempotence_allow[0].reason: required",
    ]
    assert isinstance(error, config.InvalidFile)
    assert error.problems == tuple(line.strip() for line in lines[1:])


def test_a_file_in_the_repository_is_named_relative_to_it(tmp_path: Path) -> None:
    layout = dataclasses.replace(config.Layout.current(), root=tmp_path)
    write(tmp_path / "profiles", "vm", GOOD_PROFILE.replace("vcpus", "x") + "vcpus: 99\n")
    with pytest.raises(BadInput) as caught:
        config.load_profile("vm", directory=tmp_path / "profiles", layout=layout)
    assert caught.value.message == "profiles/vm.yml: vcpus: must be 1..64"


def test_a_bad_profile_creates_nothing(tmp_path: Path) -> None:
    bad_profile(tmp_path, GOOD_PROFILE + "vcpus: 0\n")
    assert [p.name for p in tmp_path.iterdir()] == ["vm.yml"]


def test_a_group_that_is_not_in_the_real_inventory_names_the_known_ones(tmp_path: Path) -> None:
    text = GOOD_PROFILE.replace("groups: [offsite_hosts]", "groups: [offsite_host, docker_hosts]")
    error = bad_profile(tmp_path, text)
    known = sorted(config.inventory_names(paths.PRODUCTION_INVENTORY).groups)
    assert {"control", "docker_hosts", "offsite_hosts"} <= set(known)
    assert error.message == (f"{tmp_path / 'vm.yml'}: groups[0]: 'offsite_host' is not a group of "
                             f"inventories/production (known groups: {', '.join(known)})")


@pytest.mark.parametrize("group", ["all", "ungrouped"])
def test_the_implicit_groups_are_not_groups_a_profile_names(tmp_path: Path, group: str) -> None:
    text = GOOD_PROFILE.replace("groups: [offsite_hosts]", f"groups: [{group}]")
    assert f"groups[0]: '{group}' is not a group of" in bad_profile(tmp_path, text).message


def test_an_inventory_host_that_is_not_a_real_host_names_the_known_ones(tmp_path: Path) -> None:
    error = bad_profile(tmp_path, GOOD_PROFILE.replace("inventory_host: askari", "inventory_host: askar"))
    known = ", ".join(sorted(inventory.real_hosts(paths.PRODUCTION_INVENTORY)))
    assert f"inventory_host: 'askar' is not a host of inventories/production (known hosts: {known})" \
        in error.message


def test_the_default_inventory_host_must_be_a_real_host_too(tmp_path: Path) -> None:
    error = bad_profile(tmp_path, GOOD_PROFILE.replace("inventory_host: askari\n", ""), name="mfano")
    assert "inventory_host: 'mfano' is not a host of inventories/production " \
           "(inventory_host defaults to the profile's name)" in error.message


def test_the_real_inventory_names_its_hosts_and_groups() -> None:
    names = config.inventory_names(paths.PRODUCTION_INVENTORY)
    assert names.hosts == inventory.real_hosts(paths.PRODUCTION_INVENTORY)
    assert {"askari", "ubongo"} <= names.hosts
    assert not names.groups & {"all", "ungrouped"}
    for name in HOST_PROFILES:
        profile = config.load_profile(name)
        assert profile.inventory_host in names.hosts
        assert set(profile.groups) <= names.groups


def test_a_file_whose_name_is_not_a_plain_name_is_named_as_bad(tmp_path: Path) -> None:
    error = bad_profile(tmp_path, GOOD_PROFILE, name="Bad_Name")
    assert error.message == f"{tmp_path / 'Bad_Name.yml'}: the name must match {config.NAME_RE.pattern}"


@pytest.mark.parametrize("text", [b"\xff\xfe not utf-8\n"])
def test_a_file_that_is_not_text_is_bad_input_not_a_crash(tmp_path: Path, text: bytes) -> None:
    (tmp_path / "vm.yml").write_bytes(text)
    with pytest.raises(BadInput, match="cannot read it"):
        config.load_profile("vm", directory=tmp_path)


# -- bad tiers --------------------------------------------------------------------------------


def test_good_tmp_tier_loads(tmp_path: Path) -> None:
    write(tmp_path, "tier", INTERNAL_META + "reverse_proxy__tls_internal: true\n")
    assert config.load_tier("tier", directory=tmp_path).variables == {"reverse_proxy__tls_internal": True}


def test_tier_without_meta(tmp_path: Path) -> None:
    error = bad_tier(tmp_path, "reverse_proxy__tls_internal: true\n")
    assert "boma_tier: required" in error.message


def test_tier_unknown_meta_key(tmp_path: Path) -> None:
    text = INTERNAL_META + "  colour: red\nreverse_proxy__tls_internal: true\n"
    assert "boma_tier.colour: unknown key (known: description," in bad_tier(tmp_path, text).message


@pytest.mark.parametrize("variable", ["reverse_proxy__no_such_var", "base__firewall_apply", "tls_internal"])
def test_tier_unknown_variable(tmp_path: Path, variable: str) -> None:
    text = INTERNAL_META + f"reverse_proxy__tls_internal: true\n{variable}: 1\n"
    error = bad_tier(tmp_path, text)
    assert f"{variable}: unknown variable for the reverse_proxy role" in error.message


def test_tier_unknown_need(tmp_path: Path) -> None:
    text = "boma_tier:\n  needs: [a_pony]\nreverse_proxy__tls_internal: true\n"
    error = bad_tier(tmp_path, text)
    assert "a_pony" in error.message
    assert "gandi_token" in error.message


@pytest.mark.parametrize("needs", ["", "internet", "5"])
def test_tier_needs_that_are_not_a_list_are_bad_input_not_a_crash(tmp_path: Path, needs: str) -> None:
    text = f"boma_tier:\n  description: t\n  needs: {needs}\nreverse_proxy__tls_internal: true\n"
    assert "boma_tier.needs: must be a list" in bad_tier(tmp_path, text).message


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


def test_every_tier_error_at_once(tmp_path: Path) -> None:
    text = ("boma_tier:\n  needs: [a_pony]\n  pebble: maybe\n  colour: red\n"
            "reverse_proxy__tls_internl: true\n")
    error = bad_tier(tmp_path, text)
    shown = str(tmp_path / "tier.yml")
    assert error.message.splitlines() == [
        f"{shown}: 4 errors",
        f"  {shown}: boma_tier.needs[0]: must be one of 'internet' or 'gandi_token', not 'a_pony'",
        f"  {shown}: boma_tier.pebble: must be true or false",
        f"  {shown}: boma_tier.colour: unknown key (known: description, issuer_contains, needs, on_demand, "
        "pebble)",
        f"  {shown}: reverse_proxy__tls_internl: unknown variable for the reverse_proxy role "
        "(roles/reverse_proxy/defaults/main.yml); did you mean 'reverse_proxy__tls_internal'?",
    ]


def test_every_contradiction_of_a_tier_at_once(tmp_path: Path) -> None:
    text = ("boma_tier:\n  needs: []\n  pebble: true\nreverse_proxy__tls_internal: true\n"
            "reverse_proxy__acme_dns_provider: gandi\nreverse_proxy__acme_ca: https://ca.invalid/dir\n")
    lines = bad_tier(tmp_path, text).message.splitlines()
    assert lines[0].endswith(": 4 errors")
    assert [line.split(": ", 2)[1] for line in lines[1:]] == [
        "reverse_proxy__tls_internal", "reverse_proxy__tls_internal", "reverse_proxy__tls_internal",
        "boma_tier.needs"]


@pytest.mark.parametrize(("spelling", "on_demand"), [("false", False), ("'false'", False), ("no", False),
                                                     ("true", True), ("'true'", True), ("On", True)])
def test_on_demand_reads_every_yaml_spelling(tmp_path: Path, spelling: str, on_demand: bool) -> None:
    write(tmp_path, "tier", f"{INTERNAL_META}  on_demand: {spelling}\nreverse_proxy__tls_internal: true\n")
    assert config.load_tier("tier", directory=tmp_path).on_demand is on_demand


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
