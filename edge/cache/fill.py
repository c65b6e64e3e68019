"""Fills: one origin fetch per key, shared by every request that wants it (Varnish's ``cache_fetch``).

The producer (:func:`run`) is a sequence of explicit steps, each ending in a typed outcome
(``edge.cache.outcomes``) that every reader receives:

1. another worker may be filling the same key: wait for its record lock, then look again
   (→ ``StoredElsewhere``);
2. ask the origin (timed for Server-Timing and the latency histogram);
3. a validation answered 304: freshen the stored response (→ ``Refreshed``), or ask again without
   conditions when the 304 selects nothing stored (RFC 9111 §4.3.4);
4. a validation answered an error and stale-if-error allows it (→ ``OriginFailed``);
5. may it be stored (RFC 9111 §3)?  No: ``Unshared`` (and remembered as hit-for-miss);
6. yes: ``Shared``, and the body streams to the readers while it is written to the tiers, the
   last chunk held back until the object is published, so a client holding the whole body can count
   on the next request being a hit.

The readers' side (:func:`serve`) matches on the outcome.  A fill always ends — in an outcome or a
failure — whatever happens between registering it and running it, so no key is ever left frozen.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import time
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, replace
from typing import assert_never

from edge import faultlog
from edge.cache import combine, compress, crossfill, respond, revalidate
from edge.cache.coalesce import Fill, FillAborted
from edge.cache.context import CacheContext
from edge.cache.outcomes import FillOutcome, OriginFailed, Refreshed, Shared, StoredElsewhere, Unshared
from edge.cluster import Keep, PeerRoute, shard_of
from edge.errors import EdgeError, OriginBodyBroken
from edge.forward import client_host, origin_headers
from edge.http import coding, dates, forwarding, parts, policy, ranges, validation, vary
from edge.http.cachestatus import CacheStatus, FwdReason
from edge.http.headers import HeaderList, get_all, get_first, split_all
from edge.server.exchange import Exchange
from edge.sites import site_tags
from edge.store.base import BodyChecksum, CachedObject, StoredMeta, StoreWriter
from edge.store.tiered import close_handle
from edge.upstream import (
    InterimSink,
    OriginRequest,
    OriginResponse,
    OriginRoute,
    decode_raw_headers,
    iter_body,
    send_to_origin,
)

log = logging.getLogger("edge.fill")


class FillKind(enum.Enum):
    COMPLETE = "complete"
    """The complete response (no Range is sent)."""
    RANGE = "range"
    """A client's range, forwarded: a single-part 206 is stored as a part (RFC 9111 §3.3)."""
    SLICE = "slice"
    """One slice of ``cache.slice_size`` bytes, stored as a part addressed by its index."""


@dataclass(frozen=True, slots=True)
class FillSpec:
    kind: FillKind = FillKind.COMPLETE
    slice_size: int = 0
    index: int = 0


COMPLETE = FillSpec()

# Uncacheable for these reasons now means uncacheable for a while: requests skip the queue.
HIT_FOR_MISS_REASONS = frozenset(
    {"private", "no-store", "set-cookie", "vary-star", "too-large", "no-freshness-info",
     "must-understand-unknown-status", "status"}
)  # fmt: skip


def entry_of(meta: StoredMeta) -> policy.StoredEntry:
    return policy.StoredEntry(
        status=meta.status,
        headers=meta.headers,
        request_time=meta.request_time,
        response_time=meta.response_time,
        invalidated_at=meta.response_time if meta.invalidated else None,
    )


def surrogate_keys(headers: HeaderList) -> tuple[str, ...]:
    """Tags for purging: ``Surrogate-Key`` is space-separated, ``Cache-Tag`` comma-separated."""
    tags: list[str] = []
    for value in get_all(headers, "surrogate-key"):
        tags.extend(value.split())
    tags.extend(split_all(headers, "cache-tag"))
    return tuple(dict.fromkeys(tag for tag in tags if tag))


def ttl_of(ctx: CacheContext, meta: StoredMeta) -> int:
    return int(policy.serve_decision("GET", (), entry_of(meta), time.time(), ctx.policy).ttl)


# -- asking the origin ---------------------------------------------------------------------------


