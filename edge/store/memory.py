"""Memory tier: one per worker process, an ``lru-dict`` of ready-to-serve objects bounded in bytes.

Rules this module keeps:

- The LRU is keyed by ``(key, variant)`` and holds ``CachedObject(meta, body=bytes)``; a hit hands out
  that very object (no copy), so it must never be mutated: updates replace the entry.
- The bound is the *byte* cost of what is held (body + header bytes + key/variant), not a count: the
  C LRU's own count limit is set out of reach and we pop least-recently-used entries ourselves until
  the total fits. An object costing more than ``max_object_bytes`` is refused, never stored.
- ``_by_key`` (key -> variant -> meta) and ``_by_tag`` mirror the LRU exactly; every insertion and
  removal goes through ``_insert``/``_forget`` so the three never disagree, including on eviction.
- Nothing is visible before ``commit``; commit and ``put`` verify size and checksum, because a body
  promoted from disk or streamed from the origin is only as good as what we checked.
- Everything runs on the event loop without awaiting, so each method is atomic for other tasks.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import replace

from lru import LRU

from edge.http.parts import PART_MARK
from edge.store.base import CachedObject, StoredMeta, body_checksum

_LRU_COUNT_LIMIT = 2**31 - 1  # effectively unbounded: we bound by bytes, not by entries

ObjectId = tuple[str, str]


def object_cost(meta: StoredMeta, body_size: int) -> int:
    """Bytes an object is charged in the memory tier: body plus the header block we keep to send."""
    header_bytes = sum(len(name) + len(value) + 4 for name, value in meta.headers)  # "name: value\r\n"
    return body_size + header_bytes + len(meta.key) + len(meta.variant)


class MemoryStore:
    """Per-worker hot objects, bounded by ``max_bytes`` in total and ``max_object_bytes`` each."""

    name = "memory"

    def __init__(self, max_bytes: int, max_object_bytes: int) -> None:
        if max_bytes <= 0 or max_object_bytes <= 0:
            raise ValueError("max_bytes and max_object_bytes must be positive")
        self.max_bytes = max_bytes
        self.max_object_bytes = min(max_object_bytes, max_bytes)
        self._lru: LRU[ObjectId, CachedObject] = LRU(_LRU_COUNT_LIMIT)
        self._costs: dict[ObjectId, int] = {}
        self._by_key: dict[str, dict[str, StoredMeta]] = {}
        self._by_tag: dict[str, set[ObjectId]] = {}
        self._bytes = 0
        self._counters = dict.fromkeys(
            ("hits", "misses", "writes", "refused", "evictions", "deleted", "corrupt_discarded"), 0
        )

    # -- reads ---------------------------------------------------------------------------------

    async def variants(self, key: str) -> list[StoredMeta]:
        """Every held complete variant of ``key``, without touching recency (listing is not a use)."""
        by_variant = self._by_key.get(key)
        if not by_variant:
            return []
        return [by_variant[variant] for variant in sorted(by_variant) if not variant.startswith(PART_MARK)]

    async def parts(self, key: str) -> list[StoredMeta]:
        """The parts (``edge.http.parts``) held for ``key``."""
        by_variant = self._by_key.get(key)
        if not by_variant:
            return []
        return [by_variant[variant] for variant in sorted(by_variant) if variant.startswith(PART_MARK)]

    async def get(self, key: str, variant: str) -> CachedObject | None:
        return self.get_now(key, variant)

    def get_now(self, key: str, variant: str = "", *, count: bool = True) -> CachedObject | None:
        """``get`` without a coroutine, for the synchronous hit path (``count=False``: a miss is not
        counted, the caller looks for another variant next)."""
        obj = self._lru.get((key, variant))  # .get() marks it most recently used
        if obj is not None or count:
            self._counters["hits" if obj is not None else "misses"] += 1
        return obj

    # -- writes --------------------------------------------------------------------------------

    async def put(self, meta: StoredMeta, body: bytes) -> bool:
        return self._store(meta, body)

    def writer(self, key: str, variant: str) -> MemoryWriter:
        return MemoryWriter(self, key, variant)

    async def update_meta(self, meta: StoredMeta) -> bool:
        """Swap the metadata of a held object; the body must be the same one (same size and checksum)."""
        ident = (meta.key, meta.variant)
        current = self._lru.get(ident)
        if current is None:
            return False
        if (meta.size, meta.checksum) != (current.meta.size, current.meta.checksum):
            return False  # that would be a different body: a fill, not a metadata update
        assert current.body is not None
        cost = object_cost(meta, len(current.body))
        if cost > self.max_object_bytes:
            self._forget(ident)
            return False
        self._forget(ident)
        self._insert(CachedObject(meta=meta, body=current.body, tier=self.name), cost)
        return True

    async def delete(self, key: str, variant: str | None = None) -> int:
        by_variant = self._by_key.get(key)
        if not by_variant:
            return 0
        doomed = [variant] if variant is not None else list(by_variant)
        removed = sum(self._forget((key, name)) for name in doomed)
        self._counters["deleted"] += removed
        return removed

    async def delete_prefix(self, prefix: str) -> int:
        removed = 0
        for key in [key for key in self._by_key if key.startswith(prefix)]:
            removed += await self.delete(key)
        return removed

    async def delete_tags(self, tags: Iterable[str]) -> int:
        doomed: set[ObjectId] = set()
        for tag in tags:
            doomed |= self._by_tag.get(tag, set())
        removed = sum(self._forget(ident) for ident in doomed)
        self._counters["deleted"] += removed
        return removed

    async def clear(self) -> int:
        removed = len(self._lru)
        self._lru.clear()
        self._costs.clear()
        self._by_key.clear()
        self._by_tag.clear()
        self._bytes = 0
        self._counters["deleted"] += removed
        return removed

    def stats(self) -> dict[str, int]:
        return {"objects": len(self._lru), "bytes": self._bytes, **self._counters}

    # -- internals -----------------------------------------------------------------------------

    def count_refused(self) -> None:
        self._counters["refused"] += 1

    def _store(self, meta: StoredMeta, body: bytes) -> bool:
        """Verify, then publish (replacing any previous object of that key/variant) and evict to fit."""
        cost = object_cost(meta, len(body))
        if len(body) != meta.size or cost > self.max_object_bytes or body_checksum(body) != meta.checksum:
            self._counters["refused"] += 1
            return False
        if meta.stored_at == 0.0:
            meta = replace(meta, stored_at=time.time())
        ident = (meta.key, meta.variant)
        self._forget(ident)
        self._insert(CachedObject(meta=meta, body=body, tier=self.name), cost)
        self._counters["writes"] += 1
        return True

    def _insert(self, obj: CachedObject, cost: int) -> None:
        ident = (obj.meta.key, obj.meta.variant)
        self._lru[ident] = obj
        self._costs[ident] = cost
        self._bytes += cost
        self._by_key.setdefault(obj.meta.key, {})[obj.meta.variant] = obj.meta
        for tag in obj.meta.tags:
            self._by_tag.setdefault(tag, set()).add(ident)
        while self._bytes > self.max_bytes:
            oldest = self._lru.peek_last_item()  # least recently used; never ``ident`` (its cost <= max)
            assert oldest is not None
            self._forget(oldest[0])
            self._counters["evictions"] += 1

    def _forget(self, ident: ObjectId) -> int:
        """Remove one object from the LRU and every mirror of it; 1 if it was there."""
        obj = self._lru.pop(ident, None)
        if obj is None:
            return 0
        self._bytes -= self._costs.pop(ident)
        key, variant = ident
        by_variant = self._by_key[key]
        del by_variant[variant]
        if not by_variant:
            del self._by_key[key]
        for tag in obj.meta.tags:
            holders = self._by_tag.get(tag)
            if holders is not None:
                holders.discard(ident)
                if not holders:
                    del self._by_tag[tag]
        return 1


class MemoryWriter:
    """Buffers a streaming fill; past ``max_object_bytes`` it drops the buffer and will refuse commit.

    ``write`` never raises for an oversized body: the handler keeps streaming to the client and simply
    learns from ``commit`` returning False that this tier did not keep it.
    """

    def __init__(self, store: MemoryStore, key: str, variant: str) -> None:
        self._store = store
        self._key = key
        self._variant = variant
        self._chunks: list[bytes] = []
        self._size = 0
        self._state = "open"  # open -> committed | aborted | refused

    @property
    def refused(self) -> bool:
        """True once the body outgrew the tier (commit will return False)."""
        return self._state == "refused"

    async def write(self, chunk: bytes) -> None:
        if self._state == "refused":
            return
        if self._state != "open":
            raise RuntimeError(f"write after {self._state}")
        self._size += len(chunk)
        if self._size > self._store.max_object_bytes:
            self._chunks.clear()
            self._state = "refused"
            return
        self._chunks.append(chunk)

    async def commit(self, meta: StoredMeta) -> bool:
        if self._state != "open":
            if self._state == "refused":
                self._store.count_refused()
                return False
            raise RuntimeError(f"commit after {self._state}")
        body = b"".join(self._chunks)
        self._chunks.clear()
        self._state = "committed"
        if (meta.key, meta.variant) != (self._key, self._variant):
            self._store.count_refused()
            return False
        return self._store._store(meta, body)

    async def abort(self) -> None:
        self._chunks.clear()
        if self._state in ("open", "refused"):
            self._state = "aborted"
