"""The router: the routing core, and the admin app (aiohttp) that explains it.

**Public side** (``edge.router.redirect``, on our own front end) — every method, every path:

1. the client address: the socket peer, or ``X-Forwarded-For`` when the peer is a trusted proxy
   (:func:`edge.router.clientip.client_address`);
2. its location (:class:`edge.router.geo.GeoLocator`) and coverage zone, if any;
3. the edge (:func:`edge.router.select.select_edge`), with the cache key ``host + path + query``
   so each URL has an owner edge in its region, and the client address as the spread token;
4. ``302`` (GET, HEAD) or ``307`` (every other method: the client must repeat the method and
   body) to ``edge.url`` + the request target exactly as received, with ``Cache-Control:
   no-store`` (a cached redirect would outlive the health and geo facts it was based on) and a
   small HTML body with the link.  No healthy edge → ``503`` with the reason and ``Retry-After``.

With ``debug_header`` the answer carries ``X-Edge-Route``, the decision as compact JSON; each
request writes one access-log line (:mod:`edge.router.accesslog`).

**Admin side** (:func:`create_router_admin_app`), Bearer-token protected when a token is set
(probes excepted):

- ``GET /route?ip=A[&path=/x][&host=h][&method=POST]`` or ``GET /route?peer=P&xff=...`` — the full
  decision as JSON: address used and why, location found, coverage zone, every candidate with
  distance and health, the edge chosen and why, the status and ``Location`` a client would get;
- ``GET /health`` — every edge's health (state, counters, last error, last change);
- ``GET /healthz`` (alive), ``GET /readyz`` (200 when at least one edge is healthy, else 503);
- ``GET /metrics`` — Prometheus text from the router's own ``CollectorRegistry``;
- ``GET /geodb`` — the database in use; ``POST /geodb/reload`` — reopen it (as SIGHUP does).

Both sides share one :class:`Router` (:func:`create_router`); its owner starts the health checker
(:meth:`Router.start`) and, on shutdown, stops it and closes the geo database (:meth:`Router.close`).
"""

from __future__ import annotations

import asyncio
import bisect
import json
import logging
import math
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple
from urllib.parse import urlsplit

import aiohttp
from aiohttp import hdrs, web
from aiohttp.typedefs import Handler
from lru import LRU
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, ProcessCollector, generate_latest
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily

from edge import dashboard, faultlog
from edge.admin import http1_only, token_matches
from edge.config import ConfigError
from edge.controlplane.app import CONTROL_PLANE_KEY, register_control_plane
from edge.controlplane.models import ControlPlaneSettings
from edge.inventory import EdgeEntry, Inventory, InventoryError, load_inventory
from edge.overview import Sampler, encoded_off_loop, iso, json_bytes, parse_since
from edge.router.clientip import ClientAddress, IPAddress, IPNetwork, client_address, parse_address
from edge.router.config import RouterSettings
from edge.router.coverage import CoverageError, CoverageMap, CoverageZone, load_coverage
from edge.router.geo import GeoDatabaseError, GeoLocator, GeoResult
from edge.router.health import HealthChecker
from edge.router.select import Decision, Selector, shard_key
from edge.version import package_version

__all__ = [
    "ROUTER_KEY",
    "RouteResult",
    "Router",
    "RouterMetrics",
    "RouterParts",
    "create_router",
    "create_router_admin_app",
    "open_router_parts",
    "request_target",
]

log = logging.getLogger("edge.router")

ROUTE_HEADER = "X-Edge-Route"
X_FORWARDED_FOR = "X-Forwarded-For"
REDIRECT_METHODS = frozenset({"GET", "HEAD"})
OPEN_ADMIN_PATHS = frozenset({"/healthz", "/readyz"})

# Decisions take tens of microseconds; the buckets resolve that range and flag the slow tail.
DECISION_BUCKETS = (10e-6, 25e-6, 50e-6, 100e-6, 250e-6, 500e-6, 1e-3, 2.5e-3, 5e-3, 10e-3, 50e-3)


