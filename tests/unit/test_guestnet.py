"""The hermetic guest network (harness.guestnet, harness.relay): the plan per tier, the guest's
configuration, and the real relay and passt in a network namespace of their own.

The relay tests start the real programs, with no VM: passt then has no guest, so they check
the namespace's side. Every probe is on loopback: the controller's, or the namespace's own.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from harness import aptcache, config, guestnet, proc, seed
from harness.errors import HarnessError
from harness.poll import NotYet, wait_until
from harness.ports import free_loopback_port
from harness.virt import Forward

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBomaRunKeyOnlyForThisTest boma-run-0001"
IPV4 = re.compile(r"\b\d{1,3}(?:\.\d{1,3}){3}\b")


def tier(name: str) -> config.CertTier:
    return config.load_tier(name)


# -- the plan ----------------------------------------------------------------------------------


def test_every_tier_that_needs_no_internet_is_hermetic() -> None:
    names = config.tier_names()
    assert "internal" in names
    for name in names:
        loaded = tier(name)
        plan = guestnet.plan_for(loaded, (guestnet.Egress(guestnet.PACKAGE_CACHE, 23142),))
        assert plan.hermetic is (config.Need.INTERNET not in loaded.needs), name


def test_a_tier_that_needs_the_internet_gets_the_open_network_and_says_why() -> None:
    plan = guestnet.plan_for(tier("le-staging"), (guestnet.Egress(guestnet.PACKAGE_CACHE, 23142),))
    assert not plan.hermetic
    assert plan.apt_proxy is None
    assert "le-staging needs the internet" in plan.describe()


def test_open_network_on_request() -> None:
    plan = guestnet.plan_for(tier("internal"), (), force_open=True)
    assert not plan.hermetic
    assert "--open-network" in plan.describe()


def test_the_hermetic_plan_names_each_destination_and_the_proxy_is_the_gateway() -> None:
    egress = (guestnet.Egress(guestnet.PACKAGE_CACHE, 23142), guestnet.Egress(guestnet.PEBBLE, 41000))
    plan = guestnet.plan_for(tier("acme-local"), egress)
    assert plan.apt_proxy == "http://10.0.2.2:23142"
    text = plan.describe()
    assert "package cache (10.0.2.2:23142 → 127.0.0.1:23142)" in text
    assert "Pebble (10.0.2.2:41000 → 127.0.0.1:41000)" in text


# -- the guest's configuration ------------------------------------------------------------------


def test_the_seed_points_apt_at_the_cache_and_names_no_other_address() -> None:
    text = seed.user_data("boma-it-askari-0001", KEY, apt_proxy="http://10.0.2.2:23142")
    data = yaml.safe_load(text)
    [proxy] = data["write_files"]
    assert proxy["path"] == seed.APT_PROXY_FILE
    assert proxy["content"] == 'Acquire::http::Proxy "http://10.0.2.2:23142";\n'
    assert set(IPV4.findall(text)) == {"10.0.2.2"}
    for key in ("network", "routes", "bootcmd", "runcmd", "apt"):  # no route, no other config of the network
        assert key not in data


def test_the_open_network_seed_has_no_proxy() -> None:
    data = yaml.safe_load(seed.user_data("boma-it-askari-0001", KEY))
    assert "write_files" not in data
    assert not IPV4.findall(seed.user_data("boma-it-askari-0001", KEY))


def test_passt_offers_the_relays_dns_no_udp_and_only_the_declared_inbound_ports() -> None:
    from harness import relay  # noqa: PLC0415

    argv = relay.passt_argv(
        {"inbound": [[40022, 22], [40443, 443]], "runas": "64055:107", "socket": "/s", "passt_log": "/l"}
    )
    assert argv[argv.index("--tcp-ports") + 1] == "22,443"
    assert argv[argv.index("--udp-ports") + 1] == "none"
    assert {"--no-dhcp-search", "--ipv4-only"} <= set(argv)
    assert argv[argv.index("--dns") + 1] == "10.0.2.2"  # the gateway: the relay answers there


def dns_query(
    name: str, qtype: int = 1, *, flags: int = 0x0100, ident: int = 0x4242, edns: int | None = None
) -> bytes:
    """A query for ``name``; ``edns`` adds an OPT record of that EDNS version (DO bit set, a
    4096-byte payload: what systemd-resolved sends at its best feature level)."""
    labels = b"".join(bytes([len(part)]) + part.encode() for part in name.split("."))
    additional = 0 if edns is None else 1
    header = struct.pack("!HHHHHH", ident, flags, 1, 0, 0, additional)
    query = header + labels + b"\0" + struct.pack("!HH", qtype, 1)
    if edns is not None:
        query += struct.pack("!BHHIH", 0, 41, 4096, (edns << 16) | 0x8000, 0)
    return query


def opt_record(reply: bytes, question_end: int) -> tuple[int, int, int, int]:
    """The answer's OPT record: its type, payload size, extended rcode bits and version."""
    name, rtype, payload, ttl, rdlen = struct.unpack_from("!BHHIH", reply, question_end)
    assert (name, rdlen) == (0, 0) and len(reply) == question_end + 11
    return rtype, payload, ttl >> 24, (ttl >> 16) & 0xFF


