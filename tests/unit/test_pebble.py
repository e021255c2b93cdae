"""Pebble for the acme-local tier: started on loopback only, answering, and fully removed."""

from __future__ import annotations

import http.client
import json
import shutil
import socket
import ssl
import time
from pathlib import Path

import pytest

from harness import pebble, ports

pytestmark = pytest.mark.skipif(
    shutil.which("pebble") is None or shutil.which("pebble-challtestsrv") is None,
    reason="Debian's pebble package is not installed (make bootstrap installs it)",
)


def _alive(pid: int) -> bool:
    return Path(f"/proc/{pid}").exists()


DEAD_PROXY = "http://127.0.0.1:9"  # the discard port: nothing listens there


@pytest.fixture
def proxied_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """A controller whose environment names an HTTP(S) proxy (as CI machines may): loopback
    traffic to Pebble must never be sent through it."""
    for name in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "all_proxy"):
        monkeypatch.setenv(name, DEAD_PROXY)
    for name in ("no_proxy", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)


def _get_directory(port: int, ca_cert: Path) -> dict[str, object]:
    context = ssl.create_default_context(cafile=str(ca_cert))
    conn = http.client.HTTPSConnection("127.0.0.1", port, context=context, timeout=5)
    try:
        conn.request("GET", "/dir")
        response = conn.getresponse()
        assert response.status == 200
        directory: dict[str, object] = json.load(response)
        return directory
    finally:
        conn.close()


@pytest.mark.usefixtures("proxied_environment")
def test_pebble_serves_its_directory_on_loopback_and_stops_clean(tmp_path: Path) -> None:
    state = tmp_path / "pebble"
    run = pebble.start(state, http_port=5002, tls_port=5001)
    try:
        config = json.loads((state / "pebble.json").read_text())["pebble"]
        for key in ("listenAddress", "managementListenAddress"):
            assert config[key].startswith("127.0.0.1:"), f"{key} must be loopback: {config[key]}"
        assert (config["httpPort"], config["tlsPort"]) == (5002, 5001)
        assert "newOrder" in _get_directory(run.acme_port, run.ca_cert)
        assert all(_alive(pid) for pid in run.pids)
        guest = run.guest_vars()
        assert guest["reverse_proxy__acme_ca"] == f"https://10.0.2.2:{run.acme_port}/dir"
        assert guest["reverse_proxy__acme_ca_root_pem"].startswith("-----BEGIN CERTIFICATE-----")
    finally:
        pebble.stop(run.pids, state)
    assert not any(_alive(pid) for pid in run.pids), "Pebble outlived its run"
    assert not state.exists(), "Pebble's state (keys, certificates) was left behind"


def test_stop_ignores_a_pid_that_is_not_pebble(tmp_path: Path) -> None:
    # pid 1 is never Pebble: stop must leave it alone rather than kill a reused pid.
    pebble.stop([1], None)
    assert _alive(1)


def test_a_pebble_that_cannot_start_fails_fast_with_its_own_words(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    state = tmp_path / "pebble"
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as squatter:
        squatter.bind(("127.0.0.1", 0))
        taken = squatter.getsockname()[1]
        real = ports.free_loopback_ports
        monkeypatch.setattr(pebble, "free_loopback_ports", lambda n: [taken, *real(n - 1)])
        started = time.monotonic()
        with pytest.raises(pebble.PebbleDied) as failure:
            pebble.start(state, http_port=5002, tls_port=5001)
        waited = time.monotonic() - started
    message = str(failure.value)
    assert "pebble exited with status" in message
    assert "address already in use" in message, message
    assert waited < pebble.READY_TIMEOUT / 2, f"an exited Pebble was waited on for {waited:.0f}s"
    assert not state.exists(), "a failed start left Pebble's state behind"
