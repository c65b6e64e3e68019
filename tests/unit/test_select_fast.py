"""The router's fast paths answer exactly as the full paths.

- :class:`Selector` (per health state, memoised) decides as :func:`select_edge`;
- :class:`GeoLocator` reading geoip2's raw records answers as it does through geoip2's models;
- :func:`parse_address` reads dotted quads itself exactly as ``ipaddress`` would.
"""

from __future__ import annotations

import copy
import dataclasses
import ipaddress
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from bench.router_bench import client_addresses
from edge.inventory import EdgeEntry, Inventory
from edge.router.clientip import parse_address
from edge.router.config import DEFAULT_GEODB
from edge.router.coverage import CoverageZone
from edge.router.geo import GeoLocator, GeoResult, IPAddress, _plain_record
from edge.router.select import Candidate, Decision, Selector, select_edge
from tests.unit.test_inventory import three_region

REGIONS = ("r-a", "r-b", "r-c")
COUNTRIES = ("US", "IE", "SG", "DE", "BR")
CONTINENTS = ("NA", "EU", "AS", "SA", "AF")
# A few fixed points so that clients and edges share coordinates: exact ties and zero distances.
POINTS = ((0.0, 0.0), (10.0, 10.0), (53.35, -6.26), (-33.9, 151.2), (90.0, 0.0), (0.0, 180.0), (0.0, -180.0))

_latitude = st.one_of(st.sampled_from([p[0] for p in POINTS]), st.floats(min_value=-90, max_value=90))
_longitude = st.one_of(st.sampled_from([p[1] for p in POINTS]), st.floats(min_value=-180, max_value=180))


@st.composite
def inventories(draw: st.DrawFn) -> Inventory:
    names = draw(st.lists(st.from_regex(r"[a-z][a-z0-9-]{0,4}", fullmatch=True), min_size=1, max_size=8, unique=True))
    edges = []
    for name in names:
        point = draw(st.one_of(st.sampled_from(POINTS), st.tuples(_latitude, _longitude)))
        edges.append(
            EdgeEntry(
                name=name,
                region=draw(st.sampled_from(REGIONS)),
                latitude=point[0],
                longitude=point[1],
                url=f"http://{name}.example",
                admin_url=f"http://{name}.example:9000",
                weight=draw(st.sampled_from([1.0, 2.0, 0.5, 3.7])),
                bias_km=draw(st.sampled_from([0.0, 0.0, 100.0, -250.0, 6000.0])),
                enabled=draw(st.sampled_from([True, True, True, False])),
                country=draw(st.none() | st.sampled_from(COUNTRIES)),
                continent=draw(st.none() | st.sampled_from(CONTINENTS)),
            )
        )
    regions = list(dict.fromkeys(edge.region for edge in edges))
    fallback = draw(st.lists(st.sampled_from(regions), max_size=3))
    return Inventory(edges=edges, region_fallback=fallback, replication=draw(st.integers(1, 4)))


def locations() -> st.SearchStrategy[GeoResult | None]:
    city = st.builds(
        lambda point, country, continent: GeoResult(
            True, point[0], point[1], 10, country, continent, None, "city", "t"
        ),
        st.one_of(st.sampled_from(POINTS), st.tuples(_latitude, _longitude)),
        st.none() | st.sampled_from(COUNTRIES),
        st.none() | st.sampled_from(CONTINENTS),
    )
    coarse = st.builds(
        lambda country, continent: GeoResult(True, None, None, None, country, continent, None, "country", "t"),
        st.none() | st.just("") | st.sampled_from(COUNTRIES),
        st.none() | st.sampled_from(CONTINENTS),
    )
    return st.none() | st.just(GeoResult.unknown("miss")) | city | coarse


def zones(names: list[str]) -> st.SearchStrategy[CoverageZone | None]:
    by_edge = st.builds(
        lambda edge: CoverageZone(network=ipaddress.ip_network("10.0.0.0/8"), edge=edge),
        st.sampled_from([*names, "ghost"]),
    )
    by_region = st.builds(
        lambda region, label: CoverageZone(network=ipaddress.ip_network("10.1.0.0/16"), region=region, name=label),
        st.sampled_from([*REGIONS, "nowhere"]),
        st.none() | st.just("office"),
    )
    return st.none() | by_edge | by_region