def origin_request(
    ctx: CacheContext,
    ex: Exchange,
    target: str,
    *,
    method: str | None = None,
    drop: Iterable[str] = (),
    via_cluster: bool = False,
) -> OriginRequest:
    """The client's request as the origin receives it (``drop``: fields the cache answers itself),
    for one of its site's origins — or, ``via_cluster`` (a miss or revalidation to be stored), for
    the key's owner in the region or the parent tier (``edge.cluster``)."""
    site = ex.site
    host = client_host(ex.head)
    keyed_host = host if site.preserve_host and host else None
    route: OriginRoute = site.origins
    if via_cluster and ctx.cluster is not None:
        shard = shard_of(site.keys.for_request(ex.head, target))
        route = ctx.cluster.route(shard, site.origins, host, ex.peer, ex.head.scheme)
    return OriginRequest(
        method=method or ex.head.method,
        target=target,
        headers=origin_headers(ex.head, ctx.settings, keyed_host, ctx.node_name, drop),
        route=route,
        host=keyed_host,
        body=ex.body_chunks() if ex.body is not None else None,
        affinity=site.keys.for_request(ex.head, target),
    )


async def send(ctx: CacheContext, ex: Exchange, request: OriginRequest, *, interim: bool = True) -> OriginResponse:
    """Send to the origin on behalf of one client, timing it for Server-Timing and the access log."""
    started = time.monotonic()
    upstream = await send_to_origin(request, on_interim=ex.interim if interim else None)
    ex.origin_label, ex.origin_name = upstream.origin_label, upstream.origin_name
    elapsed = time.monotonic() - started
    ex.origin_ms = elapsed * 1000
    ctx.counters.observe_origin(elapsed)
    return upstream


async def own_request(
    ctx: CacheContext,
    ex: Exchange,
    target: str,
    fwd: FwdReason,
    why: str | None = None,
    *,
    interim: bool = False,
    via_cluster: bool = False,
) -> None:
    """This request goes to the origin alone: nothing is stored or shared, so the origin sees the
    client's own Accept-Encoding (the edge compresses only what it stores).  ``via_cluster``: to
    the key's owner when this edge is not one (``edge.cluster``), as the client sent it."""
    request = origin_request(ctx, ex, target, via_cluster=via_cluster)
    original = ex.head.original_accept_encoding
    if original is not None:
        request.headers[:] = [(name, value) for name, value in request.headers if name.lower() != "accept-encoding"]
        request.headers.extend(("Accept-Encoding", value.decode("latin-1")) for value in original)
    upstream = await send(ctx, ex, request, interim=interim)
    if upstream.via_peer:
        fwd = "peer"  # the owner's member precedes ours
    status = CacheStatus(ctx.node_name, fwd=fwd, fwd_status=upstream.status, stored=False, detail=why or None)
    await respond.relay(ctx, ex, upstream, status)


# -- starting and joining fills ------------------------------------------------------------------


def complete_fill_key(ctx: CacheContext, key: str, received: HeaderList) -> tuple[str, ...]:
    """The shared fill of a complete response: per key, and per content coding when the edge
    compresses (clients of different codings never wait on a response they cannot use)."""
    if ctx.settings.compression.enabled:
        return ("fill", key, get_first(received, "accept-encoding") or coding.IDENTITY)
    return ("fill", key)


def answers(headers: HeaderList, started_by: HeaderList, received: HeaderList) -> bool:
    """Does a shared response fetched for the request ``started_by`` answer ``received`` too?  Its
    ``Vary`` must select the same variant for both (RFC 9111 §4.1)."""
    fields = vary.vary_fields(headers)
    if not fields:
        return fields is not None
    return vary.secondary_key(fields, started_by) == vary.secondary_key(fields, received)


def join(ctx: CacheContext, fill_key: tuple[str, ...], key: str) -> Fill | None:
    """Share an in-flight fill, unless a purge or invalidation since it started may concern this key."""
    fill = ctx.coalescer.join(fill_key)
    if fill is not None and ctx.purger.view.any_since(fill.start_seq, fill.started_at, key):
        fill.waiters -= 1
        return None
    return fill


def launch(
    ctx: CacheContext,
    fill_key: tuple[str, ...],
    request: OriginRequest,
    received: HeaderList,
    key: str,
    validating: StoredMeta | None,
    owner: Exchange | None,
    spec: FillSpec = COMPLETE,
) -> Fill:
    """Register a shared fill and start its task; whatever happens, the fill ends and leaves the key.

    The origin request is built *before* the fill is registered, so a request that cannot be
    forwarded never leaves a registered fill behind; if the task never gets to run (cancelled at
    shutdown) or crashes, its done-callback fails the fill, releasing every waiter with an error.
    """
    settings = ctx.cache_settings
    fill = ctx.coalescer.start(fill_key, settings.collapse_max_unread_bytes, settings.memory_max_object_bytes)
    fill.start_seq = ctx.purger.view.applied_seq
    fill.started_at = time.time()
    fill.received = received
    try:
        task = ctx.spawn(run(ctx, fill, request, received, key, validating, owner, spec))
    except BaseException as exc:
        fill.fail(exc)
        ctx.coalescer.finish(fill)
        raise

    def settle(done: asyncio.Task[None]) -> None:
        crashed = None if done.cancelled() else done.exception()
        if crashed is not None:
            log.error("fill for %s crashed", key[:200], exc_info=crashed)  # our bug: keep the traceback
        unfinished = fill.outcome is None or (isinstance(fill.outcome, Shared) and not fill.done)
        if unfinished and fill.failure is None:
            fill.fail(EdgeError("the shared fetch for this URL ended without an answer"))
        ctx.coalescer.finish(fill)

    task.add_done_callback(settle)
    return fill


