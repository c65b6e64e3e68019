"""Combining stored parts (RFC 9111 §3.4): parts of one representation that touch or overlap become
one part, and a set covering every byte becomes the complete response.

Run after a ranged fill stored its part.  Only parts with the same strong validator as the new one
are combined; a stored part with another validator is an older version of the resource and is
dropped (it could never be served alongside the new bytes).  The combined object takes the newest
part's header fields (§3.4 "use the header fields provided in the new response") and the oldest
``stored_at`` of its members, so an invalidation after any member was stored still hides it; a
purge that arrives while it is written keeps it out, exactly as for a fill.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import replace

from edge.cache.context import CacheContext
from edge.http import parts
from edge.store.base import BodyChecksum, CachedObject, StoredMeta
from edge.store.tiered import body_fd, close_handle

log = logging.getLogger("edge.combine")
READ_BYTES = 256 * 1024

MAX_PARTS = 32  # separate parts kept per key (slices are not counted: they are addressed directly)
COMBINE_MAX_BYTES = 16 * 1024 * 1024  # a run is copied whole when it grows: larger files want slices


async def combine(ctx: CacheContext, new: StoredMeta) -> StoredMeta | None:
    """Fold ``new`` (a just-stored ``~part/``) into its neighbours; returns the combined object, if any."""
    try:
        return await _combine(ctx, new)
    finally:
        await _cap(ctx, new.key)


async def _combine(ctx: CacheContext, new: StoredMeta) -> StoredMeta | None:
    key = new.key
    base = parts.part_base(new.variant)
    new_range = parts.single_part(206, new.headers)
    if base is None or new_range is None:
        return None
    same: list[tuple[StoredMeta, parts.ContentRange]] = []
    for meta in await ctx.store.parts(key):
        if parts.part_base(meta.variant) != base or meta.variant == new.variant:
            continue
        got = parts.single_part(206, meta.headers)
        if ctx.purger.visible(CachedObject(meta)) is None or got is None or got.length != meta.size:
            await ctx.store.delete(key, meta.variant)  # purged, invalidated or unusable: never combined
        elif parts.same_representation(new.headers, meta.headers):
            same.append((meta, got))
        elif meta.response_time <= new.response_time:
            await ctx.store.delete(key, meta.variant)  # an older version of the resource
    joined = parts.connected(new_range, [got for _, got in same])
    members = sorted([(new, new_range), *(same[index] for index in joined)], key=lambda item: item[1].first)
    if len(members) == 1:
        return None
    low, high = members[0][1].first, max(got.last for _, got in members)
    complete = new_range.complete
    assert complete is not None
    if high - low + 1 > min(COMBINE_MAX_BYTES, ctx.cache_settings.max_object_bytes):
        return None
    enclosing = next((meta for meta, got in members if (got.first, got.last) == (low, high)), None)
    if enclosing is not None:  # one member already holds them all: drop the others
        for meta, _ in members:
            if meta is not enclosing:
                await ctx.store.delete(key, meta.variant)
        return enclosing
    merged = parts.ContentRange(low, high, complete)
    if merged.whole:
        meta = replace(new, variant=base, status=200, reason="OK", headers=tuple(parts.with_content_range(
            new.headers, None)))  # fmt: skip
    else:
        meta = replace(new, variant=parts.part_variant(base, low, high),
                       headers=tuple(parts.with_content_range(new.headers, merged)))  # fmt: skip
    meta = replace(meta, stored_at=min(member.stored_at for member, _ in members), size=0, checksum="")
    stored = await _write(ctx, meta, members)
    if stored is None:
        return None
    for member, _ in members:
        await ctx.store.delete(key, member.variant)
    return stored


async def _cap(ctx: CacheContext, key: str) -> None:
    """At most ``MAX_PARTS`` separate parts per key: a client asking for many small, scattered ranges
    must not make every later request list thousands of them.  The oldest go."""
    stored = [meta for meta in await ctx.store.parts(key) if not parts.is_slice(meta.variant)]
    if len(stored) <= MAX_PARTS:
        return
    for meta in sorted(stored, key=lambda meta: meta.response_time)[: len(stored) - MAX_PARTS]:
        await ctx.store.delete(key, meta.variant)


async def _write(
    ctx: CacheContext, meta: StoredMeta, members: list[tuple[StoredMeta, parts.ContentRange]]
) -> StoredMeta | None:
    purges = ctx.purger
    start_seq, started = purges.view.applied_seq, time.time()
    store = ctx.store
    writer = store.disk.writer(meta.key, meta.variant) if store.disk is not None else None
    memory_copy: bytearray | None = bytearray() if store.memory is not None else None
    checksum = BodyChecksum()
    committed = False
    try:
        async with contextlib.aclosing(_joined_body(ctx, members)) as chunks:
            async for chunk in chunks:
                checksum.update(chunk)
                if memory_copy is not None:
                    if len(memory_copy) + len(chunk) <= store.memory_max_object_bytes:
                        memory_copy.extend(chunk)
                    else:
                        memory_copy = None
                if writer is not None:
                    await writer.write(chunk)
                if writer is None and memory_copy is None:
                    return None
        await purges.sync()
        if purges.view.purged_since(start_seq, started, meta.key, meta.tags):
            return None
        final = replace(meta, size=checksum.size, checksum=checksum.hexdigest())
        if writer is not None:
            committed = True
            if not await writer.commit(final):
                return None
    except (OSError, LookupError) as exc:
        log.info("combining parts of %s stopped: %s", meta.key[:200], exc)
        return None
    finally:
        if writer is not None and not committed:
            await writer.abort()
    if memory_copy is not None and store.memory is not None:
        await store.memory.put(final, bytes(memory_copy))
    await purges.sync()
    if purges.view.purged_since(start_seq, started, meta.key, meta.tags):
        await store.delete(meta.key, meta.variant)
        return None
    return final


async def _joined_body(
    ctx: CacheContext, members: list[tuple[StoredMeta, parts.ContentRange]]
) -> AsyncGenerator[bytes]:
    """The bytes of the run, each taken from the first member (by start) that holds it."""
    cursor = members[0][1].first
    for meta, got in members:
        if got.last < cursor:
            continue
        obj = await ctx.store.get_variant(meta.key, meta.variant)
        if obj is None or (obj.meta.size, obj.meta.checksum) != (meta.size, meta.checksum) or meta.size != got.length:
            close_handle(obj)
            raise LookupError(f"part {got.first}-{got.last} is gone")
        try:
            async for chunk in _body(obj, cursor - got.first, got.last - cursor + 1):
                yield chunk
        finally:
            close_handle(obj)
        cursor = got.last + 1


async def _body(obj: CachedObject, start: int, size: int) -> AsyncIterator[bytes]:
    """Bytes of a stored body, from memory or through the descriptor the lookup opened (a path
    could name a newer file by now)."""
    if obj.body is not None:
        yield obj.body[start : start + size]
        return
    fd = body_fd(obj)
    position, end = obj.offset + start, obj.offset + start + size
    while position < end:
        chunk = await asyncio.to_thread(os.pread, fd, min(READ_BYTES, end - position), position)
        if not chunk:
            raise OSError(f"stored part ended {end - position} bytes early")
        position += len(chunk)
        yield chunk