_keys = st.one_of(st.text(max_size=40), st.sampled_from(["cdn.example/a.png", "h/\udcff", "", "x" * 300]))
_tokens = st.none() | st.sampled_from(["198.51.100.7", "192.0.2.1", "2001:db8::1"]) | st.text(max_size=10)


def assert_same(fast: Decision, full: Decision) -> None:
    assert fast.edge == full.edge
    assert fast.region == full.region
    assert fast.rule == full.rule
    assert fast.reason == full.reason
    assert fast.owners == full.owners


@settings(max_examples=400, deadline=None)
@given(inventory=inventories(), data=st.data())
def test_fast_path_picks_what_the_full_path_picks(inventory: Inventory, data: st.DataObject) -> None:
    names = [edge.name for edge in inventory.edges]
    # mostly healthy; some down, some not mentioned at all (which counts as down)
    states = data.draw(
        st.lists(st.sampled_from([True, True, True, False, None]), min_size=len(names), max_size=len(names))
    )
    health = {name: state for name, state in zip(names, states, strict=True) if state is not None}
    selector = Selector(inventory, health)
    requests = data.draw(
        st.lists(st.tuples(locations(), _keys, zones(names), _tokens), min_size=1, max_size=8),
    )
    for _ in range(2):  # the second time round the selector answers from its memos
        for location, key, zone, token in requests:
            full = select_edge(inventory, health, location, key, zone, token)
            fast = selector.decide(location, key, zone, token)
            assert_same(fast, full)
            chosen = selector.choose(location, key, zone, token)
            assert chosen == (None if full.edge is None else (full.edge, full.rule))
    location, key, zone, token = requests[0]
    full = select_edge(inventory, health, location, key, zone, token)
    fast = selector.decide(location, key, zone, token)
    assert fast.candidates == full.candidates
    assert fast == full
    assert fast.to_dict() == full.to_dict()


@settings(max_examples=200, deadline=None)
@given(
    latitude=_latitude,
    longitude=_longitude,
    down=st.sets(st.sampled_from(["us-east-1", "us-east-2", "eu-west-1", "eu-west-2", "ap-southeast-1"])),
    key=_keys,
    token=_tokens,
)
def test_fast_path_on_the_demo_inventory(
    latitude: float, longitude: float, down: set[str], key: str, token: str | None
) -> None:
    inventory = three_region()
    health = {edge.name: edge.name not in down for edge in inventory.edges}
    location = GeoResult(True, latitude, longitude, 20, None, None, None, "city", "t")
    fast = Selector(inventory, health).decide(location, key, None, token)
    full = select_edge(inventory, health, location, key, None, token)
    assert_same(fast, full)
    assert fast.candidates == full.candidates


def test_selector_keeps_its_own_snapshot_of_health() -> None:
    inventory = three_region()
    health = {edge.name: True for edge in inventory.edges}
    london = GeoResult(True, 51.5, -0.12, 10, "GB", "EU", None, "city", "t")
    selector = Selector(inventory, health)
    before = selector.decide(london, "k")
    health["eu-west-1"] = health["eu-west-2"] = False
    after = selector.decide(london, "k")
    assert before.region == after.region == "eu-west"
    assert after.candidates == select_edge(inventory, selector.health, london, "k").candidates
    assert Selector(inventory, health).decide(london, "k").region == "us-east"


def test_candidates_are_computed_only_when_read(monkeypatch: pytest.MonkeyPatch) -> None:
    inventory = three_region()
    health = {edge.name: True for edge in inventory.edges}
    calls: list[Any] = []
    original = select_edge

    def counting(*args: Any) -> Decision:
        calls.append(args)
        return original(*args)

    monkeypatch.setattr("edge.router.select.select_edge", counting)
    decision = Selector(inventory, health).decide(None, "k", None, "192.0.2.1")
    assert calls == []
    assert len(decision.candidates) == len(inventory.edges)
    assert decision.candidates is decision.candidates  # computed once
    assert len(calls) == 1


def test_decision_keeps_its_dataclass_manners() -> None:
    candidate = Candidate("e", "r", True, True, 1.0, 0.5, 0)
    decision = Decision(None, None, "none", "no healthy edge")
    assert decision.candidates == []
    assert decision.owners == ()
    given = Decision(None, "r", "distance", "why", ("e",), [candidate])
    assert given.candidates == [candidate]
    assert given == Decision(None, "r", "distance", "why", ("e",), candidates=[candidate])
    assert given != decision
    assert "candidates=[Candidate(" in repr(given)
    with pytest.raises(dataclasses.FrozenInstanceError):
        given.reason = "other"  # type: ignore[misc]  # read-only, as in a frozen dataclass
    with pytest.raises(TypeError):
        hash(given)


