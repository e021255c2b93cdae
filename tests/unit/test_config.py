"""Host profiles and cert tiers: the real files load as expected; every bad input is BadInput."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
import yaml

from harness import config, paths
from harness.config import Need, PlaybookStep, PublishedPort
from harness.errors import BadInput, ExitCode

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


def test_profile_names_come_from_the_profiles_folder() -> None:
    assert "askari" in config.profile_names()
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
