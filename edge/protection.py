"""Protection at the edge (``[protection]``, README "Protection"): who may connect, how fast a
client may ask, how fast its misses may reach the origin, how many origin requests a site may
have in flight, and which requests need a signed URL.

Checked in the order a request costs:

    connection   max_connections (whole edge), max_connections_per_ip        → closed at once
    request      allow / deny (CIDR), deny_countries (geo database)          → 403
                 signed URL (per site and path)                              → 403
                 rate / burst (token bucket per client address)              → 429 + Retry-After
    miss         miss_rate / miss_burst (a second bucket, for origin-bound)   → 429 + Retry-After
    origin       max_origin_inflight (per site, whole edge)                  → 503 + Retry-After, or stale

A refusal is one short prebuilt response, before any cache lookup.  Every refusal is counted per
reason (``edgecache_protection_refusals_total``); a line is logged at most once per client and
reason every ``log_interval`` seconds.  The client address is the socket peer, or the right-most
untrusted ``X-Forwarded-For`` (else ``Forwarded: for=``) entry when the peer is in
``trust_proxy`` — the router's rule.  Counters live in files under ``<cache_dir>/protection/``
that every worker maps, so the limits hold for the whole edge (``edge.ratelimit``,
``edge.connlimit``).
"""

from __future__ import annotations

import fnmatch
import ipaddress
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path

from lru import LRU

from edge.config import EdgeSettings, RouterProtectionSettings, SignedUrlSettings, SiteProtectionSettings
from edge.connlimit import ConnectionTable
from edge.errors import ClientFault
from edge.forward import origin_target
from edge.http import cachekey
from edge.ratelimit import RateTable
from edge.router.clientip import client_address, parse_address, parse_networks
from edge.router.geo import GeoLocator
from edge.server.exchange import RequestHead
from edge.signedurl import check as check_signature
from edge.sites import Site, SiteTable

__all__ = ["Guard", "OriginLimit", "Protection", "Refusal", "build_protection"]

log = logging.getLogger("edge.protection")

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True, slots=True)
class Refusal:
    status: int
    reason: str  # the metric label: deny, country, signature, rate, miss_rate
    message: str
    retry_after: int | None = None

    def response(self, keep_alive: bool, head_only: bool = False) -> list[bytes]:
        """The whole answer, built once per refusal and connection kind (a flood repeats it);
        ``head_only``: for HEAD, the same fields without the body."""
        key = (self, keep_alive, head_only)
        cached = _RESPONSES.get(key)
        if cached is None:
            cached = _RESPONSES[key] = self._build(keep_alive, head_only)
        return cached

    def _build(self, keep_alive: bool, head_only: bool) -> list[bytes]:
        body = f"{self.status} {_REASONS[self.status]}: {self.message}\n".encode()
        head = [
            f"HTTP/1.1 {self.status} {_REASONS[self.status]}", "Content-Type: text/plain; charset=utf-8",
            f"Content-Length: {len(body)}", "Cache-Control: no-store",
        ]  # fmt: skip
        if self.retry_after is not None:
            head.append(f"Retry-After: {self.retry_after}")
        if not keep_alive:
            head.append("Connection: close")
        return [("\r\n".join(head) + "\r\n\r\n").encode() + (b"" if head_only else body)]


_REASONS = {403: "Forbidden", 429: "Too Many Requests", 503: "Service Unavailable"}
_RESPONSES: LRU[tuple[Refusal, bool, bool], list[bytes]] = LRU(1024)
_RATE_REFUSALS: dict[int, Refusal] = {}
_MISS_REFUSALS: dict[int, Refusal] = {}


def _rate_refusal(wait: float) -> Refusal:
    seconds = max(1, math.ceil(wait))
    found = _RATE_REFUSALS.get(seconds)
    if found is None:
        found = _RATE_REFUSALS[seconds] = Refusal(429, "rate", "request rate limit reached; slow down", seconds)
    return found


def _miss_refusal(wait: float) -> Refusal:
    seconds = max(1, math.ceil(wait))
    found = _MISS_REFUSALS.get(seconds)
    if found is None:
        found = _MISS_REFUSALS[seconds] = Refusal(
            429, "miss_rate", "too many requests for uncached content; slow down", seconds)
    return found


