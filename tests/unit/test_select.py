"""Edge selection: nearest healthy region, fallbacks for every kind of miss, rendezvous ownership."""

from __future__ import annotations

import copy
import ipaddress
import json
import math
import tomllib
from collections import Counter
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge.inventory import EdgeEntry, Inventory, parse_inventory
from edge.router.coverage import CoverageZone
from edge.router.geo import GeoResult
from edge.router.select import (
    EARTH_RADIUS_KM,
    great_circle_km,
    hrw_score,
    rendezvous_order,
    select_edge,
)
from tests.unit.test_inventory import THREE_REGION_TOML, three_region

ALL = ("us-east-1", "us-east-2", "eu-west-1", "eu-west-2", "ap-southeast-1")
KEY = "demo.example/img/logo.png?v=3"


def healthy(*down: str) -> dict[str, bool]:
    return {name: name not in down for name in ALL}


def at(lat: float, lon: float, country: str | None = None, continent: str | None = None) -> GeoResult:
    return GeoResult(True, lat, lon, 10, country, continent, None, "city", "test")


def coarse(country: str | None, continent: str | None) -> GeoResult:
    source = "country" if country else ("continent" if continent else "none")
    return GeoResult(True, None, None, None, country, continent, None, source, "test")  # type: ignore[arg-type]


def inventory_with(edges: dict[str, dict[str, Any]] | None = None, **top: Any) -> Inventory:
    """The three-region inventory with per-edge and top-level changes, re-validated."""
    data = copy.deepcopy(tomllib.loads(THREE_REGION_TOML))
    for entry in data["edges"]:
        entry.update((edges or {}).get(entry["name"], {}))
    data.update(top)
    return parse_inventory(data)


LONDON = at(51.5074, -0.1278, "GB", "EU")
TOKYO = at(35.6762, 139.6503, "JP", "AS")
SEATTLE = at(47.6062, -122.3321, "US", "NA")
SAO_PAULO = at(-23.5505, -46.6333, "BR", "SA")


# --- great-circle distance -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("a", "b", "km"),
    [
        ((0.0, 0.0), (0.0, 0.0), 0.0),
        ((51.5074, -0.1278), (48.8566, 2.3522), 343.5),  # London-Paris
        ((53.35, -6.26), (1.35, 103.82), 11199.0),  # Dublin-Singapore
        ((38.9, -77.0), (53.35, -6.26), 5440.0),  # Washington-Dublin
        ((90.0, 0.0), (-90.0, 0.0), math.pi * EARTH_RADIUS_KM),  # pole to pole
        ((0.0, 0.0), (0.0, 180.0), math.pi * EARTH_RADIUS_KM),  # antipodes
        ((0.0, 179.5), (0.0, -179.5), 111.2),  # across the date line
    ],
)
def test_great_circle_km(a: tuple[float, float], b: tuple[float, float], km: float) -> None:
    assert great_circle_km(*a, *b) == pytest.approx(km, rel=0.005, abs=0.5)


_lat = st.floats(min_value=-90, max_value=90)
_lon = st.floats(min_value=-180, max_value=180)


@given(_lat, _lon, _lat, _lon)
def test_great_circle_is_a_bounded_symmetric_distance(lat1: float, lon1: float, lat2: float, lon2: float) -> None:
    d = great_circle_km(lat1, lon1, lat2, lon2)
    assert 0.0 <= d <= math.pi * EARTH_RADIUS_KM + 1e-6
    assert d == pytest.approx(great_circle_km(lat2, lon2, lat1, lon1), abs=1e-6)