# -- the producer --------------------------------------------------------------------------------


async def run(
    ctx: CacheContext,
    fill: Fill,
    request: OriginRequest,
    received: HeaderList,
    key: str,
    validating: StoredMeta | None,
    owner: Exchange | None,
    spec: FillSpec = COMPLETE,
) -> None:
    upstream: OriginResponse | None = None
    handed_over = False
    locked = False
    lock_name: str | None = None
    try:
        # 1. Another worker may be filling this key: follow its fill as it is written
        #    (edge.cache.crossfill), or find what it stored.
        lock_name = lock_name_of(key, spec) if validating is None and ctx.key_locks is not None else None
        if lock_name is not None and ctx.key_locks is not None:
            if ctx.key_locks.try_acquire(lock_name):
                locked = True
            else:
                followed = await crossfill.follow(ctx, fill, lock_name, received)
                if followed is crossfill.Followed.STREAMED:
                    return
                locked = followed is crossfill.Followed.RELEASED
                if locked and await _fresh_copy_stored(ctx, key, received, spec):
                    fill.set_outcome(StoredElsewhere())
                    fill.finish()
                    return
            if locked:
                crossfill.clear_stale(ctx, lock_name)  # a record left by a worker that died mid-fill
        # 2. Ask the origin.
        request_time = time.time()
        upstream = await send_to_origin(request, on_interim=_interims_to(owner))
        route = request.route
        if (isinstance(route, PeerRoute) and upstream.via_peer
                and await _peer_copy_predates_a_purge(ctx, route, key, upstream)):  # fmt: skip
            upstream.release()
            upstream = await route.fallback.send(request, _interims_to(owner))  # what it fetches itself, it keeps
        fill.origin_label, fill.origin_name = upstream.origin_label, upstream.origin_name
        fill.via_peer = upstream.via_peer
        response_time = time.time()
        ctx.counters.observe_origin(response_time - request_time)
        fill.origin_ms = (response_time - request_time) * 1000
        headers = _from_origin(upstream)
        # 3. A 304 to our validation.
        if validating is not None and upstream.status == 304:
            if revalidate.selects(validating, headers):
                refreshed = revalidate.refreshed(ctx, validating, received, headers, request_time, response_time)
                if refreshed.storable:
                    await ctx.store.update_meta(refreshed.meta)
                fill.set_outcome(refreshed)  # only now: whoever sees the answer also finds the refreshed entry
                fill.finish()
                return
            upstream.release()
            upstream = None
            request_time = time.time()
            upstream = await send_to_origin(revalidate.unconditional(request))
            response_time = time.time()
            headers = _from_origin(upstream)
        status = upstream.status
        # 4. An error answering a validation, and the stored copy may stand in.
        if (
            validating is not None
            and policy.is_error_status(status)
            and policy.can_serve_stale_on_error(entry_of(validating), received, time.time(), ctx.policy)
        ):
            fill.set_outcome(OriginFailed(status))
            fill.finish()
            return
        # 5. May it be stored?  A part only as the part it says it is (RFC 9111 §3.3).
        part: parts.ContentRange | None = None
        if spec.kind is not FillKind.COMPLETE and status in (206, 416):
            part = parts.single_part(status, headers)
            if part is not None and spec.kind is FillKind.SLICE:
                part = part if parts.slice_matches(spec.index, spec.slice_size, part) else None
            if part is None:
                why = "range-not-satisfiable" if status == 416 else "partial-unusable"
                handed_over = owner is not None
                fill.set_outcome(Unshared(status, upstream.reason or "", tuple(headers), why, upstream))
                return
        decision = policy.storable("GET", status, received, headers, ctx.policy, partial=part is not None)
        store, why = decision.store, decision.reason
        vary_names = vary.vary_fields(headers)
        if store and vary_names is None:
            store, why = False, "vary-star"
        declared = upstream.content_length
        if store and declared is not None and declared > ctx.cache_settings.max_object_bytes:
            store, why = False, "too-large"
        if not store:
            if why in HIT_FOR_MISS_REASONS and spec.kind is FillKind.COMPLETE:  # a part says little of the rest
                ctx.remember_uncacheable(key, why)
            handed_over = owner is not None  # the owner relays it; a background refresh has nobody to
            fill.set_outcome(Unshared(status, upstream.reason or "", tuple(headers), why, upstream))
            return
        # 6. Stored and shared; compressed first when the client takes a coding the origin did not
        #    apply (edge.http.coding), so every later client of that coding gets it from storage.
        codec: compress.Encoder | None = None
        compression = ctx.settings.compression
        if compression.enabled and spec.kind is FillKind.COMPLETE:
            if coding.varies_by_coding(status, received, headers, compression.types):
                headers = coding.with_vary_accept_encoding(headers)
                vary_names = vary.vary_fields(headers)
            wanted = get_first(received, "accept-encoding") or coding.IDENTITY
            if wanted in compression.algorithms and coding.compressible(
                status, received, headers, compression.types, compression.min_size, declared
            ):
                headers = coding.encoded_headers(headers, wanted)
                codec = compress.encoder(wanted, compression)
                fill.detail = "compressed"
                ctx.counters.count_compressed(wanted)
        stored_headers = respond.without_fields(headers, (*decision.strip_fields, *respond.FRAMING_FIELDS))
        shared = Shared(status, upstream.reason or "", tuple(respond.without_fields(headers, decision.strip_fields)),
                        owner_headers=tuple(headers))  # fmt: skip
        if isinstance(request.route, PeerRoute) and upstream.via_peer and request.route.keep == "none":
            fill.stores = False  # said before any reader answers (Cache-Status: no ``stored``)
        fill.set_outcome(shared)
        fields = vary_names or ()
        secondary = vary.secondary_key(fields, received)
        variant = vary.variant_id(secondary) if fields else ""
        reason = upstream.reason or ""
        if part is not None and part.whole:
            # A part holding every byte is the complete response (RFC 9111 §3.4).
            status, reason = 200, "OK"
            stored_headers = parts.with_content_range(stored_headers, None)
        elif part is not None:
            variant = (
                parts.slice_variant(spec.slice_size, spec.index) if spec.kind is FillKind.SLICE
                else parts.part_variant(variant, part.first, part.last)
            )  # fmt: skip
        meta = StoredMeta(
            key=key, variant=variant, status=status, reason=reason, headers=tuple(stored_headers),
            request_time=request_time, response_time=response_time, size=0, checksum="", vary=tuple(fields),
            secondary=secondary, tags=site_tags(request.route.name, surrogate_keys(headers)),
            stored_at=fill.started_at,
        )  # fmt: skip
        announce = crossfill.Announcement(ctx, lock_name, fill, meta, shared) if locked and lock_name else None
        try:
            keep = request.route.keep if isinstance(request.route, PeerRoute) and upstream.via_peer else "all"
            await _store_body(ctx, fill, upstream, meta, combine_parts=spec.kind is FillKind.RANGE, codec=codec,
                              announce=announce, expected_size=part.length if part is not None else None,
                              keep=keep)  # fmt: skip
        finally:
            if announce is not None:
                announce.withdraw()
    except EdgeError as exc:
        fill.fail(exc)
    except Exception as exc:  # never leave readers hanging on an unexpected failure
        log.exception("fill for %s failed", key[:200])
        fill.fail(exc)
    finally:
        ctx.coalescer.finish(fill)
        if locked and ctx.key_locks is not None and lock_name is not None:
            ctx.key_locks.release(lock_name)
        if upstream is not None and not handed_over:
            upstream.release()


