"""Which edge serves this client and this URL — a pure function of inventory, health and location.

Two questions, answered in order:

**Which region?**  (only edges that are ``enabled`` *and* reported healthy count; an edge the
health map does not mention has not been shown healthy and counts as down)

1. A matching coverage zone wins: its edge, if that edge is healthy (``rule="coverage-edge"``);
   or its region, if the region has a healthy edge (``"coverage-region"``).  Otherwise the zone
   is noted in the reason and the rules below apply.
2. The client has coordinates → the region whose nearest healthy edge is closest by great-circle
   distance plus that edge's ``bias_km`` (``"distance"``).  Ties go to the region name that sorts
   first.
3. No coordinates → a region with a healthy edge in the client's country (``"country"``), else in
   its continent (``"continent"``), else the first region of ``region_fallback`` with a healthy
   edge (``"fallback"``), else the first region in inventory order (``"inventory-order"``).  When
   several regions match a country or continent, the preference order decides: ``region_fallback``
   first, then inventory order.
4. No healthy edge anywhere → ``edge=None``, ``rule="none"``, reason ``"no healthy edge"``.

**Which edge in the region?**  Weighted rendezvous hashing (highest random weight, HRW) of the
cache key over the region's healthy edges: each edge scores ``-weight / ln(h)`` where ``h`` is a
uniform hash of (edge name, key) in (0, 1), and the highest score owns the key.  Why HRW: every
edge of a region caches different URLs instead of all of them caching everything, an edge that
goes down hands only *its* keys to the others (each key to its next-ranked owner), one that comes
back takes only its own keys back, and weights shift shares proportionally — all without a ring
or any shared state.  With ``replication = R`` the top R owners share a key (for hot objects);
``spread_token`` (for example the client address) picks one of them by hash, so a given
(key, token) pair always lands on the same owner.  Without a token the primary owner serves.

Hashes are BLAKE2b, not Python's ``hash()``, so every router process agrees.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from edge.inventory import EdgeEntry, Inventory
from edge.router.coverage import CoverageZone

__all__ = [
    "EARTH_RADIUS_KM",
    "Candidate",
    "Decision",
    "Location",
    "Rule",
    "great_circle_km",
    "hrw_score",
    "rendezvous_order",
    "select_edge",
]

# IUGG mean Earth radius; the spherical model is off by < 0.5 %, far below geo-database error.
EARTH_RADIUS_KM = 6371.0088

Rule = Literal[
    "coverage-edge", "coverage-region", "distance", "country", "continent", "fallback", "inventory-order", "none"
]


class Location(Protocol):
    """What selection needs from a geo lookup; :class:`edge.router.geo.GeoResult` fits."""

    @property
    def latitude(self) -> float | None: ...

    @property
    def longitude(self) -> float | None: ...

    @property
    def country(self) -> str | None: ...

    @property
    def continent(self) -> str | None: ...


@dataclass(frozen=True, slots=True)
class Candidate:
    """One inventory edge as the decision saw it.

    ``distance_km`` is great-circle distance plus ``bias_km`` (the figure that was compared), or
    ``None`` without client coordinates.  ``score`` is the edge's rendezvous score for the key and
    ``owner_rank`` its place among the chosen region's healthy edges (0 = primary owner); both are
    ``None`` for edges outside the chosen region, and ``owner_rank`` for unhealthy ones.
    """

    name: str
    region: str
    enabled: bool
    healthy: bool
    distance_km: float | None
    score: float | None
    owner_rank: int | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "region": self.region,
            "enabled": self.enabled,
            "healthy": self.healthy,
            "distance_km": None if self.distance_km is None else round(self.distance_km, 1),
            "score": self.score,
            "owner_rank": self.owner_rank,
        }


@dataclass(frozen=True, slots=True)
class Decision:
    """The chosen edge (``None`` when nothing is healthy), why, and every candidate considered."""

    edge: EdgeEntry | None
    region: str | None
    rule: Rule
    reason: str
    owners: tuple[str, ...] = ()
    candidates: list[Candidate] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready view for logs and the router's decision-inspection endpoint."""
        return {
            "edge": None if self.edge is None else self.edge.name,
            "url": None if self.edge is None else self.edge.url,
            "region": self.region,
            "rule": self.rule,
            "reason": self.reason,
            "owners": list(self.owners),
            "candidates": [candidate.to_dict() for candidate in self.candidates],
        }


