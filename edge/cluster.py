"""A region as one cache: every edge of a region knows which of them own a key, and a miss travels to
the owner rather than to the origin (Varnish's shard director, Traffic Server's parent selection).

    owners(target) = the top ``replication`` of the region's healthy enabled edges (this one counts
                     as healthy) by the router's weighted rendezvous hashing of the same shard key
                     (the normalised request target), so a client the router sent lands on the
                     first owner

    a miss here, as                    goes to                               stores
    ─────────────────────────────────  ────────────────────────────────────  ─────────────────────
    the first owner, or a peer request the parent tier, else the origin      as usual
    a secondary owner                  the first owner (a peer request)      as usual
    a non-owner                        the first owner (a peer request)      memory copy only with
                                                                             ``peer_copy``, else none

A peer request carries the shared ``token`` (``Edgecache-Peer``) and ``Via``; it is answered as an
owner answers — from the cache, or filled from the parent or origin — and never sent on to another
peer.  A client's ``Edgecache-Peer`` that does not match the token is ignored and never forwarded.
When the owner cannot be reached before any byte of an answer, this edge asks the parent or origin
itself and takes the peer out of the owners until its health check passes again: the client never
sees the failure.  Parents are chosen by rendezvous hashing too, and a parent that fails is skipped
(falling back to the origin) for a while.
"""

from __future__ import annotations

import hmac
import logging
import time
from dataclasses import dataclass, field, replace
from typing import Literal

from yarl import URL

from edge.balance import rendezvous_score
from edge.config import ClusterSettings, EdgeSettings, UpstreamSettings
from edge.errors import OriginTimeout, OriginUnreachable
from edge.health import Health, State
from edge.http import forwarding
from edge.http.headers import HeaderList
from edge.inventory import EdgeEntry, Inventory, load_inventory
from edge.overview import iso
from edge.router.health import HealthChecker
from edge.router.select import rendezvous_order, shard_key
from edge.upstream import InterimSink, OriginPool, OriginRequest, OriginResponse, OriginRoute

__all__ = [
    "PEER_HEADER", "PEER_PROTO_HEADER", "Cluster", "Keep", "ParentRoute", "PeerRoute", "build_cluster", "shard_key",
    "shard_of",
]  # fmt: skip

log = logging.getLogger("edge.cluster")

PEER_HEADER = "Edgecache-Peer"
PEER_HEADER_BYTES = b"edgecache-peer"
# The client's scheme, which the owner keys by (with preserve_host) and passes on as
# X-Forwarded-Proto; believed only together with the token.
PEER_PROTO_HEADER = "Edgecache-Peer-Proto"
PEER_PROTO_HEADER_BYTES = b"edgecache-peer-proto"
# Peers wait longer than the origin's read_timeout: an owner whose origin is slow answers (504 at
# worst) before the peer request times out, so a slow origin never makes a healthy peer suspect.
PEER_READ_MARGIN_S = 5.0
SUSPECT_S = 5.0  # a peer that failed a request stays out of the owners at least this long
Keep = Literal["all", "memory", "none"]  # what a fill through a peer stores here


def shard_of(key: str) -> str:
    """The shard key of a cache key: its normalised target (path and query), so every request the
    site's key options make one object (``drop_query_params``, ``sort_query``…) has one owner.  For
    targets those options leave alone this is the router's key (``shard_key``), byte for byte."""
    scheme_end = key.find("://")
    if scheme_end < 0:
        return key
    path_start = key.find("/", scheme_end + 3)
    return key[path_start:] if path_start >= 0 else "/"


@dataclass(slots=True)
class PeerCounters:
    requests: int = 0
    hits: int = 0  # answered from the peer's cache
    failures: int = 0  # unreachable, timed out or refused: this edge went to the origin itself


@dataclass(eq=False)
class Parent:
    url: str
    pool: OriginPool
    health: Health