# --- the request target ------------------------------------------------------------------------


def _escape_unsafe(target: str) -> str:
    """Percent-encode what may not appear in a header value or URL: non-ASCII, controls, space.

    Our HTTP parser only hands us such characters when a client sent raw bytes it should have
    encoded; encoding them (as browsers do) keeps the redirect valid.  Everything else, including
    existing escapes like ``%2F``, is left exactly as received.
    """
    if target.isascii() and target.isprintable() and " " not in target:
        return target
    out: list[str] = []
    for byte in target.encode("utf-8", "surrogateescape"):
        if 0x21 <= byte <= 0x7E:
            out.append(chr(byte))
        else:
            out.append(f"%{byte:02X}")
    return "".join(out)


def request_target(raw_path: str) -> tuple[str | None, str]:
    """Split the request target into (authority of an absolute-form target or ``None``, path+query).

    The path and query are returned byte-for-byte (``/a%2Fb/../c;p?q=%20`` stays as it is:
    the edge must see exactly what the client asked for); only the absolute form
    (``GET http://host/x``) loses its scheme and authority, and ``*`` / authority-form become ``/``.
    """
    if raw_path.startswith("/"):
        return None, _escape_unsafe(raw_path)
    scheme_end = raw_path.find("://")
    if scheme_end <= 0:
        return None, "/"
    rest = raw_path[scheme_end + 3 :]
    cut = len(rest)
    for separator in "/?#":
        index = rest.find(separator)
        if 0 <= index < cut:
            cut = index
    authority = rest[:cut].rpartition("@")[2]
    target = rest[cut:]
    if not target.startswith("/"):
        target = "/" + target
    return authority or None, _escape_unsafe(target)


# --- metrics -----------------------------------------------------------------------------------


class RouterMetrics:
    """The router's Prometheus metrics, in a registry of their own (one per router, not global).

    What every request touches — redirects by edge/region/rule/status, 503s, the decision-time
    histogram — is plain integers, turned into metric families when ``/metrics`` is scraped
    (``_RequestCollector``); the rest are ordinary ``prometheus_client`` objects.
    """

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.redirect_counts: dict[tuple[str, str, str, int], int] = {}
        self.unavailable = 0
        self.refusals: dict[str, int] = {}  # [protection] of the redirect listener, by reason (shared dict)
        self.decision_buckets = [0] * (len(DECISION_BUCKETS) + 1)
        self.decision_sum = 0.0
        self.registry.register(_RequestCollector(self))
        ProcessCollector(registry=self.registry)  # process_* (CPU, memory, open fds) of the router
        Gauge("edgecache_build_info", "This router's version (always 1)", ["component", "version"],
              registry=self.registry).labels("router", package_version()).set(1)  # fmt: skip
        self.edge_up = Gauge(
            "edgecache_router_edge_up",
            "1 when the router considers the edge healthy (state up), else 0.",
            ["edge", "region"],
            registry=self.registry,
        )
        self.edge_consecutive_failures = Gauge(
            "edgecache_router_edge_consecutive_failures",
            "Failed health checks in a row per edge.",
            ["edge", "region"],
            registry=self.registry,
        )
        self.geodb_reloads = Counter(
            "edgecache_router_geodb_reloads_total",
            "Geo database reloads, by result (ok/failed).",
            ["result"],
            registry=self.registry,
        )
        self.purge_lag = Gauge(
            "edgecache_router_purge_lag",
            "Purges logged that the edge has not applied yet (as of the control plane's last look).",
            ["edge"],
            registry=self.registry,
        )
        self.purge_log_up = Gauge(
            "edgecache_router_purge_log_up",
            "1 while the purge log can be written (Redis reachable, or the embedded SQLite log), else 0.",
            registry=self.registry,
        )
        self.geodb_build_epoch = Gauge(
            "edgecache_router_geodb_build_epoch_seconds",
            "Build time of the geo database in use (seconds since the epoch).",
            registry=self.registry,
        )

    def redirected(self, edge: str, region: str, rule: str, status: int) -> None:
        key = (edge, region, rule, status)
        counts = self.redirect_counts
        counts[key] = counts.get(key, 0) + 1

    def observe_decision(self, seconds: float) -> None:
        self.decision_buckets[bisect.bisect_left(DECISION_BUCKETS, seconds)] += 1
        self.decision_sum += seconds

    def render(self) -> bytes:
        return bytes(generate_latest(self.registry))


