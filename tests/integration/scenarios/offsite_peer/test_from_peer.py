"""askari as a client on its WAN sees it: from the peer, to askari's own address on the
scenario's private network, so through Docker's DNAT and base's forward chain, not through
QEMU's loopback forward. The harness runs this suite before and after askari's real reboot.
"""

from __future__ import annotations

import functools
import time
from pathlib import Path

import pytest
import yaml
from cryptography import x509

from harness import parallel, portwait
from harness.errors import HarnessError
from harness.poll import NotYet, wait_until

ROUTES_FILE = Path(__file__).resolve().parents[4] / "inventories/production/group_vars/all/reverse_proxy.yml"
# As the controller's probe: Caddy may still be starting when the reboot is over.
PORT_ANSWER_TIMEOUT = portwait.STARTUP_TIMEOUT
PROBE_INTERVAL = portwait.INTERVAL
PROBE_TIMEOUT = portwait.PROBE_TIMEOUT  # a TLS handshake under emulation takes seconds on a slow day
GOOD_STATUSES = {200, 308, 404, 502, 503}
# A port askari does not publish: the test listens on it inside askari, so only the firewall
# can keep the peer out. Dropped (base's input policy) shows as a timeout; refused is fine too.
UNPUBLISHED_PORT = 8089
CLOSED_TIMEOUT = 3.0
LISTENER_UNIT = "boma-probe-listener"

_SEEN: dict[tuple[int, str | None], dict | str] = {}


def _answer(probe, address: str, port: int, mode: str, sni: str | None = None) -> dict:
    """The port's answer from the peer, waited for once per port and name."""
    key = (port, sni)
    if key not in _SEEN:
        dead = next((v for (p, _s), v in _SEEN.items() if p == port and isinstance(v, str)), None)
        _SEEN[key] = dead or _wait(probe, address, port, mode, sni)
    seen = _SEEN[key]
    if isinstance(seen, str):
        pytest.fail(seen)
    return seen


@pytest.fixture(scope="module", autouse=True)
def _published_ports_awaited(probe, target, target_address, target_profile):
    """Both published ports at once, each first inside askari, then from the peer
    (harness/portwait.py): dead ports cost one short wait, and say whether askari serves them."""
    wanted = {
        p["name"]: (p["guest"], p["name"], p.get("sni"))
        for p in target_profile["published_ports"]
        if p["name"] in ("http", "https")
    }
    answers = parallel.each({
        name: functools.partial(
            portwait.await_port,
            functools.partial(_from_peer, probe, target_address, port, mode, sni),
            portwait.served_inside(target, port, mode, sni, timeout=PROBE_TIMEOUT),
            what=f"{target_address}:{port} (SNI {sni}) to answer from the peer",
        )
        for name, (port, mode, sni) in wanted.items()
    })
    _SEEN.update({(port, sni): answers[name] for name, (port, _m, sni) in wanted.items()})


def _from_peer(probe, address: str, port: int, mode: str, sni: str | None, timeout: float) -> dict:
    result = probe(address, port, mode, sni, timeout=timeout)
    if "status" not in result:
        raise NotYet(result.get("error", "no answer"))
    return result


def _wait(probe, address: str, port: int, mode: str, sni: str | None) -> dict | str:
    try:
        return wait_until(functools.partial(_from_peer, probe, address, port, mode, sni, PROBE_TIMEOUT),
                          what=f"{address}:{port} (SNI {sni}) to answer from the peer",
                          timeout=PORT_ANSWER_TIMEOUT, interval=PROBE_INTERVAL)
    except HarnessError as exc:
        return exc.message


def _published(target_profile, name: str) -> dict:
    return next(p for p in target_profile["published_ports"] if p["name"] == name)


def test_the_peer_reaches_askari_on_the_private_network_not_the_uplink(host, target_address):
    route = host.check_output("ip -o route get %s", target_address)
    assert " via " not in route, f"the peer routes {target_address} through a gateway: {route}"
    assert "enp0s10" in route, f"the peer reaches {target_address} other than by its scenario NIC: {route}"


def test_https_answers_at_askaris_address(probe, target_address, target_profile):
    https = _published(target_profile, "https")
    result = _answer(probe, target_address, https["guest"], "https", https.get("sni"))
    assert result["status"] in GOOD_STATUSES, f"HTTPS answered the peer with {result['status']}"


def test_http_answers_at_askaris_address(probe, target_address, target_profile):
    port = _published(target_profile, "http")["guest"]
    result = _answer(probe, target_address, port, "http")
    assert result["status"] in GOOD_STATUSES, f"HTTP answered the peer with {result['status']}"


def _routes() -> list[str]:
    data = yaml.safe_load(ROUTES_FILE.read_text(encoding="utf-8"))
    return [route["host"] for route in data["reverse_proxy__routes"]]


@pytest.mark.parametrize("route", _routes())
def test_the_peer_is_served_the_tier_issuers_certificate(probe, target_address, target_profile, tier, route):
    expected = tier.get("issuer_contains")
    if not expected:
        pytest.skip("the tier names no expected issuer")
    https = _published(target_profile, "https")
    result = _answer(probe, target_address, https["guest"], "https", route)
    certificate = x509.load_der_x509_certificate(result["der"])
    issuer = certificate.issuer.rfc4514_string()
    assert expected in issuer, f"{route}: the peer got a certificate of {issuer!r}, expected {expected!r}"
    names = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert route in names.get_values_for_type(x509.DNSName), f"the certificate for {route} is not for it"


def test_a_port_askari_does_not_publish_is_closed_to_the_peer(probe, target, target_address, target_profile):
    assert UNPUBLISHED_PORT not in {p["guest"] for p in target_profile["published_ports"]}
    target.run("systemctl stop %s", LISTENER_UNIT)
    target.check_output(
        "systemd-run --unit %s --collect python3 -m http.server --bind 0.0.0.0 %s", LISTENER_UNIT,
        str(UNPUBLISHED_PORT),
    )
    try:
        def listening() -> None:
            if not target.check_output("ss -Htln sport = :%s", str(UNPUBLISHED_PORT)).strip():
                raise NotYet("the listener is not up yet")

        wait_until(listening, what=f"a listener on askari's :{UNPUBLISHED_PORT}", timeout=60, interval=1)
        began = time.monotonic()
        result = probe(target_address, UNPUBLISHED_PORT, "tcp", timeout=CLOSED_TIMEOUT)
        assert not result["connected"], (
            f"the peer connected to askari's :{UNPUBLISHED_PORT}, which askari does not publish"
        )
        how = "dropped" if "timed out" in result["error"] else "refused"
        print(f"{UNPUBLISHED_PORT}: {how} after {time.monotonic() - began:.1f}s ({result['error']})")
    finally:
        target.run("systemctl stop %s", LISTENER_UNIT)


def test_ssh_answers_the_peer_as_base_allows(probe, target_address):
    # base: port 22 is open on every interface (no inventory value may close Ansible's way in),
    # and sshd listens on all of them while base__ssh_listen_mesh_only is off, as on askari.
    result = probe(target_address, 22, "banner")
    assert result["connected"], f"SSH refused the peer: {result.get('error')}"
    assert result.get("banner", "").startswith("SSH-2.0-"), f"no SSH banner: {result}"
