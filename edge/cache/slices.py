"""Slices for large files (nginx's slice module): with ``cache.slice_size`` > 0 a GET miss is fetched
from the origin in slices of that many bytes (``Range: bytes=i*size-(i+1)*size-1``), each stored as
its own part (``~slice/<size>/<i>``, see ``edge.http.parts``).

    first slice the request needs (stored, or fetched in a shared fill)
        ├─ the origin answered 200 / an error ─► that answer, as any fill's (nothing sliced)
        └─ a 206 for the slice: its Content-Range gives the length ─► 200, 206 or multipart
           headed by it, the body streamed slice by slice as each is read or arrives

Only the slices a request touches are fetched, one after the other; concurrent requests for one
slice share its fill.  Every slice must be the same representation as the first (same strong
validator, or the same ETag/Last-Modified when there is none): a slice that differs means the
object changed, so every stored part of the key is invalidated and the response is cut — a client
never receives bytes of two versions.  (Before the first byte is sent, the request starts over once.)
"""

from __future__ import annotations

import contextlib
import secrets
import time
from dataclasses import dataclass
from typing import assert_never

from edge import faultlog
from edge.cache import fill as fills
from edge.cache import respond
from edge.cache.coalesce import Fill, FillAborted
from edge.cache.context import CacheContext
from edge.cache.outcomes import FillOutcome, Shared, StoredElsewhere, Unshared
from edge.errors import EdgeError, OriginBodyBroken, OriginUnreachable
from edge.http import parts, policy, ranges, validation, vary
from edge.http.cachestatus import CacheStatus, FwdReason
from edge.http.headers import HeaderList, get_first
from edge.server.exchange import Exchange
from edge.store.base import CachedObject
from edge.store.tiered import close_handle


@dataclass(slots=True)
class StoredSlice:
    obj: CachedObject
    got: parts.ContentRange

    @property
    def headers(self) -> HeaderList:
        return self.obj.meta.headers


@dataclass(slots=True)
class FetchedSlice:
    fill: Fill
    reader: int
    got: parts.ContentRange
    headers: HeaderList


@dataclass(slots=True)
class NotSliced:
    """The origin did not answer with the slice (it ignored Range, or failed): its answer stands."""

    fill: Fill
    reader: int
    outcome: FillOutcome
    collapsed: bool


Source = StoredSlice | FetchedSlice


class SliceChanged(Exception):
    """A slice is not the same representation as the response being sent."""


async def serve(ctx: CacheContext, ex: Exchange, received: HeaderList, target: str, key: str, fwd: FwdReason) -> None:
    size = ex.site.slice_size
    value = ranges.range_value(received, "GET")
    for attempt in range(2):
        try:
            await _serve_once(ctx, ex, received, target, key, fwd, size, value)
            return
        except SliceChanged as exc:
            await ctx.purger.invalidate(key, time.time())  # every worker: the stored parts are another version
            if ex.started or attempt == 1:
                faultlog.report(ex.head.peer, ex.head.method, ex.head.target, 502, str(exc))
                if ex.started:
                    ex.abort()
                    return
                raise OriginBodyBroken(str(exc)) from None


