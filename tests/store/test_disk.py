"""Disk tier specifics: restarts, damage on disk, leftovers, the index, and several processes at once."""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import os
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from edge.purge import PurgeLog, Purger
from edge.store.base import body_checksum
from edge.store.disk import DiskStore, IndexIncompleteError, decode_meta
from edge.store.tiered import TieredStore
from tests.store import disk_workers
from tests.store.support import body_for, files_under, make_meta, read_body

SMALL = 64 * 1024  # bodies up to this are read into memory and checksummed by get()

OpenStore = Callable[..., Awaitable[DiskStore]]


@pytest.fixture
async def open_store(tmp_path: Path) -> AsyncIterator[OpenStore]:
    """Open DiskStores on ``tmp_path/cache`` (several, one after another, like restarts); all closed at the end."""
    opened: list[DiskStore] = []

    async def open_(max_bytes: int = 64 * 1024 * 1024, *, wait: bool = True, **options: object) -> DiskStore:
        store = DiskStore(tmp_path / "cache", max_bytes=max_bytes, small_body_bytes=SMALL, **options)  # type: ignore[arg-type]
        opened.append(store)
        await store.start()
        if wait:
            await store.wait_startup()
        return store

    yield open_
    for store in opened:
        await store.close()


def cache_dir(store: DiskStore) -> Path:
    return store.directory


def only_file(store: DiskStore, suffix: str) -> Path:
    found = files_under(cache_dir(store) / "objects", suffix)
    assert len(found) == 1, found
    return found[0]


async def put(store: DiskStore, key: str, body: bytes, **meta_options: object) -> None:
    assert await store.put(make_meta(key, body, **meta_options), body)  # type: ignore[arg-type]


# -- layout and persistence -----------------------------------------------------------------------


async def test_file_names_come_from_hashes_not_from_keys(open_store: OpenStore) -> None:
    store = await open_store()
    await put(store, "GET https://evil.test/../../etc/passwd", b"body", variant="../../x")
    names = [path.relative_to(cache_dir(store) / "objects") for path in (cache_dir(store) / "objects").rglob("*")]
    assert names
    pattern = re.compile(r"^[0-9a-f]{2}(/[0-9a-f]{2}(/[0-9a-f]{64}\.[0-9a-f]{32}(\.[0-9a-f]{16}\.body|\.meta))?)?$")
    assert all(pattern.match(str(name)) for name in names), names


async def test_objects_survive_a_restart(open_store: OpenStore) -> None:
    store = await open_store()
    contents = {
        ("k-small", ""): body_for("small", 1000),
        ("k-small", "gzip"): body_for("small-gz", 500),
        ("k-large", ""): body_for("large", 3 * SMALL),
        ("k-empty", ""): b"",
    }
    for (key, variant), body in contents.items():
        await put(store, key, body, variant=variant, tags=("tag-" + key,))
    await store.close()

    reopened = await open_store()
    assert reopened.ready
    for (key, variant), body in contents.items():
        obj = await reopened.get(key, variant)
        assert obj is not None
        assert await read_body(obj) == body
    large = await reopened.get("k-large", "")
    assert large is not None
    assert large.body is None  # large bodies are handed out as a file for sendfile
    assert large.path is not None
    assert large.path.stat().st_size == large.meta.size
    assert sorted(m.variant for m in await reopened.variants("k-small")) == ["", "gzip"]
    assert reopened.stats()["objects"] == 4
    assert await reopened.delete_tags(["tag-k-small"]) == 2


async def test_reads_work_before_the_index_is_ready(open_store: OpenStore, tmp_path: Path) -> None:
    store = await open_store()
    await put(store, "k", b"body")
    await store.close()
    for path in (tmp_path / "cache").glob("index.sqlite*"):
        path.unlink()
    reopened = await open_store(wait=False)
    obj = await reopened.get("k", "")  # whether or not the rebuild has finished: reads need no index
    assert obj is not None
    assert obj.body == b"body"
    assert [m.key for m in await reopened.variants("k")] == ["k"]
    await reopened.wait_ready()
    assert reopened.ready


