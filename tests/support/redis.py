"""A real ``redis-server`` for tests: its own port and directory, AOF on, stopped by PID.

``make test`` installs Debian's ``redis-server`` when it is missing and runs as root (as in CI);
elsewhere the tests that need it are skipped with the message below.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest

from tests.support.ports import free_port
from tests.support.processes import terminate

SKIP_MESSAGE = (
    "redis-server is not installed: run `make test` as root (it installs Debian's redis-server) "
    "or `apt-get install redis-server` to run the Redis purge-log tests"
)


def redis_binary() -> str:
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip(SKIP_MESSAGE)
    return binary


class RedisServer:
    """One ``redis-server`` process; :meth:`restart` keeps its port and its data directory."""

    def __init__(self, directory: Path, port: int | None = None) -> None:
        self.binary = redis_binary()
        self.directory = directory
        self.port = port or free_port()
        self.process: subprocess.Popen[bytes] | None = None
        directory.mkdir(parents=True, exist_ok=True)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> None:
        argv = [
            self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.directory),
            "--appendonly", "yes", "--appendfsync", "always", "--save", "", "--daemonize", "no",
            "--logfile", str(self.directory / "redis.log"), "--protected-mode", "no",
        ]  # fmt: skip
        self.process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                log = (self.directory / "redis.log").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"redis-server exited at start: {log}")
            if self.ping():
                return
            time.sleep(0.02)
        raise RuntimeError(f"redis-server on port {self.port} did not answer PING within {timeout}s")

    def ping(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM (Redis writes its AOF and exits), SIGKILL if it does not within ``timeout``."""
        process, self.process = self.process, None
        if process is not None:
            terminate(process, timeout)

    def restart(self) -> None:
        self.stop()
        self.start()
