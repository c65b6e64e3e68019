"""Purges of one edge: a durable log shared by its workers, and each worker's view of it.

Why a log: the purge arrives on *one* worker's admin listener, but every worker holds its own
memory tier, and fills that started before the purge may still be writing the old content.  So the
receiving worker (1) appends the purge to ``purge.sqlite`` in the cache directory (a sequence
number), (2) applies it to the shared disk tier and its own memory, (3) publishes the new sequence
in ``purge.seq`` — an 8-byte counter every worker maps into memory — and only then answers.  Any
worker reads that counter before serving from its memory tier (one memory read, no syscall) and,
when it moved, applies the new records to its memory before answering.  Fills check the records
that arrived since they started before (and right after) publishing, so a fill that raced a purge
never leaves the old content behind.

Purge-all is O(1): it records a *generation time*; anything stored before it counts as gone (hard)
or stale (soft), and the disk space is reclaimed in the background.

Invalidations by unsafe methods (RFC 9111 §4.4) are purges of one URL that can come at the rate of
POSTs, so they skip the log: the worker that saw the successful POST writes "invalidated at T" into
``invalidated.map``, a shared table of 2^17 times indexed by a hash of the key, and deletes its own
copies; every worker compares an object's ``stored_at`` with its key's slot before serving it.  Two
keys that share a slot only cost each other an extra origin fetch, never a wrong response.

The log also keeps the last *cluster* sequence applied (the control plane's numbering), so an edge
that was down can ask for what it missed.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import logging
import mmap
import os
import sqlite3
import struct
import threading
import time
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

from edge.store.base import CachedObject
from edge.store.tiered import TieredStore

log = logging.getLogger("edge.purge")

PurgeKind = Literal["urls", "prefix", "tags", "all"]

# purge.seq layout: sequence (u64), hard-all generation (f64), soft-all generation (f64).
_STATE_FORMAT = "<Qdd"
_STATE_SIZE = struct.calcsize(_STATE_FORMAT)
INVALIDATION_SLOTS = 1 << 17  # 1 MiB of float64 times


_SQLITE_CORRUPT, _SQLITE_NOTADB = 11, 26


def _is_damage(error: sqlite3.DatabaseError, path: Path) -> bool:
    """Whether the purge log itself is unusable (corrupt, not a database, not a file), as opposed to
    a passing condition of the disk (full, I/O error) that a new file would not escape either."""
    if os.path.lexists(path) and not path.is_file():
        return True
    return (getattr(error, "sqlite_errorcode", 0) & 0xFF) in (_SQLITE_CORRUPT, _SQLITE_NOTADB)


@dataclass(frozen=True, slots=True)
class PurgeRecord:
    """One purge as logged: what, how, and when (wall clock, compared with ``stored_at``)."""

    seq: int
    kind: PurgeKind
    values: tuple[str, ...]  # normalised cache keys (urls), a key prefix, or tags; empty for all
    soft: bool
    at: float
    purge_id: str
    cluster_seq: int | None = None

    def matches(self, key: str, tags: Iterable[str]) -> bool:
        if self.kind == "all":
            return True
        if self.kind == "urls":
            return key in self.values
        if self.kind == "prefix":
            return any(key.startswith(prefix) for prefix in self.values)
        return bool(set(self.values).intersection(tags))


@dataclass(frozen=True, slots=True)
class Generations:
    """The purge-all times in force: objects stored before them are gone / stale."""

    seq: int
    hard_all_at: float
    soft_all_at: float


class PurgeLog:
    """The edge-wide purge log (SQLite, WAL) plus the mapped counter all workers read."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self._db_path = self.directory / "purge.sqlite"
        self._state_path = self.directory / "purge.seq"
        # One connection per thread (reads and writes run in worker threads): a read still
        # stepping on a shared connection left a write in another thread on a stale WAL snapshot,
        # which SQLite answers at once with "database is locked" (concurrent purges failed).
        self._local = threading.local()
        self._all: list[sqlite3.Connection] = []
        self._all_lock = threading.Lock()
        self._map = _shared_map(self._state_path, _STATE_SIZE)
        self._invalidated = _shared_map(self.directory / "invalidated.map", INVALIDATION_SLOTS * 8)
        self._lock = asyncio.Lock()

    def invalidate(self, key: str, at: float) -> None:
        """RFC 9111 §4.4 for every worker: objects of ``key`` stored before ``at`` are no longer served."""
        offset = _slot(key)
        (current,) = struct.unpack_from("<d", self._invalidated, offset)
        if at > current:
            struct.pack_into("<d", self._invalidated, offset, at)

    def invalidated_at(self, key: str) -> float:
        """When ``key`` (or a key sharing its slot) was last invalidated; 0.0 if never."""
        value: float = struct.unpack_from("<d", self._invalidated, _slot(key))[0]
        return value

    def _connection(self) -> sqlite3.Connection:
        local = self._local
        current: sqlite3.Connection | None = getattr(local, "conn", None)
        if current is not None and self._file_id() != local.file:
            # Another worker set a damaged file aside (or it was removed): follow it to the new one,
            # or this worker would go on reading and numbering purges nobody else sees.
            self._forget(current)
            current = local.conn = None
        if current is None:
            # Workers starting together on a fresh cache race to switch the journal mode, and SQLite
            # answers "database is locked" instead of waiting: serialise the setup with a file lock.
            lock_fd = os.open(self.directory / "purge.setup.lock", os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(lock_fd, fcntl.LOCK_EX)
                try:
                    conn = self._open_sync()
                except sqlite3.DatabaseError as error:
                    if not _is_damage(error, self._db_path):
                        raise  # a full disk, an I/O error: not a reason to lose the log
                    # Damaged: set aside for whoever wants to look, and start a new log.  Purges it
                    # held were applied to the disk tier already; the cluster position starts over,
                    # so catching up replays the control plane's log (or purges everything if that
                    # no longer reaches back), as for an edge that never followed it.
                    aside = self._db_path.with_name(f"purge.sqlite.damaged-{int(time.time())}-{os.getpid()}")
                    log.error("purge log %s is unreadable (%s): moved to %s, starting a new one",
                              self._db_path, error, aside.name)  # fmt: skip
                    os.replace(self._db_path, aside)
                    for suffix in ("-wal", "-shm"):
                        with contextlib.suppress(FileNotFoundError):
                            os.unlink(f"{self._db_path}{suffix}")
                    conn = self._open_sync()
                local.file = self._file_id()
            finally:
                fcntl.flock(lock_fd, fcntl.LOCK_UN)
                os.close(lock_fd)
            local.conn = current = conn
            with self._all_lock:
                self._all.append(conn)
        return current

    def _forget(self, conn: sqlite3.Connection) -> None:
        with self._all_lock:
            if conn in self._all:
                self._all.remove(conn)
        conn.close()

    def _file_id(self) -> int | None:
        try:
            return os.stat(self._db_path).st_ino
        except FileNotFoundError:
            return None

    def _open_sync(self) -> sqlite3.Connection:
        """Connect, make sure of the schema, and number new purges past every one published: a log
        lost or set aside must not number purges again from 1 — workers skip sequences they
        think they applied."""
        conn = sqlite3.connect(self._db_path, timeout=10.0, isolation_level=None, check_same_thread=False)
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute(
                "CREATE TABLE IF NOT EXISTS purges (seq INTEGER PRIMARY KEY AUTOINCREMENT, kind TEXT NOT NULL,"
                " vals TEXT NOT NULL, soft INTEGER NOT NULL, at REAL NOT NULL, purge_id TEXT NOT NULL,"
                " cluster_seq INTEGER)"
            )
            conn.execute("CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL)")
            published = self.seq
            row = conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'purges'").fetchone()
            numbered = int(row[0]) if row is not None else 0
            if published > numbered:
                log.warning("purge log %s numbers purges up to %d, below the %d published: continuing from %d",
                            self._db_path, numbered, published, published)  # fmt: skip
                with conn:
                    conn.execute("BEGIN IMMEDIATE")
                    conn.execute("DELETE FROM sqlite_sequence WHERE name = 'purges'")
                    conn.execute("INSERT INTO sqlite_sequence (name, seq) VALUES ('purges', ?)", (published,))
        except BaseException:
            conn.close()
            raise
        return conn

    def generations(self) -> Generations:
        """The current counter and purge-all times: a read of shared memory, cheap enough per request."""
        seq, hard_all_at, soft_all_at = struct.unpack_from(_STATE_FORMAT, self._map, 0)
        return Generations(seq, hard_all_at, soft_all_at)

    @property
    def seq(self) -> int:
        value: int = struct.unpack_from("<Q", self._map, 0)[0]
        return value

    async def append(
        self, kind: PurgeKind, values: Sequence[str], soft: bool, purge_id: str, cluster_seq: int | None = None
    ) -> PurgeRecord:
        """Log a purge durably; the caller applies it, then calls :meth:`publish`."""
        async with self._lock:
            record = await asyncio.to_thread(self._append_sync, kind, tuple(values), soft, purge_id, cluster_seq)
        assert record is not None
        return record

    async def append_cluster(
        self, kind: PurgeKind, values: Sequence[str], soft: bool, purge_id: str, cluster_seq: int, stream_id: str
    ) -> PurgeRecord | None:
        """Log a purge read from the shared purge stream unless another worker of this edge already
        did (its sequence is not above the edge's): None then.  Keeps the stream position too."""
        async with self._lock:
            return await asyncio.to_thread(
                self._append_sync, kind, tuple(values), soft, purge_id, cluster_seq, stream_id
            )

    def _append_sync(
        self, kind: PurgeKind, values: tuple[str, ...], soft: bool, purge_id: str, cluster_seq: int | None,
        stream_id: str | None = None,
    ) -> PurgeRecord | None:  # fmt: skip
        conn = self._connection()
        at = time.time()
        with conn:
            conn.execute("BEGIN IMMEDIATE")
            if stream_id is not None:
                row = conn.execute("SELECT value FROM meta WHERE name = 'cluster_seq'").fetchone()
                if cluster_seq is not None and row is not None and int(row[0]) >= cluster_seq:
                    return None  # another worker applied it: nothing to do twice
                conn.execute(
                    "INSERT INTO meta (name, value) VALUES ('cluster_stream_id', ?) ON CONFLICT(name) DO UPDATE"
                    " SET value = excluded.value",
                    (stream_id,),
                )
            cursor = conn.execute(
                "INSERT INTO purges (kind, vals, soft, at, purge_id, cluster_seq) VALUES (?, ?, ?, ?, ?, ?)",
                (kind, json.dumps(values), int(soft), at, purge_id, cluster_seq),
            )
            seq = int(cursor.lastrowid or 0)
            if cluster_seq is not None:
                conn.execute(
                    "INSERT INTO meta (name, value) VALUES ('cluster_seq', ?) ON CONFLICT(name) DO UPDATE SET"
                    " value = MAX(CAST(value AS INTEGER), CAST(excluded.value AS INTEGER))",
                    (str(cluster_seq),),
                )
        return PurgeRecord(seq, kind, values, soft, at, purge_id, cluster_seq)

    def publish(self, record: PurgeRecord) -> None:
        """Make the purge visible to every worker (after it was applied to the shared tiers)."""
        current = self.generations()
        hard_all_at = current.hard_all_at
        soft_all_at = current.soft_all_at
        if record.kind == "all":
            if record.soft:
                soft_all_at = max(soft_all_at, record.at)
            else:
                hard_all_at = max(hard_all_at, record.at)
        struct.pack_into(_STATE_FORMAT, self._map, 0, max(current.seq, record.seq), hard_all_at, soft_all_at)

    async def since(self, seq: int) -> list[PurgeRecord]:
        return await asyncio.to_thread(self._since_sync, seq)

    def _since_sync(self, seq: int) -> list[PurgeRecord]:
        rows = self._connection().execute(
            "SELECT seq, kind, vals, soft, at, purge_id, cluster_seq FROM purges WHERE seq > ? ORDER BY seq", (seq,)
        )
        return [
            PurgeRecord(int(r[0]), r[1], tuple(json.loads(r[2])), bool(r[3]), float(r[4]), r[5], r[6]) for r in rows
        ]

    async def recent(self, limit: int) -> list[PurgeRecord]:
        """The newest ``limit`` purges, newest first (the edge's own dashboard)."""

        def read() -> list[PurgeRecord]:
            rows = self._connection().execute(
                "SELECT seq, kind, vals, soft, at, purge_id, cluster_seq FROM purges ORDER BY seq DESC LIMIT ?",
                (limit,),
            )
            return [
                PurgeRecord(int(r[0]), r[1], tuple(json.loads(r[2])), bool(r[3]), float(r[4]), r[5], r[6])
                for r in rows
            ]

        return await asyncio.to_thread(read)

    async def cluster_position(self) -> tuple[int, str, str]:
        """(cluster sequence, stream id, log id) this edge last applied from a shared purge stream."""

        def read() -> tuple[int, str, str]:
            rows = dict(self._connection().execute(
                "SELECT name, value FROM meta WHERE name IN ('cluster_seq', 'cluster_stream_id', 'cluster_log_id')"
            ).fetchall())  # fmt: skip
            return int(rows.get("cluster_seq", 0)), str(rows.get("cluster_stream_id", "")), str(
                rows.get("cluster_log_id", "")
            )

        return await asyncio.to_thread(read)

    async def reset_cluster(self, log_id: str, *, expected: tuple[str, int]) -> bool:
        """Follow ``log_id`` from its start (sequence 0) — only if this edge's (log id, sequence)
        are still ``expected``: of several workers noticing a new log at once, one resets, and none
        rewinds what a sibling applied since.  The caller purged everything first."""
        return await self._set_cluster(
            [("cluster_log_id", log_id), ("cluster_seq", "0"), ("cluster_stream_id", "")], expected
        )

    async def name_cluster_log(self, log_id: str, *, expected: tuple[str, int]) -> bool:
        """Record that the sequence applied so far is ``log_id``'s, keeping it — only if this edge's
        (log id, sequence) are still ``expected`` (purges applied before edges kept the identity
        of the log they follow)."""
        return await self._set_cluster([("cluster_log_id", log_id)], expected)

    async def _set_cluster(self, values: list[tuple[str, str]], expected: tuple[str, int]) -> bool:
        """Write ``values`` to the cluster position if (log id, sequence) are still ``expected``."""

        def write() -> bool:
            conn = self._connection()
            with conn:
                conn.execute("BEGIN IMMEDIATE")
                rows = dict(conn.execute(
                    "SELECT name, value FROM meta WHERE name IN ('cluster_seq', 'cluster_log_id')"
                ).fetchall())  # fmt: skip
                if (str(rows.get("cluster_log_id", "")), int(rows.get("cluster_seq", 0))) != expected:
                    return False
                conn.executemany(
                    "INSERT INTO meta (name, value) VALUES (?, ?)"
                    " ON CONFLICT(name) DO UPDATE SET value = excluded.value",
                    values,
                )
                return True

        async with self._lock:
            return await asyncio.to_thread(write)

    async def cluster_seq(self) -> int:
        """The last control-plane sequence this edge applied (0 if none)."""

        def read() -> int:
            row = self._connection().execute("SELECT value FROM meta WHERE name = 'cluster_seq'").fetchone()
            return int(row[0]) if row else 0

        return await asyncio.to_thread(read)

    async def prune(self, keep_seconds: float = 86400.0) -> int:
        """Forget old records (workers only need the recent ones to catch up)."""

        def prune() -> int:
            cutoff = time.time() - keep_seconds
            with self._connection() as conn:
                return conn.execute("DELETE FROM purges WHERE at < ? AND seq < ?", (cutoff, self.seq)).rowcount

        return await asyncio.to_thread(prune)

    def close(self) -> None:
        with self._all_lock:
            connections, self._all = self._all, []
        for conn in connections:
            conn.close()
        self._local = threading.local()
        self._map.close()
        self._invalidated.close()


def _shared_map(path: Path, size: int) -> mmap.mmap:
    """A file of ``size`` bytes mapped shared, so every worker sees every write at once."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        if os.fstat(fd).st_size < size:
            os.ftruncate(fd, size)
        return mmap.mmap(fd, size)
    finally:
        os.close(fd)


def _slot(key: str) -> int:
    return (zlib.crc32(key.encode("utf-8", "surrogatepass")) & (INVALIDATION_SLOTS - 1)) * 8


class PurgeView:
    """One worker's progress through the purge log, and the recent records every lookup checks.

    Records younger than ``window`` seconds are checked against each object found (by comparing
    its ``stored_at`` with the purge time): that closes the gap between publishing a purge and
    finishing its physical deletion, and covers fills that started before a purge but published
    after it.  Older records have long been applied physically by the worker that received them.
    """

    def __init__(self, log: PurgeLog, window: float = 300.0, keep: int = 10_000) -> None:
        self.log = log
        self.window = window
        self.keep = keep
        self.applied_seq = log.seq
        cutoff = time.time() - window
        self.recent: list[PurgeRecord] = [record for record in log._since_sync(0) if record.at >= cutoff][-keep:]

    def behind(self) -> bool:
        return self.log.seq != self.applied_seq

    async def catch_up(self) -> list[PurgeRecord]:
        """New records since the last call, in order (also remembered for lookups and fills)."""
        if not self.behind():
            return []
        records = await self.log.since(self.applied_seq)
        if records:
            self.applied_seq = max(self.applied_seq, records[-1].seq)
            self.recent.extend(records)
        cutoff = time.time() - self.window
        while self.recent and (self.recent[0].at < cutoff or len(self.recent) > self.keep):
            self.recent.pop(0)
        return records

    def verdict(self, key: str, tags: Iterable[str], stored_at: float) -> Literal["hard", "soft"] | None:
        """Whether an object stored at ``stored_at`` is purged (gone) or soft-purged (stale)."""
        generations = self.log.generations()
        if stored_at < generations.hard_all_at or stored_at <= self.log.invalidated_at(key) > 0.0:
            return "hard"
        result: Literal["hard", "soft"] | None = "soft" if stored_at < generations.soft_all_at else None
        tag_list = tuple(tags)
        for record in reversed(self.recent):
            if record.at < stored_at:
                break
            if record.matches(key, tag_list):
                if not record.soft:
                    return "hard"
                result = "soft"
        return result

    def purged_since(self, seq: int, started_at: float, key: str, tags: Iterable[str]) -> bool:
        """Did any purge after ``seq`` (a fill's start, at ``started_at``) name this object, or an invalidation?"""
        if self.log.invalidated_at(key) >= started_at > 0.0:
            return True
        tag_list = tuple(tags)
        return any(record.seq > seq and record.matches(key, tag_list) for record in reversed(self.recent))

    def any_since(self, seq: int, started_at: float, key: str) -> bool:
        """A purge or invalidation since a fill started that may concern ``key`` (tag purges may, until
        the tags are known)."""
        if self.log.invalidated_at(key) >= started_at > 0.0:
            return True
        return any(
            record.seq > seq and (record.kind == "tags" or record.matches(key, ())) for record in reversed(self.recent)
        )


class Purger:
    """Purges as one worker applies them: logged, published to every worker, applied to the tiers.

    Also the guard of a restart: until the purges this edge missed while it was down are replayed
    (``caught_up``), nothing stored before this worker started (``opened_at``) is served.
    """

    def __init__(self, purge_log: PurgeLog, store: TieredStore) -> None:
        self.log = purge_log
        self.store = store
        self.view = PurgeView(purge_log)
        self.background: set[asyncio.Task[None]] = set()
        self.caught_up = asyncio.Event()
        self.opened_at = time.time()

    def behind(self) -> bool:
        """One read of shared memory: did another worker publish a purge this one has not applied?"""
        return self.log.seq != self.view.applied_seq

    async def sync(self) -> None:
        """Apply purges other workers published to this worker's memory tier, before serving from it."""
        if not self.behind():
            return
        for record in await self.view.catch_up():
            await self._apply_to_memory(record)

    def visible(self, found: CachedObject | None) -> CachedObject | None:
        """The object as purges leave it: None if hard-purged, invalidated or not yet vouched for by
        the catch-up; marked stale if soft-purged (it may still serve under SWR/SIE)."""
        if found is None:
            return None
        meta = found.meta
        if meta.stored_at < self.opened_at and not self.caught_up.is_set():
            return None
        verdict = self.view.verdict(meta.key, meta.tags, meta.stored_at)
        if verdict == "hard":
            return None
        if verdict == "soft" and not meta.invalidated:
            return replace(found, meta=replace(meta, invalidated=True))
        return found

    async def purge(
        self, kind: PurgeKind, values: list[str], soft: bool, purge_id: str, cluster_seq: int | None = None
    ) -> tuple[PurgeRecord, int]:
        """Purge on this edge: when this returns, no worker serves the purged content.

        Every worker reads the published sequence before using its memory tier, and every lookup
        checks recent purges against the object's ``stored_at`` until the physical deletion below
        has surely finished.
        """
        await self._index_usable(kind, soft)
        record = await self.log.append(kind, values, soft, purge_id, cluster_seq)
        return record, await self._publish_and_apply(record)

    async def _index_usable(self, kind: PurgeKind, soft: bool) -> None:
        """Before a purge is logged (and its sequence counted as applied): the disk index it will
        use can be trusted, or ``IndexIncompleteError`` leaves nothing behind, so the purge is sent
        again and applied whole rather than counted done and half-applied."""
        disk = self.store.disk
        if disk is not None and (kind in ("prefix", "tags") or (kind == "all" and not soft)):
            await disk.ensure_index()

    async def follow_log(self, log_id: str) -> bool:
        """The control plane's purges come from the log ``log_id``.  A log other than the one this
        edge followed (a router whose log was lost and started again at 1, a switch from Redis)
        numbers its purges afresh, so the sequence this edge applied says nothing about them:
        everything stored is purged (hard) and the new log is followed from its start.  True when
        that happened."""
        seq, _, known = await self.log.cluster_position()
        if known == log_id:
            return False
        if not known:  # applied before edges kept the log's identity (or nothing yet): it is this one
            await self.log.name_cluster_log(log_id, expected=(known, seq))
            return False
        log.warning("the control plane's purge log is %s, not %s (through %d) that this edge followed:"
                    " purging everything stored", log_id, known, seq)  # fmt: skip
        await self.purge("all", [], False, f"new-log-{log_id[:12]}", None)
        await self.log.reset_cluster(log_id, expected=(known, seq))
        return True

    async def purge_from_stream(
        self, kind: PurgeKind, values: list[str], soft: bool, purge_id: str, cluster_seq: int, stream_id: str
    ) -> int | None:
        """:meth:`purge` for a record of the shared purge stream, once per edge however many of its
        workers read it: the affected count, or None when another worker applied it."""
        await self._index_usable(kind, soft)
        record = await self.log.append_cluster(kind, values, soft, purge_id, cluster_seq, stream_id)
        if record is None:
            return None
        return await self._publish_and_apply(record)

    async def _publish_and_apply(self, record: PurgeRecord) -> int:
        self.log.publish(record)
        await self.sync()
        return await self._apply_to_disk(record)

    async def _apply_to_memory(self, record: PurgeRecord) -> None:
        memory = self.store.memory
        if memory is None:
            return
        if record.kind == "urls":
            for key in record.values:
                await memory.delete(key)
        elif record.kind == "prefix":
            for prefix in record.values:
                await memory.delete_prefix(prefix)
        elif record.kind == "tags":
            await memory.delete_tags(record.values)
        else:
            await memory.clear()

    async def _apply_to_disk(self, record: PurgeRecord) -> int:
        disk = self.store.disk
        if disk is None:
            return 0
        if record.kind == "all":
            objects = disk.stats().get("objects", 0)
            if not record.soft:
                task = asyncio.ensure_future(self._reclaim_before(record.at))
                self.background.add(task)
                task.add_done_callback(self.background.discard)
            return objects
        if not record.soft:
            if record.kind == "urls":
                return sum([await disk.delete(key) for key in record.values])
            if record.kind == "prefix":
                return sum([await disk.delete_prefix(prefix) for prefix in record.values])
            return await disk.delete_tags(record.values)
        affected = 0
        for key, variant in await disk.objects_matching(record.kind, record.values):
            for meta in [*await disk.variants(key), *await disk.parts(key)]:
                if meta.variant == variant and await disk.update_meta(replace(meta, invalidated=True)):
                    affected += 1
        return affected

    async def _reclaim_before(self, purge_time: float) -> None:
        """Background: free the disk space of everything a purge-all made unreachable."""
        disk = self.store.disk
        if disk is not None:
            try:
                removed = await disk.delete_stored_before(purge_time)
            except Exception as exc:  # the purge stands (hard_all_at): only the space waits for a cleanup
                log.warning("purge-all: reclaiming disk space failed: %s", exc)
                return
            log.info("purge-all: reclaimed %d objects from disk", removed)

    async def invalidate(self, key: str, now: float) -> int:
        """RFC 9111 §4.4 for every worker (the shared table), then this worker's and the disk's copies."""
        self.log.invalidate(key, now)
        return await self.store.delete(key)

    async def close(self) -> None:
        for task in list(self.background):
            task.cancel()
        if self.background:
            await asyncio.gather(*self.background, return_exceptions=True)
