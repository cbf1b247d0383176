"""Loopback ports chosen free at start."""

from __future__ import annotations

import socket

from infra.ports import free_ports


def test_ports_chosen_together_are_distinct_and_bindable() -> None:
    ports = free_ports(64)
    assert len(set(ports)) == 64
    for port in ports:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.1", port))