# --- which region ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("inventory", "health", "location", "region", "rule", "reason"),
    [
        # nearest healthy region by distance
        (three_region(), healthy(), LONDON, "eu-west", "distance", "nearest healthy region eu-west"),
        (three_region(), healthy(), TOKYO, "ap-southeast", "distance", "(5311 km to ap-southeast-1)"),
        (three_region(), healthy(), SEATTLE, "us-east", "distance", "us-east"),
        (three_region(), healthy(), SAO_PAULO, "us-east", "distance", "us-east"),
        # health changes move traffic to the next-nearest region
        (three_region(), healthy("ap-southeast-1"), TOKYO, "eu-west", "distance", "(9585 km to eu-west-1)"),
        (three_region(), healthy("eu-west-1", "eu-west-2"), LONDON, "us-east", "distance", "us-east"),
        # a region is as near as its nearest *healthy* edge
        (three_region(), healthy("eu-west-1"), LONDON, "eu-west", "distance", "to eu-west-2"),
        # disabled edges never count, even when reported healthy
        (inventory_with({"ap-southeast-1": {"enabled": False}}), healthy(), TOKYO, "eu-west", "distance", "eu-west"),
        # bias pushes traffic away ...
        (
            inventory_with({"eu-west-1": {"bias_km": 6000}, "eu-west-2": {"bias_km": 6000}}),
            healthy(), LONDON, "us-east", "distance", "(5896 km to us-east-1)",
        ),
        # ... and a negative bias pulls it in
        (
            inventory_with({"us-east-1": {"bias_km": -6000}}),
            healthy(), TOKYO, "us-east", "distance", "(4909 km to us-east-1)",
        ),
        # bias on one edge of a region: the region is measured by its other edge
        (inventory_with({"eu-west-1": {"bias_km": 9000}}), healthy(), LONDON, "eu-west", "distance", "to eu-west-2"),
    ],
)
def test_region_by_distance_health_and_bias(
    inventory: Inventory, health: dict[str, bool], location: GeoResult, region: str, rule: str, reason: str
) -> None:
    decision = select_edge(inventory, health, location, KEY)
    assert decision.region == region
    assert decision.rule == rule
    assert reason in decision.reason
    assert decision.edge is not None
    assert decision.edge.region == region
    assert health[decision.edge.name]
    assert decision.edge.enabled


@pytest.mark.parametrize(
    ("inventory", "health", "location", "region", "rule", "notes"),
    [
        # no lookup at all (private address, database miss): region_fallback order
        (three_region(), healthy(), None, "eu-west", "fallback", ["no client coordinates"]),
        (three_region(), healthy(), GeoResult.unknown("miss"), "eu-west", "fallback", []),
        # fallback skips regions without a healthy edge
        (three_region(), healthy("eu-west-1", "eu-west-2"), None, "us-east", "fallback", []),
        # country only (Country database, or a centroid whose coordinates were dropped)
        (three_region(), healthy(), coarse("US", "NA"), "us-east", "country", []),
        (three_region(), healthy(), coarse("SG", "AS"), "ap-southeast", "country", []),
        # country has no edge → continent
        (three_region(), healthy(), coarse("RU", "EU"), "eu-west", "continent", ["no healthy edge in country RU"]),
        (three_region(), healthy(), coarse("JP", "AS"), "ap-southeast", "continent", []),
        # the country's edges are down → continent, then fallback
        (
            three_region(), healthy("eu-west-1", "eu-west-2"), coarse("IE", "EU"), "us-east", "fallback",
            ["no healthy edge in country IE", "no healthy edge in continent EU"],
        ),
        # continent only
        (three_region(), healthy(), coarse(None, "AS"), "ap-southeast", "continent", []),
        (three_region(), healthy(), coarse(None, "AF"), "eu-west", "fallback", ["no healthy edge in continent AF"]),
        # no region_fallback: inventory order
        (inventory_with(region_fallback=[]), healthy(), None, "us-east", "inventory-order", []),
        (inventory_with(region_fallback=[]), healthy("us-east-1", "us-east-2"), None, "eu-west", "inventory-order", []),
        # several regions share a country: preference order (fallback list) decides
        (
            inventory_with({"ap-southeast-1": {"country": "IE"}}, region_fallback=["ap-southeast"]),
            healthy(), coarse("IE", "EU"), "ap-southeast", "country", [],
        ),
        (
            inventory_with({"ap-southeast-1": {"country": "IE"}}),
            healthy(), coarse("IE", "EU"), "eu-west", "country", [],
        ),
    ],
)
def test_fallbacks_for_each_kind_of_miss(
    inventory: Inventory,
    health: dict[str, bool],
    location: GeoResult | None,
    region: str,
    rule: str,
    notes: list[str],
) -> None:
    decision = select_edge(inventory, health, location, KEY)
    assert (decision.region, decision.rule) == (region, rule)
    assert decision.edge is not None
    assert decision.edge.region == region
    for note in notes:
        assert note in decision.reason
    assert all(candidate.distance_km is None for candidate in decision.candidates)


