"""Memory tier specifics: its byte accounting stays exact under any sequence of operations."""

from __future__ import annotations

import asyncio
from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge.store.memory import MemoryStore, object_cost
from tests.store.support import body_for, make_meta

KEYS = ["a/1", "a/2", "b/1"]
VARIANTS = ["", "gzip"]
TAGS = ["red", "blue"]

operation = st.one_of(
    st.tuples(
        st.just("put"),
        st.sampled_from(KEYS),
        st.sampled_from(VARIANTS),
        st.integers(0, 600),
        st.lists(st.sampled_from(TAGS), max_size=2, unique=True),
    ),
    st.tuples(st.just("get"), st.sampled_from(KEYS), st.sampled_from(VARIANTS)),
    st.tuples(st.just("delete"), st.sampled_from(KEYS), st.sampled_from([*VARIANTS, None])),
    st.tuples(st.just("delete_prefix"), st.sampled_from(["a/", "b", ""])),
    st.tuples(st.just("delete_tags"), st.sampled_from(TAGS)),
    st.tuples(st.just("update_meta"), st.sampled_from(KEYS), st.sampled_from(VARIANTS), st.integers(0, 300)),
)


async def check_invariants(store: MemoryStore) -> None:
    listed = [meta for key in KEYS for meta in await store.variants(key)]
    stats = store.stats()
    assert stats["objects"] == len(listed)
    assert stats["bytes"] == sum(object_cost(meta, meta.size) for meta in listed)
    assert stats["bytes"] <= store.max_bytes
    for meta in listed:
        obj = await store.get(meta.key, meta.variant)
        assert obj is not None
        assert obj.meta == meta
        assert obj.body is not None
        assert len(obj.body) == meta.size


async def run_operations(operations: list[tuple[object, ...]]) -> None:
    store = MemoryStore(max_bytes=1500, max_object_bytes=700)
    for op in operations:
        name = op[0]
        if name == "put":
            _, key, variant, size, tags = op
            body = body_for(f"{key}{variant}{size}", int(size))  # type: ignore[call-overload]
            meta = make_meta(str(key), body, variant=str(variant), tags=tuple(tags))  # type: ignore[arg-type]
            fits = object_cost(meta, len(body)) <= store.max_object_bytes
            assert await store.put(meta, body) == fits
        elif name == "get":
            await store.get(str(op[1]), str(op[2]))
        elif name == "delete":
            await store.delete(str(op[1]), op[2])  # type: ignore[arg-type]
        elif name == "delete_prefix":
            await store.delete_prefix(str(op[1]))
        elif name == "delete_tags":
            await store.delete_tags([str(op[1])])
        else:
            _, key, variant, header_length = op
            current = await store.get(str(key), str(variant))
            if current is not None:
                headers = (("x-pad", "p" * int(header_length)),)  # type: ignore[call-overload]
                await store.update_meta(replace(current.meta, headers=headers))
        await check_invariants(store)


@settings(max_examples=150, deadline=None)
@given(st.lists(operation, max_size=40))
def test_accounting_and_listings_stay_consistent(operations: list[tuple[object, ...]]) -> None:
    asyncio.run(run_operations(operations))


async def test_writer_cannot_be_reused() -> None:
    store = MemoryStore(max_bytes=10_000, max_object_bytes=1000)
    writer = store.writer("k", "")
    await writer.write(b"abc")
    assert await writer.commit(make_meta("k", b"abc"))
    with pytest.raises(RuntimeError):
        await writer.write(b"more")
    with pytest.raises(RuntimeError):
        await writer.commit(make_meta("k", b"abc"))
    await writer.abort()  # harmless after commit
    obj = await store.get("k", "")
    assert obj is not None
    assert obj.body == b"abc"


async def test_hit_hands_out_the_stored_object_without_copying() -> None:
    store = MemoryStore(max_bytes=10_000, max_object_bytes=1000)
    body = b"x" * 500
    assert await store.put(make_meta("k", body), body)
    first, second = await store.get("k", ""), await store.get("k", "")
    assert first is second