@dataclass(slots=True)
class Rules:
    """One site's request rules, compiled."""

    rate: float | None
    burst: int
    miss_rate: float | None
    miss_burst: int
    allow: list[Network]
    deny: list[Network]
    deny_countries: frozenset[str]
    signed: SignedUrlSettings | None
    max_origin_inflight: int | None

    @classmethod
    def of(cls, rules: SiteProtectionSettings) -> Rules:
        rate, miss_rate = rules.rate, rules.miss_rate
        return cls(
            rate=rate,
            burst=rules.burst if rules.burst is not None else (int(2 * rate) if rate else 0),
            miss_rate=miss_rate,
            miss_burst=rules.miss_burst if rules.miss_burst is not None else (int(2 * miss_rate) if miss_rate else 0),
            allow=[ipaddress.ip_network(item) for item in rules.allow or []],
            deny=[ipaddress.ip_network(item) for item in rules.deny or []],
            deny_countries=frozenset(rules.deny_countries or ()),
            signed=rules.signed_urls,
            max_origin_inflight=rules.max_origin_inflight,
        )

    @property
    def filters(self) -> bool:
        return bool(self.allow or self.deny or self.deny_countries)


class OriginLimit:
    """``max_origin_inflight`` of one site, counted for the whole edge."""

    def __init__(self, table: ConnectionTable, site: str, limit: int) -> None:
        self.table = table
        self.key = f"site:{site}"
        self.limit = limit

    def acquire(self) -> bool:
        return self.table.admit(self.key, self.limit, None) is None

    def release(self) -> None:
        self.table.release(self.key)


class Guard:
    """Rate and connection limits of the router's redirect listener (one process: in memory)."""

    def __init__(self, settings: RouterProtectionSettings) -> None:
        self.settings = settings
        self.rates = RateTable(None) if settings.rate else None
        self.burst = settings.burst if settings.burst is not None else int(2 * (settings.rate or 0))
        capped = settings.max_connections or settings.max_connections_per_ip
        self.connections = ConnectionTable(None) if capped else None
        self.refusals: dict[str, int] = {}
        self._logged: LRU[tuple[str, str], float] = LRU(65536)

    def admit(self, peer: str | None) -> bool:
        assert self.connections is not None
        refused = self.connections.admit(peer or "-", self.settings.max_connections_per_ip,
                                         self.settings.max_connections)  # fmt: skip
        if refused is None:
            return True
        self._count(refused, peer or "-")
        return False

    def release(self, peer: str | None) -> None:
        assert self.connections is not None
        self.connections.release(peer or "-")

    def take(self, client: str) -> Refusal | None:
        if self.rates is None or self.settings.rate is None:
            return None
        wait = self.rates.take(client, self.settings.rate, self.burst)
        if not wait:
            return None
        self._count("rate", client)
        return _rate_refusal(wait)

    def _count(self, reason: str, client: str) -> None:
        self.refusals[reason] = self.refusals.get(reason, 0) + 1
        now = time.monotonic()
        last = self._logged.get((client, reason))
        if last is None or now - last >= self.settings.log_interval:
            self._logged[(client, reason)] = now
            log.info("router refused %s (%s; logged once per %g s per client)", client, reason,
                     self.settings.log_interval)  # fmt: skip


