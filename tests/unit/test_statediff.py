"""The state diff across the reboot: normalisation drops what every reboot changes, the
comparison names what else changed, and expected differences need a reason.

The raw captures are shaped as ``harness/guest/state_probe.py`` prints them (ss, nft -j,
systemctl, docker inspect cut down, findmnt -J, ip -j); recorded ones from a real askari cycle
are in ``data/statediff/``.
"""

from __future__ import annotations

import http.server
import json
import socket
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from harness import config, hoststate, statediff
from harness.config import Allowance, PublishedPort
from harness.errors import ExitCode

RECORDED = Path(__file__).parent / "data" / "statediff"


def nft(*items: dict[str, Any]) -> str:
    return json.dumps({"nftables": [{"metainfo": {"version": "1.1.3"}}, *items]})


FORWARD = {
    "chain": {
        "family": "inet",
        "table": "filter",
        "name": "forward",
        "handle": 2,
        "type": "filter",
        "hook": "forward",
        "prio": 0,
        "policy": "drop",
    }
}
ACCEPT_DOCKER = {
    "rule": {
        "family": "inet",
        "table": "filter",
        "chain": "forward",
        "handle": 7,
        "expr": [
            {"match": {"op": "==", "left": {"meta": {"key": "iifname"}}, "right": "docker0"}},
            {"counter": {"packets": 12, "bytes": 720}},
            {"accept": None},
        ],
    }
}
DNAT = {
    "rule": {
        "family": "ip",
        "table": "nat",
        "chain": "DOCKER",
        "handle": 9,
        "expr": [
            {"match": {"op": "==", "left": {"payload": {"protocol": "tcp", "field": "dport"}}, "right": 443}},
            {"xt": {"type": "target", "name": "DNAT"}},
            {
                "match": {
                    "op": "==",
                    "left": {"payload": {"protocol": "ip", "field": "daddr"}},
                    "right": "172.17.0.2",
                }
            },
        ],
    }
}


def container(name: str, address: str, status: str = "running") -> dict[str, Any]:
    return {
        "Name": f"/{name}",
        "State": {"Status": status},
        "HostConfig": {"RestartPolicy": {"Name": "unless-stopped", "MaximumRetryCount": 0}},
        "Config": {"Image": "boma/caddy:local"},
        "NetworkSettings": {
            "Ports": {
                "443/tcp": [{"HostIp": "0.0.0.0", "HostPort": "443"}, {"HostIp": "::", "HostPort": "443"}]
            },
            "Networks": {"bridge": {"IPAddress": address, "GlobalIPv6Address": ""}},
        },
    }


def raw(**changes: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "listening": (
            'tcp LISTEN 0 4096 0.0.0.0:443 0.0.0.0:* users:(("docker-proxy",pid=1234,fd=7))\n'
            'tcp LISTEN 0 128 0.0.0.0:22 0.0.0.0:* users:(("sshd",pid=611,fd=3))\n'
            'udp UNCONN 0 0 0.0.0.0:45873 0.0.0.0:* users:(("dhclient",pid=455,fd=9))\n'
        ),
        "nft": nft(FORWARD, ACCEPT_DOCKER, DNAT),
        "units": (
            "caddy-stack.service loaded active running Caddy\n"
            "nftables.service loaded active exited nftables\n"
            "apt-daily.service loaded activating start Daily apt download activities\n"
            "session-3.scope loaded active running Session 3 of User admin\n"
            "old.service loaded inactive dead Old\n"
        ),
        "enabled": "nftables.service enabled enabled\ndocker.service enabled enabled\n",
        "containers": json.dumps([container("caddy", "172.17.0.2")]),
        "mounts": json.dumps(
            {
                "filesystems": [
                    {"target": "/", "source": "/dev/vda1", "fstype": "ext4"},
                    {"target": "/proc", "source": "proc", "fstype": "proc"},
                    {"target": "/run/docker/netns/abc", "source": "nsfs[net:[4026532]]", "fstype": "nsfs"},
                    {"target": "/var/lib/docker/overlay2/x/merged", "source": "overlay", "fstype": "overlay"},
                ]
            }
        ),
        "routes4": json.dumps(
            [
                {"dst": "default", "gateway": "10.0.2.2", "dev": "ens3", "protocol": "dhcp", "flags": []},
                {
                    "dst": "172.17.0.0/16",
                    "dev": "docker0",
                    "protocol": "kernel",
                    "scope": "link",
                    "flags": ["linkdown"],
                },
            ]
        ),
        "routes6": "[]",
        "sysctls": {"net.ipv4.ip_forward": "1", "net.bridge.bridge-nf-call-iptables": None},
        "ephemeral_ports": "32768\t60999",
        "boot_id": "aaaa",
    }
    base.update(changes)
    return base


PORTS = {"https (443)": "answers (issuer CN=Caddy Local Authority)"}