@pytest.mark.parametrize(
    ("health", "inventory"),
    [
        (healthy(*ALL), three_region()),
        ({}, three_region()),  # an edge the health map does not mention is not healthy
        (healthy(), inventory_with({name: {"enabled": False} for name in ALL})),
    ],
)
def test_no_healthy_edge(health: dict[str, bool], inventory: Inventory) -> None:
    decision = select_edge(inventory, health, LONDON, KEY)
    assert decision.edge is None
    assert decision.region is None
    assert decision.rule == "none"
    assert decision.reason == "no healthy edge"
    assert len(decision.candidates) == len(ALL)
    assert decision.to_dict()["edge"] is None


def test_distance_ties_go_to_the_region_name_first_in_order() -> None:
    edges = [
        {"name": name, "region": region, "latitude": 10.0, "longitude": 10.0,
         "url": "http://x", "admin_url": "http://x:1"}
        for name, region in (("n1", "zulu"), ("n2", "alpha"), ("n3", "mike"))
    ]
    inventory = parse_inventory({"edges": edges})
    decision = select_edge(inventory, {"n1": True, "n2": True, "n3": True}, at(0.0, 0.0), KEY)
    assert decision.region == "alpha"


# --- coverage zones --------------------------------------------------------------------------------


def zone(network: str, *, edge: str | None = None, region: str | None = None) -> CoverageZone:
    return CoverageZone(network=ipaddress.ip_network(network), edge=edge, region=region)


@pytest.mark.parametrize(
    ("coverage_zone", "health", "edge", "region", "rule", "note"),
    [
        # a zone pins an edge far from the client
        (zone("10.0.0.0/8", edge="ap-southeast-1"), healthy(), "ap-southeast-1", "ap-southeast", "coverage-edge",
         "coverage zone 10.0.0.0/8 pins edge ap-southeast-1"),
        # the pinned edge is down: normal rules (distance from London)
        (zone("10.0.0.0/8", edge="ap-southeast-1"), healthy("ap-southeast-1"), None, "eu-west", "distance",
         "coverage zone 10.0.0.0/8: edge ap-southeast-1 is not healthy"),
        (zone("10.0.0.0/8", edge="ghost"), healthy(), None, "eu-west", "distance",
         "edge ghost is not in the inventory"),
        # a zone names a region: rendezvous hashing inside it
        (zone("10.0.0.0/8", region="us-east"), healthy(), None, "us-east", "coverage-region",
         "coverage zone 10.0.0.0/8 → region us-east"),
        (zone("10.0.0.0/8", region="us-east"), healthy("us-east-1"), "us-east-2", "us-east", "coverage-region", ""),
        (zone("10.0.0.0/8", region="us-east"), healthy("us-east-1", "us-east-2"), None, "eu-west", "distance",
         "region us-east has no healthy edge"),
    ],
)
def test_coverage_zone_wins_when_healthy(
    coverage_zone: CoverageZone, health: dict[str, bool], edge: str | None, region: str, rule: str, note: str
) -> None:
    decision = select_edge(three_region(), health, LONDON, KEY, coverage_zone)
    assert decision.region == region
    assert decision.rule == rule
    assert note in decision.reason
    assert decision.edge is not None
    if edge is not None:
        assert decision.edge.name == edge


