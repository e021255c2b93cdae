"""The scrubber: known secret values never reach what the run writes."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness import secrets
from harness.secrets import REDACTED

SENTINEL = "sentinel-token-9f8e7d"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in secrets.SECRET_ENV:
        monkeypatch.delenv(name, raising=False)


def test_scrub_text_with_given_values() -> None:
    text = f"Bearer {SENTINEL} and again {SENTINEL}."
    assert secrets.scrub_text(text, [SENTINEL]) == f"Bearer {REDACTED} and again {REDACTED}."


@pytest.mark.parametrize("name", secrets.SECRET_ENV)
def test_scrub_text_reads_secrets_from_the_environment(monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    monkeypatch.setenv(name, SENTINEL)
    assert secrets.scrub_text(f"token={SENTINEL}") == f"token={REDACTED}"


def test_nothing_to_scrub_without_secrets() -> None:
    assert secrets.known_secrets() == []
    assert secrets.scrub_text(f"token={SENTINEL}") == f"token={SENTINEL}"


def test_short_values_are_not_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GANDI_BEARER_TOKEN", "abc12")
    monkeypatch.setenv("GITHUB_RUNNER_TOKEN", "")
    assert secrets.known_secrets() == []
    assert secrets.scrub_text("abc12 is in this line") == "abc12 is in this line"


def test_six_characters_are_a_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GANDI_BEARER_TOKEN", "abc123")
    assert secrets.known_secrets() == ["abc123"]
    assert secrets.scrub_text("x abc123 y") == f"x {REDACTED} y"


def test_a_longer_secret_containing_a_shorter_one_is_redacted_whole(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GANDI_BEARER_TOKEN", "secret")
    monkeypatch.setenv("ANSIBLE_VAULT_PASSWORD", "secret-and-more")
    assert secrets.scrub_text("pw=secret-and-more") == f"pw={REDACTED}"


def test_scrub_tree_rewrites_every_file_below_the_root(tmp_path: Path) -> None:
    (tmp_path / "a" / "b").mkdir(parents=True)
    text = tmp_path / "a" / "b" / "journal.txt"
    text.write_text(f"line 1\nAuthorization: Bearer {SENTINEL}\n", encoding="utf-8")
    binary = tmp_path / "core.bin"
    binary.write_bytes(b"\x00\xff" + SENTINEL.encode() + b"\xfe")
    clean = tmp_path / "clean.txt"
    clean.write_text("nothing here\n", encoding="utf-8")
    secrets.scrub_tree(tmp_path, [SENTINEL])
    assert text.read_text(encoding="utf-8") == f"line 1\nAuthorization: Bearer {REDACTED}\n"
    assert binary.read_bytes() == b"\x00\xff" + REDACTED.encode() + b"\xfe"
    assert clean.read_text(encoding="utf-8") == "nothing here\n"


def test_scrub_tree_uses_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GITHUB_RUNNER_TOKEN", SENTINEL)
    file = tmp_path / "runner.log"
    file.write_text(SENTINEL, encoding="utf-8")
    secrets.scrub_tree(tmp_path)
    assert file.read_text(encoding="utf-8") == REDACTED