async def _serve_once(
    ctx: CacheContext,
    ex: Exchange,
    received: HeaderList,
    target: str,
    key: str,
    fwd: FwdReason,
    size: int,
    value: str | None,
) -> None:
    first_index = _first_byte(value) // size
    got = await _obtain(ctx, ex, received, target, key, first_index, size, owner=True)
    if isinstance(got, NotSliced) and first_index and _unsatisfiable(got):
        # The first range starts past the end; the others may not: learn the length from slice 0.
        _close(got)
        first_index = 0
        got = await _obtain(ctx, ex, received, target, key, 0, size, owner=True)
    if isinstance(got, NotSliced):
        await _not_sliced(ctx, ex, received, target, key, got, first_index, fwd)
        return
    reference: Source | None = got
    try:
        headers = got.headers
        complete = got.got.complete
        assert complete is not None
        # RFC 9110 §13.2.2: preconditions before Range.
        if await _answered_conditionally(ctx, ex, received, got, _status(ctx, got, fwd)):
            return
        wanted: list[ranges.ByteRange] = [ranges.ByteRange(0, complete - 1)]
        partial = False
        if value is not None and ranges.if_range_allows(get_first(received, "if-range"), headers):
            result = ranges.parse_range(value, complete)
            if result.kind == "unsatisfiable":
                await respond.error(ctx, ex, 416, "range not satisfiable", _status(ctx, got, fwd),
                                    [("Content-Range", ranges.unsatisfied_content_range(complete))])  # fmt: skip
                return
            if result.kind == "partial":
                wanted, partial = list(result.ranges), True
        # The first slice the response needs is in hand before its head is sent.
        needed = wanted[0].first // size
        if needed != first_index:
            _release(got)
            reference = None
            got = await _next(ctx, ex, received, target, key, needed, size, headers, complete)
            reference = got
        status = _status(ctx, got, fwd)
        if isinstance(got, StoredSlice):
            ctx.counters.hits += 1
        else:
            ctx.counters.misses += 1
        fields = respond.client_headers(ctx, parts.with_content_range(headers, None),
                                        keep_age=isinstance(got, FetchedSlice))  # fmt: skip
        if isinstance(got, StoredSlice):
            meta = got.obj.meta
            age = policy.current_age(meta.headers, meta.request_time, meta.response_time, time.time())
            fields.append(("Age", str(policy.age_header_value(age))))
        framing = _Framing(wanted, get_first(fields, "content-type"), complete) if len(wanted) > 1 else None
        await _start(ctx, ex, fields, complete, wanted, partial, status, framing)
        plan = [(index, number) for index, piece in enumerate(wanted)
                for number in parts.slices_touching(piece.first, piece.last, size)]  # fmt: skip
        for step, (index, number) in enumerate(plan):
            piece = wanted[index]
            if framing is not None and ex.head.method != "HEAD" and (step == 0 or plan[step - 1][0] != index):
                await ex.write(framing.heads[index])
            if reference is not None and _index(reference, size) == number:
                source, reference = reference, None
            else:
                source = await _next(ctx, ex, received, target, key, number, size, headers, complete)
            if step + 1 < len(plan) and plan[step + 1][1] != number:
                await _prefetch(ctx, ex, received, target, key, plan[step + 1][1], size)
            await _copy(ctx, ex, source, max(piece.first, source.got.first), min(piece.last, source.got.last))
        if framing is not None and ex.head.method != "HEAD":
            await ex.write(framing.closing)
        await ex.end()
    except FillAborted as exc:
        faultlog.report(ex.head.peer, ex.head.method, ex.head.target, 502, str(exc))
        if not ex.started:
            raise OriginBodyBroken(f"fetching a slice failed: {exc}") from None
        ex.abort()
    finally:
        if reference is not None:
            _release(reference)


class _Framing:
    """multipart/byteranges framing of one response, with a boundary no client can predict."""

    def __init__(self, wanted: list[ranges.ByteRange], content_type: str | None, complete: int) -> None:
        self.boundary = ranges.multipart_boundary(secrets.token_hex(16))
        self.length = ranges.multipart_length(wanted, content_type, complete, self.boundary)
        heads = [head for head, _ in ranges.multipart_parts(wanted, content_type, complete, self.boundary)]
        self.heads, self.closing = heads[:-1], heads[-1]


def _unsatisfiable(got: NotSliced) -> bool:
    return isinstance(got.outcome, Unshared) and got.outcome.status == 416


def _close(got: NotSliced) -> None:
    got.fill.close_reader(got.reader)
    outcome = got.outcome
    if isinstance(outcome, Unshared) and outcome.upstream is not None and not got.collapsed:
        outcome.upstream.release()


def _first_byte(value: str | None) -> int:
    """Where the first range of a ``Range`` value starts, when it says (0 otherwise: suffix ranges
    and anything unparsed start at the first slice, which gives the length)."""
    if value is None:
        return 0
    unit, _, specs = value.strip(" \t").partition("=")
    first_spec = specs.split(",")[0].strip(" \t")
    start, dash, _ = first_spec.partition("-")
    if unit.strip().lower() != "bytes" or not dash or not start.isdigit() or not start.isascii() or len(start) > 19:
        return 0
    return int(start)


def _index(source: Source, size: int) -> int:
    return source.got.first // size


def _status(ctx: CacheContext, source: Source, fwd: FwdReason) -> CacheStatus:
    if isinstance(source, StoredSlice):
        return CacheStatus(ctx.node_name, hit=True, ttl=fills.ttl_of(ctx, source.obj.meta), detail="slice")
    return CacheStatus(ctx.node_name, fwd=fwd, fwd_status=206, stored=True, detail="slice")


async def _answered_conditionally(
    ctx: CacheContext, ex: Exchange, received: HeaderList, source: Source, status: CacheStatus
) -> bool:
    response_time = source.obj.meta.response_time if isinstance(source, StoredSlice) else None
    conditional = validation.evaluate_client_conditionals(
        "GET", received, 200, source.headers, response_time=response_time
    )
    if conditional is None:
        return False
    if conditional == 412:
        await respond.error(ctx, ex, 412, "precondition failed", status)
        return True
    not_modified = respond.client_headers(ctx, validation.not_modified_headers(source.headers))
    await ex.respond(304, respond.finish_headers(ctx, ex, 304, not_modified, status))
    return True


