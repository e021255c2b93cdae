"""Runs inside the guest (as root, by the harness over SSH): prints the raw state the reboot
diff compares, as one JSON object on stdout.

Standard library only: it runs with the guest's own python3. Each entry is a command's
output, or ``null`` when the command is missing or failed (Docker on a host without it).
Parsing and normalising are the controller's job (``harness/statediff.py``), where they are
unit-tested against recorded outputs.
"""

from __future__ import annotations

import json
import subprocess

TIMEOUT = 60
# Sysctls whose change across a reboot breaks hosts like these: forwarding (Docker's
# published ports), reverse-path filtering, and what the base role hardens.
SYSCTLS = (
    "net.ipv4.ip_forward",
    "net.ipv6.conf.all.forwarding",
    "net.ipv4.conf.all.rp_filter",
    "net.ipv4.conf.default.rp_filter",
    "net.ipv4.tcp_syncookies",
    "net.bridge.bridge-nf-call-iptables",
    "net.bridge.bridge-nf-call-ip6tables",
    "kernel.kptr_restrict",
    "kernel.dmesg_restrict",
    "vm.swappiness",
    "fs.protected_symlinks",
)
COMMANDS = {
    "listening": ["ss", "-Htlnup"],
    "nft": ["nft", "-j", "-s", "list", "ruleset"],
    "units": ["systemctl", "list-units", "--all", "--plain", "--no-legend", "--no-pager"],
    "enabled": ["systemctl", "list-unit-files", "--state=enabled", "--plain", "--no-legend", "--no-pager"],
    "mounts": ["findmnt", "-J", "-l", "-o", "TARGET,SOURCE,FSTYPE"],
    "routes4": ["ip", "-j", "-4", "route", "show", "table", "main"],
    "routes6": ["ip", "-j", "-6", "route", "show", "table", "main"],
}


def output(argv: list[str]) -> str | None:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=TIMEOUT, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout if done.returncode == 0 else None


def read(path: str) -> str | None:
    try:
        with open(path, encoding="utf-8") as file:
            return file.read().strip()
    except OSError:
        return None


def containers() -> str | None:
    """``docker inspect`` of every container, cut down to what the diff compares: never the
    environment or the command line, where a container's secrets live."""
    ids = output(["docker", "ps", "-aq", "--no-trunc"])
    if ids is None:
        return None
    if not ids.split():
        return "[]"
    inspected = output(["docker", "inspect", *ids.split()])
    if inspected is None:
        return None
    kept = []
    for container in json.loads(inspected):
        settings = container.get("NetworkSettings") or {}
        networks = settings.get("Networks") or {}
        kept.append(
            {
                "Name": container.get("Name"),
                "State": {"Status": (container.get("State") or {}).get("Status")},
                "HostConfig": {"RestartPolicy": (container.get("HostConfig") or {}).get("RestartPolicy")},
                "Config": {"Image": (container.get("Config") or {}).get("Image")},
                "NetworkSettings": {
                    "Ports": settings.get("Ports"),
                    "Networks": {
                        name: {k: (net or {}).get(k) for k in ("IPAddress", "GlobalIPv6Address")}
                        for name, net in networks.items()
                    },
                },
            }
        )
    return json.dumps(kept)


def main() -> None:
    state: dict[str, object] = {name: output(argv) for name, argv in COMMANDS.items()}
    state["containers"] = containers()
    state["sysctls"] = {name: read("/proc/sys/" + name.replace(".", "/")) for name in SYSCTLS}
    state["ephemeral_ports"] = read("/proc/sys/net/ipv4/ip_local_port_range")
    state["boot_id"] = read("/proc/sys/kernel/random/boot_id")
    print(json.dumps(state))


main()
