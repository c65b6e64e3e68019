"""Range requests for which no complete response is stored (RFC 9111 §3.3-3.4).

    stored parts hold every byte asked for ─► 206 (or multipart) from them, ``detail=partial``
    otherwise ─► the client's ``Range`` (and ``If-Range``) forwarded in a shared fill
                 (``FillKind.RANGE``): a single-part 206 is stored as a part and combined with
                 its neighbours (``edge.cache.combine``); a 200 is stored as the complete response

With ``cache.slice_size`` set every GET miss goes through ``edge.cache.slices`` instead, and with
``cache.range_miss = "whole"`` a range miss fetches the complete response as before.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass

from edge.cache import fill as fills
from edge.cache import respond
from edge.cache.context import CacheContext
from edge.http import parts, policy, ranges, validation, vary
from edge.http.cachestatus import CacheStatus, FwdReason
from edge.http.headers import HeaderList, get_first
from edge.server.exchange import Exchange
from edge.store.base import CachedObject, StoredMeta
from edge.store.tiered import close_handle

# What the origin must not see on a forwarded range: the client's own validators are answered here.
_FORWARD_DROP = validation.CONDITIONAL_REQUEST_FIELDS - {"range", "if-range"}


@dataclass(frozen=True, slots=True)
class UsablePart:
    meta: StoredMeta
    got: parts.ContentRange


async def serve(ctx: CacheContext, ex: Exchange, received: HeaderList, target: str, key: str, fwd: FwdReason) -> None:
    value = ranges.range_value(received, ex.head.method)
    assert value is not None
    stored = await usable_parts(ctx, key, received)
    if stored:
        if await _from_parts(ctx, ex, received, value, stored):
            return
        fwd = "partial"  # RFC 9211 §2.2: stored partial content, forwarded to complete it
    ctx.counters.misses += 1
    if_range = get_first(received, "if-range")
    fill_key = ("range", key, value, if_range or "")
    fill = fills.join(ctx, fill_key, key)
    collapsed = fill is not None
    if fill is None:
        request = fills.origin_request(ctx, ex, target, drop=_FORWARD_DROP, via_cluster=True)
        fill = fills.launch(ctx, fill_key, request, received, key, None, ex, fills.FillSpec(fills.FillKind.RANGE))
    await fills.serve(ctx, ex, received, target, key, fill, fwd, collapsed, stale=None)


async def usable_parts(ctx: CacheContext, key: str, received: HeaderList) -> list[UsablePart]:
    """The stored ``~part/`` objects this request may use: visible, fresh, of its Vary variant."""
    now = time.time()
    usable: list[UsablePart] = []
    for meta in await ctx.store.parts(key):
        if not meta.variant.startswith(parts.PART_MARK + "part/"):
            continue
        visible = ctx.purger.visible(CachedObject(meta))
        got = parts.single_part(206, meta.headers)
        if visible is None or got is None or got.length != meta.size:
            continue
        if not vary.matches(meta.vary, meta.secondary, received):
            continue
        decision = policy.serve_decision("GET", received, fills.entry_of(visible.meta), now, ctx.policy)
        if decision.serve_from_cache and decision.action is not policy.Action.STALE_WHILE_REVALIDATE:
            usable.append(UsablePart(visible.meta, got))
    return usable


async def _from_parts(
    ctx: CacheContext, ex: Exchange, received: HeaderList, value: str, stored: list[UsablePart]
) -> bool:
    """Answer from stored parts if they hold what is asked; False when the origin must be asked."""
    reference = max(stored, key=lambda part: part.meta.response_time)
    ref_headers = reference.meta.headers
    same = [part for part in stored if part is reference or parts.same_representation(ref_headers, part.meta.headers)]
    complete = reference.got.complete
    assert complete is not None
    if not ranges.if_range_allows(get_first(received, "if-range"), ref_headers):
        return False  # the client wants everything unless it still has this representation
    result = ranges.parse_range(value, complete)
    if result.kind == "ignore":
        return False
    ttl = fills.ttl_of(ctx, reference.meta)
    status = CacheStatus(ctx.node_name, hit=True, ttl=ttl, detail="partial")
    meta = reference.meta
    age = policy.current_age(meta.headers, meta.request_time, meta.response_time, time.time())
    # RFC 9110 §13.2.2: the preconditions are evaluated before Range.
    conditional = validation.evaluate_client_conditionals(
        "GET", received, 200, ref_headers, response_time=meta.response_time
    )
    if conditional is not None:
        ctx.counters.hits += 1
        if conditional == 412:
            await respond.error(ctx, ex, 412, "precondition failed", status)
            return True
        not_modified = respond.client_headers(ctx, validation.not_modified_headers(ref_headers))
        not_modified.append(("Age", str(policy.age_header_value(age))))
        await ex.respond(304, respond.finish_headers(ctx, ex, 304, not_modified, status))
        return True
    if result.kind == "unsatisfiable":
        ctx.counters.hits += 1
        await respond.error(ctx, ex, 416, "range not satisfiable", status,
                            [("Content-Range", ranges.unsatisfied_content_range(complete))])  # fmt: skip
        return True
    pieces: list[tuple[ranges.ByteRange, UsablePart]] = []
    for wanted in result.ranges:
        index = parts.covering([part.got for part in same], wanted.first, wanted.last)
        if index is None:
            return False
        pieces.append((wanted, same[index]))
    objects: dict[str, CachedObject] = {}
    try:
        for _, part in pieces:
            if part.meta.variant not in objects:
                obj = await ctx.store.get_variant(part.meta.key, part.meta.variant)
                if obj is None or obj.meta.checksum != part.meta.checksum or obj.meta.size != part.got.length:
                    close_handle(obj)
                    return False
                objects[part.meta.variant] = obj
        ctx.counters.hits += 1
        headers = respond.client_headers(ctx, parts.with_content_range(ref_headers, None))
        headers.append(("Age", str(policy.age_header_value(age))))
        await send_ranges(ctx, ex, headers, complete, [
            (wanted, objects[part.meta.variant], wanted.first - part.got.first) for wanted, part in pieces
        ], status)  # fmt: skip
        return True
    finally:
        for obj in objects.values():
            close_handle(obj)


async def send_ranges(
    ctx: CacheContext,
    ex: Exchange,
    headers: list[tuple[str, str]],
    complete: int,
    pieces: list[tuple[ranges.ByteRange, CachedObject, int]],
    status: CacheStatus,
) -> None:
    """A 206 of one range, or multipart/byteranges of several, each piece read from a stored object
    (``(range, object, where the range starts in the object's body)``)."""
    if len(pieces) == 1:
        wanted, obj, start = pieces[0]
        headers.append(("Content-Range", ranges.content_range(wanted.first, wanted.last, complete)))
        await ex.start(206, None, respond.finish_headers(ctx, ex, 206, headers, status), length=wanted.length)
        await respond.write_stored(ctx, ex, obj, start, start + wanted.length)
        await ex.end()
        return
    content_type = get_first(headers, "content-type")
    boundary = ranges.multipart_boundary(secrets.token_hex(16))  # no client can predict it
    headers = respond.without_fields(headers, ("content-type",))
    headers.append(("Content-Type", ranges.multipart_content_type(boundary)))
    wanted_ranges = [wanted for wanted, _, _ in pieces]
    length = ranges.multipart_length(wanted_ranges, content_type, complete, boundary)
    await ex.start(206, None, respond.finish_headers(ctx, ex, 206, headers, status), length=length)
    framing = ranges.multipart_parts(wanted_ranges, content_type, complete, boundary)
    # ``pieces`` first in zip: the closing delimiter must stay in ``framing``.
    for (wanted, obj, start), (part_head, _) in zip(pieces, framing, strict=False):
        if ex.head.method != "HEAD":
            await ex.write(part_head)
        await respond.write_stored(ctx, ex, obj, start, start + wanted.length)
    if ex.head.method != "HEAD":
        closing, _ = next(framing)
        await ex.write(closing)
    await ex.end()
