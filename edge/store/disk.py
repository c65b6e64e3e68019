"""Disk tier: one cache directory shared by every worker process of an edge; survives restarts.

Layout (nothing from a request becomes a path: keys and variants are hashed)::

    <dir>/objects/ab/cd/<K>.<V>.meta         K = sha256(key) hex, V = sha256(variant) hex[:32]
    <dir>/objects/ab/cd/<K>.<V>.<rand>.body  a body file, unique per write, never modified once published
    <dir>/tmp/<pid>.<rand>.<kind>.tmp        writes in progress (same filesystem, so os.replace is atomic)
    <dir>/journal/<pid>.<rand>.jnl           index rows not yet in SQLite (edge.store.index: write-behind)
    <dir>/index.sqlite                       derived index (edge.store.index), rebuildable from meta files

A meta file comes in two forms. ``EC1 <crc32 of json>\n<json>`` names a separate body file (the JSON
holds the ``StoredMeta`` fields plus the body file name). ``EC2 <crc32> <json length> <token>\n<json><body>``
is an *inline* object: bodies up to ``inline_body_bytes`` (4 KiB) travel in the meta file itself, so
a small object is one file created and one rename (file creation dominates a store: ~0.5 ms here per
new inode), and a hit on it is one read on the loop with no thread hop. Its body reference is
``<token>.inline``, the token being fresh for every file written, so "is this still the object a row
describes?" is answered by the 16 bytes at offset 22.

Invariants, and why they give "concurrent fills leave exactly one valid object; never serve a torn one":

1. A body is streamed to ``tmp/``, verified (size and CRC-32 against ``StoredMeta``), then published
   under a name no other write uses; after that it is never written again. So a body file is either
   complete or absent, and two concurrent fills never touch each other's bytes. An inline body is
   verified the same way before its file is written.
2. The meta file is written to ``tmp/`` and published LAST with ``os.replace``, which is atomic: a
   reader sees the old meta or the new one, each naming a complete body (or holding one, written whole
   before the rename). Of two concurrent fills, the last replace wins; the loser's body file is left
   unreferenced (an *orphan*) and removed by the cleanup pass after a grace period.
3. After its replace, a writer unlinks the body the previous meta referenced. A reader that read the old
   meta and finds its body gone re-reads the meta (and follows the new one); a meta whose body stays
   missing is *dangling* (left by a crash or a race with update/delete) and is discarded as a miss.
4. Every read verifies: the meta's own checksum; that it names the requested key/variant; the body
   file's size (always); the body's CRC-32 whenever the body is read into memory (``get`` does that for
   bodies up to ``small_body_bytes``, inline ones always; an inline file must be exactly metadata plus
   ``size`` bytes). Larger bodies are returned as ``path`` for sendfile with only
   the length checked; ``verify()``/``scrub()`` check their CRC in the background. Anything that fails
   is removed (meta, body, index row), counted in ``corrupt_discarded`` and never returned. A ``path``
   can vanish after ``get`` returns (a newer fill or a purge unlinked it): opening it then raises
   ``FileNotFoundError``, which the caller treats as a miss; once opened, the bytes stay readable.
5. The hit path (``get``/``variants``) reads files only; it never waits on SQLite. Access times go to
   an in-memory dict flushed to the index every ``access_flush_interval`` (and before each eviction).
6. Index rows are written behind (``index_flush_interval``, 50 ms, or ``index_batch_rows`` at once, in
   one transaction), but a commit puts its row in this process's journal before it returns, and every
   index look-up a purge or eviction depends on first writes this process's queue and ingests every
   other process's journal (``_sync_index``). So a purge still finds every object whose commit returned
   before the purge began, whichever worker stored it and whether or not that worker is still alive.
   Rows are only ingested if their object is still the published one, so a late row never brings
   back a deleted, evicted or replaced object; and deletions (purges, evictions) unlink files first,
   then prune only the rows that no longer describe a published object, so a fill that published
   meanwhile keeps its row. If this process's own rows cannot be written, a purge fails instead of
   running on an index that lacks them. ``stats()`` counts queued rows as objects already.

I/O and the event loop: meta files are ~0.5-2 KiB (an inline one up to ~6 KiB), so ``get``/``variants``
read them (and list the per-key fan-out directory, and ``stat`` large bodies) directly on the loop.
Measured on the 2-core dev VM: reading and verifying a 450-byte meta file inline costs ~45 µs
(open/read/close ~10 µs, the rest JSON and building ``StoredMeta``; ``MetaMemo`` skips the decoding
when the bytes are ones this process decoded or wrote before), one ``asyncio.to_thread`` hop
~100-200 µs. Body reads, writes, publishing, unlinking and directory scans run in ``asyncio.to_thread``
(a commit is exactly one hop); SQLite runs on the index's own thread.

Startup does not block serving: ``start()`` opens the index and returns; a background task removes
stale temp files, rebuilds the index from the meta files when it is missing/corrupt/unfinished (``ready``
turns True after that), ingests journals left by dead processes, evicts down to ``max_bytes``, then
reconciles files and index (dangling metas, orphan bodies, missing or stale rows).
``get``/``variants``/writes work before ``ready``; prefix/tag purges and ``clear`` wait for it, because
they trust the index to list everything. Eviction runs when the total exceeds ``max_bytes`` and goes
down to 1/64 below it, so the fills that follow don't each pay for a transaction and an eviction.

Temp files carry their writer's pid; one whose process is gone (or older than ``temp_grace``) is stale.
That assumes the workers sharing a directory share a PID namespace (one host or container).

What this does not promise: durability across power loss (no fsync unless ``fsync=True``; a torn file
is then caught by the checks above), and exact global LRU across processes (each process flushes its
own access times; eviction uses what has been flushed).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import functools
import hashlib
import json
import logging
import os
import random
import secrets
import shutil
import sqlite3
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from types import TracebackType
from typing import TypeVar

from lru import LRU

from edge.http.parts import PART_MARK
from edge.store.base import BodyChecksum, CachedObject, StoredMeta, body_checksum
from edge.store.index import (
    IndexCorruptError,
    IndexRow,
    ObjectHash,
    RowJournal,
    SqliteIndex,
    Totals,
    read_journals,
    release_journals,
)

log = logging.getLogger(__name__)

T = TypeVar("T")

META_FORMAT = 1
_META_MAGIC = b"EC1 "  # meta file naming a separate body file
_INLINE_MAGIC = b"EC2 "  # meta file with the body after it (small objects: one file, one rename)
_INLINE_HEADER = 39  # b"EC2 " <crc32 8 hex> b" " <json length 8 hex> b" " <token 16 hex> b"\n"
INLINE_SUFFIX = ".inline"  # body reference of an inline object: "<token>.inline" (never a file name)
MAX_INLINE_BODY_BYTES = 1024 * 1024
_META_MAX_BYTES = 4 * 1024 * 1024  # a meta file larger than this is not one of ours
_FIRST_READ = 16 * 1024  # reading a meta without its body: almost every meta fits in this
_EVICT_HEADROOM = 64  # eviction goes down to max_bytes - max_bytes / 64
_SHARD_NAMES = frozenset(f"{n:02x}" for n in range(256))
_CHECKED_BODIES = 100_000  # large bodies whose CRC a process remembers having checked (checked_once)
_OPEN_READ = os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK  # a FIFO planted in the cache must not block
_OPEN_NEW = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC


class CorruptMetaError(ValueError):
    """A meta file that cannot be trusted (bad checksum, bad JSON, wrong fields, unreadable)."""


def key_hash(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()


def variant_hash(variant: str) -> str:
    """32 hex digits; a part's (``edge.http.parts``) starts with ``p`` instead, so listing the
    complete variants of a key skips a sliced file's thousand parts without reading them."""
    digest = hashlib.sha256(variant.encode("utf-8", "surrogatepass")).hexdigest()[:32]
    return "p" + digest[1:] if variant.startswith(PART_MARK) else digest


# -- meta file format -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class MetaRecord:
    """A decoded meta file: the metadata, the body it names, and the size of its metadata part.

    ``inline``: the body is stored in the same file right after the metadata part (``file_size`` is
    where it starts) and ``body`` is ``"<token>.inline"``, a name unique to this very file's content.
    Otherwise ``body`` names the body file next to it and ``file_size`` is the whole meta file.
    """

    meta: StoredMeta
    body: str
    file_size: int
    inline: bool = False


def _meta_json(meta: StoredMeta, body_ref: str) -> bytes:
    """The ``StoredMeta`` fields as ASCII JSON (lone surrogates escaped) so they always round-trip."""
    payload = {
        "v": META_FORMAT,
        "key": meta.key,
        "variant": meta.variant,
        "status": meta.status,
        "reason": meta.reason,
        "headers": [list(pair) for pair in meta.headers],
        "request_time": meta.request_time,
        "response_time": meta.response_time,
        "size": meta.size,
        "checksum": meta.checksum,
        "vary": list(meta.vary),
        "secondary": [list(pair) for pair in meta.secondary],
        "tags": list(meta.tags),
        "stored_at": meta.stored_at,
        "invalidated": meta.invalidated,
        "body": body_ref,
    }
    return json.dumps(payload, separators=(",", ":"), allow_nan=False).encode("ascii")