def _interims_to(owner: Exchange | None) -> InterimSink | None:
    """The 1xx responses of a shared fill go to the client that started it, while it is there: its
    leaving must not fail the fill every other client of the key waits for."""
    if owner is None:
        return None
    gone = False

    async def relay(status: int, reason: str, headers: list[tuple[str, str]]) -> None:
        nonlocal gone
        if gone:
            return
        try:
            await owner.interim(status, reason, headers)
        except ConnectionError:  # ClientGone: the fill goes on for the others
            gone = True

    return relay


def lock_name_of(key: str, spec: FillSpec) -> str | None:
    """The cross-worker lock a fill holds: the key for a complete response, one per slice."""
    if spec.kind is FillKind.COMPLETE:
        return key
    if spec.kind is FillKind.SLICE:
        return f"{key} {parts.slice_variant(spec.slice_size, spec.index)}"
    return None  # a client's range: not shared across workers


async def _fresh_copy_stored(ctx: CacheContext, key: str, received: HeaderList, spec: FillSpec) -> bool:
    """After waiting for another worker's fill: is a fresh copy now in the tiers?"""
    if spec.kind is FillKind.SLICE:
        slice_obj = await ctx.store.get_variant(key, parts.slice_variant(spec.slice_size, spec.index))
        close_handle(slice_obj)
        obj = ctx.purger.visible(slice_obj)
        if obj is None or not vary.matches(obj.meta.vary, obj.meta.secondary, received):
            return False
        reuse = policy.serve_decision("GET", received, entry_of(obj.meta), time.time(), ctx.policy)
        return reuse.action is policy.Action.FRESH_HIT
    found = await ctx.store.lookup(key, received)
    close_handle(found.obj)
    obj = ctx.purger.visible(found.obj)
    if obj is None:
        return False
    reuse = policy.serve_decision("GET", received, entry_of(obj.meta), time.time(), ctx.policy)
    return reuse.action is policy.Action.FRESH_HIT


