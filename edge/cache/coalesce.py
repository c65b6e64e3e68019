"""Collapsed forwarding: concurrent requests for one object share one origin fetch.

A :class:`Fill` is the shared state of one in-flight origin response: its head (status and
headers) once known, and its body as a list of chunks that grows as the origin sends it.  Every
client of the fill — the one that started it included — reads the chunks with its own cursor, so
each receives the body *as it arrives*, and a client that disconnects does not stop the fill
(the others and the store still need it).  Chunks every reader has passed are dropped, so memory
is bounded by the slowest reader's lag, not by the body size; once anything was dropped the fill
stops accepting new readers (they would miss the start) and later requests go their own way.

The fill's producer (``edge.cache.fill``) decides what the readers get, as a typed
:data:`~edge.cache.outcomes.FillOutcome`: a response that may not be stored (``private``,
``Set-Cookie``, ``no-store``...) must not be handed to other clients either, so waiting readers
are released to ask the origin themselves.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import os
from collections.abc import AsyncGenerator, Hashable, Sequence

from edge.cache.outcomes import FillOutcome, Refreshed, Unshared


class FillAborted(Exception):
    """The origin body broke (or the fill was cancelled) after readers started; they must break too."""


class Fill:
    """One origin response being received, readable by many clients at their own pace."""

    def __init__(
        self, key: Hashable, max_unread_bytes: int = 64 * 1024 * 1024, keep_bytes: int = 8 * 1024 * 1024
    ) -> None:
        self.key = key
        self.max_unread_bytes = max_unread_bytes
        self.keep_bytes = keep_bytes  # below this the whole body is kept, so latecomers can still join
        self.outcome: FillOutcome | None = None
        self.head_ready = asyncio.Event()
        self.failure: BaseException | None = None
        self.done = False
        self.readers = 0
        self.waiters = 0
        self.start_seq = 0  # the purge sequence when the fill started (see edge.purge)
        self.started_at = 0.0
        self.detail: str | None = None  # Cache-Status detail of what the fill did (e.g. "compressed")
        self.followed = False  # read from another worker's fill (edge.cache.crossfill): collapsed
        self.received: Sequence[tuple[str, str]] = ()  # the fields of the request that started it
        self.origin_ms: float | None = None  # requests that joined (collapsed) rather than started the fill
        self.origin_label: str | None = None  # the origin that answered (its URL)
        self.origin_name: str | None = None
        self.via_peer: str | None = None  # the peer that answered (edge.cluster): Cache-Status fwd=peer
        self.stores = True  # False: a non-owner relays its peer's answer and keeps no copy
        self._chunks: list[bytes] = []
        self._buffered = 0  # bytes held in _chunks
        self._base = 0  # index of _chunks[0] in the full chunk sequence
        self._cursors: dict[int, int] = {}
        self._next_reader = 0
        self._changed = asyncio.Event()
        self._finished = asyncio.Event()
        self._room = asyncio.Event()
        self._producer_waiting = False
        self._dropped: set[int] = set()  # readers detached for being too slow

    # -- producer side ---------------------------------------------------------------------
    def set_outcome(self, outcome: FillOutcome) -> None:
        self.outcome = outcome
        self.head_ready.set()

    def append(self, chunk: bytes) -> None:
        if chunk:
            self._chunks.append(chunk)
            self._buffered += len(chunk)
            self._trim()
            if not self._cursors and self._buffered > self.max_unread_bytes:
                # Nobody is reading (every client left) and the body is large: keep filling the
                # store, but stop holding it for readers that might still join.
                self._base += len(self._chunks)
                self._chunks.clear()
                self._buffered = 0
            self._wake()

    def finish(self) -> None:
        self.done = True
        self._finished.set()
        self._wake()

    def fail(self, exc: BaseException) -> None:
        self.failure = exc
        if not self.head_ready.is_set():
            self.head_ready.set()
        self._finished.set()
        self._wake()

    async def wait_done(self) -> None:
        """Until the body is complete (stored) or the fill failed."""
        await self._finished.wait()

    async def wait_for_room(self, patience: float) -> None:
        """Backpressure: hold the producer while the slowest reader lags more than ``max_unread_bytes``.

        The origin is then read no faster than clients take the body, so memory stays bounded.  A
        reader that makes no progress for ``patience`` seconds is detached (its client connection
        breaks) rather than stalling everyone else.
        """
        while True:
            self._trim()
            if not self._cursors or self._buffered <= self.max_unread_bytes:
                return
            self._producer_waiting = True
            self._room.clear()
            try:
                await asyncio.wait_for(self._room.wait(), patience)
            except TimeoutError:
                slowest = min(self._cursors, key=self._cursors.__getitem__)
                self._dropped.add(slowest)
                del self._cursors[slowest]
                self._wake()
            finally:
                self._producer_waiting = False

    @property
    def joinable(self) -> bool:
        """New readers may join only while the whole body is still in memory."""
        outcome = self.outcome
        private = isinstance(outcome, Unshared) or (isinstance(outcome, Refreshed) and not outcome.storable)
        return self._base == 0 and self.failure is None and not private

    # -- reader side -----------------------------------------------------------------------
    async def wait_outcome(self) -> FillOutcome:
        await self.head_ready.wait()
        if self.outcome is None:
            raise FillAborted(str(self.failure) if self.failure else "fill failed before headers")
        return self.outcome

    def open_reader(self) -> int:
        """Register a reader now, so nothing it still needs is trimmed before it starts reading."""
        reader = self._next_reader
        self._next_reader += 1
        self._cursors[reader] = self._base
        self.readers += 1
        return reader

    def close_reader(self, reader: int) -> None:
        if self._cursors.pop(reader, None) is not None:
            self._trim()

    async def body(self, reader: int) -> AsyncGenerator[bytes]:
        """The body from ``reader``'s position (the first byte for a reader opened before any
        trimming), as it arrives; raises FillAborted if the origin broke.  Closes the reader."""
        try:
            while True:
                if reader in self._dropped:
                    raise FillAborted("client too slow for a shared response")
                position = self._cursors[reader]
                if position - self._base < len(self._chunks):
                    chunk = self._chunks[position - self._base]
                    self._cursors[reader] = position + 1
                    if self._producer_waiting:
                        self._room.set()
                    yield chunk
                    continue
                if self.failure is not None:
                    raise FillAborted(str(self.failure))
                if self.done:
                    return
                self._changed.clear()
                await self._changed.wait()
        finally:
            self.close_reader(reader)

    def _trim(self) -> None:
        """Once the body is large, drop chunks every current reader has passed (then nobody new can join)."""
        if not self._cursors or self._buffered <= self.keep_bytes:
            return
        lowest = min(self._cursors.values())
        drop = lowest - self._base
        if drop > 0:
            self._buffered -= sum(len(chunk) for chunk in self._chunks[:drop])
            del self._chunks[:drop]
            self._base = lowest

    def _wake(self) -> None:
        self._changed.set()


class Coalescer:
    """The fills in flight in one worker, by key."""

    def __init__(self) -> None:
        self._fills: dict[Hashable, Fill] = {}
        self.collapsed_total = 0

    def join(self, key: Hashable) -> Fill | None:
        """An in-flight fill for ``key`` a new request may share, or None."""
        fill = self._fills.get(key)
        if fill is None or not fill.joinable:
            return None
        fill.waiters += 1
        self.collapsed_total += 1
        return fill

    def active(self, key: Hashable) -> bool:
        """Is a fill for ``key`` in flight (whether or not it may still be joined)?"""
        return key in self._fills

    def start(self, key: Hashable, max_unread_bytes: int = 64 * 1024 * 1024, keep_bytes: int = 8 * 1024 * 1024) -> Fill:
        fill = Fill(key, max_unread_bytes, keep_bytes)
        self._fills[key] = fill
        return fill

    def finish(self, fill: Fill) -> None:
        if self._fills.get(fill.key) is fill:
            del self._fills[fill.key]

    def __len__(self) -> int:
        return len(self._fills)


class KeyLocks:
    """Cross-process collapsing: one byte-range lock per key in a file shared by an edge's workers.

    Within a worker the :class:`Coalescer` shares fills; across workers, the worker that starts a
    fill holds the key's lock until the object is stored, and a worker that finds it taken waits
    (polling, so no thread is parked per key) and then looks in the shared disk tier first.  POSIX
    record locks vanish with their process, so a worker that dies never leaves a key locked.
    """

    POLL_S = 0.02

    def __init__(self, path: str) -> None:
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)

    @staticmethod
    def _offset(key: str) -> int:
        return int.from_bytes(hashlib.sha256(key.encode("utf-8", "surrogatepass")).digest()[:7], "big")

    def try_acquire(self, key: str) -> bool:
        try:
            fcntl.lockf(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, self._offset(key))
        except OSError:
            return False
        return True

    async def acquire(self, key: str, wait: float) -> bool:
        """Take the key's lock; returns True if another process held it first (so look again)."""
        if self.try_acquire(key):
            return False
        deadline = asyncio.get_running_loop().time() + wait
        while not self.try_acquire(key):
            if asyncio.get_running_loop().time() > deadline:
                return True  # give up waiting; the caller fetches on its own, unlocked
            await asyncio.sleep(self.POLL_S)
        return True

    def release(self, key: str) -> None:
        with contextlib.suppress(OSError):
            fcntl.lockf(self._fd, fcntl.LOCK_UN, 1, self._offset(key))

    def close(self) -> None:
        os.close(self._fd)
