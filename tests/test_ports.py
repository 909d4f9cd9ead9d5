"""The ports tests start servers on lie where no outgoing connection can take them first."""

from __future__ import annotations

import socket
from pathlib import Path

from tests.ports import free_port


def test_ports_lie_outside_the_ephemeral_range_and_are_given_once() -> None:
    low, high = (int(part) for part in
                 Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
    ports = [free_port() for _ in range(50)]
    assert len(set(ports)) == len(ports)
    assert all(not low <= port <= high for port in ports)
    for port in ports[:5]:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", port))  # free: a server may bind it