class _RequestCollector:
    def __init__(self, metrics: RouterMetrics) -> None:
        self.metrics = metrics

    def describe(self) -> list[Any]:
        return []

    def collect(self) -> Iterator[Any]:
        metrics = self.metrics
        redirects = CounterMetricFamily(
            "edgecache_router_redirects",
            "Clients redirected, by edge, region, selection rule and status (302/307).",
            labels=["edge", "region", "rule", "status"],
        )
        for (edge, region, rule, status), count in sorted(metrics.redirect_counts.items()):
            redirects.add_metric([edge, region, rule, str(status)], count)
        yield redirects
        yield CounterMetricFamily(
            "edgecache_router_unavailable", "Requests answered 503 because no edge was healthy.",
            value=metrics.unavailable,
        )  # fmt: skip
        refusals = CounterMetricFamily(
            "edgecache_router_refusals", "Requests and connections refused by [protection], by reason.",
            labels=["reason"],
        )  # fmt: skip
        for reason, count in sorted(metrics.refusals.items()):
            refusals.add_metric([reason], count)
        yield refusals
        cumulative, running = [], 0
        for bound, count in zip([*map(str, DECISION_BUCKETS), "+Inf"], metrics.decision_buckets, strict=True):
            running += count
            cumulative.append((bound, running))
        yield HistogramMetricFamily(
            "edgecache_router_decision_seconds",
            "Time to decide one request: geo lookup, coverage zone and edge selection.",
            buckets=cumulative, sum_value=metrics.decision_sum,
        )  # fmt: skip


# --- the routing core --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RouteResult:
    """One routing decision with everything that led to it."""

    client: ClientAddress
    location: GeoResult
    zone: CoverageZone | None
    cache_key: str
    decision: Decision
    status: int
    redirect: str | None
    elapsed_us: float


class Resolved(NamedTuple):
    """What the router knows about a request's client: address, location, coverage zone, spread token."""

    client: ClientAddress
    location: GeoResult
    zone: CoverageZone | None
    token: str | None


# Entries in each per-address memo (see :class:`Router`), and the longest X-Forwarded-For (all
# lines together) whose resolution is memoised: together they bound the memos to a few tens of MB.
MEMO_ENTRIES = 65536
MEMO_MAX_XFF = 256


