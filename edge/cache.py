"""The caching request handler: look up → ask the policy → act → ask again.

This module is the driver of DESIGN.md §2: every RFC 9111 decision is delegated to the pure
modules in ``edge.http`` (``policy``, ``vary``, ``validation``, ``ranges``, ``invalidation``,
``cachestatus``, ``cachekey``); this file only moves bytes between the client, the tiers
(``edge.store``) and the origin (``edge.upstream``), and says what happened in ``Cache-Status``.

Flow for GET/HEAD:

1. Find the stored variant for the request (memory tier, then disk; RFC 9111 §4.1 Vary).
2. ``policy.serve_decision``: serve it (fresh, allowed-stale, stale-while-revalidate with a
   background refresh), or validate it with the origin (§4.3), or — nothing stored — fetch.
3. Fetches and validations are *fills* (``edge.coalesce``): concurrent requests for the same
   object share one origin request and stream its body as it arrives, while it is also written to
   the tiers.  A response that may not be stored is not shared either: the other waiters are sent
   to the origin on their own and the key is remembered as uncacheable for a moment (hit-for-miss).
4. Every response carries ``Cache-Status`` (RFC 9211), ``X-Cache``, and ``Age`` when served from
   the cache (§5.1).

Other methods are forwarded unchanged and, when they succeed, invalidate what they name (§4.4).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import io
import logging
import os
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import urlsplit

from aiohttp import ClientResponse, ClientSession, hdrs, web
from lru import LRU
from multidict import CIMultiDict

from edge import faultlog
from edge.accesslog import client_gone, timing_of
from edge.coalesce import Coalescer, Fill, FillAborted, FillHead, KeyLocks
from edge.config import CacheSettings
from edge.errors import EdgeError, LoopDetected, OriginBodyBroken
from edge.http import cachekey, forwarding, invalidation, policy, ranges, validation, vary
from edge.http.cachestatus import CacheStatus, FwdReason, append_cache_status, x_cache_value
from edge.http.headers import HeaderList, get_all, get_first, split_all
from edge.proxy import (
    ForwardContext,
    RelayResponse,
    build_origin_headers,
    origin_target,
    plain_error,
    stream_request_body,
    upstream_url,
)
from edge.purge import PurgeKind, PurgeLog, PurgeRecord, PurgeView
from edge.store.base import BodyChecksum, CachedObject, Store, StoredMeta, StoreWriter, body_checksum
from edge.store.disk import DiskStore
from edge.upstream import OriginRequest, decode_raw_headers, iter_body, send_to_origin

log = logging.getLogger("edge.cache")

# Framing fields describe one transfer, not the stored representation: never stored, recomputed
# for every response sent from the cache.
FRAMING_FIELDS = ("content-length", "transfer-encoding")
SURROGATE_FIELDS = ("surrogate-key", "cache-tag")
# Replaced by this cache in what it sends (the stored Age still feeds RFC 9111 §4.2.3's age_value).
GENERATED_FIELDS = ("age", "x-cache")


def policy_config(settings: CacheSettings) -> policy.PolicyConfig:
    return policy.PolicyConfig(
        heuristic_fraction=settings.heuristic_fraction,
        heuristic_max=settings.heuristic_max,
        store_set_cookie=settings.store_set_cookie,
        cdn_cache_control_names=tuple(settings.cdn_cache_control_names),
        honor_request_directives=settings.honor_request_directives,
        max_stale_on_error=settings.max_stale_on_error,
    )


def key_config(settings: CacheSettings) -> cachekey.CacheKeyConfig:
    return cachekey.CacheKeyConfig(
        ignore_query=settings.ignore_query,
        sort_query=settings.sort_query,
        drop_params=frozenset(settings.drop_query_params),
    )


def surrogate_keys(headers: HeaderList) -> tuple[str, ...]:
    """Tags for purging: ``Surrogate-Key`` is space-separated, ``Cache-Tag`` comma-separated."""
    tags: list[str] = []
    for value in get_all(headers, "surrogate-key"):
        tags.extend(value.split())
    tags.extend(split_all(headers, "cache-tag"))
    return tuple(dict.fromkeys(tag for tag in tags if tag))


def without_fields(headers: Iterable[tuple[str, str]], names: Iterable[str]) -> list[tuple[str, str]]:
    dropped = {name.lower() for name in names}
    return [(name, value) for name, value in headers if name.lower() not in dropped]


@dataclass(slots=True)
class Lookup:
    """What the tiers hold for a request: the chosen object, and whether the key exists at all."""

    found: CachedObject | None
    key_known: bool


ORIGIN_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


@dataclass(slots=True)
class CacheCounters:
    """Per-worker counters exposed by /stats and /metrics (summed over workers there)."""

    requests: int = 0
    hits: int = 0
    misses: int = 0
    bytes_from_cache: int = 0
    bytes_from_origin: int = 0
    by_status: dict[str, int] = field(default_factory=dict)
    purges: dict[str, int] = field(default_factory=dict)
    by_code_class: dict[str, int] = field(default_factory=dict)
    origin_latency_buckets: list[int] = field(default_factory=lambda: [0] * (len(ORIGIN_LATENCY_BUCKETS) + 1))
    origin_latency_sum: float = 0.0
    origin_latency_count: int = 0

    def count(self, label: str) -> None:
        self.by_status[label] = self.by_status.get(label, 0) + 1

    def observe_origin(self, seconds: float) -> None:
        index = next((i for i, bound in enumerate(ORIGIN_LATENCY_BUCKETS) if seconds <= bound), -1)
        self.origin_latency_buckets[index] += 1
        self.origin_latency_sum += seconds
        self.origin_latency_count += 1


class TieredStore:
    """Memory tier in front of the shared disk tier; a disk hit is promoted when it fits."""

    def __init__(self, memory: Store | None, disk: DiskStore | None, memory_max_object_bytes: int) -> None:
        self.memory = memory
        self.disk = disk
        self.memory_max_object_bytes = memory_max_object_bytes

    @property
    def tiers(self) -> list[Store]:
        return [tier for tier in (self.memory, self.disk) if tier is not None]

    async def lookup(self, key: str, request_headers: HeaderList) -> Lookup:
        key_known = False
        for tier in self.tiers:
            metas = await tier.variants(key)
            if not metas:
                continue
            key_known = True
            chosen = select(metas, request_headers)
            if chosen is None:
                continue
            found = await tier.get(key, chosen.variant)
            if found is None:
                continue
            if tier is self.disk:
                promoted = await self._promote_or_open(found)
                if promoted is None:
                    continue
                found = promoted
            return Lookup(found, True)
        return Lookup(None, key_known)

    async def _promote_or_open(self, found: CachedObject) -> CachedObject | None:
        """A disk hit: copy it into memory when it fits, else open its body file now.

        Opening before any header is sent matters: a newer fill or a purge may unlink the file
        right after ``get`` returned it; an open file stays readable, a missing one is a miss.
        Bodies read here are checksummed, so a corrupt large body never reaches memory or a client.
        """
        meta = found.meta
        if self.memory is not None and meta.size <= self.memory_max_object_bytes:
            body = found.body
            if body is None and found.path is not None:
                try:
                    body = await asyncio.to_thread(read_slice, found.path, found.offset, meta.size)
                except OSError:
                    return None
                if len(body) != meta.size or body_checksum(body) != meta.checksum:
                    if self.disk is not None:
                        await self.disk.verify(found)  # discards and counts it
                    return None
            if body is not None:
                await self.memory.put(meta, body)
                return CachedObject(meta, body=body, tier="disk")
        if found.body is None and found.path is not None:
            try:
                handle = open(found.path, "rb")  # noqa: SIM115, ASYNC230 - an open() is one quick syscall; closed after serving
            except OSError:
                return None
            found.extras["handle"] = handle
        return found

    async def all_variants(self, key: str) -> list[StoredMeta]:
        for tier in reversed(self.tiers):
            metas = await tier.variants(key)
            if metas:
                return metas
        return []

    async def update_meta(self, meta: StoredMeta) -> None:
        for tier in self.tiers:
            await tier.update_meta(meta)

    async def delete(self, key: str, variant: str | None = None) -> int:
        removed = 0
        for tier in self.tiers:
            removed += await tier.delete(key, variant)
        return removed


@functools.lru_cache(maxsize=8192)
def status_values(existing: tuple[str, ...], status: CacheStatus) -> tuple[str, str]:
    """``Cache-Status`` and ``X-Cache`` values, memoised: hits repeat the same few verdicts."""
    return append_cache_status(existing, status), x_cache_value(status)


class StoredObjectResponse(RelayResponse):
    """A response from the cache (or a shared fill): its header block goes out with the first body
    bytes, in one write — fewer syscalls on hits, and a fill's client sees nothing before the object
    it is part of is in a tier (the fill holds back its last chunk until then)."""

    _send_headers_immediately = False


def close_handle(found: CachedObject) -> None:
    """Close the body file a disk hit opened (see ``TieredStore._promote_or_open``)."""
    handle = found.extras.pop("handle", None)
    if isinstance(handle, io.BufferedReader):
        handle.close()


def read_slice(path: os.PathLike[str] | str, offset: int, size: int) -> bytes:
    with open(path, "rb") as handle:
        handle.seek(offset)
        return handle.read(size)


def select(metas: list[StoredMeta], request_headers: HeaderList) -> StoredMeta | None:
    """The stored variant this request may use (RFC 9111 §4.1), most recent first."""
    candidates = [
        vary.StoredVariant(
            variant_id=meta.variant,
            vary=meta.vary,
            secondary_key=meta.secondary,
            date=None,
            response_time=meta.response_time,
        )
        for meta in metas
    ]
    chosen = vary.select_variant(candidates, request_headers)
    if chosen is None:
        return None
    return next(meta for meta in metas if meta.variant == chosen.variant_id)


def entry_of(meta: StoredMeta) -> policy.StoredEntry:
    return policy.StoredEntry(
        status=meta.status,
        headers=meta.headers,
        request_time=meta.request_time,
        response_time=meta.response_time,
        invalidated_at=meta.response_time if meta.invalidated else None,
    )


class CacheHandler:
    """The public handler of one worker when caching is enabled."""

    def __init__(
        self,
        context: ForwardContext,
        session: ClientSession,
        store: TieredStore,
        purge_log: PurgeLog,
        key_locks: KeyLocks | None = None,
    ) -> None:
        self.context = context
        self.purge_log = purge_log
        self.key_locks = key_locks
        self.purges = PurgeView(purge_log)
        self.session = session
        self.store = store
        self.settings = context.settings.cache
        self.policy = policy_config(self.settings)
        self.keys = key_config(self.settings)
        self.coalescer = Coalescer()
        self._keys_by_target: LRU[str, str] = LRU(65536)  # key normalisation is pure: memoise it
        self.counters = CacheCounters()
        self.hit_for_miss: dict[str, tuple[float, str]] = {}
        self.background: set[asyncio.Task[None]] = set()
        # Set once purges missed while this edge was down are applied (edge.admin's catch-up).
        self.caught_up = asyncio.Event()
        self.opened_at = time.time()
        self.hold_until = time.monotonic() + context.settings.control_plane_hold

    # -- entry point ---------------------------------------------------------------------------
    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.counters.requests += 1
        try:
            received = decode_raw_headers(request.raw_headers)
            if forwarding.is_loop(received, self.context.node_name):
                raise LoopDetected(f"request loop: it already passed through {self.context.node_name}")
            target = origin_target(request)
            if request.method in ("GET", "HEAD"):
                return await self._cacheable(request, received, target)
            return await self._write_through(request, received, target)
        except OriginBodyBroken:
            raise
        except ConnectionError as exc:
            return client_gone(request, exc)
        except EdgeError as exc:
            faultlog.report(request.remote, request.method, request.raw_path, exc.status, exc.reason)
            response = plain_error(exc.status, exc.reason, self.context.node_name)
            self._status(response, CacheStatus(self.context.node_name, fwd="miss", detail=exc.reason[:80]))
            return response

    # -- helpers -------------------------------------------------------------------------------
    def cache_key(self, request: web.BaseRequest, target: str) -> str:
        """The primary key: the URL the *origin* is asked for, unless the client's Host is passed on.

        With ``preserve_host`` off (the default) the origin never sees which name or scheme the
        client used, so ``http://edge-a/x`` and ``https://cdn.example/x`` are the same object,
        and a purge naming either URL (or any other host) reaches it.
        """
        path, _, query = target.partition("?")
        query_or_none = query if "?" in target else None
        if not self.context.settings.upstream.preserve_host:
            key = self._keys_by_target.get(target)
            if key is None:
                origin = self.context.origin
                key = cachekey.cache_key(origin.scheme, origin.raw_authority or "", path, query_or_none, self.keys)
                self._keys_by_target[target] = key
            return key
        host = request.headers.get(hdrs.HOST) or self.context.origin.raw_authority or ""
        return cachekey.cache_key(request.scheme, host, path, query_or_none, self.keys)

    def key_for_url(self, url: str) -> str:
        """The key (or key prefix) an absolute URL names, by the same rule as :meth:`cache_key`."""
        normalized = cachekey.normalize_url(url, self.keys)
        if self.context.settings.upstream.preserve_host:
            return normalized
        parts = urlsplit(url)
        target = parts.path or "/"
        if parts.query or url.endswith("?"):
            target += "?" + parts.query
        path, _, query = target.partition("?")
        origin = self.context.origin
        return cachekey.cache_key(
            origin.scheme, origin.raw_authority or "", path, query if "?" in target else None, self.keys
        )

    def _status(self, response: web.StreamResponse, status: CacheStatus) -> None:
        existing = tuple(response.headers.getall("Cache-Status", ()))
        response.headers.popall("Cache-Status", None)
        value, legacy = status_values(existing, status)
        response.headers["Cache-Status"] = value
        response.headers["X-Cache"] = legacy
        self.counters.count(legacy)
        code_class = f"{response.status // 100}xx"
        self.counters.by_code_class[code_class] = self.counters.by_code_class.get(code_class, 0) + 1

    def _origin_request(
        self, request: web.BaseRequest, target: str, *, method: str | None = None, drop: Iterable[str] = ()
    ) -> OriginRequest:
        headers = build_origin_headers(request, self.context)
        dropped = set(drop)
        if dropped:
            headers = [(name, value) for name, value in headers if name.lower() not in dropped]
        return OriginRequest(
            method=method or request.method,
            url=upstream_url(self.context.origin, target),
            headers=headers,
            body=stream_request_body(request) if request.body_exists else None,
        )

    def _interim_relay(self, request: web.BaseRequest) -> Callable[[int, str, list[tuple[str, str]]], Awaitable[None]]:
        async def relay(status: int, reason: str, headers: list[tuple[str, str]]) -> None:
            if request.version < (1, 1) or request.writer is None or request.transport is None:
                return
            lines = [f"HTTP/1.1 {status} {reason}".rstrip()]
            lines.extend(f"{name}: {value}" for name, value in forwarding.strip_hop_by_hop(headers))
            await request.writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
            request.writer.output_size = 0

        return relay

    def _client_headers(self, stored: Iterable[tuple[str, str]], *, keep_age: bool = False) -> CIMultiDict[str]:
        """Stored or received fields as sent to a client: framing recomputed, our own fields replaced.

        ``keep_age``: a response relayed as it arrives keeps the origin's ``Age`` (RFC 9111 §5.1: it
        tells downstream caches how old the response already was); one served from storage gets a
        freshly computed ``Age`` instead.
        """
        headers = without_fields(stored, FRAMING_FIELDS if keep_age else (*FRAMING_FIELDS, *GENERATED_FIELDS))
        if keep_age:
            headers = without_fields(headers, ("x-cache",))
        if not self.settings.expose_surrogate_keys:
            headers = without_fields(headers, SURROGATE_FIELDS)
        headers.append(("Via", forwarding.via_entry((1, 1), self.context.node_name)))
        return CIMultiDict(headers)

    # -- unsafe and other methods: write-through with invalidation (RFC 9111 §4, §4.4) ----------
    async def _write_through(self, request: web.Request, received: HeaderList, target: str) -> web.StreamResponse:
        upstream = await self._send(request, self._origin_request(request, target))
        headers = forwarding.strip_hop_by_hop(decode_raw_headers(upstream.raw_headers))
        if invalidation.is_unsafe(request.method):
            request_url = (
                f"{request.scheme}://{request.headers.get(hdrs.HOST, self.context.origin.raw_authority)}{target}"
            )
            now = time.time()
            for url in invalidation.invalidation_targets(request.method, upstream.status, request_url, headers):
                key = self.key_for_url(url)
                self.purge_log.invalidate(key, now)  # every worker, before the client sees the answer
                removed = await self.store.delete(key)
                log.debug("invalidated %s (%d objects here) after %s", key, removed, request.method)
        status = CacheStatus(self.context.node_name, fwd="method", fwd_status=upstream.status, stored=False)
        return await self._relay(request, upstream, status)

    async def _relay(
        self, request: web.Request, upstream: ClientResponse, status: CacheStatus, fill: Fill | None = None
    ) -> web.StreamResponse:
        """Stream an origin response straight to the client (not shared, not stored)."""
        try:
            headers = forwarding.strip_hop_by_hop(decode_raw_headers(upstream.raw_headers))
            headers = forwarding.append_via(headers, (1, 1), self.context.node_name)
            if not self.settings.expose_surrogate_keys:
                headers = without_fields(headers, SURROGATE_FIELDS)
            response = RelayResponse(
                status=upstream.status, reason=upstream.reason or None, headers=CIMultiDict(headers)
            )
            self._status(response, status)
            await response.prepare(request)
            if request.method != "HEAD":
                try:
                    async for chunk in iter_body(upstream):
                        self.counters.bytes_from_origin += len(chunk)
                        await response.write(chunk)
                except OriginBodyBroken:
                    self._break(request)
                    raise
            await response.write_eof()
            return response
        finally:
            upstream.release() if upstream.content.at_eof() else upstream.close()

    async def _send(
        self, request: web.BaseRequest, origin_request: OriginRequest, *, interim: bool = True
    ) -> ClientResponse:
        """Send to the origin on behalf of one client, timing it for Server-Timing and the access log."""
        started = time.monotonic()
        upstream = await send_to_origin(
            self.session, origin_request, on_interim=self._interim_relay(request) if interim else None
        )
        elapsed = time.monotonic() - started
        timing_of(request).origin_ms = elapsed * 1000
        self.counters.observe_origin(elapsed)
        return upstream

    @staticmethod
    def _break(request: web.BaseRequest) -> None:
        if request.transport is not None:
            request.transport.close()

    # -- GET / HEAD ----------------------------------------------------------------------------
    async def _cacheable(self, request: web.Request, received: HeaderList, target: str) -> web.StreamResponse:
        key = self.cache_key(request, target)
        timing = timing_of(request)
        lookup_started = time.monotonic()
        await self.sync_purges()
        now = time.time()
        lookup = await self.store.lookup(key, received)
        if lookup.found is not None and lookup.found.meta.stored_at < self.opened_at and not self.caught_up.is_set():
            lookup = await self._after_catch_up(key, received, lookup)
            now = time.time()
        timing.lookup_ms = (time.monotonic() - lookup_started) * 1000
        try:
            return await self._use_lookup(request, received, target, key, lookup, now)
        finally:
            if lookup.found is not None:
                close_handle(lookup.found)

    async def _after_catch_up(self, key: str, received: HeaderList, lookup: Lookup) -> Lookup:
        """An object stored before this worker started, while purges it missed may still be on their way.

        Serving it could hand out content the cluster purged while this edge was down, so the
        request waits for the catch-up (until ``control_plane_hold`` seconds after start) and then
        looks again; past that deadline the stored object is ignored and the origin asked instead.
        """
        assert lookup.found is not None
        close_handle(lookup.found)
        remaining = self.hold_until - time.monotonic()
        if remaining > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.caught_up.wait(), remaining)
        if not self.caught_up.is_set():
            return Lookup(None, lookup.key_known)
        await self.sync_purges()
        return await self.store.lookup(key, received)

    async def _use_lookup(
        self, request: web.Request, received: HeaderList, target: str, key: str, lookup: Lookup, now: float
    ) -> web.StreamResponse:
        found = self._apply_purge_verdict(lookup.found)
        if found is None:
            miss: FwdReason = "vary-miss" if lookup.key_known else "uri-miss"
            if policy.request_directives(received, self.policy).only_if_cached:
                return self._gateway_timeout(request, miss, "only-if-cached")
            return await self._miss(request, received, target, key, miss)

        decision = policy.serve_decision(request.method, received, entry_of(found.meta), now, self.policy)
        if decision.action is policy.Action.BYPASS:
            return await self._miss(request, received, target, key, "miss")
        if decision.serve_from_cache:
            if decision.action is policy.Action.STALE_WHILE_REVALIDATE:
                self._refresh_in_background(request, received, target, key, found.meta)
            self.counters.hits += 1
            ttl = int(decision.ttl) if decision.fresh else min(int(decision.ttl), -max(1, int(decision.staleness)))
            status = CacheStatus(self.context.node_name, hit=True, ttl=ttl, detail=None)
            return await self._serve_stored(request, received, found, decision.age, status)
        if decision.only_if_cached:
            return self._gateway_timeout(request, "stale", "only-if-cached")
        fwd: FwdReason = "request" if decision.detail.startswith("request-") else "stale"
        return await self._validate(request, received, target, key, found, decision, fwd)

    def _gateway_timeout(self, request: web.BaseRequest, fwd: FwdReason, detail: str) -> web.Response:
        response = plain_error(
            504, f"not in cache and the request allows only a cached response ({detail})", self.context.node_name
        )
        self._status(response, CacheStatus(self.context.node_name, fwd=fwd, detail=detail))
        return response

    # A miss: one shared fill per key.
    async def _miss(
        self, request: web.Request, received: HeaderList, target: str, key: str, fwd: FwdReason
    ) -> web.StreamResponse:
        self.counters.misses += 1
        remembered = self._hit_for_miss_reason(key)
        if request.method == "HEAD" or remembered is not None:
            detail = remembered if request.method == "GET" and remembered else "head-miss"
            upstream = await self._send(request, self._origin_request(request, target))
            return await self._relay(
                request, upstream,
                CacheStatus(self.context.node_name, fwd=fwd, fwd_status=upstream.status, stored=False, detail=detail),
            )  # fmt: skip
        fill_key = ("fill", key)
        fill = self._join(fill_key, key)
        collapsed = fill is not None
        if fill is None:
            # Range and the client's own conditionals are answered here, from the complete object.
            origin_request = self._origin_request(request, target, drop=validation.CONDITIONAL_REQUEST_FIELDS)
            fill = self._launch(fill_key, origin_request, received, key, None, request)
        return await self._serve_fill(request, received, target, key, fill, fwd, collapsed, stale=None)

    async def _validate(
        self,
        request: web.Request,
        received: HeaderList,
        target: str,
        key: str,
        found: CachedObject,
        decision: policy.ServeDecision,
        fwd: FwdReason,
    ) -> web.StreamResponse:
        fill_key = ("validate", key, found.meta.variant)
        fill = self._join(fill_key, key)
        collapsed = fill is not None
        if fill is None:
            fill = self._launch(
                fill_key, self._validation_request(request, target, found.meta), received, key, found.meta, request
            )
        return await self._serve_fill(request, received, target, key, fill, fwd, collapsed, stale=found)

    def _refresh_in_background(
        self, request: web.BaseRequest, received: HeaderList, target: str, key: str, meta: StoredMeta
    ) -> None:
        """RFC 5861 §3: serve stale now, revalidate once in the background (collapsed)."""
        fill_key = ("validate", key, meta.variant)
        joined = self._join(fill_key, key)
        if joined is not None:
            joined.waiters -= 1  # nobody waits for it here
            return
        self._launch(fill_key, self._validation_request(request, target, meta), received, key, meta, None)

    def _validation_request(self, request: web.BaseRequest, target: str, meta: StoredMeta) -> OriginRequest:
        """A conditional GET for one stored response (RFC 9111 §4.3.1), the client's own conditionals dropped."""
        origin_request = self._origin_request(request, target, drop=validation.CONDITIONAL_REQUEST_FIELDS)
        return OriginRequest(
            method="GET",
            url=origin_request.url,
            headers=[*origin_request.headers, *validation.conditional_headers([meta.headers])],
            body=None,
        )

    def _launch(
        self,
        fill_key: tuple[str, ...],
        origin_request: OriginRequest,
        received: HeaderList,
        key: str,
        validating: StoredMeta | None,
        owner: web.BaseRequest | None,
    ) -> Fill:
        """Register a shared fill and start its task; whatever happens, the fill ends and leaves the key.

        The origin request is built *before* the fill is registered, so a request that cannot be
        forwarded never leaves a registered fill behind.  If the task never gets to run (cancelled
        at shutdown), its done-callback fails the fill, releasing every waiter with an error.
        """
        fill = self._start(fill_key)
        try:
            task = asyncio.ensure_future(self._run_fill(fill, origin_request, received, key, validating, owner))
        except BaseException as exc:
            fill.fail(exc)
            self.coalescer.finish(fill)
            raise
        self.background.add(task)

        def settle(done: asyncio.Task[None]) -> None:
            self.background.discard(done)
            crashed = None if done.cancelled() else done.exception()
            if crashed is not None:
                log.error("fill for %s crashed", key, exc_info=crashed)  # our bug: keep the traceback
            unfinished = fill.head is None or (fill.head.shared and not fill.done)
            if unfinished and fill.failure is None:
                fill.fail(EdgeError("the shared fetch for this URL ended without an answer"))
            self.coalescer.finish(fill)

        task.add_done_callback(settle)
        return fill

    def _join(self, fill_key: tuple[str, ...], key: str) -> Fill | None:
        """Share an in-flight fill, unless a purge since it started may concern this key."""
        fill = self.coalescer.join(fill_key)
        if fill is not None and self.purges.any_since(fill.start_seq, fill.started_at, key):
            fill.waiters -= 1
            return None
        return fill

    def _start(self, fill_key: tuple[str, ...]) -> Fill:
        fill = self.coalescer.start(
            fill_key, self.settings.collapse_max_unread_bytes, self.settings.memory_max_object_bytes
        )
        fill.start_seq = self.purges.applied_seq
        fill.started_at = time.time()
        return fill

    def _spawn(self, coroutine: Awaitable[None]) -> None:
        task = asyncio.ensure_future(coroutine)
        self.background.add(task)
        task.add_done_callback(self.background.discard)

    def _hit_for_miss_reason(self, key: str) -> str | None:
        """Why ``key`` was recently found uncacheable (so requests skip the queue), or None."""
        remembered = self.hit_for_miss.get(key)
        if remembered is None:
            return None
        until, reason = remembered
        if until < time.monotonic():
            del self.hit_for_miss[key]
            return None
        return reason

    # -- the fill: one origin request, shared --------------------------------------------------
    async def _run_fill(
        self,
        fill: Fill,
        origin_request: OriginRequest,
        received: HeaderList,
        key: str,
        validating: StoredMeta | None,
        owner: web.BaseRequest | None,
    ) -> None:
        upstream: ClientResponse | None = None
        handed_over = False
        locked = False
        try:
            if validating is None and self.key_locks is not None:
                locked = True
                if await self.key_locks.acquire(key, self.settings.cross_worker_wait):
                    # Another worker was filling this key: it is probably stored now.
                    lookup = await self.store.lookup(key, received)
                    if lookup.found is not None:
                        close_handle(lookup.found)
                    found = self._apply_purge_verdict(lookup.found)
                    if found is not None:
                        reuse = policy.serve_decision("GET", received, entry_of(found.meta), time.time(), self.policy)
                        if reuse.action is policy.Action.FRESH_HIT:
                            fill.set_head(FillHead(found.meta.status, found.meta.reason, (), True, "stored-elsewhere"))
                            fill.finish()
                            return
            request_time = time.time()
            upstream = await send_to_origin(
                self.session, origin_request, on_interim=self._interim_relay(owner) if owner is not None else None
            )
            response_time = time.time()
            self.counters.observe_origin(response_time - request_time)
            fill.origin_ms = (response_time - request_time) * 1000
            headers = forwarding.strip_hop_by_hop(decode_raw_headers(upstream.raw_headers))
            status = upstream.status

            if validating is not None and status == 304:
                if not validation.select_for_304([validating.headers], headers, [validating.response_time]):
                    # RFC 9111 §4.3.4: a 304 whose validators match nothing stored must not update it;
                    # ask again without conditions for a complete response.
                    upstream.release()
                    upstream = None
                    unconditional = OriginRequest(
                        method="GET",
                        url=origin_request.url,
                        headers=[
                            (name, value)
                            for name, value in origin_request.headers
                            if name.lower() not in validation.CONDITIONAL_REQUEST_FIELDS
                        ],
                    )
                    request_time = time.time()
                    upstream = await send_to_origin(self.session, unconditional)
                    response_time = time.time()
                    headers = forwarding.strip_hop_by_hop(decode_raw_headers(upstream.raw_headers))
                    status = upstream.status
                else:
                    head = self._freshen_from_304(validating, received, headers, request_time, response_time)
                    if head.shared:
                        meta = head.extras["meta"]
                        assert isinstance(meta, StoredMeta)
                        await self.store.update_meta(meta)
                    fill.set_head(head)  # only now: whoever sees the answer also finds the refreshed entry
                    fill.finish()
                    return
            if (
                validating is not None
                and policy.is_error_status(status)
                and policy.can_serve_stale_on_error(entry_of(validating), received, time.time(), self.policy)
            ):
                fill.set_head(FillHead(status, upstream.reason or "", tuple(headers), True, "stale-on-error"))
                fill.finish()
                return

            decision = policy.storable("GET", status, received, headers, self.policy)
            reason = decision.reason
            store = decision.store
            declared = upstream.content_length
            vary_names = vary.vary_fields(headers)
            if store and vary_names is None:
                store, reason = False, "vary-star"
            if store and declared is not None and declared > self.settings.max_object_bytes:
                store, reason = False, "too-large"
            if not store:
                if reason in (
                    "private",
                    "no-store",
                    "set-cookie",
                    "vary-star",
                    "too-large",
                    "no-freshness-info",
                    "must-understand-unknown-status",
                    "status",
                ):
                    if len(self.hit_for_miss) > 100_000:
                        self.hit_for_miss.clear()
                    self.hit_for_miss[key] = (time.monotonic() + self.settings.hit_for_miss_ttl, reason)
                handed_over = True
                fill.set_head(
                    FillHead(status, upstream.reason or "", tuple(headers), False, "response",
                             {"upstream": upstream, "reason": reason})
                )  # fmt: skip
                return

            stored_headers = without_fields(headers, (*decision.strip_fields, *FRAMING_FIELDS))
            fill.set_head(FillHead(status, upstream.reason or "", tuple(headers), True, "response"))
            fields = vary_names or ()
            secondary = vary.secondary_key(fields, received)
            variant = vary.variant_id(secondary) if fields else ""
            await self._fill_body(
                fill, upstream, key, variant, StoredMeta(
                    key=key, variant=variant, status=status, reason=upstream.reason or "",
                    headers=tuple(stored_headers), request_time=request_time, response_time=response_time,
                    size=0, checksum="", vary=tuple(fields), secondary=secondary,
                    tags=surrogate_keys(headers), stored_at=fill.started_at,
                ),
            )  # fmt: skip
        except EdgeError as exc:
            fill.fail(exc)
        except Exception as exc:  # never leave readers hanging on an unexpected failure
            log.exception("fill for %s failed", key)
            fill.fail(exc)
        finally:
            self.coalescer.finish(fill)
            if locked and self.key_locks is not None:
                self.key_locks.release(key)
            if upstream is not None and not handed_over:
                upstream.release() if upstream.content.at_eof() else upstream.close()

    def _freshen_from_304(
        self,
        validating: StoredMeta,
        received: HeaderList,
        headers: list[tuple[str, str]],
        request_time: float,
        response_time: float,
    ) -> FillHead:
        """RFC 9111 §4.3.4 and §3.2: the stored response with the 304's headers, and whether it may be stored.

        The merged response always answers the request that caused the validation; it replaces the
        stored one only when storing is allowed (the 304's own no-store/private, a request no-store,
        a Set-Cookie this cache does not store), and it is shared with collapsed requests only then.
        """
        # The stored Age described the old response; the 304's own Age (if any) replaces it.
        merged = validation.update_headers_from_304(without_fields(validating.headers, ("age",)), headers)
        decision = policy.storable("GET", validating.status, received, merged, self.policy)
        store = decision.store and policy.request_allows_store(received)
        updated = without_fields(merged, (*decision.strip_fields, *FRAMING_FIELDS))
        meta = replace(validating.with_headers(updated, request_time, response_time), stored_at=request_time)
        return FillHead(304, "Not Modified", tuple(headers), store, "not-modified", {"meta": meta})

    async def _fill_body(self, fill: Fill, upstream: ClientResponse, key: str, variant: str, meta: StoredMeta) -> None:
        """Stream the body into the fill (for readers) and into the tiers (for later hits).

        The latest chunk is held back from readers until the object is published, so a client
        that has the complete body can count on the next request being a hit, not a second fill.
        A body that outgrows ``max_object_bytes`` or a disk that fails stops the storing, never
        the relaying.
        """
        writer = self.store.disk.writer(key, variant) if self.store.disk is not None else None
        memory_copy: bytearray | None = bytearray() if self.store.memory is not None else None
        checksum = BodyChecksum()
        held: bytes | None = None
        storing = True
        try:
            async for chunk in iter_body(upstream):
                if held is not None:
                    fill.append(held)
                    await fill.wait_for_room(self.context.settings.upstream.read_timeout)
                held = chunk
                checksum.update(chunk)
                self.counters.bytes_from_origin += len(chunk)
                if not storing:
                    continue
                if checksum.size > self.settings.max_object_bytes:
                    storing, memory_copy = False, None
                    await self._abort(writer)
                    writer = None
                    continue
                if memory_copy is not None:
                    if len(memory_copy) + len(chunk) <= self.store.memory_max_object_bytes:
                        memory_copy.extend(chunk)
                    else:
                        memory_copy = None
                if writer is not None:
                    try:
                        await writer.write(chunk)
                    except OSError as exc:
                        log.warning("disk write for %s failed (%s); relaying without storing", key, exc)
                        await self._abort(writer)
                        writer = None
        except OriginBodyBroken as exc:
            if held is not None:
                fill.append(held)
            await self._abort(writer)
            fill.fail(exc)
            return
        await self.sync_purges()
        if storing and self.purges.purged_since(fill.start_seq, fill.started_at, key, meta.tags):
            storing = False  # a purge arrived while this fill ran: its content must not be stored
            await self._abort(writer)
        if storing:
            final = StoredMeta(**{**_fields(meta), "size": checksum.size, "checksum": checksum.hexdigest()})
            if writer is not None and not await writer.commit(final):
                log.warning("disk tier refused %s", key)
            if memory_copy is not None and self.store.memory is not None:
                await self.store.memory.put(final, bytes(memory_copy))
            await self.sync_purges()
            if self.purges.purged_since(fill.start_seq, fill.started_at, key, meta.tags):
                await self.store.delete(key, variant)  # the purge landed between check and publish
            await self._enforce_variant_cap(key)
        if held is not None:
            fill.append(held)
        fill.finish()

    @staticmethod
    async def _abort(writer: StoreWriter | None) -> None:
        if writer is not None:
            try:
                await writer.abort()
            except OSError as exc:
                log.warning("aborting a disk write failed: %s", exc)

    async def _enforce_variant_cap(self, key: str) -> None:
        metas = await self.store.all_variants(key)
        if len(metas) <= self.settings.max_variants:
            return
        candidates = [
            vary.StoredVariant(meta.variant, meta.vary, meta.secondary, None, meta.response_time) for meta in metas
        ]
        for variant in vary.variants_to_evict(candidates, self.settings.max_variants):
            await self.store.delete(key, variant)

    # -- serving a fill ------------------------------------------------------------------------
    async def _serve_fill(
        self,
        request: web.Request,
        received: HeaderList,
        target: str,
        key: str,
        fill: Fill,
        fwd: FwdReason,
        collapsed: bool,
        stale: CachedObject | None,
    ) -> web.StreamResponse:
        reader = fill.open_reader()
        reader_open = True
        try:
            try:
                head = await fill.wait_head()
                if not collapsed:
                    timing_of(request).origin_ms = fill.origin_ms
            except FillAborted:
                failure = fill.failure
                if stale is not None and policy.can_serve_stale_on_error(
                    entry_of(stale.meta), received, time.time(), self.policy
                ):
                    return await self._serve_stale_on_error(request, received, stale, fwd, None)
                if stale is not None and policy.must_revalidate_or_504(entry_of(stale.meta), self.policy):
                    response = plain_error(
                        504, "origin unreachable and the stored response must be revalidated", self.context.node_name
                    )
                    self._status(response, CacheStatus(self.context.node_name, fwd=fwd, detail="must-revalidate"))
                    return response
                if isinstance(failure, EdgeError):
                    raise failure from None
                raise

            if head.kind == "not-modified" and (head.shared or not collapsed):
                meta = head.extras["meta"]
                assert isinstance(meta, StoredMeta)
                assert stale is not None
                refreshed = CachedObject(
                    meta, body=stale.body, path=stale.path, offset=stale.offset, tier=stale.tier, extras=stale.extras
                )
                status = CacheStatus(
                    self.context.node_name, fwd=fwd, fwd_status=304, collapsed=collapsed or None, ttl=self._ttl(meta)
                )
                self.counters.hits += 1
                age = policy.current_age(meta.headers, meta.request_time, meta.response_time, time.time())
                return await self._serve_stored(request, received, refreshed, age, status)
            if head.kind == "stored-elsewhere":
                fill.close_reader(reader)
                reader_open = False
                lookup = await self.store.lookup(key, received)
                found = self._apply_purge_verdict(lookup.found)
                if found is None:
                    if lookup.found is not None:
                        close_handle(lookup.found)
                    return await self._miss_without_store(request, target, fwd)
                self.counters.hits += 1
                age = policy.current_age(
                    found.meta.headers, found.meta.request_time, found.meta.response_time, time.time()
                )
                status = CacheStatus(self.context.node_name, hit=True, ttl=self._ttl(found.meta), collapsed=True)
                return await self._serve_stored(request, received, found, age, status)
            if head.kind == "stale-on-error":
                assert stale is not None
                return await self._serve_stale_on_error(request, received, stale, fwd, head.status)
            if not head.shared:
                upstream = head.extras.get("upstream")
                if isinstance(upstream, ClientResponse) and not collapsed:
                    fill.close_reader(reader)
                    reader_open = False
                    reason = str(head.extras.get("reason", ""))
                    status = CacheStatus(
                        self.context.node_name, fwd=fwd, fwd_status=head.status, stored=False, detail=reason or None
                    )
                    return await self._relay(request, upstream, status)
                # Not shareable: this waiter asks the origin itself.
                fill.close_reader(reader)
                reader_open = False
                upstream = await self._send(request, self._origin_request(request, target), interim=False)
                status = CacheStatus(
                    self.context.node_name,
                    fwd=fwd,
                    fwd_status=upstream.status,
                    stored=False,
                    detail=str(head.extras.get("reason", "")) or None,
                )
                return await self._relay(request, upstream, status)

            # A shared, storable response.
            wants_range = ranges.range_value(received, request.method) is not None
            conditional = (
                validation.evaluate_client_conditionals(request.method, received, head.status, head.headers)
                if not wants_range
                else None
            )
            status = CacheStatus(
                self.context.node_name, fwd=fwd, fwd_status=head.status, stored=True, collapsed=collapsed or None
            )
            if wants_range or conditional is not None:
                # Answer from the complete stored object once the fill is done.
                fill.close_reader(reader)
                reader_open = False
                await fill.wait_done()
                lookup = await self.store.lookup(key, received)
                if lookup.found is not None:
                    age = policy.current_age(
                        lookup.found.meta.headers,
                        lookup.found.meta.request_time,
                        lookup.found.meta.response_time,
                        time.time(),
                    )
                    return await self._serve_stored(request, received, lookup.found, age, status)
                if fill.failure is not None:
                    raise OriginBodyBroken(str(fill.failure))
                return await self._miss_without_store(request, target, fwd)
            relayed = StoredObjectResponse(  # head goes out with the first bytes, i.e. once they are stored
                status=head.status,
                reason=head.reason or None,
                headers=self._client_headers(head.headers, keep_age=True),
            )
            declared = get_first(head.headers, "content-length")
            if declared is not None and declared.strip().isdigit():
                relayed.content_length = int(declared)
            self._status(relayed, status)
            await relayed.prepare(request)
            if request.method != "HEAD":
                reader_open = False  # body() closes it
                try:
                    async for chunk in fill.body(reader):
                        await relayed.write(chunk)
                except FillAborted as exc:
                    self._break(request)
                    raise OriginBodyBroken(str(exc)) from exc
            await relayed.write_eof()
            return relayed
        finally:
            if reader_open:
                fill.close_reader(reader)

    async def _miss_without_store(self, request: web.Request, target: str, fwd: FwdReason) -> web.StreamResponse:
        upstream = await self._send(request, self._origin_request(request, target), interim=False)
        status = CacheStatus(self.context.node_name, fwd=fwd, fwd_status=upstream.status, stored=False)
        return await self._relay(request, upstream, status)

    def _ttl(self, meta: StoredMeta) -> int:
        decision = policy.serve_decision("GET", (), entry_of(meta), time.time(), self.policy)
        return int(decision.ttl)

    async def _serve_stale_on_error(
        self, request: web.Request, received: HeaderList, stale: CachedObject, fwd: FwdReason, origin_status: int | None
    ) -> web.StreamResponse:
        """RFC 5861 §4 / RFC 9111 §4.2.4: the origin failed and the stored response may stand in."""
        age = policy.current_age(stale.meta.headers, stale.meta.request_time, stale.meta.response_time, time.time())
        status = CacheStatus(
            self.context.node_name,
            fwd="stale",
            fwd_status=origin_status,
            ttl=self._ttl(stale.meta),
            detail="stale-if-error",
        )
        return await self._serve_stored(request, received, stale, age, status)

    # -- serving a stored object ---------------------------------------------------------------
    async def _serve_stored(
        self, request: web.Request, received: HeaderList, found: CachedObject, age: float, status: CacheStatus
    ) -> web.StreamResponse:
        try:
            return await self._serve_stored_object(request, received, found, age, status)
        finally:
            close_handle(found)

    async def _serve_stored_object(
        self, request: web.Request, received: HeaderList, found: CachedObject, age: float, status: CacheStatus
    ) -> web.StreamResponse:
        meta = found.meta
        headers = self._client_headers(meta.headers)
        headers["Age"] = str(policy.age_header_value(age))
        conditional = validation.evaluate_client_conditionals(
            request.method, received, meta.status, meta.headers, response_time=meta.response_time
        )
        response: web.StreamResponse
        if conditional == 304:
            not_modified = self._client_headers(validation.not_modified_headers(meta.headers))
            not_modified["Age"] = headers["Age"]
            response = StoredObjectResponse(status=304, headers=not_modified)
            self._status(response, status)
            await response.prepare(request)
            await response.write_eof()
            return response
        if conditional == 412:
            response = plain_error(412, "precondition failed", self.context.node_name)
            self._status(response, status)
            return response

        body_range: tuple[int, int] | None = None
        range_header = ranges.range_value(received, request.method) if meta.status == 200 else None
        parts: list[ranges.ByteRange] = []
        if range_header is not None and ranges.if_range_allows(get_first(received, "if-range"), meta.headers):
            result = ranges.parse_range(range_header, meta.size)
            if result.status == 416:
                response = plain_error(416, "range not satisfiable", self.context.node_name)
                response.headers["Content-Range"] = ranges.unsatisfied_content_range(meta.size)
                self._status(response, status)
                return response
            if result.status == 206:
                parts = list(result.ranges)
        if len(parts) == 1:
            body_range = (parts[0].first, parts[0].last)
            headers["Content-Range"] = ranges.content_range(parts[0].first, parts[0].last, meta.size)
            response = StoredObjectResponse(status=206, headers=headers)
            response.content_length = parts[0].last - parts[0].first + 1
        elif len(parts) > 1:
            return await self._serve_multipart(request, found, headers, parts, status)
        else:
            response = StoredObjectResponse(status=meta.status, reason=meta.reason or None, headers=headers)
            response.content_length = meta.size
        self._status(response, status)
        await response.prepare(request)
        if request.method != "HEAD":
            first, last = body_range if body_range else (0, meta.size - 1)
            await self._write_body(request, response, found, first, last + 1)
        await response.write_eof()
        return response

    async def _write_body(
        self, request: web.Request, response: web.StreamResponse, found: CachedObject, start: int, end: int
    ) -> None:
        if end <= start:
            return
        self.counters.bytes_from_cache += end - start
        if found.body is not None:
            await response.write(found.body[start:end])
            return
        handle = found.extras.get("handle")
        if not isinstance(handle, io.BufferedReader):
            assert found.path is not None
            handle = open(found.path, "rb")  # noqa: SIM115, ASYNC230 - quick syscall; closed by _serve_stored
            found.extras["handle"] = handle
        transport = request.transport
        if transport is not None and request.writer is not None:
            request.writer.send_headers()  # a cache response defers its header block; sendfile bypasses it
            await request.writer.drain()
            try:
                await asyncio.get_running_loop().sendfile(transport, handle, found.offset + start, end - start)
                return
            except (NotImplementedError, RuntimeError):
                pass
        handle.seek(found.offset + start)
        remaining = end - start
        while remaining > 0:
            chunk = await asyncio.to_thread(handle.read, min(remaining, 256 * 1024))
            if not chunk:
                self._break(request)
                raise OriginBodyBroken("stored body ended early")
            remaining -= len(chunk)
            await response.write(chunk)

    async def _serve_multipart(
        self,
        request: web.Request,
        found: CachedObject,
        headers: CIMultiDict[str],
        parts: list[ranges.ByteRange],
        status: CacheStatus,
    ) -> web.StreamResponse:
        meta = found.meta
        content_type = headers.get("Content-Type")
        boundary = ranges.multipart_boundary(f"{meta.key}{meta.checksum}")
        headers.popall("Content-Type", None)
        headers["Content-Type"] = ranges.multipart_content_type(boundary)
        response = StoredObjectResponse(status=206, headers=headers)
        response.content_length = ranges.multipart_length(parts, content_type, meta.size, boundary)
        self._status(response, status)
        await response.prepare(request)
        if request.method != "HEAD":
            for part_head, part in ranges.multipart_parts(parts, content_type, meta.size, boundary):
                await response.write(part_head)
                if part is not None:
                    await self._write_body(request, response, found, part.first, part.last + 1)
        await response.write_eof()
        return response

    # -- purges ---------------------------------------------------------------------------------
    def _apply_purge_verdict(self, found: CachedObject | None) -> CachedObject | None:
        """Hide hard-purged objects; mark soft-purged ones stale (they may still serve under SWR/SIE)."""
        if found is None:
            return None
        if found.meta.stored_at < self.opened_at and not self.caught_up.is_set():
            return None  # stored before this worker started, and the purges it missed are not replayed yet
        verdict = self.purges.verdict(found.meta.key, found.meta.tags, found.meta.stored_at)
        if verdict == "hard":
            return None
        if verdict == "soft" and not found.meta.invalidated:
            return replace(found, meta=replace(found.meta, invalidated=True))
        return found

    async def sync_purges(self) -> None:
        """Apply purges other workers published to this worker's memory tier, before serving from it."""
        if not self.purges.behind():
            return
        for record in await self.purges.catch_up():
            await self._apply_to_memory(record)

    async def _apply_to_memory(self, record: PurgeRecord) -> None:
        memory = self.store.memory
        if memory is None:
            return
        if record.kind == "urls":
            for key in record.values:
                await memory.delete(key)
        elif record.kind == "prefix":
            for prefix in record.values:
                await memory.delete_prefix(prefix)
        elif record.kind == "tags":
            await memory.delete_tags(record.values)
        else:
            await memory.clear()

    async def purge(
        self, kind: PurgeKind, values: list[str], soft: bool, purge_id: str, cluster_seq: int | None = None
    ) -> tuple[PurgeRecord, int]:
        """Purge on this edge: logged, published to every worker, applied to the shared disk tier.

        When this returns, no worker serves the purged content: every worker reads the published
        sequence before using its memory tier, and every lookup checks recent purges against the
        object's ``stored_at`` until the physical deletion below has surely finished.
        """
        record = await self.purge_log.append(kind, values, soft, purge_id, cluster_seq)
        self.purge_log.publish(record)
        await self.sync_purges()
        affected = await self._apply_to_disk(record)
        return record, affected

    async def _apply_to_disk(self, record: PurgeRecord) -> int:
        disk = self.store.disk
        if disk is None:
            return 0
        if record.kind == "all":
            objects = disk.stats().get("objects", 0)
            if not record.soft:
                self._spawn(self._reclaim_before(record.at))
            return objects
        if not record.soft:
            if record.kind == "urls":
                return sum([await disk.delete(key) for key in record.values])
            if record.kind == "prefix":
                return sum([await disk.delete_prefix(prefix) for prefix in record.values])
            return await disk.delete_tags(record.values)
        affected = 0
        for key, variant in await disk.objects_matching(record.kind, record.values):
            for meta in await disk.variants(key):
                if meta.variant == variant and await disk.update_meta(replace(meta, invalidated=True)):
                    affected += 1
        return affected

    async def _reclaim_before(self, purge_time: float) -> None:
        """Background: free the disk space of everything a purge-all made unreachable."""
        disk = self.store.disk
        if disk is not None:
            removed = await disk.delete_stored_before(purge_time)
            log.info("purge-all: reclaimed %d objects from disk", removed)

    async def close(self) -> None:
        for task in list(self.background):
            task.cancel()
        if self.background:
            await asyncio.gather(*self.background, return_exceptions=True)
        if self.key_locks is not None:
            self.key_locks.close()


class _TooLarge(Exception):
    """The body grew past ``max_object_bytes`` while streaming: stop storing, keep relaying."""


def _fields(meta: StoredMeta) -> dict[str, Any]:
    return {name: getattr(meta, name) for name in StoredMeta.__slots__}
