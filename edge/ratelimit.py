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
bucket is full of clients in debt, the least indebted one's entry is taken (counted as
``table_full``).  Keys are hashed with a salt kept next to the table (BLAKE2b), so addresses of one
network spread over every bucket and nobody can aim at another client's entry.  The clock is
``CLOCK_MONOTONIC``, the same for every process of the machine (the supervisor empties the
tables at start, so a reboot's new clock cannot strand old entries).
"""

from __future__ import annotations

import fcntl
import hashlib
import mmap
import os
import struct
import time
from pathlib import Path

__all__ = ["RateTable", "key_hash", "table_salt"]

ENTRY = struct.Struct("<Qd")  # key hash, theoretical arrival time
BUCKET_ENTRIES = 16
DEFAULT_BUCKETS = 4096  # 65,536 entries, 1 MiB


def key_hash(key: str, salt: bytes) -> int:
    """A 64-bit keyed hash of a key, never 0 (0 marks a free entry): addresses of one network
    spread over the whole table, and nobody can aim at another client's entry without the salt."""
    digest = hashlib.blake2b(key.encode("utf-8", "surrogatepass"), digest_size=8, key=salt).digest()
    return int.from_bytes(digest, "little") or 1


def table_salt(path: Path | None) -> bytes:
    """The salt of a shared table (created once, next to it), or a new one for a private table."""
    if path is None:
        return os.urandom(16)
    salt_path = path.with_name(path.name + ".salt")
    try:
        fd = os.open(salt_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        for _ in range(100):  # another worker is writing it
            data = salt_path.read_bytes()
            if len(data) == 16:
                return data
            time.sleep(0.01)
        raise RuntimeError(f"{salt_path}: not a 16-byte salt") from None
    salt = os.urandom(16)
    tmp = salt_path.with_name(salt_path.name + f".{os.getpid()}")
    tmp.write_bytes(salt)
    os.replace(tmp, salt_path)
    os.close(fd)
    return salt


class RateTable:
    """GCRA buckets in shared memory (``path``: a file every worker maps; ``None``: this process only)."""

    def __init__(self, path: Path | None, *, buckets: int = DEFAULT_BUCKETS, shared: bool = True) -> None:
        self.buckets = buckets
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
        self.salt = table_salt(path)
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
        now = time.monotonic() if now is None else now  # one clock for every process of the machine
        interval = 1.0 / rate
        tolerance = burst * interval
        hashed = key_hash(key, self.salt)
        bucket = hashed % self.buckets
        start = bucket * BUCKET_ENTRIES * ENTRY.size
        length = BUCKET_ENTRIES * ENTRY.size
        if self._lock:
            assert self._fd is not None
            fcntl.lockf(self._fd, fcntl.LOCK_EX, length, start)
        try:
            view = self._map
            reusable = -1
            least_tat = float("inf")
            least = -1
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
                if stored_tat < least_tat:
                    least_tat, least = stored_tat, offset
            if reusable < 0:  # every entry in debt: the least indebted client's entry goes
                self.table_full += 1
                reusable = least
            ENTRY.pack_into(view, reusable, hashed, now + interval)  # a new key: a full bucket, one spent
            return 0.0
        finally:
            if self._lock:
                assert self._fd is not None
                fcntl.lockf(self._fd, fcntl.LOCK_UN, length, start)