@dataclass(eq=False)
class Cluster:
    settings: ClusterSettings
    inventory: Inventory
    me: EdgeEntry
    region: list[EdgeEntry]
    checker: HealthChecker | None
    upstream: UpstreamSettings
    parents: list[Parent] = field(default_factory=list)
    counters: dict[str, PeerCounters] = field(default_factory=dict)
    _pools: dict[str, OriginPool] = field(default_factory=dict)
    _suspect: dict[str, float] = field(default_factory=dict)

    # -- who owns a key --------------------------------------------------------------------------
    def healthy(self, entry: EdgeEntry, now: float) -> bool:
        if entry.name == self.me.name:
            return entry.enabled  # a disabled edge owns nothing, as the router and its peers see it
        if self._suspect.get(entry.name, 0.0) > now:
            return False
        return self.checker is None or self.checker.healthy_view().get(entry.name, False)

    def owners(self, target: str) -> list[EdgeEntry]:
        """The key's owners, first owner first: the router's ranking over the healthy edges."""
        now = time.time()
        ranked = [edge for edge, _ in rendezvous_order(target, self.region) if self.healthy(edge, now)]
        return ranked[: self.inventory.replication]

    def role(self, target: str) -> tuple[str, EdgeEntry | None]:
        """``("first", None)``, ``("secondary", first owner)`` or ``("none", first owner)``."""
        owners = self.owners(target)
        if not owners or owners[0].name == self.me.name:
            return "first", None
        if any(owner.name == self.me.name for owner in owners):
            return "secondary", owners[0]
        return "none", owners[0]

    def is_peer_request(self, token: bytes | None) -> bool:
        expected = self.settings.token
        if expected is None or token is None:
            return False
        return hmac.compare_digest(token, expected.encode("latin-1", "replace"))

    def relays(self, shard: str, peer_request: bool, request_headers: HeaderList = ()) -> bool:
        """Does a miss here go to the key's owner as it is, keeping nothing (a non-owner without
        ``peer_copy``)?  The owner then answers ranges, conditionals and HEAD itself.

        Not when the request's ``Via`` already names the owner: asking it would be a loop, so the
        relay would go to the origin unshared and unstored, and any client could switch caching
        off for a key that way.  Such a miss is an ordinary fill here (collapsed and kept)."""
        if peer_request or not self.settings.peer_fill or self.settings.peer_copy:
            return False
        role, owner = self.role(shard)
        if role != "none":
            return False
        return owner is None or owner.name.lower() not in forwarding.via_pseudonyms(request_headers)

    # -- where a miss goes -----------------------------------------------------------------------
    def route(
        self, target: str, fallback: OriginRoute, client_host: str, peer_request: bool, scheme: str = "http"
    ) -> OriginRoute:
        """The route of a miss for ``target``: the owner for a non-first-owner, else the parent
        tier or the origin.  A ``PeerRoute`` says whether this edge keeps what it fetched
        (``keep``: a secondary owner does; a non-owner only with ``peer_copy``, in memory)."""
        upstream = ParentRoute(self, target, fallback, client_host) if self.parents else fallback
        if peer_request or not self.settings.peer_fill:
            return upstream
        role, owner = self.role(target)
        if owner is None:
            return upstream
        return PeerRoute(self, target, owner, upstream, client_host, self.keep_for(role), scheme)

    def keep_for(self, role: str) -> Keep:
        return "all" if role != "none" else ("memory" if self.settings.peer_copy else "none")

    def pool_for(self, entry: EdgeEntry) -> OriginPool:
        pool = self._pools.get(entry.name)
        if pool is None:
            patient = self.upstream.model_copy(update={"read_timeout": self.upstream.read_timeout + PEER_READ_MARGIN_S})
            pool = self._pools[entry.name] = OriginPool(URL(entry.fill_url), patient)
        return pool

    def suspect(self, name: str, reason: str) -> None:
        if self._suspect.get(name, 0.0) <= time.time():
            log.warning("peer %s failed (%s): asking the origin myself until it checks healthy", name, reason)
        self._suspect[name] = time.time() + max(SUSPECT_S, self.settings.health_interval * self.settings.rise)

    def counters_for(self, name: str) -> PeerCounters:
        counters = self.counters.get(name)
        if counters is None:
            counters = self.counters[name] = PeerCounters()
        return counters

    # -- lifecycle -------------------------------------------------------------------------------
    async def start(self) -> None:
        if self.checker is not None:
            await self.checker.start()

    async def close(self) -> None:
        if self.checker is not None:
            await self.checker.stop()
        for pool in self._pools.values():
            await pool.close()
        for parent in self.parents:
            await parent.pool.close()

    def describe(self, target: str | None = None) -> dict[str, object]:
        """This edge's view of its region (admin ``GET /cluster``)."""
        now = time.time()
        health = self.checker.snapshot() if self.checker is not None else {}
        peers = []
        for entry in self.region:
            row: dict[str, object] = {"name": entry.name, "url": entry.fill_url, "self": entry.name == self.me.name,
                                      "healthy": self.healthy(entry, now)}  # fmt: skip
            state = health.get(entry.name)
            if state is not None:
                row.update(state=state.state, last_change=state.last_change, last_change_iso=iso(state.last_change))
                if not state.healthy:  # an old error is not news while the peer answers
                    row["last_error"] = state.last_error
            counters = self.counters.get(entry.name)
            if counters is not None:
                row.update(requests=counters.requests, hits=counters.hits, failures=counters.failures)
            peers.append(row)
        report: dict[str, object] = {
            "self": self.me.name, "region": self.me.region, "replication": self.inventory.replication,
            "peer_fill": self.settings.peer_fill, "peer_copy": self.settings.peer_copy, "peers": peers,
            "parents": [{"url": p.url, "state": p.health.state.value, "last_error": p.health.last_error}
                        for p in self.parents],
        }  # fmt: skip
        if target is not None:
            role, _ = self.role(target)
            report["url"] = {"shard_key": target, "owners": [owner.name for owner in self.owners(target)], "role": role}
        return report