async def _store_body(
    ctx: CacheContext,
    fill: Fill,
    upstream: OriginResponse,
    meta: StoredMeta,
    *,
    combine_parts: bool = False,
    codec: compress.Encoder | None = None,
    announce: crossfill.Announcement | None = None,
    expected_size: int | None = None,
    keep: Keep = "all",
) -> None:
    """Stream the body into the fill (for readers) and into the tiers (for later hits).

    A body that outgrows ``max_object_bytes`` or a disk that fails stops the storing, never the
    relaying; a purge or invalidation that arrived while the fill ran keeps it out of the tiers.
    The last chunk reaches readers only once the object is published (and, with
    ``combine_parts``, combined with the parts next to it), so a client holding the whole body
    can count on the next request finding it.
    """
    settings = ctx.cache_settings
    key, variant = meta.key, meta.variant
    # A non-owner keeps nothing of what its peer sent (``keep="none"``), or a memory copy only.
    writer = ctx.store.disk.writer(key, variant) if ctx.store.disk is not None and keep == "all" else None
    memory_copy: bytearray | None = bytearray() if ctx.store.memory is not None and keep != "none" else None
    checksum = BodyChecksum()
    held: bytes | None = None
    storing = keep != "none"
    try:
        source = _counted(ctx, iter_body(upstream))
        async for chunk in compress.encoded(source, codec) if codec is not None else source:
            if held is not None:
                fill.append(held)
                await fill.wait_for_room(ctx.settings.upstream.read_timeout)
            held = chunk
            checksum.update(chunk)
            if not storing:
                continue
            if checksum.size > settings.max_object_bytes:
                storing, memory_copy = False, None
                await _abort(writer)
                writer = None
                if announce is not None:
                    announce.withdraw()
                continue
            if memory_copy is not None:
                if len(memory_copy) + len(chunk) <= ctx.store.memory_max_object_bytes:
                    memory_copy.extend(chunk)
                else:
                    memory_copy = None
            if writer is not None:
                try:
                    await writer.write(chunk)
                except OSError as exc:
                    log.warning("disk write for %s failed (%s); relaying without storing", key[:200], exc)
                    await _abort(writer)
                    writer = None
            if announce is not None:
                temp = writer.temp_path if writer is not None else None
                if temp is not None:
                    announce.publish(temp)  # other workers may follow from here on (once)
                else:
                    announce.withdraw()  # not stored after all: nobody new may follow
    except OriginBodyBroken as exc:
        if held is not None:
            fill.append(held)
        await _abort(writer)
        fill.fail(exc)
        return
    purges = ctx.purger
    await purges.sync()
    if storing and expected_size is not None and checksum.size != expected_size:
        # A part whose body is not the length its Content-Range says: never stored.
        log.warning("origin sent %d bytes for a part of %d of %s; not stored", checksum.size, expected_size,
                    key[:200])  # fmt: skip
        storing = False
        await _abort(writer)
    if storing and purges.view.purged_since(fill.start_seq, fill.started_at, key, meta.tags):
        storing = False  # a purge arrived while this fill ran: its content must not be stored
        await _abort(writer)
    if storing:
        final = replace(meta, size=checksum.size, checksum=checksum.hexdigest())
        if writer is not None and not await writer.commit(final):
            log.warning("disk tier refused %s", key[:200])
        if memory_copy is not None and ctx.store.memory is not None:
            await ctx.store.memory.put(final, bytes(memory_copy))
        await purges.sync()
        if purges.view.purged_since(fill.start_seq, fill.started_at, key, meta.tags):
            await ctx.store.delete(key, variant)  # the purge landed between check and publish
        elif combine_parts and parts.is_part(variant):
            try:
                await combine.combine(ctx, final)
            except Exception:  # the part itself is stored and its readers whole: only combining failed
                log.exception("combining the parts of %s failed", key[:200])
        if meta.vary and not parts.is_part(variant):
            await _enforce_variant_cap(ctx, key)  # only responses with Vary make more than one variant
    if held is not None:
        fill.append(held)
    fill.finish()


