"""Free TCP ports on the loopback interface, for the user-mode network's forwards."""

from __future__ import annotations

import contextlib
import random
import socket

from harness.errors import HarnessError


def free_loopback_ports(count: int) -> list[int]:
    """``count`` distinct ports that were free on 127.0.0.1 a moment ago.

    All the probe sockets are held open together, so the kernel cannot hand the same port out
    twice. There is still a window between this check and the real owner binding the port; a
    lost race makes that owner fail to start, which its caller reports plainly.
    """
    with contextlib.ExitStack() as stack:
        ports: list[int] = []
        for _ in range(count):
            sock = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            sock.bind(("127.0.0.1", 0))
            ports.append(sock.getsockname()[1])
        return ports


def free_loopback_port_below(limit: int, low: int = 20000, tries: int = 200) -> int:
    """A port in ``low``–``limit`` that was free on 127.0.0.1 a moment ago, for a program that
    cannot bind the kernel's ephemeral range (apt-cacher-ng, harness.aptcache)."""
    candidates = list(range(low, limit))
    random.shuffle(candidates)
    for port in candidates[:tries]:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise HarnessError(f"no free loopback port in {low}–{limit}")


def free_loopback_port() -> int:
    """One port that was free on 127.0.0.1 a moment ago (see :func:`free_loopback_ports`)."""
    return free_loopback_ports(1)[0]