class PeerRoute:
    """A miss sent to the key's owner; the next owner, then the origin (or parent), when it cannot
    answer.  Only an owner that cannot be reached is taken out of the owners: a 421 or 508 says
    something about this request (a client can provoke one with ``Via``), not about the peer."""

    def __init__(
        self,
        cluster: Cluster,
        target: str,
        owner: EdgeEntry,
        fallback: OriginRoute,
        client_host: str,
        keep: Keep,
        scheme: str = "http",
    ) -> None:
        self.cluster = cluster
        self.target = target
        self.owner = owner
        self.fallback = fallback
        self.client_host = client_host
        self.keep = keep
        self.scheme = scheme
        self.name = fallback.name

    async def send(self, request: OriginRequest, on_interim: InterimSink | None = None) -> OriginResponse:
        cluster = self.cluster
        token = cluster.settings.token or ""
        peer_request = replace(
            request, host=self.client_host or request.host,
            headers=[*request.headers, (PEER_HEADER, token), (PEER_PROTO_HEADER, self.scheme)],
        )  # fmt: skip
        passed = set(forwarding.via_pseudonyms(request.headers))  # hops this request already made
        tried: set[str] = set()
        owner: EdgeEntry | None = self.owner
        while owner is not None and len(tried) < 2:  # the owner, then whoever owns the key without it
            tried.add(owner.name)
            if owner.name.lower() in passed:
                pass  # asking it would come back here as a loop (508): skip it, for this request only
            else:
                counters = cluster.counters_for(owner.name)
                counters.requests += 1
                try:
                    response = await cluster.pool_for(owner).request(peer_request, on_interim)
                except (OriginUnreachable, OriginTimeout) as exc:
                    counters.failures += 1
                    cluster.suspect(owner.name, exc.reason)
                else:
                    if response.status not in (421, 508):  # 421: it does not serve this site; 508: a loop
                        self.owner = owner
                        return self._answered(response, counters)
                    response.release()
                    counters.failures += 1
            owner = next((o for o in cluster.owners(self.target) if o.name not in tried), None)
            if owner is not None and owner.name == cluster.me.name:
                owner = None  # this edge owns the key now: it asks the parent or origin itself
        return await self.fallback.send(request, on_interim)  # what it fetches itself, it keeps

    def _answered(self, response: OriginResponse, counters: PeerCounters) -> OriginResponse:
        if any(name.lower() == b"cache-status" and b";hit" in value for name, value in response.raw_headers):
            counters.hits += 1
        response.origin_label = f"peer {self.owner.name}"
        response.origin_name = self.owner.name
        response.via_peer = self.owner.name
        return response


class ParentRoute:
    """An owner's miss sent to the parent tier (rendezvous over the healthy parents); the origin
    while every parent is down."""

    def __init__(self, cluster: Cluster, target: str, fallback: OriginRoute, client_host: str) -> None:
        self.cluster = cluster
        self.target = target
        self.fallback = fallback
        self.client_host = client_host
        self.name = fallback.name

    async def send(self, request: OriginRequest, on_interim: InterimSink | None = None) -> OriginResponse:
        now = time.time()
        usable = [parent for parent in self.cluster.parents if parent.health.usable(now)]
        if not usable:
            return await self.fallback.send(request, on_interim)
        parent = max(usable, key=lambda item: rendezvous_score(self.target, item.url, 1))
        trial = parent.health.begin(now)
        try:
            response = await parent.pool.request(replace(request, host=self.client_host or request.host), on_interim)
        except (OriginUnreachable, OriginTimeout) as exc:
            if parent.health.failure(time.time(), exc.reason):
                log.warning("parent %s is down (%s): misses go to the origin", parent.url, exc.reason)
            return await self.fallback.send(request, on_interim)
        if response.status == 508:  # a loop through this request's path, not a fault of the parent
            response.release()
            return await self.fallback.send(request, on_interim)
        if (parent.health.state is State.UP or trial) and parent.health.success(time.time()):
            log.warning("parent %s is up again", parent.url)
        response.origin_label = f"parent {parent.url}"
        response.origin_name = "parent"
        return response


def build_cluster(settings: EdgeSettings) -> Cluster | None:
    """The region as this edge sees it, or None without ``cluster.inventory``."""
    config = settings.cluster
    if config.inventory is None:
        return None
    inventory = load_inventory(config.inventory)
    me = next(edge for edge in inventory.edges if edge.name == config.self_name)
    region = [edge for edge in inventory.in_region(me.region) if edge.enabled]
    if not me.enabled:
        region.append(me)  # listed (its role is always "none"), never an owner
    peers = [edge for edge in region if edge.name != me.name]
    checker = None
    if peers:
        checker = HealthChecker(
            peers, interval=config.health_interval, timeout=config.health_timeout, fall=config.fall, rise=config.rise
        )
    parents = [
        Parent(url, OriginPool(URL(url), settings.upstream), Health(1, 1, config.health_interval * 5, active=False))
        for url in config.parent
    ]
    return Cluster(config, inventory, me, region, checker, settings.upstream, parents)
