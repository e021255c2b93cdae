"""The hermetic network, checked from inside the guest every cycle (docs/decisions/026).

Every probe goes to the guest's gateway, 10.0.2.2, which is the controller's loopback as the
guest sees it (and, on a hermetic network, the relay's namespace): no probe of any other
address, not even one expected to fail.
"""

from __future__ import annotations

import socket
import textwrap

import pytest

GATEWAY = "10.0.2.2"
APT_PROXY_FILE = "/etc/apt/apt.conf.d/00boma-package-cache"  # harness.seed.APT_PROXY_FILE
# A connection the hermetic network refuses times out (passt drops it); one it carries opens in
# milliseconds even under emulation, so 3 s tells them apart without waiting 10 s.
PROBE_TIMEOUT = 3


@pytest.fixture
def hermetic(run_state):
    if run_state.get("network") != "hermetic":
        network = run_state.get("network", "open")
        pytest.skip(f"this run's network is {network!r}: its tier needs the internet, "
                    "or the run was started with --open-network")
    return run_state


def guest_python(host, code: str):
    return host.run("python3 -c " + _quote(textwrap.dedent(code)))


def _quote(text: str) -> str:
    return "'" + text.replace("'", "'\"'\"'") + "'"


def _lookup(host, name: str) -> str:
    """How the guest's resolver ends a lookup of ``name``: ``nxdomain`` ("no such name",
    EAI_NONAME), ``resolved``, or ``other: …`` (EAI_AGAIN and the like: a resolver that timed
    out or failed)."""
    result = guest_python(host, f"""
        import socket
        try:
            socket.getaddrinfo({name!r}, 443)
            print("resolved")
        except socket.gaierror as exc:
            print("nxdomain" if exc.errno == socket.EAI_NONAME else f"other: {{exc}}")
    """)
    assert result.rc == 0, result.stderr
    return result.stdout.strip()


def test_a_loopback_port_of_the_controller_that_is_not_declared_is_unreachable(host, hermetic):
    """On QEMU's open user-mode network this connection succeeds: the gateway is the
    controller's loopback. On the hermetic one nothing but the declared ports is there."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        port = listener.getsockname()[1]
        result = guest_python(host, f"""
            import socket
            s = socket.socket(); s.settimeout({PROBE_TIMEOUT})
            try:
                s.connect(("{GATEWAY}", {port})); print("connected")
            except OSError as exc:
                print("failed:", exc)
        """)
    assert result.rc == 0, result.stderr
    assert result.stdout.startswith("failed:"), (
        f"the guest reached the controller's 127.0.0.1:{port}, which no run declared: {result.stdout}"
    )


def test_apt_goes_through_the_package_cache_and_it_answers(host, hermetic):
    port = hermetic["egress"]["package cache"]
    proxy = f"http://{GATEWAY}:{port}"
    assert host.file(APT_PROXY_FILE).contains(proxy)
    result = guest_python(host, f"""
        import urllib.request
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({{"http": "{proxy}"}}))
        with opener.open("http://deb.debian.org/debian/dists/trixie/InRelease", timeout=120) as answer:
            print(answer.status, len(answer.read()))
    """)
    assert result.rc == 0, result.stderr
    assert result.stdout.split()[0] == "200", result.stdout


def test_a_name_lookup_is_answered_does_not_exist_by_the_gateway(host, hermetic):
    """The relay answers DNS on the gateway: a lookup ends "no such name" (EAI_NONAME) instead
    of "try again" (EAI_AGAIN, a resolver that timed out or failed). Without it, every lookup
    in the guest or in its containers waited for a timeout; and it asks nothing of the world.
    The name is under .example (RFC 2606), which the guest's resolver does not answer itself."""
    assert _lookup(host, "nowhere.boma.example") == "nxdomain"
    dns = host.run("resolvectl dns")
    assert GATEWAY in dns.stdout, f"the guest's resolver is not the gateway: {dns.stdout}"


def test_a_single_label_name_is_answered_does_not_exist_by_the_gateway(host, hermetic, run_state):
    """A name without a dot (a container a route names that this host does not run) must end
    "no such name" from the gateway, as the lookup above does, not after systemd-resolved's
    LLMNR waited about 4 s per query for an answer nobody on the test network gives (a route's
    502 then came after the controller's probe had given up). The golden image sends such
    names to the unicast server, with LLMNR and mDNS off (harness/image/recipe.py); a
    downloaded cloud image keeps its own resolver settings."""
    if "/golden-" not in run_state.get("golden", ""):
        pytest.skip("the guest boots a downloaded image, not the golden one the harness builds")
    status = host.run("resolvectl status")
    assert status.rc == 0, status.stderr
    assert "+LLMNR" not in status.stdout and "+mDNS" not in status.stdout, status.stdout
    assert _lookup(host, "boma-no-such-container") == "nxdomain"
