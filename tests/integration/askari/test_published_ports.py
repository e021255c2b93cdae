"""askari's published ports, probed from the controller through the loopback forwards.

An in-guest check is not enough (docs/platform.md): docker-proxy answers 127.0.0.1:443 inside the
guest even while the forward chain drops everything arriving from outside. That is also what
makes the wait short and its verdict sharp: a port is first awaited from inside the guest
(Caddy is up), then given a short grace to answer from the controller. A port that answers
inside but not from outside is the incident's signature, and the failure says so.
"""

from __future__ import annotations

import functools
import http.client
import socket
import ssl
from pathlib import Path

import pytest
import yaml
from cryptography import x509

from harness import parallel, portwait
from harness.errors import HarnessError
from harness.poll import NotYet, wait_until

ROUTES_FILE = Path(__file__).resolve().parents[3] / "inventories/production/group_vars/all/reverse_proxy.yml"

# How long a port gets inside the guest, then from the controller: harness/portwait.py.
PORT_ANSWER_TIMEOUT = portwait.STARTUP_TIMEOUT
# One probe's patience: a TLS handshake under emulation takes seconds on a slow day.
PROBE_TIMEOUT = portwait.PROBE_TIMEOUT
PROBE_INTERVAL = portwait.INTERVAL
GOOD_STATUSES = {200, 308, 404, 502, 503}

pytestmark = pytest.mark.controller


def _ports(profile):
    return {p["name"]: p for p in profile["published_ports"]}


def _tls_context() -> ssl.SSLContext:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # this check is about reachability; issuers are below
    return context


def _request(port: int, sni: str | None, tls: bool, timeout: float) -> tuple[int, bytes | None]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        if tls:
            # Connect to the loopback forward but present the route's name as SNI, as a real
            # client would: Caddy has no certificate for a bare IP address.
            raw = socket.create_connection(("127.0.0.1", port), timeout=timeout)
            conn.sock = _tls_context().wrap_socket(raw, server_hostname=sni)
        conn.request("GET", "/", headers={"Host": sni or "127.0.0.1"})
        status = conn.getresponse().status
        der = conn.sock.getpeercert(binary_form=True) if tls else None
        return status, der
    finally:
        conn.close()


# One wait per port and run: a dead port fails every test that needs it, but costs one timeout.
_SEEN: dict[tuple[int, str | None, bool], tuple[int, bytes | None] | str] = {}


@pytest.fixture(scope="module", autouse=True)
def _published_ports_awaited(run_state, profile, host):
    """Wait for every published port at once, so that dead ports cost one wait, not one each.

    After a reboot the ports come up together (Caddy serves both), and after a bad one they stay
    dead together: waiting in turn made a failing verify pay the timeout once per port.
    """
    wanted = {
        p["name"]: (p["guest"], run_state["ports"][str(p["guest"])], p.get("sni"), p["name"] == "https")
        for p in profile["published_ports"]
        if p["name"] in ("http", "https")
    }
    answers = parallel.each(
        {name: functools.partial(_await_port, host, *spec) for name, spec in wanted.items()}
    )
    _SEEN.update({(port, sni, tls): answers[name] for name, (_g, port, sni, tls) in wanted.items()})


def _await_port(
    host, guest_port: int, port: int, sni: str | None, tls: bool
) -> tuple[int, bytes | None] | str:
    """The controller's answer, or why there was none (harness/portwait.py)."""
    return portwait.await_port(
        functools.partial(_from_controller, port, sni, tls),
        portwait.served_inside(host, guest_port, "https" if tls else "http", sni, timeout=PROBE_TIMEOUT),
        what=f"127.0.0.1:{port} (SNI {sni}) to answer from the controller",
    )


def _from_controller(port: int, sni: str | None, tls: bool, timeout: float) -> tuple[int, bytes | None]:
    try:
        return _request(port, sni, tls, timeout)
    except (OSError, http.client.HTTPException) as exc:
        raise NotYet(f"{type(exc).__name__}: {exc}") from exc


def _answer(port: int, sni: str | None, tls: bool) -> tuple[int, bytes | None]:
    key = (port, sni, tls)
    dead = next((v for (p, _s, t), v in _SEEN.items() if (p, t) == (port, tls) and isinstance(v, str)), None)
    if key not in _SEEN:
        # A port that did not answer for one name is not waited for again under another.
        _SEEN[key] = dead or _wait_for_answer(port, sni, tls)
    seen = _SEEN[key]
    if isinstance(seen, str):
        pytest.fail(seen)
    return seen


def _wait_for_answer(port: int, sni: str | None, tls: bool) -> tuple[int, bytes | None] | str:
    """The answer, or the reason there was none, through the harness's one polling loop."""
    try:
        return wait_until(functools.partial(_from_controller, port, sni, tls, PROBE_TIMEOUT),
                          what=f"127.0.0.1:{port} (SNI {sni}) to answer from the controller",
                          timeout=PORT_ANSWER_TIMEOUT, interval=PROBE_INTERVAL)
    except HarnessError as exc:
        return exc.message


def test_https_answers_from_controller(run_state, profile):
    https = _ports(profile)["https"]
    status, _der = _answer(run_state["ports"][str(https["guest"])], https.get("sni"), tls=True)
    assert status in GOOD_STATUSES, f"HTTPS answered with unexpected status {status}"


def test_http_answers_from_controller(run_state, profile):
    http_port = _ports(profile)["http"]
    status, _ = _answer(run_state["ports"][str(http_port["guest"])], None, tls=False)
    assert status in GOOD_STATUSES, f"HTTP answered with unexpected status {status}"


def _routes() -> list[str]:
    """The route names of the real inventory: every one must be served with the tier's issuer."""
    data = yaml.safe_load(ROUTES_FILE.read_text(encoding="utf-8"))
    return [route["host"] for route in data["reverse_proxy__routes"]]


@pytest.mark.parametrize("route", _routes())
def test_served_certificate_comes_from_the_tier_issuer(run_state, profile, tier, route):
    expected = tier.get("issuer_contains")
    if not expected:
        pytest.skip(f"tier {run_state['tier']} names no expected issuer")
    https = _ports(profile)["https"]
    _status, der = _answer(run_state["ports"][str(https["guest"])], route, tls=True)
    assert der is not None
    certificate = x509.load_der_x509_certificate(der)
    issuer = certificate.issuer.rfc4514_string()
    assert expected in issuer, f"{route}: served certificate issued by {issuer!r}, expected {expected!r}"
    names = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert route in names.get_values_for_type(x509.DNSName), f"certificate served for {route} is not for it"
