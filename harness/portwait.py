"""How a suite waits for a published port: inside the guest first, then from where it probes.

Inside the guest, docker-proxy answers ``127.0.0.1:<port>`` as soon as Caddy serves, even
while base's forward chain drops everything that arrives from outside (docs/platform.md). So
the inside answer says when the service is up, and the outside one (the controller's loopback
forward, or a scenario's peer) gets only a short grace after it. A port that answers inside
and not outside is the 2026-06-17 incident's signature, and the reason says so; a port that
answers neither is a service that is not there. Without the inside wait, a dead port cost the
whole startup timeout, once per port.

Used by the suites under ``tests/integration/`` (they run in pytest, with testinfra hosts).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol, TypeVar

from harness.errors import HarnessError
from harness.poll import NotYet, wait_until

T = TypeVar("T")

GUEST_PROBE = (Path(__file__).parent / "guest" / "tcp_probe.py").read_text(encoding="utf-8")
# Caddy may still be starting when SSH comes back after the reboot (and, on an ACME tier, may
# still be obtaining its certificate): how long the port gets to answer inside the guest.
STARTUP_TIMEOUT = 60.0
# Once it answers inside, how long it gets to answer from outside too: neither the loopback
# forward nor a scenario's network adds a wait of its own.
OUTSIDE_GRACE = 15.0
INTERVAL = 3.0
# One outside probe's patience: a TLS handshake under emulation takes seconds on a slow day.
# Within the grace a probe gets what is left of it, never less than LAST_PROBE: the grace is
# wall-clock time, so a port that never answers costs the grace, not the grace plus a probe.
PROBE_TIMEOUT = 10.0
LAST_PROBE = 1.0
INSIDE_SIGN = "though it answers inside the guest"
NOTHING_SIGN = "not even inside the guest: nothing serves it"


class Ran(Protocol):
    rc: int
    stdout: str
    stderr: str


class Host(Protocol):
    """What a testinfra host offers that the probe needs."""

    def run(self, command: str, *args: str) -> Ran: ...


def guest_probe(
    host: Host, address: str, port: int, mode: str, sni: str | None = None, *, timeout: float = 5.0
) -> dict[str, Any]:
    """One probe by ``host``'s own python3 (harness/guest/tcp_probe.py), its JSON as a dict:
    ``connected``, and ``status`` (with ``der`` for https) or ``error``."""
    out = host.run(
        "python3 -c %s %s %s %s %s %s", GUEST_PROBE, address, str(port), mode, sni or "-", str(timeout)
    )
    if out.rc != 0:
        return {"connected": False, "error": f"the probe failed in the guest: {out.stderr.strip()[-200:]}"}
    result: dict[str, Any] = json.loads(out.stdout)
    return result


def served_inside(host: Host, port: int, mode: str, sni: str | None, *, timeout: float) -> Callable[[], int]:
    """A probe for :func:`await_port`: the HTTP status ``host`` gets from its own ``port``."""

    def probe() -> int:
        result = guest_probe(host, "127.0.0.1", port, mode, sni, timeout=timeout)
        if "status" not in result:
            raise NotYet(result.get("error") or "no answer")
        return int(result["status"])

    return probe


def await_port(
    outside: Callable[[float], T],
    inside: Callable[[], object],
    *,
    what: str,
    startup: float = STARTUP_TIMEOUT,
    grace: float = OUTSIDE_GRACE,
    interval: float = INTERVAL,
    patience: float = PROBE_TIMEOUT,
) -> T | str:
    """``outside(seconds)``'s answer, or why there was none (a message naming what was awaited).

    ``outside`` and ``inside`` raise :class:`NotYet` until they get an answer; ``outside`` may
    take the seconds it is given. One that answers outside at once (within ``patience``) is not
    awaited at all; else ``inside`` is awaited for ``startup``, then ``outside`` for ``grace``,
    each of those probes given what is left of the grace (at most ``patience``, at least
    :data:`LAST_PROBE`). ``what`` says where the outside probe comes from, e.g.
    ``127.0.0.1:PORT (SNI …) to answer from the controller``.
    """
    try:
        return outside(patience)
    except NotYet:
        pass  # not yet, or never: the guest tells which
    try:
        wait_until(inside, what=f"{what}, inside the guest", timeout=startup, interval=interval)
    except HarnessError as exc:
        return f"{exc.message} ({NOTHING_SIGN})"
    ends = time.monotonic() + grace

    def within_grace() -> T:
        return outside(min(patience, max(LAST_PROBE, ends - time.monotonic())))

    try:
        return wait_until(within_grace, what=f"{what}, {INSIDE_SIGN}", timeout=grace, interval=interval)
    except HarnessError as exc:
        return exc.message
