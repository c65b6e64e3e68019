"""The disk tier's cheap miss path: inline small objects, the write-behind index and its journal.

What must not change with them: a purge finds every object whose commit returned before it (in this
process or another, flushed or not, even if that process died), damaged inline objects are caught like
separate bodies, and queued rows never bring back an object that is gone.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import os
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace
from pathlib import Path

import pytest

from edge.store import disk as disk_module
from edge.store import index as index_module
from edge.store.disk import DiskStore, MetaRecord, decode_meta, read_meta_file
from edge.store.index import IndexRow, decode_rows, encode_row
from tests.store import disk_workers
from tests.store.support import body_for, files_under, make_meta, read_body

OpenStore = Callable[..., Awaitable[DiskStore]]
LAZY = {"index_flush_interval": 3600.0, "access_flush_interval": 3600.0}  # rows stay queued until forced


@pytest.fixture
async def open_store(tmp_path: Path) -> AsyncIterator[OpenStore]:
    opened: list[DiskStore] = []

    async def open_(max_bytes: int = 64 * 1024 * 1024, **options: object) -> DiskStore:
        store = DiskStore(tmp_path / "cache", max_bytes=max_bytes, **options)  # type: ignore[arg-type]
        opened.append(store)
        await store.start()
        await store.wait_startup()
        return store

    yield open_
    for store in opened:
        await store.close()


def index_rows(directory: Path) -> dict[str, str]:
    """``key -> body reference`` of the rows in the SQLite file (read like another process would)."""
    with contextlib.closing(sqlite3.connect(directory / "index.sqlite")) as conn:
        return dict(conn.execute("SELECT key, body FROM objects").fetchall())


def objects_dir(store: DiskStore) -> Path:
    return store.directory / "objects"


def journals(store: DiskStore) -> list[Path]:
    return sorted((store.directory / "journal").glob("*.jnl"))


async def put(store: DiskStore, key: str, body: bytes, **meta_options: object) -> None:
    assert await store.put(make_meta(key, body, **meta_options), body)  # type: ignore[arg-type]


# -- inline objects ---------------------------------------------------------------------------------


async def test_small_objects_are_one_file_larger_ones_keep_a_body_file(open_store: OpenStore) -> None:
    store = await open_store(inline_body_bytes=2000)
    await put(store, "at-limit", body_for("a", 2000))
    await put(store, "over-limit", body_for("b", 2001))
    await put(store, "empty", b"")
    metas = files_under(objects_dir(store), ".meta")
    assert len(metas) == 3
    bodies = files_under(objects_dir(store), ".body")
    assert len(bodies) == 1
    assert bodies[0].stat().st_size == 2001
    assert sum(meta.read_bytes().startswith(b"EC2 ") for meta in metas) == 2
    for key, body in (("at-limit", body_for("a", 2000)), ("over-limit", body_for("b", 2001)), ("empty", b"")):
        obj = await store.get(key, "")
        assert obj is not None
        assert obj.body == body
    assert list((store.directory / "tmp").iterdir()) == []


async def test_inline_file_layout_and_accounting(open_store: OpenStore) -> None:
    store = await open_store()
    body = body_for("layout", 1024)
    await put(store, "k", body, tags=("t",))
    meta_file = files_under(objects_dir(store), ".meta")[0]
    data = meta_file.read_bytes()
    record = decode_meta(data)
    assert record.inline
    assert data[record.file_size :] == body  # the body follows the metadata part, nothing else
    assert record.body == data[22:38].decode() + ".inline"
    await store.flush()
    assert store.stats()["bytes"] == len(data)  # what the index charges is what is on disk


@pytest.mark.parametrize(
    "damage",
    [
        pytest.param(lambda data, start: data[:-1], id="body-truncated"),
        pytest.param(lambda data, start: data[: start + 10], id="most-of-body-gone"),
        pytest.param(lambda data, start: data + b"x", id="longer"),
        pytest.param(lambda data, start: data[:start] + bytes([data[start] ^ 1]) + data[start + 1 :], id="body-flip"),
        pytest.param(lambda data, start: data[: start - 20], id="metadata-truncated"),
        pytest.param(lambda data, start: data.replace(b'"status":200', b'"status":201'), id="metadata-edited"),
        pytest.param(lambda data, start: data[:30], id="header-only"),
    ],
)
async def test_damaged_inline_object_is_discarded_and_counted(
    open_store: OpenStore, damage: Callable[[bytes, int], bytes]
) -> None:
    store = await open_store()
    body = body_for("damage", 3000)
    await put(store, "k", body)
    await put(store, "other", body)
    meta_file = next(
        path for path in files_under(objects_dir(store), ".meta") if decode_meta(path.read_bytes()).meta.key == "k"
    )
    data = meta_file.read_bytes()
    meta_file.write_bytes(damage(data, decode_meta(data).file_size))
    assert await store.get("k", "") is None
    assert store.stats()["corrupt_discarded"] == 1
    assert not meta_file.exists()
    assert await store.get("k", "") is None
    assert store.stats()["corrupt_discarded"] == 1
    await store.flush()
    assert store.stats()["objects"] == 1
    other = await store.get("other", "")
    assert other is not None
    assert other.body == body


async def test_reconcile_catches_a_truncated_inline_body(open_store: OpenStore) -> None:
    store = await open_store()
    await put(store, "k", body_for("trunc", 3000))
    await store.flush()
    meta_file = files_under(objects_dir(store), ".meta")[0]
    os.truncate(meta_file, meta_file.stat().st_size - 100)
    result = await store.cleanup()
    assert result["corrupt_discarded"] == 1
    assert not meta_file.exists()
    assert store.stats()["objects"] == 0


async def test_switching_between_inline_and_body_file_leaves_nothing_behind(open_store: OpenStore) -> None:
    store = await open_store()
    small, large = body_for("small", 100), body_for("large", 50_000)
    for body in (large, small, large, small):
        await put(store, "k", body)
        obj = await store.get("k", "")
        assert obj is not None
        assert await read_body(obj) == body
        assert len(files_under(objects_dir(store), ".meta")) == 1
        assert len(files_under(objects_dir(store), ".body")) == (1 if body is large else 0)
    await store.flush()
    assert index_rows(store.directory) == {
        "k": decode_meta(files_under(objects_dir(store), ".meta")[0].read_bytes()).body
    }


async def test_objects_written_with_separate_bodies_stay_readable(open_store: OpenStore) -> None:
    """A cache written before inline objects existed (or with them off) works as it did."""
    old = await open_store(inline_body_bytes=0)
    body = body_for("old", 700)
    await put(old, "k", body, tags=("t",))
    await old.close()
    store = await open_store()
    obj = await store.get("k", "")
    assert obj is not None
    assert obj.body == body
    assert await store.update_meta(replace(obj.meta, invalidated=True))
    assert len(files_under(objects_dir(store), ".body")) == 1  # still the separate layout
    again = await store.get("k", "")
    assert again is not None
    assert again.meta.invalidated
    assert await store.delete_tags(["t"]) == 1
    assert files_under(objects_dir(store), "") == []


async def test_update_meta_rewrites_an_inline_object_with_a_new_token(open_store: OpenStore) -> None:
    store = await open_store(**LAZY)
    body = body_for("refresh", 900)
    await put(store, "k", body, tags=("t",))
    meta_file = files_under(objects_dir(store), ".meta")[0]
    before = decode_meta(meta_file.read_bytes()).body
    obj = await store.get("k", "")
    assert obj is not None
    assert await store.update_meta(obj.meta.with_headers([("etag", '"v2"')], 1.8e9, 1.8e9 + 1))
    after = decode_meta(meta_file.read_bytes())
    assert after.body != before
    assert meta_file.read_bytes()[after.file_size :] == body
    await store.flush()
    assert index_rows(store.directory) == {"k": after.body}  # the older queued row was dropped as stale


async def test_update_meta_does_not_overwrite_a_newer_inline_object(open_store: OpenStore) -> None:
    """The rewrite only replaces the very file it read (a fill may have replaced it meanwhile)."""
    store = await open_store()
    await put(store, "k", b"first")
    meta_path = str(files_under(objects_dir(store), ".meta")[0])
    loaded = read_meta_file(meta_path, with_body=True)
    assert loaded is not None
    first, raw = loaded
    await put(store, "k", b"second")
    folder, name = meta_path.rsplit("/", 1)
    head, ref = disk_module.encode_inline_meta(replace(first.meta, invalidated=True), "0123456789abcdef")
    row = store._row(first.meta, *name[: -len(".meta")].split("."), ref, len(head), 0.0)
    assert not store._replace_inline_sync(folder, name[: -len(".meta")], raw[: first.file_size], head, b"first", row)
    obj = await store.get("k", "")
    assert obj is not None
    assert obj.body == b"second"
    assert list((store.directory / "tmp").iterdir()) == []


async def test_decode_memo_never_hides_a_changed_file(open_store: OpenStore) -> None:
    first = await open_store()
    second = await open_store()  # another worker, as far as the files are concerned
    await put(first, "k", b"from the first")  # first remembers what it published
    await put(second, "k", b"from the second, longer")
    [listed] = await first.variants("k")
    assert listed.size == len(b"from the second, longer")
    obj = await first.get("k", "")
    assert obj is not None
    assert obj.body == b"from the second, longer"
    meta_file = files_under(objects_dir(first), ".meta")[0]
    meta_file.write_bytes(meta_file.read_bytes().replace(b'"status":200', b'"status":204'))
    assert await first.variants("k") == []
    assert first.stats()["corrupt_discarded"] == 1


def test_memo_entries_are_what_decoding_gives() -> None:
    body = b"x" * 10
    meta = replace(make_meta("k", body, variant="gzip", tags=("a",)), stored_at=1.5)
    assert disk_module._as_decoded(meta) is meta
    head, ref = disk_module.encode_inline_meta(meta, "00112233aabbccdd")
    assert decode_meta(head + body) == MetaRecord(meta, ref, len(head), inline=True)
    assert disk_module._as_decoded(replace(meta, request_time=1)) is None  # decoding would give 1.0
    assert disk_module._as_decoded(replace(meta, headers=(("a", 1),))) is None  # type: ignore[arg-type]
    assert disk_module._as_decoded(replace(meta, headers=[("a", "b")])) is None  # type: ignore[arg-type]


# -- write-behind index: purges and eviction see queued rows ------------------------------------------


async def test_purges_right_after_a_store_find_the_object(open_store: OpenStore) -> None:
    store = await open_store(**LAZY)
    keys = [f"https://a.test/{n}" for n in range(4)]
    for n, key in enumerate(keys):
        await put(store, key, body_for(key, 300 + 3000 * n), tags=(f"t{n % 2}",))
    assert index_rows(store.directory) == {}  # nothing written to the index yet: all queued
    assert sorted(key for key, _ in await store.objects_matching("tags", ["t0"])) == keys[0::2]
    assert await store.delete_tags(["t1"]) == 2
    await put(store, "https://a.test/new", b"new", tags=("t0",))
    assert await store.delete_prefix("https://a.test/") == 3
    await put(store, "https://b.test/x", b"x")
    assert await store.delete_stored_before(float("inf")) == 1
    assert files_under(objects_dir(store), "") == []
    assert store.stats()["objects"] == 0


async def test_a_purge_in_another_store_reads_the_journal(open_store: OpenStore) -> None:
    first = await open_store(**LAZY)
    second = await open_store(**LAZY)
    await put(first, "https://a.test/1", b"one", tags=("t",))
    await put(first, "https://a.test/2", b"two" * 3000, tags=("t",))
    assert index_rows(first.directory) == {}
    assert await second.delete_tags(["t"]) == 2
    assert await first.get("https://a.test/1", "") is None
    await first.flush()  # its queued rows name objects that are gone: dropped, not resurrected
    assert index_rows(first.directory) == {}
    assert first.stats()["objects"] == 0


async def test_queued_rows_do_not_bring_back_deleted_or_replaced_objects(open_store: OpenStore) -> None:
    first = await open_store(**LAZY)
    second = await open_store(**LAZY)
    await put(first, "gone", b"soon deleted")
    await put(first, "kept", b"version 1")
    await put(first, "kept", b"version 2, longer")
    assert await second.delete("gone") == 1
    await first.flush()
    rows = index_rows(first.directory)
    current = decode_meta(next(p for p in files_under(objects_dir(first), ".meta")).read_bytes()).body
    assert rows == {"kept": current}
    assert first.stats()["objects"] == 1


async def test_an_older_row_arriving_late_does_not_undo_update_meta(open_store: OpenStore) -> None:
    """A separate-body object keeps its body name through update_meta: the row's meta CRC tells versions apart."""
    first = await open_store(**LAZY)
    second = await open_store(**LAZY)
    body = body_for("large", 20_000)
    await put(first, "k", body, tags=("old",))
    obj = await second.get("k", "")
    assert obj is not None
    assert await second.update_meta(replace(obj.meta, tags=("new",)))
    await second.flush()  # the newer row first...
    await first.flush()  # ...then the older one, which must be dropped
    assert await first.delete_tags(["old"]) == 0
    assert await first.delete_tags(["new"]) == 1