def encode_meta(meta: StoredMeta, body_name: str) -> bytes:
    """A meta file naming the separate body file ``body_name``: ``EC1 <crc32 of json>\\n<json>``."""
    data = _meta_json(meta, body_name)
    return _META_MAGIC + body_checksum(data).encode("ascii") + b"\n" + data


def encode_inline_meta(meta: StoredMeta, token: str) -> tuple[bytes, str]:
    """The metadata part of an inline meta file (the body bytes follow it) and its body reference.

    ``EC2 <crc32> <json length> <token>\\n<json>``; the CRC covers everything after itself up to the
    end of the JSON (the body has its own CRC in ``meta.checksum``). ``token`` (16 hex digits, fresh
    for every file written) sits at a fixed offset so "is this still that file?" is a 39-byte read.
    """
    ref = token + INLINE_SUFFIX
    data = _meta_json(meta, ref)
    covered = b" %08x %s\n%s" % (len(data), token.encode("ascii"), data)
    return _INLINE_MAGIC + body_checksum(covered).encode("ascii") + covered, ref


def decode_meta(data: bytes) -> MetaRecord:
    """Parse and check a meta file; raises ``CorruptMetaError`` for anything we did not write whole.

    The checksum proves the bytes are the ones some writer produced; the type checks make sure that
    writer was this format (a cheap pass: this runs on every hit). For an inline meta ``data`` may end
    anywhere after the metadata part: the caller checks the body it read against ``meta.size``.
    """
    if data.startswith(_INLINE_MAGIC):
        return _decode_inline(data)
    if not data.startswith(_META_MAGIC) or data[12:13] != b"\n":
        raise CorruptMetaError("bad header")
    payload = data[13:]
    if body_checksum(payload).encode("ascii") != data[4:12]:
        raise CorruptMetaError("meta checksum mismatch")
    meta, body = _decode_fields(payload)
    if not body.endswith(".body"):
        raise CorruptMetaError("bad body reference")
    return MetaRecord(meta=meta, body=body, file_size=len(data))


def _inline_end(data: bytes) -> int:
    """Where the metadata part of an inline meta file ends (-1 if the header is malformed)."""
    if len(data) < _INLINE_HEADER or data[12:13] != b" " or data[21:22] != b" " or data[38:39] != b"\n":
        return -1
    length = data[13:21]
    if not all(char in b"0123456789abcdef" for char in length):
        return -1
    return _INLINE_HEADER + int(length, 16)


def _decode_inline(data: bytes) -> MetaRecord:
    end = _inline_end(data)
    if end < 0:
        raise CorruptMetaError("bad header")
    if len(data) < end:
        raise CorruptMetaError("metadata truncated")
    if body_checksum(data[12:end]).encode("ascii") != data[4:12]:
        raise CorruptMetaError("meta checksum mismatch")
    meta, body = _decode_fields(data[_INLINE_HEADER:end])
    if body != data[22:38].decode("ascii", "replace") + INLINE_SUFFIX:
        raise CorruptMetaError("bad body reference")
    return MetaRecord(meta=meta, body=body, file_size=end, inline=True)


def _decode_fields(payload: bytes) -> tuple[StoredMeta, str]:
    try:
        fields = json.loads(payload)
        if fields["v"] != META_FORMAT:
            raise CorruptMetaError(f"unknown meta format {fields['v']!r}")
        lists = (fields["headers"], fields["vary"], fields["secondary"], fields["tags"])
        if any(type(value) is not list for value in lists):
            raise TypeError("list field is not a list")
        headers = tuple(map(tuple, fields["headers"]))
        secondary = tuple(map(tuple, fields["secondary"]))
        texts = [fields["key"], fields["variant"], fields["reason"], fields["checksum"], fields["body"]]
        texts += fields["vary"]
        texts += fields["tags"]
        for name, value in headers:  # unpacking also checks that each is a pair
            texts += (name, value)
        for name, value in secondary:
            texts += (name, "" if value is None else value)
        times = (fields["request_time"], fields["response_time"], fields["stored_at"])
        if (
            any(type(text) is not str for text in texts)
            or any(type(number) not in (int, float) for number in times)
            or type(fields["status"]) is not int
            or type(fields["size"]) is not int
            or type(fields["invalidated"]) is not bool
        ):
            raise TypeError("field of the wrong type")
        meta = StoredMeta(
            key=fields["key"],
            variant=fields["variant"],
            status=fields["status"],
            reason=fields["reason"],
            headers=headers,
            request_time=float(times[0]),
            response_time=float(times[1]),
            size=fields["size"],
            checksum=fields["checksum"],
            vary=tuple(fields["vary"]),
            secondary=secondary,
            tags=tuple(fields["tags"]),
            stored_at=float(times[2]),
            invalidated=fields["invalidated"],
        )
        body: str = fields["body"]
    except CorruptMetaError:
        raise
    except (ValueError, KeyError, TypeError) as error:
        raise CorruptMetaError(f"bad meta fields: {error!r}") from error
    if "/" in body or meta.size < 0:
        raise CorruptMetaError("bad body reference")
    return meta, body


def _read_all(fd: int, limit: int) -> bytes:
    parts: list[bytes] = []
    remaining = limit
    while remaining > 0:
        part = os.read(fd, min(remaining, 1024 * 1024))
        if not part:
            break
        parts.append(part)
        remaining -= len(part)
    return b"".join(parts)


class MetaMemo:
    """Decoded meta files by path, each with the exact metadata bytes it was decoded from.

    ``read_meta_file`` skips ``decode_meta`` (~40 µs: JSON and type checks) when the bytes it just read
    equal the remembered ones: equal bytes decode to an equal record, so this never changes an answer.
    A commit remembers what it published, so reading it back (the variant-cap check after a fill)
    costs the read only. Loop thread only; bounded, oldest entry out first.
    """

    def __init__(self, limit: int = 1024) -> None:
        self.limit = limit
        self._entries: dict[str, tuple[bytes, MetaRecord]] = {}

    def get(self, path: str, ident: bytes) -> MetaRecord | None:
        found = self._entries.get(path)
        return found[1] if found is not None and found[0] == ident else None

    def put(self, path: str, ident: bytes, record: MetaRecord) -> None:
        entries = self._entries
        entries.pop(path, None)
        entries[path] = (ident, record)
        if len(entries) > self.limit:
            del entries[next(iter(entries))]


def read_meta_file(
    path: str, *, with_body: bool = False, memo: MetaMemo | None = None
) -> tuple[MetaRecord, bytes] | None:
    """The decoded meta file at ``path`` and the bytes read; None if there is none.

    The bytes are the whole file for a separate-body meta, and for an inline one the metadata part,
    followed by the rest of the file when ``with_body`` (the caller checks that against the meta).
    ``bytes[:record.file_size]`` identifies this very file (see ``_unlink_meta_if_same``).
    """
    try:
        fd = os.open(path, _OPEN_READ)
    except FileNotFoundError:
        return None
    except OSError as error:
        raise CorruptMetaError(f"unreadable: {error}") from error
    try:
        data = _read_all(fd, _META_MAX_BYTES + MAX_INLINE_BODY_BYTES + 1 if with_body else _FIRST_READ)
        if not with_body and len(data) == _FIRST_READ:  # a long one: read the rest of its metadata
            end = _inline_end(data) if data.startswith(_INLINE_MAGIC) else _META_MAX_BYTES + 1
            if end > len(data):
                data += _read_all(fd, min(end, _META_MAX_BYTES + 1) - len(data))
    except OSError as error:
        raise CorruptMetaError(f"unreadable: {error}") from error
    finally:
        os.close(fd)
    if memo is not None:
        end = _inline_end(data) if data.startswith(_INLINE_MAGIC) else len(data)
        record = memo.get(path, data[:end]) if end >= 0 else None
        if record is not None:
            return record, data
    record = decode_meta(data if len(data) <= _META_MAX_BYTES + 1 else data[: _META_MAX_BYTES + 1])
    if record.file_size > _META_MAX_BYTES:
        raise CorruptMetaError("too large")
    if memo is not None:
        memo.put(path, data[: record.file_size], record)
    return record, data


def _as_decoded(meta: StoredMeta) -> StoredMeta | None:
    """``meta`` if it is exactly what ``decode_meta`` returns for a file written from it (exact ``str``,
    tuples of pairs, float times), else None (then a reader decodes the file as usual)."""
    texts: list[object] = [meta.key, meta.variant, meta.reason, meta.checksum]
    groups = (meta.headers, meta.vary, meta.secondary, meta.tags)
    if any(type(group) is not tuple for group in groups):
        return None
    texts += meta.vary
    texts += meta.tags
    for pair in meta.headers:
        if type(pair) is not tuple or len(pair) != 2:
            return None
        texts += pair
    for field in meta.secondary:
        if type(field) is not tuple or len(field) != 2:
            return None
        texts.append(field[0])
        if field[1] is not None:
            texts.append(field[1])
    if (
        any(type(text) is not str for text in texts)
        or any(type(number) is not float for number in (meta.request_time, meta.response_time, meta.stored_at))
        or type(meta.status) is not int
        or type(meta.size) is not int
        or type(meta.invalidated) is not bool
    ):
        return None
    return meta


def _peek_body_name(meta_path: str) -> str | None:
    """Body named by the meta file at ``meta_path``, if it is readable (best effort, for cleanup)."""
    try:
        found = read_meta_file(meta_path)
    except CorruptMetaError:
        return None
    return None if found is None else found[0].body


