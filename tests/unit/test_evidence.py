"""The evidence bundle, and the check that recognises the 2026-06-17 incident's forward chain."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness import evidence, proc
from harness.errors import HarnessError
from harness.ssh import Endpoint

SENTINEL = "sentinel-token-9f8e7d"

BASE_INPUT = """\
table inet filter {
	chain input {
		type filter hook input priority filter; policy drop;
		ct state established,related accept
		iif "lo" accept
		tcp dport { 22, 80, 443 } accept
	}
"""
PURE_DROP_FORWARD = """\
	chain forward {
		type filter hook forward priority filter; policy drop;
	}
"""
DOCKER_FORWARD = """\
	chain forward {
		type filter hook forward priority filter; policy drop;
		iifname "docker0" accept
		oifname "docker0" ct state established,related accept
	}
"""
OUTPUT = """\
	chain output {
		type filter hook output priority filter; policy accept;
	}
}
"""
# What Docker itself installs (iptables-nft): accept rules in a FORWARD chain of another table.
DOCKER_TABLE = """\
table ip filter {
	chain FORWARD {
		type filter hook forward priority filter; policy drop;
		counter packets 0 bytes 0 jump DOCKER-USER
		oifname "docker0" ct state related,established counter packets 0 bytes 0 accept
		iifname "docker0" oifname != "docker0" counter packets 0 bytes 0 accept
	}
}
"""


def test_pure_drop_forward_chain_is_recognised() -> None:
    assert evidence.forward_chain_is_pure_drop(BASE_INPUT + PURE_DROP_FORWARD + OUTPUT)


def test_an_accept_rule_in_the_forward_chain_is_not_pure_drop() -> None:
    assert not evidence.forward_chain_is_pure_drop(BASE_INPUT + DOCKER_FORWARD + OUTPUT)


def test_a_forward_chain_with_policy_accept_is_not_pure_drop() -> None:
    ruleset = BASE_INPUT + PURE_DROP_FORWARD.replace("policy drop", "policy accept") + OUTPUT
    assert not evidence.forward_chain_is_pure_drop(ruleset)


def test_a_missing_forward_chain_is_not_pure_drop() -> None:
    assert not evidence.forward_chain_is_pure_drop(BASE_INPUT + OUTPUT)
    assert not evidence.forward_chain_is_pure_drop("")


def test_dockers_own_forward_chain_does_not_confuse_it() -> None:
    assert evidence.forward_chain_is_pure_drop(DOCKER_TABLE + BASE_INPUT + PURE_DROP_FORWARD + OUTPUT)
    assert evidence.forward_chain_is_pure_drop(BASE_INPUT + PURE_DROP_FORWARD + OUTPUT + DOCKER_TABLE)
    # Docker's chain alone, policy drop or not, is not base's chain.
    assert not evidence.forward_chain_is_pure_drop(DOCKER_TABLE + BASE_INPUT + OUTPUT)
    pure_docker = "table ip filter {\n" + PURE_DROP_FORWARD + "}\n"
    assert not evidence.forward_chain_is_pure_drop(pure_docker + BASE_INPUT + OUTPUT)


def test_accept_rules_in_other_chains_of_the_table_do_not_count() -> None:
    # BASE_INPUT's chain input is full of accepts; only chain forward is judged.
    assert " accept" in BASE_INPUT
    assert evidence.forward_chain_is_pure_drop(BASE_INPUT + PURE_DROP_FORWARD + OUTPUT)


# -- collect --------------------------------------------------------------------------------------


@pytest.fixture
def console(tmp_path: Path) -> Path:
    log = tmp_path / "run" / "console.log"
    log.parent.mkdir()
    log.write_text(f"[  1.0] Booting\ncloud-init: token={SENTINEL}\nlogin:\n", encoding="utf-8")
    return log


@pytest.fixture(autouse=True)
def secret_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GANDI_BEARER_TOKEN", SENTINEL)


def bundle_text(bundle: Path) -> dict[str, str]:
    return {p.name: p.read_text(encoding="utf-8") for p in bundle.rglob("*") if p.is_file()}


def test_collect_without_ssh_writes_the_reason_and_the_console(tmp_path: Path, console: Path) -> None:
    bundle = evidence.collect(None, console, tmp_path / "artifacts" / "evidence",
                              reason="boot timed out after 900s")
    files = bundle_text(bundle)
    assert set(files) == {"README.txt", "console.log"}
    assert "boot timed out after 900s" in files["README.txt"]
    assert "Booting" in files["console.log"]
    assert "login:" in files["console.log"]


def test_collect_without_a_console_log_still_writes_the_reason(tmp_path: Path) -> None:
    bundle = evidence.collect(None, tmp_path / "absent.log", tmp_path / "evidence", reason="libvirt died")
    assert set(bundle_text(bundle)) == {"README.txt"}


def test_secrets_are_scrubbed_from_every_file(tmp_path: Path, console: Path) -> None:
    bundle = evidence.collect(None, console, tmp_path / "evidence",
                              reason=f"apply failed: Authorization: Bearer {SENTINEL}")
    files = bundle_text(bundle)
    assert files
    for name, text in files.items():
        assert SENTINEL not in text, name
    assert "***REDACTED***" in files["README.txt"]
    assert "***REDACTED***" in files["console.log"]


def test_guest_evidence_is_collected_and_scrubbed(
    tmp_path: Path, console: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    commands: list[list[str]] = []

    def fake_run(_endpoint: Endpoint, command: list[str], **_kwargs: object) -> proc.Result:
        commands.append(command)
        if command[1] == "docker":
            raise HarnessError("command timed out after 90s: ssh ...")
        status = 1 if command[1] == "journalctl" else 0
        return proc.Result(tuple(command), status, f"output with {SENTINEL}\n", "no such boot")

    monkeypatch.setattr(evidence.ssh, "run", fake_run)
    endpoint = Endpoint(alias="vm", port=40022, user="ansible", key=tmp_path / "key")
    files = bundle_text(evidence.collect(endpoint, console, tmp_path / "evidence", reason="verify failed"))
    assert set(files) == {"README.txt", "console.log", *(name for name, _ in evidence.GUEST_COMMANDS)}
    assert all(command[0] == "sudo" for command in commands)
    assert "[could not collect: command timed out" in files["docker-ps.txt"]
    assert "[exit status 1]" in files["journal-previous-boot.txt"]
    assert "no such boot" in files["journal-previous-boot.txt"]
    for name, text in files.items():
        assert SENTINEL not in text, name