# --- the geo lookup's fast path: geoip2's raw record instead of its model objects ------------------


class FakeRawReader:
    """Stands in for the ``maxminddb`` reader inside geoip2's: the same record for every address."""

    def __init__(self, record: object) -> None:
        self.record = record

    def get(self, address: object) -> object:
        return copy.deepcopy(self.record)

    def get_with_prefix_len(self, address: object) -> tuple[object, int]:
        return copy.deepcopy(self.record), 24


def model_way(locator: GeoLocator, address: IPAddress) -> GeoResult:
    """What ``locate`` answers when it builds geoip2's models (the way before the fast path)."""
    raw = locator._raw
    locator._raw = None
    try:
        return locator.locate(address)
    finally:
        locator._raw = raw


def test_geo_fast_path_matches_geoip2_models_on_the_demo_database() -> None:
    addresses = [ipaddress.ip_address(text) for text in client_addresses(2000, seed=11)]
    addresses += [ipaddress.ip_address(text) for text in ("::ffff:203.0.113.9", "2001:db8:1::5", "0.1.2.3", "::")]
    with GeoLocator(DEFAULT_GEODB) as locator:
        assert locator._raw is not None  # this geoip2 has the reader the fast path reads
        records = [record for record in map(locator._raw.get, addresses) if record is not None]
        assert len(records) > 1000
        assert all(_plain_record(record, city=True) for record in records)  # real records take the fast path
        for address in addresses:
            assert locator.locate(address) == model_way(locator, address)
    with GeoLocator(DEFAULT_GEODB, skip_networks=[ipaddress.ip_network("198.51.100.128/25")]) as locator:
        for address in addresses:
            assert locator.locate(address) == model_way(locator, address)


_odd = st.one_of(
    st.none(), st.just(""), st.just(0), st.just([]), st.text(max_size=3), st.lists(st.integers(), max_size=2)
)
_names = st.dictionaries(st.sampled_from(["en", "de"]), st.sampled_from(["", "Dublin", "Köln"]), max_size=2)
_good = st.fixed_dictionaries(
    {},
    optional={
        "iso_code": st.none() | st.sampled_from(["", "US", "DE"]),
        "code": st.none() | st.sampled_from(["", "EU", "NA"]),
        "names": st.one_of(_names, st.none(), st.just({})),
        "latitude": st.floats(-90, 90),
        "longitude": st.floats(-180, 180),
        "accuracy_radius": st.none() | st.integers(0, 2000),
        "geoname_id": st.integers(0, 10**6),
    },
)
_bad = st.one_of(
    _odd,
    st.builds(lambda good, extra: good | extra, _good, st.sampled_from(
        [{"self": 1}, {"locales": ["de"]}, {"network": "10.0.0.0/8"}, {"network": "garbage"}, {"names": "en"},
         {"names": ["en"]}],
    )),
)  # fmt: skip
_KEYS = (
    "city", "continent", "country", "location", "postal", "maxmind", "traits", "registered_country",
    "represented_country",
)  # fmt: skip
_good_records = st.fixed_dictionaries(
    {},
    optional={key: _good for key in _KEYS} | {"subdivisions": st.lists(_good, max_size=2), "extra": st.integers()},
)
# shaped like a real City record: country, continent, city, location
_real_records = st.fixed_dictionaries(
    {
        "country": st.fixed_dictionaries({"iso_code": st.sampled_from(["US", "IE", ""])}),
        "continent": st.fixed_dictionaries({"code": st.sampled_from(["NA", "EU"])}),
        "city": st.fixed_dictionaries({"names": _names}),
        "location": st.fixed_dictionaries(
            {"latitude": st.floats(-90, 90), "longitude": st.floats(-180, 180)},
            optional={"accuracy_radius": st.sampled_from([5, 500, 501, 1000])},
        ),
    },
    optional={"traits": st.just({"is_anycast": True}), "subdivisions": st.lists(_good, max_size=2)},
)
_records = st.one_of(
    _real_records,
    _real_records,
    _good_records,
    _good_records,
    st.builds(lambda good, key, bad: good | {key: bad}, _good_records, st.sampled_from([*_KEYS, "subdivisions"]), _bad),
    st.builds(lambda good, bad: good | {"subdivisions": [bad]}, _good_records, _bad),
    st.builds(lambda good, key: good | {key: 8}, _good_records, st.sampled_from(["prefix_len", "self", "locales"])),
    _odd,
)


