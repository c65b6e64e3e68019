"""The cluster purge log: ordered, durable, bounded — and who applied what.

Rules this module keeps (the rest of the control plane relies on them):

1. **Sequences are contiguous and never reused.**  ``append`` reads the last sequence from the
   ``meta`` table and inserts ``last + 1`` in one ``BEGIN IMMEDIATE`` transaction, so there are
   no holes and a sequence survives even when retention has deleted every record.
2. **A purge is on disk before anyone hears of it.**  SQLite in WAL mode with
   ``synchronous=FULL``: when ``append`` returns, the record survives a crash or power loss.
3. **Retention deletes a prefix.**  Whether by count (``max_records``) or by age (``max_age``),
   the records deleted are always the oldest ones, up to a sequence remembered as
   ``pruned_through``.  So "records after N are missing" is exactly ``N < pruned_through`` — the
   ``truncated`` flag an edge uses to decide it must treat everything it stored as purged.
4. **Per-edge progress is a watermark.**  The control plane sends purges to each edge in sequence
   order and never sends ``N+1`` before ``N`` was acknowledged, so one number per edge —
   ``applied_through`` — says which records it has applied.  Per-record delivery rows add the
   details (affected objects, errors, timings); a record at or below the watermark without an
   ``applied`` row was applied all the same (the edge reported that sequence in ``/readyz``,
   or it was covered by a full purge after a retention gap).

The class is synchronous and thread-safe (one connection behind a lock); the aiohttp side calls
it through ``asyncio.to_thread``.  One process owns a state directory at a time (``flock``).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import secrets
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, cast

from edge.controlplane.models import PurgeKind, PurgeRequest
from edge.overview import iso

__all__ = [
    "DB_NAME",
    "ClusterPurge",
    "ClusterPurgeLog",
    "Delivery",
    "DeliveryStatus",
    "EdgeStatus",
    "IdempotencyConflict",
    "LogLockedError",
    "LogPage",
    "edge_status",
    "request_hash",
]

DB_NAME = "controlplane.sqlite"
LOCK_NAME = "controlplane.lock"

DeliveryStatus = Literal["applied", "failed", "rejected"]
StatusName = Literal["applied", "failed", "rejected", "pending"]

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS purges (seq INTEGER PRIMARY KEY, id TEXT NOT NULL UNIQUE, kind TEXT NOT NULL,"
    " vals TEXT NOT NULL, soft INTEGER NOT NULL, created_at REAL NOT NULL)",
    "CREATE INDEX IF NOT EXISTS purges_created_at ON purges (created_at)",
    "CREATE TABLE IF NOT EXISTS deliveries (seq INTEGER NOT NULL, edge TEXT NOT NULL, status TEXT NOT NULL,"
    " affected INTEGER, error TEXT, at REAL NOT NULL, ms REAL, attempts INTEGER NOT NULL DEFAULT 1,"
    " PRIMARY KEY (seq, edge)) WITHOUT ROWID",
    "CREATE TABLE IF NOT EXISTS edges (name TEXT PRIMARY KEY, applied_through INTEGER NOT NULL,"
    " updated_at REAL NOT NULL)",
    "CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS idempotency (key TEXT PRIMARY KEY, seq INTEGER NOT NULL, hash TEXT NOT NULL)",
)


class IdempotencyConflict(ValueError):
    """An idempotency key seen before with a different purge (answered 422)."""


def request_hash(request: PurgeRequest) -> str:
    """What a purge request asks for, as a short digest (an idempotency key must mean one purge)."""
    text = json.dumps([request.kind, list(request.values), request.soft, request.site], separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


class LogLockedError(RuntimeError):
    """Another process holds this state directory."""


@dataclass(frozen=True, slots=True)
class ClusterPurge:
    """One logged purge.  ``values``: the URLs, ``(prefix,)``, the tags, or ``()`` for purge-all."""

    seq: int
    id: str
    kind: PurgeKind
    values: tuple[str, ...]
    soft: bool
    created_at: float
    site: str | None = None  # limits a prefix, tag or purge-all to one site of the edges

    def edge_body(self) -> dict[str, Any]:
        """The exact body ``POST {admin_url}/purge`` gets: the request plus ``id`` and ``cluster_seq``."""
        body: dict[str, Any]
        if self.kind == "urls":
            body = {"urls": list(self.values)}
        elif self.kind == "prefix":
            body = {"prefix": self.values[0]}
        elif self.kind == "tags":
            body = {"tags": list(self.values)}
        else:
            body = {"all": True}
        body.update(soft=self.soft, id=self.id, cluster_seq=self.seq)
        if self.site is not None:
            body["site"] = self.site
        return body

    def to_json(self) -> dict[str, Any]:
        """As served by ``GET /purges``; ``body`` is what an edge would have been sent."""
        return {
            "seq": self.seq,
            "id": self.id,
            "kind": self.kind,
            "values": list(self.values),
            "site": self.site,
            "soft": self.soft,
            "created_at": self.created_at,
            "created_at_iso": iso(self.created_at),
            "body": self.edge_body(),
        }


@dataclass(frozen=True, slots=True)
class Delivery:
    """The outcome of sending one record to one edge (the last attempt wins)."""

    seq: int
    edge: str
    status: DeliveryStatus
    affected: int | None
    error: str | None
    at: float
    ms: float | None


@dataclass(frozen=True, slots=True)
class EdgeStatus:
    """Where one record stands on one edge.

    ``via``: ``"push"`` (the edge answered our ``POST /purge``) or ``"cluster_seq"`` (the edge
    reported a sequence at or beyond this one, e.g. after replaying the log itself at startup).
    """

    status: StatusName
    affected: int | None = None
    error: str | None = None
    at: float | None = None
    ms: float | None = None
    via: Literal["push", "cluster_seq"] | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "affected": self.affected,
            "error": self.error,
            "at": self.at,
            "at_iso": iso(self.at),
            "ms": self.ms,
            "via": self.via,
        }


def edge_status(seq: int, row: Delivery | None, applied_through: int) -> EdgeStatus:
    """Combine the watermark with the delivery row (rule 4 of the module docstring)."""
    if row is not None and row.status == "applied":
        return EdgeStatus("applied", row.affected, None, row.at, row.ms, "push")
    if seq <= applied_through:
        if row is not None and row.status == "rejected":
            return EdgeStatus("rejected", None, row.error, row.at, row.ms, "push")
        return EdgeStatus("applied", via="cluster_seq")
    if row is not None:
        return EdgeStatus("failed", None, row.error, row.at, row.ms, "push")
    return EdgeStatus("pending")


@dataclass(frozen=True, slots=True)
class LogPage:
    """An answer to "what happened after N?"."""

    records: list[ClusterPurge]
    latest_seq: int
    oldest_seq: int | None
    truncated: bool
    more: bool
    log_id: str

    def to_json(self) -> dict[str, Any]:
        return {
            "records": [record.to_json() for record in self.records],
            "latest_seq": self.latest_seq,
            "oldest_seq": self.oldest_seq,
            "truncated": self.truncated,
            "more": self.more,
            "log_id": self.log_id,
        }


def _record(row: Sequence[Any]) -> ClusterPurge:
    stored = json.loads(row[3])  # a list of values, or {"values": [...], "site": name} (a site's purge)
    values, site = (stored["values"], stored.get("site")) if isinstance(stored, dict) else (stored, None)
    return ClusterPurge(
        seq=int(row[0]),
        id=str(row[1]),
        kind=cast(PurgeKind, row[2]),
        values=tuple(values),
        soft=bool(row[4]),
        created_at=float(row[5]),
        site=None if site is None else str(site),
    )


def _delivery(row: Sequence[Any]) -> Delivery:
    return Delivery(
        seq=int(row[0]),
        edge=str(row[1]),
        status=cast(DeliveryStatus, row[2]),
        affected=None if row[3] is None else int(row[3]),
        error=row[4],
        at=float(row[5]),
        ms=None if row[6] is None else float(row[6]),
    )


_RECORD_COLUMNS = "seq, id, kind, vals, soft, created_at"
_DELIVERY_COLUMNS = "seq, edge, status, affected, error, at, ms"


class ClusterPurgeLog:
    """The purge log in ``directory/controlplane.sqlite``; see the module docstring for the rules."""

    def __init__(
        self,
        directory: str | Path,
        *,
        max_records: int | None = 100_000,
        max_age: float | None = None,
        clock: Callable[[], float] = time.time,
        db_name: str = DB_NAME,
    ) -> None:
        if max_records is not None and max_records < 1:
            raise ValueError("max_records must be at least 1")
        if max_age is not None and max_age <= 0:
            raise ValueError("max_age must be positive")
        self.directory = Path(directory)
        self.db_name = db_name
        self.max_records = max_records
        self.max_age = max_age
        self._clock = clock
        self._lock = threading.RLock()
        self.directory.mkdir(parents=True, exist_ok=True)
        self._lock_fd = self._take_directory_lock()
        try:
            self._conn = self._open()
            self._last_seq, self._pruned_through, self.log_id = self._load_meta()
        except BaseException:
            os.close(self._lock_fd)
            raise
        self._closed = False

    # -- opening and closing ---------------------------------------------------------------------

    def _take_directory_lock(self) -> int:
        lock_name = LOCK_NAME if self.db_name == DB_NAME else f"{self.db_name}.lock"
        fd = os.open(self.directory / lock_name, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise LogLockedError(f"{self.directory}: in use by another control plane") from None
        return fd

    def _open(self) -> sqlite3.Connection:
        conn = sqlite3.connect(
            self.directory / self.db_name, timeout=10.0, isolation_level=None, check_same_thread=False
        )
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")
            for statement in _SCHEMA:
                conn.execute(statement)
        except BaseException:
            conn.close()
            raise
        return conn

    def _load_meta(self) -> tuple[int, int, str]:
        with self._transaction() as conn:
            meta = dict(conn.execute("SELECT name, value FROM meta").fetchall())
            if "log_id" not in meta:
                meta = {"log_id": uuid.uuid4().hex, "last_seq": "0", "pruned_through": "0"}
                conn.executemany("INSERT INTO meta (name, value) VALUES (?, ?)", sorted(meta.items()))
        return int(meta["last_seq"]), int(meta["pruned_through"]), str(meta["log_id"])

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._conn.close()
            os.close(self._lock_fd)

    def __enter__(self) -> ClusterPurgeLog:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            conn = self._conn
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    # -- the log ---------------------------------------------------------------------------------

    @property
    def latest_seq(self) -> int:
        """The last sequence ever assigned (0 before the first purge), retention notwithstanding."""
        return self._last_seq

    @property
    def pruned_through(self) -> int:
        """Every record up to this sequence was deleted by retention (0: none ever was)."""
        return self._pruned_through

    @property
    def oldest_seq(self) -> int | None:
        """The oldest record still held, or ``None`` when the log holds none."""
        return self._pruned_through + 1 if self._last_seq > self._pruned_through else None

    def append(self, request: PurgeRequest) -> ClusterPurge:
        """Log a purge durably and return it with its sequence and id; applies retention too."""
        return self.append_once(request, None)[0]

    def append_once(self, request: PurgeRequest, idempotency_key: str | None) -> tuple[ClusterPurge, bool]:
        """:meth:`append`, unless ``idempotency_key`` already logged a purge still held: then that
        purge and False (a retried POST is one purge)."""
        with self._transaction() as conn:
            body_hash = request_hash(request)
            if idempotency_key is not None:
                row = conn.execute("SELECT seq, hash FROM idempotency WHERE key = ?", (idempotency_key,)).fetchone()
                if row is not None and row[1] != body_hash:
                    raise IdempotencyConflict(f"Idempotency-Key {idempotency_key!r} was used for a different purge")
                if row is not None:
                    found = conn.execute(
                        f"SELECT {_RECORD_COLUMNS} FROM purges WHERE seq = ?", (int(row[0]),)
                    ).fetchone()
                    if found is not None:
                        return _record(found), False
            seq = self._last_seq + 1
            record = ClusterPurge(
                seq=seq,
                id=f"p-{seq}-{secrets.token_hex(4)}",
                kind=request.kind,
                values=request.values,
                soft=request.soft,
                created_at=self._clock(),
                site=request.site,
            )
            stored: Any = record.values if record.site is None else {"values": record.values, "site": record.site}
            conn.execute(
                f"INSERT INTO purges ({_RECORD_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?)",
                (seq, record.id, record.kind, json.dumps(stored), int(record.soft), record.created_at),
            )
            conn.execute("UPDATE meta SET value = ? WHERE name = 'last_seq'", (str(seq),))
            if idempotency_key is not None:
                conn.execute(
                    "INSERT OR REPLACE INTO idempotency (key, seq, hash) VALUES (?, ?, ?)",
                    (idempotency_key, seq, body_hash),
                )
            pruned = self._prune_in(conn, seq, record.created_at)
        self._last_seq = seq
        self._pruned_through = pruned
        return record, True

    def prune(self, now: float | None = None) -> int:
        """Apply retention now (``append`` does too); returns how many records were deleted."""
        with self._transaction() as conn:
            before = self._pruned_through
            pruned = self._prune_in(conn, self._last_seq, self._clock() if now is None else now)
        self._pruned_through = pruned
        return max(0, min(pruned, self._last_seq) - before)

    def _prune_in(self, conn: sqlite3.Connection, last_seq: int, now: float) -> int:
        cut = self._pruned_through
        if self.max_records is not None:
            cut = max(cut, last_seq - self.max_records)
        if self.max_age is not None:
            row = conn.execute("SELECT MAX(seq) FROM purges WHERE created_at < ?", (now - self.max_age,)).fetchone()
            if row[0] is not None:
                cut = max(cut, int(row[0]))
        if cut > self._pruned_through:
            conn.execute("DELETE FROM purges WHERE seq <= ?", (cut,))
            conn.execute("DELETE FROM deliveries WHERE seq <= ?", (cut,))
            conn.execute("DELETE FROM idempotency WHERE seq <= ?", (cut,))
            conn.execute("UPDATE meta SET value = ? WHERE name = 'pruned_through'", (str(cut),))
        return cut

    def records_after(self, seq: int, limit: int = 1000) -> list[ClusterPurge]:
        """Records with a sequence above ``seq``, oldest first, at most ``limit``."""
        return self.records_between(seq, self._last_seq, limit)

    def records_between(self, after: int, upto: int, limit: int = 1000) -> list[ClusterPurge]:
        """Records with ``after < seq <= upto``, oldest first, at most ``limit``."""
        with self._lock:
            rows = self._conn.execute(
                f"SELECT {_RECORD_COLUMNS} FROM purges WHERE seq > ? AND seq <= ? ORDER BY seq LIMIT ?",
                (after, upto, max(0, limit)),
            ).fetchall()
        return [_record(row) for row in rows]

    def page(self, after: int, limit: int = 1000) -> LogPage:
        """What an edge that applied everything through ``after`` needs next.

        ``truncated``: records right after ``after`` were deleted by retention, so the edge must
        treat everything it stored as purged (then apply ``records``).  ``more``: ask again with
        ``after`` = the last record's sequence.
        """
        with self._lock:
            records = self.records_after(after, limit)
            latest, pruned, oldest = self._last_seq, self._pruned_through, self.oldest_seq
        more = bool(records) and records[-1].seq < latest
        return LogPage(records, latest, oldest, after < pruned, more, self.log_id)

    def get(self, purge_id: str) -> ClusterPurge | None:
        with self._lock:
            row = self._conn.execute(f"SELECT {_RECORD_COLUMNS} FROM purges WHERE id = ?", (purge_id,)).fetchone()
        return None if row is None else _record(row)

    def get_seq(self, seq: int) -> ClusterPurge | None:
        with self._lock:
            row = self._conn.execute(f"SELECT {_RECORD_COLUMNS} FROM purges WHERE seq = ?", (seq,)).fetchone()
        return None if row is None else _record(row)

    def recent(self, limit: int = 100) -> list[ClusterPurge]:
        """The newest records, newest first."""
        with self._lock:
            rows = self._conn.execute(
                f"SELECT {_RECORD_COLUMNS} FROM purges ORDER BY seq DESC LIMIT ?", (max(0, limit),)
            ).fetchall()
        return [_record(row) for row in rows]

    # -- per-edge progress -----------------------------------------------------------------------

    def ensure_edges(self, names: Iterable[str]) -> dict[str, int]:
        """Every edge's watermark; an edge seen for the first time starts at the latest sequence.

        Why not 0: an edge that joins has nothing to do with purges logged before it joined (its
        own startup catch-up, from the sequence it keeps on disk, covers any it did see).
        """
        now = self._clock()
        with self._transaction() as conn:
            for name in names:
                conn.execute(
                    "INSERT INTO edges (name, applied_through, updated_at) VALUES (?, ?, ?)"
                    " ON CONFLICT(name) DO NOTHING",
                    (name, self._last_seq, now),
                )
            rows = conn.execute("SELECT name, applied_through FROM edges").fetchall()
        return {str(name): int(seq) for name, seq in rows}

    def edge_progress(self) -> dict[str, int]:
        with self._lock:
            rows = self._conn.execute("SELECT name, applied_through FROM edges").fetchall()
        return {str(name): int(seq) for name, seq in rows}

    def record_deliveries(self, deliveries: Sequence[Delivery], progress: Mapping[str, int] | None = None) -> None:
        """Store delivery outcomes (in order: a later one for the same record and edge wins) and watermarks.

        Watermarks only move forward.  Rows for records already deleted by retention are dropped.
        """
        now = self._clock()
        with self._transaction() as conn:
            conn.executemany(
                f"INSERT INTO deliveries ({_DELIVERY_COLUMNS}) SELECT ?, ?, ?, ?, ?, ?, ? WHERE ? > ?"
                " ON CONFLICT(seq, edge) DO UPDATE SET status = excluded.status, affected = excluded.affected,"
                " error = excluded.error, at = excluded.at, ms = excluded.ms, attempts = attempts + 1",
                [
                    (d.seq, d.edge, d.status, d.affected, d.error, d.at, d.ms, d.seq, self._pruned_through)
                    for d in deliveries
                ],
            )
            for name, seq in (progress or {}).items():
                conn.execute(
                    "INSERT INTO edges (name, applied_through, updated_at) VALUES (?, ?, ?) ON CONFLICT(name)"
                    " DO UPDATE SET applied_through = MAX(applied_through, excluded.applied_through),"
                    " updated_at = excluded.updated_at",
                    (name, seq, now),
                )

    def deliveries(self, first_seq: int, last_seq: int) -> dict[int, dict[str, Delivery]]:
        """Delivery rows for records ``first_seq..last_seq``: ``{seq: {edge: Delivery}}``."""
        with self._lock:
            rows = self._conn.execute(
                f"SELECT {_DELIVERY_COLUMNS} FROM deliveries WHERE seq BETWEEN ? AND ?", (first_seq, last_seq)
            ).fetchall()
        result: dict[int, dict[str, Delivery]] = {}
        for row in rows:
            delivery = _delivery(row)
            result.setdefault(delivery.seq, {})[delivery.edge] = delivery
        return result

    def statuses(self, seq: int, edges: Iterable[str]) -> dict[str, EdgeStatus]:
        """Where record ``seq`` stands on each of ``edges`` (``pending`` for an edge never seen)."""
        with self._lock:
            rows = self.deliveries(seq, seq).get(seq, {})
            progress = self.edge_progress()
        return {name: edge_status(seq, rows.get(name), progress.get(name, 0)) for name in edges}
