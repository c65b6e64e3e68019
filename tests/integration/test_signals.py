"""Operator signals (nginx habits) never leave a worker without its supervisor, and a worker never
outlives its supervisor."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import aiohttp
import pytest

from origin_stub import OriginStubServer
from tests.conftest import PROJECT_ROOT, EdgeProcess, free_port, launch_edge
from tests.support.processes import alive, children_of
from tests.support.wait import until, until_sync


def edge_args(origin: OriginStubServer, tmp_path: Path) -> list[str]:
    return [
        "--origin", origin.url, "--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0",
        "--cache-dir", str(tmp_path / "cache"), "--workers", "2", "--name", "sig-edge", "--access-log", "off",
    ]  # fmt: skip


async def serves(url: str) -> bool:
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as client,
            client.get(f"{url}/obj/sig?size=10&max_age=60") as resp,
        ):
            return resp.status == 200 and len(await resp.read()) == 10
    except aiohttp.ClientError:
        return False


@pytest.mark.parametrize("signum", [signal.SIGUSR1, signal.SIGUSR2, signal.SIGWINCH, signal.SIGHUP])
async def test_operator_signals_keep_the_supervisor_and_its_workers(
    origin: OriginStubServer, tmp_path: Path, edge_processes: list[EdgeProcess], signum: signal.Signals
) -> None:
    edge = launch_edge(edge_args(origin, tmp_path))
    edge_processes.append(edge)
    supervisor = edge.process.pid
    await until(lambda: len(children_of(supervisor)) == 2, what="two workers")
    assert await serves(edge.url)
    before = children_of(supervisor)
    for _ in range(3):  # logrotate may send several in a row
        os.kill(supervisor, signum)
    await asyncio.sleep(1.0)  # nothing must happen during this interval: a signal's default action is quick
    assert alive(supervisor), f"{signum.name} killed the supervisor"
    await until(lambda: len(children_of(supervisor)) == 2, what="two workers after the signal")
    if signum != signal.SIGHUP:
        assert children_of(supervisor) == before  # nothing restarted
    assert await serves(edge.url)
    if signum == signal.SIGHUP:
        return  # HUP is the supervisor's business: a worker receiving it directly is not an operator habit
    workers = children_of(supervisor)
    for worker in workers:  # the same signals sent straight to a worker don't kill it either
        os.kill(worker, signum)
    await asyncio.sleep(1.0)  # nothing must happen during this interval
    assert children_of(supervisor) == workers
    assert all(alive(pid) for pid in workers)
    assert await serves(edge.url)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT, signal.SIGQUIT])
async def test_stop_signals_end_every_process(
    origin: OriginStubServer, tmp_path: Path, edge_processes: list[EdgeProcess], signum: signal.Signals
) -> None:
    edge = launch_edge(edge_args(origin, tmp_path))
    edge_processes.append(edge)
    supervisor = edge.process.pid
    await until(lambda: len(children_of(supervisor)) == 2, what="two workers")
    workers = children_of(supervisor)
    os.kill(supervisor, signum)
    assert edge.process.wait(20) == 0
    await until(lambda: not any(alive(pid) for pid in workers), what="workers gone")


async def test_workers_exit_when_the_supervisor_is_killed(
    origin: OriginStubServer, tmp_path: Path, edge_processes: list[EdgeProcess]
) -> None:
    edge = launch_edge(edge_args(origin, tmp_path))
    edge_processes.append(edge)
    supervisor = edge.process.pid
    await until(lambda: len(children_of(supervisor)) == 2, what="two workers")
    workers = children_of(supervisor)
    os.kill(supervisor, signal.SIGKILL)
    edge.process.wait(5)
    await until(lambda: not any(alive(pid) for pid in workers), timeout=15, what="orphaned workers gone")
    assert not await serves(edge.url)


def test_router_survives_usr1_and_stops_on_quit(tmp_path: Path) -> None:
    inventory = tmp_path / "inventory.toml"
    inventory.write_text(
        '[[edges]]\nname = "a"\nregion = "r"\nlatitude = 0\nlongitude = 0\nurl = "http://127.0.0.1:9"\n'
        'admin_url = "http://127.0.0.1:9"\n'
    )
    port, admin_port = free_port(), free_port()
    router = subprocess.Popen(
        [sys.executable, "-m", "edge.router", "--listen", f"127.0.0.1:{port}", "--admin-listen",
         f"127.0.0.1:{admin_port}", "--edges", str(inventory), "--purge-state-dir", str(tmp_path / "router"),
         "--no-access-log"],
        cwd=PROJECT_ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, start_new_session=True,
    )  # fmt: skip
    try:
        assert router.stdout is not None
        assert "listening" in router.stdout.readline()
        for signum in (signal.SIGUSR1, signal.SIGUSR2, signal.SIGHUP):
            os.kill(router.pid, signum)
        with pytest.raises(subprocess.TimeoutExpired):
            router.wait(0.5)  # nothing must happen during this interval: the router stays up
        os.kill(router.pid, signal.SIGQUIT)
        assert router.wait(15) == 0
    finally:
        if router.poll() is None:
            router.kill()
            router.wait(5)
        if router.stdout is not None:
            router.stdout.close()
    until_sync(lambda: not alive(router.pid), what="router gone")
