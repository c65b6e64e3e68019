"""Cache storage: one protocol (``base``), a per-worker memory tier and a shared disk tier."""

from edge.store.base import BodyChecksum, CachedObject, Store, StoredMeta, StoreWriter, body_checksum, iter_file_chunks
from edge.store.disk import DiskStore, DiskWriter
from edge.store.memory import MemoryStore, MemoryWriter

__all__ = [
    "BodyChecksum",
    "CachedObject",
    "DiskStore",
    "DiskWriter",
    "MemoryStore",
    "MemoryWriter",
    "Store",
    "StoreWriter",
    "StoredMeta",
    "body_checksum",
    "iter_file_chunks",
]