async def _start(
    ctx: CacheContext,
    ex: Exchange,
    fields: list[tuple[str, str]],
    complete: int,
    wanted: list[ranges.ByteRange],
    partial: bool,
    status: CacheStatus,
    framing: _Framing | None,
) -> None:
    if not partial:
        await ex.start(200, None, respond.finish_headers(ctx, ex, 200, fields, status), length=complete)
        return
    if framing is None:
        piece = wanted[0]
        fields.append(("Content-Range", ranges.content_range(piece.first, piece.last, complete)))
        await ex.start(206, None, respond.finish_headers(ctx, ex, 206, fields, status), length=piece.length)
        return
    head = respond.without_fields(fields, ("content-type",))
    head.append(("Content-Type", ranges.multipart_content_type(framing.boundary)))
    await ex.start(206, None, respond.finish_headers(ctx, ex, 206, head, status), length=framing.length)


async def _next(
    ctx: CacheContext,
    ex: Exchange,
    received: HeaderList,
    target: str,
    key: str,
    index: int,
    size: int,
    reference: HeaderList,
    complete: int,
) -> Source:
    """Slice ``index``, checked to be the same representation as the one being sent."""
    got = await _obtain(ctx, ex, received, target, key, index, size, owner=False)
    if isinstance(got, NotSliced):
        _close(got)
        outcome = got.outcome
        if isinstance(outcome, Shared) and outcome.status == 200:
            raise SliceChanged(f"slice {index}: the origin now sends the whole object")
        # An error, or a slice that may not be stored: a failure, not a new version.
        status = getattr(outcome, "status", 502)
        raise OriginBodyBroken(f"slice {index}: the origin answered {status}")
    if got.got.complete != complete or not parts.consistent(reference, got.headers):
        _release(got)
        raise SliceChanged(f"slice {index} is of another version of the object (validator or length differs)")
    return got


async def _obtain(
    ctx: CacheContext,
    ex: Exchange,
    received: HeaderList,
    target: str,
    key: str,
    index: int,
    size: int,
    *,
    owner: bool,
) -> Source | NotSliced:
    """Slice ``index``: the stored one when this request may use it, else from a (shared) fill."""
    for _attempt in range(2):
        stored = await _stored(ctx, received, key, index, size)
        if stored is not None:
            return stored
        fill_key = ("slice", key, str(size), str(index))
        fill = fills.join(ctx, fill_key, key) if _attempt == 0 else None
        collapsed = fill is not None
        if fill is None:
            request = fills.origin_request(
                ctx, ex, target, drop=validation.CONDITIONAL_REQUEST_FIELDS, via_cluster=True
            )
            request.headers.append(("Range", parts.slice_request_range(index, size)))
            spec = fills.FillSpec(fills.FillKind.SLICE, size, index)
            fill = fills.launch(ctx, fill_key, request, received, key, None, ex if owner else None, spec)
        reader = fill.open_reader()
        try:
            outcome = await fill.wait_outcome()
        except FillAborted:
            fill.close_reader(reader)
            failure = fill.failure
            if isinstance(failure, EdgeError):
                raise failure from None
            raise OriginUnreachable(f"slice {index}: {failure}") from None
        except BaseException:
            fill.close_reader(reader)
            raise
        if not collapsed and owner:
            ex.origin_ms = fill.origin_ms
        if isinstance(outcome, StoredElsewhere):  # another worker stored it while this one waited
            fill.close_reader(reader)
            continue
        if collapsed and isinstance(outcome, Shared) and not fills.answers(outcome.headers, fill.received, received):
            fill.close_reader(reader)  # fetched for another variant (Vary): fetch this one's
            continue
        if isinstance(outcome, Shared) and outcome.status == 206:
            got = parts.single_part(206, outcome.headers)
            if got is not None and parts.slice_matches(index, size, got):
                return FetchedSlice(fill, reader, got, outcome.headers)
        return NotSliced(fill, reader, outcome, collapsed)
    raise OriginUnreachable(f"slice {index}: stored by another worker, then gone")


async def _stored(ctx: CacheContext, received: HeaderList, key: str, index: int, size: int) -> StoredSlice | None:
    found = await ctx.store.get_variant(key, parts.slice_variant(size, index))
    if found is None:
        return None
    obj = ctx.purger.visible(found)
    got = parts.single_part(206, obj.meta.headers) if obj is not None else None
    if (
        obj is not None
        and got is not None
        and parts.slice_matches(index, size, got)
        and got.length == obj.meta.size
        and vary.matches(obj.meta.vary, obj.meta.secondary, received)
        and _fresh(ctx, received, obj)
    ):
        return StoredSlice(obj, got)
    close_handle(found)
    return None


