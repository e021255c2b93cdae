"""Taking the state the reboot diff compares, and judging the difference.

From inside the guest: ``harness/guest/state_probe.py``, run as root over SSH, prints the raw
state (listening sockets, the nftables ruleset, units, containers, mounts, routes, sysctls).
From the controller: whether each of the profile's published ports answers through its
loopback forward, and with which certificate issuer (never any other address).
:mod:`harness.statediff` normalises and compares; this module does the I/O around it.
"""

from __future__ import annotations

import functools
import json
import socket
import ssl
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509

from harness import log, parallel, ssh, statediff
from harness.config import Allowance, PublishedPort
from harness.errors import HarnessError, VerificationFailed
from harness.poll import NotYet, wait_until

PROBE_SCRIPT = Path(__file__).parent / "guest" / "state_probe.py"
CAPTURE_TIMEOUT = 180.0
PORT_PROBE_TIMEOUT = 10.0
# After the reboot, a port that answered before gets this long to answer again (a container
# may still be starting once systemd says the boot is over).
PORT_SETTLE_TIMEOUT = 90.0
PORT_PROBE_INTERVAL = 3.0
SILENT = "silent"
# How many differences the one-line failure names before it says "and N more".
NAMED_IN_MESSAGE = 5


class StateChanged(VerificationFailed):
    """The reboot changed the host's state in a way nobody declared."""

    label = "FAILED (state changed across the reboot)"


@dataclass(frozen=True)
class Capture:
    raw: dict[str, Any]
    state: statediff.State


def guest_raw(endpoint: ssh.Endpoint) -> dict[str, Any]:
    """The probe script's output: run as root with the guest's own python3."""
    result = ssh.run_retrying(
        endpoint,
        ["sudo", "python3", "-c", PROBE_SCRIPT.read_text(encoding="utf-8")],
        what="the guest's state",
        timeout=CAPTURE_TIMEOUT,
        quiet=True,
    )
    try:
        data = json.loads(result.stdout)
    except ValueError as exc:
        raise HarnessError(f"the guest's state probe printed no JSON: {result.stdout[:200]!r}") from exc
    if not isinstance(data, dict):
        raise HarnessError("the guest's state probe printed JSON that is not an object")
    return data


def port_key(port: PublishedPort) -> str:
    return f"{port.name} ({port.guest})"


def probe_port(host_port: int, sni: str | None) -> str:
    """How ``127.0.0.1:host_port`` answers: ``answers (issuer …)`` after a TLS handshake with
    ``sni``, ``answers`` when a plain request gets any reply, else :data:`SILENT`.

    Through QEMU's forward the controller's connect always succeeds (QEMU accepts it, then
    tries the guest), so only an answer from the server counts.
    """
    try:
        with socket.create_connection(("127.0.0.1", host_port), timeout=PORT_PROBE_TIMEOUT) as raw:
            if sni:
                context = ssl.create_default_context()
                context.check_hostname = False
                context.verify_mode = ssl.CERT_NONE  # the issuer is recorded, not trusted
                with context.wrap_socket(raw, server_hostname=sni) as tls:
                    der = tls.getpeercert(binary_form=True)
                if not der:
                    return "answers (no certificate)"
                issuer = x509.load_der_x509_certificate(der).issuer.rfc4514_string()
                return f"answers (issuer {issuer})"
            raw.sendall(b"HEAD / HTTP/1.0\r\nHost: boma-probe\r\n\r\n")
            return "answers" if raw.recv(1) else SILENT
    except (OSError, ssl.SSLError, ValueError):
        return SILENT


def port_answers(
    ports: Sequence[PublishedPort], host_ports: Mapping[str, int], expect: statediff.State | None = None
) -> dict[str, str]:
    """Each published port's answer. With ``expect`` (the state before the reboot), a port
    that answered then is given :data:`PORT_SETTLE_TIMEOUT` to answer the same way again.

    The ports are probed at once: a silent port costs its probe's timeout, and after a bad
    reboot they are silent together, so one after the other they cost one timeout each.
    """
    return parallel.each(
        {
            port_key(port): functools.partial(_port_answer, port, host_ports[str(port.guest)], expect)
            for port in ports
        }
    )


def _port_answer(port: PublishedPort, host_port: int, expect: statediff.State | None) -> str:
    key = port_key(port)
    wanted = (expect or {}).get(f"ports/{key}", "")
    if not wanted.startswith("answers"):
        return probe_port(host_port, port.sni)

    def same() -> str:
        seen = probe_port(host_port, port.sni)
        if seen != wanted:
            raise NotYet(seen)
        return seen

    try:
        return wait_until(
            same,
            what=f"published port {key} to answer as before the reboot",
            timeout=PORT_SETTLE_TIMEOUT,
            interval=PORT_PROBE_INTERVAL,
        )
    except HarnessError:
        return probe_port(host_port, port.sni)  # the verdict is the diff's, not the wait's


def capture(
    endpoint: ssh.Endpoint,
    *,
    ports: Sequence[PublishedPort],
    host_ports: Mapping[str, int],
    directory: Path,
    label: str,
    expect: statediff.State | None = None,
) -> Capture:
    """Take the state, write it (raw and normalised) to ``directory/<label>.json``."""
    raw = guest_raw(endpoint)
    answers = port_answers(ports, host_ports, expect)
    state = statediff.normalise(raw, answers)
    directory.mkdir(parents=True, exist_ok=True)
    record = {"raw": raw, "ports": answers, "state": state}
    file = directory / f"{label}.json"
    file.write_text(json.dumps(record, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    log.info(f"state {label}: {len(state)} entries ({file})")
    return Capture(raw, state)


def record(
    before: statediff.State,
    after: statediff.State,
    allow: Sequence[Allowance],
    directory: Path,
    rules: Sequence[statediff.Expected] = statediff.EXPECTED,
) -> list[statediff.Difference]:
    """Compare, write ``diff.json`` and ``diff.txt`` into ``directory``, print the short diff;
    return the differences."""
    differences = statediff.compare(before, after, allow, rules)
    text = statediff.render(differences)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "diff.txt").write_text(text + "\n", encoding="utf-8")
    (directory / "diff.json").write_text(
        json.dumps([d.as_dict() for d in differences], indent=2) + "\n", encoding="utf-8"
    )
    log.info(text if differences else f"state diff across the reboot: none in {len(after)} entries")
    return differences


def silent_ports(state: statediff.State) -> list[str]:
    """The profile's published ports that do not answer in ``state``: a port the profile
    publishes must answer from the controller, whatever it did before the reboot."""
    return sorted(path for path, value in state.items() if path.startswith("ports/") and value == SILENT)


def check(differences: Sequence[statediff.Difference], directory: Path, silent: Sequence[str] = ()) -> None:
    """Raise :class:`StateChanged` naming the unexpected differences and the published ports
    that do not answer after the reboot (``silent``), if there are any."""
    bad = statediff.unexpected(differences)
    changed = {d.path for d in bad}
    lines = [d.line() for d in bad]
    lines += [f"{path}: {SILENT} (a published port must answer)" for path in silent if path not in changed]
    if not lines:
        return
    named = "; ".join(lines[:NAMED_IN_MESSAGE])
    more = f"; and {len(lines) - NAMED_IN_MESSAGE} more" if len(lines) > NAMED_IN_MESSAGE else ""
    raise StateChanged(
        f"{len(lines)} unexpected difference(s) across the reboot "
        f"(all: {directory / 'diff.txt'}): {named}{more}"
    )