class Protection:
    """The edge's protection, shared by its workers through files in ``state_dir``."""

    def __init__(self, settings: EdgeSettings, sites: SiteTable, state_dir: Path) -> None:
        protection = settings.protection
        self.settings = protection
        shared = True  # file-backed: a reload overlaps old and new workers even with workers = 1
        self.trusted = parse_networks(protection.trust_proxy)
        self.rules = {site.name: Rules.of(protection.for_site(site.settings.protection)) for site in sites.sites}
        self.rates = RateTable(state_dir / "rates.map", shared=shared) if any(
            rules.rate for rules in self.rules.values()) else None  # fmt: skip
        self.misses = RateTable(state_dir / "misses.map", shared=shared) if any(
            rules.miss_rate for rules in self.rules.values()) else None  # fmt: skip
        self.connections: ConnectionTable | None = None
        if protection.max_connections or protection.max_connections_per_ip:
            self.connections = ConnectionTable(state_dir / "connections.map")
        self.origin_table: ConnectionTable | None = None
        for site in sites.sites:
            limit = self.rules[site.name].max_origin_inflight
            if limit:
                if self.origin_table is None:
                    self.origin_table = ConnectionTable(state_dir / "inflight.map")
                site.origins.limit = OriginLimit(self.origin_table, site.name, limit)
        self.geo = _open_geodb(settings.geodb) if any(r.deny_countries for r in self.rules.values()) else None
        self.refusals: dict[str, int] = {}
        self._countries: LRU[str, str | None] = LRU(65536)
        self._logged: LRU[tuple[str, str], float] = LRU(65536)
        self.active = bool(self.rates or self.misses or self.geo or self.trusted
                           or any(r.filters or r.signed for r in self.rules.values()))  # fmt: skip

    def close(self) -> None:
        for table in (self.rates, self.misses):
            if table is not None:
                table.close()
        for counts in (self.connections, self.origin_table):
            if counts is not None:
                counts.close()
        if self.geo is not None:
            self.geo.close()

    # -- connections -----------------------------------------------------------------------------
    def admit(self, peer: str | None) -> bool:
        """A new connection: count it, or refuse it (it is closed at once)."""
        assert self.connections is not None
        refused = self.connections.admit(peer or "-", self.settings.max_connections_per_ip,
                                         self.settings.max_connections)  # fmt: skip
        if refused is None:
            return True
        self._refused(refused, peer or "-", f"connection refused ({refused})")
        return False

    def release(self, peer: str | None) -> None:
        assert self.connections is not None
        self.connections.release(peer or "-")

    # -- requests --------------------------------------------------------------------------------
    def client(self, head: RequestHead) -> str:
        peer = head.peer or "-"
        if not self.trusted:
            return peer
        if self.settings.client_header == "forwarded":
            chain = _forwarded_for(head)
        else:
            chain = [value.decode("latin-1") for name, value in head.raw_headers if name.lower() == b"x-forwarded-for"]
        if not chain:
            return peer
        address = client_address(peer, chain, self.trusted).address
        return str(address) if address is not None else peer

    def check(self, head: RequestHead, site: Site | None) -> Refusal | None:
        """The request's refusal, or None (then ``head.client`` is set and later checks use it)."""
        client = head.client = self.client(head)
        if site is None or head.method == "PURGE":  # 421 later; PURGE is judged by purge_allow
            return None
        rules = self.rules[site.name]
        if rules.rate and self.rates is not None:  # first: a flood of bad requests is throttled too
            wait = self.rates.take(f"{site.name}|{limit_key(client)}", rules.rate, rules.burst)
            if wait:
                return self._refused("rate", client, "request rate limit reached", _rate_refusal(wait))
        if rules.filters:
            refusal = self._filter(client, rules)
            if refusal is not None:
                return self._refused(refusal.reason, client, refusal.message, refusal)
        if rules.signed is not None:
            problem = self._signature(head, rules.signed, client)
            if problem is not None:
                return self._refused("signature", client, problem, Refusal(403, "signature", problem))
        return None

    def miss(self, head: RequestHead, site: Site) -> Refusal | None:
        """A request that would go to the origin: the client's miss budget."""
        rules = self.rules[site.name]
        if not rules.miss_rate or self.misses is None:
            return None
        client = head.client or self.client(head)
        wait = self.misses.take(f"{site.name}|{limit_key(client)}", rules.miss_rate, rules.miss_burst)
        if not wait:
            return None
        return self._refused("miss_rate", client, "origin request rate limit reached", _miss_refusal(wait))

    def _filter(self, client: str, rules: Rules) -> Refusal | None:
        try:
            address = ipaddress.ip_address(client)
        except ValueError:
            return Refusal(403, "deny", "client address unknown") if rules.allow else None
        if rules.allow and not any(address in network for network in rules.allow):
            return Refusal(403, "deny", "client address not allowed")
        if any(address in network for network in rules.deny):
            return Refusal(403, "deny", "client address denied")
        if rules.deny_countries:
            country = self._country(client)
            if country is not None and country in rules.deny_countries:
                return Refusal(403, "country", f"not available in {country}")
        return None

    def _country(self, client: str) -> str | None:
        if client in self._countries:
            return self._countries[client]
        country = None
        address = parse_address(client)
        if self.geo is not None and address is not None:
            country = self.geo.locate(address).country  # never raises: unknown → not denied by country
        self._countries[client] = country
        return country

    def _signature(self, head: RequestHead, signed: SignedUrlSettings, client: str) -> str | None:
        try:
            target = origin_target(head)
        except ClientFault:
            return None  # refused later as a bad target
        raw_path, _, query = target.partition("?")
        path = canonical_path(raw_path)  # what the cache key and the origin make of it
        if not any(fnmatch.fnmatchcase(path, pattern) for pattern in signed.paths):
            return None
        return check_signature(signed.secret, path, query, param=signed.param, expires_param=signed.expires_param,
                               client=client if signed.bind_client else None)  # fmt: skip

    def _refused(self, reason: str, client: str, message: str, refusal: Refusal | None = None) -> Refusal:
        self.refusals[reason] = self.refusals.get(reason, 0) + 1
        now = time.monotonic()
        key = (client, reason)
        last = self._logged.get(key)
        if last is None or now - last >= self.settings.log_interval:
            self._logged[key] = now
            log.info("refused %s: %s (%s; logged once per %g s per client)", client, message, reason,
                     self.settings.log_interval)  # fmt: skip
        return refusal if refusal is not None else Refusal(403, reason, message)


