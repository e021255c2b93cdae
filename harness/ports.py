"""Free TCP ports on the loopback interface, for the user-mode network's forwards."""

from __future__ import annotations

import contextlib
import socket


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


def free_loopback_port() -> int:
    """One port that was free on 127.0.0.1 a moment ago (see :func:`free_loopback_ports`)."""
    return free_loopback_ports(1)[0]
