"""Helpers shared by the store tests and the worker processes they spawn (no pytest imports here)."""

from __future__ import annotations

import hashlib
from pathlib import Path

from edge.store.base import CachedObject, StoredMeta, body_checksum, iter_file_chunks


def make_meta(
    key: str,
    body: bytes,
    *,
    variant: str = "",
    tags: tuple[str, ...] = (),
    headers: tuple[tuple[str, str], ...] = (("content-type", "text/plain"),),
    checksum: str | None = None,
    size: int | None = None,
) -> StoredMeta:
    return StoredMeta(
        key=key,
        variant=variant,
        status=200,
        reason="OK",
        headers=headers,
        request_time=1_700_000_000.0,
        response_time=1_700_000_000.5,
        size=len(body) if size is None else size,
        checksum=body_checksum(body) if checksum is None else checksum,
        vary=("accept-encoding",) if variant else (),
        secondary=(("accept-encoding", variant or None),) if variant else (),
        tags=tags,
    )


def body_for(label: str, size: int) -> bytes:
    """A body that names its origin, so a reader can tell which write it came from without the store."""
    seed = hashlib.sha256(label.encode()).digest()
    return (seed * (size // len(seed) + 1))[:size]


async def read_body(obj: CachedObject) -> bytes:
    """The object's body whether the tier handed out bytes or a file (as the handler would send it)."""
    if obj.body is not None:
        return obj.body
    assert obj.path is not None
    return b"".join([chunk async for chunk in iter_file_chunks(obj.path, obj.offset, obj.meta.size)])


def files_under(root: Path, suffix: str) -> list[Path]:
    return sorted(path for path in root.rglob(f"*{suffix}") if path.is_file())
