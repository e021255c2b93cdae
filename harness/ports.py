"""Free TCP ports on the loopback interface, for the user-mode network's forwards."""

from __future__ import annotations

import socket


def free_loopback_port() -> int:
    """A port that was free on 127.0.0.1 a moment ago.

    There is a window between this check and QEMU binding the port; a lost race makes QEMU
    fail to start, which the domain start reports plainly, so it is not papered over here.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port
