"""The edge's service: every request on the public listener, read top to bottom.

    front end ─► fast path (hit.py): a fresh memory hit, answered from the parser callback
              └► handle(): loop check → PURGE → method
                   GET/HEAD ─► look_up (lookup.py) ─► match the verdict:
                                 HIT            serve the stored response (respond.py)
                                 STALE          serve it, refresh in the background (RFC 5861 §3)
                                 REVALIDATE     start or join a validation fill, serve its outcome
                                 MISS / BUSY    start or join a fill, serve its outcome (fill.py)
                                 HIT_FOR_MISS / PASS   straight to the origin, nothing stored
                                 ONLY_IF_CACHED 504 (RFC 9111 §5.2.1.7)
                   other methods ─► forwarded; a success invalidates what it names (RFC 9111 §4.4)

Errors carry who is at fault and a status hint (``edge.errors``) and become responses here only.
"""

from __future__ import annotations

import ipaddress
import json
import time
import uuid
from collections.abc import Sequence
from typing import assert_never

from edge import faultlog
from edge.accesslog import AccessLog
from edge.cache import fill as fills
from edge.cache import partial, respond, revalidate, slices
from edge.cache.context import CacheContext
from edge.cache.hit import SLOW_REQUEST_FIELDS, HitPath
from edge.cache.lookup import Verdict, look_up
from edge.cluster import PEER_HEADER_BYTES, PEER_PROTO_HEADER_BYTES, shard_of
from edge.errors import ClientFault, EdgeError, LoopDetected, Misdirected
from edge.forward import client_host, origin_target, stripped_fields
from edge.http import coding, forwarding, invalidation, policy, validation, vary
from edge.http.cachestatus import CacheStatus
from edge.http.headers import HeaderList
from edge.protection import Refusal
from edge.server.exchange import Exchange, RequestHead
from edge.sites import site_tags
from edge.store.base import CachedObject, StoredMeta
from edge.store.tiered import close_handle
from edge.upstream import decode_raw_headers

ALLOWED_METHODS = "GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS, TRACE"  # everything but CONNECT is forwarded
_ORIGIN_BOUND = frozenset({Verdict.MISS, Verdict.PARTIAL, Verdict.HIT_FOR_MISS, Verdict.PASS})


