"""Fills shared across an edge's workers, as they are written.

Within a worker, requests for one key share a :class:`~edge.cache.coalesce.Fill`.  Across workers
the worker that fills a key holds the key's record lock (``KeyLocks``); another worker that wants
the key *follows* that fill instead of waiting for its end:

* the owner, once the body has started going to its temp file in the shared disk tier, announces
  the fill in ``<cache_dir>/inflight/<hash>.json`` (the response head, the variant it stores, the
  temp file's path) and withdraws the record when the fill ends;
* a follower reads the record, opens the temp file and feeds what it reads into its own fill, so
  its clients receive the body as it is written — a 1 GiB object's first byte does not wait for
  its last.  The file keeps growing while the owner writes, and stays readable when it is renamed
  into place.  The end is known when the owner lets go of the lock: the published object must then
  have exactly the size and checksum of what was read, otherwise (the owner failed, died, or a purge
  removed it) the follower's response is cut — never passed off as complete.

Small bodies never reach the temp file before their commit (the disk writer buffers 256 KiB), so
their followers simply wait for the lock and read the stored object, as before.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import enum
import hashlib
import json
import os
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge.cache.coalesce import Fill
from edge.cache.context import CacheContext
from edge.cache.outcomes import Shared
from edge.errors import EdgeError, OriginBodyBroken
from edge.http import parts, vary
from edge.http.headers import HeaderList
from edge.store.base import BodyChecksum, StoredMeta
from edge.store.disk import pid_alive

POLL_S = 0.02
READ_BYTES = 256 * 1024


class Followed(enum.Enum):
    STREAMED = "streamed"
    """The fill was answered from another worker's fill (finished or failed)."""
    RELEASED = "released"
    """The other worker finished before anything could be followed: the lock is ours now."""
    TIMED_OUT = "timed-out"
    """``cross_worker_wait`` passed: fetch without the lock."""


@dataclass(frozen=True, slots=True)
class Record:
    token: str
    pid: int
    path: str
    key: str
    variant: str
    status: int
    reason: str
    headers: tuple[tuple[str, str], ...]
    vary: tuple[str, ...]
    secondary: tuple[tuple[str, str | None], ...]
    started_at: float
    start_seq: int
    detail: str | None

    def to_json(self) -> bytes:
        return json.dumps(dataclasses.asdict(self)).encode()

    @classmethod
    def from_json(cls, data: bytes) -> Record:
        raw: dict[str, Any] = json.loads(data)
        return cls(
            token=str(raw["token"]), pid=int(raw["pid"]), path=str(raw["path"]), key=str(raw["key"]),
            variant=str(raw["variant"]), status=int(raw["status"]), reason=str(raw["reason"]),
            headers=tuple((str(n), str(v)) for n, v in raw["headers"]), vary=tuple(str(f) for f in raw["vary"]),
            secondary=tuple((str(n), None if v is None else str(v)) for n, v in raw["secondary"]),
            started_at=float(raw["started_at"]), start_seq=int(raw["start_seq"]),
            detail=None if raw["detail"] is None else str(raw["detail"]),
        )  # fmt: skip


def record_path(ctx: CacheContext, lock_name: str) -> Path:
    digest = hashlib.sha256(lock_name.encode("utf-8", "surrogatepass")).hexdigest()[:40]
    return Path(ctx.settings.cache_dir) / "inflight" / f"{digest}.json"


class Announcement:
    """The owner's side: publish the record once the temp file exists, withdraw it at the end."""

    def __init__(self, ctx: CacheContext, lock_name: str, fill: Fill, meta: StoredMeta, shared: Shared) -> None:
        self.ctx = ctx
        self.path = record_path(ctx, lock_name)
        self.fill = fill
        self.meta = meta
        self.shared = shared
        self.token: str | None = None

    def publish(self, temp_path: str) -> None:
        if self.token is not None:
            return
        token = secrets.token_hex(8)
        meta, fill = self.meta, self.fill
        record = Record(
            token=token, pid=os.getpid(), path=temp_path, key=meta.key, variant=meta.variant,
            status=self.shared.status, reason=self.shared.reason, headers=self.shared.headers, vary=meta.vary,
            secondary=meta.secondary, started_at=fill.started_at, start_seq=fill.start_seq, detail=fill.detail,
        )  # fmt: skip
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            temp = self.path.with_name(f"{self.path.name}.{token}.tmp")
            temp.write_bytes(record.to_json())
            os.replace(temp, self.path)
        except OSError:
            return  # followers then wait for the lock, as without a record
        self.token = token

    def withdraw(self) -> None:
        if self.token is None:
            return
        with contextlib.suppress(OSError, ValueError, KeyError):
            if Record.from_json(self.path.read_bytes()).token == self.token:
                self.path.unlink()
        self.token = None


