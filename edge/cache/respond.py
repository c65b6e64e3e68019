"""Sending responses: stored objects (RFC 9111 §4 plus conditionals, ranges, multipart, sendfile),
origin responses relayed as they arrive, and the edge's own short errors.

What every response from the edge carries is decided here: the stored or relayed fields minus
framing (recomputed per transfer) and minus what this cache generates (``Age``, ``X-Cache``),
``Via``, and our member of ``Cache-Status`` (RFC 9211), ``X-Cache`` and ``Server-Timing``.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import secrets
import time
from collections.abc import Iterable, Sequence

from edge import faultlog
from edge.cache.context import CacheContext
from edge.errors import OriginBodyBroken
from edge.http import forwarding, policy, ranges, validation
from edge.http.cachestatus import CacheStatus, append_cache_status, x_cache_value
from edge.http.coding import MARK_FIELD
from edge.http.headers import HeaderList, get_first
from edge.server.exchange import Exchange
from edge.store.base import CachedObject
from edge.store.tiered import body_fd
from edge.upstream import OriginResponse, decode_raw_headers, iter_body

log = logging.getLogger("edge.respond")

# Framing fields describe one transfer, not the stored representation: never stored, recomputed.
FRAMING_FIELDS = ("content-length", "transfer-encoding")
SURROGATE_FIELDS = ("surrogate-key", "cache-tag")
# Replaced by this cache in what it sends (the stored Age still feeds RFC 9111 §4.2.3's age_value).
GENERATED_FIELDS = ("age", "x-cache")
_OURS = frozenset({"cache-status", "x-cache", "server-timing"})


def without_fields(headers: Iterable[tuple[str, str]], names: Iterable[str]) -> list[tuple[str, str]]:
    dropped = {name.lower() for name in names}
    return [(name, value) for name, value in headers if name.lower() not in dropped]


def client_headers(
    ctx: CacheContext, stored: Iterable[tuple[str, str]], *, keep_age: bool = False
) -> list[tuple[str, str]]:
    """Stored or received fields as sent to a client: framing recomputed, our own fields replaced.

    ``keep_age``: a response relayed as it arrives keeps the origin's ``Age`` (RFC 9111 §5.1: it
    tells downstream caches how old the response already was); one served from storage gets a
    freshly computed ``Age`` instead.
    """
    dropped = (*FRAMING_FIELDS, "x-cache", MARK_FIELD) if keep_age else (*FRAMING_FIELDS, *GENERATED_FIELDS, MARK_FIELD)
    headers = without_fields(stored, dropped)
    if not ctx.cache_settings.expose_surrogate_keys:
        headers = without_fields(headers, SURROGATE_FIELDS)
    headers.append(("Via", forwarding.via_entry((1, 1), ctx.node_name)))
    return headers


@functools.lru_cache(maxsize=8192)
def status_values(existing: tuple[str, ...], status: CacheStatus) -> tuple[str, str]:
    """``Cache-Status`` and ``X-Cache`` values, memoised: responses repeat the same few verdicts."""
    return append_cache_status(existing, status), x_cache_value(status)


def server_timing(ex: Exchange) -> str:
    """``Server-Timing``: lookup, origin (when contacted) and total so far, in milliseconds."""
    parts = []
    if ex.lookup_ms is not None:
        parts.append(f"lookup;dur={ex.lookup_ms:.3f}")
    if ex.origin_ms is not None:
        parts.append(f"origin;dur={ex.origin_ms:.3f}")
    parts.append(f"total;dur={(time.perf_counter() - ex.head.started) * 1000:.3f}")
    return ", ".join(parts)


def finish_headers(
    ctx: CacheContext, ex: Exchange, status_code: int, headers: list[tuple[str, str]], status: CacheStatus | None
) -> list[tuple[str, str]]:
    """Our member of Cache-Status appended to what upstream caches said, X-Cache, Server-Timing; counted."""
    existing = tuple(value for name, value in headers if name.lower() == "cache-status")
    kept = [(name, value) for name, value in headers if name.lower() not in _OURS]
    if status is not None and status.fwd is not None and ex.origin_name and ex.site is not None and ex.site.choice:
        status = dataclasses.replace(status, fwd_origin=ex.origin_name)  # which of the site's origins answered
    if status is not None:
        value, legacy = status_values(existing, status)
        kept.append(("Cache-Status", value))
        kept.append(("X-Cache", legacy))
        ex.cache_label = legacy
        ex.cache_status = value
        ctx.counters.count(legacy)
    kept.append(("Server-Timing", server_timing(ex)))
    code_class = f"{status_code // 100}xx"
    ctx.counters.by_code_class[code_class] = ctx.counters.by_code_class.get(code_class, 0) + 1
    return kept


async def error(
    ctx: CacheContext,
    ex: Exchange,
    status_code: int,
    reason: str,
    status: CacheStatus | None = None,
    extra: Sequence[tuple[str, str]] = (),
) -> None:
    """A short text error the client (or its operator) can read; never cached downstream."""
    headers = [
        ("Content-Type", "text/plain; charset=utf-8"),
        ("Cache-Control", "no-store"),
        ("Via", f"1.1 {ctx.node_name}"),
        *extra,
    ]
    await ex.respond(status_code, finish_headers(ctx, ex, status_code, headers, status), f"{reason}\n".encode())


# -- stored objects --------------------------------------------------------------------------------


async def stored(
    ctx: CacheContext, ex: Exchange, received: HeaderList, found: CachedObject, age: float, status: CacheStatus
) -> None:
    """Answer from a stored response: 304/412 for the client's conditionals, 206/416 for ranges."""
    meta = found.meta
    method = ex.head.method
    age_field = ("Age", str(policy.age_header_value(age)))
    conditional = validation.evaluate_client_conditionals(
        method, received, meta.status, meta.headers, response_time=meta.response_time
    )
    if conditional == 304:
        not_modified = client_headers(ctx, validation.not_modified_headers(meta.headers))
        not_modified.append(age_field)
        await ex.respond(304, finish_headers(ctx, ex, 304, not_modified, status))
        return
    if conditional == 412:
        await error(ctx, ex, 412, "precondition failed", status)
        return
    headers = client_headers(ctx, meta.headers)
    headers.append(age_field)
    parts: list[ranges.ByteRange] = []
    range_header = ranges.range_value(received, method) if meta.status == 200 else None
    if range_header is not None and ranges.if_range_allows(get_first(received, "if-range"), meta.headers):
        result = ranges.parse_range(range_header, meta.size)
        if result.status == 416:
            await error(ctx, ex, 416, "range not satisfiable", status,
                        [("Content-Range", ranges.unsatisfied_content_range(meta.size))])  # fmt: skip
            return
        if result.status == 206:
            parts = list(result.ranges)
    if len(parts) > 1:
        await _multipart(ctx, ex, found, headers, parts, status)
        return
    if len(parts) == 1:
        first, end = parts[0].first, parts[0].last + 1
        headers.append(("Content-Range", ranges.content_range(parts[0].first, parts[0].last, meta.size)))
        code, reason = 206, None
    else:
        first, end = 0, meta.size
        code, reason = meta.status, meta.reason or None
    headers = finish_headers(ctx, ex, code, headers, status)
    if method != "HEAD":
        ctx.counters.bytes_from_cache += end - first
    if found.body is not None:
        body = found.body if (first, end) == (0, len(found.body)) else found.body[first:end]
        await ex.respond(code, headers, body, reason)
        return
    await ex.start(code, reason, headers, length=end - first)
    await _file_body(ctx, ex, found, first, end)
    await ex.end()