# -- damage on disk -------------------------------------------------------------------------------


async def test_truncated_small_body_is_discarded_and_counted(open_store: OpenStore) -> None:
    store = await open_store()
    await put(store, "k", body_for("t", 5000))
    body_file = only_file(store, ".body")
    os.truncate(body_file, 4000)
    assert await store.get("k", "") is None
    assert store.stats()["corrupt_discarded"] == 1
    assert files_under(cache_dir(store) / "objects", ".meta") == []
    assert not body_file.exists()
    assert await store.get("k", "") is None  # gone, not counted twice
    assert store.stats()["corrupt_discarded"] == 1
    await store.flush()
    assert store.stats()["objects"] == 0  # index row removed too


async def test_truncated_large_body_is_detected_by_length(open_store: OpenStore) -> None:
    store = await open_store()
    await put(store, "k", body_for("t", 4 * SMALL))
    os.truncate(only_file(store, ".body"), 2 * SMALL)
    assert await store.get("k", "") is None
    assert store.stats()["corrupt_discarded"] == 1
    assert files_under(cache_dir(store) / "objects", ".body") == []


async def test_flipped_byte_in_small_body_fails_the_checksum(open_store: OpenStore) -> None:
    store = await open_store(inline_body_bytes=0)  # a separate body file (inline bodies: see below)
    await put(store, "k", body_for("flip", 3000))
    body_file = only_file(store, ".body")
    data = bytearray(body_file.read_bytes())
    data[1234] ^= 0x01
    body_file.write_bytes(bytes(data))
    assert await store.get("k", "") is None
    assert store.stats()["corrupt_discarded"] == 1
    assert files_under(cache_dir(store) / "objects", ".meta") == []


async def test_flipped_byte_in_large_body_is_caught_by_verify_and_scrub(open_store: OpenStore) -> None:
    store = await open_store()
    await put(store, "k1", body_for("big1", 2 * SMALL))
    await put(store, "k2", body_for("big2", 2 * SMALL))
    for body_file in files_under(cache_dir(store) / "objects", ".body"):
        with body_file.open("r+b") as handle:
            handle.seek(SMALL)
            byte = handle.read(1)
            handle.seek(SMALL)
            handle.write(bytes([byte[0] ^ 0x80]))
    obj = await store.get("k1", "")
    assert obj is not None
    assert obj.path is not None  # the length is right, so get() hands it out: only the CRC can tell
    assert not await store.verify(obj)
    assert store.stats()["corrupt_discarded"] == 1
    assert await store.get("k1", "") is None
    assert await store.scrub() == {"checked": 1, "discarded": 1}
    assert await store.get("k2", "") is None
    assert store.stats()["corrupt_discarded"] == 2


async def test_a_large_body_is_checked_once_per_process_and_again_when_its_file_changes(
    open_store: OpenStore, tmp_path: Path
) -> None:
    store = await open_store()
    await put(store, "k", body_for("once", 2 * SMALL))
    obj = await store.get("k", "")
    assert obj is not None
    assert await store.checked_once(obj)  # written by this store: taken as checked (no read-back)
    await store.close()
    body_file = only_file(store, ".body")
    data = bytearray(body_file.read_bytes())
    data[SMALL + 7] ^= 0x02
    body_file.write_bytes(bytes(data))  # a rewrite: another mtime, and a new process anyway
    again = await open_store()
    obj = await again.get("k", "")
    assert obj is not None  # the length is right: only the CRC can tell
    assert not await again.checked_once(obj)
    assert again.stats()["corrupt_discarded"] == 1
    assert await again.get("k", "") is None
    await put(again, "k2", body_for("fine", 2 * SMALL))
    await again.close()
    third = await open_store()
    sound = await third.get("k2", "")
    assert sound is not None
    assert all(await asyncio.gather(*(third.checked_once(sound) for _ in range(3))))  # one read for all three