class Router:
    """Client address → location → edge, shared by the public and the admin app.

    Two memos (bounded LRU dictionaries) keep the per-request cost down, because the same clients
    come back again and again: per (peer, ``X-Forwarded-For`` lines) the resolved client address
    with its geo result, coverage zone and spread token, and the geo result plus coverage zone per
    address.  Both are pure functions of their keys for the life of the router — the trusted
    networks and the coverage file are fixed at start — except the geo result, so both memos are
    emptied whenever the database is reloaded.

    The edge selection is a :class:`edge.router.select.Selector`, the fast form of
    :func:`edge.router.select.select_edge` with identical answers, built for the health of the
    moment: it is rebuilt whenever the health map differs from the one it was built from (a dict
    comparison per request).  It remembers the region step per location; only the rendezvous
    hashing within the region depends on the URL, and the candidate list (for ``/route``) is
    computed only when read.
    """

    def __init__(
        self,
        settings: RouterSettings,
        inventory: Inventory,
        locator: GeoLocator,
        coverage: CoverageMap | None,
        health: HealthChecker,
        metrics: RouterMetrics | None = None,
    ) -> None:
        self.settings = settings
        self.inventory = inventory
        self.locator = locator
        self.coverage = coverage
        self.health = health
        self.metrics = metrics or RouterMetrics()
        self.trusted: Sequence[IPNetwork] = settings.trusted_networks
        self.retry_after = str(max(1, math.ceil(settings.health_interval * settings.rise)))
        self._healthy = health.healthy_view()
        self._selector_health: dict[str, bool] = dict(self._healthy)
        self._selector = Selector(inventory, self._selector_health)
        self._clients: Any = LRU(MEMO_ENTRIES)
        self._places: Any = LRU(MEMO_ENTRIES)
        self.metrics.geodb_build_epoch.set(locator.build_epoch)

    def selector(self) -> Selector:
        """The selector for the health of the moment, rebuilt when the health map changed."""
        healthy = self._healthy
        if healthy != self._selector_health:
            self._selector_health = dict(healthy)
            self._selector = Selector(self.inventory, self._selector_health)
        return self._selector

    def place(self, address: IPAddress) -> tuple[GeoResult, CoverageZone | None]:
        """Geo result and coverage zone of ``address``, memoised."""
        found: tuple[GeoResult, CoverageZone | None] | None = self._places.get(address)
        if found is None:
            zone = self.coverage.lookup(address) if self.coverage is not None else None
            found = self._places[address] = (self.locator.locate(address), zone)
        return found

    def route(self, client: ClientAddress, host: str, target: str, method: str = "GET") -> RouteResult:
        """Decide where a request for ``host`` + ``target`` from ``client`` goes; never raises."""
        started = time.perf_counter()
        address = client.address
        if address is None:
            location, zone, token = GeoResult.unknown(client.detail), None, None
        else:
            location, zone = self.place(address)
            token = str(address)
        cache_key = shard_key(target)
        decision = self.selector().decide(location, cache_key, zone, token)
        if decision.edge is None:
            status, redirect = 503, None
        else:
            status = 302 if method in REDIRECT_METHODS else 307
            redirect = decision.edge.url + target
        elapsed = time.perf_counter() - started
        return RouteResult(client, location, zone, cache_key, decision, status, redirect, elapsed * 1e6)

    def resolve_client(self, peer: str | None, xff_values: Sequence[str]) -> ClientAddress:
        """The client address by the trust rules of :mod:`edge.router.clientip`, memoised."""
        return self.resolve(peer, xff_values).client

    def resolve(self, peer: str | None, xff_values: Sequence[str]) -> Resolved:
        """Client address, location, coverage zone and spread token of a request, memoised."""
        if len(xff_values) == 1:
            if len(xff_values[0]) <= MEMO_MAX_XFF:
                key: tuple[str | None, ...] = (peer, xff_values[0])
            else:  # long chains: not worth the memory
                return self._resolve(peer, xff_values)
        elif not xff_values:
            key = (peer,)
        elif sum(len(value) for value in xff_values) > MEMO_MAX_XFF:
            return self._resolve(peer, xff_values)
        else:
            key = (peer, *xff_values)
        found: Resolved | None = self._clients.get(key)
        if found is None:
            found = self._clients[key] = self._resolve(peer, xff_values)
        return found

    def _resolve(self, peer: str | None, xff_values: Sequence[str]) -> Resolved:
        client = client_address(peer or "", xff_values, self.trusted)
        address = client.address
        if address is None:
            return Resolved(client, GeoResult.unknown(client.detail), None, None)
        location, zone = self.place(address)
        return Resolved(client, location, zone, str(address))

    async def start(self) -> None:
        """Start health checking; returns once the first round is done."""
        await self.health.start()

    async def close(self) -> None:
        await self.health.stop()
        self.locator.close()

    def reload_geodb(self) -> None:
        """Reopen the geo database (after ``geoipupdate`` replaced it); keep the old one on failure."""
        try:
            self.locator.reload()
        except GeoDatabaseError:
            self.metrics.geodb_reloads.labels("failed").inc()
            raise
        self._places.clear()
        self._clients.clear()  # its entries carry geo results too
        self.metrics.geodb_reloads.labels("ok").inc()
        self.metrics.geodb_build_epoch.set(self.locator.build_epoch)
        log.info("geo database reloaded: %s (%s)", self.locator.path, self.locator.database_type)

    def explain(self, result: RouteResult, method: str, host: str, target: str) -> dict[str, Any]:
        """The JSON answer of ``/route``: the decision and every fact it rests on."""
        snapshot = self.health.snapshot()
        decision = result.decision.to_dict()
        for candidate in decision["candidates"]:
            state = snapshot.get(candidate["name"])
            if state is not None:
                candidate["health"] = state.state
                candidate["last_error"] = state.last_error if state.state != "up" else None  # only while current
        address = result.client.address
        ranked = sorted(
            (candidate for candidate in decision["candidates"] if candidate["owner_rank"] is not None),
            key=lambda candidate: candidate["owner_rank"],
        )
        owners = [candidate["name"] for candidate in ranked[: self.inventory.replication]]  # as edges rank them
        return {
            "request": {"method": method, "host": host, "target": target},
            "client": {
                "address": None if address is None else str(address),
                "source": result.client.source,
                "detail": result.client.detail,
            },
            "location": result.location.to_dict(),
            "coverage_zone": None if result.zone is None else _zone_dict(result.zone),
            "cache_key": result.cache_key,
            "owners": owners,
            "decision": decision,
            "status": result.status,
            "redirect": result.redirect,
            "lookup_us": round(result.elapsed_us, 1),
        }