async def test_rows_are_written_in_batches(open_store: OpenStore) -> None:
    store = await open_store(index_flush_interval=3600.0, index_batch_rows=4)
    for n in range(3):
        await put(store, f"k{n}", b"body")
    await asyncio.sleep(0.05)
    assert index_rows(store.directory) == {}
    await put(store, "k3", b"body")  # a full batch: written without waiting for the interval
    for _ in range(100):
        if len(index_rows(store.directory)) == 4:
            break
        await asyncio.sleep(0.01)
    assert len(index_rows(store.directory)) == 4
    timed = await open_store(index_flush_interval=0.02)
    await put(timed, "k-timed", b"body")
    for _ in range(100):
        if "k-timed" in index_rows(timed.directory):
            break
        await asyncio.sleep(0.01)
    assert "k-timed" in index_rows(timed.directory)


async def test_eviction_writes_queued_rows_first_and_leaves_headroom(open_store: OpenStore) -> None:
    body = body_for("evict", 3000)
    probe = await open_store(**LAZY)
    await put(probe, "k000", body)
    cost = probe.stats()["bytes"]  # give or take a few bytes: the stored_at time is in the meta
    await probe.clear()
    max_bytes = 64 * cost + cost // 2
    store = await open_store(max_bytes=max_bytes, **LAZY)
    for n in range(64):
        await put(store, f"k{n:03d}", body)
    assert index_rows(store.directory) == {}  # fits: nothing forced a write yet
    assert store.stats()["evictions"] == 0
    await put(store, "k064", body)  # over: rows written, then down to max_bytes - max_bytes/64 (63.5 objects)
    assert store.stats()["evictions"] == 2
    assert store.stats()["objects"] == 63
    assert await store.get("k000", "") is None
    assert await store.get("k001", "") is None
    await put(store, "k065", body)  # 64 objects fit again: no eviction for this one
    assert store.stats()["evictions"] == 2
    assert store.stats()["bytes"] <= max_bytes


