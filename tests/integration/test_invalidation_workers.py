"""RFC 9111 §4.4 across workers: after a successful unsafe request, no worker of the edge serves what
it invalidated — the target URI and same-origin ``Location``/``Content-Location`` targets alike."""

from __future__ import annotations

from pathlib import Path

import aiohttp
import pytest

from origin_stub import OriginStubServer
from tests.conftest import EdgeProcess, launch_edge
from tests.integration.test_cache import script
from tests.support.processes import children_of
from tests.support.wait import until


def edge_args(origin: OriginStubServer, tmp_path: Path) -> list[str]:
    return [
        "--origin", origin.url, "--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0",
        "--cache-dir", str(tmp_path / "cache"), "--workers", "2", "--name", "inv-edge", "--access-log", "off",
    ]  # fmt: skip


async def bodies_from_new_connections(url: str, count: int) -> list[bytes]:
    """``count`` GETs, each on its own connection (so the kernel spreads them over the workers)."""
    bodies: list[bytes] = []
    connector = aiohttp.TCPConnector(force_close=True)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=10)) as client:
        for _ in range(count):
            async with client.get(url) as resp:
                assert resp.status == 200
                bodies.append(await resp.read())
    return bodies


@pytest.mark.parametrize("target_field", [None, "Location", "Content-Location"])
async def test_unsafe_method_invalidates_in_every_worker(
    origin: OriginStubServer, tmp_path: Path, edge_processes: list[EdgeProcess], target_field: str | None
) -> None:
    edge = launch_edge(edge_args(origin, tmp_path))
    edge_processes.append(edge)
    await until(lambda: len(children_of(edge.process.pid)) == 2, what="two workers")
    cached = [{"status": 200, "headers": {"Cache-Control": "max-age=300"}, "body": "before"}]
    await script(origin, "page", [*cached, {"status": 200, "headers": {"Cache-Control": "max-age=300"},
                                             "body": "after"}])  # fmt: skip
    page = f"{edge.url}/s/page"
    posted_path = "/s/page" if target_field is None else "/s/form"
    post_answer: dict[str, object] = {"status": 201 if target_field else 200, "body": "ok"}
    if target_field is not None:
        post_answer["headers"] = {target_field: "/s/page"}  # same origin as the request
        await script(origin, "form", [post_answer])
    else:
        await script(origin, "page", [*cached, post_answer, {"status": 200,
                     "headers": {"Cache-Control": "max-age=300"}, "body": "after"}])  # fmt: skip

    # Stored, then hot in both workers' memory tiers (40 requests on fresh connections).
    bodies = await bodies_from_new_connections(page, 40)
    assert set(bodies) == {b"before"}
    async with aiohttp.ClientSession() as client, client.post(f"{edge.url}{posted_path}", data=b"x=1") as resp:
        assert resp.status == post_answer["status"]
        await resp.read()
    if target_field is not None:
        await script(origin, "page", [{"status": 200, "headers": {"Cache-Control": "max-age=300"}, "body": "after"}])
    bodies = await bodies_from_new_connections(page, 200)
    stale = sum(1 for body in bodies if body == b"before")
    assert stale == 0, f"{stale} of 200 requests got the invalidated response"
    assert set(bodies) == {b"after"}