def _zone_dict(zone: CoverageZone) -> dict[str, Any]:
    return {"label": zone.label, "network": str(zone.network), "edge": zone.edge, "region": zone.region}


def route_summary(result: RouteResult) -> str:
    """The ``X-Edge-Route`` value: the decision in compact, ASCII-only JSON."""
    decision, location = result.decision, result.location
    address = result.client.address
    return json.dumps(
        {
            "edge": None if decision.edge is None else decision.edge.name,
            "region": decision.region,
            "rule": decision.rule,
            "client": None if address is None else str(address),
            "source": result.client.source,
            "geo": location.source,
            "country": location.country,
            "continent": location.continent,
            "zone": None if result.zone is None else result.zone.label,
            "reason": decision.reason,
        },
        separators=(",", ":"),
        ensure_ascii=True,
    )


# --- assembling the parts from settings ------------------------------------------------------


class RouterParts(NamedTuple):
    """What a router is made of, opened and validated from :class:`RouterSettings`."""

    inventory: Inventory
    locator: GeoLocator
    coverage: CoverageMap | None
    health: HealthChecker


def health_checker(settings: RouterSettings, inventory: Inventory) -> HealthChecker:
    return HealthChecker(
        inventory.edges,
        interval=settings.health_interval,
        timeout=settings.health_timeout,
        fall=settings.fall,
        rise=settings.rise,
    )


def open_router_parts(settings: RouterSettings) -> RouterParts:
    """Load the inventory, coverage file and geo database; ``ConfigError`` names the faulty one."""
    try:
        inventory = load_inventory(settings.edges)
    except InventoryError as exc:
        raise ConfigError(f"config error: edges: {exc}") from exc
    coverage: CoverageMap | None = None
    if settings.coverage is not None:
        try:
            coverage = load_coverage(settings.coverage, inventory)
        except CoverageError as exc:
            raise ConfigError(f"config error: coverage: {exc}") from exc
    try:
        locator = GeoLocator(settings.geodb)
    except GeoDatabaseError as exc:
        raise ConfigError(f"config error: geodb: {exc}") from exc
    return RouterParts(inventory, locator, coverage, health_checker(settings, inventory))


# --- the router as a whole -----------------------------------------------------------------------

NO_HEALTHY_EDGE = "no healthy edge"  # the reason of every decision when no edge is usable
ROUTER_KEY = web.AppKey("router", Router)


