"""The real ``python -m edge`` program: CLI, workers, restarts, shutdown, memory while streaming."""

from __future__ import annotations

import asyncio
import hashlib
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp

from origin_stub import OriginStubServer
from origin_stub.body import body_chunks
from tests.conftest import PROJECT_ROOT, EdgeProcess, launch_edge


def edge_args(origin: OriginStubServer, tmp_path: Path, workers: int) -> list[str]:
    return [
        "--origin", origin.url,
        "--listen", "127.0.0.1:0",
        "--admin-listen", "127.0.0.1:0",
        "--cache-dir", str(tmp_path / "cache"),
        "--workers", str(workers),
        "--name", "proc-edge",
    ]  # fmt: skip


async def worker_pids(admin_url: str, attempts: int = 60) -> set[int]:
    """PIDs answering on the shared admin socket (each connection may land on any worker)."""
    pids: set[int] = set()
    connector = aiohttp.TCPConnector(force_close=True)
    async with aiohttp.ClientSession(connector=connector) as client:
        for _ in range(attempts):
            async with client.get(f"{admin_url}/healthz") as resp:
                pids.add((await resp.json())["pid"])
    return pids


def children_of(pid: int) -> set[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return {int(item) for item in path.read_text().split()} if path.exists() else set()


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM")


async def wait_until(predicate: object, timeout: float = 10.0) -> None:
    assert callable(predicate)
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, "condition not reached in time"
        await asyncio.sleep(0.1)


async def test_workers_share_the_port_and_a_dead_worker_is_replaced(
    origin: OriginStubServer, tmp_path: Path, edge_processes: list[EdgeProcess]
) -> None:
    edge = launch_edge(edge_args(origin, tmp_path, workers=2))
    edge_processes.append(edge)
    await wait_until(lambda: len(children_of(edge.process.pid)) == 2)
    first_generation = children_of(edge.process.pid)
    assert await worker_pids(edge.admin_url) <= first_generation

    async with aiohttp.ClientSession() as client:
        async with client.get(f"{edge.url}/obj/w?size=100") as resp:
            assert resp.status == 200
            assert resp.headers["Via"].endswith("1.1 proc-edge")

        victim = min(first_generation)
        os.kill(victim, signal.SIGKILL)
        await wait_until(lambda: len(children_of(edge.process.pid) - {victim}) == 2)
        assert victim not in children_of(edge.process.pid)
        for _ in range(10):
            async with client.get(f"{edge.url}/obj/w?size=100") as resp:
                assert resp.status == 200


async def test_sigterm_stops_supervisor_and_every_worker(
    origin: OriginStubServer, tmp_path: Path, edge_processes: list[EdgeProcess]
) -> None:
    edge = launch_edge(edge_args(origin, tmp_path, workers=2))
    edge_processes.append(edge)
    await wait_until(lambda: len(children_of(edge.process.pid)) == 2)
    workers = children_of(edge.process.pid)
    assert edge.stop() == 0
    for pid in workers:
        assert not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text()


async def test_sigterm_drains_an_in_flight_request(
    origin: OriginStubServer, tmp_path: Path, edge_processes: list[EdgeProcess]
) -> None:
    edge = launch_edge(edge_args(origin, tmp_path, workers=1))
    edge_processes.append(edge)
    async with aiohttp.ClientSession() as client:
        pending = asyncio.ensure_future(client.get(f"{edge.url}/obj/drain?size=10&delay_ms=800"))
        await asyncio.sleep(0.3)
        os.kill(edge.process.pid, signal.SIGTERM)
        resp = await pending
        assert resp.status == 200
        assert len(await resp.read()) == 10
        resp.release()
    await asyncio.get_running_loop().run_in_executor(None, edge.process.wait, 15)
    assert edge.process.returncode == 0


async def test_hundreds_of_mib_stream_through_without_growing_memory(
    origin: OriginStubServer, tmp_path: Path, edge_processes: list[EdgeProcess]
) -> None:
    """A body far larger than the worker's memory budget passes both ways; peak RSS stays small."""
    size = 320 * 1024 * 1024
    edge = launch_edge(edge_args(origin, tmp_path, workers=1))
    edge_processes.append(edge)
    (worker,) = await worker_pids(edge.admin_url, attempts=1)
    async with aiohttp.ClientSession() as client:
        digest = hashlib.sha256()
        async with client.get(f"{edge.url}/obj/huge?size={size}") as resp:
            async for chunk in resp.content.iter_chunked(1 << 20):
                digest.update(chunk)
        expected = hashlib.sha256()
        for chunk in body_chunks("huge", 0, size, 1 << 20):
            expected.update(chunk)
        assert digest.hexdigest() == expected.hexdigest()

        async def upload() -> AsyncIterator[bytes]:
            for chunk in body_chunks("up", 0, size, 1 << 20):
                yield chunk

        async with client.put(f"{edge.url}/echo/up", data=upload(), headers={"Content-Length": str(size)}) as resp:
            seen = await resp.json()
        assert seen["body_length"] == size
    print(f"worker peak RSS {peak_rss_mib(worker):.0f} MiB")
    assert peak_rss_mib(worker) < 160, f"worker peak RSS {peak_rss_mib(worker):.0f} MiB"


def test_bad_config_file_stops_startup_naming_the_field(tmp_path: Path) -> None:
    config = tmp_path / "edge.toml"
    config.write_text('origin = "http://127.0.0.1:1"\nworkers = -3\n[upstream]\nconect_timeout = 2\n')
    result = subprocess.run(
        [sys.executable, "-m", "edge", "--config", str(config)],
        capture_output=True, text=True, cwd=PROJECT_ROOT, timeout=30,
    )  # fmt: skip
    assert result.returncode == 2
    assert "workers" in result.stderr
    assert "upstream.conect_timeout: unknown setting" in result.stderr


def test_busy_port_is_a_clear_startup_error(tmp_path: Path) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-m", "edge", "--origin", "http://127.0.0.1:1", "--listen", f"127.0.0.1:{port}"],
            capture_output=True, text=True, cwd=PROJECT_ROOT, timeout=30,
        )  # fmt: skip
    assert result.returncode == 1
    assert f"cannot listen on 127.0.0.1:{port}" in result.stderr


async def test_herd_across_workers_reaches_the_origin_once(
    origin: OriginStubServer, tmp_path: Path, edge_processes: list[EdgeProcess]
) -> None:
    """Two workers, 100 concurrent new connections for one slow URL: one origin request in all."""
    edge = launch_edge(edge_args(origin, tmp_path, workers=2))
    edge_processes.append(edge)
    await wait_until(lambda: len(children_of(edge.process.pid)) == 2)
    await worker_pids(edge.admin_url, attempts=10)  # both workers up and serving
    path = "/obj/mwherd?size=200000&max_age=600&delay_ms=500"
    connector = aiohttp.TCPConnector(limit=0, force_close=True)
    async with aiohttp.ClientSession(connector=connector) as client:

        async def one() -> tuple[int, str]:
            async with client.get(f"{edge.url}{path}") as resp:
                return len(await resp.read()), resp.headers["Cache-Status"]

        results = await asyncio.gather(*(one() for _ in range(100)))
        async with client.get(f"{origin.url}/_stub/counters?path=/obj/mwherd") as resp:
            count = (await resp.json())["count"]
    assert all(size == 200000 for size, _ in results)
    assert count == 1
    # And an object stored by one worker is a hit in every other.
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as client:
        for _ in range(10):
            async with client.get(f"{edge.url}{path}") as resp:
                await resp.read()
                assert resp.headers["X-Cache"] == "HIT"
