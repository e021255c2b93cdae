"""The overlays a run hands Ansible: their order, the run's own variables, the token file."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from harness import config, runvars

CADDY = Path("/var/cache/boma/caddy-0123.tar")


def read(path: Path) -> dict[str, object]:
    data: dict[str, object] = yaml.safe_load(path.read_text(encoding="utf-8"))
    return data


def test_an_offline_tier_gets_the_caddy_image_built_offline(tmp_path: Path) -> None:
    path = runvars.write_harness_vars(tmp_path, config.load_tier("internal"), CADDY, {})
    assert read(path) == {
        "reverse_proxy__image": runvars.CADDY_IMAGE_TAG,
        "reverse_proxy__image_archive": str(CADDY),
    }


def test_an_internet_tier_keeps_the_production_image_and_pebble_vars_pass_through(tmp_path: Path) -> None:
    pebble_vars = {"reverse_proxy__acme_ca": "https://10.0.2.2:40000/dir"}
    path = runvars.write_harness_vars(tmp_path, config.load_tier("le-staging"), CADDY, pebble_vars)
    assert read(path) == pebble_vars


def test_no_archive_sets_no_image_variable(tmp_path: Path) -> None:
    """A profile that runs no Caddy gets no Caddy image; Pebble's variables still pass through."""
    assert read(runvars.write_harness_vars(tmp_path, config.load_tier("internal"), None, {})) == {}
    pebble_vars = {"reverse_proxy__acme_ca": "https://10.0.2.2:40000/dir"}
    path = runvars.write_harness_vars(tmp_path, config.load_tier("internal"), None, pebble_vars)
    assert read(path) == pebble_vars


@pytest.mark.parametrize(
    ("host", "tier", "wanted"),
    [("askari", "internal", True), ("askari", "acme-local", True), ("askari", "le-staging", False),
     ("ubongo", "internal", False)],
)
def test_the_caddy_archive_is_wanted_only_where_caddy_runs_offline(
    host: str, tier: str, wanted: bool
) -> None:
    assert runvars.wants_caddy_archive(config.load_profile(host), config.load_tier(tier)) is wanted


def test_the_token_file_exists_only_for_a_tier_that_needs_it_and_is_private(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GANDI_BEARER_TOKEN", "sentinel-token-5e4d")
    assert runvars.write_secrets(tmp_path, config.load_tier("internal")) is None
    assert not (tmp_path / runvars.SECRETS).exists()
    path = runvars.write_secrets(tmp_path, config.load_tier("le-prod-wildcard"))
    assert path is not None
    assert path.stat().st_mode & 0o777 == 0o600
    assert read(path) == {"reverse_proxy__gandi_token": "sentinel-token-5e4d"}


def test_overlays_run_from_the_profile_to_the_runs_secrets(tmp_path: Path) -> None:
    profile, tier = config.load_profile("askari"), config.load_tier("internal")
    mine = tmp_path / "mine.yml"
    expected = [*profile.overrides, tier.path, mine, tmp_path / runvars.HARNESS_VARS]
    assert runvars.overlays(tmp_path, profile, tier, (mine,)) == expected
    (tmp_path / runvars.SECRETS).touch()
    assert runvars.overlays(tmp_path, profile, tier, (mine,)) == [*expected, tmp_path / runvars.SECRETS]