def test_every_name_the_guest_asks_for_does_not_exist_with_its_question_echoed() -> None:
    from harness import relay  # noqa: PLC0415

    query = dns_query("uptime-kuma", qtype=28)
    answered = relay.dns_answer(query)
    assert answered is not None
    reply, line = answered
    ident, flags, qd, an, ns, ar = struct.unpack_from("!HHHHHH", reply)
    assert (ident, qd, an, ns, ar) == (0x4242, 1, 0, 0, 0)
    assert flags & 0x8000 and flags & 0x0100 and flags & 0x0080  # a response, recursion desired and available
    assert flags & 0xF == 3  # NXDOMAIN
    assert reply[12:] == query[12:]  # the question, and nothing else: the query had no OPT record
    assert line == "uptime-kuma AAAA: NXDOMAIN"


def test_an_edns_query_gets_an_opt_record_back_so_the_resolver_keeps_edns() -> None:
    """RFC 6891: an OPT record in the query means one in the answer. Without it systemd-resolved
    downgraded the gateway and restarted its lookups in flight, and one stuck for two minutes."""
    from harness import relay  # noqa: PLC0415

    query = dns_query("nowhere.boma.example", edns=0)
    question_end = len(query) - 11
    answered = relay.dns_answer(query)
    assert answered is not None
    reply, line = answered
    ident, flags, qd, an, ns, ar = struct.unpack_from("!HHHHHH", reply)
    assert (ident, qd, an, ns, ar) == (0x4242, 1, 0, 0, 1)
    assert flags & 0xF == 3  # still NXDOMAIN
    assert reply[12:question_end] == query[12:question_end]
    assert opt_record(reply, question_end) == (41, 1232, 0, 0)  # version 0, no DO bit: nothing signed
    assert line == "nowhere.boma.example A: NXDOMAIN"


def test_an_edns_version_the_relay_does_not_speak_is_badvers() -> None:
    from harness import relay  # noqa: PLC0415

    query = dns_query("nowhere.boma.example", edns=1)
    answered = relay.dns_answer(query)
    assert answered is not None
    reply, line = answered
    assert struct.unpack_from("!H", reply, 2)[0] & 0xF == 0  # BADVERS is 16: 0 here, 1 in the OPT record
    assert opt_record(reply, len(query) - 11) == (41, 1232, 1, 0)
    assert line == "nowhere.boma.example: EDNS version 1: BADVERS"


def test_what_is_not_one_standard_query_gets_formerr_notimp_or_nothing() -> None:
    from harness import relay  # noqa: PLC0415

    assert relay.dns_answer(b"\x00\x01") is None  # shorter than a header
    assert relay.dns_answer(dns_query("x", flags=0x8180)) is None  # a response: never answered
    formerr = relay.dns_answer(dns_query("x")[:14])  # the question cut short
    assert formerr is not None and struct.unpack_from("!H", formerr[0], 2)[0] & 0xF == 1
    notimp = relay.dns_answer(dns_query("x", flags=0x2800))  # opcode UPDATE
    assert notimp is not None and struct.unpack_from("!H", notimp[0], 2)[0] & 0xF == 4


# -- the package cache's bookkeeping -------------------------------------------------------------


def test_cache_stats_count_hits_misses_and_bytes(tmp_path: Path) -> None:
    (tmp_path / aptcache.TRANSFER_LOG).write_text(
        "1796245608|I|140632|127.0.0.1|deb.debian.org/debian/dists/trixie/InRelease\n"
        "1796245608|O|140636|127.0.0.1|deb.debian.org/debian/dists/trixie/InRelease\n"
        "1796245609|O|2048|127.0.0.1|deb.debian.org/debian/pool/main/h/hello/hello.deb\n"
        "1796245609|E|613|127.0.0.1|deb.debian.org/debian/pool/x.deb [HTTP error, code: 404]\n"
        "garbage\n",
        encoding="utf-8",
    )
    stats = aptcache.stats(tmp_path)
    assert stats is not None
    assert stats.as_json() == {
        "requests": 2, "hits": 1, "misses": 1, "bytes_from_archive": 140632, "bytes_served": 142684,
    }
    assert aptcache.stats(tmp_path / "none") is None


