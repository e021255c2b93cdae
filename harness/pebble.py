"""Pebble, the RFC 8555 test CA, on the controller's loopback for the ``acme-local`` tier.

The guest's Caddy reaches Pebble through QEMU's user-mode gateway (10.0.2.2 is the
controller's 127.0.0.1 as the guest sees it). Pebble resolves every route name to 127.0.0.1
through pebble-challtestsrv's mock DNS, and validates HTTP-01 / TLS-ALPN-01 against the
loopback forwards of the guest's ports 80 and 443: the validation really travels back into the
guest. Nothing but loopback is ever used.
"""

from __future__ import annotations

import http.client
import json
import shutil
import ssl
from dataclasses import dataclass
from pathlib import Path

from harness import log, proc
from harness.errors import HarnessError
from harness.poll import NotYet, wait_until
from harness.ports import free_loopback_ports

# What start() spawns, in this order; its pids are recorded and stopped in the same order.
PROGRAMS = ("pebble-challtestsrv", "pebble")
GUEST_GATEWAY = "10.0.2.2"  # QEMU user-mode networking: the controller's loopback, from the guest
READY_TIMEOUT = 60.0
PEBBLE_ENV = {
    "PEBBLE_VA_NOSLEEP": "1",  # no random validation delay: the cycle is slow enough
    "PEBBLE_WFE_NONCEREJECT": "0",  # no random bad-nonce rejections
    # Validation goes to the guest's loopback forwards: never through a proxy the controller's
    # environment may name (CI machines can set one).
    "NO_PROXY": "127.0.0.1,localhost",
    "no_proxy": "127.0.0.1,localhost",
}


class PebbleDied(HarnessError):
    """Pebble or challtestsrv exited before Pebble's directory answered."""


@dataclass(frozen=True)
class PebbleRun:
    directory: Path
    acme_port: int
    pids: tuple[int, ...]

    @property
    def ca_cert(self) -> Path:
        return self.directory / "ca.pem"

    @property
    def directory_url(self) -> str:
        return f"https://{GUEST_GATEWAY}:{self.acme_port}/dir"

    def guest_vars(self) -> dict[str, str]:
        """Extra-vars that point the guest's Caddy at this Pebble (the role writes the PEM into its
        configuration directory and names it as Caddy's acme_ca_root itself)."""
        return {
            "reverse_proxy__acme_ca": self.directory_url,
            "reverse_proxy__acme_ca_root_pem": self.ca_cert.read_text(encoding="utf-8"),
        }


def _make_tls(directory: Path) -> None:
    """A throwaway CA and a server certificate for Pebble's own HTTPS listener."""
    ca_key, ca = directory / "ca.key", directory / "ca.pem"
    key, csr, cert = directory / "key.pem", directory / "server.csr", directory / "cert.pem"
    proc.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=boma test Pebble listener CA",
            "-keyout",
            str(ca_key),
            "-out",
            str(ca),
        ],
        quiet=True,
    )
    proc.run(
        [
            "openssl",
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-subj",
            "/CN=pebble",
            "-keyout",
            str(key),
            "-out",
            str(csr),
        ],
        quiet=True,
    )
    ext = directory / "san.ext"
    ext.write_text(f"subjectAltName=IP:{GUEST_GATEWAY},IP:127.0.0.1,DNS:localhost\n", encoding="utf-8")
    proc.run(
        [
            "openssl",
            "x509",
            "-req",
            "-in",
            str(csr),
            "-CA",
            str(ca),
            "-CAkey",
            str(ca_key),
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            str(ext),
            "-out",
            str(cert),
        ],
        quiet=True,
    )


def _directory_answers(port: int, ca_cert: Path) -> None:
    """Pebble's ACME directory answers on loopback (straight there: proxies never apply)."""
    context = ssl.create_default_context(cafile=str(ca_cert))
    conn = http.client.HTTPSConnection("127.0.0.1", port, context=context, timeout=5)
    try:
        conn.request("GET", "/dir")
        status = conn.getresponse().status
    except (OSError, http.client.HTTPException) as exc:
        raise NotYet(str(exc)) from exc
    finally:
        conn.close()
    if status != 200:
        raise NotYet(f"GET /dir answered HTTP {status}")


def start(directory: Path, *, http_port: int, tls_port: int, acme_port: int | None = None) -> PebbleRun:
    """Start challtestsrv (mock DNS) and Pebble; return once Pebble's directory answers.

    If either program exits first, or Pebble does not answer in time, the error carries the end
    of both logs and everything started is stopped and removed. ``acme_port``: Pebble's own
    port, chosen before the machine's network was made (a hermetic guest reaches only the
    ports declared when its relay started).
    """
    directory.mkdir(parents=True, exist_ok=True)
    _make_tls(directory)
    management, dns, dns_mgmt = free_loopback_ports(3)
    acme = acme_port or free_loopback_ports(1)[0]
    config = {
        "pebble": {
            "listenAddress": f"127.0.0.1:{acme}",
            "managementListenAddress": f"127.0.0.1:{management}",
            "certificate": str(directory / "cert.pem"),
            "privateKey": str(directory / "key.pem"),
            "httpPort": http_port,  # the loopback forward of the guest's port 80
            "tlsPort": tls_port,  # the loopback forward of the guest's port 443
            "ocspResponderURL": "",
            "externalAccountBindingRequired": False,
        }
    }
    (directory / "pebble.json").write_text(json.dumps(config, indent=2), encoding="utf-8")
    logs = dict(zip(PROGRAMS, (directory / "challtestsrv.log", directory / "pebble.log"), strict=True))
    pids = [
        proc.spawn(
            [
                "pebble-challtestsrv",
                "-dns01",
                f"127.0.0.1:{dns}",
                "-http01",
                "",
                "-https01",
                "",
                "-tlsalpn01",
                "",
                "-management",
                f"127.0.0.1:{dns_mgmt}",
                "-defaultIPv4",
                "127.0.0.1",
                "-defaultIPv6",
                "",
            ],
            logfile=logs["pebble-challtestsrv"],
        )
    ]
    pids.append(
        proc.spawn(
            ["pebble", "-config", str(directory / "pebble.json"), "-dnsserver", f"127.0.0.1:{dns}"],
            logfile=logs["pebble"],
            env=PEBBLE_ENV,
        )
    )
    run = PebbleRun(directory=directory, acme_port=acme, pids=tuple(pids))

    def logs_say() -> str:
        return "".join(f"\n--- end of {path.name} ---\n{proc.log_tail(path)}" for path in logs.values())

    def answers() -> None:
        for pid, program in zip(run.pids, logs, strict=True):
            status = proc.exit_status(pid)
            if status is not None:
                raise PebbleDied(f"{program} exited with status {status} before Pebble answered{logs_say()}")
        _directory_answers(acme, run.ca_cert)

    try:
        try:
            wait_until(answers, what=f"Pebble on 127.0.0.1:{acme}", timeout=READY_TIMEOUT, interval=0.5)
        except PebbleDied:
            raise
        except HarnessError as exc:  # timed out: say what the programs themselves said
            raise HarnessError(f"{exc}{logs_say()}") from exc
    except BaseException:
        stop(run.pids, directory)
        raise
    log.info(f"Pebble answers on 127.0.0.1:{acme} (guest: {run.directory_url})")
    return run


def stop(pids: tuple[int, ...] | list[int], directory: Path | None) -> None:
    """Stop Pebble and challtestsrv and remove their state (certificates, keys, logs)."""
    for pid, program in zip(pids, PROGRAMS, strict=False):
        proc.stop(pid, program)
    if directory is not None:
        shutil.rmtree(directory, ignore_errors=True)
