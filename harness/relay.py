"""The hermetic network's relay: one process per machine, with sockets in two network namespaces.

Run as ``python -m harness.relay CONFIG.json`` by :mod:`harness.guestnet`, never by hand. It

1. binds the machine's inbound forwards on the controller's ``127.0.0.1`` (SSH and the
   published ports, as QEMU's user-mode network did);
2. moves itself into a new network namespace that holds nothing but its loopback and a bridge
   with no ports (passt needs an interface with a default route to copy the guest's address
   from; the bridge is the one such device a kernel without the dummy module offers), with
   every route out of it unreachable;
3. starts passt inside that namespace, QEMU's side of it a unix socket (a file, so QEMU reaches
   it from the controller's namespace): whatever the guest sends ends in a namespace where
   nothing but this relay listens;
4. listens, inside the namespace, on the egress ports the run allows (the guest reaches them as
   its gateway's ports: passt maps the gateway to the namespace's loopback) and carries each
   connection to the same port on the controller's loopback — and nowhere else;
5. answers DNS on the gateway (which passt's DHCP names as the guest's resolver): every name
   does not exist (NXDOMAIN), at once. Without a resolver, a lookup in the guest or in one of
   its containers (Docker falls back to public resolvers) waited for a timeout, which a real
   host with a resolver never does; and nothing is asked of the world.

A socket keeps the namespace it was made in, so the relay makes every socket in the namespace
it must live in (``setns`` applies to the calling thread only) and copies bytes between them.
Each connection is one line of its log. It ends passt and itself on SIGTERM.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import selectors
import signal
import socket
import struct
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from harness import proc
from harness.errors import HarnessError
from harness.poll import NotYet, wait_until

CLONE_NEWNET = 0x40000000
BRIDGE = "boma0"
GUEST_ADDRESS = "10.0.2.15"  # what QEMU's user-mode network gave the guest: nothing else changes
GATEWAY = "10.0.2.2"
PREFIX = 24
CHUNK = 65536
READY_NAME = "ready"
PASST_TIMEOUT = 30.0  # for passt's socket to appear
# How long an inbound connection the guest has not answered stays open on passt's side after
# the controller's client has gone. passt (Debian 12's 2023-03 snapshot) busy-loops on a
# connection that is half-closed before its handshake with the guest is done (a SYN sent while
# the guest reboots, or one its firewall drops), until its own 10 s handshake timeout ends it:
# one SSH probe closed after 2 s cost 8 s of passt's CPU, held open none (2026-12-04). On a
# 2-core controller that core is the guest's: boots under probing took 90 s instead of 53 s.
UNANSWERED_HOLD = 12.0
DNS_PORT = 53
DNS_HEADER = struct.Struct("!HHHHHH")  # id, flags, question, answer, authority, additional counts
DNS_QR, DNS_OPCODE, DNS_RD, DNS_RA = 0x8000, 0x7800, 0x0100, 0x0080
DNS_FORMERR, DNS_NXDOMAIN, DNS_NOTIMP = 1, 3, 4
# EDNS (RFC 6891): a query's OPT record, and the one the answer then carries. Without it in the
# answer, systemd-resolved concludes the server "doesn't support EDNS(0) properly", downgrades it
# and restarts the transactions in flight; it probes again later, and on a busy boot under TCG a
# lookup in that dance failed with "All attempts to contact name servers or networks failed" for
# two minutes (2026-12-07, the verify's name lookup after a reboot).
DNS_OPT = 41
DNS_OPT_RR = struct.Struct("!BHHIH")  # root name, type, UDP payload size, extended rcode/version/flags, rdlen
DNS_EDNS_PAYLOAD = 1232  # what the relay announces; its answers are a few dozen bytes
DNS_BADVERS_HIGH = 1  # BADVERS (16) is carried as 1 in the OPT record's upper rcode bits, 0 in the header
DNS_TYPES = {1: "A", 28: "AAAA", 5: "CNAME", 12: "PTR", 15: "MX", 16: "TXT", 33: "SRV", 65: "HTTPS"}

_libc = ctypes.CDLL(None, use_errno=True)


def _check(result: int, what: str) -> None:
    if result != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def unshare_net() -> None:
    _check(_libc.unshare(CLONE_NEWNET), "unshare(CLONE_NEWNET)")


def setns(fd: int) -> None:
    _check(_libc.setns(fd, CLONE_NEWNET), "setns")


@contextlib.contextmanager
def inside(target: int, home: int) -> Iterator[None]:
    """Run the block (this thread only) in the namespace ``target``, then back in ``home``."""
    setns(target)
    try:
        yield
    finally:
        setns(home)


def listener(port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    sock.listen(64)
    return sock


def _question_end(query: bytes) -> tuple[int, str] | None:
    """Where a query's one question ends, and its name; None if it is not one well-formed
    question (compression pointers never appear in a query's question)."""
    at, labels = DNS_HEADER.size, list[str]()
    while at < len(query):
        size = query[at]
        if size == 0:
            end = at + 1 + 4  # the zero label, then type and class
            return (end, ".".join(labels) or ".") if end <= len(query) else None
        if size > 63:
            return None
        labels.append(query[at + 1 : at + 1 + size].decode("ascii", errors="replace"))
        at += 1 + size
    return None


def _edns_version(query: bytes, at: int, additional: int) -> int | None:
    """The EDNS version of the OPT record that follows the question (``at``), None if the query
    has none. Only an OPT record right after the question is looked for: a query carries no
    answer or authority records, and a client puts its OPT record first among the additional."""
    if additional < 1 or len(query) < at + DNS_OPT_RR.size:
        return None
    name, rtype, _payload, ttl, _rdlen = DNS_OPT_RR.unpack_from(query, at)
    if name != 0 or rtype != DNS_OPT:
        return None
    return int(ttl >> 16) & 0xFF


def dns_answer(query: bytes) -> tuple[bytes, str] | None:
    """The relay's answer to a DNS query, and a line for its log: the same id and question,
    NXDOMAIN (or NOTIMP for anything but a standard query), and an OPT record when the query had
    one (RFC 6891: a responder MUST; BADVERS for an EDNS version other than 0). None: not a
    query, no answer."""
    if len(query) < DNS_HEADER.size:
        return None
    ident, flags, questions, answers, authorities, additional = DNS_HEADER.unpack_from(query)
    if flags & DNS_QR:
        return None
    reply = DNS_QR | (flags & (DNS_OPCODE | DNS_RD)) | DNS_RA
    found = _question_end(query) if questions == 1 else None
    if found is None:
        return DNS_HEADER.pack(ident, reply | DNS_FORMERR, 0, 0, 0, 0), "a malformed query: FORMERR"
    end, name = found
    qtype = struct.unpack_from("!H", query, end - 4)[0]
    rcode = DNS_NXDOMAIN if flags & DNS_OPCODE == 0 else DNS_NOTIMP
    what = f"{name} {DNS_TYPES.get(qtype, qtype)}: {'NXDOMAIN' if rcode == DNS_NXDOMAIN else 'NOTIMP'}"
    version = _edns_version(query, end, additional) if answers == authorities == 0 else None
    opt = b""
    if version is not None:
        high = 0
        if version != 0:
            rcode, high, what = 0, DNS_BADVERS_HIGH, f"{name}: EDNS version {version}: BADVERS"
        opt = DNS_OPT_RR.pack(0, DNS_OPT, DNS_EDNS_PAYLOAD, high << 24, 0)
    header = DNS_HEADER.pack(ident, reply | rcode, 1, 0, 0, 1 if opt else 0)
    return header + query[DNS_HEADER.size : end] + opt, what


def dns_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", DNS_PORT))
    return sock


def answer_dns(sock: socket.socket) -> None:
    try:
        query, peer = sock.recvfrom(CHUNK)
    except OSError:
        return
    if answered := dns_answer(query):
        reply, what = answered
        with contextlib.suppress(OSError):
            sock.sendto(reply, peer)
        log(f"dns {what}")


def log(line: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} {line}", flush=True)


def _pump(src: socket.socket, dst: socket.socket, heard: threading.Event | None = None) -> None:
    """Copy ``src`` to ``dst`` until ``src`` ends; ``heard`` is set at ``src``'s first bytes."""
    try:
        while data := src.recv(CHUNK):
            if heard is not None:
                heard.set()
            dst.sendall(data)
    except OSError:
        pass


def _end_writes(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_WR)


def splice(a: socket.socket, b: socket.socket, *, hold: float = 0.0) -> None:
    """Copy both ways until both sides are done, then close both.

    When ``a`` ends first and ``b`` has sent nothing yet, ``b`` is kept open for up to ``hold``
    seconds before its end is passed on (at once if ``b`` speaks or ends meanwhile): see
    :data:`UNANSWERED_HOLD`."""
    heard = threading.Event()

    def back() -> None:
        _pump(b, a, heard)
        heard.set()
        _end_writes(a)

    thread = threading.Thread(target=back, daemon=True)
    thread.start()
    _pump(a, b)
    heard.wait(hold)
    _end_writes(b)
    thread.join()
    a.close()
    b.close()


def connect_from(ns: int, home: int, port: int) -> socket.socket:
    """A socket made in namespace ``ns``, connected to its ``127.0.0.1:port``."""
    with inside(ns, home):
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.settimeout(10)
    try:
        sock.connect(("127.0.0.1", port))
    except OSError:
        sock.close()
        raise
    sock.settimeout(None)
    return sock


def setup_namespace() -> None:
    """The namespace's devices and routes: loopback, the port-less bridge, no way out."""
    for argv in (
        ["ip", "link", "set", "lo", "up"],
        ["ip", "link", "add", BRIDGE, "type", "bridge"],
        ["ip", "link", "set", BRIDGE, "up"],
        ["ip", "address", "add", f"{GUEST_ADDRESS}/{PREFIX}", "dev", BRIDGE],
        ["ip", "route", "add", "default", "via", GATEWAY, "dev", BRIDGE],
        # More specific than the default route, which passt only reads: every connection passt
        # opens to anything but the namespace's own loopback fails at once.
        ["ip", "route", "add", "unreachable", "0.0.0.0/1"],
        ["ip", "route", "add", "unreachable", "128.0.0.0/1"],
        ["ip", "route", "add", "unreachable", "10.0.2.0/25"],
        ["ip", "route", "add", "unreachable", "10.0.2.128/25"],
    ):
        proc.run(argv, quiet=True)


def passt_argv(config: dict[str, Any]) -> list[str]:
    ports = ",".join(str(guest) for _host, guest in config["inbound"])
    return [
        "passt",
        "--foreground",
        "--quiet",
        "--ipv4-only",
        "--dns",  # the gateway, which passt maps to the namespace's loopback: the relay answers
        GATEWAY,
        "--no-dhcp-search",
        "--mtu",
        str(config.get("mtu", 1500)),
        "--runas",
        config["runas"],
        "--socket",
        config["socket"],
        "--stderr",  # to its log, which the relay opens: passt cannot open files in its directory
        "--tcp-ports",
        ports or "none",
        "--udp-ports",
        "none",
    ]


def serve(config: dict[str, Any]) -> None:
    home = os.open("/proc/self/ns/net", os.O_RDONLY)
    routes: dict[int, tuple[str, int]] = {}  # listening fd → (where the peer is made, its port)
    sockets: list[socket.socket] = []
    for host_port, guest_port in config["inbound"]:
        sock = listener(host_port)
        sockets.append(sock)
        routes[sock.fileno()] = ("namespace", guest_port)
    unshare_net()
    ns = os.open("/proc/self/ns/net", os.O_RDONLY)
    setup_namespace()
    for port in config["egress"]:
        sock = listener(port)
        sockets.append(sock)
        routes[sock.fileno()] = ("controller", port)
    dns = dns_socket()
    sockets.append(dns)
    Path(config["socket"]).unlink(missing_ok=True)
    # passt carries the run's tag like every process of the run (the reaper finds it by that).
    tag = os.environ.get(proc.ENV_RUN_TAG)
    with proc.tagged(tag) if tag else contextlib.nullcontext():
        passt = proc.spawn(passt_argv(config), logfile=Path(config["passt_log"]))

    def stop(_signum: int, _frame: object) -> None:
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        _serve_until_stopped(config, passt, routes, sockets=sockets, home=home, ns=ns)
    finally:  # however the relay ends, its passt ends with it
        proc.stop(passt, "passt")
        log("stopped")


def _serve_until_stopped(
    config: dict[str, Any],
    passt: int,
    routes: dict[int, tuple[str, int]],
    *,
    sockets: list[socket.socket],
    home: int,
    ns: int,
) -> None:
    """Wait for passt's socket, say ready, then carry connections until told to stop."""

    def socket_there() -> None:
        if proc.exit_status(passt) is not None:
            raise HarnessError("passt exited")
        if not Path(config["socket"]).exists():
            raise NotYet(f"passt's socket {config['socket']}")

    try:
        wait_until(
            socket_there,
            what="passt's socket",
            timeout=config.get("passt_timeout", PASST_TIMEOUT),
            interval=0.05,
        )
    except HarnessError as exc:
        log(f"passt did not start ({exc.message}): {proc.log_tail(Path(config['passt_log']))}")
        raise SystemExit(1) from None
    log(
        "ready: inbound "
        + ", ".join(f"127.0.0.1:{h}→guest:{g}" for h, g in config["inbound"])
        + "; egress "
        + (", ".join(f"{GATEWAY}:{p}→127.0.0.1:{p}" for p in config["egress"]) or "none")
        + f"; dns {GATEWAY}:{DNS_PORT} answers NXDOMAIN"
    )
    Path(config["ready"]).write_text(f"{os.getpid()} {passt}\n", encoding="utf-8")
    selector = selectors.DefaultSelector()
    for sock in sockets:
        selector.register(sock, selectors.EVENT_READ)
    while True:
        for key, _events in selector.select(timeout=5):
            server: socket.socket = key.fileobj  # type: ignore[assignment]
            if server.type == socket.SOCK_DGRAM:
                answer_dns(server)
                continue
            client, _ = server.accept()
            where, port = routes[server.fileno()]
            # Made in the main thread (setns is per thread): the copy goes to a thread of its own.
            try:
                peer = connect_from(home if where == "controller" else ns, ns, port)
            except OSError as exc:
                log(f"{where} 127.0.0.1:{port}: {exc.strerror or exc}")
                client.close()
                continue
            log(f"{'egress' if where == 'controller' else 'inbound'} → {where} 127.0.0.1:{port}")
            hold = UNANSWERED_HOLD if where == "namespace" else 0.0
            threading.Thread(target=splice, args=(client, peer), kwargs={"hold": hold}, daemon=True).start()
        if proc.exit_status(passt) is not None:
            log("passt exited: the guest has no network")
            raise SystemExit(1)


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m harness.relay CONFIG.json", file=sys.stderr)
        return 2
    serve(json.loads(Path(argv[0]).read_text(encoding="utf-8")))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
