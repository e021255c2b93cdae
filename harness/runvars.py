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
from harness.private import private_file

HARNESS_VARS = "harness-vars.yml"
SECRETS = "secrets.yml"
CADDY_IMAGE_TAG = "boma/caddy:test"


def wants_caddy_archive(profile: config.Profile, tier: config.CertTier) -> bool:
    """Whether the run needs the Caddy tarball built offline: only for a profile that applies
    the reverse proxy, and not on a tier that reaches the internet (it pulls the production
    image, with the DNS plugin)."""
    return profile.needs_caddy and config.Need.INTERNET not in tier.needs


def write_harness_vars(
    run_dir: Path, tier: config.CertTier, caddy_archive: Path | None, pebble_vars: Mapping[str, str]
) -> Path:
    """The run's own variables. A test VM cannot fetch Caddy's image, so it comes as a tarball
    built offline; a tier that needs the internet keeps the production image (DNS plugin). No
    archive (``None``: the profile runs no Caddy, see :func:`wants_caddy_archive`) sets no
    image variable at all."""
    harness_vars = dict(pebble_vars)
    if caddy_archive is not None and config.Need.INTERNET not in tier.needs:
        harness_vars.update(
            {"reverse_proxy__image": CADDY_IMAGE_TAG, "reverse_proxy__image_archive": str(caddy_archive)}
        )
    path = private_file(run_dir / HARNESS_VARS)
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
    private_file(path)
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