def test_coverage_zone_applies_without_a_location() -> None:
    decision = select_edge(three_region(), healthy(), None, KEY, zone("10.0.0.0/8", region="ap-southeast"))
    assert (decision.region, decision.rule) == ("ap-southeast", "coverage-region")


# --- which edge in the region: rendezvous hashing -------------------------------------------------------


def test_owner_is_the_top_rendezvous_score_among_healthy_edges() -> None:
    inventory = three_region()
    region_edges = inventory.in_region("eu-west")
    for index in range(50):
        key = f"host/obj/{index}"
        ranked = [edge.name for edge, _ in rendezvous_order(key, region_edges)]
        assert select_edge(inventory, healthy(), LONDON, key).edge.name == ranked[0]  # type: ignore[union-attr]
        # the primary is down: the next-ranked owner takes over
        down = select_edge(inventory, healthy(ranked[0]), LONDON, key)
        assert down.edge.name == ranked[1]  # type: ignore[union-attr]


def test_candidates_and_json_view() -> None:
    decision = select_edge(three_region(), healthy("us-east-2"), LONDON, KEY)
    view = decision.to_dict()
    json.dumps(view)  # JSON-friendly
    assert view["edge"] == decision.edge.name  # type: ignore[union-attr]
    assert view["url"] == decision.edge.url  # type: ignore[union-attr]
    assert view["rule"] == "distance"
    by_name = {candidate["name"]: candidate for candidate in view["candidates"]}
    assert set(by_name) == set(ALL)
    assert by_name["us-east-2"]["healthy"] is False
    assert by_name["eu-west-1"]["distance_km"] == pytest.approx(463, abs=5)
    # scores and ranks only for the chosen region; ranks 0 and 1 over its two healthy edges
    assert {by_name[name]["owner_rank"] for name in ("eu-west-1", "eu-west-2")} == {0, 1}
    assert by_name["us-east-1"]["score"] is None
    assert by_name["ap-southeast-1"]["owner_rank"] is None
    assert view["owners"] == [decision.edge.name]  # type: ignore[union-attr]


def test_replication_spreads_a_key_over_the_top_owners_deterministically() -> None:
    inventory = inventory_with(replication=2)
    ranked = [edge.name for edge, _ in rendezvous_order(KEY, inventory.in_region("eu-west"))]
    tokens = [f"198.51.100.{index}" for index in range(64)]
    chosen = [select_edge(inventory, healthy(), LONDON, KEY, spread_token=token) for token in tokens]
    assert all(decision.owners == tuple(ranked[:2]) for decision in chosen)
    assert {decision.edge.name for decision in chosen} == set(ranked[:2])  # type: ignore[union-attr]
    again = [select_edge(inventory, healthy(), LONDON, KEY, spread_token=token) for token in tokens]
    assert [d.edge for d in again] == [d.edge for d in chosen]
    # without a token the primary owner serves
    assert select_edge(inventory, healthy(), LONDON, KEY).edge.name == ranked[0]  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("replication", "down", "owners"),
    [
        (3, (), 2),  # more replicas than edges: every healthy edge
        (2, ("eu-west-1",), 1),  # an owner is down: the survivors
        (1, (), 1),
    ],
)
def test_replication_owner_count(replication: int, down: tuple[str, ...], owners: int) -> None:
    inventory = inventory_with(replication=replication)
    decision = select_edge(inventory, healthy(*down), LONDON, KEY, spread_token="203.0.113.9")
    assert len(decision.owners) == owners
    assert decision.edge is not None
    assert decision.edge.name in decision.owners
    assert not set(decision.owners) & set(down)


def edges_named(names: list[str], weights: list[float] | None = None) -> list[EdgeEntry]:
    weights = weights or [1.0] * len(names)
    return [
        EdgeEntry(name=name, region="r", latitude=0, longitude=0, url="http://x", admin_url="http://x:1", weight=weight)
        for name, weight in zip(names, weights, strict=True)
    ]