@settings(max_examples=300, deadline=None)
@given(record=_records)
def test_geo_fast_path_matches_geoip2_models_on_any_record(record: object) -> None:
    address = ipaddress.ip_address("198.51.100.7")
    with GeoLocator(DEFAULT_GEODB) as locator:
        real = locator._raw
        fake = FakeRawReader(record)
        reader: Any = locator._reader
        reader._db_reader = locator._raw = fake
        try:
            assert locator.locate(address) == model_way(locator, address)
        finally:
            reader._db_reader = locator._raw = real


REAL = {
    "country": {"iso_code": "IE"},
    "continent": {"code": "EU"},
    "city": {"names": {"en": "Dublin"}},
    "location": {"latitude": 53.3, "longitude": -6.3, "accuracy_radius": 20},
}


@pytest.mark.parametrize(
    "record",
    [
        REAL,
        REAL | {"traits": {"network": "10.0.0.0/8"}},
        REAL | {"traits": {"network": "garbage"}},
        REAL | {"traits": {"ip_address": "192.0.2.1", "prefix_len": 3}},
        REAL | {"city": {"names": "en"}},
        REAL | {"city": {"names": ["en"]}},
        REAL | {"city": {"names": {}}},
        REAL | {"city": {"names": {"de": "Köln"}}},
        REAL | {"city": {"names": {"en": ""}}},
        REAL | {"city": {"locales": ["de"]}},
        REAL | {"country": {"self": 1}},
        REAL | {"location": {"self": 1}},
        REAL | {"location": "here"},
        REAL | {"location": []},
        REAL | {"postal": ["x"]},
        REAL | {"maxmind": {"self": 1}},
        REAL | {"subdivisions": [None]},
        REAL | {"subdivisions": "abc"},
        REAL | {"subdivisions": [{"locales": 1}]},
        REAL | {"subdivisions": [{"iso_code": "D"}]},
        REAL | {"prefix_len": 8},
        REAL | {"ip_address": "x"},
        REAL | {"locales": ["en"]},
        {"country": {"iso_code": "IE"}, "location": {"latitude": 1.0}},
        {"continent": {"code": ""}},
        [],
        "text",
    ],
)
def test_geo_fast_path_matches_geoip2_models_on_odd_records(record: object) -> None:
    test_geo_fast_path_matches_geoip2_models_on_any_record.hypothesis.inner_test(record)  # type: ignore[attr-defined]


# --- the client address: dotted quads without ipaddress's general parser --------------------------

_octets = st.one_of(
    st.integers(0, 300).map(str),
    st.sampled_from(["", "00", "01", "007", "0x1", "1e2", "٣", "+1", "-1", " 1", "1 ", "256", "999", "0000"]),
)


@settings(max_examples=500, deadline=None)
@given(
    parts=st.lists(_octets, min_size=4, max_size=4) | st.lists(_octets, min_size=1, max_size=6),
    port=st.none() | st.sampled_from(["80", "0", "65536", "x"]),
)
@example(parts=["256", "1", "1", "1"], port=None)
@example(parts=["1", "2", "3", "256"], port="80")
@example(parts=["255", "255", "255", "255"], port=None)
@example(parts=["01", "2", "3", "4"], port=None)
@example(parts=["1", "2", "3", "4", "5"], port=None)
@example(parts=["\u0661", "2", "3", "4"], port=None)  # an Arabic-Indic digit
def test_dotted_quads_parse_as_ipaddress_parses_them(parts: list[str], port: str | None) -> None:
    text = ".".join(parts)
    try:
        expected: IPAddress | None = ipaddress.ip_address(text.strip())  # parse_address strips
    except ValueError:
        expected = None
    got = parse_address(text)
    assert got == expected
    assert type(got) is type(expected)
    if port is not None and expected is not None and text == text.strip():
        with_port = parse_address(f"{text}:{port}")
        assert with_port == (expected if port in ("80", "0") else None)
