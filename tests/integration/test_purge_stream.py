"""An edge following the purge stream (``edge.purgestream``) when the stream misbehaves: wiped,
trimmed while the edge was down, rolled back, or holding an entry nobody can read.  A real
``redis-server`` and a real two-worker edge; the log is written directly, as routers write it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
import redis.asyncio as aioredis

from edge.controlplane.models import PurgeRequest
from edge.controlplane.redislog import DEFAULT_PREFIX, RedisPurgeLog
from edge.controlplane.redisurl import parse_purge_log_url
from origin_stub import OriginStubServer
from tests.conftest import EdgeProcess, free_port, launch_edge
from tests.support.redis import RedisServer
from tests.support.wait import until

STREAM = f"{DEFAULT_PREFIX}log"


@pytest.fixture
async def purge_log(redis_server: RedisServer) -> AsyncIterator[RedisPurgeLog]:
    log = RedisPurgeLog(parse_purge_log_url(redis_server.url))
    await log.start()
    yield log
    await log.close()


@pytest.fixture
async def raw(redis_server: RedisServer) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.from_url(redis_server.url, decode_responses=True)
    yield client
    await client.aclose()


class Edge:
    def __init__(self, origin: OriginStubServer, redis: RedisServer, tmp_path: Path,
                 processes: list[EdgeProcess]) -> None:  # fmt: skip
        self.origin, self.redis, self.tmp_path, self.processes = origin, redis, tmp_path, processes
        self.port, self.admin_port = free_port(), free_port()
        self.process: EdgeProcess | None = None

    async def start(self) -> None:
        self.process = launch_edge(
            ["--origin", self.origin.url, "--listen", f"127.0.0.1:{self.port}",
             "--admin-listen", f"127.0.0.1:{self.admin_port}", "--cache-dir", str(self.tmp_path / "cache"),
             "--workers", "2", "--name", "e0", "--access-log", "off"],
            env={"EDGE_CONTROL_PLANE": self.redis.url},
        )  # fmt: skip
        self.processes.append(self.process)

        async def ready() -> bool:
            async with aiohttp.ClientSession() as client, client.get(f"{self.process_admin}/readyz") as resp:
                return resp.status == 200

        await until(ready, timeout=30, what="edge ready")

    @property
    def process_admin(self) -> str:
        return f"http://127.0.0.1:{self.admin_port}"

    def stop(self) -> None:
        assert self.process is not None
        self.process.stop()

    async def fetch(self, path: str) -> str:
        async with aiohttp.ClientSession() as client, client.get(f"http://127.0.0.1:{self.port}{path}") as resp:
            await resp.read()
            return resp.headers.get("X-Cache", "")

    async def warm(self, path: str) -> None:
        await self.fetch(path)
        assert await self.fetch(path) == "HIT"


@pytest.fixture
async def edge(
    origin: OriginStubServer, redis_server: RedisServer, tmp_path: Path, edge_processes: list[EdgeProcess]
) -> Edge:
    running = Edge(origin, redis_server, tmp_path, edge_processes)
    await running.start()
    return running


def url_purge(path: str) -> PurgeRequest:
    return PurgeRequest(urls=[f"http://www.example.com{path}"])


async def applied_through(log: RedisPurgeLog, seq: int) -> None:
    async def done() -> bool:
        return (await log.progress()).get("e0", 0) >= seq

    await until(done, timeout=20, what=f"edge acknowledged sequence {seq}")


async def test_a_wiped_redis_is_followed_from_its_start(edge: Edge, purge_log: RedisPurgeLog,
                                                        raw: aioredis.Redis) -> None:  # fmt: skip
    for index in range(3):
        await purge_log.append(url_purge(f"/obj/old{index}"))
    await applied_through(purge_log, 3)
    await raw.flushall()  # the same server, a new log: sequences start again at 1
    await purge_log.append(url_purge("/obj/unrelated"))
    await applied_through(purge_log, 1)  # the edge noticed, purged everything once, and follows the new log
    path = "/obj/after-wipe?size=8&max_age=600"
    await edge.warm(path)
    record, _ = await purge_log.append(url_purge(path))
    await applied_through(purge_log, record.seq)
    assert await edge.fetch(path) == "MISS"  # sequence 2 of the new log was applied, not skipped as "seen"


async def test_records_trimmed_while_the_edge_was_down_purge_everything(
    edge: Edge, purge_log: RedisPurgeLog, raw: aioredis.Redis
) -> None:
    path = "/obj/kept?size=8&max_age=600"
    await edge.warm(path)
    await purge_log.append(url_purge("/obj/first"))
    await applied_through(purge_log, 1)
    edge.stop()
    for index in range(5):
        await purge_log.append(url_purge(f"/obj/missed{index}"))
    await raw.xtrim(STREAM, maxlen=0, approximate=False)  # retention took them before the edge came back
    await edge.start()
    assert await edge.fetch(path) == "MISS"  # what the lost records purged is unknown: everything went
    await applied_through(purge_log, 6)


async def test_a_rolled_back_log_is_read_again_from_its_start(
    edge: Edge, purge_log: RedisPurgeLog, raw: aioredis.Redis
) -> None:
    for index in range(5):
        await purge_log.append(url_purge(f"/obj/r{index}"))
    await applied_through(purge_log, 5)
    path = "/obj/rolled?size=8&max_age=600"
    await edge.warm(path)
    entries = await raw.xrange(STREAM, "-", "+")
    await raw.xdel(STREAM, *(entry_id for entry_id, _ in entries[3:]))  # a failover lost records 4 and 5 …
    await raw.zremrangebyscore(f"{DEFAULT_PREFIX}index", 4, "+inf")
    await raw.set(f"{DEFAULT_PREFIX}seq", 3)
    record, _ = await purge_log.append(url_purge(path))  # … and hands out sequence 4 again
    assert record.seq == 4

    async def purged() -> bool:  # a hit until the edge reads the new record 4, then one miss
        return await edge.fetch(path) == "MISS"

    await until(purged, timeout=20, what="the edge applied the new record 4")


async def test_a_log_rolled_back_and_written_past_the_edge_while_it_was_away_purges_everything(
    edge: Edge, purge_log: RedisPurgeLog, raw: aioredis.Redis
) -> None:
    """Rolled back below the edge's position, then given more records than it lost: the latest
    sequence is past the edge's again, but its records are not the ones the edge applied."""
    for index in range(5):
        await purge_log.append(url_purge(f"/obj/w{index}"))
    await applied_through(purge_log, 5)
    kept = "/obj/rewritten-kept?size=8&max_age=600"
    await edge.warm(kept)
    edge.stop()
    entries = await raw.xrange(STREAM, "-", "+")
    await raw.xdel(STREAM, *(entry_id for entry_id, _ in entries[3:]))  # an old snapshot: 4 and 5 lost
    await raw.zremrangebyscore(f"{DEFAULT_PREFIX}index", 4, "+inf")
    await raw.set(f"{DEFAULT_PREFIX}seq", 3)
    for index in range(3):  # 4, 5 and 6 again, other purges (6 is past the edge's 5)
        await purge_log.append(url_purge(f"/obj/new{index}"))
    await edge.start()  # before: "sequence 4 came after 5" for ever, never ready
    assert await edge.fetch(kept) == "MISS"  # what the lost records 4 and 5 purged is unknown
    await applied_through(purge_log, 6)
    path = "/obj/after-rewrite?size=8&max_age=600"
    await edge.warm(path)
    record, _ = await purge_log.append(url_purge(path))
    assert record.seq == 7
    await applied_through(purge_log, 7)
    assert await edge.fetch(path) == "MISS"


async def test_an_unreadable_entry_does_not_stop_the_edge(edge: Edge, purge_log: RedisPurgeLog,
                                                          raw: aioredis.Redis) -> None:  # fmt: skip
    await purge_log.append(url_purge("/obj/x"))
    await raw.incr(f"{DEFAULT_PREFIX}seq")
    await raw.xadd(STREAM, {"seq": "2", "values": "{not json"})  # written by something else
    path = "/obj/after-bad?size=8&max_age=600"
    await edge.warm(path)
    record, _ = await purge_log.append(url_purge(path))
    await applied_through(purge_log, record.seq)
    assert await edge.fetch(path) == "MISS"