def test_cache_config_is_loopback_only_with_no_mirror_remapping(tmp_path: Path) -> None:
    text = aptcache.config_text(cache_dir=tmp_path / "c", log_dir=tmp_path / "l", port=23142,
                                offline=True, upstream_proxy=None)
    assert "BindAddress: 127.0.0.1\n" in text
    assert "Remap" not in text
    assert "Offlinemode: 1\n" in text
    assert int(re.search(r"^Port: (\d+)$", text, re.M).group(1)) < 32768  # type: ignore[union-attr]


def test_the_cache_starts_under_an_artifacts_directory_deeper_than_a_unix_socket_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A unix socket's path may not exceed 107 bytes: with its admin socket in the artifacts
    directory, apt-cacher-ng failed to start ("File name too long") under a deep checkout."""
    assert shutil.which("apt-cacher-ng", path="/usr/sbin:/usr/bin"), "apt-cacher-ng missing: make bootstrap"
    monkeypatch.setenv("BOMA_CACHE_DIR", str(tmp_path / "cache"))
    deep = tmp_path.joinpath(*["a-directory-name-of-some-length"] * 5) / "package-cache"
    assert len(str(deep / "acng.socket")) > 108
    started = aptcache.start(tmp_path / "run", deep, private=True)
    try:
        with socket.create_connection(("127.0.0.1", started.port), timeout=5):
            pass
    finally:
        aptcache.stop(started.pid)


def test_the_cache_is_emptied_over_its_bound(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BOMA_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv(aptcache.ENV_MAX_MIB, "1")
    (tmp_path / "apt").mkdir()
    (tmp_path / "apt" / "big.deb").write_bytes(b"\0" * (2 * 2**20))
    assert aptcache._bounded() is True
    assert not (tmp_path / "apt").exists()


# -- the real relay and passt --------------------------------------------------------------------

needs_root = pytest.mark.skipif(
    os.geteuid() != 0, reason="the hermetic network needs root (a network namespace per machine)"
)


class Listener:
    """A controller-side loopback server that answers every connection with its name."""

    def __init__(self, name: bytes) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._serve, args=(name,), daemon=True).start()

    def _serve(self, name: bytes) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            conn.sendall(name)
            conn.close()


def in_namespace(pid: int, port: int) -> str:
    """Connect from inside the relay's namespace to its 127.0.0.1:port; what came back, or the error."""
    code = (
        "import socket,sys\n"
        f"s=socket.socket(); s.settimeout(5)\n"
        f"try:\n s.connect(('127.0.0.1',{port})); print('got', s.recv(64).decode())\n"
        "except OSError as e: print('failed', e.strerror)\n"
    )
    done = subprocess.run(["nsenter", f"--net=/proc/{pid}/ns/net", "python3", "-c", code],
                          capture_output=True, text=True, timeout=30, check=True)
    return done.stdout.strip()


def in_use(path: Path) -> bool:
    """Whether anything still accepts on the unix socket ``path``."""
    with socket.socket(socket.AF_UNIX) as probe:
        try:
            probe.connect(str(path))
        except OSError:
            return False
    return True


@pytest.fixture
def relay() -> Iterator[tuple[guestnet.Relay, Listener, Listener]]:
    for program in ("passt", "ip", "nsenter"):
        found = shutil.which(program, path="/usr/sbin:/usr/bin:/sbin:/bin")
        assert found, f"{program} missing: make bootstrap"
    allowed, other = Listener(b"allowed"), Listener(b"not-allowed")
    host_port = free_loopback_port()  # for the relay's inbound forward
    # passt drops to nobody and must reach its directory: not under pytest's 0700 tmp root.
    # (A run's directories let libvirt's QEMU group, which passt runs as, traverse them.)
    where = Path(tempfile.mkdtemp(prefix="boma-relaytest-"))
    where.chmod(0o711)
    try:
        with proc.tagged("relaytest"):
            started = guestnet.start_relay(
                where / "net", (Forward(host_port, 22),), (guestnet.Egress("test", allowed.port),), None
            )
        try:
            yield started, allowed, other
        finally:
            guestnet.stop_relay(started.pid)
    finally:
        shutil.rmtree(where, ignore_errors=True)


