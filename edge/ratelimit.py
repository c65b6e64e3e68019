"""Request-rate limits shared by every worker of an edge: a token bucket per client address, kept
as GCRA (the generic cell rate algorithm: one "theoretical arrival time" per key) in a file mapped
by all workers.

    interval  T = 1 / rate            tolerance  τ = burst * T
    a request at ``now``:  tat = max(stored, now);  tat - now > τ → refused (retry after tat - now - τ)
                           else stored = tat + T → accepted

So a client may send ``burst`` requests at once and ``rate`` per second after that — over S
seconds of flood, ``burst + rate * S`` (+1) get through, whichever workers answer them.

The table is open addressing in buckets of 16 entries (key hash, tat); an entry whose tat has
passed holds no debt and is reused by any key.  Each check locks its bucket's bytes (``lockf``)
for a few microseconds, so two workers never lose an update; one worker needs no lock.  When a
bucket is full of clients in debt, a new client is let through (counted as ``table_full``): a
flood of forged addresses must not lock out real ones.
"""

from __future__ import annotations

import fcntl
import mmap
import os
import struct
import time
import zlib
from pathlib import Path

__all__ = ["RateTable"]

ENTRY = struct.Struct("<Qd")  # key hash, theoretical arrival time
BUCKET_ENTRIES = 16
DEFAULT_BUCKETS = 4096  # 65,536 entries, 1 MiB


def key_hash(key: str) -> int:
    """A 64-bit hash of a key, never 0 (0 marks a free entry)."""
    data = key.encode("utf-8", "surrogatepass")
    value = (zlib.crc32(data) << 32) | zlib.adler32(data)
    return value or 1


class RateTable:
    """GCRA buckets in shared memory (``path``: a file every worker maps; ``None``: this process only)."""

    def __init__(self, path: Path | None, *, buckets: int = DEFAULT_BUCKETS, shared: bool = True) -> None:
        self.buckets = buckets
        size = buckets * BUCKET_ENTRIES * ENTRY.size
        self.table_full = 0
        self._fd: int | None = None
        if path is None:
            self._map = mmap.mmap(-1, size)
            self._lock = False
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
            if os.fstat(fd).st_size != size:
                os.ftruncate(fd, size)
            self._fd = fd
            self._map = mmap.mmap(fd, size)
            self._lock = shared

    def close(self) -> None:
        self._map.close()
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def take(self, key: str, rate: float, burst: int, now: float | None = None) -> float:
        """Spend one request of ``key`` (``rate`` per second, ``burst`` at once): 0.0 when accepted,
        else the seconds until one would be."""
        now = time.time() if now is None else now
        interval = 1.0 / rate
        tolerance = burst * interval
        hashed = key_hash(key)
        bucket = (hashed >> 20) % self.buckets
        start = bucket * BUCKET_ENTRIES * ENTRY.size
        length = BUCKET_ENTRIES * ENTRY.size
        if self._lock:
            assert self._fd is not None
            fcntl.lockf(self._fd, fcntl.LOCK_EX, length, start)
        try:
            view = self._map
            reusable = -1
            for index in range(BUCKET_ENTRIES):
                offset = start + index * ENTRY.size
                stored_key, stored_tat = ENTRY.unpack_from(view, offset)
                if stored_key == hashed:
                    tat = stored_tat if stored_tat > now else now
                    if tat - now > tolerance:
                        return tat - now - tolerance
                    ENTRY.pack_into(view, offset, hashed, tat + interval)
                    return 0.0
                if reusable < 0 and (stored_key == 0 or stored_tat <= now):
                    reusable = offset
            if reusable < 0:
                self.table_full += 1
                return 0.0
            ENTRY.pack_into(view, reusable, hashed, now + interval)  # a new key: a full bucket, one spent
            return 0.0
        finally:
            if self._lock:
                assert self._fd is not None
                fcntl.lockf(self._fd, fcntl.LOCK_UN, length, start)