async def write_stored(ctx: CacheContext, ex: Exchange, found: CachedObject, start: int, end: int) -> None:
    """Send bytes ``start``..``end`` (exclusive) of a stored body, from memory or its file."""
    if end <= start or ex.head.method == "HEAD":
        return
    ctx.counters.bytes_from_cache += end - start
    if found.body is not None:
        await ex.write(found.body if (start, end) == (0, len(found.body)) else found.body[start:end])
        return
    await _file_body(ctx, ex, found, start, end)


async def _file_body(ctx: CacheContext, ex: Exchange, found: CachedObject, start: int, end: int) -> None:
    if end <= start or ex.head.method == "HEAD":
        return
    try:
        await ex.sendfile(body_fd(found), found.offset + start, end - start, zero_copy=ctx.settings.sendfile)
    except OSError as exc:
        if isinstance(exc, ConnectionError):
            raise
        log.warning("stored body of %s unreadable (%s); cutting the response", found.meta.key[:200], exc)
        ex.abort()


async def _multipart(
    ctx: CacheContext,
    ex: Exchange,
    found: CachedObject,
    headers: list[tuple[str, str]],
    parts: list[ranges.ByteRange],
    status: CacheStatus,
) -> None:
    meta = found.meta
    content_type = get_first(headers, "content-type")
    boundary = ranges.multipart_boundary(f"{meta.key}{meta.checksum}{secrets.token_hex(16)}")
    headers = without_fields(headers, ("content-type",))
    headers.append(("Content-Type", ranges.multipart_content_type(boundary)))
    length = ranges.multipart_length(parts, content_type, meta.size, boundary)
    await ex.start(206, None, finish_headers(ctx, ex, 206, headers, status), length=length)
    if ex.head.method != "HEAD":
        for part_head, part in ranges.multipart_parts(parts, content_type, meta.size, boundary):
            await ex.write(part_head)
            if part is None:
                continue
            ctx.counters.bytes_from_cache += part.last + 1 - part.first
            if found.body is not None:
                await ex.write(found.body[part.first : part.last + 1])
            else:
                await _file_body(ctx, ex, found, part.first, part.last + 1)
    await ex.end()


# -- relaying the origin -------------------------------------------------------------------------


async def relay(ctx: CacheContext, ex: Exchange, upstream: OriginResponse, status: CacheStatus | None) -> None:
    """Stream an origin response straight to the client (not shared, not stored).

    A body the origin cuts short cuts the client's connection too: a short body must never look
    like a complete one.
    """
    try:
        headers = forwarding.strip_hop_by_hop(decode_raw_headers(upstream.raw_headers))
        headers = forwarding.append_via(headers, (1, 1), ctx.node_name)
        if not ctx.cache_settings.expose_surrogate_keys:
            headers = without_fields(headers, SURROGATE_FIELDS)
        headers = finish_headers(ctx, ex, upstream.status, headers, status)
        await ex.start(upstream.status, upstream.reason, headers, length=upstream.content_length)
        if ex.head.method != "HEAD":
            try:
                async for chunk in iter_body(upstream):
                    ctx.counters.bytes_from_origin += len(chunk)
                    await ex.write(chunk)
            except OriginBodyBroken as exc:
                faultlog.report(ex.head.peer, ex.head.method, ex.head.target, 502, exc.reason)
                ex.abort()
                return
        await ex.end()
    finally:
        upstream.release()
