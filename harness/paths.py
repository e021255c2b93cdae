"""Where things live: the repository, the image cache, per-run state and evidence."""

from __future__ import annotations

import os
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PROFILES_DIR = REPO / "profiles"
CERTS_DIR = REPO / "certs"
OVERRIDES_DIR = REPO / "tests" / "integration" / "overrides"
SUITES_DIR = REPO / "tests" / "integration"
PRODUCTION_INVENTORY = REPO / "inventories" / "production"
PLAYBOOKS_DIR = REPO / "playbooks"


def cache_dir() -> Path:
    """Golden images and container tarballs, keyed by recipe hash (``BOMA_CACHE_DIR``)."""
    return Path(os.environ.get("BOMA_CACHE_DIR", "/var/cache/boma"))


def artifacts_dir() -> Path:
    """Per-run evidence, summaries and JUnit files (``BOMA_ARTIFACTS_DIR``)."""
    return Path(os.environ.get("BOMA_ARTIFACTS_DIR", str(REPO / "artifacts")))


def runs_dir() -> Path:
    """Per-run working state: overlay, seed, key, console (``BOMA_RUNS_DIR``).

    Lives outside the repository because libvirt's qemu reads the overlay and writes the
    console log there.
    """
    return Path(os.environ.get("BOMA_RUNS_DIR", "/var/lib/boma/runs"))


def run_artifacts(host: str, tier: str, run_id: str) -> Path:
    """One run's evidence folder: ``artifacts/<host>-<tier>-<run_id>/``."""
    return artifacts_dir() / f"{host}-{tier}-{run_id}"