async def _peer_copy_predates_a_purge(ctx: CacheContext, route: PeerRoute, key: str, upstream: OriginResponse) -> bool:
    """Whether the key's owner answered with a copy older than a purge of it this edge applied.

    The router reaches edges one by one, and an owner may apply a purge after this edge did: until
    then it serves its old copy as fresh, and stored here (a second owner keeps what it is sent) that
    copy would outlive the purge everywhere.  Such an answer is replaced by the origin's.  When the
    origin made the copy: the earlier of now less its ``Age`` (time spent in caches) and its
    ``Date`` (an owner's fill still streaming carries no age of its own), both in whole seconds —
    so a copy made less than a second before the purge can pass; a fill made after it is taken.
    """
    await ctx.purger.sync()
    recent = ctx.purger.view.recent
    if not recent:
        return False
    headers = _from_origin(upstream)
    now = time.time()
    made_at = now - policy.parse_age(headers)
    date = dates.parse_http_date(get_first(headers, "date") or "")
    if date is not None and date <= now:
        made_at = min(made_at, date + 1.0)  # Date is the second it was made in
    tags = site_tags(route.name, surrogate_keys(headers))
    return any(record.at > made_at and record.matches(key, tags) for record in reversed(recent))


def _from_origin(upstream: OriginResponse) -> list[tuple[str, str]]:
    """An origin response's fields as a fill works with them: hop-by-hop fields out, and our own
    marker of transformed objects too (an origin cannot claim our transformations)."""
    headers = forwarding.strip_hop_by_hop(decode_raw_headers(upstream.raw_headers))
    return [(name, value) for name, value in headers if name.lower() != coding.MARK_FIELD]


