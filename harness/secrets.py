"""Secrets the run knows of, and the scrubber that keeps them out of everything it writes."""

from __future__ import annotations

import os
from pathlib import Path

# Environment variables whose values are secrets wherever they appear.
SECRET_ENV = ("GANDI_BEARER_TOKEN", "GITHUB_RUNNER_TOKEN", "ANSIBLE_VAULT_PASSWORD")
REDACTED = "***REDACTED***"
MIN_SECRET_LEN = 6  # shorter values would redact ordinary words


def known_secrets() -> list[str]:
    values = [os.environ.get(name, "") for name in SECRET_ENV]
    return sorted({v for v in values if len(v) >= MIN_SECRET_LEN}, key=len, reverse=True)


def scrub_text(text: str, secrets: list[str] | None = None) -> str:
    for value in known_secrets() if secrets is None else secrets:
        text = text.replace(value, REDACTED)
    return text


def scrub_file(path: Path, secrets: list[str] | None = None) -> None:
    values = known_secrets() if secrets is None else secrets
    if not values or not path.is_file():
        return
    data = path.read_bytes()
    clean = data
    for value in values:
        clean = clean.replace(value.encode(), REDACTED.encode())
    if clean != data:
        path.write_bytes(clean)


def scrub_tree(root: Path, secrets: list[str] | None = None) -> None:
    for path in root.rglob("*"):
        scrub_file(path, secrets)
