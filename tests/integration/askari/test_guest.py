"""askari, checked from inside the guest after the reboot (testinfra resources)."""

from __future__ import annotations

import json


def test_docker_active_and_enabled(host):
    docker = host.service("docker")
    assert docker.is_running
    assert docker.is_enabled


def test_nftables_active_and_enabled(host):
    nftables = host.service("nftables")
    assert nftables.is_running, "nftables.service is not active: the firewall did not load at boot"
    assert nftables.is_enabled


def _forward_chain(host) -> tuple[dict, list[dict]]:
    listing = json.loads(host.check_output("nft -j list chain inet filter forward"))["nftables"]
    chain = next(item["chain"] for item in listing if "chain" in item)
    rules = [item["rule"] for item in listing if "rule" in item]
    return chain, rules


def test_forward_chain_is_default_deny(host):
    chain, _rules = _forward_chain(host)
    assert chain["hook"] == "forward"
    assert chain["policy"] == "drop", "the forward chain must stay default-deny"


def test_forward_chain_permits_container_traffic(host):
    _chain, rules = _forward_chain(host)
    accepted = [r for r in rules if any("accept" in stmt for stmt in r["expr"])]
    text = json.dumps(accepted)
    assert '"docker0"' in text, (
        "no accept rule for docker0 in inet filter forward: published container ports die "
        "after a reboot (the 2026-06-17 incident)")
    assert '"established"' in text, "no ct state established,related accept in the forward chain"


def test_caddy_container_running(host):
    caddy = host.docker("caddy")
    assert caddy.is_running, "the Caddy container did not come back after the reboot"
    policy = caddy.inspect()["HostConfig"]["RestartPolicy"]["Name"]
    assert policy in ("unless-stopped", "always")


def test_ssh_still_listens_on_all_interfaces(host):
    assert host.service("ssh").is_running
    assert host.socket("tcp://0.0.0.0:22").is_listening, "sshd is not on all interfaces (break-glass)"


def test_no_failed_units(host):
    failed = host.check_output("systemctl list-units --state=failed --plain --no-legend --no-pager")
    assert failed.strip() == "", f"failed units after the reboot:\n{failed}"