class Cache:
    """The public service of one edge worker (``edge.server.protocol.Service``)."""

    slow_headers = SLOW_REQUEST_FIELDS

    def __init__(self, ctx: CacheContext, access_log: AccessLog | None = None) -> None:
        self.ctx = ctx
        self.access_log = access_log
        self.hit_path = HitPath(ctx, access_log)
        self.enabled = ctx.settings.cache.enabled
        compression = ctx.settings.compression
        self.codings: tuple[str, ...] = tuple(compression.algorithms) if compression.enabled else ()
        self.purge_networks = [ipaddress.ip_network(item, strict=False) for item in ctx.settings.purge_allow]
        protection = ctx.protection
        self.protection = protection if protection is not None and protection.active else None

    # -- the front end's calls -----------------------------------------------------------------
    def fast(self, head: RequestHead) -> Sequence[bytes] | None:
        protection = self.protection
        if protection is not None:  # before anything else: a refusal is one short prebuilt answer
            if self.ctx.cluster is not None and self._from_peer(head):
                return None  # a peer relays a client it judged already: the general path serves it
            refusal = protection.check(head, self.ctx.sites.for_host(head.host))
            if refusal is not None:
                self.ctx.counters.count_refused(refusal.status)
                return refusal.response(head.keep_alive, head.method == "HEAD")
        return self.hit_path.fast(head) if self.enabled else None

    async def handle(self, ex: Exchange) -> None:
        ctx = self.ctx
        ctx.counters.requests += 1
        head = ex.head
        try:
            received = head.headers
            if forwarding.is_loop(received, ctx.node_name):
                raise LoopDetected(f"request loop: it already passed through {ctx.node_name}")
            site = ctx.sites.for_host(head.host)
            if site is None:
                shown = client_host(head)[:200] or "(none)"
                raise Misdirected(f"no site of this edge serves host {shown!r}")
            ex.site = site
            if ctx.cluster is not None:
                ex.peer = self._from_peer(head)
                if ex.peer:  # the client's scheme, as the first edge saw it (keys, X-Forwarded-Proto)
                    proto = next((v for n, v in head.raw_headers if n.lower() == PEER_PROTO_HEADER_BYTES), None)
                    if proto in (b"http", b"https"):
                        head.scheme = proto.decode("ascii")
            protection = self.protection
            if protection is not None and head.client is None and not ex.peer:  # not judged by fast()
                refusal = protection.check(head, site)
                if refusal is not None:
                    await self._refuse(ex, refusal)
                    return
            if head.method == "PURGE":
                await self._purge_one_url(ex)
                return
            if head.method == "CONNECT":
                raise ClientFault("CONNECT is not supported: this is a reverse proxy")
            if head.method in forwarding.MAX_FORWARDS_METHODS:  # RFC 9110 §7.6.2, whatever the cache does
                hops = forwarding.max_forwards(received)
                if hops == 0:  # this hop is the final recipient: it answers
                    await self._answer_here(ex, received)
                    return
                if hops is not None:
                    head.replace_header(b"max-forwards", str(hops - 1).encode("ascii"))
                    received = head.headers
            target = origin_target(head)
            if ctx.settings.upstream.strip_request_headers and (stripped := stripped_fields(head, ctx.settings)):
                ctx.counters.count_stripped(stripped)
            if head.has_body and ex.body is not None and head.method in ("GET", "HEAD") and await ex.body.is_empty():
                ex.body = None  # "Transfer-Encoding: chunked" and no chunk: a GET like any other
            if not self.enabled or (ex.body is not None and head.method in ("GET", "HEAD")):
                # A GET with content (RFC 9110 §9.3.1: no defined semantics) goes to the origin alone:
                # its body is not in the key, and a slow body must hold up no other client's fill.
                refusal = self._over_miss_budget(ex)
                if refusal is not None:
                    await self._refuse(ex, refusal)
                    return
                await fills.own_request(ctx, ex, target, "bypass", None if not self.enabled else "request-body",
                                        interim=True)  # fmt: skip
            elif head.method in ("GET", "HEAD"):
                if self.codings:
                    # One coding per request, before lookup: equivalent Accept-Encoding values share a
                    # variant, and the origin is asked for that coding (edge.http.coding).
                    chosen = coding.chosen_for(received, self.codings)
                    head.keep_original_accept_encoding()
                    head.replace_header(b"accept-encoding", chosen.encode("ascii"))
                    received = head.headers
                await self._cacheable(ex, received, target)
            else:
                await self._write_through(ex, received, target)
        except EdgeError as exc:
            faultlog.report(head.peer, head.method, head.target, exc.status, exc.reason)
            ctx.counters.count_error(exc.status, exc)
            if ex.started:
                ex.abort()
                return
            status = CacheStatus(ctx.node_name, fwd="miss", detail=exc.reason[:80])
            await respond.error(ctx, ex, exc.status, exc.reason, status, exc.headers)

    def completed(self, ex: Exchange) -> None:
        head = ex.head
        self.ctx.counters.observe_request(time.perf_counter() - head.started)
        if self.access_log is None:
            return
        sent = 0 if head.method == "HEAD" or ex.status in (204, 304) else ex.bytes_sent
        self.access_log.record(
            time.time(), head.peer, head.method, head.raw_target, head.version, ex.status, sent, ex.cache_label,
            ex.cache_status, ex.origin_ms, (time.perf_counter() - head.started) * 1000, head.referer,
            head.user_agent, ex.site.name if ex.site is not None else None, ex.origin_label,
        )  # fmt: skip

    def refused(self, peer: str | None, status: int, reason: str, request: str) -> None:
        faultlog.refused_request(peer, request, status, reason)
        self.ctx.counters.count_refused(status)
        if self.access_log is not None:
            method, _, rest = request.partition(" ")
            target = rest.rsplit(" ", 1)[0] if rest else "-"
            self.access_log.record(time.time(), peer, method or "-", target, (1, 1), status, 0, "-", None, None, 0.0,
                                   None, None)  # fmt: skip

    # -- GET / HEAD ------------------------------------------------------------------------------
    async def _cacheable(self, ex: Exchange, received: HeaderList, target: str) -> None:
        ctx = self.ctx
        node = ctx.node_name
        key = ex.site.keys.for_request(ex.head, target)
        lookup = await look_up(ctx, ex, received, key)
        found = lookup.found
        try:
            verdict = lookup.verdict
            if verdict in _ORIGIN_BOUND or (verdict is Verdict.REVALIDATE and lookup.fill is None):
                refusal = self._over_miss_budget(ex)
                if refusal is not None:
                    await self._refuse(ex, refusal)
                    return
            match verdict:
                case Verdict.HIT:
                    assert found is not None
                    assert lookup.decision is not None
                    await self._hit(ex, received, found, lookup.decision, lookup.detail)
                case Verdict.STALE:
                    assert found is not None
                    assert lookup.decision is not None
                    self._refresh_in_background(ex, received, target, key, found)
                    await self._hit(ex, received, found, lookup.decision)
                case Verdict.REVALIDATE:
                    assert found is not None
                    fill = lookup.fill
                    collapsed = fill is not None
                    if fill is None:
                        request = fills.origin_request(ctx, ex, target, drop=validation.CONDITIONAL_REQUEST_FIELDS,
                                                       via_cluster=True)  # fmt: skip
                        fill = fills.launch(ctx, ("validate", key, found.meta.variant),
                                            revalidate.conditional(request, found.meta), received, key, found.meta,
                                            ex)  # fmt: skip
                    await fills.serve(ctx, ex, received, target, key, fill, lookup.fwd, collapsed, stale=found)
                case Verdict.MISS | Verdict.PARTIAL if self._relays(ex, key):
                    # Not an owner and keeping nothing: the owner answers the request as it was sent
                    # (its ranges, conditionals, HEAD), and fills from the origin once for the region.
                    ctx.counters.misses += 1
                    await fills.own_request(ctx, ex, target, lookup.fwd, interim=True, via_cluster=True)
                case Verdict.MISS:
                    ctx.counters.misses += 1
                    # Range and the client's own conditionals are answered here, from the complete object.
                    request = fills.origin_request(ctx, ex, target, drop=validation.CONDITIONAL_REQUEST_FIELDS,
                                                   via_cluster=True)  # fmt: skip
                    fill_key = fills.complete_fill_key(ctx, key, received)
                    fill = fills.launch(ctx, fill_key, request, received, key, None, ex)
                    await fills.serve(ctx, ex, received, target, key, fill, lookup.fwd, False, stale=None)
                case Verdict.BUSY:
                    ctx.counters.misses += 1
                    assert lookup.fill is not None
                    await fills.serve(ctx, ex, received, target, key, lookup.fill, lookup.fwd, True, stale=None)
                case Verdict.PARTIAL:
                    if ex.site.slice_size > 0:
                        await slices.serve(ctx, ex, received, target, key, lookup.fwd)
                    else:
                        await partial.serve(ctx, ex, received, target, key, lookup.fwd)
                case Verdict.HIT_FOR_MISS | Verdict.PASS:
                    ctx.counters.misses += 1
                    # A HEAD that misses asks the key's owner, which may hold the object; what is
                    # known to be uncacheable goes straight to the origin.
                    await fills.own_request(ctx, ex, target, lookup.fwd, lookup.detail, interim=True,
                                            via_cluster=lookup.verdict is Verdict.PASS)  # fmt: skip
                case Verdict.ONLY_IF_CACHED:
                    await respond.error(
                        ctx, ex, 504, "not in cache and the request allows only a cached response (only-if-cached)",
                        CacheStatus(node, fwd=lookup.fwd, detail="only-if-cached"),
                    )  # fmt: skip
                case _:
                    assert_never(lookup.verdict)
        finally:
            close_handle(found)

    def _from_peer(self, head: RequestHead) -> bool:
        """A peer edge's request (its token matches): judged by protection on the edge the client met."""
        cluster = self.ctx.cluster
        assert cluster is not None
        token = next((v for n, v in head.raw_headers if n.lower() == PEER_HEADER_BYTES), None)
        return cluster.is_peer_request(token)

    async def _refuse(self, ex: Exchange, refusal: Refusal) -> None:
        extra = (("Retry-After", str(refusal.retry_after)),) if refusal.retry_after is not None else ()
        status = CacheStatus(self.ctx.node_name, fwd="miss", detail=refusal.reason)
        await respond.error(self.ctx, ex, refusal.status, refusal.message, status, extra)

    def _over_miss_budget(self, ex: Exchange) -> Refusal | None:
        """A request about to go to the origin: does it fit the client's ``miss_rate``?"""
        protection = self.ctx.protection
        if protection is None or ex.peer:  # a peer's fill is a client's miss counted on its own edge
            return None
        return protection.miss(ex.head, ex.site)

    def _relays(self, ex: Exchange, key: str) -> bool:
        cluster = self.ctx.cluster
        return cluster is not None and cluster.relays(shard_of(key), ex.peer, ex.head.headers)

    async def _hit(self, ex: Exchange, received: HeaderList, found: CachedObject,
                   decision: policy.ServeDecision, detail: str | None = None) -> None:  # fmt: skip
        self.ctx.counters.hits += 1
        ttl = int(decision.ttl) if decision.fresh else min(int(decision.ttl), -max(1, int(decision.staleness)))
        status = CacheStatus(self.ctx.node_name, hit=True, ttl=ttl, detail=detail)
        await respond.stored(self.ctx, ex, received, found, decision.age, status)

    def _refresh_in_background(
        self, ex: Exchange, received: HeaderList, target: str, key: str, found: CachedObject
    ) -> None:
        """RFC 5861 §3: serve stale now, revalidate once in the background (collapsed)."""
        ctx = self.ctx
        fill_key = ("validate", key, found.meta.variant)
        joined = fills.join(ctx, fill_key, key)
        if joined is not None:
            joined.waiters -= 1  # nobody waits for it here
            return
        request = fills.origin_request(ctx, ex, target, drop=validation.CONDITIONAL_REQUEST_FIELDS, via_cluster=True)
        fills.launch(ctx, fill_key, revalidate.conditional(request, found.meta), received, key, found.meta, None)

    # -- unsafe and other methods: write-through with invalidation (RFC 9111 §4, §4.4) ----------
    async def _write_through(self, ex: Exchange, received: HeaderList, target: str) -> None:
        ctx = self.ctx
        head = ex.head
        refusal = self._over_miss_budget(ex)
        if refusal is not None:
            await self._refuse(ex, refusal)
            return
        upstream = await fills.send(ctx, ex, fills.origin_request(ctx, ex, target))
        headers = forwarding.strip_hop_by_hop(decode_raw_headers(upstream.raw_headers))
        site = ex.site
        host = client_host(head) or site.name
        request_url = f"{head.scheme}://{host}{target}"
        now = time.time()
        if invalidation.is_unsafe(head.method):
            for url in invalidation.invalidation_targets(head.method, upstream.status, request_url, headers):
                await ctx.purger.invalidate(site.keys.for_url(url), now)  # every worker, before the client hears
        if head.method == "POST" and self.enabled:
            decision = policy.post_response_storable(upstream.status, request_url, received, headers, ctx.policy)
            fields = vary.vary_fields(headers)
            if decision.store and fields is not None:
                # RFC 9110 §9.3.3: this answer is what a GET of the target URI returns now.
                key = site.keys.for_request(head, target)
                stored_at = max(time.time(), ctx.purger.log.invalidated_at(key) + 1e-6)
                secondary = vary.secondary_key(fields, received)
                meta = StoredMeta(
                    key=key, variant=vary.variant_id(secondary) if fields else "", vary=fields, secondary=secondary,
                    status=upstream.status, reason=upstream.reason or "",
                    headers=tuple(respond.without_fields(headers, (*decision.strip_fields, *respond.FRAMING_FIELDS))),
                    request_time=now, response_time=now, size=0, checksum="",
                    tags=site_tags(site.name, fills.surrogate_keys(headers)),
                    stored_at=stored_at,
                )  # fmt: skip
                status = CacheStatus(ctx.node_name, fwd="method", fwd_status=upstream.status, stored=True,
                                     detail="post-content-location")  # fmt: skip
                await fills.relay_and_store(ctx, ex, upstream, status, meta)
                return
        status = CacheStatus(ctx.node_name, fwd="method", fwd_status=upstream.status, stored=False)
        await respond.relay(ctx, ex, upstream, status)

    async def _answer_here(self, ex: Exchange, received: HeaderList) -> None:
        """OPTIONS or TRACE with ``Max-Forwards: 0``: what this edge allows, or the request reflected."""
        head = ex.head
        if head.method == "OPTIONS":
            await ex.respond(200, [("Allow", ALLOWED_METHODS), ("Cache-Control", "no-store")], b"")
            return
        echo = forwarding.trace_reflection(head.method, head.target, head.version, received)
        await ex.respond(200, [("Content-Type", "message/http"), ("Cache-Control", "no-store")], echo)

    # -- PURGE on the public listener ------------------------------------------------------------
    async def _purge_one_url(self, ex: Exchange) -> None:
        """``PURGE /path``: Varnish/Squid-style single-URL purge, from ``purge_allow`` networks only."""
        ctx = self.ctx
        try:
            peer = ipaddress.ip_address((ex.head.peer or "").split("%")[0])
        except ValueError:
            peer = None
        if peer is None or not any(peer in network for network in self.purge_networks):
            await _json(ex, 403, {"error": "PURGE not allowed from this address"})
            return
        if not self.enabled:
            await _json(ex, 404, {"error": "caching is disabled"})
            return
        key = ex.site.keys.for_request(ex.head, origin_target(ex.head))
        soft = (ex.head.header("Soft-Purge") or "").strip() in ("1", "true")
        record, affected = await ctx.purger.purge("urls", [key], soft, f"l-{uuid.uuid4().hex[:12]}")
        ctx.counters.purges["urls"] = ctx.counters.purges.get("urls", 0) + 1
        await _json(ex, 200, {"id": record.purge_id, "seq": record.seq, "kind": "urls", "soft": soft,
                              "affected": affected, "url": key})  # fmt: skip


async def _json(ex: Exchange, status: int, body: dict[str, object]) -> None:
    await ex.respond(status, [("Content-Type", "application/json; charset=utf-8")], json.dumps(body).encode())
