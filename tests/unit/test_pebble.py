"""Pebble for the acme-local tier: started on loopback only, answering, and fully removed."""

from __future__ import annotations

import json
import shutil
import ssl
import urllib.request
from pathlib import Path

import pytest

from harness import pebble

pytestmark = pytest.mark.skipif(
    shutil.which("pebble") is None or shutil.which("pebble-challtestsrv") is None,
    reason="Debian's pebble package is not installed (make bootstrap installs it)",
)


def _alive(pid: int) -> bool:
    return Path(f"/proc/{pid}").exists()


def test_pebble_serves_its_directory_on_loopback_and_stops_clean(tmp_path: Path) -> None:
    state = tmp_path / "pebble"
    run = pebble.start(state, http_port=5002, tls_port=5001)
    try:
        config = json.loads((state / "pebble.json").read_text())["pebble"]
        for key in ("listenAddress", "managementListenAddress"):
            assert config[key].startswith("127.0.0.1:"), f"{key} must be loopback: {config[key]}"
        assert (config["httpPort"], config["tlsPort"]) == (5002, 5001)
        context = ssl.create_default_context(cafile=str(run.ca_cert))
        url = f"https://127.0.0.1:{run.acme_port}/dir"
        with urllib.request.urlopen(url, context=context, timeout=5) as response:
            directory = json.load(response)
        assert "newOrder" in directory
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
