"""Everything one worker's cache driver works with, in one place (Varnish's ``struct worker``)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable
from dataclasses import dataclass, field

from edge.cache.coalesce import Coalescer, KeyLocks
from edge.cluster import Cluster
from edge.config import CacheSettings, EdgeSettings
from edge.http import policy
from edge.metrics import CacheCounters
from edge.protection import Protection
from edge.purge import Purger
from edge.sites import SiteTable
from edge.store.base import CachedObject
from edge.store.tiered import TieredStore


def policy_config(settings: CacheSettings) -> policy.PolicyConfig:
    return policy.PolicyConfig(
        heuristic_fraction=settings.heuristic_fraction,
        heuristic_max=settings.heuristic_max,
        store_set_cookie=settings.store_set_cookie,
        cdn_cache_control_names=tuple(settings.cdn_cache_control_names),
        honor_request_directives=settings.honor_request_directives,
        max_stale_on_error=settings.max_stale_on_error,
    )

HIT_FOR_MISS_ENTRIES = 100_000


@dataclass
class CacheContext:
    settings: EdgeSettings
    node_name: str
    sites: SiteTable
    store: TieredStore
    purger: Purger
    key_locks: KeyLocks | None = None
    cluster: Cluster | None = None  # the region as one cache (edge.cluster), with [cluster] set
    protection: Protection | None = None  # rate limits, access rules, signed URLs (edge.protection)
    counters: CacheCounters = field(default_factory=CacheCounters)
    coalescer: Coalescer = field(default_factory=Coalescer)
    hit_for_miss: dict[int, tuple[float, str]] = field(default_factory=dict)  # hash(key): (until, reason)
    background: set[asyncio.Task[None]] = field(default_factory=set)
    # Variants being derived in another coding (edge.cache.transcode), shared by concurrent requests.
    derivations: dict[tuple[str, str], asyncio.Future[CachedObject | None]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.cache_settings = self.settings.cache
        self.policy = policy_config(self.settings.cache)

    def spawn(self, coroutine: Awaitable[None]) -> asyncio.Task[None]:
        task: asyncio.Task[None] = asyncio.ensure_future(coroutine)
        self.background.add(task)
        task.add_done_callback(self.background.discard)
        return task

    def remember_uncacheable(self, key: str, reason: str) -> None:
        """Hit-for-miss: requests for ``key`` skip the queue for ``hit_for_miss_ttl`` seconds.

        Remembered by the key's hash (this process's randomised ``hash``), so a client asking for
        ever new long URLs of an uncacheable kind grows the table by a few dozen bytes each, not by
        their length; and at most ``HIT_FOR_MISS_ENTRIES`` of them."""
        if len(self.hit_for_miss) >= HIT_FOR_MISS_ENTRIES:
            self.hit_for_miss.clear()
        self.hit_for_miss[hash(key)] = (time.monotonic() + self.cache_settings.hit_for_miss_ttl, reason)

    def uncacheable_reason(self, key: str) -> str | None:
        hashed = hash(key)
        remembered = self.hit_for_miss.get(hashed)
        if remembered is None:
            return None
        until, reason = remembered
        if until < time.monotonic():
            del self.hit_for_miss[hashed]
            return None
        return reason