@pytest.mark.parametrize("kind", ["directory", "fifo"])
async def test_something_else_where_a_meta_file_belongs_is_a_miss_and_goes(open_store: OpenStore, kind: str) -> None:
    store = await open_store(inline_body_bytes=0)
    await put(store, "k", body_for("k", 3000))
    meta_file = only_file(store, ".meta")
    meta_file.unlink()
    if kind == "directory":
        meta_file.mkdir()
        (meta_file / "inside").write_bytes(b"x")
    else:
        os.mkfifo(meta_file)
    assert await asyncio.wait_for(store.get("k", ""), 5) is None  # a FIFO used to block the loop
    assert not meta_file.exists()
    await put(store, "k", body_for("k", 3000))
    assert await store.get("k", "") is not None


async def test_a_stray_directory_among_the_objects_does_not_stop_a_cleanup(open_store: OpenStore) -> None:
    store = await open_store(inline_body_bytes=0)
    await put(store, "k", body_for("k", 3000))
    folder = only_file(store, ".meta").parent
    stray = folder / "stray.x.body"
    stray.mkdir()
    os.utime(stray, (1, 1))
    counts = await store.cleanup(orphan_grace=0)
    assert counts["objects"] == 1
    assert not stray.exists()
    assert await store.get("k", "") is not None


async def test_verify_accepts_a_sound_large_object(open_store: OpenStore) -> None:
    store = await open_store()
    await put(store, "k", body_for("sound", 2 * SMALL))
    obj = await store.get("k", "")
    assert obj is not None
    assert await store.verify(obj)
    assert await store.scrub() == {"checked": 1, "discarded": 0}


