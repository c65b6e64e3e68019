"""Deterministic object bodies.

Every body the stub serves is a pure function of (name, offset), so:

- the stub can stream any byte range of a many-GiB object without ever building it;
- a test anywhere in the project can check the bytes it received (through the edge, from the
  cache, out of a Range response) with ``expected_body(name, size)[start:end]`` and no shared state.

The content is a 64 KiB block derived from ``sha256(name)``, repeated, with the block's index
stamped (XOR) into its first 8 bytes. The stamp makes a body that was shifted by a whole block (a
classic off-by-one-block bug in range or cache-slice code) compare unequal, which a purely
repeating block would not catch.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Iterator

__all__ = ["BLOCK_SIZE", "body_chunks", "expected_body"]

BLOCK_SIZE = 64 * 1024
_STAMP = 8  # bytes of each block that carry the block index


@functools.lru_cache(maxsize=256)
def _base_block(name: str) -> bytes:
    """The 64 KiB pattern for *name*: a sha256 counter stream (cached: names repeat a lot)."""
    seed = hashlib.sha256(name.encode("utf-8", "surrogatepass")).digest()
    return b"".join(hashlib.sha256(seed + i.to_bytes(4, "big")).digest() for i in range(BLOCK_SIZE // 32))


def _piece(name: str, index: int, offset: int, take: int) -> bytes:
    """Bytes [offset, offset+take) of block *index*, copying only what is asked for."""
    base = _base_block(name)
    if offset >= _STAMP:
        return base[offset : offset + take]
    stamp = (int.from_bytes(base[:_STAMP], "big") ^ index) & ((1 << (8 * _STAMP)) - 1)
    return stamp.to_bytes(_STAMP, "big")[offset : offset + take] + base[_STAMP : offset + take]


def _byte_range(name: str, start: int, end: int) -> bytes:
    """Bytes [start, end) of the infinite body for *name*."""
    parts: list[bytes] = []
    pos = start
    while pos < end:
        index, offset = divmod(pos, BLOCK_SIZE)
        take = min(BLOCK_SIZE - offset, end - pos)
        parts.append(_piece(name, index, offset, take))
        pos += take
    return parts[0] if len(parts) == 1 else b"".join(parts)


def expected_body(name: str, size: int) -> bytes:
    """The full body the stub serves for object *name* of *size* bytes (builds it: tests only)."""
    if size < 0:
        raise ValueError(f"size must be >= 0, got {size}")
    return _byte_range(name, 0, size)


def body_chunks(name: str, start: int, end: int, chunk_size: int) -> Iterator[bytes]:
    """Yield bytes [start, end) of *name*'s body in chunks of *chunk_size* (the last may be shorter).

    Memory use is one chunk, whatever the range, which is what lets the stub serve huge objects.
    """
    if start < 0 or end < start:
        raise ValueError(f"need 0 <= start <= end, got start={start} end={end}")
    if chunk_size <= 0:
        raise ValueError(f"chunk_size must be > 0, got {chunk_size}")
    for pos in range(start, end, chunk_size):
        yield _byte_range(name, pos, min(pos + chunk_size, end))