def test_normalising_keeps_what_a_host_is_and_drops_what_a_boot_is() -> None:
    state = statediff.normalise(raw(), PORTS)
    assert state["listening/tcp 0.0.0.0:443"] == "docker-proxy"  # the process, not its pid
    assert not any("45873" in key for key in state)  # an ephemeral port
    assert state["units/caddy-stack.service"] == "active/running"
    assert state["units/nftables.service"] == "active/exited"
    assert not any(k.startswith(("units/apt-daily", "units/session-", "units/old")) for k in state)
    assert state["enabled/docker.service"] == "enabled"
    assert state["containers/caddy"] == (
        "running image=boma/caddy:local restart=unless-stopped ports=0.0.0.0:443->443/tcp,:::443->443/tcp"
    )
    assert set(k for k in state if k.startswith("mounts/")) == {"mounts//"}
    assert state["routes/default dev ens3"] == "proto dhcp scope global via 10.0.2.2"
    assert state["sysctl/net.bridge.bridge-nf-call-iptables"] == statediff.ABSENT
    assert state["nft/inet filter forward"] == "type filter; hook forward; prio 0; policy drop"
    assert state["nft/inet filter forward: meta iifname docker0 accept"] == "present"  # no counter
    assert state["ports/https (443)"].startswith("answers")
    assert "boot_id" not in json.dumps(state)


def test_a_container_address_is_named_by_its_container() -> None:
    state = statediff.normalise(raw(), {})
    rule = [k for k in state if k.startswith("nft/ip nat DOCKER")]
    xt = '{"xt": {"name": "DNAT", "type": "target"}}'
    assert rule == [f"nft/ip nat DOCKER: tcp dport 443 {xt} ip daddr <container caddy>"]


def test_a_plain_reboot_changes_nothing_that_counts() -> None:
    """pids, counters, handles, boot id, ephemeral ports and container addresses all differ."""
    after_raw = raw(
        listening=raw()["listening"].replace("pid=1234", "pid=987").replace("45873", "51234"),
        nft=nft(
            FORWARD,
            {"rule": {**ACCEPT_DOCKER["rule"], "handle": 99}},
            {
                "rule": {
                    **DNAT["rule"],
                    "expr": [
                        *DNAT["rule"]["expr"][:2],
                        {
                            "match": {
                                "op": "==",
                                "left": {"payload": {"protocol": "ip", "field": "daddr"}},
                                "right": "172.17.0.3",
                            }
                        },
                    ],
                }
            },
        ),
        containers=json.dumps([container("caddy", "172.17.0.3")]),
        boot_id="bbbb",
    )
    before, after = statediff.normalise(raw(), PORTS), statediff.normalise(after_raw, PORTS)
    assert statediff.compare(before, after) == []


def test_the_incident_shows_as_the_port_that_stopped_answering_and_the_rule_that_went() -> None:
    before = statediff.normalise(raw(), PORTS)
    after = statediff.normalise(raw(nft=nft(FORWARD, DNAT)), {"https (443)": hoststate.SILENT})
    differences = statediff.compare(before, after)
    lines = [d.line() for d in statediff.unexpected(differences)]
    assert lines == [
        "- nft/inet filter forward: meta iifname docker0 accept: present → (absent)",
        "~ ports/https (443): answers (issuer CN=Caddy Local Authority) → silent",
    ]


def test_a_service_started_but_not_enabled_is_named() -> None:
    before = statediff.normalise(
        raw(units=raw()["units"] + "extra.service loaded active running Extra\n"), PORTS
    )
    after = statediff.normalise(raw(), PORTS)
    (difference,) = statediff.compare(before, after)
    assert difference.line() == "- units/extra.service: active/running → (absent)"
    assert not difference.expected


def test_expected_differences_need_a_rule_or_the_profile_with_its_reason() -> None:
    before = statediff.normalise(raw(units="cloud-final.service loaded active exited Cloud\n"), {})
    after = statediff.normalise(raw(units="foo.service loaded active running Foo\n"), {})
    differences = statediff.compare(before, after, (Allowance("units/foo.*", "foo starts at boot only"),))
    assert [d.path for d in differences] == ["units/cloud-final.service", "units/foo.service"]
    assert all(d.expected for d in differences)
    assert differences[1].why_expected == "foo starts at boot only (profile)"
    assert statediff.unexpected(differences) == []
    text = statediff.render(differences)
    assert text.startswith("0 unexpected, 2 expected")


def test_unknown_nft_expressions_stay_comparable_and_the_policy_is_part_of_the_chain() -> None:
    opened = {"chain": {**FORWARD["chain"], "policy": "accept"}}
    before = statediff.normalise(raw(nft=nft(FORWARD)), {})
    after = statediff.normalise(raw(nft=nft(opened)), {})
    (difference,) = statediff.compare(before, after)
    assert difference.path == "nft/inet filter forward"
    assert difference.after.endswith("policy accept")


def test_missing_or_broken_sections_are_empty_not_errors() -> None:
    state = statediff.normalise({"nft": "not json", "containers": None, "mounts": "{"}, {})
    assert state == {}


