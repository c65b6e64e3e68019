"""Code run in separate OS processes by test_disk.py (spawned: each gets its own interpreter and loop)."""

from __future__ import annotations

import asyncio
import os
import random
from multiprocessing.synchronize import Barrier, Event
from pathlib import Path
from typing import Any

from edge.store.disk import DiskStore
from tests.store.support import body_for, make_meta

KEY = "GET https://race.test/shared"
VARIANT = "gzip"
FILL_HEADER = "x-fill"


def fill_label(writer_id: int, round_no: int) -> str:
    return f"writer{writer_id}-round{round_no}"


def expected_body(label: str) -> bytes:
    """The exact body the fill named ``label`` wrote (size included, so a torn body cannot pass)."""
    writer_part, round_part = label.split("-")
    return body_for(label, body_size(int(writer_part.removeprefix("writer")), int(round_part.removeprefix("round"))))


def body_size(writer_id: int, round_no: int) -> int:
    """Mostly small bodies (read into memory, checksummed); every fifth one large (served as a file)."""
    rng = random.Random(f"{writer_id}/{round_no}")
    return rng.randrange(300_000, 400_000) if round_no % 5 == 4 else rng.randrange(1, 120_000)


def open_store(directory: str) -> DiskStore:
    return DiskStore(Path(directory), max_bytes=1 << 30, access_flush_interval=0.05)


def run_writer(directory: str, writer_id: int, rounds: int, barrier: Barrier) -> None:
    asyncio.run(_write(directory, writer_id, rounds, barrier))


async def _write(directory: str, writer_id: int, rounds: int, barrier: Barrier) -> None:
    store = open_store(directory)
    await store.start()
    await store.wait_startup()
    barrier.wait()
    try:
        for round_no in range(rounds):
            label = fill_label(writer_id, round_no)
            body = body_for(label, body_size(writer_id, round_no))
            writer = store.writer(KEY, VARIANT)
            for start in range(0, len(body), 16_384):
                await writer.write(body[start : start + 16_384])
                await asyncio.sleep(0)
            meta = make_meta(KEY, body, variant=VARIANT, headers=((FILL_HEADER, label),))
            if not await writer.commit(meta):
                raise AssertionError(f"commit of {label} refused")
    finally:
        await store.close()


def run_reader(directory: str, barrier: Barrier, stop: Event, results: Any) -> None:
    results.put(asyncio.run(_read(directory, barrier, stop)))


async def _read(directory: str, barrier: Barrier, stop: Event) -> dict[str, int]:
    """Loop get() during the fills; check each body against the write its meta names, not the store's word."""
    store = open_store(directory)
    await store.start()
    await store.wait_startup()
    counts = {"hits": 0, "misses": 0, "file_hits": 0, "vanished": 0, "mismatches": 0}
    barrier.wait()
    try:
        while not stop.is_set():
            obj = await store.get(KEY, VARIANT)
            if obj is None:
                counts["misses"] += 1
                await asyncio.sleep(0.001)
                continue
            label = dict(obj.meta.headers)[FILL_HEADER]
            if obj.body is not None:
                body = obj.body
            else:
                counts["file_hits"] += 1
                assert obj.path is not None
                try:  # a newer fill may have replaced and unlinked it since: that is a miss, not an error
                    body = obj.path.read_bytes()
                except FileNotFoundError:
                    counts["vanished"] += 1
                    continue
            counts["hits"] += 1
            expected = expected_body(label)
            if body != expected or obj.meta.size != len(expected):
                counts["mismatches"] += 1
        counts["corrupt_discarded"] = store.stats()["corrupt_discarded"]
        counts["dangling_discarded"] = store.stats()["dangling_discarded"]
        return counts
    finally:
        await store.close()


# -- write-behind: rows another process has queued but not yet written --------------------------

QUEUED_PREFIX = "https://queued.test/"
QUEUED_TAG = "queued"


def open_lazy_store(directory: str) -> DiskStore:
    """A store that keeps its rows queued (journal only) unless something forces a flush."""
    return DiskStore(Path(directory), max_bytes=1 << 30, index_flush_interval=3600, access_flush_interval=3600)


async def _fill_queued(store: DiskStore, count: int) -> None:
    await store.start()
    await store.wait_startup()
    for n in range(count):
        body = body_for(f"queued-{n}", 500 + n * 997)  # inline and separate-body objects
        meta = make_meta(f"{QUEUED_PREFIX}{n}", body, tags=(QUEUED_TAG,))
        if not await store.put(meta, body):
            raise AssertionError(f"put {n} refused")


def run_filler_then_crash(directory: str, count: int) -> None:
    """Store ``count`` objects, then die without closing: their rows exist only in the journal."""

    async def main() -> None:
        await _fill_queued(open_lazy_store(directory), count)
        os._exit(0)

    asyncio.run(main())


def run_filler_holding(directory: str, count: int, filled: Event, release: Event) -> None:
    """Store ``count`` objects, keep running (rows queued) until released, then close normally."""

    async def main() -> None:
        store = open_lazy_store(directory)
        await _fill_queued(store, count)
        filled.set()
        await asyncio.to_thread(release.wait)
        await store.close()

    asyncio.run(main())
