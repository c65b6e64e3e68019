"""The memory tier in front of the shared disk tier, as one store for the cache driver.

A lookup tries memory, then disk; a disk hit small enough is promoted into memory (checksummed on
the way, so a corrupt body never reaches memory or a client), a larger one has its body file opened
at once: a newer fill or a purge may unlink the file right after ``get`` returned it, and an open
file stays readable while a missing one is a miss.
"""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass

from edge.http import vary
from edge.http.headers import HeaderList
from edge.store.base import CachedObject, Store, StoredMeta, body_checksum
from edge.store.disk import DiskStore
from edge.store.memory import MemoryStore


@dataclass(slots=True)
class Found:
    """What the tiers hold for a request: the chosen object (if any), and whether the key exists at all."""

    obj: CachedObject | None
    key_known: bool


def select(metas: list[StoredMeta], request_headers: HeaderList) -> StoredMeta | None:
    """The stored variant this request may use (RFC 9111 §4.1), most recent first."""
    if len(metas) == 1 and not metas[0].vary:
        return metas[0]
    candidates = [
        vary.StoredVariant(
            variant_id=meta.variant, vary=meta.vary, secondary_key=meta.secondary, date=None,
            response_time=meta.response_time,
        )
        for meta in metas
    ]  # fmt: skip
    chosen = vary.select_variant(candidates, request_headers)
    if chosen is None:
        return None
    return next(meta for meta in metas if meta.variant == chosen.variant_id)


def read_slice(path: os.PathLike[str] | str, offset: int, size: int) -> bytes:
    with open(path, "rb") as handle:
        handle.seek(offset)
        return handle.read(size)


def close_handle(obj: CachedObject | None) -> None:
    """Close the body file a disk hit opened (see :meth:`TieredStore.lookup`)."""
    if obj is None:
        return
    fd = obj.extras.pop("fd", None)
    if isinstance(fd, int):
        os.close(fd)


def body_fd(obj: CachedObject) -> int:
    """The open body file of a disk object (opened now if the lookup did not)."""
    fd = obj.extras.get("fd")
    if isinstance(fd, int):
        return fd
    assert obj.path is not None
    opened = os.open(obj.path, os.O_RDONLY | os.O_CLOEXEC)
    obj.extras["fd"] = opened
    return opened


class TieredStore:
    """Memory (per worker) in front of disk (shared)."""

    def __init__(self, memory: MemoryStore | None, disk: DiskStore | None, memory_max_object_bytes: int) -> None:
        self.memory = memory
        self.disk = disk
        self.memory_max_object_bytes = memory_max_object_bytes

    @property
    def tiers(self) -> list[Store]:
        return [tier for tier in (self.memory, self.disk) if tier is not None]

    async def lookup(self, key: str, request_headers: HeaderList) -> Found:
        key_known = False
        for tier in self.tiers:
            metas = await tier.variants(key)
            if not metas:
                continue
            key_known = True
            chosen = select(metas, request_headers)
            obj = await self._get(tier, key, chosen.variant) if chosen is not None else None
            if obj is not None:
                return Found(obj, True)
        return Found(None, key_known)

    async def get_variant(self, key: str, variant: str) -> CachedObject | None:
        """One named object (a part or slice), from memory, else from disk (promoted or opened)."""
        for tier in self.tiers:
            obj = await self._get(tier, key, variant)
            if obj is not None:
                return obj
        return None

    async def _get(self, tier: Store, key: str, variant: str) -> CachedObject | None:
        obj = await tier.get(key, variant)
        if obj is not None and tier is self.disk:
            obj = await self._promote_or_open(obj)
        return obj

    async def parts(self, key: str) -> list[StoredMeta]:
        """Every stored part of ``key``: the disk's (shared by workers), plus what only memory holds."""
        found: dict[str, StoredMeta] = {}
        for tier in reversed(self.tiers):
            for meta in await tier.parts(key):
                found.setdefault(meta.variant, meta)
        return list(found.values())

    async def put(self, meta: StoredMeta, body: bytes) -> None:
        """Store a whole body in every tier it fits (disk first: it is what other workers see)."""
        if self.disk is not None:
            await self.disk.put(meta, body)
        if self.memory is not None and meta.size <= self.memory_max_object_bytes:
            await self.memory.put(meta, body)

    async def _promote_or_open(self, found: CachedObject) -> CachedObject | None:
        meta = found.meta
        if self.memory is not None and meta.size <= self.memory_max_object_bytes:
            body = found.body
            if body is None and found.path is not None:
                try:
                    body = await asyncio.to_thread(read_slice, found.path, found.offset, meta.size)
                except OSError:
                    return None
                if len(body) != meta.size or body_checksum(body) != meta.checksum:
                    if self.disk is not None:
                        await self.disk.verify(found)  # discards and counts it
                    return None
            if body is not None:
                await self.memory.put(meta, body)
                return CachedObject(meta, body=body, tier="disk")
        if found.body is None and found.path is not None:
            if self.disk is not None and not await self.disk.checked_once(found):
                return None  # corrupt: discarded (a miss now)
            try:
                fd = os.open(found.path, os.O_RDONLY | os.O_CLOEXEC)
            except OSError:
                return None
            found.extras["fd"] = fd
        return found

    async def all_variants(self, key: str) -> list[StoredMeta]:
        for tier in reversed(self.tiers):
            metas = await tier.variants(key)
            if metas:
                return metas
        return []

    async def update_meta(self, meta: StoredMeta) -> None:
        for tier in self.tiers:
            await tier.update_meta(meta)

    async def delete(self, key: str, variant: str | None = None) -> int:
        removed = 0
        for tier in self.tiers:
            removed += await tier.delete(key, variant)
        return removed