def limit_key(client: str) -> str:
    """Whom a limit counts: an IPv4 address, or an IPv6 /64 (one host may hold a whole /64)."""
    if ":" not in client:
        return client
    try:
        network = ipaddress.IPv6Network(f"{client}/64", strict=False)
    except ValueError:
        return client
    return str(network)


def canonical_path(path: str) -> str:
    """A path as the cache key and an origin see it: unreserved characters decoded, dot segments
    removed (RFC 3986 §5.2.4), empty segments collapsed — so no spelling escapes ``paths``."""
    decoded = cachekey.decode_unreserved(path)
    segments: list[str] = []
    for segment in decoded.split("/"):
        if segment in ("", "."):
            continue
        if segment == "..":
            if segments:
                segments.pop()
            continue
        segments.append(segment)
    canonical = "/" + "/".join(segments)
    if decoded.endswith("/") and segments:
        canonical += "/"
    return canonical


def _forwarded_for(head: RequestHead) -> list[str]:
    """``Forwarded: for=…`` entries (RFC 7239) as X-Forwarded-For entries, left to right."""
    entries: list[str] = []
    for name, value in head.raw_headers:
        if name.lower() != b"forwarded":
            continue
        for element in value.decode("latin-1").split(","):
            for pair in element.split(";"):
                key, _, item = pair.strip().partition("=")
                if key.lower() != "for":
                    continue
                item = item.strip().strip('"')
                if item.startswith("["):  # [v6]:port
                    item = item[1:].split("]", 1)[0]
                elif item.count(":") == 1:  # v4:port
                    item = item.split(":", 1)[0]
                entries.append(item)
    return [", ".join(entries)] if entries else []


def _open_geodb(path: Path | None) -> GeoLocator:
    if path is None:
        raise ValueError("protection.deny_countries needs geodb (a MaxMind-format database)")
    return GeoLocator(path)


def build_protection(settings: EdgeSettings, sites: SiteTable) -> Protection | None:
    """The edge's protection, or None when ``[protection]`` (and every site's) asks for nothing."""
    protection = settings.protection
    wanted = any(
        value for name, value in protection
        if name not in ("log_interval", "trust_proxy")
    ) or any(site.settings.protection is not None for site in sites.sites)  # fmt: skip
    if not wanted:
        return None
    return Protection(settings, sites, Path(settings.cache_dir) / "protection")
