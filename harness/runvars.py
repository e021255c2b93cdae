"""What a run hands Ansible on top of the real inventory: ``-e @file`` overlays, in order.

The real inventory is never edited; everything test-only comes in as one of these files:

- the profile's overrides (``tests/integration/overrides/``) and the tier (``certs/``);
- ``harness-vars.yml`` in the run directory: what this run set up for the tier (Pebble's
  directory and CA, the Caddy image built offline);
- ``secrets.yml`` in the run directory, mode 0600, only for a tier that needs a token, which
  comes from the environment only.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import yaml

from harness import config, matrix

HARNESS_VARS = "harness-vars.yml"
SECRETS = "secrets.yml"
CADDY_IMAGE_TAG = "boma/caddy:test"


def write_harness_vars(
    run_dir: Path, tier: config.CertTier, caddy_archive: Path, pebble_vars: Mapping[str, str]
) -> Path:
    """The run's own variables. A test VM cannot fetch Caddy's image, so it comes as a tarball
    built offline; a tier that needs the internet keeps the production image (DNS plugin)."""
    harness_vars = dict(pebble_vars)
    if config.Need.INTERNET not in tier.needs:
        harness_vars.update(
            {"reverse_proxy__image": CADDY_IMAGE_TAG, "reverse_proxy__image_archive": str(caddy_archive)}
        )
    path = run_dir / HARNESS_VARS
    path.write_text(
        "# Set by the harness for this run.\n" + yaml.safe_dump(harness_vars, sort_keys=True),
        encoding="utf-8",
    )
    return path


def write_secrets(run_dir: Path, tier: config.CertTier) -> Path | None:
    """The tier's token, if it needs one, from the environment into a 0600 file (removed with
    the run directory; every role task that touches it is no_log)."""
    if config.Need.GANDI_TOKEN not in tier.needs:
        return None
    path = run_dir / SECRETS
    path.touch(mode=0o600)
    token = os.environ.get(matrix.NEED_ENV[config.Need.GANDI_TOKEN.value], "")
    path.write_text(yaml.safe_dump({"reverse_proxy__gandi_token": token}), encoding="utf-8")
    return path


def overlays(
    run_dir: Path, profile: config.Profile, tier: config.CertTier, extra: tuple[Path, ...] = ()
) -> list[Path]:
    """Every overlay in precedence order (later wins): profile overrides, the tier, the
    caller's extras, the run's own variables, its secrets."""
    secrets = run_dir / SECRETS
    return [
        *profile.overrides,
        tier.path,
        *extra,
        run_dir / HARNESS_VARS,
        *([secrets] if secrets.is_file() else []),
    ]
