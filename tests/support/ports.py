"""Ports for test servers, taken below the kernel's ephemeral range.

A port found by binding port 0 comes from the ephemeral range, the same range the kernel draws
the local port of every outgoing connection from: between the moment a test picks it and the
moment its child process binds it, a connection to an origin, Redis or a router may take it, and
the child exits with "address in use". Ports below that range are never handed out implicitly,
and this session never hands out the same one twice.
"""

from __future__ import annotations

import random
import socket
from pathlib import Path

_issued: set[int] = set()
_random = random.Random()  # private: hypothesis reseeds the global generator


def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def _bindable(port: int) -> bool:
    with socket.socket() as sock:  # no SO_REUSEADDR: a port still in TIME_WAIT counts as taken
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port() -> int:
    """A loopback port nothing listens on, outside the ephemeral range when there is room below it."""
    low, high = 20000, _ephemeral_low() - 1
    if high - low >= 1000:
        for _ in range(200):
            port = _random.randint(low, high)
            if port not in _issued and _bindable(port):
                _issued.add(port)
                return port
    while True:  # a machine whose ephemeral range starts low: fall back to the kernel's choice
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        if port not in _issued:
            _issued.add(port)
            return port
