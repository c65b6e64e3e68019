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
from collections.abc import Callable, Mapping, Sequence
from dataclasses import FrozenInstanceError, dataclass
from typing import Any, Literal, Protocol

from lru import LRU

from edge.inventory import EdgeEntry, Inventory
from edge.router.coverage import CoverageZone

__all__ = [
    "EARTH_RADIUS_KM",
    "Candidate",
    "Decision",
    "Location",
    "Rule",
    "Selector",
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


class Decision:
    """The chosen edge (``None`` when nothing is healthy), why, and every candidate considered.

    Immutable, with the manners of the frozen dataclass it used to be (equality over every field,
    a repr, assignment raises ``FrozenInstanceError``).  ``candidates`` may be computed lazily:
    the fast path (:class:`Selector`) passes ``explain``, a function that produces them, and it
    runs on first access only — a redirect never needs them, the router's ``/route`` endpoint does.
    """

    __slots__ = ("_candidates", "_edge", "_explain", "_owners", "_reason", "_region", "_rule")
    __match_args__ = ("edge", "region", "rule", "reason", "owners", "candidates")

    _edge: EdgeEntry | None
    _region: str | None
    _rule: Rule
    _reason: str
    _owners: tuple[str, ...]
    _candidates: list[Candidate] | None
    _explain: Callable[[], list[Candidate]] | None

    def __init__(
        self,
        edge: EdgeEntry | None,
        region: str | None,
        rule: Rule,
        reason: str,
        owners: tuple[str, ...] = (),
        candidates: list[Candidate] | None = None,
        *,
        explain: Callable[[], list[Candidate]] | None = None,
    ) -> None:
        init = object.__setattr__
        init(self, "_edge", edge)
        init(self, "_region", region)
        init(self, "_rule", rule)
        init(self, "_reason", reason)
        init(self, "_owners", owners)
        init(self, "_candidates", [] if candidates is None and explain is None else candidates)
        init(self, "_explain", explain if candidates is None else None)

    @property
    def edge(self) -> EdgeEntry | None:
        return self._edge

    @property
    def region(self) -> str | None:
        return self._region

    @property
    def rule(self) -> Rule:
        return self._rule

    @property
    def reason(self) -> str:
        return self._reason

    @property
    def owners(self) -> tuple[str, ...]:
        return self._owners

    @property
    def candidates(self) -> list[Candidate]:
        found = self._candidates
        if found is None:
            assert self._explain is not None
            found = self._explain()
            object.__setattr__(self, "_candidates", found)
            object.__setattr__(self, "_explain", None)
        return found

    def __setattr__(self, name: str, value: object) -> None:
        raise FrozenInstanceError(f"cannot assign to field {name!r}")

    def __delattr__(self, name: str) -> None:
        raise FrozenInstanceError(f"cannot delete field {name!r}")

    def _fields(self) -> tuple[Any, ...]:
        return (self.edge, self.region, self.rule, self.reason, self.owners, self.candidates)

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        assert isinstance(other, Decision)
        return self._fields() == other._fields()

    __hash__ = None  # type: ignore[assignment]  # mutable-looking like the dataclass it replaced: a list inside

    def __repr__(self) -> str:
        return (
            f"Decision(edge={self.edge!r}, region={self.region!r}, rule={self.rule!r}, reason={self.reason!r}, "
            f"owners={self.owners!r}, candidates={self.candidates!r})"
        )

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


def shard_key(target: str) -> str:
    """What owners in a region are computed from — by the router and by the edges themselves
    (``edge.cluster``), so both agree: the request target (path and query), not the Host, which
    the router's redirect replaces by the edge's."""
    return target


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


# --- the fast path -------------------------------------------------------------------------------

_TWO_R = 2 * EARTH_RADIUS_KM  # the same product great_circle_km computes first
_HASH_SPAN = float(1 << 52)
_blake2b = hashlib.blake2b

# Region decisions remembered per selector, keyed by client coordinates or (country, continent).
REGION_MEMO_ENTRIES = 16384
# Rendezvous owners remembered per selector, keyed by (region, cache key), for keys up to this long.
OWNER_MEMO_ENTRIES = 32768
OWNER_MEMO_MAX_KEY = 512


@dataclass(frozen=True, slots=True)
class _Edge:
    """A usable edge with what the per-request arithmetic needs, precomputed once."""

    entry: EdgeEntry
    name: str
    region: str
    longitude: float
    phi: float  # radians(latitude)
    cos_phi: float
    bias_km: float
    weight: float
    hasher: Any  # BLAKE2b state after "name\x00": copy, feed the key, digest


@dataclass(frozen=True, slots=True)
class _Region:
    """Where a decision goes before the owner within the region is known."""

    name: str
    rule: Rule
    prefix: str  # the reason so far: notes and the rule's sentence, joined by "; "
    edges: tuple[_Edge, ...]  # the region's usable edges, inventory order
    single_reason: str  # the whole reason when the region has one usable edge


@dataclass(frozen=True, slots=True)
class _ZoneOutcome:
    """What a coverage zone decides on its own: a pinned edge, a region, or only notes."""

    zone: CoverageZone  # kept so that the id() key of the memo cannot be reused while cached
    pinned: _Edge | None
    pinned_reason: str
    region: _Region | None
    notes: tuple[str, ...]


class Selector:
    """:func:`select_edge` for one inventory and one health state, fast, with identical decisions.

    Built once per health change (the router keeps one and rebuilds it when its health map
    differs from the one the selector was made from).  Everything that depends only on the
    inventory and the health — the usable edges, each region's usable edges, the preference order,
    each edge's radians and cosine of latitude and its hash state after ``name + "\\x00"`` — is
    computed here once; the region step is remembered per client coordinates (or country and
    continent, or coverage zone) because it does not depend on the URL, and the rendezvous owners
    are remembered per (region, cache key) because popular URLs come back.  On a miss only the
    chosen region's usable edges are scored, and only when it has more than one.

    :meth:`choose` answers what a redirect needs (edge and rule); :meth:`decide` the whole
    :class:`Decision`, whose ``candidates`` are computed lazily — by :func:`select_edge` itself,
    on this selector's snapshot of the health — when somebody reads them.
    """

    def __init__(self, inventory: Inventory, health: Mapping[str, bool]) -> None:
        self.inventory = inventory
        # a private snapshot: later changes of ``health`` must not change this selector's answers
        self.health: dict[str, bool] = {edge.name: bool(health.get(edge.name, False)) for edge in inventory.edges}
        usable: list[_Edge] = []
        for edge in inventory.edges:
            if edge.enabled and health.get(edge.name, False):
                phi = math.radians(edge.latitude)
                usable.append(
                    _Edge(
                        entry=edge,
                        name=edge.name,
                        region=edge.region,
                        longitude=edge.longitude,
                        phi=phi,
                        cos_phi=math.cos(phi),
                        bias_km=edge.bias_km,
                        weight=edge.weight,
                        hasher=_blake2b((edge.name + "\x00").encode("utf-8", "surrogatepass"), digest_size=8),
                    )
                )
        self._usable = tuple(usable)
        self._by_name: dict[str, _Edge] = {}
        for item in usable:
            self._by_name.setdefault(item.name, item)
        self._known = {edge.name for edge in inventory.edges}
        self._region_edges: dict[str, tuple[_Edge, ...]] = {}
        for item in usable:
            self._region_edges[item.region] = (*self._region_edges.get(item.region, ()), item)
        self._preference = [region for region in _preference(inventory) if region in self._region_edges]
        self._fallback_region: tuple[str, Rule, str] | None = None
        for region in inventory.region_fallback:
            if region in self._region_edges:
                self._fallback_region = (region, "fallback", f"region_fallback → region {region}")
                break
        if self._fallback_region is None and usable:
            first = next(r for r in inventory.regions() if r in self._region_edges)
            self._fallback_region = (first, "inventory-order", f"first region with a healthy edge: {first}")
        self._replication = inventory.replication
        self._regions: dict[tuple[str, Rule, str], _Region] = {}
        self._near: Any = LRU(REGION_MEMO_ENTRIES)
        self._coarse: Any = LRU(REGION_MEMO_ENTRIES)
        self._zones: dict[int, _ZoneOutcome] = {}
        self._owner_memo: Any = LRU(OWNER_MEMO_ENTRIES)

    # --- the region step, remembered ------------------------------------------------------------

    def _region(self, name: str, rule: Rule, prefix: str) -> _Region:
        key = (name, rule, prefix)
        found = self._regions.get(key)
        if found is None:
            edges = self._region_edges[name]
            single = f"{prefix}; rendezvous owner 1 of 1 among 1 healthy"
            found = _Region(name, rule, prefix, edges, single)
            if len(self._regions) < REGION_MEMO_ENTRIES:
                self._regions[key] = found
        return found

    def _nearest(self, latitude: float, longitude: float) -> _Region:
        """Rule 2 with precomputed per-edge constants; the same arithmetic as :func:`great_circle_km`."""
        key = (latitude, longitude)
        found: _Region | None = self._near.get(key)
        if found is not None:
            return found
        phi1 = math.radians(latitude)
        cos_phi1 = math.cos(phi1)
        sin, radians = math.sin, math.radians
        best: dict[str, tuple[float, str]] = {}
        for edge in self._usable:
            dphi = edge.phi - phi1
            dlambda = radians(edge.longitude - longitude)
            a = sin(dphi / 2) ** 2 + cos_phi1 * edge.cos_phi * sin(dlambda / 2) ** 2
            a = min(1.0, max(0.0, a))
            entry = (_TWO_R * math.asin(math.sqrt(a)) + edge.bias_km, edge.name)
            current = best.get(edge.region)
            if current is None or entry < current:
                best[edge.region] = entry
        region = min(best, key=lambda name: (best[name][0], name))
        km, via = best[region]
        found = self._region(region, "distance", f"nearest healthy region {region} ({km:.0f} km to {via})")
        self._near[key] = found
        return found

    def _without_coordinates(self, country: str | None, continent: str | None) -> _Region:
        """Rule 3, remembered per (country, continent)."""
        key = (country, continent)
        found: _Region | None = self._coarse.get(key)
        if found is not None:
            return found
        notes = ["no client coordinates"]
        chosen: tuple[str, Rule, str] | None = None
        if country:
            matches = {edge.region for edge in self._usable if edge.entry.country == country}
            if matches:
                region = next(r for r in self._preference if r in matches)
                chosen = (region, "country", f"country {country} → region {region}")
            else:
                notes.append(f"no healthy edge in country {country}")
        if chosen is None and continent:
            matches = {edge.region for edge in self._usable if edge.entry.continent == continent}
            if matches:
                region = next(r for r in self._preference if r in matches)
                chosen = (region, "continent", f"continent {continent} → region {region}")
            else:
                notes.append(f"no healthy edge in continent {continent}")
        if chosen is None:
            assert self._fallback_region is not None
            chosen = self._fallback_region
        region, rule, why = chosen
        found = self._region(region, rule, "; ".join([*notes, why]))
        self._coarse[key] = found
        return found

    def _zone(self, zone: CoverageZone) -> _ZoneOutcome:
        """Rule 1 for one zone; the zone is kept in the memo entry, so its id() stays its own."""
        found = self._zones.get(id(zone))
        if found is not None and found.zone is zone:
            return found
        label = zone.label
        notes: list[str] = []
        pinned: _Edge | None = None
        pinned_reason = ""
        region: _Region | None = None
        if zone.edge is not None:
            pinned = self._by_name.get(zone.edge)
            if pinned is None:
                state = "not in the inventory" if zone.edge not in self._known else "not healthy"
                notes.append(f"coverage zone {label}: edge {zone.edge} is {state}")
            else:
                pinned_reason = f"coverage zone {label} pins edge {pinned.name}"
        if pinned is None and zone.region is not None:
            if zone.region in self._region_edges:
                # the notes (if any) are put in front by the caller, as for every other rule
                region = self._region(zone.region, "coverage-region", f"coverage zone {label} → region {zone.region}")
            else:
                notes.append(f"coverage zone {label}: region {zone.region} has no healthy edge")
        found = _ZoneOutcome(zone, pinned, pinned_reason, region, tuple(notes))
        if len(self._zones) >= REGION_MEMO_ENTRIES:
            self._zones.clear()
        self._zones[id(zone)] = found
        return found

    # --- one request -------------------------------------------------------------------------------

    def choose(
        self,
        location: Location | None,
        cache_key: str,
        coverage_zone: CoverageZone | None = None,
        spread_token: str | None = None,
    ) -> tuple[EdgeEntry, Rule] | None:
        """Only what a redirect needs: the edge and the rule (``None``: no healthy edge)."""
        if not self._usable:
            return None
        if coverage_zone is not None:
            outcome = self._zone(coverage_zone)
            if outcome.pinned is not None:
                return outcome.pinned.entry, "coverage-edge"
            region = outcome.region or self._geo_region(location)
        else:
            region = self._geo_region(location)
        edges = region.edges
        if len(edges) == 1:
            return edges[0].entry, region.rule
        owners, pick = self._owners(region, cache_key, spread_token)
        return owners[pick].entry, region.rule

    def decide(
        self,
        location: Location | None,
        cache_key: str,
        coverage_zone: CoverageZone | None = None,
        spread_token: str | None = None,
    ) -> Decision:
        """The same :class:`Decision` as :func:`select_edge`, its candidates computed when first read."""
        inventory, health = self.inventory, self.health

        def explain() -> list[Candidate]:
            return select_edge(inventory, health, location, cache_key, coverage_zone, spread_token).candidates

        if not self._usable:
            return Decision(None, None, "none", "no healthy edge", explain=explain)
        notes: tuple[str, ...] = ()
        region: _Region | None = None
        if coverage_zone is not None:
            outcome = self._zone(coverage_zone)
            pinned = outcome.pinned
            if pinned is not None:
                return Decision(
                    pinned.entry, pinned.region, "coverage-edge", outcome.pinned_reason, (pinned.name,), explain=explain
                )
            region = outcome.region
            notes = outcome.notes
        if region is None:
            region = self._geo_region(location)
        edges = region.edges
        if len(edges) == 1:
            owners: tuple[_Edge, ...] = edges
            pick = 0
            reason = region.single_reason
        else:
            owners, pick = self._owners(region, cache_key, spread_token)
            reason = f"{region.prefix}; rendezvous owner {pick + 1} of {len(owners)} among {len(edges)} healthy"
        if notes:
            reason = "; ".join(notes) + "; " + reason
        names = tuple(edge.name for edge in owners)
        return Decision(owners[pick].entry, region.name, region.rule, reason, names, explain=explain)

    def _geo_region(self, location: Location | None) -> _Region:
        """Rules 2 and 3: by coordinates, else by country and continent."""
        if location is None:
            return self._without_coordinates(None, None)
        latitude, longitude = location.latitude, location.longitude
        if latitude is not None and longitude is not None:
            return self._nearest(latitude, longitude)
        return self._without_coordinates(location.country, location.continent)

    def _owners(self, region: _Region, cache_key: str, spread_token: str | None) -> tuple[tuple[_Edge, ...], int]:
        """The top owners of ``cache_key`` in a region with several usable edges, and which one serves.

        The owners are remembered per (region, key) for keys up to :data:`OWNER_MEMO_MAX_KEY`
        characters: popular URLs come back again and again.
        """
        if len(cache_key) <= OWNER_MEMO_MAX_KEY:
            memo_key = (region.name, cache_key)
            owners: tuple[_Edge, ...] | None = self._owner_memo.get(memo_key)
            if owners is None:
                owners = self._owner_memo[memo_key] = self._rank(region.edges, cache_key)
        else:
            owners = self._rank(region.edges, cache_key)
        count = len(owners)
        pick = 0 if spread_token is None or count == 1 else _hash64(cache_key, spread_token) % count
        return owners, pick

    def _rank(self, edges: tuple[_Edge, ...], cache_key: str) -> tuple[_Edge, ...]:
        """Weighted rendezvous hashing over usable edges, scored as :func:`hrw_score` scores: top R."""
        key = cache_key.encode("utf-8", "surrogatepass")
        log = math.log
        scored: list[tuple[float, _Edge]] = []
        for edge in edges:
            state = edge.hasher.copy()
            state.update(key)
            h = ((int.from_bytes(state.digest(), "big") >> 12) + 0.5) / _HASH_SPAN
            scored.append((-edge.weight / log(h), edge))
        if self._replication == 1:
            best_score, best = scored[0]
            for score, edge in scored[1:]:
                if score > best_score or (score == best_score and edge.name < best.name):
                    best_score, best = score, edge
            return (best,)
        scored.sort(key=lambda pair: (-pair[0], pair[1].name))
        return tuple(edge for _, edge in scored[: self._replication])