def test_check_fails_the_cycle_naming_the_differences(tmp_path: Path) -> None:
    before = statediff.normalise(raw(), PORTS)
    after = statediff.normalise(raw(), {"https (443)": hoststate.SILENT})
    differences = hoststate.record(before, after, (), tmp_path)
    assert (tmp_path / "diff.txt").read_text(encoding="utf-8").startswith("1 unexpected")
    assert json.loads((tmp_path / "diff.json").read_text(encoding="utf-8"))[0]["path"] == "ports/https (443)"
    with pytest.raises(hoststate.StateChanged) as caught:
        hoststate.check(differences, tmp_path)
    assert caught.value.exit_code == ExitCode.SUT_FAILED
    assert "ports/https (443)" in caught.value.message


def test_the_guest_probe_runs_with_a_plain_python3_and_prints_one_object() -> None:
    """Runs the probe here as the guest would (whatever tools this machine lacks are null)."""
    done = subprocess.run(
        [sys.executable, str(hoststate.PROBE_SCRIPT)], capture_output=True, text=True, timeout=120, check=True
    )
    data = json.loads(done.stdout)
    assert set(data) >= {
        "listening",
        "nft",
        "units",
        "enabled",
        "containers",
        "mounts",
        "routes4",
        "sysctls",
        "ephemeral_ports",
        "boot_id",
    }
    assert "Env" not in done.stdout  # a container's environment is never taken


def test_a_port_probe_of_a_dead_loopback_port_is_silent() -> None:
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    assert hoststate.probe_port(port, None) == hoststate.SILENT
    assert hoststate.probe_port(port, "cloud.boma.example") == hoststate.SILENT


def test_a_port_probe_gets_an_answer_from_a_loopback_http_server() -> None:
    server = http.server.HTTPServer(("127.0.0.1", 0), http.server.BaseHTTPRequestHandler)
    thread = threading.Thread(target=server.handle_request, daemon=True)
    thread.start()
    try:
        port = server.server_address[1]
        answers = hoststate.port_answers([PublishedPort("http", 80)], {"80": port})
        assert answers == {"http (80)": "answers"}
    finally:
        server.server_close()
        thread.join(timeout=5)


def test_recorded_captures_of_a_real_askari_reboot_differ_only_as_expected() -> None:
    """askari/internal on 2026-12-02 (run 831d44eb): 198 entries before the reboot, 194 after.
    New veth names, first-boot units and apparmor (declared in the profile) are the only
    differences; the ports answered with the same issuer both times."""
    before = json.loads((RECORDED / "before-reboot.json").read_text(encoding="utf-8"))
    after = json.loads((RECORDED / "after-reboot.json").read_text(encoding="utf-8"))
    old = statediff.normalise(before["raw"], before["ports"])
    new = statediff.normalise(after["raw"], after["ports"])
    allow = config.load_profile("askari").reboot_diff_allow
    differences = statediff.compare(old, new, allow)
    assert statediff.unexpected(differences) == [], statediff.render(differences)
    assert {d.path for d in differences} >= {"units/apparmor.service", "units/ldconfig.service"}
    assert old["ports/https (443)"].startswith("answers (issuer CN=Caddy Local Authority")
    assert old["nft/inet filter forward: meta iifname docker0 accept"] == "present"
    assert any(k.startswith("routes/") and "veth<container>" in k for k in old)


def test_without_the_profiles_allowance_the_recorded_reboot_fails_on_apparmor() -> None:
    before = json.loads((RECORDED / "before-reboot.json").read_text(encoding="utf-8"))
    after = json.loads((RECORDED / "after-reboot.json").read_text(encoding="utf-8"))
    differences = statediff.compare(
        statediff.normalise(before["raw"], before["ports"]), statediff.normalise(after["raw"], after["ports"])
    )
    assert [d.path for d in statediff.unexpected(differences)] == ["units/apparmor.service"]


def test_a_published_port_silent_before_and_after_the_reboot_still_fails(tmp_path: Path) -> None:
    """No difference (the port never answered: the fix taken out of the role), but a port the
    profile publishes must answer."""
    state = statediff.normalise(raw(), {"https (443)": hoststate.SILENT, "http (80)": "answers"})
    differences = hoststate.record(state, state, (), tmp_path)
    assert differences == []
    assert hoststate.silent_ports(state) == ["ports/https (443)"]
    with pytest.raises(hoststate.StateChanged) as caught:
        hoststate.check(differences, tmp_path, hoststate.silent_ports(state))
    assert "ports/https (443): silent (a published port must answer)" in caught.value.message


def test_a_port_that_stopped_answering_is_named_once() -> None:
    before = statediff.normalise(raw(), PORTS)
    after = statediff.normalise(raw(), {"https (443)": hoststate.SILENT})
    differences = statediff.compare(before, after)
    with pytest.raises(hoststate.StateChanged) as caught:
        hoststate.check(differences, Path("d"), hoststate.silent_ports(after))
    assert caught.value.message.startswith("1 unexpected difference(s)")
    assert caught.value.message.count("ports/https (443)") == 1