def clear_stale(ctx: CacheContext, lock_name: str) -> None:
    """Whoever holds the lock owns the record: one still there was left by a worker that died."""
    with contextlib.suppress(OSError):
        record_path(ctx, lock_name).unlink()


def sweep(cache_dir: Path) -> int:
    """Remove the records of fills whose worker is gone (killed mid-fill); returns how many."""
    removed = 0
    for path in (cache_dir / "inflight").glob("*.json"):
        record = _read_record(path)
        if record is None or not pid_alive(record.pid):
            with contextlib.suppress(OSError):
                path.unlink()
                removed += 1
    return removed


def _read_record(path: Path) -> Record | None:
    try:
        return Record.from_json(path.read_bytes())
    except (OSError, ValueError, KeyError, TypeError):
        return None


async def follow(ctx: CacheContext, fill: Fill, lock_name: str, received: HeaderList) -> Followed:
    """Wait for the other worker's fill of ``lock_name``: follow it as soon as it is announced."""
    assert ctx.key_locks is not None
    loop = asyncio.get_running_loop()
    deadline = loop.time() + ctx.cache_settings.cross_worker_wait
    path = record_path(ctx, lock_name)
    while True:
        if ctx.key_locks.try_acquire(lock_name):
            return Followed.RELEASED
        record = _read_record(path)
        if record is not None and pid_alive(record.pid):
            if not _usable(ctx, record, received):
                return Followed.TIMED_OUT  # another variant, or purged since: no use waiting for it
            try:
                fd = os.open(record.path, os.O_RDONLY | os.O_CLOEXEC)
            except OSError:
                fd = None  # published or dropped a moment ago: the lock says which
            if fd is not None:
                try:
                    await _stream(ctx, fill, lock_name, record, fd)
                finally:
                    os.close(fd)
                return Followed.STREAMED
        if loop.time() > deadline:
            return Followed.TIMED_OUT
        await asyncio.sleep(POLL_S)


def _usable(ctx: CacheContext, record: Record, received: HeaderList) -> bool:
    """The announced response answers this request: its variant, and no purge since it started."""
    if not vary.matches(record.vary, record.secondary, received):
        return False
    return not ctx.purger.view.any_since(record.start_seq, record.started_at, record.key)


async def _stream(ctx: CacheContext, fill: Fill, lock_name: str, record: Record, fd: int) -> None:
    assert ctx.key_locks is not None
    fill.detail = record.detail
    fill.followed = True
    fill.set_outcome(Shared(record.status, record.reason, record.headers))
    checksum = BodyChecksum()
    held: bytes | None = None
    # The owner writes in batches of up to 256 KiB and has its own origin timeouts: while it holds
    # the lock and its file is linked, a long pause is its origin's, not a dead fill.
    patience = ctx.settings.upstream.read_timeout
    stall_limit = 4 * patience
    last_progress = time.monotonic()
    try:
        while True:
            chunk = await asyncio.to_thread(os.pread, fd, READ_BYTES, checksum.size)
            if chunk:
                if held is not None:
                    fill.append(held)
                    await fill.wait_for_room(patience)
                held = chunk
                checksum.update(chunk)
                last_progress = time.monotonic()
                continue
            if ctx.key_locks.try_acquire(lock_name):
                ctx.key_locks.release(lock_name)
                # The owner is done; one more read catches its last write before the check.
                tail = await asyncio.to_thread(os.pread, fd, READ_BYTES, checksum.size)
                if tail:
                    if held is not None:
                        fill.append(held)
                    held = tail
                    checksum.update(tail)
                    continue
                if await _published(ctx, record, checksum):
                    break
                raise OriginBodyBroken("the other worker's fill of this URL did not complete")
            if os.fstat(fd).st_nlink == 0:
                raise OriginBodyBroken("the other worker's fill of this URL stopped storing it")
            if time.monotonic() - last_progress > stall_limit:
                raise OriginBodyBroken("the other worker's fill of this URL stalled")
            await asyncio.sleep(POLL_S)
    except EdgeError as exc:
        if held is not None:
            fill.append(held)
        fill.fail(exc)
        return
    if held is not None:
        fill.append(held)
    fill.finish()


async def _published(ctx: CacheContext, record: Record, read: BodyChecksum) -> bool:
    """Is what was read exactly the object the owner published?"""
    disk = ctx.store.disk
    if disk is None:
        return False
    if parts.is_part(record.variant):
        obj = await disk.get(record.key, record.variant)
        return obj is not None and (obj.meta.size, obj.meta.checksum) == (read.size, read.hexdigest())
    for meta in await disk.variants(record.key):
        if meta.variant == record.variant:
            return (meta.size, meta.checksum) == (read.size, read.hexdigest())
    return False