async def test_stats_count_rows_while_they_are_being_written(
    open_store: OpenStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A purge-all reports ``stats()["objects"]``: rows taken for a transaction still count."""
    store = await open_store(**LAZY)
    await put(store, "k1", b"one")
    await put(store, "k2", b"two")
    assert store.stats()["objects"] == 2
    started, release = asyncio.Event(), asyncio.Event()
    original = index_module.SqliteIndex.ingest

    async def slow_ingest(
        self: index_module.SqliteIndex, rows: list[IndexRow], is_current: Callable[[IndexRow], bool]
    ) -> index_module.Totals:
        started.set()
        await release.wait()
        return await original(self, rows, is_current)

    monkeypatch.setattr(index_module.SqliteIndex, "ingest", slow_ingest)
    flushing = asyncio.create_task(store.flush_rows())
    await started.wait()
    assert store.stats()["objects"] == 2  # neither queued nor in the index: being written
    release.set()
    await flushing
    assert store.stats()["objects"] == 2
    assert len(index_rows(store.directory)) == 2


async def test_journal_is_emptied_after_a_flush_and_removed_on_close(open_store: OpenStore) -> None:
    store = await open_store(**LAZY)
    await put(store, "k", b"body")
    [journal] = journals(store)
    assert journal.stat().st_size > 0
    await store.flush()
    assert journal.stat().st_size == 0
    await store.close()
    assert journals(store) == []


async def test_long_journals_are_rotated(open_store: OpenStore, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(index_module, "_JOURNAL_ROTATE_BYTES", 500)
    store = await open_store(index_flush_interval=3600.0, index_batch_rows=3)
    for n in range(20):
        await put(store, f"k{n}", b"body")
        await asyncio.sleep(0)
    await store.flush()
    assert len(journals(store)) <= 1
    assert len(index_rows(store.directory)) == 20


async def test_a_failed_journal_write_indexes_the_row_at_once(
    open_store: OpenStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = await open_store(**LAZY)
    original = index_module.RowJournal.append

    def failing(self: index_module.RowJournal, row: IndexRow) -> bool:
        original(self, row)
        return False  # as if the file write had failed: other processes cannot see the row

    monkeypatch.setattr(index_module.RowJournal, "append", failing)
    await put(store, "k", b"body")
    assert list(index_rows(store.directory)) == ["k"]


async def test_corrupt_index_with_rows_queued_is_rebuilt_with_them(open_store: OpenStore) -> None:
    store = await open_store(**LAZY)
    for n in range(5):
        await put(store, f"https://a.test/{n}", b"body", tags=("t",))
    await store.flush()
    for n in range(5, 8):
        await put(store, f"https://a.test/{n}", b"body", tags=("t",))
    database = store.directory / "index.sqlite"
    with database.open("r+b") as handle:  # same file, garbage inside: SQLite reports corruption
        handle.write(b"this is not a database" * 200)
    assert await store.delete_prefix("https://a.test/") == 8
    assert files_under(objects_dir(store), ".meta") == []


# -- the journal format --------------------------------------------------------------------------------


def test_journal_lines_round_trip_and_torn_lines_are_skipped() -> None:
    rows = [
        IndexRow(
            "a" * 64, "b" * 32, "GET https://x.test/\udcff\n", "gzip", "0011.inline", 1234, 1.5, 2.5, ("t1", "\u00e9")
        ),
        IndexRow("c" * 64, "d" * 32, "k", "", "c.d.0123456789abcdef.body", 99, 3.0, 4.0, ()),
    ]
    lines = [encode_row(row) for row in rows]
    assert all(line.count(b"\n") == 1 for line in lines)
    assert decode_rows(b"".join(lines)) == rows
    torn = lines[0][:-7]  # a crash mid-write: no newline, and the next line starts right after it
    assert decode_rows(torn + lines[1]) == []
    assert decode_rows(torn + b"\n" + lines[1]) == [rows[1]]
    flipped = lines[0].replace(b"1234", b"1235")
    assert decode_rows(flipped + lines[1]) == [rows[1]]
    assert decode_rows(b"\x00" * 100 + b"\n" + lines[1]) == [rows[1]]


# -- several processes ------------------------------------------------------------------------------


def test_a_purge_finds_objects_another_process_has_not_indexed_yet(tmp_path: Path) -> None:
    directory = str(tmp_path / "cache")
    context = multiprocessing.get_context("spawn")
    filled, release = context.Event(), context.Event()
    count = 6
    filler = context.Process(target=disk_workers.run_filler_holding, args=(directory, count, filled, release))

    async def purge() -> None:
        store = DiskStore(Path(directory), max_bytes=1 << 30)
        await store.start()
        try:
            await store.wait_startup()
            filler.start()  # after our startup (which ingests journals too): only the purge can find them
            assert await asyncio.to_thread(filled.wait, 60)
            assert index_rows(Path(directory)) == {}  # the filler has written none of its rows
            assert await store.delete_tags([disk_workers.QUEUED_TAG]) == count
            for n in range(count):
                assert await store.get(f"{disk_workers.QUEUED_PREFIX}{n}", "") is None
        finally:
            await store.close()

    try:
        asyncio.run(purge())
        release.set()
        filler.join(60)
        assert filler.exitcode == 0
    finally:
        if filler.is_alive():
            filler.kill()
            filler.join()
    assert index_rows(Path(directory)) == {}  # the filler's late flush resurrected nothing
    assert list((Path(directory) / "journal").iterdir()) == []
    assert files_under(Path(directory) / "objects", "") == []


def test_rows_queued_by_a_process_that_died_are_ingested(tmp_path: Path) -> None:
    directory = str(tmp_path / "cache")
    context = multiprocessing.get_context("spawn")
    count = 5
    filler = context.Process(target=disk_workers.run_filler_then_crash, args=(directory, count))
    filler.start()
    filler.join(60)
    assert filler.exitcode == 0
    assert index_rows(Path(directory)) == {}
    assert len(list((Path(directory) / "journal").glob("*.jnl"))) == 1

    async def check() -> None:
        store = DiskStore(Path(directory), max_bytes=1 << 30)
        await store.start()
        try:
            await store.wait_startup()  # the index was built: no rebuild, the journal supplies the rows
            assert len(index_rows(Path(directory))) == count
            assert store.stats()["objects"] == count
            assert list((Path(directory) / "journal").glob("*.jnl")) == []
            assert await store.delete_prefix(disk_workers.QUEUED_PREFIX) == count
        finally:
            await store.close()

    asyncio.run(check())


# -- races found in review: deletions, index failures and evictions against concurrent fills ---------


async def test_a_refill_between_unlink_and_row_removal_keeps_its_row(open_store: OpenStore) -> None:
    """A purge removes the rows of what it unlinked, not every row of the key: a fill published in
    between keeps its row, so a later prefix or tag purge still finds it."""
    purger = await open_store(**LAZY)
    filler = await open_store(**LAZY)
    first = b"v1"
    assert await filler.put(make_meta("https://b/x", first, tags=("t",)), first)
    await filler.flush_rows()
    real_prune = purger._index.prune

    async def refill_then_prune(*args: object, **kwargs: object) -> index_module.Totals:
        newer = b"v2-newer"
        assert await filler.put(make_meta("https://b/x", newer, tags=("t",)), newer)  # committed after the unlink
        await filler.flush_rows()  # ... and indexed
        return await real_prune(*args, **kwargs)  # type: ignore[arg-type]

    purger._index.prune = refill_then_prune  # type: ignore[method-assign]
    await purger.delete("https://b/x", "")
    purger._index.prune = real_prune  # type: ignore[method-assign]
    assert await filler.get("https://b/x", "") is not None  # the newer object survived the older purge
    assert await purger.delete_prefix("https://b/") == 1  # and a later purge finds it
    assert await filler.get("https://b/x", "") is None


async def test_a_purge_fails_rather_than_miss_rows_it_could_not_write(
    open_store: OpenStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = await open_store(**LAZY)
    body = b"hello"
    assert await store.put(make_meta("https://a/x", body, tags=("t",)), body)
    real_ingest = store._index.ingest
    failures = {"left": 1}

    async def locked_once(rows: object, current: object) -> index_module.Totals:
        if failures["left"]:
            failures["left"] -= 1
            raise sqlite3.OperationalError("database is locked")
        return await real_ingest(rows, current)  # type: ignore[arg-type]

    monkeypatch.setattr(store._index, "ingest", locked_once)
    assert await store.delete_prefix("https://a/") == 1  # retried, then found
    assert await store.get("https://a/x", "") is None

    failures["left"] = 10
    assert await store.put(make_meta("https://a/y", body, tags=("t",)), body)
    with pytest.raises(sqlite3.OperationalError):
        await store.delete_prefix("https://a/")  # never "0 purged" while a published object is unindexed


async def test_an_evicted_object_is_not_brought_back_by_a_late_row(open_store: OpenStore) -> None:
    evictor = await open_store(max_bytes=50_000, **LAZY)
    other = await open_store(max_bytes=50_000, **LAZY)
    old = body_for("e", 20_000)
    assert await other.put(make_meta("https://c/old", old), old)
    await evictor.delete_prefix("https://nothing/")  # ingests other's journal row (other keeps it queued)
    loop = asyncio.get_running_loop()
    real_unlink = evictor._unlink_victims_sync

    def flush_in_between(victims: list[IndexRow]) -> None:
        # other's flush of its still-queued row lands between choosing the victims and unlinking them
        asyncio.run_coroutine_threadsafe(other.flush_rows(), loop).result()
        real_unlink(victims)

    evictor._unlink_victims_sync = flush_in_between  # type: ignore[method-assign]
    for index in range(2):
        body = body_for(f"n{index}", 20_000)
        assert await evictor.put(make_meta(f"https://c/new{index}", body), body)
    evictor._unlink_victims_sync = real_unlink  # type: ignore[method-assign]
    assert evictor.stats()["evictions"] >= 1
    rows = index_rows(evictor.directory)
    assert "https://c/old" not in rows  # no row for a file that is gone
    assert await evictor.get("https://c/old", "") is None
