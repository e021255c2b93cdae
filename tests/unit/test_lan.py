"""A scenario network's hub, with real unix sockets and a real hub process (no VM): frames
from one member reach every other member and nobody else; a reconnecting member replaces its
old connection; a member that does not speak QEMU's framing is dropped, not the hub."""

from __future__ import annotations

import socket
import struct
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness import lan, seed, virt
from harness.lan import LENGTH, MAX_FRAME

FRAME_WAIT = 5.0


@pytest.fixture
def hub() -> Iterator[lan.Hub]:
    # A short path: unix socket paths are limited to 108 bytes, and pytest's tmp_path is long.
    directory = Path(tempfile.mkdtemp(prefix="boma-lan-")) / "lan-wan"
    started = lan.start(directory, "wan", ["a", "b", "c"], None)
    try:
        yield started
    finally:
        lan.stop(started.pid)


def member(hub: lan.Hub, name: str) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(str(hub.sockets[name]))
    sock.settimeout(FRAME_WAIT)
    return sock


def send(sock: socket.socket, payload: bytes) -> None:
    sock.sendall(LENGTH.pack(len(payload)) + payload)


def receive(sock: socket.socket) -> bytes:
    header = _exactly(sock, LENGTH.size)
    return _exactly(sock, LENGTH.unpack(header)[0])


def _exactly(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise ConnectionError("closed")
        data += chunk
    return data


def nothing_for(sock: socket.socket, seconds: float = 0.5) -> bool:
    sock.settimeout(seconds)
    try:
        return sock.recv(1) == b""
    except TimeoutError:
        return True
    finally:
        sock.settimeout(FRAME_WAIT)


def logged(hub: lan.Hub, text: str) -> None:
    deadline = time.monotonic() + FRAME_WAIT
    while text not in hub.log.read_text(encoding="utf-8"):
        assert time.monotonic() < deadline, f"the hub never logged {text!r}"
        time.sleep(0.05)


def connected(hub: lan.Hub, *names: str) -> list[socket.socket]:
    socks = [member(hub, n) for n in names]
    deadline = time.monotonic() + FRAME_WAIT
    while time.monotonic() < deadline:  # the hub logs each member it accepts
        text = hub.log.read_text(encoding="utf-8")
        if all(f"{n}: connected" in text for n in names):
            return socks
        time.sleep(0.05)
    raise AssertionError(f"the hub did not accept {names}: {hub.log.read_text(encoding='utf-8')}")


def test_a_frame_reaches_every_other_member_and_not_its_sender(hub: lan.Hub) -> None:
    a, b, c = connected(hub, "a", "b", "c")
    send(a, b"frame-1" * 100)
    assert receive(b) == b"frame-1" * 100
    assert receive(c) == b"frame-1" * 100
    assert nothing_for(a)
    send(c, b"x")  # frames split across reads and joined in one are still whole frames
    c.sendall(LENGTH.pack(3) + b"y")
    c.sendall(b"zz" + LENGTH.pack(1) + b"w")
    assert [receive(a) for _ in range(3)] == [b"x", b"yzz", b"w"]


def test_the_hub_sockets_are_private_to_their_owner(hub: lan.Hub) -> None:
    for path in hub.sockets.values():
        assert path.stat().st_mode & 0o777 == 0o600
    assert hub.sockets["a"].parent.stat().st_mode & 0o777 == 0o700


def test_a_member_that_connects_again_replaces_its_old_connection(hub: lan.Hub) -> None:
    a, b = connected(hub, "a", "b")
    a.close()
    (a2,) = [member(hub, "a")]
    time.sleep(0.3)
    send(b, b"after the restart")
    assert receive(a2) == b"after the restart"


def test_a_stream_that_is_not_qemus_framing_is_dropped_and_the_hub_goes_on(hub: lan.Hub) -> None:
    a, b = connected(hub, "a", "b")
    a.sendall(struct.pack("!I", MAX_FRAME + 1))
    assert a.recv(1) == b""  # the hub closed it
    logged(hub, "not QEMU's stream")
    c = connected(hub, "c")[0]
    send(c, b"still a hub")
    assert receive(b) == b"still a hub"


def test_the_hub_logs_its_counts_when_it_stops(hub: lan.Hub) -> None:
    a, b = connected(hub, "a", "b")
    send(a, b"one")
    assert receive(b) == b"one"
    lan.stop(hub.pid)
    text = hub.log.read_text(encoding="utf-8")
    assert "a: 1 frames sent, 0 received, 0 dropped" in text
    assert "b: 0 frames sent, 1 received, 0 dropped" in text


def test_mac_addresses_are_stable_per_run_and_distinct_per_machine() -> None:
    one = lan.mac_address("run1", "askari", "wan")
    assert one == lan.mac_address("run1", "askari", "wan")
    assert one.startswith("52:54:00:") and len(one) == 17
    assert len({one, lan.mac_address("run1", "peer", "wan"), lan.mac_address("run2", "askari", "wan")}) == 3


# -- what the guest is given ----------------------------------------------------------------


def test_each_private_network_is_a_second_nic_on_a_stream_to_its_hub() -> None:
    lans = (virt.LanPort(Path("/r/lan-wan/askari.sock"), "52:54:00:aa:bb:cc"),)
    args = virt.lan_args(lans)
    assert args == [
        "-netdev", "stream,id=bomanetlan0,server=off,addr.type=unix,addr.path=/r/lan-wan/askari.sock",
        "-device", "virtio-net-pci,netdev=bomanetlan0,mac=52:54:00:aa:bb:cc,addr=0xa,bus=pcie.0",
    ]
    xml = virt.domain_xml(virt.DomainSpec(
        name="boma-it-askari-1", memory_mib=512, vcpus=1, accel=virt.Accel.TCG, disk=Path("/d"),
        seed=Path("/s"), console_log=Path("/c"), forwards=(virt.Forward(2222, 22),), metadata=(), lans=lans,
    ))
    assert "hostfwd=tcp:127.0.0.1:2222-:22" in xml and "addr.path=/r/lan-wan/askari.sock" in xml
    assert xml.index("bomanet,") < xml.index("bomanetlan0")  # the uplink stays the first NIC


def test_the_seed_gives_the_nic_its_static_address_and_no_gateway() -> None:
    wan = seed.LanAddress("wan", "52:54:00:01:02:03", "10.90.0.10/24")
    text = seed.user_data("h", "ssh-ed25519 AAAA k", lans=(wan,))
    assert "/etc/systemd/network/10-boma-lan-wan.network" in text
    assert "MACAddress=52:54:00:01:02:03" in text and "Address=10.90.0.10/24" in text
    assert "Gateway" not in text and "DHCP" not in text
    assert "networkctl" in text
    assert "runcmd" not in seed.user_data("h", "ssh-ed25519 AAAA k")


def test_the_image_runs_dhcp_on_the_uplink_only() -> None:
    from harness.image.recipe import GoldenRecipe, golden_files  # noqa: PLC0415

    dhcp = golden_files(GoldenRecipe())["/etc/systemd/network/80-boma-dhcp.network"]
    assert "Path=pci-0000:00:09.0" in dhcp and "Name=en*" not in dhcp
    assert f"addr={virt.LAN_FIRST_SLOT:#x}" not in " ".join(virt.netdev_args(()))
