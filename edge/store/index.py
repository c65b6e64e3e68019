"""The shared disk-cache index: SQLite (WAL) in the cache directory, one row per stored object.

What it is for, and what it is not:

- It answers the questions files answer badly: which keys start with a prefix, which objects carry a
  tag, how many bytes are stored, which objects were used least recently. Purges and byte-bounded
  eviction read it; **the hit path never does** (a hit reads the meta file and the body).
- It is *derived* data. The meta files are the truth; the index can be deleted or found corrupt at any
  time and is rebuilt from them (``DiskStore`` scans the directory). A row without a meta file or a
  meta file without a row is tolerated and healed by the next reconcile pass.
- Several worker processes share it: WAL mode so readers never block the writer, a busy timeout so a
  writer waits instead of failing, and short transactions (``BEGIN IMMEDIATE`` ... ``COMMIT``) so no
  process holds the lock for long.
- SQLite calls block, so each ``SqliteIndex`` owns one dedicated thread with one connection (SQLite
  connections must stay on their thread) and every public method is a coroutine that runs there.
  One thread also serialises this process's transactions, which keeps them simple.
- Running totals (objects, bytes) are kept by triggers in a one-row table, so "are we over budget?"
  is a point read instead of a ``SUM`` over every row.

Write-behind (``RowJournal``): a transaction costs ~250 µs of CPU whatever it holds, so a published
object's row is not written at once. It is queued in memory *and* appended to this process's journal
file (``<cache dir>/journal/<pid>.<rand>.jnl``, one checksummed line per row: a ~2 µs ``write``), and
the queue is written in one transaction every ~50 ms (``DiskStore.flush_rows``). The journal is what
keeps purges exact across processes: a purge in another worker reads every journal and ingests the
rows it finds *before* it asks the index, so an object whose ``commit`` returned before the purge was
published is found even though its owner has not flushed yet. Rules that make that hold:

- A row is appended to the journal before ``commit`` returns, under the same lock as the in-memory
  queue; the owner truncates (or rotates and unlinks) its journal only after every row in it has been
  committed to SQLite. So each row is in a journal file or in the database at every instant.
- Ingesting is idempotent and checked: inside the write transaction, a row is only upserted if it was
  made from the meta file that is published now (``ingest(rows, is_current)``: same inline token, or
  same header CRC and body file). Stale rows (superseded, deleted, purged meanwhile) are dropped, so
  several processes may ingest the same journal, in any order, without resurrecting anything or
  undoing a newer row: every change unlinks or replaces files first and writes or removes rows after,
  so it either makes the check fail or changes the row in a later transaction.
- The owner holds an exclusive ``flock`` on its journal. A journal nobody holds belongs to a process
  that died; whoever ingests it next also unlinks it (so "pending" rows survive a crash).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import logging
import os
import secrets
import shutil
import sqlite3
import threading
import time
import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")
ObjectHash = tuple[str, str]  # (key hash, variant hash): the primary key, and the file name stem

SCHEMA_VERSION = "1"
_IN_CHUNK = 400  # below SQLite's default limit of host parameters per statement

_SCHEMA = """
CREATE TABLE IF NOT EXISTS objects (
    key_hash TEXT NOT NULL,
    variant_hash TEXT NOT NULL,
    key TEXT NOT NULL,
    variant TEXT NOT NULL,
    body TEXT NOT NULL,            -- body file name the meta referenced when this row was written
    size INTEGER NOT NULL,         -- bytes on disk: body + meta file
    last_access REAL NOT NULL,
    stored_at REAL NOT NULL,
    recorded_at REAL NOT NULL,     -- when this row was written (reconcile must not prune newer rows)
    PRIMARY KEY (key_hash, variant_hash)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS objects_by_key ON objects (key);
CREATE INDEX IF NOT EXISTS objects_by_access ON objects (last_access);
CREATE TABLE IF NOT EXISTS tags (
    tag TEXT NOT NULL,
    key_hash TEXT NOT NULL,
    variant_hash TEXT NOT NULL,
    PRIMARY KEY (tag, key_hash, variant_hash)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS tags_by_object ON tags (key_hash, variant_hash);
CREATE TABLE IF NOT EXISTS totals (
    id INTEGER PRIMARY KEY CHECK (id = 0),
    objects INTEGER NOT NULL,
    bytes INTEGER NOT NULL
);
INSERT OR IGNORE INTO totals (id, objects, bytes) VALUES (0, 0, 0);
CREATE TABLE IF NOT EXISTS info (name TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TRIGGER IF NOT EXISTS objects_insert AFTER INSERT ON objects BEGIN
    UPDATE totals SET objects = objects + 1, bytes = bytes + NEW.size WHERE id = 0;
END;
CREATE TRIGGER IF NOT EXISTS objects_delete AFTER DELETE ON objects BEGIN
    UPDATE totals SET objects = objects - 1, bytes = bytes - OLD.size WHERE id = 0;
    DELETE FROM tags WHERE key_hash = OLD.key_hash AND variant_hash = OLD.variant_hash;
END;
CREATE TRIGGER IF NOT EXISTS objects_resize AFTER UPDATE OF size ON objects BEGIN
    UPDATE totals SET bytes = bytes - OLD.size + NEW.size WHERE id = 0;
END;
"""

_UPSERT = """
INSERT INTO objects (key_hash, variant_hash, key, variant, body, size, last_access, stored_at, recorded_at)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (key_hash, variant_hash) DO UPDATE SET
    key = excluded.key, variant = excluded.variant, body = excluded.body, size = excluded.size,
    last_access = MAX(objects.last_access, excluded.last_access), stored_at = excluded.stored_at,
    recorded_at = excluded.recorded_at
"""


@dataclass(frozen=True, slots=True)
class IndexRow:
    """What the index knows about one stored object."""

    key_hash: str
    variant_hash: str
    key: str
    variant: str
    body: str
    size: int
    last_access: float
    stored_at: float
    tags: tuple[str, ...] = ()
    check: str = ""  # journal only, not stored: what identifies the meta file this row was made from

    @property
    def ident(self) -> ObjectHash:
        return (self.key_hash, self.variant_hash)


@dataclass(frozen=True, slots=True)
class Totals:
    objects: int
    bytes: int


class IndexCorruptError(Exception):
    """The database file is damaged: the caller should ``reset()`` and rebuild it from the meta files."""


def _is_corruption(error: sqlite3.DatabaseError) -> bool:
    code = getattr(error, "sqlite_errorcode", None)
    return code is not None and code & 0xFF in (sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB)


def _sql_text(text: str) -> str:
    """SQLite wants valid UTF-8; a key with lone surrogates is stored with replacement characters."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", "surrogatepass").decode("utf-8", "replace")
    return text


def _prefix_upper_bound(prefix: str) -> str | None:
    """Smallest string greater than every string starting with ``prefix`` (None: no bound)."""
    chars = list(prefix)
    while chars:
        code = ord(chars[-1]) + 1
        if 0xD800 <= code <= 0xDFFF:
            code = 0xE000  # surrogates cannot be encoded; the next encodable code point is above them
        if code <= 0x10FFFF:
            chars[-1] = chr(code)
            return "".join(chars)
        chars.pop()
    return None


def _chunks(items: Sequence[T], size: int) -> Iterator[Sequence[T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


class SqliteIndex:
    """One process's handle on ``<cache dir>/index.sqlite``; all methods run on its own thread."""

    def __init__(self, path: Path, *, busy_timeout: float = 10.0) -> None:
        self.path = path
        self.busy_timeout = busy_timeout
        self._executor: ThreadPoolExecutor | None = None
        self._conn: sqlite3.Connection | None = None
        self._inode: int | None = None
        self.reopened = False  # set when another process replaced the file: a rebuild may be due

    # -- lifecycle -------------------------------------------------------------------------------

    async def open(self) -> bool:
        """Open (creating or, if corrupt, recreating) the database; True if it must be rebuilt from files."""
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="edgecache-index")
        try:
            return await self._run(self._open_sync)
        except BaseException:
            self._executor.shutdown(wait=True)
            self._executor = None
            raise

    async def close(self) -> None:
        if self._executor is None:
            return
        try:
            await self._run(self._close_sync)
        finally:
            self._executor.shutdown(wait=True)
            self._executor = None

    async def reset(self) -> None:
        """Throw the database away and start empty (it was corrupt); the caller rebuilds it."""
        await self._run(self._reset_sync)

    # -- queries (all run on the index thread) --------------------------------------------------

    async def is_built(self) -> bool:
        return await self._run(lambda: self._get_info("built") == SCHEMA_VERSION)

    async def mark_built(self) -> None:
        def mark() -> None:
            with self._transaction() as conn:
                conn.execute("INSERT OR REPLACE INTO info (name, value) VALUES ('built', ?)", (SCHEMA_VERSION,))

        await self._run(mark)

    async def upsert(self, rows: Sequence[IndexRow]) -> Totals:
        """Record objects (replacing their tags); an existing row keeps the later of the two access times."""
        recorded_at = time.time()

        def upsert() -> Totals:
            with self._transaction() as conn:
                self._upsert_sync(conn, rows, recorded_at)
                return self._totals_sync(conn)

        return await self._run(upsert)

    async def ingest(self, rows: Sequence[IndexRow], is_current: Callable[[IndexRow], bool]) -> Totals:
        """``upsert`` the rows whose object is still published, checked inside the write transaction.

        ``is_current`` looks at the files (it runs on the index thread while this process holds the
        write lock): a deletion unlinks files before it removes rows, so a row that passes the check is
        either still right or removed by that deletion's own transaction, which has to wait for ours.
        Rows are taken in order, so of two rows for one object the later one wins.
        """
        recorded_at = time.time()

        def ingest() -> Totals:
            with self._transaction() as conn:
                self._upsert_sync(conn, [row for row in rows if is_current(row)], recorded_at)
                return self._totals_sync(conn)

        return await self._run(ingest)

    async def remove(self, idents: Iterable[ObjectHash]) -> Totals:
        pairs = list(idents)

        def remove() -> Totals:
            with self._transaction() as conn:
                conn.executemany("DELETE FROM objects WHERE key_hash = ? AND variant_hash = ?", pairs)
                return self._totals_sync(conn)

        return await self._run(remove)

    async def prune(
        self, idents: Iterable[ObjectHash], is_current: Callable[[IndexRow], bool], *, key_hash: str | None = None
    ) -> Totals:
        """Delete the rows of ``idents`` (or of every variant of ``key_hash``) whose object is no longer
        the published one, checked inside the write transaction (as ``ingest`` does).

        Deletions unlink files first and then prune: a row describing what was unlinked goes, while a
        row a concurrent fill wrote for its newer object (published between the unlink and this
        transaction) stays — removing rows by key alone would lose it, and later purges would miss it.
        """
        pairs = list(idents)

        def prune() -> Totals:
            with self._transaction() as conn:
                if key_hash is not None:
                    found = conn.execute(f"{_SELECT_ROWS} WHERE key_hash = ?", (key_hash,)).fetchall()
                elif pairs:
                    found = [
                        values for pair in pairs
                        for values in conn.execute(f"{_SELECT_ROWS} WHERE key_hash = ? AND variant_hash = ?", pair)
                    ]  # fmt: skip
                else:
                    found = conn.execute(_SELECT_ROWS).fetchall()
                stale = [row.ident for row in map(_row, found) if not is_current(row)]
                conn.executemany("DELETE FROM objects WHERE key_hash = ? AND variant_hash = ?", stale)
                return self._totals_sync(conn)

        return await self._run(prune)

    async def remove_key(self, key_hash: str) -> Totals:
        def remove() -> Totals:
            with self._transaction() as conn:
                conn.execute("DELETE FROM objects WHERE key_hash = ?", (key_hash,))
                return self._totals_sync(conn)

        return await self._run(remove)

    async def remove_all(self) -> Totals:
        def remove() -> Totals:
            with self._transaction() as conn:
                conn.execute("DELETE FROM objects")
                conn.execute("DELETE FROM tags")
                conn.execute("UPDATE totals SET objects = 0, bytes = 0 WHERE id = 0")
                return self._totals_sync(conn)

        return await self._run(remove)

    async def touch(self, accesses: dict[ObjectHash, float]) -> None:
        """Apply batched last-access times recorded on the hit path."""
        if accesses:
            await self._run(lambda: self._touch_sync(accesses))

    async def totals(self) -> Totals:
        return await self._run(lambda: self._totals_sync(self._connection()))

    async def find_prefix(self, prefix: str) -> list[IndexRow]:
        def find() -> list[IndexRow]:
            low = _sql_text(prefix)
            high = _prefix_upper_bound(low)
            if high is None:
                cursor = self._connection().execute(f"{_SELECT_ROWS} WHERE key >= ?", (low,))
            else:
                cursor = self._connection().execute(f"{_SELECT_ROWS} WHERE key >= ? AND key < ?", (low, high))
            return [row for row in map(_row, cursor) if row.key.startswith(low)]

        return await self._run(find)

    async def find_tags(self, tags: Iterable[str]) -> list[IndexRow]:
        wanted = sorted({_sql_text(tag) for tag in tags})

        def find() -> list[IndexRow]:
            found: dict[ObjectHash, IndexRow] = {}
            conn = self._connection()
            for chunk in _chunks(wanted, _IN_CHUNK):
                marks = ",".join("?" * len(chunk))
                cursor = conn.execute(
                    f"{_SELECT_ROWS} WHERE (key_hash, variant_hash) IN "
                    f"(SELECT key_hash, variant_hash FROM tags WHERE tag IN ({marks}))",
                    tuple(chunk),
                )
                for row in map(_row, cursor):
                    found[row.ident] = row
            return list(found.values())

        return await self._run(find)

    async def rows_in_shard(self, shard: str) -> dict[ObjectHash, tuple[str, float]]:
        """``(body, recorded_at)`` of every row whose key hash starts with the 2-hex-digit ``shard``."""

        def rows() -> dict[ObjectHash, tuple[str, float]]:
            high = f"{int(shard, 16) + 1:02x}" if shard != "ff" else "g"
            cursor = self._connection().execute(
                "SELECT key_hash, variant_hash, body, recorded_at FROM objects WHERE key_hash >= ? AND key_hash < ?",
                (shard, high),
            )
            return {(key_hash, variant_hash): (body, recorded) for key_hash, variant_hash, body, recorded in cursor}

        return await self._run(rows)

    async def shards_in_use(self) -> set[str]:
        """The 2-hex-digit key-hash prefixes that have rows (256 index seeks, not a table scan)."""

        def shards() -> set[str]:
            conn = self._connection()
            found: set[str] = set()
            for n in range(256):
                low, high = f"{n:02x}", (f"{n + 1:02x}" if n < 255 else "g")
                query = "SELECT 1 FROM objects WHERE key_hash >= ? AND key_hash < ? LIMIT 1"
                if conn.execute(query, (low, high)).fetchone():
                    found.add(low)
            return found

        return await self._run(shards)

    async def take_lru(
        self, max_bytes: int, accesses: dict[ObjectHash, float], target: int | None = None
    ) -> list[IndexRow]:
        """If the total exceeds ``max_bytes``, remove least recently used rows until it fits ``target``
        (default ``max_bytes``; a lower one leaves headroom so the next fills don't each evict); return
        the removed rows for unlinking.

        Rows are deleted in the same ``BEGIN IMMEDIATE`` transaction that chose them, so two processes
        evicting at once never pick the same victims or count the same bytes twice.
        """
        low_water = max_bytes if target is None else min(target, max_bytes)

        def take() -> list[IndexRow]:
            self._touch_sync(accesses)
            victims: list[IndexRow] = []
            with self._transaction() as conn:
                total = self._totals_sync(conn).bytes
                excess = total - low_water if total > max_bytes else 0
                while excess > 0:
                    batch = [_row(values) for values in conn.execute(
                        f"{_SELECT_ROWS} ORDER BY last_access LIMIT 64")]  # fmt: skip
                    if not batch:
                        break
                    for row in batch:
                        if excess <= 0:
                            break
                        conn.execute("DELETE FROM objects WHERE key_hash = ? AND variant_hash = ?", row.ident)
                        victims.append(row)
                        excess -= row.size
            return victims

        return await self._run(take)

    # -- thread-side helpers ---------------------------------------------------------------------

    async def _run(self, call: Callable[[], T]) -> T:
        if self._executor is None:
            raise RuntimeError("index is not open")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._guarded, call)

    def _guarded(self, call: Callable[[], T]) -> T:
        try:
            return call()
        except sqlite3.DatabaseError as error:
            if _is_corruption(error):
                raise IndexCorruptError(str(error)) from error
            raise

    def _connection(self) -> sqlite3.Connection:
        """The open connection, reopened first if another process replaced or removed the file."""
        try:
            inode: int | None = os.stat(self.path).st_ino
        except FileNotFoundError:
            inode = None
        if self._conn is None or inode != self._inode:
            had_connection = self._conn is not None
            self._close_sync()
            self._connect_sync()
            self.reopened = self.reopened or had_connection
        assert self._conn is not None
        return self._conn

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        conn = self._connection()
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    def _open_sync(self) -> bool:
        with self._file_lock():
            if os.path.lexists(self.path) and not self.path.is_file():
                log.warning("cache index %s is not a file: rebuilding it from the meta files", self.path)
                self._unlink_files()
            try:
                fresh = self._connect_sync()
                built = self._get_info("built") == SCHEMA_VERSION
            except sqlite3.DatabaseError as error:
                if not _is_corruption(error):
                    raise
                log.warning("cache index %s is corrupt (%s): rebuilding it from the meta files", self.path, error)
                self._close_sync()
                self._unlink_files()
                fresh = self._connect_sync()
                built = False
        return fresh or not built

    def _reset_sync(self) -> None:
        with self._file_lock():
            self._close_sync()
            self._unlink_files()
            self._connect_sync()

    def _connect_sync(self) -> bool:
        """Connect and make sure the schema exists; True if the file did not exist before."""
        fresh = not self.path.exists()
        conn = sqlite3.connect(self.path, timeout=self.busy_timeout, isolation_level=None)
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")  # a cache index may lose its last commits on power loss
            conn.executescript(f"BEGIN IMMEDIATE;\n{_SCHEMA}\nCOMMIT;")
        except BaseException:
            conn.close()
            raise
        self._conn = conn
        self._inode = os.stat(self.path).st_ino
        return fresh

    def _close_sync(self) -> None:
        if self._conn is not None:
            conn, self._conn = self._conn, None
            conn.close()

    def _unlink_files(self) -> None:
        for suffix in ("", "-wal", "-shm", "-journal"):
            path = f"{self.path}{suffix}"
            with contextlib.suppress(FileNotFoundError):
                if os.path.isdir(path) and not os.path.islink(path):
                    shutil.rmtree(path)  # the index is derived: whatever took its place goes
                else:
                    os.unlink(path)

    @contextlib.contextmanager
    def _file_lock(self) -> Iterator[None]:
        """Serialise create/recreate of the database file between processes."""
        fd = os.open(self.path.with_name(self.path.name + ".lock"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # closing releases the lock

    def _get_info(self, name: str) -> str | None:
        found = self._connection().execute("SELECT value FROM info WHERE name = ?", (name,)).fetchone()
        return None if found is None else str(found[0])

    def _upsert_sync(self, conn: sqlite3.Connection, rows: Iterable[IndexRow], recorded_at: float) -> None:
        """One statement per kind for the whole batch (the per-row loop was most of the index thread's
        CPU on a miss-heavy load).  Of several rows for one object the last one wins, with the latest
        access time of them all, exactly as applying them one by one would leave it."""
        latest: dict[ObjectHash, IndexRow] = {}
        for row in rows:
            earlier = latest.pop(row.ident, None)  # re-inserted: the batch keeps the order rows came in
            if earlier is not None and earlier.last_access > row.last_access:
                row = replace(row, last_access=earlier.last_access)
            latest[row.ident] = row
        if not latest:
            return
        batch = latest.values()
        conn.executemany(_UPSERT, [
            (row.key_hash, row.variant_hash, _sql_text(row.key), _sql_text(row.variant), row.body, row.size,
             row.last_access, row.stored_at, recorded_at)
            for row in batch
        ])  # fmt: skip
        conn.executemany("DELETE FROM tags WHERE key_hash = ? AND variant_hash = ?", latest.keys())
        conn.executemany(
            "INSERT OR IGNORE INTO tags (tag, key_hash, variant_hash) VALUES (?, ?, ?)",
            [(_sql_text(tag), row.key_hash, row.variant_hash) for row in batch for tag in row.tags],
        )

    def _totals_sync(self, conn: sqlite3.Connection) -> Totals:
        objects, size = conn.execute("SELECT objects, bytes FROM totals WHERE id = 0").fetchone()
        return Totals(int(objects), int(size))

    def _touch_sync(self, accesses: dict[ObjectHash, float]) -> None:
        if not accesses:
            return
        with self._transaction() as conn:
            conn.executemany(
                "UPDATE objects SET last_access = MAX(last_access, ?) WHERE key_hash = ? AND variant_hash = ?",
                [(when, key_hash, variant_hash) for (key_hash, variant_hash), when in accesses.items()],
            )


_SELECT_ROWS = "SELECT key_hash, variant_hash, key, variant, body, size, last_access, stored_at FROM objects"


def _row(values: tuple[Any, ...]) -> IndexRow:
    key_hash, variant_hash, key, variant, body, size, last_access, stored_at = values
    return IndexRow(
        key_hash=str(key_hash),
        variant_hash=str(variant_hash),
        key=str(key),
        variant=str(variant),
        body=str(body),
        size=int(size),
        last_access=float(last_access),
        stored_at=float(stored_at),
    )


# -- write-behind: the row journal ---------------------------------------------------------------

JOURNAL_SUFFIX = ".jnl"
_JOURNAL_ROTATE_BYTES = 1024 * 1024  # a journal this long is swapped for a new one at the next flush
_JOURNAL_OPEN = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND | os.O_CLOEXEC


def encode_row(row: IndexRow) -> bytes:
    """One journal line: ``<crc32 of json> <json>\\n`` (ASCII JSON, so a line never contains a newline)."""
    payload = json.dumps(
        [row.key_hash, row.variant_hash, row.key, row.variant, row.body, row.size, row.last_access, row.stored_at,
         list(row.tags), row.check],
        separators=(",", ":"),
        allow_nan=False,
    ).encode("ascii")  # fmt: skip
    return b"%08x %s\n" % (zlib.crc32(payload), payload)


def decode_rows(data: bytes) -> list[IndexRow]:
    """The rows of a journal; lines that fail their checksum (torn by a crash, or read while the owner
    truncated and refilled the file) are skipped: such a row is either already in the index or was
    never confirmed to anyone."""
    rows: list[IndexRow] = []
    for line in data.split(b"\n"):
        if len(line) < 10 or line[8:9] != b" " or b"%08x" % zlib.crc32(line[9:]) != line[:8]:
            continue
        try:
            khash, vhash, key, variant, body, size, access, stored, tags, check = json.loads(line[9:])
            texts = [khash, vhash, key, variant, body, check, *tags]
            if (
                any(type(text) is not str for text in texts)
                or type(size) is not int
                or any(type(number) not in (int, float) for number in (access, stored))
            ):
                continue
        except (ValueError, TypeError):
            continue
        rows.append(IndexRow(khash, vhash, key, variant, body, size, float(access), float(stored), tuple(tags), check))
    return rows


def _read_to_end(fd: int) -> bytes:
    parts: list[bytes] = []
    while part := os.read(fd, 1024 * 1024):
        parts.append(part)
    return b"".join(parts)


def read_journals(directory: str, skip: Iterable[str] = ()) -> tuple[list[IndexRow], list[tuple[int, str]]]:
    """Rows from every journal in ``directory`` except ``skip`` (our own), oldest process first.

    Also returns the journals no process holds (their writer died or closed without flushing), opened
    and locked: unlink them with ``release_journals`` once their rows are in the index.
    """
    rows: list[IndexRow] = []
    orphaned: list[tuple[int, str]] = []
    skipped = set(skip)
    try:
        names = sorted(name for name in os.listdir(directory) if name.endswith(JOURNAL_SUFFIX))
    except FileNotFoundError:
        return rows, orphaned
    for name in names:
        path = f"{directory}/{name}"
        if path in skipped:
            continue
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            continue  # its owner flushed and retired it: its rows are in the index
        held = False
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                held = True
            except BlockingIOError:
                pass  # its writer is alive
            rows.extend(decode_rows(_read_to_end(fd)))
        except OSError as error:
            log.warning("cache index journal %s unreadable: %s", path, error)
        finally:
            if held:
                orphaned.append((fd, path))
            else:
                os.close(fd)
    return rows, orphaned


def release_journals(journals: Iterable[tuple[int, str]], ingested: bool) -> None:
    """Close journals ``read_journals`` locked; unlink them first if their rows were ingested."""
    for fd, path in journals:
        if ingested:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
        os.close(fd)


@dataclass(slots=True)
class JournalBatch:
    """Rows taken from the queue for one transaction, and the journal files only they still need."""

    rows: list[IndexRow]
    retired: list[tuple[int, str]]


class RowJournal:
    """This process's write-behind queue of index rows, mirrored in an append-only journal file.

    ``append`` runs on any thread (the publishing one); ``take``/``done`` bracket one flush. Invariant:
    every row appended is in ``_rows`` or in a taken batch until that batch is committed, and the file
    holding it is neither truncated nor unlinked before then (see the module docstring).
    """

    def __init__(self, directory: str, temp_directory: str) -> None:
        self.directory = directory
        self.temp_directory = temp_directory
        self._lock = threading.Lock()
        self._fd: int | None = None
        self._path: str | None = None
        self._size = 0
        self._rows: list[IndexRow] = []
        self._bytes = 0
        self._taken: list[IndexRow] = []  # the batch being written: not in the queue, not yet in the index
        self._taken_bytes = 0
        self._retired: list[tuple[int, str]] = []

    def __len__(self) -> int:
        return len(self._rows)

    @property
    def pending_bytes(self) -> int:
        """Bytes of the rows queued or being written (an over-estimate when one object was queued twice)."""
        return self._bytes + self._taken_bytes

    def pending(self) -> tuple[int, int]:
        """Distinct objects and their bytes among the rows queued or being written (the last row counts)."""
        with self._lock:
            sizes = {row.ident: row.size for row in self._taken}
            sizes.update((row.ident, row.size) for row in self._rows)
        return len(sizes), sum(sizes.values())

    def own_paths(self) -> set[str]:
        with self._lock:
            paths = {path for _, path in self._retired}
            if self._path is not None:
                paths.add(self._path)
            return paths

    def append(self, row: IndexRow) -> bool:
        """Queue ``row`` and write it to the journal; False if the file write failed (still queued)."""
        line = encode_row(row)
        with self._lock:
            self._rows.append(row)
            self._bytes += row.size
            try:
                if self._fd is None:
                    self._open_locked()
                assert self._fd is not None
                view = memoryview(line)
                while view:
                    view = view[os.write(self._fd, view) :]
                self._size += len(line)
            except OSError as error:
                log.warning("cache index journal write failed: %s", error)
                if self._fd is not None:  # a torn line would spoil the next one: continue in a new file
                    assert self._path is not None
                    self._retired.append((self._fd, self._path))
                    self._fd, self._path, self._size = None, None, 0
                return False
        return True

    def take(self) -> JournalBatch:
        """Everything queued, for one transaction; a long journal is retired (new rows go to a new file)."""
        with self._lock:
            batch = JournalBatch(self._rows, self._retired)
            self._taken, self._taken_bytes = self._rows, self._bytes
            self._rows, self._bytes, self._retired = [], 0, []
            if self._fd is not None and self._size >= _JOURNAL_ROTATE_BYTES:
                assert self._path is not None
                batch.retired.append((self._fd, self._path))
                self._fd, self._path, self._size = None, None, 0
        return batch

    def done(self, batch: JournalBatch, ingested: bool) -> None:
        """After the batch's transaction: drop journal bytes it covered, or put the batch back.

        Called right after the transaction's totals were taken in, so ``pending`` never counts a row
        twice or not at all.
        """
        with self._lock:
            self._taken, self._taken_bytes = [], 0
            if not ingested:
                self._rows[:0] = batch.rows
                self._bytes += sum(row.size for row in batch.rows)
                self._retired[:0] = batch.retired
                return
            if self._fd is not None and self._size and not self._rows:
                try:  # every row in it is in the index now (nothing was appended since the take)
                    os.ftruncate(self._fd, 0)
                    self._size = 0
                except OSError as error:
                    log.warning("cache index journal truncate failed: %s", error)
        release_journals(batch.retired, ingested=True)

    def close(self) -> None:
        """Close the journal: unlinked if every row reached the index, else left for the next process."""
        with self._lock:
            journals = list(self._retired)
            if self._fd is not None:
                assert self._path is not None
                journals.append((self._fd, self._path))
            clean = not self._rows
            self._fd, self._path, self._size, self._retired = None, None, 0, []
        release_journals(journals, ingested=clean)

    def _open_locked(self) -> None:
        """Create, lock, then move into place: a journal is never visible unlocked while its owner lives."""
        stem = f"{os.getpid()}.{secrets.token_hex(8)}"
        temp = f"{self.temp_directory}/{stem}{JOURNAL_SUFFIX}.tmp"
        fd = os.open(temp, _JOURNAL_OPEN, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            os.makedirs(self.directory, exist_ok=True)
            path = f"{self.directory}/{stem}{JOURNAL_SUFFIX}"
            os.rename(temp, path)
        except BaseException:
            os.close(fd)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temp)
            raise
        self._fd, self._path, self._size = fd, path, 0
