"""The hit fast path: a fresh memory hit answered synchronously, from the parser callback, in one write.

Everything a hit sends except a short dynamic tail is computed once, on the first hit of an object
in the memory tier (:meth:`HitPath.prepare`): the status line and header block, the ``Cache-Status`` prefix,
the fresh-hit window (``edge.http.policy.hit_window``).  A hit is then: the memoised key → "did
another worker publish a purge?" (one read of shared memory) → the memory tier → "invalidated since
stored?" (one read of shared memory) → one comparison with the clock → one ``writelines``.  Anything
else — conditionals, ranges, request directives, ``Vary``, stale objects, a purge to apply first —
returns None and takes the general path, which is exactly as correct as before.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Sequence
from dataclasses import dataclass

from edge.accesslog import AccessLog
from edge.cache import respond
from edge.cache.context import CacheContext
from edge.cache.fill import entry_of
from edge.http import coding, policy, vary
from edge.http.cachestatus import CacheStatus
from edge.server.exchange import RequestHead
from edge.server.wire import header_block, http_date, status_line
from edge.store.base import StoredMeta

# Request fields that make a request more than "give me the stored response": they take the
# general path (client conditionals and ranges, request cache directives, loop detection).
SLOW_REQUEST_FIELDS = frozenset(
    {
        b"cache-control", b"pragma", b"if-match", b"if-none-match", b"if-modified-since",
        b"if-unmodified-since", b"if-range", b"range", b"via",
    }
)  # fmt: skip
_NO_FAST_STATUSES = frozenset({204, 304})
_BY_CODING = ("accept-encoding",)
_KEEP_ALIVE_10 = b"Connection: keep-alive\r\n"
_UNSET = object()
_CLOSE = b"Connection: close\r\n"


@dataclass(frozen=True, slots=True)
class HotEntry:
    head: bytes  # status line, stored fields (Via included), Content-Length
    body: bytes
    size: int
    window: policy.HitWindow
    stored_at: float
    status_prefix: bytes  # b"Cache-Status: <upstream members, >node;hit;ttl="
    has_date: bool
    status_class: str


class HitPath:
    def __init__(self, ctx: CacheContext, access_log: AccessLog | None) -> None:
        self.ctx = ctx
        self.access_log = access_log
        self.memory = ctx.store.memory
        self.enabled = ctx.store.memory is not None
        compression = ctx.settings.compression
        self.codings = tuple(compression.algorithms) if compression.enabled else ()
        # With compression, an object that varies only by Accept-Encoding is found by the variant id
        # of the client's coding (as the general path would normalise it): one more dict lookup.
        self.coding_variants = {
            name: vary.variant_id(vary.secondary_key(("accept-encoding",), [("Accept-Encoding", name)]))
            for name in (*self.codings, coding.IDENTITY)
        }
        self._variant_for = functools.lru_cache(maxsize=1024)(self._variant_of)

    def _variant_of(self, accept_encoding: bytes | None) -> str:
        values = [] if accept_encoding is None else [accept_encoding.decode("latin-1")]
        return self.coding_variants[coding.preferred(values, self.codings)]

    def prepare(self, meta: StoredMeta, body: bytes) -> HotEntry | None:
        """What a hit on this object sends, computed once (None: its hits take the general path)."""
        varies = meta.vary and (meta.vary != _BY_CODING or not self.codings)
        if varies or meta.status in _NO_FAST_STATUSES or meta.status < 200 or meta.invalidated:
            return None
        window = policy.hit_window(entry_of(meta), self.ctx.policy)
        if window is None:
            return None
        fields = respond.client_headers(self.ctx, meta.headers)
        existing = tuple(value for name, value in fields if name.lower() == "cache-status")
        fields = [(n, v) for n, v in fields if n.lower() not in ("cache-status", "x-cache", "server-timing")]
        value, legacy = respond.status_values(existing, CacheStatus(self.ctx.node_name, hit=True, ttl=0))
        if not value.endswith(";ttl=0") or legacy != "HIT":
            return None
        head = status_line(meta.status, meta.reason or None) + header_block(fields)
        head += b"Content-Length: %d\r\n" % len(body)
        return HotEntry(
            head=head,
            body=body,
            size=len(body),
            window=window,
            stored_at=meta.stored_at,
            status_prefix=("Cache-Status: " + value[:-1]).encode("latin-1"),
            has_date=any(name.lower() == "date" for name, _ in fields),
            status_class=f"{meta.status // 100}xx",
        )

    def fast(self, head: RequestHead) -> Sequence[bytes] | None:
        """The complete answer to a plain GET/HEAD that is a fresh memory hit, or None."""
        method = head.method
        target = head.raw_target
        if not self.enabled or (method != "GET" and method != "HEAD") or target[:1] != b"/":
            return None
        ctx = self.ctx
        purger = ctx.purger
        if purger.behind():
            return None  # another worker published a purge: apply it first (general path)
        site = ctx.sites.for_host(head.host)
        if site is None or site.preserve_host:
            return None  # no site (421) or a key with the client's Host: the general path
        key = site.keys.for_target(target.decode("latin-1"))
        assert self.memory is not None
        obj = self.memory.get_now(key, count=not self.codings)
        if obj is None and self.codings:
            accept_encoding = None
            for name, value in head.raw_headers:
                if len(name) == 15 and name.lower() == b"accept-encoding":
                    if accept_encoding is not None:
                        return None  # several lines: the general path combines them
                    accept_encoding = value
            obj = self.memory.get_now(key, self._variant_for(accept_encoding))
        if obj is None:
            return None
        extras = obj.extras  # a memory object is never mutated, but its extras may cache derived data
        hot = extras.get("hot", _UNSET)
        if hot is _UNSET:
            assert obj.body is not None
            hot = extras["hot"] = self.prepare(obj.meta, obj.body)  # on the first hit: misses never pay
        if not isinstance(hot, HotEntry):
            return None
        if hot.stored_at < purger.opened_at and not purger.caught_up.is_set():
            return None
        if purger.log.invalidated_at(key) >= hot.stored_at:
            return None
        now = time.time()
        window = hot.window
        if not window.response_time <= now < window.fresh_until:
            return None
        age = int(now + window.age_offset)
        ttl = int(window.lifetime - (now + window.age_offset))
        seconds = time.perf_counter() - head.started
        self.ctx.counters.observe_request(seconds)
        elapsed = seconds * 1000
        tail = b"Age: %d\r\n%s%d\r\nX-Cache: HIT\r\nServer-Timing: lookup;dur=%.3f, total;dur=%.3f\r\n" % (
            age, hot.status_prefix, ttl, elapsed, elapsed
        )
        if not hot.has_date:
            tail += http_date.line(now)
        if not head.keep_alive:
            tail += _CLOSE
        elif head.version < (1, 1):
            tail += _KEEP_ALIVE_10
        counters = ctx.counters
        counters.requests += 1
        counters.hits += 1
        by_status = counters.by_status
        by_status["HIT"] = by_status.get("HIT", 0) + 1
        by_class = counters.by_code_class
        by_class[hot.status_class] = by_class.get(hot.status_class, 0) + 1
        sent = 0 if method == "HEAD" else hot.size
        counters.bytes_from_cache += sent
        if self.access_log is not None:
            self.access_log.record(
                now, head.peer, method, target, head.version, int(hot.head[9:12]), sent, "HIT",
                hot.status_prefix[14:].decode("latin-1") + str(ttl), None, elapsed, head.referer, head.user_agent,
                site.name,
            )  # fmt: skip
        if method == "HEAD" or not hot.size:
            return (hot.head + tail + b"\r\n",)
        return (hot.head + tail + b"\r\n", hot.body)
