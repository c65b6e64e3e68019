"""Shared fixtures: a real origin stub and a real edge on 127.0.0.1, random ports."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hypothesis import settings as hypothesis_settings

from edge.config import EdgeSettings
from origin_stub import OriginStubServer
from tests.support.edge import InProcessAdmin, InProcessEdge, start_in_process
from tests.support.ports import free_port as free_port
from tests.support.processes import terminate
from tests.support.redis import RedisServer

# Properties, not timings: on two shared cores an example may take longer than hypothesis's 200 ms.
hypothesis_settings.register_profile("edgecache", deadline=None)
hypothesis_settings.load_profile("edgecache")

PROJECT_ROOT = Path(__file__).resolve().parent.parent
EDGE_NAME = "test-edge"


@pytest.fixture
async def origin() -> AsyncIterator[OriginStubServer]:
    server = OriginStubServer(host="127.0.0.1", port=0)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


def make_settings(origin_url: str | None, tmp_path: Path, **overrides: Any) -> EdgeSettings:
    """Settings for a test edge; ``origin_url=None``: only the ``sites`` given in ``overrides``."""
    data: dict[str, Any] = {
        "listen": "127.0.0.1:0",
        "admin_listen": "127.0.0.1:0",
        "cache_dir": str(tmp_path / "cache"),
        "workers": 1,
        "name": EDGE_NAME,
    }
    if origin_url is not None:
        data["origin"] = origin_url
    data.update(overrides)
    return EdgeSettings.model_validate(data)


EdgeFactory = Callable[..., Any]


@pytest.fixture
async def start_edge(tmp_path: Path) -> AsyncIterator[EdgeFactory]:
    """Start an in-process edge worker in front of ``origin_url``; returns its public listener
    (and, with ``with_admin``, its admin listener too)."""
    edges: list[InProcessEdge] = []

    async def start(origin_url: str | None, *, port: int = 0, with_admin: bool = False, **overrides: Any) -> Any:
        settings = make_settings(origin_url, tmp_path, **overrides)
        edge = await start_in_process(settings, settings.name or EDGE_NAME, port)
        edges.append(edge)
        return (edge, InProcessAdmin(edge.worker)) if with_admin else edge

    yield start
    for edge in reversed(edges):
        await edge.close()


@pytest.fixture
async def edge(origin: OriginStubServer, start_edge: EdgeFactory) -> InProcessEdge:
    server: InProcessEdge = await start_edge(origin.url)
    return server


async def raw_exchange(port: int, payload: bytes, *, read_timeout: float = 5.0) -> bytes:
    """Send raw bytes and read until the server closes or goes quiet: the wire, unparsed."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(payload)
    await writer.drain()
    chunks: list[bytes] = []
    try:
        while True:
            chunk = await asyncio.wait_for(reader.read(65536), read_timeout)
            if not chunk:
                break
            chunks.append(chunk)
    except (TimeoutError, ConnectionResetError):
        pass
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
    return b"".join(chunks)


@dataclass
class EdgeProcess:
    """A real ``python -m edge`` supervisor with its workers."""

    process: subprocess.Popen[str]
    url: str
    admin_url: str

    def stop(self) -> int:
        status = terminate(self.process)
        if self.process.stdout is not None:
            self.process.stdout.close()
        return status


LISTEN_LINE = re.compile(r"listening on (https?://\S+) \(admin (https?://\S+)\)")


def launch_edge(args: list[str], env: dict[str, str] | None = None, timeout: float = 20.0) -> EdgeProcess:
    """Start the edge CLI and wait for its "listening on" line (it reports the real ports)."""
    errors = tempfile.TemporaryFile()  # noqa: SIM115 - read back only if the edge fails to start
    process = subprocess.Popen(
        [sys.executable, "-m", "edge", *args],
        stdout=subprocess.PIPE,
        stderr=errors,
        text=True,
        cwd=PROJECT_ROOT,
        env={**os.environ, **(env or {})},
        start_new_session=True,
    )
    assert process.stdout is not None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            break
        match = LISTEN_LINE.search(line)
        if match:
            errors.close()  # the child keeps its own descriptor; the file goes when it exits
            return EdgeProcess(process, match.group(1), match.group(2))
    with contextlib.suppress(ProcessLookupError):
        os.kill(process.pid, signal.SIGKILL)
    process.wait(5)
    process.stdout.close()
    errors.seek(0)
    said = errors.read()[-2000:].decode(errors="replace").strip()
    errors.close()
    raise AssertionError(f"edge did not start: exit code {process.returncode}: {said}")


@pytest.fixture
def edge_processes() -> Iterator[list[EdgeProcess]]:
    """Edge processes registered here are stopped by PID at teardown, whatever the test did."""
    started: list[EdgeProcess] = []
    yield started
    for edge_process in started:
        edge_process.stop()


@pytest.fixture
def spawned() -> Iterator[list[subprocess.Popen[bytes]]]:
    """Processes registered here (routers, origin stubs) are stopped by PID at teardown, even when
    the fixture that started them failed half-way (an edge that would not start)."""
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for process in reversed(started):
        terminate(process)


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A real redis-server on a random port with its own directory and AOF on (skipped, saying how
    to enable it, where the binary is missing); stopped by PID."""
    server = RedisServer(tmp_path / "redis")
    server.start()
    try:
        yield server
    finally:
        server.stop()
