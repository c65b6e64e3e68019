"""systemd's notify protocol (``Type=notify``, ``WatchdogSec=``): a datagram to ``$NOTIFY_SOCKET``.

``READY=1`` once the program can take traffic (an edge: its own ``/readyz`` answers 200, i.e. after
the purge catch-up), ``WATCHDOG=1`` every half ``$WATCHDOG_USEC`` while it is healthy, ``STOPPING=1``
on the way out.  Without ``$NOTIFY_SOCKET`` (not under systemd) every call does nothing.
"""

from __future__ import annotations

import os
import socket

__all__ = ["notify", "watchdog_interval"]


def notify(message: str) -> bool:
    """Send ``message`` (e.g. ``"READY=1"``); False when not under systemd or it failed."""
    path = os.environ.get("NOTIFY_SOCKET")
    if not path:
        return False
    address = "\0" + path[1:] if path.startswith("@") else path
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.connect(address)
            sock.sendall(message.encode())
    except OSError:
        return False
    return True


def watchdog_interval() -> float | None:
    """Seconds between ``WATCHDOG=1`` messages (half the configured timeout), or None."""
    usec = os.environ.get("WATCHDOG_USEC", "")
    pid = os.environ.get("WATCHDOG_PID")
    if not usec.isdigit() or (pid and pid != str(os.getpid())):
        return None
    return int(usec) / 2_000_000
