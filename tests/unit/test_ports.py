"""Loopback ports for the guest's forwards and Pebble: free, on loopback, and distinct."""

from __future__ import annotations

import socket

from harness.ports import free_loopback_port, free_loopback_ports


def test_ports_asked_for_together_are_distinct_and_bindable() -> None:
    ports = free_loopback_ports(16)
    assert len(set(ports)) == 16
    for port in ports:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.1", port))  # free again once the probe sockets are closed


def test_a_single_port_is_a_usable_tcp_port() -> None:
    assert 1024 < free_loopback_port() < 65536