async def _prefetch(
    ctx: CacheContext, ex: Exchange, received: HeaderList, target: str, key: str, index: int, size: int
) -> None:
    """Start fetching the next slice while this one is sent, so the origin's latency between slices
    overlaps with sending (nginx's slice module waits for each).  The fill stores the slice even if
    this client leaves; its body is held for the reader that joins it (slices above the fill's
    ``keep_bytes`` are fetched when needed instead: a body nobody reads is not kept in memory)."""
    if size > ctx.cache_settings.collapse_max_unread_bytes // 2 or size > 8 * 1024 * 1024:
        return
    fill_key = ("slice", key, str(size), str(index))
    if ctx.coalescer.active(fill_key):
        return
    stored = await _stored(ctx, received, key, index, size)
    if stored is not None:
        _release(stored)
        return
    request = fills.origin_request(ctx, ex, target, drop=validation.CONDITIONAL_REQUEST_FIELDS, via_cluster=True)
    request.headers.append(("Range", parts.slice_request_range(index, size)))
    fills.launch(ctx, fill_key, request, received, key, None, None, fills.FillSpec(fills.FillKind.SLICE, size, index))


def _fresh(ctx: CacheContext, received: HeaderList, obj: CachedObject) -> bool:
    decision = policy.serve_decision("GET", received, fills.entry_of(obj.meta), time.time(), ctx.policy)
    return decision.serve_from_cache and decision.action is not policy.Action.STALE_WHILE_REVALIDATE


async def _not_sliced(
    ctx: CacheContext,
    ex: Exchange,
    received: HeaderList,
    target: str,
    key: str,
    got: NotSliced,
    first_index: int,
    fwd: FwdReason,
) -> None:
    """The origin answered the first slice's request with something else: that is the answer."""
    outcome = got.outcome
    if isinstance(outcome, Unshared) and outcome.status == 416 and first_index == 0:
        # Nothing at byte 0: an empty representation. Ask for it whole.
        got.fill.close_reader(got.reader)
        if outcome.upstream is not None and not got.collapsed:
            outcome.upstream.release()
        ctx.counters.misses += 1
        request = fills.origin_request(ctx, ex, target, drop=validation.CONDITIONAL_REQUEST_FIELDS, via_cluster=True)
        fill = fills.launch(ctx, fills.complete_fill_key(ctx, key, received), request, received, key, None, ex)
        await fills.serve(ctx, ex, received, target, key, fill, fwd, False, stale=None)
        return
    ctx.counters.misses += 1
    if isinstance(outcome, Unshared) and outcome.status == 206:
        # A slice that may not be stored (private, no-store...) or is not the slice asked for: the
        # client's own request goes to the origin as it is, and its answer is relayed.
        got.fill.close_reader(got.reader)
        if outcome.upstream is not None and not got.collapsed:
            outcome.upstream.release()
        await fills.own_request(ctx, ex, target, fwd, outcome.why)
        return
    await fills.serve_outcome(ctx, ex, received, target, key, got.fill, got.reader, outcome, fwd, got.collapsed,
                              None)  # fmt: skip


async def _copy(ctx: CacheContext, ex: Exchange, source: Source, first: int, last: int) -> None:
    """Send bytes ``first``..``last`` of the representation from one slice."""
    start, end = first - source.got.first, last - source.got.first + 1
    match source:
        case StoredSlice(obj=obj):
            try:
                await respond.write_stored(ctx, ex, obj, start, end)
            finally:
                close_handle(obj)
        case FetchedSlice(fill=fill, reader=reader):
            position = 0
            async with contextlib.aclosing(fill.body(reader)) as chunks:
                async for chunk in chunks:
                    low, high = max(start - position, 0), min(end - position, len(chunk))
                    if low < high and ex.head.method != "HEAD":
                        await ex.write(chunk if (low, high) == (0, len(chunk)) else chunk[low:high])
                    position += len(chunk)
                    if position >= end:
                        break
            if position < end:
                raise FillAborted(f"slice {source.got.first}-{source.got.last} ended after {position} bytes")
        case _:
            assert_never(source)


def _release(source: Source) -> None:
    match source:
        case StoredSlice(obj=obj):
            close_handle(obj)
        case FetchedSlice(fill=fill, reader=reader):
            fill.close_reader(reader)
        case _:
            assert_never(source)