async def _counted(ctx: CacheContext, chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    async for chunk in chunks:
        ctx.counters.bytes_from_origin += len(chunk)
        yield chunk


async def relay_and_store(
    ctx: CacheContext, ex: Exchange, upstream: OriginResponse, status: CacheStatus, meta: StoredMeta
) -> None:
    """Send an origin response to its one client while storing it (not shared: a POST's answer that
    RFC 9110 §9.3.3 lets later GETs reuse).  Stored only if it arrives whole and fits."""
    settings = ctx.cache_settings
    writer = ctx.store.disk.writer(meta.key, meta.variant) if ctx.store.disk is not None else None
    memory_copy: bytearray | None = bytearray() if ctx.store.memory is not None else None
    checksum = BodyChecksum()
    storing = True
    try:
        headers = respond.client_headers(ctx, decode_raw_headers(upstream.raw_headers), keep_age=True)
        headers = respond.finish_headers(ctx, ex, upstream.status, forwarding.strip_hop_by_hop(headers), status)
        await ex.start(upstream.status, upstream.reason, headers, length=upstream.content_length)
        try:
            async for chunk in iter_body(upstream):
                checksum.update(chunk)
                ctx.counters.bytes_from_origin += len(chunk)
                if storing and checksum.size > settings.max_object_bytes:
                    storing, memory_copy = False, None
                    await _abort(writer)
                    writer = None
                if storing:
                    if memory_copy is not None:
                        if len(memory_copy) + len(chunk) <= ctx.store.memory_max_object_bytes:
                            memory_copy.extend(chunk)
                        else:
                            memory_copy = None
                    if writer is not None:
                        await writer.write(chunk)
                await ex.write(chunk)
        except OriginBodyBroken as exc:
            await _abort(writer)
            faultlog.report(ex.head.peer, ex.head.method, ex.head.target, 502, exc.reason)
            ex.abort()
            return
        await ex.end()
        if storing:
            final = replace(meta, size=checksum.size, checksum=checksum.hexdigest())
            if writer is not None and not await writer.commit(final):
                log.warning("disk tier refused %s", meta.key[:200])
            writer = None
            if memory_copy is not None and ctx.store.memory is not None:
                await ctx.store.memory.put(final, bytes(memory_copy))
    finally:
        if writer is not None:
            await _abort(writer)
        upstream.release()


async def _abort(writer: StoreWriter | None) -> None:
    if writer is not None:
        try:
            await writer.abort()
        except OSError as exc:
            log.warning("aborting a disk write failed: %s", exc)


async def _enforce_variant_cap(ctx: CacheContext, key: str) -> None:
    metas = await ctx.store.all_variants(key)
    if len(metas) <= ctx.cache_settings.max_variants:
        return
    candidates = [vary.StoredVariant(m.variant, m.vary, m.secondary, None, m.response_time) for m in metas]
    for variant in vary.variants_to_evict(candidates, ctx.cache_settings.max_variants):
        await ctx.store.delete(key, variant)


# -- the readers ---------------------------------------------------------------------------------


async def serve(
    ctx: CacheContext,
    ex: Exchange,
    received: HeaderList,
    target: str,
    key: str,
    fill: Fill,
    fwd: FwdReason,
    collapsed: bool,
    stale: CachedObject | None,
    detail: str | None = None,
) -> None:
    """Answer one request from a fill it started or joined (``stale``: the object being revalidated)."""
    reader = fill.open_reader()
    try:
        outcome = await fill.wait_outcome()
        ex.origin_label, ex.origin_name = fill.origin_label, fill.origin_name
        if not collapsed:
            ex.origin_ms = fill.origin_ms
    except FillAborted:
        fill.close_reader(reader)
        await _fill_failed(ctx, ex, received, fill, fwd, stale)
        return
    except BaseException:
        fill.close_reader(reader)
        raise
    await serve_outcome(ctx, ex, received, target, key, fill, reader, outcome, fwd, collapsed, stale, detail)


async def serve_outcome(
    ctx: CacheContext,
    ex: Exchange,
    received: HeaderList,
    target: str,
    key: str,
    fill: Fill,
    reader: int,
    outcome: FillOutcome,
    fwd: FwdReason,
    collapsed: bool,
    stale: CachedObject | None,
    detail: str | None = None,
) -> None:
    """Answer one request from a fill's outcome, reading its body with ``reader`` (closed here)."""
    reader_open = True
    node = ctx.node_name
    if fill.via_peer:
        fwd = "peer"
    try:
        match outcome:
            case Refreshed(meta=meta, storable=storable) if storable or not collapsed:
                assert stale is not None
                refreshed = CachedObject(meta, body=stale.body, path=stale.path, offset=stale.offset, tier=stale.tier,
                                         extras=stale.extras)  # fmt: skip
                ctx.counters.hits += 1
                status = CacheStatus(node, fwd=fwd, fwd_status=304, collapsed=collapsed or None, ttl=ttl_of(ctx, meta))
                age = policy.current_age(meta.headers, meta.request_time, meta.response_time, time.time())
                await respond.stored(ctx, ex, received, refreshed, age, status)
            case Refreshed():
                fill.close_reader(reader)
                reader_open = False
                await own_request(ctx, ex, target, fwd, "not-shareable")
            case StoredElsewhere():
                fill.close_reader(reader)
                reader_open = False
                found = await ctx.store.lookup(key, received)
                obj = ctx.purger.visible(found.obj)
                try:
                    if obj is None:
                        await own_request(ctx, ex, target, fwd)
                        return
                    ctx.counters.hits += 1
                    age = policy.current_age(obj.meta.headers, obj.meta.request_time, obj.meta.response_time,
                                             time.time())  # fmt: skip
                    status = CacheStatus(node, hit=True, ttl=ttl_of(ctx, obj.meta), collapsed=True)
                    await respond.stored(ctx, ex, received, obj, age, status)
                finally:
                    close_handle(found.obj)
            case OriginFailed(status=origin_status):
                assert stale is not None
                await serve_stale_on_error(ctx, ex, received, stale, origin_status)
            case Unshared(upstream=upstream, why=why) if upstream is not None and not collapsed:
                fill.close_reader(reader)
                reader_open = False
                status = CacheStatus(node, fwd=fwd, fwd_status=outcome.status, stored=False, detail=why or None)
                await respond.relay(ctx, ex, upstream, status)
            case Unshared(why=why):
                fill.close_reader(reader)
                reader_open = False
                await own_request(ctx, ex, target, fwd, why)  # not shareable: this waiter asks on its own
            case Shared() if collapsed and not answers(outcome.headers, fill.received, received):
                # Another variant than this request selects (its Vary): this one asks on its own.
                fill.close_reader(reader)
                reader_open = False
                await own_request(ctx, ex, target, fwd, "vary-mismatch")
            case Shared():
                reader_open = False
                await _stream_shared(ctx, ex, received, target, key, fill, reader, outcome, fwd, collapsed, detail)
            case _:
                assert_never(outcome)
    finally:
        if reader_open:
            fill.close_reader(reader)


async def _stream_shared(
    ctx: CacheContext,
    ex: Exchange,
    received: HeaderList,
    target: str,
    key: str,
    fill: Fill,
    reader: int,
    outcome: Shared,
    fwd: FwdReason,
    collapsed: bool,
    detail: str | None = None,
) -> None:
    method = ex.head.method
    # A 206 is the part this request asked for (the fill forwarded its Range and If-Range).
    partial = outcome.status == 206
    collapsed = collapsed or fill.followed
    asked = fwd
    if fill.via_peer:
        fwd = "peer"  # the region's owner answered (its own member precedes ours)
    status = CacheStatus(ctx.node_name, fwd=fwd, fwd_status=outcome.status, stored=fill.stores,
                         collapsed=collapsed or None,
                         detail="partial" if partial else detail or fill.detail)  # fmt: skip
    wants_range = not partial and ranges.range_value(received, method) is not None
    conditional = (
        None if wants_range
        else validation.evaluate_client_conditionals(method, received, outcome.status, outcome.headers)
    )  # fmt: skip
    if wants_range or conditional is not None:
        # Answered from the complete stored object once the fill is done.
        fill.close_reader(reader)
        await fill.wait_done()
        found = await ctx.store.lookup(key, received)
        try:
            if found.obj is not None:
                meta = found.obj.meta
                age = policy.current_age(meta.headers, meta.request_time, meta.response_time, time.time())
                await respond.stored(ctx, ex, received, found.obj, age, status)
                return
        finally:
            close_handle(found.obj)
        if fill.failure is not None:
            raise OriginBodyBroken(str(fill.failure))
        # Not stored here (too large, or a copy this edge does not keep): asked again as sent,
        # through the key's owner when there is one.
        await own_request(ctx, ex, target, asked, via_cluster=True)
        return
    sent = outcome.owner_headers if not collapsed and outcome.owner_headers is not None else outcome.headers
    headers = respond.client_headers(ctx, sent, keep_age=True)
    declared = get_first(outcome.headers, "content-length")
    length = int(declared) if declared is not None and declared.strip().isdigit() else None
    headers = respond.finish_headers(ctx, ex, outcome.status, headers, status)
    # The head goes out with the first bytes, i.e. once they are stored.
    await ex.start(outcome.status, outcome.reason or None, headers, length=length, defer=True)
    if method != "HEAD":
        try:
            async for chunk in fill.body(reader):
                await ex.write(chunk)
        except FillAborted as exc:
            if ex.withdraw():  # nothing sent yet: the client gets a 502 saying why, not a cut
                raise OriginBodyBroken(str(exc)) from None
            faultlog.report(ex.head.peer, method, ex.head.target, 502, str(exc))
            ex.abort()
            return
    else:
        fill.close_reader(reader)
    await ex.end()


async def _fill_failed(
    ctx: CacheContext, ex: Exchange, received: HeaderList, fill: Fill, fwd: FwdReason, stale: CachedObject | None
) -> None:
    """No outcome: the origin is unreachable (or the fill broke). Stale may stand in (RFC 9111 §4.2.4)."""
    if stale is not None and policy.can_serve_stale_on_error(entry_of(stale.meta), received, time.time(), ctx.policy):
        await serve_stale_on_error(ctx, ex, received, stale, None)
        return
    if stale is not None and policy.must_revalidate_or_504(entry_of(stale.meta), ctx.policy):
        await respond.error(ctx, ex, 504, "origin unreachable and the stored response must be revalidated",
                            CacheStatus(ctx.node_name, fwd=fwd, detail="must-revalidate"))  # fmt: skip
        return
    failure = fill.failure
    if isinstance(failure, EdgeError):
        raise failure
    raise EdgeError(str(failure) if failure else "the shared fetch failed")


async def serve_stale_on_error(
    ctx: CacheContext, ex: Exchange, received: HeaderList, stale: CachedObject, origin_status: int | None
) -> None:
    """RFC 5861 §4 / RFC 9111 §4.2.4: the origin failed and the stored response may stand in."""
    meta = stale.meta
    age = policy.current_age(meta.headers, meta.request_time, meta.response_time, time.time())
    status = CacheStatus(ctx.node_name, fwd="stale", fwd_status=origin_status, ttl=ttl_of(ctx, meta),
                         detail="stale-if-error")  # fmt: skip
    await respond.stored(ctx, ex, received, stale, age, status)
