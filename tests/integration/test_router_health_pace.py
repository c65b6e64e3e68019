"""The router's health checks against real listeners: an edge that takes its whole timeout to answer
is checked at that pace, every other edge still every interval (a round used to wait for the
slowest check, so one hung edge slowed failover and recovery of all the others)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from aiohttp import web

from edge.inventory import parse_inventory
from edge.router.health import HealthChecker
from tests.support.wait import until


async def serve(app: web.Application) -> tuple[web.AppRunner, int]:
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port: int = runner.addresses[0][1]
    return runner, port


@pytest.fixture
async def edges() -> AsyncIterator[tuple[int, int, list[int]]]:
    """A prompt edge and one whose /readyz hangs for 2.5 s; counts of the prompt one's checks."""
    seen = [0]

    async def prompt(request: web.Request) -> web.Response:
        seen[0] += 1
        return web.json_response({"ready": True})

    async def hung(request: web.Request) -> web.Response:
        await asyncio.sleep(2.5)
        return web.json_response({"ready": True})

    fast_app, slow_app = web.Application(), web.Application()
    fast_app.router.add_get("/readyz", prompt)
    slow_app.router.add_get("/readyz", hung)
    fast_runner, fast_port = await serve(fast_app)
    slow_runner, slow_port = await serve(slow_app)
    yield fast_port, slow_port, seen
    await fast_runner.cleanup()
    await slow_runner.cleanup()


async def test_a_hung_edge_does_not_slow_the_checks_of_the_others(edges: tuple[int, int, list[int]]) -> None:
    fast_port, slow_port, seen = edges
    inventory = parse_inventory({"edges": [
        {"name": name, "region": name, "latitude": 0, "longitude": 0, "url": f"http://127.0.0.1:{port}",
         "admin_url": f"http://127.0.0.1:{port}"}
        for name, port in (("fast", fast_port), ("slow", slow_port))
    ]})  # fmt: skip
    checker = HealthChecker(inventory.edges, interval=0.1, timeout=3.0, fall=1, rise=1)
    start = asyncio.ensure_future(checker.start())  # its first round waits for the slow edge
    try:
        await until(lambda: seen[0] >= 1, timeout=5, what="the first check of the prompt edge")
        await asyncio.wait_for(start, 5)
        counted = seen[0]
        # While the hung edge's second check runs (2.5 s), the prompt edge is checked every 0.1 s.
        await until(lambda: seen[0] >= counted + 8, timeout=2.0, what="the prompt edge checked every interval")
        assert checker.snapshot()["fast"].healthy
    finally:
        await checker.stop()
