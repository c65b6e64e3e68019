"""The cluster purge log as one interface with two homes: a SQLite file beside one router (the
embedded default) or a Redis stream any number of routers and every edge share.

The contract both keep (``tests/integration/test_purge_log_contract.py`` runs one suite on both):

- ``append`` gives each purge the next sequence — contiguous, never reused — and an id, durably
  before it returns; with an idempotency key, a second append with the same key returns the first
  purge and ``created = False``;
- ``page(after)`` returns the records after a sequence in order, and ``truncated`` when retention
  deleted records right after it (the reader must then treat everything it stored as purged);
- ``acknowledge(edge, seq)`` moves an edge's watermark forward only; ``progress`` reads them all;
  per-purge delivery details (affected objects, milliseconds from purge to effect) ride along;
- ``get`` finds a record by id or by sequence; ``recent`` lists the newest first;
- ``prune`` applies retention (age and count) to a prefix of the log.

Errors reaching the backend raise :class:`PurgeLogUnavailable`, which the HTTP side answers with
``503`` — a purge is never reported as logged when it was not.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from pathlib import Path
from typing import Protocol

from edge.controlplane.log import DB_NAME, ClusterPurge, ClusterPurgeLog, Delivery, LogPage
from edge.controlplane.models import PurgeRequest
from edge.controlplane.redisurl import PurgeLogUrl, parse_purge_log_url

__all__ = ["PurgeLog", "PurgeLogUnavailable", "SqlitePurgeLog", "default_purge_log_url", "open_purge_log"]


class PurgeLogUnavailable(Exception):
    """The log's backend cannot be reached or written; nothing was logged."""


class PurgeLog(Protocol):
    """What routers and edges need of the purge log (see the module docstring for the contract)."""

    url: PurgeLogUrl

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    async def log_id(self) -> str: ...

    async def append(self, request: PurgeRequest, idempotency_key: str | None = None) -> tuple[ClusterPurge, bool]: ...

    async def latest_seq(self) -> int: ...

    async def oldest_seq(self) -> int | None: ...

    async def page(self, after: int, limit: int) -> LogPage: ...

    async def get(self, purge_id: str) -> ClusterPurge | None: ...

    async def recent(self, limit: int) -> list[ClusterPurge]: ...

    async def acknowledge(self, edge: str, seq: int, affected: int | None = None, ms: float | None = None) -> None: ...

    async def progress(self) -> dict[str, int]: ...

    async def deliveries(self, first_seq: int, last_seq: int) -> dict[int, dict[str, Delivery]]: ...

    async def prune(self, now: float | None = None) -> int: ...


def default_purge_log_url(state_dir: Path) -> str:
    """Today's embedded log: ``controlplane.sqlite`` in the router's state directory."""
    return f"sqlite:///{(state_dir / DB_NAME).resolve()}"


class SqlitePurgeLog:
    """The embedded log (:class:`ClusterPurgeLog`, one router) behind the async interface."""

    def __init__(self, url: PurgeLogUrl, *, max_records: int | None, max_age: float | None) -> None:
        assert url.path is not None
        self.url = url
        self.max_records = max_records
        self.max_age = max_age
        self._log: ClusterPurgeLog | None = None

    @property
    def log(self) -> ClusterPurgeLog:
        if self._log is None:
            raise PurgeLogUnavailable("the purge log is not open")
        return self._log

    async def start(self) -> None:
        path = self.url.path
        assert path is not None
        self._log = await asyncio.to_thread(
            ClusterPurgeLog, path.parent, max_records=self.max_records, max_age=self.max_age, db_name=path.name
        )

    async def close(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None

    async def log_id(self) -> str:
        return self.log.log_id

    async def append(self, request: PurgeRequest, idempotency_key: str | None = None) -> tuple[ClusterPurge, bool]:
        try:
            return await asyncio.to_thread(self.log.append_once, request, idempotency_key)
        except sqlite3.Error as exc:
            raise PurgeLogUnavailable(f"cannot write the purge log: {exc}") from exc

    async def latest_seq(self) -> int:
        return self.log.latest_seq

    async def oldest_seq(self) -> int | None:
        return self.log.oldest_seq

    async def page(self, after: int, limit: int) -> LogPage:
        return await asyncio.to_thread(self.log.page, after, limit)

    async def get(self, purge_id: str) -> ClusterPurge | None:
        def lookup() -> ClusterPurge | None:
            record = self.log.get(purge_id)
            if record is None and purge_id.isascii() and purge_id.isdigit() and len(purge_id) <= 18:
                record = self.log.get_seq(int(purge_id))
            return record

        return await asyncio.to_thread(lookup)

    async def recent(self, limit: int) -> list[ClusterPurge]:
        return await asyncio.to_thread(self.log.recent, limit)

    async def acknowledge(self, edge: str, seq: int, affected: int | None = None, ms: float | None = None) -> None:
        delivery = Delivery(seq, edge, "applied", affected, None, time.time(), ms)
        await asyncio.to_thread(self.log.record_deliveries, [delivery], {edge: seq})

    async def progress(self) -> dict[str, int]:
        return await asyncio.to_thread(self.log.edge_progress)

    async def deliveries(self, first_seq: int, last_seq: int) -> dict[int, dict[str, Delivery]]:
        return await asyncio.to_thread(self.log.deliveries, first_seq, last_seq)

    async def prune(self, now: float | None = None) -> int:
        return await asyncio.to_thread(self.log.prune, now)


def open_purge_log(url: str, *, max_records: int | None = 100_000, max_age: float | None = None) -> PurgeLog:
    """The log a URL names (not started: call ``start``).  ``ValueError`` for a bad URL."""
    target = parse_purge_log_url(url)
    if target.kind == "sqlite":
        return SqlitePurgeLog(target, max_records=max_records, max_age=max_age)
    from edge.controlplane.redislog import RedisPurgeLog  # only deployments with Redis import its client

    return RedisPurgeLog(target, max_records=max_records, max_age=max_age)