def create_router(
    settings: RouterSettings,
    *,
    inventory: Inventory,
    locator: GeoLocator,
    coverage: CoverageMap | None = None,
    health: HealthChecker | None = None,
    metrics: RouterMetrics | None = None,
) -> Router:
    """The routing core shared by the redirect listener (``edge.router.redirect``) and the admin app.

    Its owner calls :meth:`Router.start` (first health round) and :meth:`Router.close`.
    """
    checker = health if health is not None else health_checker(settings, inventory)
    return Router(settings, inventory, locator, coverage, checker, metrics)


# --- the admin app -----------------------------------------------------------------------------


@web.middleware
async def require_token(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Bearer auth (constant-time compare) on everything but the probes, when a token is set."""
    token = request.app[ROUTER_KEY].settings.admin_token
    if (
        token
        and request.path not in OPEN_ADMIN_PATHS
        and not dashboard.is_open(request.path)
        and not token_matches(request.headers.get(hdrs.AUTHORIZATION), token)
    ):
        return web.json_response(
            {"error": "missing or wrong bearer token"},
            status=401,
            headers={hdrs.WWW_AUTHENTICATE: 'Bearer realm="edgecache-router"'},
        )
    return await handler(request)


def _bad_request(message: str) -> web.Response:
    return web.json_response({"error": message}, status=400)


async def admin_route(request: web.Request) -> web.Response:
    """``GET /route?ip=…`` (or ``peer=…&xff=…``), with ``path=`` (+ ``host=``) or ``url=``: the
    decision for a hypothetical request, and the target's owners in the chosen region."""
    router = request.app[ROUTER_KEY]
    query = request.query
    ip_text = query.get("ip")
    peer_text = query.get("peer")
    if ip_text is not None:
        address = parse_address(ip_text)
        if address is None:
            return _bad_request(f"ip: {ip_text!r} is not an IP address")
        client = ClientAddress(address, "peer", "given as ?ip=")
    elif peer_text is not None:
        if parse_address(peer_text) is None:
            return _bad_request(f"peer: {peer_text!r} is not an IP address")
        client = router.resolve_client(peer_text, query.getall("xff", []))
    else:
        return _bad_request("give ?ip=ADDRESS (or ?peer=ADDRESS with optional &xff=... lines)")
    path = query.get("path", "/")
    host = query.get("host", "")
    url = query.get("url")
    if url is not None:  # an absolute URL names host and target at once (as the edges' /cluster?url=)
        try:
            parts = urlsplit(url)
        except ValueError:  # e.g. an unclosed IPv6 literal: "http://[::1"
            parts = urlsplit("")
        if not parts.netloc or parts.scheme.lower() not in ("http", "https"):
            return _bad_request(f"url: {url!r} is not an absolute http(s) URL")
        host = parts.netloc
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    if not path.startswith("/"):
        return _bad_request("path: must start with '/' (it may carry a query: path=/a%3Fb%3D1)")
    method = query.get("method", "GET").upper()
    _, target = request_target(path)
    result = router.route(client, host, target, method)
    return web.json_response(router.explain(result, method, host, target), dumps=_dumps)


def _dumps(data: Any) -> str:
    return json.dumps(data, indent=2, ensure_ascii=False)


async def admin_health(request: web.Request) -> web.Response:
    router = request.app[ROUTER_KEY]
    snapshot = router.health.snapshot()
    settings = router.settings
    return web.json_response(
        {
            "healthy": sum(1 for state in snapshot.values() if state.healthy),
            "total": len(snapshot),
            "interval_s": settings.health_interval,
            "timeout_s": settings.health_timeout,
            "fall": settings.fall,
            "rise": settings.rise,
            "rounds": router.health.rounds,
            "edges": {name: _with_urls(router.inventory, state.to_dict()) for name, state in snapshot.items()},
            "recent_changes": [change.to_dict() for change in list(router.health.changes)[-20:]],
        },
        dumps=_dumps,
    )


def _with_urls(inventory: Inventory, row: dict[str, Any]) -> dict[str, Any]:
    """An edge's health row with where it serves and where its admin API is (for ``edgecache``)."""
    entry = next((edge for edge in inventory.edges if edge.name == row["name"]), None)
    if entry is not None:
        row.update(url=entry.url, admin_url=entry.admin_url)
    return row


async def admin_healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def admin_readyz(request: web.Request) -> web.Response:
    """Ready when at least one edge could take clients; a load balancer in front of routers uses it."""
    healthy = sum(1 for ok in request.app[ROUTER_KEY].health.healthy_view().values() if ok)
    return web.json_response({"ready": healthy > 0, "healthy_edges": healthy}, status=200 if healthy else 503)


async def admin_metrics(request: web.Request) -> web.Response:
    router = request.app[ROUTER_KEY]
    metrics = router.metrics
    for name, state in router.health.snapshot().items():
        metrics.edge_up.labels(name, state.region).set(1 if state.healthy else 0)
        metrics.edge_consecutive_failures.labels(name, state.region).set(state.consecutive_fail)
    control_plane = request.app.get(CONTROL_PLANE_KEY)
    if control_plane is not None:
        for name, lag in control_plane.edge_lag().items():
            metrics.purge_lag.labels(name).set(lag)
        metrics.purge_log_up.set(0 if getattr(control_plane, "reachable", True) is False else 1)
    return web.Response(body=metrics.render(), headers={hdrs.CONTENT_TYPE: CONTENT_TYPE_LATEST})


def _geodb_info(locator: GeoLocator) -> dict[str, Any]:
    return {
        "path": str(locator.path),
        "database_type": locator.database_type,
        "build_epoch": locator.build_epoch,
        "build_iso": iso(locator.build_epoch),
    }


async def admin_geodb(request: web.Request) -> web.Response:
    return web.json_response(_geodb_info(request.app[ROUTER_KEY].locator))


async def admin_geodb_reload(request: web.Request) -> web.Response:
    router = request.app[ROUTER_KEY]
    try:
        router.reload_geodb()
    except GeoDatabaseError as exc:
        return web.json_response(
            {"reloaded": False, "error": str(exc), "in_use": _geodb_info(router.locator)}, status=500
        )
    return web.json_response({"reloaded": True, "in_use": _geodb_info(router.locator)})


SAMPLER_KEY = web.AppKey("sampler", Sampler)
ORIGINS_KEY = web.AppKey("origins", dict)


async def _start_sampler(app: web.Application) -> None:
    """Every edge's /stats (and /origins) every few seconds, for the dashboard's 15 minutes."""
    router = app[ROUTER_KEY]
    token = router.settings.purge_edge_token
    headers = {hdrs.AUTHORIZATION: f"Bearer {token}"} if token else {}
    origins: dict[str, Any] = {}
    app[ORIGINS_KEY] = origins
    session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2.0))

    async def one(edge: EdgeEntry) -> tuple[str, dict[str, Any] | None]:
        try:
            async with session.get(f"{edge.admin_url}/stats", headers=headers) as resp:
                stats = await resp.json() if resp.status == 200 else None
            async with session.get(f"{edge.admin_url}/origins", headers=headers) as resp:
                if resp.status == 200:
                    origins[edge.name] = await resp.json()
                else:
                    origins.pop(edge.name, None)
        except (aiohttp.ClientError, TimeoutError, ValueError):
            origins.pop(edge.name, None)  # an edge that does not answer: its last word on its origins is not news
            return edge.name, None
        return edge.name, stats

    async def fetch() -> dict[str, dict[str, Any] | None]:
        edges = [edge for edge in router.inventory.edges if edge.enabled]
        for name in set(origins) - {edge.name for edge in edges}:  # removed or disabled since
            del origins[name]
        return dict(await asyncio.gather(*(one(edge) for edge in edges)))

    sampler = Sampler(fetch, interval=router.settings.dashboard_interval)
    sampler.session = session  # type: ignore[attr-defined]
    app[SAMPLER_KEY] = sampler
    sampler.start()


