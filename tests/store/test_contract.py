"""One contract, every tier: the same tests run against MemoryStore and DiskStore (edge.store.base)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace
from pathlib import Path

import pytest

from edge.store import DiskStore, MemoryStore, Store, StoredMeta
from tests.store.support import body_for, make_meta, read_body

StoreFactory = Callable[..., Awaitable[Store]]


@pytest.fixture(params=["memory", "disk"])
async def make_store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[StoreFactory]:
    """A factory, so a test can pick the byte bounds it needs; disk stores are closed afterwards."""
    opened: list[DiskStore] = []

    async def make(max_bytes: int = 64 * 1024 * 1024, max_object_bytes: int = 16 * 1024 * 1024) -> Store:
        if request.param == "memory":
            return MemoryStore(max_bytes=max_bytes, max_object_bytes=max_object_bytes)
        store = DiskStore(tmp_path / f"cache{len(opened)}", max_bytes=max_bytes, max_object_bytes=max_object_bytes)
        opened.append(store)
        await store.start()
        await store.wait_startup()
        return store

    yield make
    for store in opened:
        await store.close()


@pytest.fixture
async def store(make_store: StoreFactory) -> Store:
    return await make_store()


def same_except_stored_at(stored: StoredMeta, given: StoredMeta) -> bool:
    return replace(stored, stored_at=0.0) == replace(given, stored_at=0.0)


async def test_put_get_round_trip(store: Store) -> None:
    body = b"hello, cache"
    meta = make_meta("GET https://example.com/a", body, tags=("t1",))
    assert await store.put(meta, body)
    obj = await store.get(meta.key, "")
    assert obj is not None
    assert await read_body(obj) == body
    assert same_except_stored_at(obj.meta, meta)
    assert obj.meta.stored_at > 0  # the store stamps when it published
    assert obj.tier == store.name


async def test_empty_and_large_bodies_round_trip(store: Store) -> None:
    for key, body in [("k-empty", b""), ("k-large", body_for("large", 700 * 1024))]:
        assert await store.put(make_meta(key, body), body)
        obj = await store.get(key, "")
        assert obj is not None
        assert await read_body(obj) == body


async def test_get_of_unknown_object_is_none(store: Store) -> None:
    assert await store.get("nothing here", "") is None
    assert await store.variants("nothing here") == []


async def test_put_replaces_previous_body(store: Store) -> None:
    first, second = b"first version", b"second, longer version"
    assert await store.put(make_meta("k", first), first)
    assert await store.put(make_meta("k", second), second)
    obj = await store.get("k", "")
    assert obj is not None
    assert await read_body(obj) == second
    assert len(await store.variants("k")) == 1


async def test_streaming_writer_publishes_only_on_commit(store: Store) -> None:
    body = body_for("stream", 100_000)
    writer = store.writer("k", "")
    for start in range(0, len(body), 7_000):
        await writer.write(body[start : start + 7_000])
        assert await store.get("k", "") is None
        assert await store.variants("k") == []
    assert await writer.commit(make_meta("k", body))
    obj = await store.get("k", "")
    assert obj is not None
    assert await read_body(obj) == body


async def test_aborted_writer_leaves_nothing(store: Store) -> None:
    writer = store.writer("k", "")
    await writer.write(b"partial body")
    await writer.abort()
    assert await store.get("k", "") is None
    assert await store.variants("k") == []
    assert store.stats()["objects"] == 0


async def test_aborted_writer_keeps_the_previous_object(store: Store) -> None:
    old = b"old body"
    assert await store.put(make_meta("k", old), old)
    writer = store.writer("k", "")
    await writer.write(b"new body that breaks off")
    await writer.abort()
    obj = await store.get("k", "")
    assert obj is not None
    assert await read_body(obj) == old


@pytest.mark.parametrize(
    "wrong",
    [
        pytest.param({"size": 3}, id="size"),
        pytest.param({"checksum": "00000000"}, id="checksum"),
        pytest.param({"key": "another key"}, id="key"),
    ],
)
async def test_commit_refuses_meta_that_does_not_match_the_bytes(store: Store, wrong: dict[str, object]) -> None:
    body = b"the real body"
    writer = store.writer("k", "")
    await writer.write(body)
    assert not await writer.commit(replace(make_meta("k", body), **wrong))  # type: ignore[arg-type]
    assert await store.get("k", "") is None
    assert await store.get("another key", "") is None
    assert store.stats()["objects"] == 0


async def test_put_refuses_wrong_checksum_or_size(store: Store) -> None:
    body = b"abc"
    assert not await store.put(make_meta("k", body, checksum="deadbeef"), body)
    assert not await store.put(make_meta("k", body, size=4), body)
    assert await store.get("k", "") is None


async def test_several_variants_per_key(store: Store) -> None:
    bodies = {"": b"identity", "gzip": b"gzipped bytes", "br": b"brotli bytes"}
    for variant, body in bodies.items():
        assert await store.put(make_meta("k", body, variant=variant), body)
    await store.put(make_meta("k2", b"other key"), b"other key")
    listed = await store.variants("k")
    assert sorted(meta.variant for meta in listed) == sorted(bodies)
    assert all(meta.key == "k" for meta in listed)
    for variant, body in bodies.items():
        obj = await store.get("k", variant)
        assert obj is not None
        assert await read_body(obj) == body
        assert obj.meta.variant == variant


async def test_update_meta_keeps_the_body(store: Store) -> None:
    body = b"body stays"
    meta = make_meta("k", body, variant="gzip")
    assert await store.put(meta, body)
    stored = await store.get("k", "gzip")
    assert stored is not None
    refreshed = stored.meta.with_headers([("etag", '"v2"')], request_time=1.8e9, response_time=1.8e9 + 1)
    assert await store.update_meta(refreshed)
    obj = await store.get("k", "gzip")
    assert obj is not None
    assert obj.meta == refreshed
    assert await read_body(obj) == body
    assert [m.headers for m in await store.variants("k")] == [(("etag", '"v2"'),)]
    soft_purged = replace(refreshed, invalidated=True)
    assert await store.update_meta(soft_purged)
    again = await store.get("k", "gzip")
    assert again is not None
    assert again.meta.invalidated


async def test_update_meta_of_missing_or_different_body_is_refused(store: Store) -> None:
    body = b"body"
    meta = make_meta("k", body)
    assert not await store.update_meta(meta)  # nothing stored yet
    assert await store.put(meta, body)
    assert not await store.update_meta(replace(meta, size=99, checksum="00000000"))
    obj = await store.get("k", "")
    assert obj is not None
    assert obj.meta.size == len(body)


async def test_delete_one_variant_or_all(store: Store) -> None:
    for variant in ("", "gzip", "br"):
        assert await store.put(make_meta("k", b"x" + variant.encode(), variant=variant), b"x" + variant.encode())
    assert await store.delete("k", "gzip") == 1
    assert await store.get("k", "gzip") is None
    assert await store.delete("k", "gzip") == 0
    assert sorted(m.variant for m in await store.variants("k")) == ["", "br"]
    assert await store.delete("k") == 2
    assert await store.variants("k") == []
    assert await store.get("k", "") is None
    assert store.stats()["objects"] == 0


async def test_delete_prefix(store: Store) -> None:
    keys = ["https://a.test/img/1", "https://a.test/img/2", "https://a.test/imgx", "https://a.test/css/1"]
    for key in keys:
        assert await store.put(make_meta(key, key.encode()), key.encode())
    assert await store.put(make_meta(keys[0], b"v", variant="gzip"), b"v")
    assert await store.delete_prefix("https://a.test/img/") == 3
    assert [await store.get(key, "") is not None for key in keys] == [False, False, True, True]
    assert await store.get(keys[0], "gzip") is None
    assert await store.delete_prefix("") == 2  # everything
    assert store.stats()["objects"] == 0


async def test_delete_tags(store: Store) -> None:
    tagged = {"k1": ("red",), "k2": ("red", "blue"), "k3": ("blue",), "k4": ("green",), "k5": ()}
    for key, tags in tagged.items():
        assert await store.put(make_meta(key, key.encode(), tags=tags), key.encode())
    assert await store.delete_tags(["red"]) == 2
    assert await store.get("k1", "") is None
    assert await store.get("k2", "") is None
    assert await store.delete_tags(["blue", "green", "absent"]) == 2
    assert await store.get("k5", "") is not None
    assert store.stats()["objects"] == 1


async def test_tags_follow_update_meta(store: Store) -> None:
    body = b"b"
    meta = make_meta("k", body, tags=("old",))
    assert await store.put(meta, body)
    assert await store.update_meta(replace(meta, tags=("new",)))
    assert await store.delete_tags(["old"]) == 0
    assert await store.delete_tags(["new"]) == 1


async def test_clear(store: Store) -> None:
    for n in range(5):
        assert await store.put(make_meta(f"k{n}", b"body", variant=str(n % 2)), b"body")
    assert await store.clear() == 5
    assert [await store.get(f"k{n}", str(n % 2)) for n in range(5)] == [None] * 5
    assert store.stats()["objects"] == 0
    assert store.stats()["bytes"] == 0
    assert await store.put(make_meta("after", b"b"), b"b")  # still usable


async def object_cost(make_store: StoreFactory, body: bytes) -> int:
    """What one object of this shape costs in the tier's byte accounting (tiers count overhead differently)."""
    probe = await make_store()
    assert await probe.put(make_meta("key-0", body), body)
    return probe.stats()["bytes"]


