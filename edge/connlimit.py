"""Open connections per client address and in all, counted for the whole edge in shared memory.

Each worker owns one column (claimed at start: a column whose worker is gone is wiped and
reused), and only ever writes its own cells, so a worker that crashes leaves no phantom
connections behind: its column is zeroed by the next worker that claims it, and ignored at once
because its pid is dead.  A count is the sum over live columns; the check-and-add runs under one
``lockf`` of the table (connections are opened far less often than requests are made).

    header   MAX_WORKERS * (pid u32, total u32)
    entries  SLOTS * (key u64, MAX_WORKERS * count u16), open addressing (probe PROBE entries)
"""

from __future__ import annotations

import fcntl
import mmap
import os
import struct
from pathlib import Path

from edge.ratelimit import key_hash, table_salt

__all__ = ["ConnectionTable"]

MAX_WORKERS = 64
SLOTS = 16384
PROBE = 32
HEADER = struct.Struct("<II")
COUNTS = struct.Struct(f"<{MAX_WORKERS}H")
KEY = struct.Struct("<Q")
ENTRY_SIZE = KEY.size + COUNTS.size
HEADER_SIZE = MAX_WORKERS * HEADER.size


def _alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class ConnectionTable:
    """Per-address and total open connections of an edge (``path``: shared; ``None``: one process)."""

    def __init__(self, path: Path | None) -> None:
        size = HEADER_SIZE + SLOTS * ENTRY_SIZE
        self._fd: int | None = None
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
        self.salt = table_salt(path)
        if path is None:
            self._map = mmap.mmap(-1, size)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
            if os.fstat(fd).st_size != size:
                os.ftruncate(fd, size)
            self._fd = fd
            self._map = mmap.mmap(fd, size)
        self.column = self._claim()
        self.mine: dict[int, int] = {}  # slot → this worker's connections there
        self.counted: dict[str, int] = {}  # address → this worker's connections counted per address
        self.unslotted = 0  # connections counted in all only (no room for their address)

    def _locked(self) -> _Lock:
        return _Lock(self._fd)

    def _claim(self) -> int:
        """Take a column whose worker is gone (wiping what it counted)."""
        with self._locked():
            me = os.getpid()
            for column in range(MAX_WORKERS):
                pid, _total = HEADER.unpack_from(self._map, column * HEADER.size)
                if pid == me or not _alive(pid):
                    self._wipe(column)
                    HEADER.pack_into(self._map, column * HEADER.size, me, 0)
                    return column
        raise RuntimeError(f"more than {MAX_WORKERS} live workers share this connection table")

    def _wipe(self, column: int) -> None:
        offset = HEADER_SIZE + KEY.size + column * 2
        for slot in range(SLOTS):
            self._map[offset + slot * ENTRY_SIZE : offset + slot * ENTRY_SIZE + 2] = b"\0\0"

    def _live_columns(self) -> list[int]:
        return [column for column in range(MAX_WORKERS)
                if _alive(HEADER.unpack_from(self._map, column * HEADER.size)[0])]  # fmt: skip

    def admit(self, address: str, per_ip: int | None, total: int | None) -> str | None:
        """Count a new connection from ``address``, or say which limit refuses it (nothing counted)."""
        with self._locked():
            live = self._live_columns() if total is not None or per_ip is not None else []
            if total is not None:
                opened = sum(HEADER.unpack_from(self._map, column * HEADER.size)[1] for column in live)
                if opened >= total:
                    return "max_connections"
            head = self.column * HEADER.size
            pid, opened_here = HEADER.unpack_from(self._map, head)
            slot = self._slot(address)
            if slot is None:  # the neighbourhood is full of other addresses: counted in all only
                HEADER.pack_into(self._map, head, pid, opened_here + 1)
                self.unslotted += 1
                return None
            offset = HEADER_SIZE + slot * ENTRY_SIZE + KEY.size
            if per_ip is not None:
                counts = COUNTS.unpack_from(self._map, offset)
                if sum(counts[column] for column in live) >= per_ip:
                    return "max_connections_per_ip"
            cell = offset + self.column * 2
            (count,) = struct.unpack_from("<H", self._map, cell)
            struct.pack_into("<H", self._map, cell, min(count + 1, 65535))
            self.mine[slot] = self.mine.get(slot, 0) + 1
            HEADER.pack_into(self._map, head, pid, opened_here + 1)
            self.counted[address] = self.counted.get(address, 0) + 1
            return None

    def release(self, address: str) -> None:
        """A counted connection from ``address`` closed."""
        with self._locked():
            head = self.column * HEADER.size
            pid, opened_here = HEADER.unpack_from(self._map, head)
            held = self.counted.get(address, 0)
            if not held:
                if self.unslotted:  # one counted in all only
                    self.unslotted -= 1
                    HEADER.pack_into(self._map, head, pid, max(0, opened_here - 1))
                return
            if held == 1:
                del self.counted[address]
            else:
                self.counted[address] = held - 1
            HEADER.pack_into(self._map, head, pid, max(0, opened_here - 1))
            slot = self._find(address)
            if slot is None or not self.mine.get(slot):
                return
            self.mine[slot] -= 1
            if not self.mine[slot]:
                del self.mine[slot]
            cell = HEADER_SIZE + slot * ENTRY_SIZE + KEY.size + self.column * 2
            (count,) = struct.unpack_from("<H", self._map, cell)
            struct.pack_into("<H", self._map, cell, max(0, count - 1))

    def _find(self, address: str) -> int | None:
        hashed = key_hash(address, self.salt)
        start = hashed % SLOTS
        for step in range(PROBE):
            slot = (start + step) % SLOTS
            (key,) = KEY.unpack_from(self._map, HEADER_SIZE + slot * ENTRY_SIZE)
            if key == hashed:
                return slot
        return None

    def _slot(self, address: str) -> int | None:
        found = self._find(address)
        if found is not None:
            return found
        hashed = key_hash(address, self.salt)
        start = hashed % SLOTS
        for step in range(PROBE):
            slot = (start + step) % SLOTS
            offset = HEADER_SIZE + slot * ENTRY_SIZE
            if not any(COUNTS.unpack_from(self._map, offset + KEY.size)):
                KEY.pack_into(self._map, offset, hashed)
                return slot
        return None

    def close(self) -> None:
        self._map.close()
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


class _Lock:
    def __init__(self, fd: int | None) -> None:
        self.fd = fd

    def __enter__(self) -> None:
        if self.fd is not None:
            fcntl.lockf(self.fd, fcntl.LOCK_EX)

    def __exit__(self, *exc: object) -> None:
        if self.fd is not None:
            fcntl.lockf(self.fd, fcntl.LOCK_UN)