@pytest.mark.parametrize(
    "damage",
    [
        pytest.param(lambda data: data[: len(data) // 2], id="truncated"),
        pytest.param(lambda data: b"{not json at all", id="garbage"),
        pytest.param(lambda data: data.replace(b'"status":200', b'"status":201'), id="edited-json"),
        pytest.param(lambda data: b"", id="empty"),
    ],
)
async def test_corrupt_meta_is_discarded(open_store: OpenStore, damage: Callable[[bytes], bytes]) -> None:
    store = await open_store()
    await put(store, "k", b"body")
    meta_file = only_file(store, ".meta")
    meta_file.write_bytes(damage(meta_file.read_bytes()))
    assert await store.variants("k") == []
    assert await store.get("k", "") is None
    assert store.stats()["corrupt_discarded"] == 1
    assert not meta_file.exists()
    await store.cleanup(orphan_grace=0)  # its body is now an orphan
    assert files_under(cache_dir(store) / "objects", ".body") == []


async def test_meta_with_valid_checksum_but_wrong_types_is_discarded(open_store: OpenStore) -> None:
    """A meta file some other writer produced whole (checksum fine) but not in our format."""
    store = await open_store(inline_body_bytes=0)
    await put(store, "k", b"body")
    meta_file = only_file(store, ".meta")
    fields = json.loads(meta_file.read_bytes().split(b"\n", 1)[1])
    fields["size"] = "4"
    payload = json.dumps(fields).encode()
    meta_file.write_bytes(b"EC1 " + body_checksum(payload).encode() + b"\n" + payload)
    assert await store.get("k", "") is None
    assert store.stats()["corrupt_discarded"] == 1


async def test_meta_whose_body_vanished_is_a_miss(open_store: OpenStore) -> None:
    store = await open_store(inline_body_bytes=0)
    await put(store, "k", b"body")
    only_file(store, ".body").unlink()
    assert await store.get("k", "") is None
    assert store.stats()["dangling_discarded"] == 1
    assert files_under(cache_dir(store) / "objects", ".meta") == []


# -- leftovers ------------------------------------------------------------------------------------


async def test_leftover_temp_files_are_removed_at_start(open_store: OpenStore, tmp_path: Path) -> None:
    temp = tmp_path / "cache" / "tmp"
    temp.mkdir(parents=True)
    crashed = temp / "999999999.0123456789abcdef.body.tmp"  # no such process
    nameless = temp / "leftover.tmp"
    in_flight = temp / f"{os.getpid()}.fedcba9876543210.body.tmp"  # a live writer's file: keep
    for path in (crashed, nameless, in_flight):
        path.write_bytes(b"half a body")
    store = await open_store()
    assert not crashed.exists()
    assert not nameless.exists()
    assert in_flight.exists()
    assert store.stats()["temp_removed"] == 2


async def test_writers_leave_no_temp_files(open_store: OpenStore) -> None:
    store = await open_store(max_object_bytes=10_000)
    aborted = store.writer("a", "")
    await aborted.write(b"x" * 5000)
    await aborted.abort()
    refused = store.writer("b", "")
    await refused.write(b"x" * 20_000)
    assert refused.refused
    assert not await refused.commit(make_meta("b", b"x" * 20_000))
    wrong = store.writer("c", "")
    await wrong.write(b"abc")
    assert not await wrong.commit(make_meta("c", b"abd"))
    await put(store, "d", b"fine")
    assert list((cache_dir(store) / "tmp").iterdir()) == []


async def test_orphan_bodies_are_removed_after_their_grace(open_store: OpenStore) -> None:
    store = await open_store(inline_body_bytes=0)
    await put(store, "k", b"the body")
    body_file = only_file(store, ".body")
    orphan = body_file.with_name(body_file.name.rsplit(".", 2)[0] + ".00112233aabbccdd.body")
    orphan.write_bytes(b"a fill that lost the race")
    assert (await store.cleanup())["orphans_removed"] == 0  # young: might be a fill about to publish
    assert orphan.exists()
    assert (await store.cleanup(orphan_grace=0))["orphans_removed"] == 1
    assert not orphan.exists()
    assert body_file.exists()
    obj = await store.get("k", "")
    assert obj is not None
    assert obj.body == b"the body"


# -- the index ------------------------------------------------------------------------------------


async def fill(store: DiskStore, count: int) -> None:
    for n in range(count):
        await put(store, f"https://site.test/{n % 3}/{n}", body_for(str(n), 100 + n), tags=(f"t{n % 2}",))


@pytest.mark.parametrize("how", ["deleted", "garbage"])
async def test_index_is_rebuilt_from_meta_files(open_store: OpenStore, tmp_path: Path, how: str) -> None:
    store = await open_store()
    await fill(store, 12)
    total_bytes = store.stats()["bytes"]
    await store.close()
    index = tmp_path / "cache" / "index.sqlite"
    for path in (tmp_path / "cache").glob("index.sqlite*"):
        path.unlink()
    if how == "garbage":
        index.write_bytes(b"this is not a database" * 100)

    rebuilt = await open_store()
    assert rebuilt.ready
    assert rebuilt.stats()["objects"] == 12
    assert rebuilt.stats()["bytes"] == total_bytes
    assert await rebuilt.delete_prefix("https://site.test/1/") == 4
    assert await rebuilt.delete_tags(["t0"]) == 4  # 0, 2, 6, 8 (4 and 10 went with the prefix)
    assert rebuilt.stats()["objects"] == 4


async def test_index_deleted_while_running_is_rebuilt(open_store: OpenStore, tmp_path: Path) -> None:
    store = await open_store(access_flush_interval=0.02)
    await fill(store, 6)
    for path in (tmp_path / "cache").glob("index.sqlite*"):
        path.unlink()
    await put(store, "https://site.test/new", b"after the loss")  # reopens a fresh, empty index
    for _ in range(200):  # the maintenance loop notices the unbuilt index and rebuilds it
        if store.stats()["objects"] == 7:
            break
        await asyncio.sleep(0.02)
    await store.wait_ready()
    assert store.stats()["objects"] == 7
    assert await store.delete_prefix("https://site.test/") == 7


async def test_two_stores_on_one_directory_see_each_others_changes(open_store: OpenStore) -> None:
    first = await open_store()
    second = await open_store()  # another worker process, as far as the files are concerned
    await put(first, "https://site.test/a", b"from the first", tags=("t",))
    obj = await second.get("https://site.test/a", "")
    assert obj is not None
    assert obj.body == b"from the first"
    assert await second.delete_tags(["t"]) == 1
    assert await first.get("https://site.test/a", "") is None
    await first.flush()
    assert first.stats()["objects"] == 0


@pytest.mark.parametrize("inline_body_bytes", [0, 4096], ids=["body-file", "inline"])
async def test_reconcile_repairs_index_rows(open_store: OpenStore, inline_body_bytes: int) -> None:
    store = await open_store(inline_body_bytes=inline_body_bytes)
    await fill(store, 4)
    await store.flush()  # rows are written in batches: make sure theirs are in the index
    meta_file = files_under(cache_dir(store) / "objects", ".meta")[0]
    body_name = decode_meta(meta_file.read_bytes()).body
    meta_file.unlink()  # an object vanishes behind the index's back (crash mid-eviction, say)
    (meta_file.parent / body_name).unlink(missing_ok=inline_body_bytes > 0)
    result = await store.cleanup()
    assert result["rows_removed"] == 1
    assert store.stats()["objects"] == 3


async def test_eviction_across_restart_honours_max_bytes(open_store: OpenStore, tmp_path: Path) -> None:
    body_size = 10_000
    store = await open_store(max_bytes=1_000_000)
    for n in range(10):
        await put(store, f"k{n}", body_for(str(n), body_size))
    assert await store.get("k0", "") is not None  # k0 is now the most recently used
    per_object = store.stats()["bytes"] // 10
    await store.close()  # flushes the access times

    smaller = 4 * per_object + per_object // 2
    reopened = await open_store(max_bytes=smaller)
    stats = reopened.stats()
    assert stats["objects"] == 4
    assert stats["bytes"] <= smaller
    assert stats["evictions"] == 6
    on_disk = sum(path.stat().st_size for path in (tmp_path / "cache" / "objects").rglob("*") if path.is_file())
    assert on_disk <= smaller
    present = [n for n in range(10) if await reopened.get(f"k{n}", "") is not None]
    assert present == [0, 7, 8, 9]

    for n in range(10, 13):  # keep filling after the restart: still bounded, still LRU
        await put(reopened, f"k{n}", body_for(str(n), body_size))
    assert reopened.stats()["bytes"] <= smaller
    assert [n for n in range(13) if await reopened.get(f"k{n}", "") is not None] == [9, 10, 11, 12]


async def test_purges_wait_for_the_index(open_store: OpenStore, tmp_path: Path) -> None:
    store = await open_store()
    await fill(store, 6)
    await store.close()
    for path in (tmp_path / "cache").glob("index.sqlite*"):
        path.unlink()
    reopened = await open_store(wait=False)
    assert await reopened.delete_prefix("https://site.test/") == 6  # waited for the rebuild, then found all


# -- several processes --------------------------------------------------------------------------


def test_concurrent_fills_from_two_processes_leave_one_valid_object(tmp_path: Path) -> None:
    """Two processes fill the same key/variant 60 times each while a third reads it in a loop."""
    directory = str(tmp_path / "cache")
    context = multiprocessing.get_context("spawn")
    rounds = 60
    barrier = context.Barrier(3)
    stop = context.Event()
    results = context.Queue()
    writers = [
        context.Process(target=disk_workers.run_writer, args=(directory, writer_id, rounds, barrier))
        for writer_id in (1, 2)
    ]
    reader = context.Process(target=disk_workers.run_reader, args=(directory, barrier, stop, results))
    for process in (*writers, reader):
        process.start()
    try:
        for process in writers:
            process.join(60)
            assert process.exitcode == 0
        stop.set()
        counts = results.get(timeout=30)
        reader.join(30)
        assert reader.exitcode == 0
    finally:
        for process in (*writers, reader):
            if process.is_alive():
                process.kill()
                process.join()
        results.close()
        results.join_thread()

    assert counts["mismatches"] == 0, counts
    assert counts["corrupt_discarded"] == 0, counts
    assert counts["hits"] > 0, counts

    async def check() -> None:
        store = DiskStore(Path(directory), max_bytes=1 << 30)
        await store.start()
        try:
            await store.wait_startup()
            listed = await store.variants(disk_workers.KEY)
            assert len(listed) == 1
            obj = await store.get(disk_workers.KEY, disk_workers.VARIANT)
            assert obj is not None
            label = dict(obj.meta.headers)[disk_workers.FILL_HEADER]
            assert label.endswith(f"round{rounds - 1}")  # the last fill of one of the two writers won
            assert await read_body(obj) == disk_workers.expected_body(label)
            assert await store.verify(obj)
            await store.cleanup(orphan_grace=0)
            assert len(files_under(Path(directory) / "objects", ".meta")) == 1
            assert len(files_under(Path(directory) / "objects", ".body")) == 1
            assert list((Path(directory) / "tmp").iterdir()) == []
            assert store.stats()["objects"] == 1
            assert store.stats()["corrupt_discarded"] == 0
        finally:
            await store.close()

    asyncio.run(check())


async def three_objects_without_their_index(open_store: OpenStore) -> DiskStore:
    """A closed store holding three objects under https://a.test/ whose index files are gone."""
    store = await open_store()
    for index in range(3):
        await put(store, f"https://a.test/{index}", body_for(str(index), 100))
    await store.close()
    for path in store.directory.glob("index.sqlite*"):
        path.unlink()
    return store


async def test_a_directory_in_place_of_the_index_is_replaced_by_a_rebuilt_index(open_store: OpenStore) -> None:
    store = await three_objects_without_their_index(open_store)
    (store.directory / "index.sqlite").mkdir()  # before: every worker died opening it, over and over
    (store.directory / "index.sqlite" / "x").write_bytes(b"x")
    again = await open_store()
    assert await again.delete_prefix("https://a.test/") == 3


async def test_a_purge_never_trusts_an_index_whose_rebuild_failed(
    open_store: OpenStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A rebuild that failed (logged) left the index partial: a prefix purge rebuilds it first (it
    found nothing, and the objects came back once the purge left the purge view)."""
    await three_objects_without_their_index(open_store)
    real = DiskStore._reconcile
    failures = [1]

    async def failing_once(self: DiskStore, **kwargs: float) -> dict[str, int]:
        if failures:
            failures.pop()
            raise OSError("an unreadable shard")
        return await real(self, **kwargs)

    monkeypatch.setattr(DiskStore, "_reconcile", failing_once)
    again = await open_store()
    assert not failures  # the startup rebuild failed
    assert await again.delete_prefix("https://a.test/") == 3


async def test_a_purge_that_cannot_trust_the_index_leaves_nothing_logged(
    open_store: OpenStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The index cannot be rebuilt: the purge fails before it is logged, so its cluster sequence is
    not counted as applied and the control plane sends it again (it was counted, then lost)."""
    await three_objects_without_their_index(open_store)

    async def failing(self: DiskStore, **kwargs: float) -> dict[str, int]:
        raise OSError("an unreadable shard")

    monkeypatch.setattr(DiskStore, "_reconcile", failing)
    purge_log = PurgeLog(tmp_path / "purge")
    purger = Purger(purge_log, TieredStore(None, await open_store(), 0))
    with pytest.raises(IndexIncompleteError):
        await purger.purge("prefix", ["https://a.test/"], False, "p-7", 7)
    assert (await purge_log.cluster_seq(), await purge_log.since(0)) == (0, [])
    monkeypatch.undo()
    record, affected = await purger.purge("prefix", ["https://a.test/"], False, "p-7", 7)  # sent again
    assert (record.cluster_seq, affected) == (7, 3)
    purge_log.close()