def great_circle_km(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Haversine distance in km between two points given in degrees."""
    phi1, phi2 = math.radians(lat1), math.radians(lat2)
    dphi = phi2 - phi1
    dlambda = math.radians(lon2 - lon1)
    a = math.sin(dphi / 2) ** 2 + math.cos(phi1) * math.cos(phi2) * math.sin(dlambda / 2) ** 2
    a = min(1.0, max(0.0, a))  # rounding can push antipodal points a hair past 1
    return 2 * EARTH_RADIUS_KM * math.asin(math.sqrt(a))


def _hash64(*parts: str) -> int:
    data = "\x00".join(parts).encode("utf-8", "surrogatepass")
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "big")


def hrw_score(cache_key: str, edge: EdgeEntry) -> float:
    """Weighted rendezvous score of ``edge`` for ``cache_key``; higher wins.

    ``h`` uses 52 hash bits so that ``(n + 0.5) / 2**52`` is exact and strictly inside (0, 1):
    ``ln(h)`` is then negative and finite, and the score positive and finite.
    """
    h = ((_hash64(edge.name, cache_key) >> 12) + 0.5) / float(1 << 52)
    return -edge.weight / math.log(h)


def rendezvous_order(cache_key: str, edges: Sequence[EdgeEntry]) -> list[tuple[EdgeEntry, float]]:
    """``edges`` ranked for ``cache_key``, best owner first; equal scores go by name."""
    scored = [(edge, hrw_score(cache_key, edge)) for edge in edges]
    scored.sort(key=lambda pair: (-pair[1], pair[0].name))
    return scored


def _preference(inventory: Inventory) -> list[str]:
    """``region_fallback`` first, then the remaining regions in inventory order."""
    order = list(dict.fromkeys(inventory.region_fallback))
    order += [region for region in inventory.regions() if region not in order]
    return order


Ranked = Mapping[str, tuple[float, int | None]]


@dataclass(slots=True)
class _Context:
    """What every step of one decision shares."""

    inventory: Inventory
    health: Mapping[str, bool]
    usable: set[str]
    regions_usable: set[str]
    distance: dict[str, float]
    notes: list[str]

    def candidates(self, ranked: Ranked) -> list[Candidate]:
        return [
            Candidate(
                name=edge.name,
                region=edge.region,
                enabled=edge.enabled,
                healthy=bool(self.health.get(edge.name, False)),
                distance_km=self.distance.get(edge.name),
                score=ranked[edge.name][0] if edge.name in ranked else None,
                owner_rank=ranked[edge.name][1] if edge.name in ranked else None,
            )
            for edge in self.inventory.edges
        ]


def select_edge(
    inventory: Inventory,
    health: Mapping[str, bool],
    location: Location | None,
    cache_key: str,
    coverage_zone: CoverageZone | None = None,
    spread_token: str | None = None,
) -> Decision:
    """Pick the edge for one request by the rules in the module docstring."""
    usable = {edge.name for edge in inventory.edges if edge.enabled and health.get(edge.name, False)}
    coords: tuple[float, float] | None = None
    if location is not None and location.latitude is not None and location.longitude is not None:
        coords = (location.latitude, location.longitude)
    distance: dict[str, float] = {}
    if coords is not None:
        for edge in inventory.edges:
            distance[edge.name] = great_circle_km(*coords, edge.latitude, edge.longitude) + edge.bias_km
    ctx = _Context(
        inventory,
        health,
        usable,
        {edge.region for edge in inventory.edges if edge.name in usable},
        distance,
        [],
    )
    if not usable:
        return Decision(None, None, "none", "no healthy edge", candidates=ctx.candidates({}))

    chosen: tuple[str, Rule, str] | None = None
    if coverage_zone is not None:
        pinned = _pinned_edge(ctx, coverage_zone, cache_key)
        if pinned is not None:
            return pinned
        chosen = _coverage_region(ctx, coverage_zone)
    if chosen is None and coords is not None:
        chosen = _nearest_region(ctx)
    if chosen is None:
        chosen = _region_without_coordinates(ctx, location)
    region, rule, why = chosen
    return _owner_in_region(ctx, region, rule, why, cache_key, spread_token)


def _pinned_edge(ctx: _Context, zone: CoverageZone, cache_key: str) -> Decision | None:
    """Rule 1, edge form: the zone's edge if it is healthy, else a note and ``None``."""
    if zone.edge is None:
        return None
    pinned = ctx.inventory.edge(zone.edge)
    if pinned is None or pinned.name not in ctx.usable:
        state = "not in the inventory" if pinned is None else "not healthy"
        ctx.notes.append(f"coverage zone {zone.label}: edge {zone.edge} is {state}")
        return None
    ranked: dict[str, tuple[float, int | None]] = {
        edge.name: (score, None) for edge, score in rendezvous_order(cache_key, ctx.inventory.in_region(pinned.region))
    }
    ranked[pinned.name] = (ranked[pinned.name][0], 0)
    return Decision(
        pinned,
        pinned.region,
        "coverage-edge",
        f"coverage zone {zone.label} pins edge {pinned.name}",
        owners=(pinned.name,),
        candidates=ctx.candidates(ranked),
    )


def _coverage_region(ctx: _Context, zone: CoverageZone) -> tuple[str, Rule, str] | None:
    """Rule 1, region form: the zone's region if it has a healthy edge."""
    if zone.region is None:
        return None
    if zone.region in ctx.regions_usable:
        return zone.region, "coverage-region", f"coverage zone {zone.label} → region {zone.region}"
    ctx.notes.append(f"coverage zone {zone.label}: region {zone.region} has no healthy edge")
    return None


def _nearest_region(ctx: _Context) -> tuple[str, Rule, str]:
    """Rule 2: a region is as near as its nearest healthy edge (distance + bias)."""
    best: dict[str, tuple[float, str]] = {}
    for edge in ctx.inventory.edges:
        if edge.name in ctx.usable:
            entry = (ctx.distance[edge.name], edge.name)
            if edge.region not in best or entry < best[edge.region]:
                best[edge.region] = entry
    region = min(best, key=lambda name: (best[name][0], name))
    km, via = best[region]
    return region, "distance", f"nearest healthy region {region} ({km:.0f} km to {via})"


def _region_without_coordinates(ctx: _Context, location: Location | None) -> tuple[str, Rule, str]:
    """Rule 3: country, continent, ``region_fallback``, inventory order."""
    preference = [region for region in _preference(ctx.inventory) if region in ctx.regions_usable]
    healthy = [edge for edge in ctx.inventory.edges if edge.name in ctx.usable]
    ctx.notes.append("no client coordinates")
    country = location.country if location is not None else None
    continent = location.continent if location is not None else None
    if country:
        matches = {edge.region for edge in healthy if edge.country == country}
        if matches:
            region = next(r for r in preference if r in matches)
            return region, "country", f"country {country} → region {region}"
        ctx.notes.append(f"no healthy edge in country {country}")
    if continent:
        matches = {edge.region for edge in healthy if edge.continent == continent}
        if matches:
            region = next(r for r in preference if r in matches)
            return region, "continent", f"continent {continent} → region {region}"
        ctx.notes.append(f"no healthy edge in continent {continent}")
    for region in ctx.inventory.region_fallback:
        if region in ctx.regions_usable:
            return region, "fallback", f"region_fallback → region {region}"
    region = next(r for r in ctx.inventory.regions() if r in ctx.regions_usable)
    return region, "inventory-order", f"first region with a healthy edge: {region}"


def _owner_in_region(
    ctx: _Context, region: str, rule: Rule, why: str, cache_key: str, spread_token: str | None
) -> Decision:
    """Rendezvous hashing over the region's healthy edges; ``spread_token`` picks among the top R."""
    scored = rendezvous_order(cache_key, ctx.inventory.in_region(region))
    healthy_ranked = [edge for edge, _ in scored if edge.name in ctx.usable]
    ranks = {edge.name: rank for rank, edge in enumerate(healthy_ranked)}
    ranked = {edge.name: (score, ranks.get(edge.name)) for edge, score in scored}
    owners = healthy_ranked[: ctx.inventory.replication]
    pick = 0 if spread_token is None or len(owners) == 1 else _hash64(cache_key, spread_token) % len(owners)
    owner_note = f"rendezvous owner {pick + 1} of {len(owners)} among {len(healthy_ranked)} healthy"
    return Decision(
        owners[pick],
        region,
        rule,
        "; ".join([*ctx.notes, why, owner_note]),
        owners=tuple(owner.name for owner in owners),
        candidates=ctx.candidates(ranked),
    )
