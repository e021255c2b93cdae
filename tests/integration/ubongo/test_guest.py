"""ubongo, checked from inside the guest after the reboot: the baseline (testinfra resources).

The control node publishes no port, so this suite has no `controller`-marked checks: the
cycle's pre-reboot phase has nothing to check for it, and says so.
"""

from __future__ import annotations

import json


def test_nftables_active_and_enabled(host):
    nftables = host.service("nftables")
    assert nftables.is_running, "nftables.service is not active: the firewall did not load at boot"
    assert nftables.is_enabled, "nftables.service is not enabled: the firewall will not load at boot"


def test_input_chain_is_default_deny(host):
    listing = json.loads(host.check_output("nft -j list chain inet filter input"))["nftables"]
    chain = next(item["chain"] for item in listing if "chain" in item)
    assert chain["hook"] == "input"
    assert chain["policy"] == "drop", "base's input chain is not default-deny: its ruleset is not loaded"


def test_ssh_up_on_all_interfaces(host):
    ssh = host.service("ssh")
    assert ssh.is_running, "sshd did not come back after the reboot"
    assert ssh.is_enabled
    assert host.socket("tcp://0.0.0.0:22").is_listening, "sshd is not on all interfaces (break-glass)"
