"""The purge log on a Redis stream: any number of routers append to it, every edge reads it.

Keys (``{edgecache}:purge:`` by default: one hash tag, so a Redis Cluster keeps them on one node):

    …log        the stream; each entry: seq, id, kind, values (JSON), soft, created_at, site
    …seq        the last sequence handed out (INCR: contiguous, never reused)
    …index      sorted set seq → stream id (find a record, or where to resume, by sequence)
    …log_id     a random id set once; a wiped Redis gets a new one, and edges notice
    …acks       hash edge → the highest sequence it applied (only ever raised)
    …d:<seq>    hash edge → JSON delivery details of one purge (expire with retention)
    …idem:<key> the stream id a POST's idempotency key logged (expires with retention)

``append`` is one Lua script: check the idempotency key, take the next sequence, ``XADD`` (with
an approximate ``MAXLEN`` cap), index it — atomically, so two routers never share a sequence or
log a retried POST twice.  Retention by age is ``XTRIM MINID`` (stream ids are milliseconds);
a reader whose next record was trimmed sees ``truncated`` and purges everything it stored.
Durability is Redis's: run it with ``appendonly yes`` (``appendfsync always`` to lose nothing
acknowledged even on a power cut; ``everysec`` loses at most a second of purges then).
"""

from __future__ import annotations

import json
import secrets
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar, cast

import redis.exceptions

from edge.controlplane.log import ClusterPurge, Delivery, IdempotencyConflict, LogPage, request_hash
from edge.controlplane.models import PurgeKind, PurgeRequest
from edge.controlplane.purgelog import PurgeLogUnavailable
from edge.controlplane.redisurl import PurgeLogUrl, connect

__all__ = ["DEFAULT_PREFIX", "IdempotencyConflict", "RedisPurgeLog", "StreamEntry", "request_hash"]

DEFAULT_PREFIX = "{edgecache}:purge:"
DEFAULT_DETAIL_TTL_S = 7 * 86400  # delivery details and idempotency keys without an age retention
PAGE_LIMIT = 10_000
PRUNE_DETAILS_BATCH = 10_000  # delivery-detail keys deleted per prune at most

T = TypeVar("T")
StreamEntry = tuple[str, ClusterPurge]  # (stream id, record)

_APPEND = """
local stream, seqkey, index, idem, logid = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
if redis.call('EXISTS', logid) == 0 then redis.call('SET', logid, ARGV[10]) end
if ARGV[1] == '1' then
  local seen = redis.call('GET', idem)
  if seen then
    local sep = string.find(seen, '|', 1, true)
    if sep and string.sub(seen, sep + 1) ~= ARGV[11] then return {2, string.sub(seen, 1, sep - 1)} end
    return {0, sep and string.sub(seen, 1, sep - 1) or seen}
  end
end
local seq = redis.call('INCR', seqkey)
local fields = {'seq', seq, 'id', 'p-' .. seq .. '-' .. ARGV[3], 'kind', ARGV[4], 'values', ARGV[5],
                'soft', ARGV[6], 'created_at', ARGV[7], 'site', ARGV[8]}
local sid
if ARGV[2] ~= '0' then
  sid = redis.call('XADD', stream, 'MAXLEN', '~', ARGV[2], '*', unpack(fields))
else
  sid = redis.call('XADD', stream, '*', unpack(fields))
end
redis.call('ZADD', index, seq, sid)
if ARGV[1] == '1' then redis.call('SET', idem, sid .. '|' .. ARGV[11], 'EX', ARGV[9]) end
return {1, sid}
"""

_ACK = """
local current = tonumber(redis.call('HGET', KEYS[1], ARGV[1]) or '0')
if tonumber(ARGV[2]) > current then redis.call('HSET', KEYS[1], ARGV[1], ARGV[2]) end
if ARGV[3] ~= '' then
  redis.call('HSET', KEYS[2], ARGV[1], ARGV[3])
  redis.call('EXPIRE', KEYS[2], ARGV[4])
end
return 1
"""