def _meta_head(meta_path: str) -> bytes:
    """The first bytes of a meta file, enough for its magic, CRC and (inline) token; b"" if unreadable."""
    try:
        fd = os.open(meta_path, _OPEN_READ)
    except OSError:
        return b""
    try:
        head = os.read(fd, _INLINE_HEADER)
    except OSError:
        return b""
    finally:
        os.close(fd)
    return head if len(head) == _INLINE_HEADER or not head.startswith(_INLINE_MAGIC) else b""


def _inline_token(meta_path: str) -> bytes | None:
    """The token of the inline meta file at ``meta_path`` (39 bytes read), or None."""
    head = _meta_head(meta_path)
    return head[22:38] if head.startswith(_INLINE_MAGIC) else None


def _meta_check(data: bytes) -> str:
    """What identifies a separate-body meta file among the versions of one object: its header CRC."""
    return data[4:12].decode("ascii", "replace") if data.startswith(_META_MAGIC) else ""


def _body_file(folder: str, body_ref: str) -> str | None:
    """Path of the body file a meta names; None for an inline body (it lives in the meta file)."""
    return None if body_ref.endswith(INLINE_SUFFIX) else f"{folder}/{body_ref}"


def _write_all(fd: int, *parts: bytes) -> None:
    """Write ``parts`` in order (one ``writev`` unless the kernel takes less)."""
    written = os.writev(fd, parts)
    if written < sum(map(len, parts)):
        view = memoryview(b"".join(parts))[written:]
        while view:
            view = view[os.write(fd, view) :]


def _replace_into(source: str, target: str, folder: str) -> None:
    """``os.replace`` into ``folder``, creating it the first time (no ``makedirs`` per publish)."""
    try:
        os.replace(source, target)
    except FileNotFoundError:
        if not os.path.exists(source):
            raise
        os.makedirs(folder, exist_ok=True)
        os.replace(source, target)


def _token() -> str:
    """16 random hex digits naming one write (a body file, a temp file, an inline meta's content).

    Uniqueness is all they are for, not secrecy: ``random`` (re-seeded from the OS in every forked
    child) costs ~0.2 µs where ``secrets`` costs a ``getrandom`` call, which is slow on some VMs.
    """
    return f"{random.getrandbits(64):016x}"


class IndexIncompleteError(RuntimeError):
    """The index could not be rebuilt from the meta files: a purge must fail, not trust it."""


def _file_ident(path: str) -> tuple[int, int, int]:
    """Which file is at ``path``, as far as a replacement or a rewrite would change it."""
    st = os.stat(path)
    return st.st_ino, st.st_mtime_ns, st.st_size