async def _stop_sampler(app: web.Application) -> None:
    sampler = app[SAMPLER_KEY]
    await sampler.stop()
    await sampler.session.close()  # type: ignore[attr-defined]


async def admin_overview(request: web.Request) -> web.Response:
    """``GET /api/overview``: the whole CDN for the dashboard (README "Dashboard")."""
    router = request.app[ROUTER_KEY]
    sampler = request.app[SAMPLER_KEY]
    try:
        since = parse_since(request.query.get("since"))
    except ValueError as exc:
        return web.json_response({"error": str(exc)}, status=400)
    control_plane = request.app.get(CONTROL_PLANE_KEY)
    lag = control_plane.edge_lag() if control_plane is not None else {}
    purges: list[dict[str, Any]] = []
    purge_error = None
    if control_plane is not None:
        try:
            recent = await control_plane.overview(20)
            purges = recent["records"]
            lag = {name: item.get("lag", 0) for name, item in recent["edges"].items()}
        except Exception as exc:  # a Redis log that is down: the rest of the page still renders
            purge_error = str(exc)[:300]
    for item in purges:
        item["created_at_iso"] = iso(item.get("created_at"))
    edges = []
    for name, state in router.health.snapshot().items():
        now, series = sampler.edge_series(name, since)
        row = _with_urls(router.inventory, state.to_dict())
        row.update(purge_lag=lag.get(name), now=now, series=series, last_change_iso=iso(state.last_change))
        edges.append(row)
    total_now, total_series = sampler.total_series(since)
    regions: dict[str, dict[str, Any]] = {}
    for (edge, region, _rule, _status), count in router.metrics.redirect_counts.items():
        entry = regions.setdefault(region, {"redirects": 0, "edges": {}})
        entry["redirects"] += count
        entry["edges"][edge] = entry["edges"].get(edge, 0) + count
    payload = {
        "scope": "cdn", "generated_at": iso(time.time()), "interval_s": sampler.interval,
        "edges": edges, "total": {"now": total_now, "series": total_series},
        "purges": purges, "purge_error": purge_error,
        "origins": request.app[ORIGINS_KEY], "regions": regions,
        "unavailable": router.metrics.unavailable,
    }  # fmt: skip
    body, headers = await encoded_off_loop(json_bytes(payload), request.headers.getall("Accept-Encoding", []))
    return web.Response(body=body, headers=headers)