def _record(fields: dict[str, str]) -> ClusterPurge:
    """A stream entry as a record; one that cannot be read (written by something else) becomes an
    empty purge with its sequence, so readers pass over it instead of stopping at it."""
    try:
        return _parse(fields)
    except (KeyError, ValueError, TypeError):
        seq = fields.get("seq", "")
        if not seq.isdigit():
            raise ValueError(f"a purge-log entry without a sequence: {str(fields)[:200]}") from None
        return ClusterPurge(int(seq), f"unreadable-{seq}", "urls", (), False, 0.0)


def _parse(fields: dict[str, str]) -> ClusterPurge:
    site = fields.get("site") or None
    return ClusterPurge(
        seq=int(fields["seq"]),
        id=fields["id"],
        kind=cast(PurgeKind, fields["kind"]),
        values=tuple(json.loads(fields["values"])),
        soft=fields.get("soft") == "1",
        created_at=float(fields["created_at"]),
        site=site,
    )


class RedisPurgeLog:
    """:class:`edge.controlplane.purgelog.PurgeLog` on a Redis stream (module docstring)."""

    def __init__(
        self, url: PurgeLogUrl, *, max_records: int | None = 100_000, max_age: float | None = None,
        prefix: str = DEFAULT_PREFIX,
    ) -> None:  # fmt: skip
        self.url = url
        self.max_records = max_records
        self.max_age = max_age
        self.prefix = prefix
        self.stream = f"{prefix}log"
        self._seq = f"{prefix}seq"
        self._index = f"{prefix}index"
        self._log_id = f"{prefix}log_id"
        self._acks = f"{prefix}acks"
        self._details_pruned = f"{prefix}details_pruned"
        self._client: Any = None
        self._blocking: Any = None
        self._append: Any = None
        self._ack: Any = None

    # -- lifecycle -------------------------------------------------------------------------------
    async def start(self) -> None:
        """Make the client; connections open on first use, so a router starts with Redis down."""
        client = connect(self.url)
        self._client = client
        self._blocking = None  # XREAD BLOCK needs a longer socket timeout: its own client, on demand
        self._append = client.register_script(_APPEND)
        self._ack = client.register_script(_ACK)

    async def close(self) -> None:
        if self._client is not None:
            client, self._client = self._client, None
            await client.aclose()
        if self._blocking is not None:
            blocking, self._blocking = self._blocking, None
            await blocking.aclose()

    @property
    def client(self) -> Any:
        if self._client is None:
            raise PurgeLogUnavailable("the purge log is not open")
        return self._client

    async def _call(self, what: str, operation: Callable[[], Awaitable[T]]) -> T:
        try:
            return await operation()
        except (TimeoutError, redis.exceptions.RedisError, OSError) as exc:
            detail = (str(exc) or type(exc).__name__)[:300]
            raise PurgeLogUnavailable(f"Redis purge log at {self.url.shown} unreachable ({what}): {detail}") from exc

    # -- the log ---------------------------------------------------------------------------------
    async def log_id(self) -> str:
        async def read() -> str:
            await self.client.set(self._log_id, uuid.uuid4().hex, nx=True)
            return str(await self.client.get(self._log_id))

        return await self._call("log id", read)

    async def append(self, request: PurgeRequest, idempotency_key: str | None = None) -> tuple[ClusterPurge, bool]:
        created_at = time.time()
        idem = f"{self.prefix}idem:{idempotency_key}" if idempotency_key is not None else f"{self.prefix}idem:-"
        body_hash = request_hash(request)
        ttl = int(self.max_age) if self.max_age else DEFAULT_DETAIL_TTL_S
        args = [
            "1" if idempotency_key is not None else "0", str(self.max_records or 0), secrets.token_hex(4),
            request.kind, json.dumps(list(request.values)), "1" if request.soft else "0", repr(created_at),
            request.site or "", str(max(1, ttl)), uuid.uuid4().hex, body_hash,
        ]  # fmt: skip

        async def run() -> tuple[ClusterPurge, bool]:
            created, sid = await self._append(keys=[self.stream, self._seq, self._index, idem, self._log_id], args=args)
            if int(created) == 2:
                raise IdempotencyConflict(f"Idempotency-Key {idempotency_key!r} was used for a different purge")
            entries = await self.client.xrange(self.stream, sid, sid)
            if not entries:  # a retried key whose purge retention already dropped: log it anew
                await self.client.delete(idem)
                return await run()
            return _record(entries[0][1]), bool(int(created))

        return await self._call("append", run)

    async def entry_at(self, stream_id: str) -> ClusterPurge | None:
        """The record at exactly ``stream_id``, if the stream still holds it."""

        async def read() -> ClusterPurge | None:
            entries = await self.client.xrange(self.stream, stream_id, stream_id)
            return _record(entries[0][1]) if entries else None

        return await self._call("read", read)

    async def latest_seq(self) -> int:
        return await self._call("latest", self._latest)

    async def _latest(self) -> int:
        value = await self.client.get(self._seq)
        return int(value) if value is not None else 0

    async def oldest_seq(self) -> int | None:
        return await self._call("oldest", self._oldest)

    async def _oldest(self) -> int | None:
        first = await self.client.xrange(self.stream, "-", "+", count=1)
        return int(first[0][1]["seq"]) if first else None

    async def page(self, after: int, limit: int) -> LogPage:
        async def read() -> LogPage:
            latest = await self._latest()
            oldest = await self._oldest()
            pruned_through = oldest - 1 if oldest is not None else latest
            entries = await self._entries_after_seq(after, max(1, min(limit, PAGE_LIMIT)))
            records = [record for _, record in entries]
            more = bool(records) and records[-1].seq < latest
            return LogPage(records, latest, oldest, after < pruned_through, more, await self.log_id())

        return await self._call("page", read)

    async def _entries_after_seq(self, after: int, count: int) -> list[StreamEntry]:
        start = await self.client.zrangebyscore(self._index, f"({after}", "+inf", start=0, num=1)
        if not start:
            return []
        entries = await self.client.xrange(self.stream, start[0], "+", count=count)
        return [(sid, _record(fields)) for sid, fields in entries if int(fields["seq"]) > after]

    async def entries_after_seq(self, after: int, count: int) -> list[StreamEntry]:
        """Stream entries of the records after sequence ``after`` (an edge resuming), oldest first."""
        return await self._call("read", lambda: self._entries_after_seq(after, count))

    async def id_of(self, seq: int) -> str | None:
        """The stream id the log's index gives sequence ``seq`` (None once trimmed, or never)."""

        async def read() -> str | None:
            found = await self.client.zrangebyscore(self._index, seq, seq, start=0, num=1)
            return str(found[0]) if found else None

        return await self._call("read", read)

    async def entries_after_id(self, stream_id: str, count: int) -> list[StreamEntry]:
        """Stream entries after ``stream_id`` (exclusive), oldest first, without waiting."""

        async def read() -> list[StreamEntry]:
            entries = await self.client.xrange(self.stream, f"({stream_id}", "+", count=count)
            return [(sid, _record(fields)) for sid, fields in entries]

        return await self._call("read", read)

    async def wait_after_id(self, stream_id: str, count: int, block_ms: int) -> list[StreamEntry]:
        """``XREAD BLOCK``: entries after ``stream_id``, waiting up to ``block_ms`` for the first."""

        async def read() -> list[StreamEntry]:
            if self._blocking is None:
                self._blocking = connect(self.url, blocking=True)
            answer = await self._blocking.xread({self.stream: stream_id}, count=count, block=block_ms)
            if not answer:
                return []
            return [(sid, _record(fields)) for sid, fields in answer[0][1]]

        return await self._call("read", read)

    async def get(self, purge_id: str) -> ClusterPurge | None:
        if purge_id.startswith("p-") and purge_id[2:].split("-", 1)[0].isdigit():
            seq = int(purge_id[2:].split("-", 1)[0])
        elif purge_id.isascii() and purge_id.isdigit() and len(purge_id) <= 18:
            seq, purge_id = int(purge_id), ""
        else:
            return None

        async def read() -> ClusterPurge | None:
            found = await self.client.zrangebyscore(self._index, seq, seq, start=0, num=1)
            if not found:
                return None
            entries = await self.client.xrange(self.stream, found[0], found[0])
            if not entries:
                return None
            record = _record(entries[0][1])
            return record if not purge_id or record.id == purge_id else None

        return await self._call("get", read)

    async def recent(self, limit: int) -> list[ClusterPurge]:
        async def read() -> list[ClusterPurge]:
            entries = await self.client.xrevrange(self.stream, "+", "-", count=max(0, limit))
            return [_record(fields) for _, fields in entries]

        return await self._call("recent", read) if limit > 0 else []

    # -- acknowledgements ------------------------------------------------------------------------
    async def acknowledge(self, edge: str, seq: int, affected: int | None = None, ms: float | None = None) -> None:
        detail = (json.dumps({"status": "applied", "affected": affected, "at": time.time(), "ms": ms})
                  if affected is not None or ms is not None else "")  # a watermark only: details kept
        ttl = int(self.max_age) if self.max_age else DEFAULT_DETAIL_TTL_S
        await self._call(
            "acknowledge",
            lambda: self._ack(keys=[self._acks, f"{self.prefix}d:{seq}"], args=[edge, str(seq), detail, str(ttl)]),
        )

    async def progress(self) -> dict[str, int]:
        async def read() -> dict[str, int]:
            return {str(name): int(seq) for name, seq in (await self.client.hgetall(self._acks)).items()}

        return await self._call("progress", read)

    async def deliveries(self, first_seq: int, last_seq: int) -> dict[int, dict[str, Delivery]]:
        seqs = list(range(max(1, first_seq), last_seq + 1))[-PAGE_LIMIT:]
        if not seqs:
            return {}

        async def read() -> dict[int, dict[str, Delivery]]:
            pipe = self.client.pipeline(transaction=False)
            for seq in seqs:
                pipe.hgetall(f"{self.prefix}d:{seq}")
            rows = await pipe.execute()
            result: dict[int, dict[str, Delivery]] = {}
            for seq, row in zip(seqs, rows, strict=True):
                for edge, text in row.items():
                    data = json.loads(text)
                    result.setdefault(seq, {})[edge] = Delivery(
                        seq, edge, data.get("status", "applied"), data.get("affected"), data.get("error"),
                        float(data.get("at") or 0.0), data.get("ms"),
                    )  # fmt: skip
            return result

        return await self._call("deliveries", read)

    async def prune(self, now: float | None = None) -> int:
        """Retention by count and age (``XTRIM MAXLEN``/``MINID``), the index kept to the stream."""

        async def run() -> int:
            trimmed = 0
            if self.max_records is not None:  # XADD trims approximately (whole nodes); here exactly
                trimmed += int(await self.client.xtrim(self.stream, maxlen=self.max_records, approximate=False))
            if self.max_age is not None:
                cutoff_ms = int(((now if now is not None else time.time()) - self.max_age) * 1000)
                minid = f"{max(0, cutoff_ms)}-0"
                trimmed += int(await self.client.xtrim(self.stream, minid=minid, approximate=False))
            oldest = await self._oldest()
            upper = f"({oldest}" if oldest is not None else "+inf"
            await self.client.zremrangebyscore(self._index, "-inf", upper)
            # Delivery details of trimmed records go too (memory follows the count retention).
            below = oldest if oldest is not None else await self._latest() + 1
            done = int(await self.client.get(self._details_pruned) or 0)
            if below - 1 > done:
                upto = min(below - 1, done + PRUNE_DETAILS_BATCH)
                await self.client.delete(*(f"{self.prefix}d:{seq}" for seq in range(done + 1, upto + 1)))
                await self.client.set(self._details_pruned, upto)
            return trimmed

        return await self._call("prune", run)
