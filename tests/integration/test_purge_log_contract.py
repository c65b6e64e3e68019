"""One contract, two purge logs: the embedded SQLite file and the Redis stream (a real
``redis-server``) must answer every question the same way (``edge.controlplane.purgelog``)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from edge.controlplane.log import IdempotencyConflict
from edge.controlplane.models import PurgeRequest
from edge.controlplane.purgelog import PurgeLog, PurgeLogUnavailable, open_purge_log
from tests.support.redis import RedisServer

LogFactory = Callable[..., Awaitable[PurgeLog]]


def purge(index: int) -> PurgeRequest:
    return PurgeRequest(urls=[f"http://www.example.com/p{index}"])


@pytest.fixture(params=["sqlite", "redis"])
async def make_log(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[LogFactory]:
    """A factory of started logs of one backend, all closed at the end."""
    opened: list[PurgeLog] = []
    server: RedisServer | None = None
    if request.param == "redis":
        server = RedisServer(tmp_path / "redis")
        server.start()

    async def make(max_records: int | None = 100_000, max_age: float | None = None) -> PurgeLog:
        url = server.url if server is not None else f"sqlite:///{tmp_path / 'purge.db'}"
        log = open_purge_log(url, max_records=max_records, max_age=max_age)
        await log.start()
        opened.append(log)
        return log

    try:
        yield make
    finally:
        for log in opened:
            await log.close()
        if server is not None:
            server.stop()


async def test_sequences_are_contiguous_and_records_come_back_in_order(make_log: LogFactory) -> None:
    log = await make_log()
    assert await log.latest_seq() == 0
    assert await log.oldest_seq() is None
    appended = [(await log.append(purge(index)))[0] for index in range(5)]
    assert [record.seq for record in appended] == [1, 2, 3, 4, 5]
    assert len({record.id for record in appended}) == 5
    assert await log.latest_seq() == 5
    page = await log.page(2, 2)
    assert [record.seq for record in page.records] == [3, 4]
    assert (page.more, page.truncated, page.latest_seq, page.oldest_seq) == (True, False, 5, 1)
    assert page.records[0].values == ("http://www.example.com/p2",)
    page = await log.page(4, 100)
    assert ([record.seq for record in page.records], page.more) == ([5], False)
    assert (await log.page(5, 100)).records == []
    assert [record.seq for record in await log.recent(3)] == [5, 4, 3]
    assert (await log.get(appended[1].id)) == appended[1]
    assert (await log.get("2")) == appended[1]
    assert await log.get("p-99-deadbeef") is None
    assert await log.get("nonsense") is None
    assert await log.log_id() == await log.log_id()


async def test_every_kind_of_purge_round_trips(make_log: LogFactory) -> None:
    log = await make_log()
    requests = [
        PurgeRequest(urls=["http://a.example/x", "http://a.example/y"], soft=True),
        PurgeRequest(prefix="http://a.example/dir/"),
        PurgeRequest(tags=["t1", "t2"], site="shop"),
        PurgeRequest(all=True, site="shop"),
    ]
    for request in requests:
        await log.append(request)
    records = (await log.page(0, 10)).records
    assert [(r.kind, r.values, r.soft, r.site) for r in records] == [
        ("urls", ("http://a.example/x", "http://a.example/y"), True, None),
        ("prefix", ("http://a.example/dir/",), False, None),
        ("tags", ("t1", "t2"), False, "shop"),
        ("all", (), False, "shop"),
    ]
    assert records[2].edge_body() == {"tags": ["t1", "t2"], "soft": False, "id": records[2].id, "cluster_seq": 3,
                                      "site": "shop"}  # fmt: skip


async def test_an_idempotency_key_makes_a_retried_post_one_purge(make_log: LogFactory) -> None:
    log = await make_log()
    first, created = await log.append(purge(1), "retry-me")
    again, created_again = await log.append(purge(1), "retry-me")
    other, _ = await log.append(purge(1), "another")
    assert (created, created_again) == (True, False)
    assert again == first
    assert other.seq == first.seq + 1
    assert await log.latest_seq() == 2
    with pytest.raises(IdempotencyConflict, match="different purge"):
        await log.append(purge(2), "retry-me")  # one key, one purge: never silently another
    assert await log.latest_seq() == 2


async def test_acknowledgements_only_move_forward(make_log: LogFactory) -> None:
    log = await make_log()
    for index in range(3):
        await log.append(purge(index))
    await log.acknowledge("a", 2, affected=4, ms=1.5)
    await log.acknowledge("a", 1)
    await log.acknowledge("b", 3, affected=0)
    assert await log.progress() == {"a": 2, "b": 3}
    rows = await log.deliveries(1, 3)
    assert rows[2]["a"].affected == 4
    assert rows[2]["a"].ms == 1.5
    assert rows[3]["b"].status == "applied"


async def test_retention_by_count_truncates_a_prefix(make_log: LogFactory) -> None:
    log = await make_log(max_records=3)
    for index in range(10):
        await log.append(purge(index))
    await log.prune()
    oldest = await log.oldest_seq()
    assert oldest is not None
    assert oldest == 8
    page = await log.page(0, 100)
    assert page.truncated
    assert page.records[0].seq == oldest
    assert [record.seq for record in page.records] == list(range(oldest, 11))
    assert not (await log.page(oldest - 1, 100)).truncated
    assert await log.latest_seq() == 10


async def test_retention_by_age_truncates_a_prefix(make_log: LogFactory) -> None:
    log = await make_log(max_records=None, max_age=60.0)
    for index in range(4):
        await log.append(purge(index))
    assert await log.prune() == 0
    await log.prune(now=time.time() + 120)  # every record is older than 60 s by then
    assert await log.oldest_seq() is None
    page = await log.page(2, 100)
    assert (page.records, page.truncated, page.latest_seq) == ([], True, 4)
    record, _ = await log.append(purge(9))
    assert record.seq == 5  # sequences go on after retention emptied the log


async def test_an_unreachable_redis_raises_unavailable(tmp_path: Path) -> None:
    server = RedisServer(tmp_path / "redis")
    log = open_purge_log(f"redis://127.0.0.1:{server.port}/0")
    await log.start()
    try:
        with pytest.raises(PurgeLogUnavailable, match="unreachable"):
            await log.append(purge(1))
        server.start()
        record, _ = await log.append(purge(1))  # the client reconnects by itself
        assert record.seq == 1
    finally:
        await log.close()
        server.stop()
