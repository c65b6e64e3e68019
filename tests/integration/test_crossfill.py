"""Fills shared across workers stream (``edge.cache.crossfill``): with two real workers, clients of
the worker that did not ask the origin get the body while it is being written, not after, and the
origin is asked once."""

from __future__ import annotations

import asyncio
import json
import os
import time
from pathlib import Path

import aiohttp

from origin_stub import OriginStubServer
from origin_stub.body import expected_body
from tests.conftest import EdgeProcess, launch_edge
from tests.integration.test_cache import origin_count
from tests.support.processes import children_of
from tests.support.wait import until

SIZE = 2 * 1024 * 1024  # 32 origin chunks of 64 KiB
CHUNK_DELAY_MS = 40  # so the origin takes ~1.3 s to send it all


def requests_by_worker(cache_dir: Path) -> dict[int, int]:
    counts: dict[int, int] = {}
    for path in (cache_dir / "stats").glob("*.json"):
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        counts[int(data["pid"])] = int(data.get("requests", 0))
    return counts


async def timed_get(url: str, delay: float = 0.0) -> tuple[float, float, bytes, str]:
    """(seconds to the first body bytes, seconds to the last, body, Cache-Status), on a new connection
    opened after ``delay`` seconds."""
    await asyncio.sleep(delay)
    started = time.monotonic()
    connector = aiohttp.TCPConnector(force_close=True)
    async with aiohttp.ClientSession(connector=connector) as client, client.get(url) as resp:
        assert resp.status == 200
        first = await resp.content.readany()
        first_at = time.monotonic() - started
        rest = await resp.read()
        return first_at, time.monotonic() - started, first + rest, resp.headers["Cache-Status"]


async def test_a_fill_in_one_worker_streams_to_clients_of_another(
    origin: OriginStubServer, tmp_path: Path, edge_processes: list[EdgeProcess]
) -> None:
    cache_dir = tmp_path / "cache"
    edge = launch_edge([
        "--origin", origin.url, "--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0",
        "--cache-dir", str(cache_dir), "--workers", "2", "--name", "cross-edge", "--access-log", "off",
    ])  # fmt: skip
    edge_processes.append(edge)
    await until(lambda: len(children_of(edge.process.pid)) == 2, what="two workers")
    await until(lambda: len(requests_by_worker(cache_dir)) == 2, what="both workers' stats")
    both = False
    # Both workers accept from one shared socket, and a worker woken by a burst of connections
    # takes all that are queued; clients 30 ms apart wake them one by one, so whichever is idle
    # first takes each.  Still a race: retry until both workers took part.
    for attempt in range(12):
        name = f"cross{attempt}"
        url = f"{edge.url}/obj/{name}?size={SIZE}&max_age=600&chunk_delay_ms={CHUNK_DELAY_MS}"
        before = requests_by_worker(cache_dir)
        results = await asyncio.gather(*(timed_get(url, 0.03 * i) for i in range(8)))
        assert all(body == expected_body(name, SIZE) for _, _, body, _ in results)
        assert await origin_count(origin, f"/obj/{name}") == 1  # one fill for every worker
        slowest = max(total for _, total, _, _ in results)
        assert slowest > CHUNK_DELAY_MS * 32 / 1000 * 0.8
        # Nobody waited for the end of the fill to get its first bytes.
        assert all(first < slowest / 2 for first, _, _, _ in results), [round(r[0], 3) for r in results]
        await until(
            lambda before=before: sum(requests_by_worker(cache_dir).values()) >= sum(before.values()) + 8,
            what="stats of the burst",
        )
        after = requests_by_worker(cache_dir)
        if all(after.get(pid, 0) > count for pid, count in before.items()):
            both = True
            assert any("collapsed" in status for _, _, _, status in results)
            break
    assert both, "the connections never reached both workers"


def test_records_of_dead_workers_are_swept(tmp_path: Path) -> None:
    from edge.cache import crossfill

    inflight = tmp_path / "inflight"
    inflight.mkdir()
    alive = crossfill.Record("a", os.getpid(), "/x", "k", "", 200, "OK", (), (), (), 0.0, 0, None)
    dead = crossfill.Record("b", 2**22 + 7, "/y", "k2", "", 200, "OK", (), (), (), 0.0, 0, None)
    (inflight / "alive.json").write_bytes(alive.to_json())
    (inflight / "dead.json").write_bytes(dead.to_json())
    (inflight / "junk.json").write_bytes(b"{not json")
    assert crossfill.sweep(tmp_path) == 2
    assert [path.name for path in inflight.iterdir()] == ["alive.json"]
