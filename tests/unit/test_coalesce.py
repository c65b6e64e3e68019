"""The shared fill: readers get every byte in order at their own pace; memory is bounded; failures propagate."""

from __future__ import annotations

import asyncio

import pytest

from edge.cache.coalesce import Coalescer, FillAborted
from edge.cache.outcomes import Shared, Unshared

HEAD = Shared(200, "OK", (("Content-Type", "text/plain"),))


async def read_all(fill_body: object) -> bytes:
    chunks = [chunk async for chunk in fill_body]  # type: ignore[attr-defined]
    return b"".join(chunks)


async def test_readers_joining_before_and_during_get_the_whole_body() -> None:
    coalescer = Coalescer()
    fill = coalescer.start("k")
    early = fill.open_reader()
    fill.set_outcome(HEAD)
    fill.append(b"ab")
    joined = coalescer.join("k")
    assert joined is fill
    late = fill.open_reader()
    fill.append(b"cd")
    fill.finish()
    assert await read_all(fill.body(early)) == b"abcd"
    assert await read_all(fill.body(late)) == b"abcd"
    assert coalescer.collapsed_total == 1


async def test_slow_reader_bounds_memory_and_closes_the_door_to_latecomers() -> None:
    coalescer = Coalescer()
    fill = coalescer.start("big", keep_bytes=10)
    reader = fill.open_reader()
    fill.set_outcome(HEAD)
    body = fill.body(reader)
    fill.append(b"x" * 8)
    assert await body.__anext__() == b"x" * 8
    fill.append(b"y" * 8)  # 16 bytes held > keep_bytes: the chunk everyone read goes
    assert await body.__anext__() == b"y" * 8
    fill.append(b"z" * 8)
    assert not fill.joinable
    assert coalescer.join("big") is None
    fill.finish()
    assert await read_all(body) == b"z" * 8


async def test_origin_failure_reaches_every_reader() -> None:
    fill = Coalescer().start("f")
    reader = fill.open_reader()
    fill.set_outcome(HEAD)
    fill.append(b"partial")
    fill.fail(ConnectionResetError("origin reset"))
    body = fill.body(reader)
    assert await body.__anext__() == b"partial"
    with pytest.raises(FillAborted):
        await body.__anext__()


async def test_failure_before_head_is_reported_to_waiters() -> None:
    fill = Coalescer().start("h")
    waiter = asyncio.ensure_future(fill.wait_outcome())
    await asyncio.sleep(0)
    fill.fail(TimeoutError("no answer"))
    with pytest.raises(FillAborted):
        await waiter


async def test_unshareable_response_is_not_joinable() -> None:
    coalescer = Coalescer()
    fill = coalescer.start("p")
    fill.set_outcome(Unshared(200, "OK", (), "private"))
    assert coalescer.join("p") is None


async def test_nobody_reading_a_large_body_keeps_nothing_in_memory() -> None:
    fill = Coalescer().start("n", max_unread_bytes=16, keep_bytes=4)
    fill.set_outcome(HEAD)
    for _ in range(10):
        fill.append(b"q" * 8)
    assert not fill.joinable  # the body was dropped as it went; new readers could not start at byte 0


async def test_producer_waits_for_the_slowest_reader() -> None:
    fill = Coalescer().start("bp", max_unread_bytes=16, keep_bytes=0)
    reader = fill.open_reader()
    fill.set_outcome(HEAD)
    fill.append(b"a" * 16)
    fill.append(b"b" * 16)  # 32 unread bytes > 16: the producer must wait
    waiting = asyncio.ensure_future(fill.wait_for_room(patience=5))
    await asyncio.sleep(0.01)
    assert not waiting.done()
    body = fill.body(reader)
    assert await body.__anext__() == b"a" * 16
    await asyncio.wait_for(waiting, 1)  # reading made room


async def test_a_stalled_reader_is_detached_not_waited_for_forever() -> None:
    fill = Coalescer().start("stall", max_unread_bytes=8, keep_bytes=0)
    stalled = fill.open_reader()
    fill.set_outcome(HEAD)
    fill.append(b"c" * 32)
    await fill.wait_for_room(patience=0.05)  # gives up on the stalled reader
    with pytest.raises(FillAborted):
        await fill.body(stalled).__anext__()