def owner(key: str, edges: list[EdgeEntry]) -> str:
    return rendezvous_order(key, edges)[0][0].name


_names = st.lists(st.from_regex(r"[a-z][a-z0-9-]{0,6}", fullmatch=True), min_size=1, max_size=7, unique=True)
_keys = st.lists(st.text(max_size=30), min_size=1, max_size=40)
_weights = st.floats(min_value=0.1, max_value=10.0)


@settings(max_examples=100, deadline=None)
@given(names=_names, newcomer=st.from_regex(r"[A-Z][a-z]{0,5}", fullmatch=True), keys=_keys, data=st.data())
def test_adding_an_edge_moves_only_keys_it_now_owns(
    names: list[str], newcomer: str, keys: list[str], data: st.DataObject
) -> None:
    weights = data.draw(st.lists(_weights, min_size=len(names) + 1, max_size=len(names) + 1))
    before = edges_named(names, weights[:-1])
    after = [*before, *edges_named([newcomer], weights[-1:])]
    for key in keys:
        assert owner(key, after) in (owner(key, before), newcomer)


@settings(max_examples=100, deadline=None)
@given(names=_names.filter(lambda n: len(n) >= 2), keys=_keys, data=st.data())
def test_removing_an_edge_moves_only_its_keys(names: list[str], keys: list[str], data: st.DataObject) -> None:
    weights = data.draw(st.lists(_weights, min_size=len(names), max_size=len(names)))
    edges = edges_named(names, weights)
    gone = data.draw(st.sampled_from(names))
    remaining = [edge for edge in edges if edge.name != gone]
    for key in keys:
        previous = owner(key, edges)
        if previous != gone:
            assert owner(key, remaining) == previous
        else:
            assert owner(key, remaining) == rendezvous_order(key, edges)[1][0].name  # the next in line


@settings(max_examples=100, deadline=None)
@given(names=_names, keys=_keys, data=st.data())
def test_ownership_is_stable_and_order_independent(names: list[str], keys: list[str], data: st.DataObject) -> None:
    edges = edges_named(names)
    shuffled = data.draw(st.permutations(edges))
    for key in keys:
        assert owner(key, edges) == owner(key, list(shuffled)) == owner(key, edges_named(names))


@settings(max_examples=50, deadline=None)
@given(keys=_keys, down=st.sampled_from(["us-east-1", "us-east-2"]))
def test_health_flap_moves_only_the_down_edges_keys(keys: list[str], down: str) -> None:
    inventory = three_region()
    where = at(38.9, -77.0)
    for key in keys:
        before = select_edge(inventory, healthy(), where, key).edge
        during = select_edge(inventory, healthy(down), where, key).edge
        after = select_edge(inventory, healthy(), where, key).edge
        assert before == after
        if before is not None and before.name != down:
            assert during == before


@pytest.mark.parametrize(
    "weights",
    [[1.0, 1.0], [1.0, 2.0], [1.0, 2.0, 3.0], [0.5, 1.0, 1.0, 4.0], [1.0] * 5],
)
def test_distribution_is_roughly_proportional_to_weight(weights: list[float]) -> None:
    edges = edges_named([f"edge-{index}" for index in range(len(weights))], weights)
    counts = Counter(owner(f"cdn.example/assets/{index}.js", edges) for index in range(10_000))
    total = sum(weights)
    for edge, weight in zip(edges, weights, strict=True):
        expected = 10_000 * weight / total
        assert abs(counts[edge.name] - expected) <= 0.15 * expected + 50, (edge.name, counts, expected)


@given(key=st.text(), weight=_weights)
def test_scores_are_positive_and_finite(key: str, weight: float) -> None:
    edge = edges_named(["e"], [weight])[0]
    score = hrw_score(key, edge)
    assert 0.0 < score < math.inf


def test_surrogates_in_keys_do_not_break_hashing() -> None:
    edge = edges_named(["e"])[0]
    assert hrw_score("/bad\udcff", edge) > 0
