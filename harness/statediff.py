"""What the reboot changed: the guest's state before and after it, normalised and compared.

The incident class is "it worked until the host rebooted". A state is a flat mapping of
paths to values, e.g. ``units/caddy.service`` → ``active/running`` or ``ports/https (443)``
→ ``answers (issuer CN=...)``. :func:`normalise` builds it from the raw capture (the guest's
``harness/guest/state_probe.py`` output plus the controller's port probes), dropping what a
reboot always changes (pids, boot ids, timestamps, ephemeral ports, counters, container
addresses); :func:`compare` lists the differences; a difference is expected when a built-in
rule (:data:`EXPECTED`) or the profile (``reboot_diff_allow``) names its path with a reason.
Everything else fails the cycle. Pure: no I/O.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Any

from harness.config import Allowance

ABSENT = "(absent)"
State = dict[str, str]

# Units whose state at a given moment says nothing about the host: timer-driven jobs that may
# be running or done when the state is taken, per-login units, and units of one boot only.
TRANSIENT_UNITS = (
    "apt-daily.service",
    "apt-daily-upgrade.service",
    "man-db.service",
    "logrotate.service",
    "dpkg-db-backup.service",
    "e2scrub_all.service",
    "e2scrub_reap.service",
    "fstrim.service",
    "systemd-tmpfiles-clean.service",
    "user@*.service",
    "user-runtime-dir@*.service",
    "session-*.scope",
    "systemd-fsck@*.service",
    "initrd-*.service",
    "systemd-update-utmp-runlevel.service",
    "sysstat-collect.service",
    "sysstat-summary.service",
    "docker-*.scope",
)
# Only these unit types are compared: a mount, device or scope is either covered elsewhere
# (mounts) or comes and goes with hardware and logins.
UNIT_TYPES = (".service", ".socket", ".timer", ".target", ".path")
# Pseudo and per-boot filesystems: their mounts are the kernel's and Docker's, not the host's.
PSEUDO_FS = frozenset(
    {
        "proc", "sysfs", "devtmpfs", "devpts", "cgroup", "cgroup2", "securityfs", "pstore",
        "bpf", "debugfs", "tracefs", "configfs", "fusectl", "mqueue", "hugetlbfs", "binfmt_misc",
        "autofs", "efivarfs", "nsfs", "overlay", "rpc_pipefs",
    }
)  # fmt: skip
MOUNT_SKIP = ("/run/user/*", "/run/credentials/*", "/run/docker/*", "/var/lib/docker/*", "/run/netns/*")


@dataclass(frozen=True)
class Expected:
    """A built-in rule: differences at paths matching ``pattern`` are what any reboot does."""

    pattern: str
    reason: str


EXPECTED: tuple[Expected, ...] = (
    Expected(
        "units/cloud-init-*.service", "cloud-init's stages differ between the first boot and later ones"
    ),
    Expected("units/cloud-*.service", "cloud-init's stages differ between the first boot and later ones"),
    Expected("units/ssh-keygen*.service", "host keys are made on the first boot only"),
    Expected("units/systemd-ask-password-*", "password agents run only while something asks"),
    Expected("units/*-wait-online.service", "the network waiters run once per boot"),
)
# systemd's first-boot and after-an-update units (ConditionFirstBoot=, ConditionNeedsUpdate=):
# they run on the image's first boot, and again only after /usr changes.
FIRST_BOOT_ONLY = (
    "ldconfig.service",
    "systemd-journal-catalog-update.service",
    "systemd-machine-id-commit.service",
    "systemd-sysusers.service",
    "systemd-update-done.service",
    "systemd-hwdb-update.service",
    "systemd-firstboot.service",
    "first-boot-complete.target",
)
EXPECTED += tuple(
    Expected(f"units/{unit}", "runs on the first boot, and after /usr changes, only")
    for unit in FIRST_BOOT_ONLY
)
# A container's host-side veth has a new random name every time the container starts.
VETH = re.compile(r"\bveth[0-9a-f]+\b")


@dataclass(frozen=True)
class Difference:
    path: str
    before: str
    after: str
    why_expected: str | None = None  # the reason, when a rule or the profile expects it

    @property
    def expected(self) -> bool:
        return self.why_expected is not None

    def line(self) -> str:
        sign = "-" if self.after == ABSENT else "+" if self.before == ABSENT else "~"
        text = f"{sign} {self.path}: {self.before} → {self.after}"
        return text + (f"  (expected: {self.why_expected})" if self.why_expected else "")

    def as_dict(self) -> dict[str, str | None]:
        return {"path": self.path, "before": self.before, "after": self.after, "expected": self.why_expected}


# -- normalising the raw capture -------------------------------------------------------------


def normalise(raw: Mapping[str, Any], ports: Mapping[str, str]) -> State:
    """The comparable state: every section flattened to ``section/key`` → value."""
    addresses = container_addresses(raw.get("containers"))
    state: State = {}
    for section, build in _SECTIONS:
        for key, value in build(raw, addresses).items():
            state[f"{section}/{key}"] = value
    for name, answer in ports.items():
        state[f"ports/{name}"] = answer
    return state


def container_addresses(inspect_json: str | None) -> dict[str, str]:
    """Each container's address → ``<container NAME>``: Docker hands addresses out in start
    order, which a reboot may change."""
    found: dict[str, str] = {}
    for container in _json_list(inspect_json):
        name = str(container.get("Name", "")).lstrip("/")
        networks = (container.get("NetworkSettings") or {}).get("Networks") or {}
        for net in networks.values():
            for key in ("IPAddress", "GlobalIPv6Address"):
                if address := (net or {}).get(key):
                    found[address] = f"<container {name}>"
    return found


def _json_list(text: str | None) -> list[dict[str, Any]]:
    if not text:
        return []
    try:
        data = json.loads(text)
    except ValueError:
        return []
    return [d for d in data if isinstance(d, dict)] if isinstance(data, list) else []


def _listening(raw: Mapping[str, Any], addresses: Mapping[str, str]) -> dict[str, str]:
    low, high = _port_range(raw.get("ephemeral_ports"))
    found: dict[str, set[str]] = {}
    for line in (raw.get("listening") or "").splitlines():
        fields = line.split()
        if len(fields) < 5:
            continue
        proto, local = fields[0], fields[4]
        address, _, port = local.rpartition(":")
        if not port.isdigit() or low <= int(port) <= high:
            continue  # an ephemeral port is a new one every boot
        address = _substitute(address, addresses)
        processes = set(re.findall(r'\("([^"]+)"', " ".join(fields[5:]))) or {"?"}
        found.setdefault(f"{proto} {address}:{port}", set()).update(processes)
    return {key: ",".join(sorted(names)) for key, names in found.items()}


def _port_range(text: str | None) -> tuple[int, int]:
    try:
        low, high = (int(v) for v in (text or "").split())
    except ValueError:
        return 32768, 60999  # Linux's default
    return low, high


def _units(raw: Mapping[str, Any], _addresses: Mapping[str, str]) -> dict[str, str]:
    found = {}
    for line in (raw.get("units") or "").splitlines():
        fields = line.split()
        if len(fields) < 4:
            continue
        unit, load, active, sub = fields[:4]
        if not unit.endswith(UNIT_TYPES) or _matches(unit, TRANSIENT_UNITS):
            continue
        if active == "inactive" or load == "not-found":
            continue  # absent and inactive are the same thing here
        found[unit] = f"{active}/{sub}"
    return found


def _enabled(raw: Mapping[str, Any], _addresses: Mapping[str, str]) -> dict[str, str]:
    found = {}
    for line in (raw.get("enabled") or "").splitlines():
        fields = line.split()
        if len(fields) >= 2 and not _matches(fields[0], TRANSIENT_UNITS):
            found[fields[0]] = fields[1]
    return found


def _containers(raw: Mapping[str, Any], _addresses: Mapping[str, str]) -> dict[str, str]:
    found = {}
    for container in _json_list(raw.get("containers")):
        name = str(container.get("Name", "")).lstrip("/")
        status = (container.get("State") or {}).get("Status", "?")
        host_config = container.get("HostConfig") or {}
        policy = (host_config.get("RestartPolicy") or {}).get("Name") or "no"
        ports = []
        for container_port, bindings in sorted(
            ((container.get("NetworkSettings") or {}).get("Ports") or {}).items()
        ):
            for binding in bindings or []:
                ports.append(f"{binding.get('HostIp') or '*'}:{binding.get('HostPort')}->{container_port}")
        image = (container.get("Config") or {}).get("Image", "?")
        published = ",".join(sorted(set(ports))) or "none"
        found[name] = f"{status} image={image} restart={policy} ports={published}"
    return found


def _mounts(raw: Mapping[str, Any], _addresses: Mapping[str, str]) -> dict[str, str]:
    try:
        data = json.loads(raw.get("mounts") or "{}")
    except ValueError:
        return {}
    found = {}
    for mount in data.get("filesystems", []):
        target, fstype = str(mount.get("target", "")), str(mount.get("fstype", ""))
        if fstype in PSEUDO_FS or _matches(target, MOUNT_SKIP):
            continue
        found[target] = f"{mount.get('source', '?')} {fstype}"
    return found


def _routes(raw: Mapping[str, Any], addresses: Mapping[str, str]) -> dict[str, str]:
    found = {}
    for family in ("routes4", "routes6"):
        for route in _json_list(raw.get(family)):
            dst, dev = route.get("dst", "?"), VETH.sub("veth<container>", str(route.get("dev", "?")))
            via = route.get("gateway")
            value = f"proto {route.get('protocol', '?')} scope {route.get('scope', 'global')}"
            if via:
                value += f" via {_substitute(via, addresses)}"
            found[f"{dst} dev {dev}"] = value
    return found


def _sysctls(raw: Mapping[str, Any], _addresses: Mapping[str, str]) -> dict[str, str]:
    return {
        name: ABSENT if value is None else str(value) for name, value in (raw.get("sysctls") or {}).items()
    }


def _nft(raw: Mapping[str, Any], addresses: Mapping[str, str]) -> dict[str, str]:
    """Each chain's head (type, hook, priority, policy) at ``<family> <table> <chain>``, and
    each of its rules at ``<family> <table> <chain>: <rule>``, rendered as ``nft`` would print
    it where the expression is a common one (sorted JSON otherwise). A rule's position is not
    compared, only whether the chain holds it (and how often)."""
    try:
        items = json.loads(raw.get("nft") or "{}").get("nftables", [])
    except ValueError:
        return {}
    found: dict[str, str] = {}
    counts: dict[str, int] = {}
    for item in items:
        if chain := item.get("chain"):
            head = [f"{k} {chain[k]}" for k in ("type", "hook", "prio", "policy") if k in chain]
            found[_chain_key(chain)] = "; ".join(head) if head else "regular chain"
        elif rule := item.get("rule"):
            text = " ".join(t for t in (render_expression(e) for e in rule.get("expr", [])) if t)
            key = f"{_chain_key(rule, 'chain')}: {_substitute(text, addresses)}"
            counts[key] = counts.get(key, 0) + 1
    found.update({key: "present" if n == 1 else f"present ×{n}" for key, n in counts.items()})
    return found


def _chain_key(item: Mapping[str, Any], name: str = "name") -> str:
    return f"{item.get('family', '?')} {item.get('table', '?')} {item.get(name, '?')}"


_SECTIONS: tuple[tuple[str, Callable[[Mapping[str, Any], Mapping[str, str]], dict[str, str]]], ...] = (
    ("listening", _listening),
    ("units", _units),
    ("enabled", _enabled),
    ("containers", _containers),
    ("mounts", _mounts),
    ("routes", _routes),
    ("sysctl", _sysctls),
    ("nft", _nft),
)


def render_expression(expression: Mapping[str, Any]) -> str:
    """One nftables JSON expression as short text; counters (dropped by ``nft -s`` anyway)
    say nothing. An expression this does not know is kept as sorted JSON."""
    if len(expression) != 1:
        return json.dumps(expression, sort_keys=True)
    ((kind, value),) = expression.items()
    if kind in ("accept", "drop", "return", "continue", "masquerade"):
        return kind
    if kind in ("jump", "goto") and isinstance(value, dict):
        return f"{kind} {value.get('target')}"
    if kind == "counter":
        return ""
    if kind == "match" and isinstance(value, dict):
        op = value.get("op", "==")
        left, right = _operand(value.get("left")), _operand(value.get("right"))
        return f"{left} {right}" if op in ("==", "in") else f"{left} {op} {right}"
    return json.dumps(expression, sort_keys=True)


def _operand(value: object) -> str:  # noqa: PLR0911 - one return per nftables operand kind
    if isinstance(value, dict) and len(value) == 1:
        ((kind, inner),) = value.items()
        if kind == "payload" and isinstance(inner, dict):
            return f"{inner.get('protocol', '')} {inner.get('field', '')}".strip()
        if kind in ("meta", "ct") and isinstance(inner, dict):
            return f"{kind} {inner.get('key', '')}"
        if kind == "set" and isinstance(inner, list):
            return "{ " + ", ".join(_operand(v) for v in inner) + " }"
        if kind == "prefix" and isinstance(inner, dict):
            return f"{inner.get('addr')}/{inner.get('len')}"
        if kind == "range" and isinstance(inner, list):
            return "-".join(_operand(v) for v in inner)
    if isinstance(value, list):
        return ",".join(_operand(v) for v in value)
    if isinstance(value, str | int | float):
        return str(value)
    return json.dumps(value, sort_keys=True)


def _substitute(text: str, addresses: Mapping[str, str]) -> str:
    for address, name in addresses.items():
        text = re.sub(rf"(?<![\d.:]){re.escape(address)}(?![\d])", name, text)
    return text


def _matches(name: str, patterns: Iterable[str]) -> bool:
    return any(fnmatchcase(name, p) for p in patterns)


# -- comparing ---------------------------------------------------------------------------------


def compare(
    before: State, after: State, allow: Sequence[Allowance] = (), rules: Sequence[Expected] = EXPECTED
) -> list[Difference]:
    """Every path whose value differs, in path order; each marked expected when one of
    ``rules`` (the built-in ones, plus what the run's speed levers do: harness.speed) or the
    profile's allowance names it."""
    differences = []
    for path in sorted(set(before) | set(after)):
        old, new = before.get(path, ABSENT), after.get(path, ABSENT)
        if old == new:
            continue
        differences.append(Difference(path, old, new, why_expected(path, allow, rules)))
    return differences


def why_expected(path: str, allow: Sequence[Allowance], rules: Sequence[Expected] = EXPECTED) -> str | None:
    for allowance in allow:
        if fnmatchcase(path, allowance.pattern):
            return f"{allowance.reason} (profile)"
    for rule in rules:
        if fnmatchcase(path, rule.pattern):
            return rule.reason
    return None


def unexpected(differences: Iterable[Difference]) -> list[Difference]:
    return [d for d in differences if not d.expected]


def render(differences: Sequence[Difference]) -> str:
    """A short readable diff: the unexpected differences first, then the expected ones."""
    bad = unexpected(differences)
    lines = [f"{len(bad)} unexpected, {len(differences) - len(bad)} expected difference(s) across the reboot"]
    lines += [f"  {d.line()}" for d in bad]
    lines += [f"  {d.line()}" for d in differences if d.expected]
    return "\n".join(lines)
