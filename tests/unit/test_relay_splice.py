"""harness.relay.splice: bytes both ways, and a connection the guest never answered left to passt.

passt (Debian 12's) busy-loops on a connection half-closed from the controller's side before
the guest answered its SYN; the relay holds such a connection open (UNANSWERED_HOLD) until
passt ends it. These run on socket pairs: no namespace, no passt.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import pytest

from harness import relay


class Spliced:
    """``client`` — relay — ``guest``: the two ends a test plays, spliced in a thread."""

    def __init__(self, hold: float) -> None:
        self.client, a = socket.socketpair()
        b, self.guest = socket.socketpair()
        for end in (self.client, self.guest):
            end.settimeout(5)
        self.thread = threading.Thread(target=relay.splice, args=(a, b), kwargs={"hold": hold}, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.client.close()
        self.guest.close()
        self.thread.join(5)


@pytest.fixture
def spliced() -> Iterator[list[Spliced]]:
    made: list[Spliced] = []
    yield made
    for one in made:
        one.close()


def _ended(sock: socket.socket, within: float) -> bool:
    """Whether ``sock`` reads its end (EOF) within ``within`` seconds."""
    sock.settimeout(within)
    try:
        return sock.recv(1) == b""
    except TimeoutError:
        return False


def test_bytes_go_both_ways_and_an_end_is_passed_on(spliced: list[Spliced]) -> None:
    one = Spliced(hold=0.0)
    spliced.append(one)
    one.client.sendall(b"GET / HTTP/1.1\r\n\r\n")
    assert one.guest.recv(100) == b"GET / HTTP/1.1\r\n\r\n"
    one.guest.sendall(b"HTTP/1.1 200 OK\r\n")
    assert one.client.recv(100) == b"HTTP/1.1 200 OK\r\n"
    one.client.shutdown(socket.SHUT_WR)
    assert _ended(one.guest, 2), "the client's end reaches the guest"
    one.guest.close()
    one.thread.join(2)
    assert not one.thread.is_alive()


def test_an_unanswered_connection_stays_open_on_passts_side_until_passt_ends_it(
    spliced: list[Spliced],
) -> None:
    one = Spliced(hold=30.0)
    spliced.append(one)
    one.client.sendall(b"SSH-2.0-probe\r\n")
    one.client.close()  # a probe that gave up before the guest answered
    assert one.guest.recv(100) == b"SSH-2.0-probe\r\n"
    assert not _ended(one.guest, 0.3), "half-closed before the guest answered: passt would spin"
    began = time.monotonic()
    one.guest.close()  # passt's own handshake timeout ends it
    one.thread.join(5)
    assert not one.thread.is_alive() and time.monotonic() - began < 2


def test_an_answered_connection_is_ended_at_once_and_the_hold_is_bounded(spliced: list[Spliced]) -> None:
    answered = Spliced(hold=30.0)
    spliced.append(answered)
    answered.guest.sendall(b"SSH-2.0-OpenSSH_10.0\r\n")
    assert answered.client.recv(100) == b"SSH-2.0-OpenSSH_10.0\r\n"
    answered.client.shutdown(socket.SHUT_WR)
    assert _ended(answered.guest, 2), "the guest spoke, so the client's end is passed on at once"
    silent = Spliced(hold=0.2)
    spliced.append(silent)
    silent.client.shutdown(socket.SHUT_WR)
    assert _ended(silent.guest, 3), "after the hold the end is passed on even if the guest never spoke"