async def test_byte_bound_evicts_least_recently_used(make_store: StoreFactory) -> None:
    body = body_for("lru", 4000)
    cost = await object_cost(make_store, body)
    store = await make_store(max_bytes=3 * cost + cost // 2, max_object_bytes=2 * cost)
    for n in range(3):
        assert await store.put(make_meta(f"key-{n}", body), body)
    assert await store.get("key-0", "") is not None  # key-0 becomes the most recently used
    assert await store.put(make_meta("key-3", body), body)
    present = [await store.get(f"key-{n}", "") is not None for n in range(4)]
    assert present == [True, False, True, True]
    stats = store.stats()
    assert stats["evictions"] == 1
    assert stats["objects"] == 3
    assert stats["bytes"] <= 3 * cost + cost // 2


async def test_eviction_keeps_listing_consistent(make_store: StoreFactory) -> None:
    body = body_for("listing", 4000)
    cost = await object_cost(make_store, body)
    store = await make_store(max_bytes=2 * cost + cost // 2, max_object_bytes=2 * cost)
    for variant in ("a", "b", "c"):
        assert await store.put(make_meta("key-0", body, variant=variant), body)
    assert sorted(m.variant for m in await store.variants("key-0")) == ["b", "c"]


async def test_per_object_limit(make_store: StoreFactory) -> None:
    store = await make_store(max_bytes=1024 * 1024, max_object_bytes=10_000)
    big = body_for("big", 20_000)
    assert not await store.put(make_meta("big", big), big)
    writer = store.writer("big", "")
    for start in range(0, len(big), 4096):
        await writer.write(big[start : start + 4096])  # never raises: the handler keeps streaming
    assert not await writer.commit(make_meta("big", big))
    assert await store.get("big", "") is None
    small = b"s" * 1000
    assert await store.put(make_meta("small", small), small)
    assert store.stats()["objects"] == 1
    assert store.stats()["refused"] >= 2


async def test_stats_counters(store: Store) -> None:
    before = store.stats()
    for key in ("objects", "bytes", "hits", "misses", "evictions", "corrupt_discarded"):
        assert key in before
    assert (before["objects"], before["bytes"]) == (0, 0)
    body = b"12345"
    assert await store.put(make_meta("k", body), body)
    assert await store.get("k", "") is not None
    assert await store.get("missing", "") is None
    stats = store.stats()
    assert stats["objects"] == 1
    assert stats["bytes"] >= len(body)
    assert stats["hits"] == before["hits"] + 1
    assert stats["misses"] == before["misses"] + 1
    assert stats["writes"] == before["writes"] + 1
    await store.delete("k")
    assert (store.stats()["objects"], store.stats()["bytes"]) == (0, 0)


async def test_concurrent_fills_of_one_object_leave_one_whole_object(store: Store) -> None:
    bodies = [body_for(f"fill-{n}", 50_000 + n) for n in range(4)]

    async def fill(body: bytes) -> bool:
        writer = store.writer("k", "")
        for start in range(0, len(body), 8192):
            await writer.write(body[start : start + 8192])
            await asyncio.sleep(0)
        return await writer.commit(make_meta("k", body))

    assert all(await asyncio.gather(*(fill(body) for body in bodies)))
    obj = await store.get("k", "")
    assert obj is not None
    assert await read_body(obj) in bodies
    assert len(await read_body(obj)) == obj.meta.size
    assert store.stats()["objects"] == 1