@needs_root
def test_the_guest_side_reaches_the_declared_port_and_nothing_else(
    relay: tuple[guestnet.Relay, Listener, Listener],
) -> None:
    started, allowed, other = relay
    assert in_namespace(started.pid, allowed.port) == "got allowed"
    # The same controller's loopback, a port nobody declared: the namespace has no way there.
    assert in_namespace(started.pid, other.port).startswith("failed")
    routes = subprocess.run(["nsenter", f"--net=/proc/{started.pid}/ns/net", "ip", "route", "get", "1.1.1.1"],
                            capture_output=True, text=True, timeout=30, check=False)
    assert routes.returncode != 0  # `ip route get` sends nothing: the route itself is unreachable
    assert "egress → controller 127.0.0.1:" in started.log.read_text(encoding="utf-8")


@needs_root
def test_the_relay_answers_dns_in_its_namespace_at_once(
    relay: tuple[guestnet.Relay, Listener, Listener],
) -> None:
    started, _allowed, _other = relay
    code = (
        "import socket,struct\n"
        "s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM); s.settimeout(5)\n"
        "q=struct.pack('!HHHHHH',7,0x100,1,0,0,0)+b'\\x07nowhere\\x04boma\\x04test\\x00'+struct.pack('!HH',1,1)\n"
        "s.sendto(q,('127.0.0.1',53)); r=s.recv(512)\n"
        "print(struct.unpack_from('!H',r,0)[0], struct.unpack_from('!H',r,2)[0] & 15)\n"
    )
    done = subprocess.run(["nsenter", f"--net=/proc/{started.pid}/ns/net", "python3", "-c", code],
                          capture_output=True, text=True, timeout=30, check=True)
    assert done.stdout.split() == ["7", "3"]  # our id, NXDOMAIN
    assert "dns nowhere.boma.test A: NXDOMAIN" in started.log.read_text(encoding="utf-8")


@needs_root
def test_passt_gets_a_socket_qemu_can_open_and_ends_with_the_relay(
    relay: tuple[guestnet.Relay, Listener, Listener],
) -> None:
    started, _allowed, _other = relay
    assert started.socket.is_socket()
    passt_pid = int((started.socket.parent / "ready").read_text().split()[1])
    assert Path(f"/proc/{passt_pid}").exists()
    assert passt_pid in proc.tagged_pids("relaytest"), "passt does not carry the run's tag for the reaper"
    guestnet.stop_relay(started.pid)

    def passt_gone() -> None:
        if Path(f"/proc/{passt_pid}").exists():
            raise NotYet(f"passt (pid {passt_pid}) still there")

    wait_until(passt_gone, what="passt to end with its relay", timeout=15, interval=0.1)
    assert not started.socket.exists() or not in_use(started.socket)


def test_the_hermetic_network_refuses_to_start_without_root(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    with pytest.raises(HarnessError, match="needs root") as caught:
        guestnet.start_relay(tmp_path / "net", (), (), None)
    assert "--open-network" in (caught.value.hint or "")


@needs_root
def test_a_passt_that_never_comes_up_ends_with_its_relay() -> None:
    """passt binds its socket as nobody: in a directory nobody cannot enter it never appears.
    The relay gives up, says so, and takes passt with it."""
    where = Path(tempfile.mkdtemp(prefix="boma-relaytest-"))  # 0700 root: nobody cannot enter
    try:
        config = {
            "socket": str(where / "passt.socket"), "runas": "65534:65534", "inbound": [], "egress": [],
            "passt_log": str(where / "passt.log"), "ready": str(where / "ready"), "passt_timeout": 2,
        }
        (where / "relay.json").write_text(json.dumps(config), encoding="utf-8")
        done = subprocess.run([sys.executable, "-m", "harness.relay", str(where / "relay.json")],
                              capture_output=True, text=True, timeout=60, check=False,
                              env={**os.environ, "BOMA_RUN": "relayfail"})
        assert done.returncode == 1
        assert "passt did not start" in done.stdout
        assert not (where / "ready").exists()
        left = [pid for pid in proc.tagged_pids("relayfail") if not _zombie(pid)]
        assert left == [], "passt outlived its relay"
    finally:
        shutil.rmtree(where, ignore_errors=True)


def _zombie(pid: int) -> bool:
    try:
        return "State:\tZ" in Path(f"/proc/{pid}/status").read_text(encoding="utf-8")
    except OSError:
        return True