def _unlink(path: str) -> bool:
    """Remove what is at ``path`` (False if nothing was).  Anything found where a cache file belongs
    goes, a directory too: a stray entry must not stop a purge, a scan or a rebuild of the index."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        return False
    except IsADirectoryError:
        shutil.rmtree(path, ignore_errors=True)
        return not os.path.lexists(path)
    except OSError as error:
        if error.errno != errno.EPERM or not os.path.isdir(path):
            log.warning("cannot remove %s from the disk cache: %s", path, error)
            return False
        shutil.rmtree(path, ignore_errors=True)
        return not os.path.lexists(path)
    return True


def pid_alive(pid: int) -> bool:
    """Whether a process with this PID exists (for files named after their writer's PID)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# -- the store --------------------------------------------------------------------------------------


class DiskStore:
    """The shared disk tier. ``await start()`` before use, ``await close()`` at the end (or ``async with``)."""

    name = "disk"

    def __init__(
        self,
        directory: Path,
        max_bytes: int,
        *,
        max_object_bytes: int | None = None,
        small_body_bytes: int = 256 * 1024,
        inline_body_bytes: int = 4 * 1024,
        write_buffer_bytes: int = 256 * 1024,
        access_flush_interval: float = 1.0,
        index_flush_interval: float = 0.05,
        index_batch_rows: int = 256,
        cleanup_interval: float = 600.0,
        orphan_grace: float = 60.0,
        temp_grace: float = 3600.0,
        fsync: bool = False,
    ) -> None:
        if max_bytes <= 0:
            raise ValueError("max_bytes must be positive")
        if not 0 <= inline_body_bytes <= MAX_INLINE_BODY_BYTES:
            raise ValueError(f"inline_body_bytes must be between 0 and {MAX_INLINE_BODY_BYTES}")
        self.directory = Path(directory)
        self.max_bytes = max_bytes
        self.max_object_bytes = min(max_object_bytes or max_bytes, max_bytes)
        self.small_body_bytes = small_body_bytes
        self._checked: LRU[str, tuple[int, int, int]] = LRU(_CHECKED_BODIES)  # checked_once: path → file ident
        self._checking: dict[str, asyncio.Future[bool]] = {}
        self.inline_body_bytes = inline_body_bytes
        self.write_buffer_bytes = write_buffer_bytes
        self.access_flush_interval = access_flush_interval
        self.index_flush_interval = index_flush_interval
        self.index_batch_rows = index_batch_rows
        self.cleanup_interval = cleanup_interval
        self.orphan_grace = orphan_grace
        self.temp_grace = temp_grace
        self.fsync = fsync
        self._objects = str(self.directory / "objects")
        self._tmp = str(self.directory / "tmp")
        self._journals = str(self.directory / "journal")
        self._index = SqliteIndex(self.directory / "index.sqlite")
        self._journal = RowJournal(self._journals, self._tmp)
        self._started = False
        self._closed = False
        self._ready = asyncio.Event()
        self._started_up = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        self._rebuild_task: asyncio.Task[None] | None = None
        self._evict_lock = asyncio.Lock()
        self._rows_lock = asyncio.Lock()
        self._rows_queued = asyncio.Event()
        self._rows_urgent = asyncio.Event()
        self._writers: set[DiskWriter] = set()
        self._accesses: dict[ObjectHash, float] = {}
        self._totals = Totals(0, 0)
        self._journal_failed = False  # set by a publishing thread
        self._memo = MetaMemo()
        self._counters = dict.fromkeys(
            (
                "hits", "misses", "writes", "refused", "evictions", "deleted", "corrupt_discarded",
                "dangling_discarded", "orphans_removed", "temp_removed", "index_errors",
            ),
            0,
        )  # fmt: skip

    # -- lifecycle -------------------------------------------------------------------------------

    async def start(self) -> None:
        """Open the index and return; temp cleanup, rebuild and reconcile continue in the background."""
        if self._started:
            return
        os.makedirs(self._objects, exist_ok=True)
        os.makedirs(self._tmp, exist_ok=True)
        os.makedirs(self._journals, exist_ok=True)
        needs_rebuild = await self._index.open()
        self._started = True
        self._spawn(self._startup(needs_rebuild))
        self._spawn(self._maintenance_loop())
        self._spawn(self._row_flush_loop())

    async def close(self) -> None:
        """Stop background work, drop unfinished writes, write queued rows and access times, close the index.

        If the queued rows cannot be written, the journal stays behind and the next process ingests it.
        """
        if self._closed or not self._started:
            self._closed = True
            return
        self._closed = True
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for writer in list(self._writers):
            await writer.abort()
        with contextlib.suppress(sqlite3.Error, IndexCorruptError, OSError):
            await self._write_rows()
            await self._index.touch(self._take_accesses())
        self._journal.close()
        await self._index.close()

    async def __aenter__(self) -> DiskStore:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    @property
    def ready(self) -> bool:
        """True once the index lists every stored object (prefix/tag purges are exact from then on)."""
        return self._ready.is_set()

    async def wait_ready(self) -> None:
        await self._ready.wait()

    async def wait_startup(self) -> None:
        """Wait for the whole startup sequence: temp cleanup, rebuild, eviction and the first reconcile."""
        await self._started_up.wait()

    # -- reads (the hit path: files only) ------------------------------------------------------

    async def variants(self, key: str) -> list[StoredMeta]:
        """The complete responses stored for ``key`` (parts are listed by :meth:`parts`)."""
        return await self._list(key, parts=False)

    async def parts(self, key: str) -> list[StoredMeta]:
        """The parts (``edge.http.parts``) stored for ``key``."""
        return await self._list(key, parts=True)

    async def _list(self, key: str, *, parts: bool) -> list[StoredMeta]:
        khash = key_hash(key)
        folder = self._folder(khash)
        try:
            names = os.listdir(folder)
        except FileNotFoundError:
            return []
        found: list[StoredMeta] = []
        prefix = khash + (".p" if parts else ".")
        for name in names:
            if not (name.startswith(prefix) and name.endswith(".meta")):
                continue
            if not parts and name[len(prefix)] == "p":
                continue
            stem = name[: -len(".meta")]
            try:
                loaded = read_meta_file(f"{folder}/{name}", memo=self._memo)
            except CorruptMetaError as error:
                await self._discard_meta(folder, stem, None, f"corrupt meta: {error}")
                continue
            if loaded is None:
                continue
            record, raw = loaded
            if record.meta.key != key or f"{khash}.{variant_hash(record.meta.variant)}" != stem:
                await self._discard_meta(folder, stem, raw[: record.file_size], "meta names another object")
                continue
            found.append(record.meta)
        found.sort(key=lambda meta: meta.variant)
        return found

    async def get(self, key: str, variant: str) -> CachedObject | None:
        """``body=bytes`` (CRC checked) up to ``small_body_bytes``, else ``path`` (length checked), or None."""
        khash, vhash = key_hash(key), variant_hash(variant)
        obj = await self._load_stem(self._folder(khash), f"{khash}.{vhash}", key, variant)
        if obj is None:
            self._counters["misses"] += 1
            return None
        self._counters["hits"] += 1
        self._accesses[(khash, vhash)] = time.time()  # flushed to the index in batches
        return obj

    async def verify(self, obj: CachedObject) -> bool:
        """Fully check an object ``get`` returned (its CRC too, for a file body); discard it if corrupt.

        Meant for a background scrub: it reads the whole body file in a thread. False if the object is
        corrupt (then discarded and counted) or no longer there.
        """
        meta = obj.meta
        if obj.body is not None:
            return len(obj.body) == meta.size and body_checksum(obj.body) == meta.checksum
        if obj.path is None:
            return False
        try:
            size, checksum = await asyncio.to_thread(_checksum_file, str(obj.path), obj.offset)
        except FileNotFoundError:
            return False
        except OSError as error:
            size, checksum = -1, f"unreadable: {error}"
        if size == meta.size and checksum == meta.checksum:
            return True
        folder = self._folder(key_hash(meta.key))
        stem = f"{key_hash(meta.key)}.{variant_hash(meta.variant)}"
        await self._discard_object(folder, stem, obj.path.name, "body checksum mismatch (scrub)")
        return False

    async def checked_once(self, obj: CachedObject) -> bool:
        """Whether a large body (a file, size-checked by each lookup) may be served: its CRC is checked
        in a thread the first time this process serves it and again whenever its file changed — a
        file damaged while the edge was down, or by anything but the edge, is discarded, never
        served.  A body this process wrote and checked is taken as checked."""
        if obj.path is None:
            return True
        path = str(obj.path)
        try:
            ident = _file_ident(path)
        except OSError:
            return False
        if self._checked.get(path) == ident:
            return True
        running = self._checking.get(path)
        if running is None:
            running = asyncio.ensure_future(self.verify(obj))
            self._checking[path] = running
            running.add_done_callback(lambda _done: self._checking.pop(path, None))
        if not await asyncio.shield(running):
            return False
        self._checked[path] = ident
        return True

    async def scrub(self) -> dict[str, int]:
        """Verify every stored object's body checksum; returns how many were checked and discarded.

        Small bodies are checked by the read itself (a corrupt one is discarded there and shows only in
        ``stats()["corrupt_discarded"]``); ``discarded`` counts large bodies whose CRC failed.
        """
        checked = discarded = 0
        for shard in await asyncio.to_thread(self._shards_on_disk):
            idents = await asyncio.to_thread(self._list_shard_metas, shard)
            for folder, stem in idents:
                loaded = await self._load_stem(folder, stem)
                if loaded is None:
                    continue
                checked += 1
                if not await self.verify(loaded):
                    discarded += 1
        return {"checked": checked, "discarded": discarded}

    # -- writes ----------------------------------------------------------------------------------

    async def put(self, meta: StoredMeta, body: bytes) -> bool:
        writer = self.writer(meta.key, meta.variant)
        await writer.write(body)
        return await writer.commit(meta)

    def writer(self, key: str, variant: str) -> DiskWriter:
        self._require_started()
        return DiskWriter(self, key, variant)

    async def update_meta(self, meta: StoredMeta) -> bool:
        """Rewrite the meta file of an existing object (same body: same size and checksum required).

        An inline object is rewritten whole (same body bytes, new metadata, new token), and only if the
        file is still the one we read when we are about to replace it.
        """
        self._require_started()
        khash, vhash = key_hash(meta.key), variant_hash(meta.variant)
        folder, stem = self._folder(khash), f"{khash}.{vhash}"
        try:
            loaded = read_meta_file(f"{folder}/{stem}.meta", with_body=True, memo=self._memo)
        except CorruptMetaError as error:
            await self._discard_meta(folder, stem, None, f"corrupt meta: {error}")
            return False
        if loaded is None:
            return False
        current, raw = loaded
        if (meta.size, meta.checksum) != (current.meta.size, current.meta.checksum) or meta.key != current.meta.key:
            return False
        try:
            if current.inline:
                body = raw[current.file_size :]
                if len(body) != meta.size or body_checksum(body) != meta.checksum:
                    return False  # damaged: the next get() discards it
                head, ref = encode_inline_meta(meta, _token())
                row = self._row(meta, khash, vhash, ref, len(head), time.time())
                replace_sync = functools.partial(
                    self._replace_inline_sync, folder, stem, raw[: current.file_size], head, body, row
                )
            else:
                data = encode_meta(meta, current.body)
                row = self._row(meta, khash, vhash, current.body, len(data), time.time(), _meta_check(data))
                replace_sync = functools.partial(self._replace_meta_sync, folder, stem, data, current.body, row)
        except ValueError:
            return False
        try:
            published = await asyncio.to_thread(replace_sync)
        except OSError as error:
            log.warning("update_meta of %s failed: %s", meta.key, error)
            return False
        if published:
            await self._rows_added()
        return published

    async def delete(self, key: str, variant: str | None = None) -> int:
        self._require_started()
        await self.flush_rows()  # so the rows removed below are not still queued (exact totals)
        khash = key_hash(key)
        folder = self._folder(khash)
        current = self._object_is_current
        if variant is not None:
            stems = [f"{khash}.{variant_hash(variant)}"]
            removed = await asyncio.to_thread(self._delete_stems_sync, folder, stems)
            await self._index_best_effort(lambda: self._index.prune([(khash, variant_hash(variant))], current))
        else:
            removed = await asyncio.to_thread(self._delete_key_sync, folder, khash)
            await self._index_best_effort(lambda: self._index.prune((), current, key_hash=khash))
        self._counters["deleted"] += removed
        return removed

    async def ensure_index(self) -> None:
        """Raise ``IndexIncompleteError`` unless the index can be trusted by a purge (rebuilt if need be)."""
        await self._index_required(self._index.is_built)

    async def delete_prefix(self, prefix: str) -> int:
        rows = await self._index_required(lambda: self._index.find_prefix(prefix))
        return await self._delete_rows(rows)

    async def delete_tags(self, tags: Iterable[str]) -> int:
        wanted = list(tags)
        rows = await self._index_required(lambda: self._index.find_tags(wanted))
        return await self._delete_rows(rows)

    async def objects_matching(self, kind: str, values: Iterable[str]) -> list[tuple[str, str]]:
        """``(key, variant)`` of the objects a purge names: ``kind`` is "urls", "prefix" or "tags"."""
        wanted = list(values)
        rows: list[IndexRow] = []
        if kind == "urls":
            return [
                (meta.key, meta.variant)
                for key in wanted
                for meta in [*await self.variants(key), *await self.parts(key)]
            ]
        if kind == "prefix":
            for prefix in wanted:
                rows.extend(await self._index_required(functools.partial(self._index.find_prefix, prefix)))
        elif kind == "tags":
            rows = await self._index_required(lambda: self._index.find_tags(wanted))
        return [(row.key, row.variant) for row in rows]

    async def delete_stored_before(self, cutoff: float) -> int:
        """Remove every object published before ``cutoff`` (reclaims space after a purge-all)."""
        rows = await self._index_required(lambda: self._index.find_prefix(""))
        return await self._delete_rows([row for row in rows if row.stored_at < cutoff])

    async def clear(self) -> int:
        """Remove every object (walks the files, so objects the index missed go too)."""
        self._require_started()
        await self.wait_ready()
        await self.flush_rows()
        removed = 0
        for shard in await asyncio.to_thread(self._shards_on_disk):
            removed += await asyncio.to_thread(self._clear_shard_sync, shard)
        await self._index_best_effort(lambda: self._index.prune((), self._object_is_current))
        self._accesses.clear()
        self._counters["deleted"] += removed
        return removed

    def stats(self) -> dict[str, int]:
        """Counters of this process; ``objects``/``bytes``: the shared index totals as last seen, plus the
        rows this process has queued for the index (counted as new objects until they are written)."""
        queued_objects, queued_bytes = self._journal.pending()
        return {
            "objects": self._totals.objects + queued_objects,
            "bytes": self._totals.bytes + queued_bytes,
            "ready": int(self.ready),
            **self._counters,
        }

    # -- maintenance -----------------------------------------------------------------------------

    async def flush(self) -> None:
        """Write queued rows and batched access times to the index and refresh the totals ``stats()`` reports."""
        self._require_started()
        await self.flush_rows()
        await self._index_best_effort(lambda: self._index.touch(self._take_accesses()))
        await self._index_best_effort(lambda: self._index.totals())

    async def flush_rows(self) -> None:
        """Write the rows this process queued (published objects) to the index, in one transaction."""
        if self._closed or not self._started:
            return
        await self._write_rows()

    async def cleanup(self, *, orphan_grace: float | None = None, wait: bool = True) -> dict[str, int]:
        """Reconcile files and index now: stale temp files, dangling metas, orphan bodies, index rows.

        ``orphan_grace``: only bodies older than this many seconds count as orphans (a body is published
        just before its meta, so a younger unreferenced body may be a fill about to finish). One process
        at a time: with ``wait=False`` it returns ``{"skipped": 1}`` if another holds the lock.
        """
        self._require_started()
        grace = self.orphan_grace if orphan_grace is None else orphan_grace
        async with self._maintenance_lock(wait) as acquired:
            if not acquired:
                return {"skipped": 1}
            return await self._reconcile(orphan_grace=grace)

    async def evict(self) -> int:
        """If the total exceeds ``max_bytes``, evict least recently used objects until it fits with some
        headroom (``max_bytes`` less 1/64, so the fills that follow do not each evict); returns how many went."""
        self._require_started()
        async with self._evict_lock:
            # Every process's journal first: rows of objects a killed worker stored count too.
            try:
                await self._sync_index()
            except sqlite3.Error as error:
                log.warning("disk cache index error before eviction: %s", error)
            low_water = self.max_bytes - self.max_bytes // _EVICT_HEADROOM
            victims = await self._index_best_effort(
                lambda: self._index.take_lru(self.max_bytes, self._take_accesses(), low_water)
            )
            if not victims:
                return 0
            await asyncio.to_thread(self._unlink_victims_sync, victims)
            # A journal row ingested between choosing the victims and unlinking them may have put a row
            # back: prune what no longer describes a published object.
            idents = [row.ident for row in victims]
            await self._index_best_effort(lambda: self._index.prune(idents, self._object_is_current))
            self._counters["evictions"] += len(victims)
            await self._index_best_effort(lambda: self._index.totals())
            return len(victims)

    # -- internals: reading ----------------------------------------------------------------------

    def _folder(self, khash: str) -> str:
        return f"{self._objects}/{khash[:2]}/{khash[2:4]}"

    async def _load_stem(
        self, folder: str, stem: str, key: str | None = None, variant: str | None = None
    ) -> CachedObject | None:
        """Read and verify one object; follows a meta that was replaced while we read (rule 3).

        An inline object costs one read on the loop (it is small); a separate small body is read in a
        thread, a large one only ``stat``-ed.
        """
        meta_path = f"{folder}/{stem}.meta"
        vanished: str | None = None
        for _attempt in range(3):
            try:
                loaded = read_meta_file(meta_path, with_body=True, memo=self._memo)
            except CorruptMetaError as error:
                await self._discard_meta(folder, stem, None, f"corrupt meta: {error}")
                return None
            if loaded is None:
                return None
            record, raw = loaded
            meta = record.meta
            if (key is not None and (meta.key, meta.variant) != (key, variant)) or (
                key is None and f"{key_hash(meta.key)}.{variant_hash(meta.variant)}" != stem
            ):
                await self._discard_meta(folder, stem, raw[: record.file_size], "meta names another object")
                return None
            if record.inline:
                body = raw[record.file_size :]
                if len(body) != meta.size:
                    problem = f"inline body is {len(body)} bytes, meta says {meta.size}"
                elif body_checksum(body) != meta.checksum:
                    problem = "body checksum mismatch"
                else:
                    return CachedObject(meta=meta, body=body, tier=self.name)
                await self._discard_object(folder, stem, record.body, problem)
                return None
            if record.body == vanished:  # the meta still names the body we found missing: dangling
                await self._discard_meta(folder, stem, raw, "body file missing", dangling=True)
                return None
            body_path = f"{folder}/{record.body}"
            try:
                if meta.size <= self.small_body_bytes:
                    body, checksum = await asyncio.to_thread(_read_body_sync, body_path, meta.size)
                    if len(body) != meta.size:
                        problem = f"body is {len(body)} bytes, meta says {meta.size}"
                    elif checksum != meta.checksum:
                        problem = "body checksum mismatch"
                    else:
                        return CachedObject(meta=meta, body=body, tier=self.name)
                else:
                    actual = os.stat(body_path).st_size
                    if actual == meta.size:
                        return CachedObject(meta=meta, path=Path(body_path), offset=0, tier=self.name)
                    problem = f"body file is {actual} bytes, meta says {meta.size}"
            except FileNotFoundError:
                vanished = record.body
                continue
            except OSError as error:
                problem = f"body unreadable: {error}"
            await self._discard_object(folder, stem, record.body, problem)
            return None
        return None  # replaced again and again while we read: a miss this time

    async def _discard_meta(
        self, folder: str, stem: str, raw: bytes | None, reason: str, *, dangling: bool = False
    ) -> None:
        """Remove a bad meta file (only if it still holds ``raw``, when given) and its index row."""
        log.warning("disk cache: discarding %s/%s.meta: %s", folder, stem, reason)
        removed = await asyncio.to_thread(_unlink_meta_if_same, f"{folder}/{stem}.meta", raw)
        self._counters["dangling_discarded" if dangling else "corrupt_discarded"] += 1
        if removed and self._started:
            khash, vhash = stem.split(".")
            await self._index_best_effort(lambda: self._index.remove([(khash, vhash)]))

    async def _discard_object(self, folder: str, stem: str, body_name: str, reason: str) -> None:
        """Remove a corrupt body and the meta naming it (unless a newer meta already replaced it)."""
        log.warning("disk cache: discarding %s/%s: %s", folder, body_name, reason)
        self._counters["corrupt_discarded"] += 1
        await asyncio.to_thread(self._remove_object_sync, folder, stem, body_name)
        if self._started:
            khash, vhash = stem.split(".")
            await self._index_best_effort(lambda: self._index.remove([(khash, vhash)]))

    def _remove_object_sync(self, folder: str, stem: str, body_name: str) -> bool:
        """Unlink the body and the meta naming it (not a newer meta); True if that meta was still there."""
        meta_path = f"{folder}/{stem}.meta"
        removed = _peek_body_name(meta_path) == body_name and _unlink(meta_path)
        body_path = _body_file(folder, body_name)
        if body_path is not None:
            _unlink(body_path)
        return removed

    # -- internals: writing ----------------------------------------------------------------------

    def _new_temp(self, kind: str) -> tuple[str, int]:
        path = f"{self._tmp}/{os.getpid()}.{_token()}.{kind}.tmp"
        return path, os.open(path, _OPEN_NEW, 0o644)

    def _prepare(self, meta: StoredMeta, inline: bool) -> Publication:
        """Everything a commit needs decided before the thread hop: names, stamped meta, meta bytes, row."""
        if meta.stored_at == 0.0:
            meta = replace(meta, stored_at=time.time())
        khash, vhash = key_hash(meta.key), variant_hash(meta.variant)
        stem = f"{khash}.{vhash}"
        token = _token()
        if inline:
            data, body_name = encode_inline_meta(meta, token)
        else:
            body_name = f"{stem}.{token}.body"
            data = encode_meta(meta, body_name)
        row = self._row(meta, khash, vhash, body_name, len(data), time.time(), _meta_check(data))
        return Publication(meta, khash, vhash, self._folder(khash), stem, body_name, data, inline, row)

    async def _published(self, publication: Publication) -> None:
        """Book-keeping after a publish (its row is already queued): count it, remember it, see to the index."""
        self._counters["writes"] += 1
        decoded = _as_decoded(publication.meta)
        if decoded is not None:
            record = MetaRecord(decoded, publication.body_name, len(publication.data), publication.inline)
            self._memo.put(f"{publication.folder}/{publication.stem}.meta", publication.data, record)
        await self._rows_added()

    async def _rows_added(self) -> None:
        """After a publishing thread queued a row: get it to the index soon, or now if it must be now."""
        if self._closed:
            return  # close() wrote what was queued; a later row stays in the journal for the next process
        if self._journal_failed:  # other processes could not see it in a journal: index it at once
            self._journal_failed = False
            await self.flush_rows()
        if self._totals.bytes + self._journal.pending_bytes > self.max_bytes:
            await self.evict()  # writes the queued rows first, then evicts if the index total is over
            return
        self._rows_queued.set()
        if len(self._journal) >= self.index_batch_rows:
            self._rows_urgent.set()

    def _queue_row(self, row: IndexRow) -> None:
        """On the publishing thread, right after the publish and before ``commit`` returns."""
        if not self._journal.append(row):
            self._journal_failed = True

    def _publish_inline_sync(self, publication: Publication, body: bytes) -> None:
        """A small object: metadata part and body in one temp file, renamed over the meta (rules 1-2 at once)."""
        folder = publication.folder
        meta_path = f"{folder}/{publication.stem}.meta"
        temp, fd = self._new_temp("meta")
        try:
            try:
                _write_all(fd, publication.data, body)
                if self.fsync:
                    os.fsync(fd)
            finally:
                os.close(fd)
            previous = _peek_body_name(meta_path)
            _replace_into(temp, meta_path, folder)
        except BaseException:
            _unlink(temp)
            raise
        previous_body = None if previous is None else _body_file(folder, previous)
        if previous_body is not None:
            _unlink(previous_body)
        self._queue_row(publication.row)

    def _publish_sync(self, publication: Publication, temp_body: str) -> None:
        """Body file first, meta file last, then drop the body the old meta named (rules 1-3)."""
        folder = publication.folder
        body_path = f"{folder}/{publication.body_name}"
        _replace_into(temp_body, body_path, folder)
        if publication.meta.size > self.small_body_bytes:  # (small ones are checked by every read)
            with contextlib.suppress(OSError):  # written and checked by this process: not read back
                self._checked[body_path] = _file_ident(body_path)
        meta_path = f"{folder}/{publication.stem}.meta"
        previous = _peek_body_name(meta_path)
        try:
            self._write_meta_sync(meta_path, publication.data)
        except BaseException:
            _unlink(body_path)
            raise
        previous_body = None if previous is None else _body_file(folder, previous)
        if previous_body is not None and previous != publication.body_name:
            _unlink(previous_body)
        self._queue_row(publication.row)

    def _replace_meta_sync(self, folder: str, stem: str, data: bytes, body_name: str, row: IndexRow) -> bool:
        """update_meta's write: only if the body is still there (else we would publish a dangling meta)."""
        if not os.path.exists(f"{folder}/{body_name}"):
            return False
        self._write_meta_sync(f"{folder}/{stem}.meta", data)
        self._queue_row(row)
        return True

    def _replace_inline_sync(
        self, folder: str, stem: str, previous: bytes, head: bytes, body: bytes, row: IndexRow
    ) -> bool:
        """update_meta of an inline object: only over the very file it read (``previous``: its metadata part)."""
        meta_path = f"{folder}/{stem}.meta"
        temp, fd = self._new_temp("meta")
        try:
            try:
                _write_all(fd, head, body)
                if self.fsync:
                    os.fsync(fd)
            finally:
                os.close(fd)
            if _inline_token(meta_path) != previous[22:38]:  # replaced or deleted since we read it
                _unlink(temp)
                return False
            os.replace(temp, meta_path)
        except BaseException:
            _unlink(temp)
            raise
        self._queue_row(row)
        return True

    def _write_meta_sync(self, meta_path: str, data: bytes) -> None:
        temp, fd = self._new_temp("meta")
        try:
            try:
                _write_all(fd, data)
                if self.fsync:
                    os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(temp, meta_path)
        except BaseException:
            _unlink(temp)
            raise

    def _row(
        self, meta: StoredMeta, khash: str, vhash: str, body: str, meta_bytes: int, access: float, check: str = ""
    ) -> IndexRow:
        """The index row of an object; ``check``: the CRC in its separate-body meta file's header."""
        return IndexRow(
            key_hash=khash,
            variant_hash=vhash,
            key=meta.key,
            variant=meta.variant,
            body=body,
            size=meta.size + meta_bytes,
            last_access=access,
            stored_at=meta.stored_at,
            tags=meta.tags,
            check=check,
        )

    # -- internals: deleting ---------------------------------------------------------------------

    async def _delete_rows(self, rows: Sequence[IndexRow]) -> int:
        removed = 0
        by_folder: dict[str, list[str]] = {}
        for row in rows:
            by_folder.setdefault(self._folder(row.key_hash), []).append(f"{row.key_hash}.{row.variant_hash}")
        for folder, stems in by_folder.items():
            removed += await asyncio.to_thread(self._delete_stems_sync, folder, stems)
        idents = [row.ident for row in rows]
        if idents:
            await self._index_best_effort(lambda: self._index.prune(idents, self._object_is_current))
        self._counters["deleted"] += removed
        return removed

    def _delete_stems_sync(self, folder: str, stems: Iterable[str]) -> int:
        """Meta first (the object stops existing), then its body."""
        removed = 0
        for stem in stems:
            meta_path = f"{folder}/{stem}.meta"
            body = _peek_body_name(meta_path)
            if _unlink(meta_path):
                removed += 1
            body_path = None if body is None else _body_file(folder, body)
            if body_path is not None:
                _unlink(body_path)
        return removed

    def _delete_key_sync(self, folder: str, khash: str) -> int:
        try:
            names = os.listdir(folder)
        except FileNotFoundError:
            return 0
        stems = [name[: -len(".meta")] for name in names if name.startswith(khash + ".") and name.endswith(".meta")]
        return self._delete_stems_sync(folder, stems)

    def _clear_shard_sync(self, shard: str) -> int:
        removed = 0
        for folder in self._shard_folders(shard):
            try:
                names = os.listdir(folder)
            except FileNotFoundError:
                continue
            for name in names:  # metas first, so no meta ever names a body that is already gone
                if name.endswith(".meta") and _unlink(f"{folder}/{name}"):
                    removed += 1
            for name in names:
                if name.endswith(".body"):
                    _unlink(f"{folder}/{name}")
        return removed

    def _unlink_victims_sync(self, victims: Iterable[IndexRow]) -> None:
        for row in victims:
            folder, stem = self._folder(row.key_hash), f"{row.key_hash}.{row.variant_hash}"
            meta_path = f"{folder}/{stem}.meta"
            current = _peek_body_name(meta_path)
            if current == row.body or current is None:
                _unlink(meta_path)
            # the row's body is no longer needed either way: evicted, or superseded by a newer fill
            body_path = _body_file(folder, row.body)
            if body_path is not None:
                _unlink(body_path)

    # -- internals: index access -----------------------------------------------------------------

    async def _index_best_effort(self, call: Callable[[], Awaitable[T]]) -> T | None:
        """Index updates that files can do without: log, count, heal later (skipped once closed)."""
        if self._closed or not self._started:
            return None
        try:
            result = await call()
        except IndexCorruptError as error:
            self._counters["index_errors"] += 1
            log.warning("disk cache index is corrupt (%s): rebuilding", error)
            self._schedule_rebuild(reset=True)
        except sqlite3.Error as error:
            self._counters["index_errors"] += 1
            log.warning("disk cache index error: %s", error)
        else:
            if isinstance(result, Totals):
                self._totals = result
            return result
        return None

    async def _index_required(self, make: Callable[[], Awaitable[T]]) -> T:
        """Index look-ups a purge depends on: run ``make`` on a complete index that holds every row queued
        by any process (``_sync_index``); rebuild once if it is corrupt.

        "Complete" also means: not a database file that was created afresh because the old one was lost
        (``SqliteIndex.reopened``). Noticing that clears ``ready`` at once and rebuilds, and a look-up
        during which it happened is done again, so a purge never trusts a half-filled index.
        """
        self._require_started()
        corrupt_retries = 1
        result: T | None = None
        for _attempt in range(5):
            await self.wait_ready()
            try:
                await self._sync_index()
                await self._rebuild_if_replaced()
                if not self.ready:
                    continue
                if not await self._index.is_built():  # a rebuild failed (logged): again, never trusted half-filled
                    self._schedule_rebuild(reset=False)
                    continue
                result = await make()
                if self.ready and not self._index.reopened:
                    return result
            except IndexCorruptError:
                if not corrupt_retries:
                    raise
                corrupt_retries -= 1
                self._counters["index_errors"] += 1
                self._schedule_rebuild(reset=True)
        if result is None:  # the database kept being replaced: one last plain attempt
            await self.wait_ready()
            await self._sync_index()
            if not await self._index.is_built():
                raise IndexIncompleteError(f"disk cache index {self._index.path} could not be rebuilt (see the log)")
            result = await make()
        return result

    async def _sync_index(self) -> None:
        """Our queued rows, then the rows in every other process's journal, into the index.

        After this, the index lists every object whose ``commit`` returned before we started (the
        guarantee purges need: see ``edge.store.index``). Journals of dead processes are unlinked once
        ingested. Raises what the index raises (a purge must not pretend it found everything).
        """
        for _attempt in range(3):
            await self.flush_rows()
            if not self._journal.pending()[0]:
                break
        else:
            # Our own rows could not be written (the index is locked or failing): a purge that went
            # ahead would not see them, so it fails instead of pretending it found everything.
            raise sqlite3.OperationalError("the disk cache index cannot take this process's queued rows")
        rows, orphaned = await asyncio.to_thread(read_journals, self._journals, self._journal.own_paths())
        ingested = False
        try:
            if rows:
                self._totals = await self._index.ingest(rows, self._object_is_current)
            ingested = True
        finally:
            await asyncio.to_thread(release_journals, orphaned, ingested)

    async def _rebuild_if_replaced(self) -> None:
        """Start a rebuild if the database file was replaced or removed and the new one is not built.

        ``ready`` is cleared before the check, so a purge running meanwhile waits instead of querying a
        database that may be empty.
        """
        if not self._index.reopened or self._closed:
            return
        self._index.reopened = False
        self._ready.clear()
        built = False
        try:
            built = await self._index.is_built()
        finally:
            if not built:
                self._schedule_rebuild(reset=False)
            if self._rebuild_task is None or self._rebuild_task.done():  # else the rebuild sets it when done
                self._ready.set()

    async def _write_rows(self) -> None:
        """Take the queue and write it in one transaction; on a passing error put it back for next time."""
        async with self._rows_lock:
            batch = self._journal.take()
            if not batch.rows and not batch.retired:
                return
            ingested = False
            try:
                if batch.rows:
                    self._totals = await self._index.ingest(batch.rows, self._object_is_current)
                ingested = True
            except IndexCorruptError as error:  # the rebuild reads every meta file: these rows included
                self._counters["index_errors"] += 1
                log.warning("disk cache index is corrupt (%s): rebuilding", error)
                self._schedule_rebuild(reset=True)
                ingested = True
            except sqlite3.Error as error:
                self._counters["index_errors"] += 1
                log.warning("disk cache index error (queued rows kept for the next flush): %s", error)
            finally:  # also when cancelled: then the rows go back to the queue (ingesting twice is harmless)
                self._journal.done(batch, ingested)

    def _object_is_current(self, row: IndexRow) -> bool:
        """Whether ``row`` was made from the meta file that is published now (runs on the index thread,
        see ``ingest``): an inline one with the row's token; a separate-body one with the row's CRC (if
        the row has one: ``update_meta`` keeps the body name) whose body file is still there."""
        folder = self._folder(row.key_hash)
        head = _meta_head(f"{folder}/{row.key_hash}.{row.variant_hash}.meta")
        if row.body.endswith(INLINE_SUFFIX):
            return head.startswith(_INLINE_MAGIC) and head[22:38] + INLINE_SUFFIX.encode() == row.body.encode()
        if row.check and (not head.startswith(_META_MAGIC) or head[4:12] != row.check.encode()):
            return False
        return os.path.exists(f"{folder}/{row.body}")

    def _schedule_rebuild(self, *, reset: bool) -> bool:
        """Start a rebuild (``ready`` is clear until it ends); False if one is running or we are closed."""
        if self._closed or (self._rebuild_task is not None and not self._rebuild_task.done()):
            return False
        self._ready.clear()
        self._rebuild_task = self._spawn(self._rebuild(reset=reset))
        return True

    async def _rebuild(self, *, reset: bool) -> None:
        """Refill the index from the meta files (after it was missing, corrupt, or never finished).

        ``ready`` is set even if this fails (logged): purges must not hang forever; the index stays
        marked unbuilt, so the next start tries again.
        """
        try:
            async with self._maintenance_lock(wait=True):
                if reset:
                    await self._index.reset()
                elif await self._index.is_built():
                    return  # another process finished it while we waited for the lock
                log.info("disk cache: rebuilding index %s from meta files", self._index.path)
                await self._reconcile(orphan_grace=self.orphan_grace)
                await self._index.mark_built()
        finally:
            self._ready.set()

    def _take_accesses(self) -> dict[ObjectHash, float]:
        accesses, self._accesses = self._accesses, {}
        return accesses

    def _require_started(self) -> None:
        if not self._started or self._closed:
            raise RuntimeError("DiskStore is not running: await start() first (and not after close())")

    # -- internals: background -------------------------------------------------------------------

    def _spawn(self, coro: Awaitable[None]) -> asyncio.Task[None]:
        async def run() -> None:
            try:
                await coro
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("disk cache background task failed")

        task = asyncio.get_running_loop().create_task(run())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _startup(self, needs_rebuild: bool) -> None:
        try:
            self._counters["temp_removed"] += await asyncio.to_thread(self._clean_temp_sync)
            if needs_rebuild:
                self._schedule_rebuild(reset=False)
                await self.wait_ready()
            else:
                self._ready.set()
            try:  # rows a process that died had queued (a rebuild has done it already)
                await self._sync_index()
            except (OSError, sqlite3.Error, IndexCorruptError) as error:
                log.warning("disk cache: could not ingest index journals: %s", error)
            try:
                await self.flush()
                if self._totals.bytes > self.max_bytes:
                    await self.evict()
                if not needs_rebuild:
                    await self.cleanup(wait=False)
            except (OSError, sqlite3.Error) as error:  # a full disk, say: serving goes on, fills are refused
                log.warning("disk cache: startup maintenance failed: %s", error)
        finally:
            self._ready.set()
            self._started_up.set()

    async def _row_flush_loop(self) -> None:
        """Write queued rows ``index_flush_interval`` after the first one, or as soon as a batch is full."""
        while True:
            await self._rows_queued.wait()
            if not self._rows_urgent.is_set():
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self.index_flush_interval):
                        await self._rows_urgent.wait()
            self._rows_queued.clear()
            self._rows_urgent.clear()
            try:
                await self.flush_rows()
                if self._totals.bytes > self.max_bytes:
                    await self.evict()
            except (OSError, sqlite3.Error, IndexCorruptError) as error:
                log.warning("disk cache index flush: %s", error)

    async def _maintenance_loop(self) -> None:
        next_cleanup = time.monotonic() + self.cleanup_interval * (0.5 + secrets.randbelow(1000) / 1000)
        while True:
            await asyncio.sleep(self.access_flush_interval)
            try:
                await self.flush()
                await self._rebuild_if_replaced()
                if time.monotonic() >= next_cleanup:
                    next_cleanup = time.monotonic() + self.cleanup_interval
                    await self.cleanup(wait=False)
            except (OSError, sqlite3.Error, IndexCorruptError) as error:
                log.warning("disk cache maintenance: %s", error)

    @contextlib.asynccontextmanager
    async def _maintenance_lock(self, wait: bool) -> AsyncIterator[bool]:
        """One reconcile/rebuild at a time across processes (``flock`` on ``maintenance.lock``)."""
        fd = os.open(self.directory / "maintenance.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if not wait:
                        yield False
                        return
                    await asyncio.sleep(0.05)
            yield True
        finally:
            os.close(fd)

    def _clean_temp_sync(self) -> int:
        """Remove temp files whose writer process is gone, or that are older than ``temp_grace``."""
        removed = 0
        now = time.time()
        try:
            names = os.listdir(self._tmp)
        except FileNotFoundError:
            return 0
        for name in names:
            path = f"{self._tmp}/{name}"
            pid_text = name.split(".", 1)[0]
            try:
                stale = not pid_text.isdigit() or not pid_alive(int(pid_text))
                stale = stale or now - os.stat(path).st_mtime > self.temp_grace
            except FileNotFoundError:
                continue
            if stale and _unlink(path):
                removed += 1
        return removed

    def _shards_on_disk(self) -> set[str]:
        try:
            return {name for name in os.listdir(self._objects) if name in _SHARD_NAMES}
        except FileNotFoundError:
            return set()

    def _shard_folders(self, shard: str) -> list[str]:
        top = f"{self._objects}/{shard}"
        try:
            return [f"{top}/{sub}" for sub in sorted(os.listdir(top))]
        except FileNotFoundError:
            return []

    def _list_shard_metas(self, shard: str) -> list[tuple[str, str]]:
        found: list[tuple[str, str]] = []
        for folder in self._shard_folders(shard):
            with contextlib.suppress(FileNotFoundError):
                found.extend((folder, name[: -len(".meta")]) for name in os.listdir(folder) if name.endswith(".meta"))
        return found

    async def _reconcile(self, *, orphan_grace: float) -> dict[str, int]:
        """Walk every meta file: fix the files (rule 3), then make the index agree with them."""
        await self._sync_index()  # queued rows first (so they are not taken for missing ones), dead journals too
        started = time.time()
        counts = {"temp_removed": await asyncio.to_thread(self._clean_temp_sync)}
        for name in ("objects", "corrupt_discarded", "dangling_discarded", "orphans_removed", "rows_added",
                     "rows_removed"):  # fmt: skip
            counts[name] = 0
        on_disk = await asyncio.to_thread(self._shards_on_disk)
        for shard in sorted(on_disk | await self._index.shards_in_use()):
            scan = await asyncio.to_thread(self._scan_shard_sync, shard, orphan_grace)
            for name in ("corrupt_discarded", "dangling_discarded", "orphans_removed"):
                counts[name] += scan[name]  # type: ignore[operator]
            rows: list[IndexRow] = scan["rows"]  # type: ignore[assignment]
            counts["objects"] += len(rows)
            existing = await self._index.rows_in_shard(shard)
            missing = [row for row in rows if existing.get(row.ident, ("",))[0] != row.body]
            if missing:  # a purge may have removed some since the scan read them: don't resurrect rows
                missing = await asyncio.to_thread(self._still_published, missing)
            seen = {row.ident for row in rows}
            stale = [ident for ident, (_, recorded) in existing.items() if ident not in seen and recorded < started]
            if missing:
                self._totals = await self._index.ingest(missing, self._object_is_current)
            if stale:
                self._totals = await self._index.remove(stale)
            counts["rows_added"] += len(missing)
            counts["rows_removed"] += len(stale)
        for name in ("corrupt_discarded", "dangling_discarded", "orphans_removed", "temp_removed"):
            self._counters[name] += counts[name]
        return counts

    def _still_published(self, rows: list[IndexRow]) -> list[IndexRow]:
        return [row for row in rows if self._object_is_current(row)]

    def _scan_shard_sync(self, shard: str, orphan_grace: float) -> dict[str, object]:
        rows: list[IndexRow] = []
        corrupt = dangling = orphans = 0
        now = time.time()
        for folder in self._shard_folders(shard):
            try:
                names = os.listdir(folder)
            except FileNotFoundError:
                continue
            referenced: set[str] = set()
            for name in names:
                if not name.endswith(".meta"):
                    continue
                stem = name[: -len(".meta")]
                outcome = self._check_meta_sync(folder, stem)
                if isinstance(outcome, IndexRow):
                    rows.append(outcome)
                    referenced.add(outcome.body)
                elif outcome == "corrupt":
                    corrupt += 1
                elif outcome == "dangling":
                    dangling += 1
            for name in names:
                if not name.endswith(".body") or name in referenced:
                    continue
                path = f"{folder}/{name}"
                parts = name.split(".", 2)
                if len(parts) == 3 and _peek_body_name(f"{folder}/{parts[0]}.{parts[1]}.meta") == name:
                    continue  # published after our listing: referenced after all
                try:
                    young = now - os.stat(path).st_mtime < orphan_grace
                except FileNotFoundError:
                    continue
                if not young and _unlink(path):
                    orphans += 1
        return {"rows": rows, "corrupt_discarded": corrupt, "dangling_discarded": dangling, "orphans_removed": orphans}

    def _check_meta_sync(self, folder: str, stem: str) -> IndexRow | str | None:
        """One meta file during a scan: its index row if the object is sound, else what was wrong."""
        meta_path = f"{folder}/{stem}.meta"
        try:
            loaded = read_meta_file(meta_path)
            status = os.stat(meta_path)
        except CorruptMetaError as error:
            log.warning("disk cache: discarding %s: corrupt meta: %s", meta_path, error)
            _unlink_meta_if_same(meta_path, None)
            return "corrupt"
        except FileNotFoundError:
            return None
        if loaded is None:
            return None
        record, raw = loaded
        khash, vhash = key_hash(record.meta.key), variant_hash(record.meta.variant)
        if f"{khash}.{vhash}" != stem:
            _unlink_meta_if_same(meta_path, raw[: record.file_size])
            return "corrupt"
        if record.inline:
            size = status.st_size - record.file_size
            if size == record.meta.size:
                return self._row(record.meta, khash, vhash, record.body, record.file_size, status.st_mtime)
            log.warning("disk cache: discarding %s: inline body is %d bytes, meta says %d", meta_path, size,
                        record.meta.size)  # fmt: skip
            return "corrupt" if self._remove_object_sync(folder, stem, record.body) else None
        try:
            size = os.stat(f"{folder}/{record.body}").st_size
        except FileNotFoundError:
            if _unlink_meta_if_same(meta_path, raw):  # still the same meta naming a missing body
                return "dangling"
            return None
        if size != record.meta.size:
            log.warning("disk cache: discarding %s: body is %d bytes, meta says %d", meta_path, size, record.meta.size)
            self._remove_object_sync(folder, stem, record.body)
            return "corrupt"
        return self._row(record.meta, khash, vhash, record.body, record.file_size, status.st_mtime, _meta_check(raw))


@dataclass(frozen=True, slots=True)
class Publication:
    """A fill about to become visible: where its files go, the meta bytes to write last, its index row.

    ``inline``: ``data`` is the metadata part of a one-file object and the body follows it in the same
    file; ``body_name`` is then its ``"<token>.inline"`` reference rather than a file name.
    """

    meta: StoredMeta
    key_hash: str
    variant_hash: str
    folder: str
    stem: str
    body_name: str
    data: bytes
    inline: bool
    row: IndexRow


class DiskWriter:
    """Streams a fill into a temp file, checksumming as it goes; publishes on a verified commit.

    Chunks are buffered up to ``write_buffer_bytes`` and written (and checksummed) in a worker thread,
    so small chunks don't each cost a thread hop. Store-side trouble (too big, disk full) never raises
    from ``write``: the writer turns *refused* and ``commit`` returns False, so the handler keeps
    streaming to its client regardless. One task drives a writer; calls must not overlap.
    """

    def __init__(self, store: DiskStore, key: str, variant: str) -> None:
        self._store = store
        self._key = key
        self._variant = variant
        self._chunks: list[bytes] = []
        self._buffered = 0
        self._size = 0
        self._checksum = BodyChecksum()
        self._fd: int | None = None
        self._temp: str | None = None
        self._state = "open"  # open -> committed | aborted | refused
        store._writers.add(self)

    @property
    def refused(self) -> bool:
        return self._state == "refused"

    @property
    def temp_path(self) -> str | None:
        """The temp file the body is being written to, once the first bytes went to disk."""
        return self._temp if self._state == "open" else None

    async def write(self, chunk: bytes) -> None:
        if self._state == "refused":
            return
        if self._state != "open":
            raise RuntimeError(f"write after {self._state}")
        self._size += len(chunk)
        if self._size > self._store.max_object_bytes:
            await self._refuse("larger than max_object_bytes")
            return
        self._chunks.append(chunk)
        self._buffered += len(chunk)
        if self._buffered >= self._store.write_buffer_bytes:
            await self._flush()

    async def commit(self, meta: StoredMeta) -> bool:
        """Write what is buffered, verify size and checksum, publish and queue the index row: at most one
        thread hop.

        A body of at most ``inline_body_bytes`` that is still all in the buffer is published inline:
        one file (metadata, then body) written in ``tmp/`` and renamed into place, on the event loop.
        """
        if self._state not in ("open", "refused"):
            raise RuntimeError(f"commit after {self._state}")
        store = self._store
        publication: Publication | None = None
        if self._state == "open":
            if (meta.key, meta.variant) != (self._key, self._variant):
                await self._refuse("meta names another object")
            else:
                inline = self._fd is None and self._size <= store.inline_body_bytes
                try:
                    publication = store._prepare(meta, inline)
                except ValueError as error:  # e.g. a NaN time: not representable in the meta file
                    await self._refuse(f"bad meta: {error}")
        store._writers.discard(self)
        if publication is None:
            store._counters["refused"] += 1
            return False
        data = b"".join(self._chunks)
        self._chunks.clear()
        self._state = "committed"
        try:
            if publication.inline:
                # One small file written and renamed: cheaper on the loop than a hop to a thread and
                # back (the hop alone cost more than the write in a profile of 1 KiB misses).
                published = self._commit_sync(data, publication)
            else:
                published = await asyncio.to_thread(self._commit_sync, data, publication)
        except OSError as error:
            log.warning("disk cache: could not store %s: %s", meta.key, error)
            published = False
        if not published:
            store._counters["refused"] += 1
            return False
        await store._published(publication)
        return True

    def _commit_sync(self, data: bytes, publication: Publication) -> bool:
        meta = publication.meta
        if publication.inline:
            if (len(data), body_checksum(data)) != (meta.size, meta.checksum):
                log.debug("disk cache: refusing %s: got %d bytes, meta differs", meta.key, len(data))
                return False
            self._store._publish_inline_sync(publication, data)
            return True
        try:
            self._write_sync(data, final=True)
            if (self._size, self._checksum.hexdigest()) != (meta.size, meta.checksum):
                log.debug("disk cache: refusing %s: wrote %d bytes, meta differs", meta.key, self._size)
                return False
            assert self._temp is not None
            self._store._publish_sync(publication, self._temp)
            self._temp = None  # it is the body file now
            return True
        finally:
            self._discard_sync()

    async def abort(self) -> None:
        if self._state in ("committed", "aborted"):
            return
        self._state = "aborted"
        self._chunks.clear()
        self._store._writers.discard(self)
        if self._fd is not None or self._temp is not None:
            await asyncio.to_thread(self._discard_sync)

    async def _flush(self) -> None:
        data = b"".join(self._chunks)
        self._chunks.clear()
        self._buffered = 0
        try:
            await asyncio.to_thread(self._write_sync, data, False)
        except OSError as error:
            await self._refuse(f"write failed: {error}")

    def _write_sync(self, data: bytes, final: bool) -> None:
        if self._fd is None:
            self._temp, self._fd = self._store._new_temp("body")
        self._checksum.update(data)
        view = memoryview(data)
        while view:
            view = view[os.write(self._fd, view) :]
        if final:
            fd, self._fd = self._fd, None
            try:
                if self._store.fsync:
                    os.fsync(fd)
            finally:
                os.close(fd)

    async def _refuse(self, reason: str) -> None:
        log.debug("disk cache: not storing %s: %s", self._key, reason)
        self._state = "refused"
        self._chunks.clear()
        if self._fd is not None or self._temp is not None:
            await asyncio.to_thread(self._discard_sync)

    def _discard_sync(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)
        if self._temp is not None:
            _unlink(self._temp)
            self._temp = None


def _read_body_sync(path: str, size: int) -> tuple[bytes, str]:
    """The body (one byte more than expected is read, so a longer file shows) and its checksum."""
    fd = os.open(path, _OPEN_READ)
    try:
        data = _read_all(fd, size + 1)
    finally:
        os.close(fd)
    return data, body_checksum(data) if len(data) == size else ""


def _checksum_file(path: str, offset: int) -> tuple[int, str]:
    checksum = BodyChecksum()
    fd = os.open(path, _OPEN_READ)
    try:
        os.lseek(fd, offset, os.SEEK_SET)
        while chunk := os.read(fd, 1024 * 1024):
            checksum.update(chunk)
    finally:
        os.close(fd)
    return checksum.size, checksum.hexdigest()


def _unlink_meta_if_same(meta_path: str, raw: bytes | None) -> bool:
    """Unlink a bad meta file unless it changed since we judged it (then a writer replaced it: keep).

    ``raw`` is what identified the file we judged (``bytes[:record.file_size]`` from ``read_meta_file``:
    the whole file, or an inline file's metadata part with its unique token). ``raw=None`` (we could
    not even read it): unlink only if it is still unreadable or still corrupt.
    """
    try:
        fd = os.open(meta_path, _OPEN_READ)
    except FileNotFoundError:
        return False
    except OSError:
        return _unlink(meta_path)
    try:
        current = _read_all(fd, len(raw) if raw is not None else _META_MAX_BYTES + 1)
    except OSError:
        current = None
    finally:
        os.close(fd)
    if raw is not None:
        if current != raw:
            return False
    elif current is not None:
        try:
            decode_meta(current)
            return False  # it is valid now: a writer replaced the corrupt one
        except CorruptMetaError:
            pass
    return _unlink(meta_path)