def create_router_admin_app(router: Router) -> web.Application:
    """The admin side, sharing ``router`` with the redirect listener."""
    faultlog.quiet_admin_parse_errors()  # a request aiohttp cannot parse: one line, no traceback
    app = web.Application(middlewares=[http1_only, require_token])
    app[ROUTER_KEY] = router
    app.router.add_get("/route", admin_route)
    app.router.add_get("/health", admin_health)
    app.router.add_get("/healthz", admin_healthz)
    app.router.add_get("/readyz", admin_readyz)
    app.router.add_get("/metrics", admin_metrics)
    app.router.add_get("/geodb", admin_geodb)
    app.router.add_post("/geodb/reload", admin_geodb_reload)
    dashboard.add_dashboard_routes(app)
    app.router.add_get("/api/overview", admin_overview)
    app.on_startup.append(_start_sampler)
    app.on_cleanup.append(_stop_sampler)
    settings = router.settings
    register_control_plane(
        app,
        router.inventory,
        ControlPlaneSettings(
            state_dir=settings.purge_state_dir,
            edge_token=settings.purge_edge_token,
            admin_token=None,  # the admin side's own bearer token already guards every endpoint
            timeout=settings.purge_timeout,
            retry_interval=settings.purge_retry_interval,
            max_records=settings.purge_max_records,
            max_age=settings.purge_log_retention,
            purge_log=settings.purge_log,
        ),
    )
    return app
