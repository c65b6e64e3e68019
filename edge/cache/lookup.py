"""The lookup verdict (Varnish's ``lookup_e``): what the tiers, the purges and RFC 9111 say about a
GET/HEAD request, as one closed enum the driver matches on.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import time
from dataclasses import dataclass

from edge.cache import fill as fills
from edge.cache import transcode
from edge.cache.coalesce import Fill
from edge.cache.context import CacheContext
from edge.http import coding, policy, ranges
from edge.http.cachestatus import FwdReason
from edge.http.headers import HeaderList
from edge.server.exchange import Exchange
from edge.store.base import CachedObject
from edge.store.tiered import Found, close_handle


class Verdict(enum.Enum):
    HIT = "hit"
    """A stored response may answer now (fresh, or stale the client accepts)."""
    STALE = "stale"
    """Serve the stored response now and refresh it in the background (RFC 5861 §3)."""
    REVALIDATE = "revalidate"
    """Ask the origin with the stored validators (RFC 9111 §4.3); ``fill`` set when one is in flight."""
    MISS = "miss"
    """Nothing usable stored and nobody fetching it: start a fill."""
    BUSY = "busy"
    """Nothing usable stored, but a fill for this key is in flight: join it (``fill``)."""
    HIT_FOR_MISS = "hit-for-miss"
    """The key was found uncacheable a moment ago: go to the origin without queueing."""
    PARTIAL = "partial"
    """No complete response stored; a range of it, from stored parts or a ranged fill, or its
    slices (RFC 9111 §3.3-3.4, ``cache.slice_size``)."""
    PASS = "pass"
    """Forward without storing or sharing (a HEAD that misses)."""
    ONLY_IF_CACHED = "only-if-cached"
    """The client accepts only a stored response and there is none it may use (504, §5.2.1.7)."""


@dataclass(slots=True)
class Lookup:
    verdict: Verdict
    fwd: FwdReason = "miss"
    found: CachedObject | None = None
    decision: policy.ServeDecision | None = None
    fill: Fill | None = None
    detail: str | None = None


async def look_up(ctx: CacheContext, ex: Exchange, received: HeaderList, key: str) -> Lookup:
    started = time.perf_counter()
    purger = ctx.purger
    await purger.sync()
    found = await ctx.store.lookup(key, received)
    if found.obj is not None and found.obj.meta.stored_at < purger.opened_at and not purger.caught_up.is_set():
        found = await _after_catch_up(ctx, key, received, found)
    ex.lookup_ms = (time.perf_counter() - started) * 1000
    now = time.time()
    obj = purger.visible(found.obj)
    derived: str | None = None
    if obj is None and found.key_known and ctx.settings.compression.enabled:
        close_handle(found.obj)
        obj = await transcode.derive(ctx, key, received)
        if obj is not None:
            derived = "compressed" if coding.content_coding(obj.meta.headers) else "decompressed"
    if obj is None:
        close_handle(found.obj)
        fwd: FwdReason = "vary-miss" if found.key_known else "uri-miss"
        if policy.request_directives(received, ctx.policy).only_if_cached:
            return Lookup(Verdict.ONLY_IF_CACHED, fwd, detail="only-if-cached")
        return _miss(ctx, ex, received, key, fwd)
    decision = policy.serve_decision(ex.head.method, received, fills.entry_of(obj.meta), now, ctx.policy)
    if decision.action is policy.Action.BYPASS:
        close_handle(obj)
        return _miss(ctx, ex, received, key, "miss")
    if decision.serve_from_cache:
        verdict = Verdict.STALE if decision.action is policy.Action.STALE_WHILE_REVALIDATE else Verdict.HIT
        return Lookup(verdict, found=obj, decision=decision, detail=derived)
    if decision.only_if_cached:
        close_handle(obj)
        return Lookup(Verdict.ONLY_IF_CACHED, "stale", detail="only-if-cached")
    fwd = "request" if decision.detail.startswith("request-") else "stale"
    joined = fills.join(ctx, ("validate", key, obj.meta.variant), key)
    return Lookup(Verdict.REVALIDATE, fwd, found=obj, decision=decision, fill=joined)


def _miss(ctx: CacheContext, ex: Exchange, received: HeaderList, key: str, fwd: FwdReason) -> Lookup:
    remembered = ctx.uncacheable_reason(key)
    if ex.head.method == "HEAD":
        return Lookup(Verdict.PASS, fwd, detail="head-miss")
    if remembered is not None:
        return Lookup(Verdict.HIT_FOR_MISS, fwd, detail=remembered)
    settings = ctx.cache_settings
    if ex.site.slice_size > 0 or (settings.range_miss == "part" and ranges.range_value(received) is not None):
        return Lookup(Verdict.PARTIAL, fwd)
    joined = fills.join(ctx, fills.complete_fill_key(ctx, key, received), key)
    if joined is not None:
        return Lookup(Verdict.BUSY, fwd, fill=joined)
    return Lookup(Verdict.MISS, fwd)


async def _after_catch_up(ctx: CacheContext, key: str, received: HeaderList, found: Found) -> Found:
    """An object stored before this worker started, while purges it missed may still be on their way.

    Serving it could hand out content the cluster purged while this edge was down, so the request
    waits for the catch-up (until ``control_plane_hold`` seconds after start) and then looks again;
    past that deadline the stored object is ignored and the origin asked instead.
    """
    close_handle(found.obj)
    purger = ctx.purger
    remaining = purger.opened_at + ctx.settings.control_plane_hold - time.time()
    if remaining > 0:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(purger.caught_up.wait(), remaining)
    if not purger.caught_up.is_set():
        return Found(None, found.key_known)
    await purger.sync()
    return await ctx.store.lookup(key, received)
