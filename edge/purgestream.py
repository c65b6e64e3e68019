"""An edge following the shared purge log in Redis (``control_plane = "redis://…"``).

    start   → which log is this?  A different one than last time (a wiped or replaced Redis, or
              a switch from a router's log) means its sequences say nothing about what this
              edge applied: everything stored is purged (hard), and reading starts from 0
    replay  → every record after the last one applied (the position is kept in the edge's own
              purge log on disk); a record missing from the stream (trimmed by retention) means
              purges were lost: everything stored is purged, as the embedded catch-up does
    ready   → only now does ``/readyz`` turn ready (and stored objects are served again)
    follow  → ``XREAD BLOCK``: each new record applied within milliseconds, acknowledged to Redis
              with its affected count and its purge-to-effect time, so every router can report it
    lost    → Redis unreachable: the edge keeps serving, says so in ``/readyz`` and metrics, and
              reconnects with backoff; on return it replays what it missed before following again

Every worker of an edge reads the stream; the edge's purge log applies each record once (the
first worker to claim its sequence) and that worker acknowledges it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable
from typing import TypeVar

from edge.catchup import mark_caught_up
from edge.controlplane.log import ClusterPurge
from edge.controlplane.purgelog import PurgeLogUnavailable
from edge.controlplane.redislog import RedisPurgeLog, StreamEntry
from edge.controlplane.redisurl import parse_purge_log_url
from edge.runtime import EdgeRuntime
from edge.sites import purge_targets

__all__ = ["follow_purge_stream"]

log = logging.getLogger("edge.purgestream")

BATCH = 500
BLOCK_MS = 4000  # one XREAD waits this long for news (under the socket timeout), then asks again
BACKOFF_FIRST_S = 0.2
BACKOFF_MAX_S = 5.0
APPLY_GRACE_S = 30.0  # how long a stopping worker lets a purge it started finish
T = TypeVar("T")


class Diverged(Exception):
    """The log is not the history this worker followed (wiped, replaced, or rolled back)."""


class Follower:
    """One worker's reader of the purge stream (module docstring)."""

    def __init__(self, runtime: EdgeRuntime, purge_log: RedisPurgeLog) -> None:
        assert runtime.cache is not None
        self.runtime = runtime
        self.cache = runtime.cache
        self.log = purge_log
        self.log_id = ""
        self.seq = 0  # the last sequence this worker saw applied (by it or a sibling)
        self.position = ""  # its stream id ("" : unknown, find it by sequence)

    async def run(self) -> None:
        link = self.runtime.control_plane
        delay = BACKOFF_FIRST_S
        while True:
            try:
                link.set("connecting" if link.state != "unreachable" else "unreachable", link.last_error)
                await self.replay()
                if not self.runtime.ready.is_set():
                    mark_caught_up(self.runtime)
                    log.info("caught up with the purge log %s at sequence %d", self.log.url.shown, self.seq)
                elif link.state != "connected":
                    log.warning("purge log %s reachable again; caught up at sequence %d", self.log.url.shown, self.seq)
                link.set("connected")
                delay = BACKOFF_FIRST_S
                while True:
                    entries = await self.log.wait_after_id(self.position or "0-0", BATCH, BLOCK_MS)
                    if not entries and await self.log.log_id() != self.log_id:
                        raise Diverged("the purge log was replaced")
                    await self.apply(entries, live=True)
            except Diverged as exc:
                log.warning("purge log %s: %s; reading it again from this edge's position", self.log.url.shown, exc)
                await asyncio.sleep(delay)  # never a busy loop, whatever the log holds
                delay = min(delay * 2, BACKOFF_MAX_S)
            except PurgeLogUnavailable as exc:
                if link.state != "unreachable":
                    log.warning("%s; still serving, reconnecting", exc)
                link.set("unreachable", str(exc))
                if not self.runtime.ready.is_set():
                    self.runtime.not_ready_reason = f"catching up with the purge log: {exc}"
                await asyncio.sleep(delay)
                delay = min(delay * 2, BACKOFF_MAX_S)
            except Exception as exc:  # a local fault (disk, SQLite): never stop following for good
                log.exception("following the purge log failed; trying again")
                link.set("error", f"{type(exc).__name__}: {exc}"[:300])
                if not self.runtime.ready.is_set():
                    self.runtime.not_ready_reason = f"catching up with the purge log: {exc}"[:300]
                await asyncio.sleep(delay)
                delay = min(delay * 2, BACKOFF_MAX_S)

    async def replay(self) -> None:
        """Apply everything after this edge's position; purge everything when records were lost or
        the log is not the history this edge followed."""
        purge_log = self.cache.purger.log
        self.log_id = log_id = await self.log.log_id()
        seq, position, known = await purge_log.cluster_position()
        reason = ""
        if known != log_id and (seq > 0 or known):
            reason = f"it is not the log this edge followed ({known or 'a router'})"
        elif known == log_id and seq > 0:
            latest = await self.log.latest_seq()
            at_position = await self.log.entry_at(position) if position else None
            if latest < seq:
                reason = f"its last sequence {latest} is below the {seq} this edge applied (rolled back)"
            elif at_position is not None and at_position.seq != seq:
                reason = f"its record at {position} is sequence {at_position.seq}, not {seq}"
            elif position and at_position is None:
                # Rolled back past this edge's position, then written on (an older snapshot, a
                # failover that lost writes): the sequence is another record's now, or the records
                # after the position number again from below it.
                current = await self.log.id_of(seq)
                following = await self.log.entries_after_id(position, 1)
                if current is not None and current != position:
                    reason = f"its sequence {seq} is the record at {current}, not at {position} (rolled back)"
                elif following and following[0][1].seq <= seq:
                    reason = (f"its records after {position} restart at sequence {following[0][1].seq},"
                              f" not after the {seq} this edge applied (rolled back)")
        if reason:
            log.warning("purge log %s: %s: purging everything stored", self.log.url.shown, reason)
            await self._shielded(self.cache.purger.purge("all", [], False, f"new-log-{log_id[:12]}", None))
            await purge_log.reset_cluster(log_id, expected=(known, seq))
        elif known != log_id:
            await purge_log.reset_cluster(log_id, expected=(known, seq))
        self.seq, self.position, _ = await purge_log.cluster_position()
        while True:
            latest = await self.log.latest_seq()  # read first: a record appended meanwhile is no gap
            if self.position:
                entries = await self.log.entries_after_id(self.position, BATCH)
            else:
                entries = await self.log.entries_after_seq(self.seq, BATCH)
            if not entries:
                if latest > self.seq:  # records after ours are gone from the stream
                    await self._gap(latest, "")
                    continue
                break
            await self.apply(entries, live=False)
            if len(entries) < BATCH:
                break
        if self.seq > 0:  # re-sent after every (re)connection: an acknowledgement lost before is not lost
            await self.log.acknowledge(self.runtime.node_name, self.seq)

    async def apply(self, entries: list[StreamEntry], *, live: bool) -> None:
        last_applied: tuple[int, int | None, float | None] | None = None
        for stream_id, record in entries:
            if record.seq <= self.seq:
                if live or self.position:
                    raise Diverged(f"sequence {record.seq} came after {self.seq}")
                continue
            if record.seq > self.seq + 1:
                await self._gap(record.seq - 1, self.position)
            affected = await self._shielded(self._apply_one(stream_id, record))
            self.seq, self.position = record.seq, stream_id
            self.runtime.control_plane.applied_seq = record.seq
            if affected is None:
                continue  # a sibling worker applied and acknowledges it
            ms = round(max(0.0, time.time() - record.created_at) * 1000, 3)
            if live:
                await self.log.acknowledge(self.runtime.node_name, record.seq, affected, ms)
            else:
                last_applied = (record.seq, affected, ms)
        if last_applied is not None:  # a replay acknowledges its last record: the watermark covers the rest
            await self.log.acknowledge(self.runtime.node_name, *last_applied)

    @staticmethod
    async def _shielded(work: Awaitable[T]) -> T:
        """Run ``work`` to its end even if this worker is stopped meanwhile: a purge logged here but
        not published and applied would be skipped by every sibling as done."""
        task = asyncio.ensure_future(work)
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(task, APPLY_GRACE_S)
            raise

    async def _apply_one(self, stream_id: str, record: ClusterPurge) -> int | None:
        cache = self.cache
        try:
            kind, values = purge_targets(cache.sites, record.kind, list(record.values), record.site)
        except ValueError as exc:
            # One unusable record must not stop the edge forever: passed over as an empty purge.
            log.error("skipping unusable purge %s: %s", record.id, exc)
            kind, values = "urls", []
        return await cache.purger.purge_from_stream(kind, values, record.soft, record.id, record.seq, stream_id)  # type: ignore[arg-type]

    async def _gap(self, through: int, position: str) -> None:
        """Records up to ``through`` are missing: what they purged is unknown, so everything goes."""
        log.warning("purge records %d..%d were trimmed from %s before this edge read them: purging everything",
                    self.seq + 1, through, self.log.url.shown)  # fmt: skip
        affected = await self._shielded(self.cache.purger.purge_from_stream(
            "all", [], False, f"gap-{self.seq + 1}-{through}", through, position
        ))  # fmt: skip
        self.seq = through
        if affected is not None:
            await self.log.acknowledge(self.runtime.node_name, through, affected, None)


async def follow_purge_stream(runtime: EdgeRuntime, url: str) -> None:
    """Replay, then follow, the shared purge log until cancelled (the worker's life)."""
    purge_log = RedisPurgeLog(parse_purge_log_url(url))
    await purge_log.start()
    try:
        await Follower(runtime, purge_log).run()
    finally:
        await purge_log.close()
