"""Runs inside a scenario's client (by its suite, over SSH): one TCP probe of another machine,
as a client on the network sees it. Prints one JSON object on stdout.

    python3 -c "$(cat tcp_probe.py)" ADDRESS PORT MODE [SNI] [TIMEOUT]

MODE ``tcp``: connect only; ``banner``: connect and read the first line the server sends
(SSH's); ``http``/``https``: a GET / (with SNI for https, no verification: the controller reads
the certificate, returned as base64 DER). Standard library only: the guest's own python3.
"""

from __future__ import annotations

import base64
import http.client
import json
import socket
import ssl
import sys


def probe(address: str, port: int, mode: str, sni: str | None, timeout: float) -> dict[str, object]:
    try:
        raw = socket.create_connection((address, port), timeout=timeout)
    except OSError as exc:
        return {"connected": False, "error": f"{type(exc).__name__}: {exc}"}
    result: dict[str, object] = {"connected": True}
    try:
        if mode == "banner":
            raw.settimeout(timeout)
            lines = raw.recv(256).decode("ascii", "replace").splitlines()
            result["banner"] = lines[0] if lines else ""
        elif mode in ("http", "https"):
            conn = http.client.HTTPConnection(address, port, timeout=timeout)
            if mode == "https":
                context = ssl.create_default_context()
                context.check_hostname = False
                context.verify_mode = ssl.CERT_NONE
                conn.sock = context.wrap_socket(raw, server_hostname=sni)
                der = conn.sock.getpeercert(binary_form=True) or b""
                result["der"] = base64.b64encode(der).decode()
            else:
                conn.sock = raw
            conn.request("GET", "/", headers={"Host": sni or address})
            result["status"] = conn.getresponse().status
    except (OSError, http.client.HTTPException) as exc:
        result["error"] = f"{type(exc).__name__}: {exc}"
    finally:
        raw.close()
    return result


if __name__ == "__main__":
    address, port, mode = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    sni = sys.argv[4] if len(sys.argv) > 4 and sys.argv[4] != "-" else None
    timeout = float(sys.argv[5]) if len(sys.argv) > 5 else 5.0
    print(json.dumps(probe(address, port, mode, sni, timeout)))
