"""Ports for the servers a test starts on a number chosen in advance (a config naming the
gateway's own public URL, nginx, Redis, a child process).

A port the kernel hands out for port 0 lies in its ephemeral range, the range every
outgoing connection's local port is also taken from: between the moment a test learns such
a port and the moment its server binds it, any connection of the run (a client, nginx to
its upstream, a browser) may take it, and the server fails with "Address already in use".
These ports are taken below or above that range, where only a server binding that exact
number can hold one, and a port is never handed out twice in one run."""

from __future__ import annotations

import random
import socket
from pathlib import Path

_RANGE = Path("/proc/sys/net/ipv4/ip_local_port_range")
_given: set[int] = set()


def _outside_ephemeral() -> range:
    """The widest run of ports outside the kernel's ephemeral range, above 10000."""
    try:
        low, high = (int(part) for part in _RANGE.read_text().split())
    except (OSError, ValueError):
        low, high = 32768, 60999  # Linux's default
    below = range(10_000, low)
    above = range(high + 1, 65_536)
    return below if len(below) >= len(above) else above


def free_port(host: str = "127.0.0.1") -> int:
    """A port nobody listens on at ``host`` now, outside the ephemeral range, and not
    given before in this run."""
    ports = _outside_ephemeral()
    for _ in range(200):
        port = random.choice(ports)
        if port in _given:
            continue
        with socket.socket() as probe:
            try:
                probe.bind((host, port))
            except OSError:
                continue
        _given.add(port)
        return port
    raise RuntimeError(f"no free port on {host} in {ports.start}-{ports.stop - 1}")
