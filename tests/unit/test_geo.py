"""Geo data: the demo database builder, the locator's judgement, and real MaxMind-format files."""

from __future__ import annotations

import ipaddress
import os
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import geoip2.database
import geoip2.errors
import maxminddb
import pytest
from mmdb_writer import MMDBWriter
from netaddr import IPSet

from edge.inventory import parse_inventory
from edge.router.geo import GeoDatabaseError, GeoLocator, GeoResult
from edge.router.select import select_edge
from geodb.build import (
    DEFAULT_OUT,
    DEFAULT_SOURCE,
    SourceError,
    build,
    main,
    parse_source,
    read_source,
    verify,
)
from tests.unit.test_inventory import THREE_REGION_TOML

SMALL_SOURCE = """\
# a comment line, then the header
network,country,continent,city,latitude,longitude,accuracy_radius,region_hint
198.51.100.0/24,US,NA,Ashburn,39.0438,-77.4874,20,us-east
198.51.100.128/25,US,NA,Seattle,47.6062,-122.3321,25,us-east
192.0.2.0/24,IE,EU,Dublin,53.3498,-6.2603,20,eu-west
203.0.113.0/24,SG,AS,Singapore,1.3521,103.8198,10,ap-southeast

2001:db8:2::/48,IE,EU,Dublin,53.3498,-6.2603,30,eu-west
2001:db8:3::/48,SG,AS,Singapore,1.3521,103.8198,40,ap-southeast
81.2.69.0/24,GB,EU,"London, City of",51.5074,-0.1278,10,eu-west
177.64.0.0/16,BR,SA,São Paulo,-23.5505,-46.6333,50,us-east
63.0.0.0/16,US,NA,,37.751,-97.822,1000,us-east
41.32.0.0/16,EG,AF,,,,,eu-west
103.200.0.0/16,,AS,,,,,ap-southeast
"""

MAXMIND_TEST_DATA = Path(os.environ.get("EDGECACHE_MAXMIND_TEST_DATA", "/work/shared/geodb"))


@pytest.fixture
def small_db(tmp_path: Path) -> Path:
    out = tmp_path / "small-city.mmdb"
    build(parse_source(SMALL_SOURCE, "small.csv"), out, build_epoch=1_700_000_000)
    return out


@pytest.fixture
def locator(small_db: Path) -> Iterator[GeoLocator]:
    with GeoLocator(small_db) as opened:
        yield opened


def ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    return ipaddress.ip_address(text)


# --- the generated database, read through geoip2 and maxminddb -------------------------------------


@pytest.mark.parametrize(
    ("address", "city", "country", "country_name", "continent", "continent_name", "lat", "lon", "accuracy", "network"),
    [
        # the /25 override splits the /24, so the answer's network is the lower half
        ("198.51.100.7", "Ashburn", "US", "United States", "NA", "North America", 39.0438, -77.4874, 20,
         "198.51.100.0/25"),
        ("198.51.100.200", "Seattle", "US", "United States", "NA", "North America", 47.6062, -122.3321, 25,
         "198.51.100.128/25"),
        ("203.0.113.5", "Singapore", "SG", "Singapore", "AS", "Asia", 1.3521, 103.8198, 10, "203.0.113.0/24"),
        ("81.2.69.142", "London, City of", "GB", "United Kingdom", "EU", "Europe", 51.5074, -0.1278, 10,
         "81.2.69.0/24"),
        ("177.64.200.1", "São Paulo", "BR", "Brazil", "SA", "South America", -23.5505, -46.6333, 50, "177.64.0.0/16"),
        ("2001:db8:2::5", "Dublin", "IE", "Ireland", "EU", "Europe", 53.3498, -6.2603, 30, "2001:db8:2::/48"),
        ("2001:db8:3:ffff::1", "Singapore", "SG", "Singapore", "AS", "Asia", 1.3521, 103.8198, 40, "2001:db8:3::/48"),
        # the IPv6 spellings of an IPv4 client resolve to the IPv4 record
        ("::ffff:192.0.2.9", "Dublin", "IE", "Ireland", "EU", "Europe", 53.3498, -6.2603, 20, None),
        ("2002:c000:209::1", "Dublin", "IE", "Ireland", "EU", "Europe", 53.3498, -6.2603, 20, None),
    ],
)
def test_geoip2_reads_city_country_continent_location(
    small_db: Path,
    address: str,
    city: str,
    country: str,
    country_name: str,
    continent: str,
    continent_name: str,
    lat: float,
    lon: float,
    accuracy: int,
    network: str | None,
) -> None:
    with geoip2.database.Reader(str(small_db)) as reader:
        assert reader.metadata().database_type == "edgecache-Demo-City"
        assert reader.metadata().ip_version == 6
        assert reader.metadata().languages == ["en"]
        record = reader.city(address)
    assert record.city.name == city
    assert record.country.iso_code == country
    assert record.country.name == country_name
    assert record.registered_country.iso_code == country
    assert record.continent.code == continent
    assert record.continent.name == continent_name
    assert record.location.latitude == lat
    assert record.location.longitude == lon
    assert record.location.accuracy_radius == accuracy
    if network is not None:
        assert str(record.traits.network) == network


@pytest.mark.parametrize("address", ["8.8.8.8", "198.51.99.255", "2001:db8:4::1", "::1"])
def test_geoip2_misses_outside_the_source(small_db: Path, address: str) -> None:
    with geoip2.database.Reader(str(small_db)) as reader, pytest.raises(geoip2.errors.AddressNotFoundError):
        reader.city(address)


def test_coarse_records_have_only_the_parts_given(small_db: Path) -> None:
    with maxminddb.open_database(str(small_db)) as reader:
        assert reader.get("63.0.1.1") == {
            "continent": {"code": "NA", "names": {"en": "North America"}},
            "country": {"iso_code": "US", "names": {"en": "United States"}},
            "registered_country": {"iso_code": "US", "names": {"en": "United States"}},
            "location": {"latitude": 37.751, "longitude": -97.822, "accuracy_radius": 1000},
        }
        assert reader.get("41.32.0.1") == {
            "continent": {"code": "AF", "names": {"en": "Africa"}},
            "country": {"iso_code": "EG", "names": {"en": "Egypt"}},
            "registered_country": {"iso_code": "EG", "names": {"en": "Egypt"}},
        }
        assert reader.get("103.200.0.1") == {"continent": {"code": "AS", "names": {"en": "Asia"}}}


def test_build_is_reproducible_with_a_fixed_epoch(tmp_path: Path) -> None:
    rows = parse_source(SMALL_SOURCE)
    build(rows, tmp_path / "a.mmdb", build_epoch=42)
    build(rows, tmp_path / "b.mmdb", build_epoch=42)
    assert (tmp_path / "a.mmdb").read_bytes() == (tmp_path / "b.mmdb").read_bytes()
    with maxminddb.open_database(str(tmp_path / "a.mmdb")) as reader:
        assert reader.metadata().build_epoch == 42
    assert sorted(path.name for path in tmp_path.iterdir()) == ["a.mmdb", "b.mmdb"]  # no temporaries left


def test_source_date_epoch_is_honoured(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1234567890")
    build(parse_source(SMALL_SOURCE), tmp_path / "x.mmdb")
    with maxminddb.open_database(str(tmp_path / "x.mmdb")) as reader:
        assert reader.metadata().build_epoch == 1234567890


def test_wider_network_listed_after_narrower_still_keeps_the_narrower(tmp_path: Path) -> None:
    # the writer replaces a subtree when a wider network comes later; build() sorts to prevent it
    text = (
        "network,country,continent,city,latitude,longitude,accuracy_radius,region_hint\n"
        "10.1.0.0/16,DE,EU,Berlin,52.52,13.405,10,\n"
        "10.0.0.0/8,FR,EU,Paris,48.8566,2.3522,10,\n"
    )
    rows = parse_source(text)
    build(rows, tmp_path / "o.mmdb", build_epoch=1)
    assert verify(tmp_path / "o.mmdb", rows) == []
    with maxminddb.open_database(str(tmp_path / "o.mmdb")) as reader:
        assert reader.get("10.1.2.3")["city"]["names"]["en"] == "Berlin"  # type: ignore[index,call-overload]
        assert reader.get("10.2.0.0")["city"]["names"]["en"] == "Paris"  # type: ignore[index,call-overload]


def test_verify_reports_a_database_that_does_not_match(small_db: Path) -> None:
    other = parse_source(SMALL_SOURCE.replace("Ashburn", "Richmond"))
    problems = verify(small_db, other)
    assert problems
    assert any("198.51.100.0" in problem and "Richmond" in problem for problem in problems)
    assert verify(small_db, other, database_type="GeoIP2-City")[0].startswith("database_type is")


_HEADER = "network,country,continent,city,latitude,longitude,accuracy_radius,region_hint\n"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "x.csv: no header line"),
        ("# only a comment\n", "x.csv: no header line"),
        ("network,country\n", "x.csv:1: header: expected network,country,continent"),
        (_HEADER, "x.csv: no networks"),
        (_HEADER + "10.0.0.0/8,US,NA\n", "x.csv:2: row: expected 8 columns, found 3"),
        (_HEADER + ",US,NA,,,,,\n", "x.csv:2: network: required"),
        (_HEADER + "10.0.0.1/8,US,NA,,,,,\n", "x.csv:2: network: 10.0.0.1/8 has host bits set"),
        (_HEADER + "::ffff:10.0.0.0/104,US,NA,,,,,\n", "x.csv:2: network: this IPv6 space mirrors IPv4"),
        (_HEADER + "2002:a00::/24,US,NA,,,,,\n", "x.csv:2: network: this IPv6 space mirrors IPv4"),
        (_HEADER + "10.0.0.0/8,USA,NA,,,,,\n", "x.csv:2: country: 'USA' is not a 2-letter ISO 3166-1 code"),
        (_HEADER + "10.0.0.0/8,US,,,,,,\n", "x.csv:2: continent: required, one of AF AN AS EU NA OC SA"),
        (_HEADER + "10.0.0.0/8,US,XX,,,,,\n", "x.csv:2: continent: required"),
        (_HEADER + "10.0.0.0/8,,NA,Boston,,,,\n", "x.csv:2: city: a city needs a country"),
        (_HEADER + "10.0.0.0/8,US,NA,,91,0,10,\n", "x.csv:2: latitude: 91.0 is outside [-90, 90]"),
        (_HEADER + "10.0.0.0/8,US,NA,,0,-181,10,\n", "x.csv:2: longitude: -181.0 is outside [-180, 180]"),
        (_HEADER + "10.0.0.0/8,US,NA,,nan,0,10,\n", "x.csv:2: latitude: nan is outside"),
        (_HEADER + "10.0.0.0/8,US,NA,,north,0,10,\n", "x.csv:2: latitude: 'north' is not a number"),
        (_HEADER + "10.0.0.0/8,US,NA,,10,,10,\n", "x.csv:2: latitude/longitude: give both or neither"),
        (_HEADER + "10.0.0.0/8,US,NA,,10,10,,\n", "x.csv:2: accuracy_radius: required with coordinates"),
        (_HEADER + "10.0.0.0/8,US,NA,,,,10,\n", "x.csv:2: accuracy_radius: only meaningful with coordinates"),
        (_HEADER + "10.0.0.0/8,US,NA,,1,1,0,\n", "x.csv:2: accuracy_radius: '0' is not a whole number"),
        (_HEADER + "10.0.0.0/8,US,NA,,1,1,2.5,\n", "x.csv:2: accuracy_radius: '2.5' is not a whole number"),
        (_HEADER + "10.0.0.0/8,US,NA,,,,,\n# note\n10.0.0.0/8,FR,EU,,,,,\n",
         "x.csv:4: network: 10.0.0.0/8 already given on line 2"),
    ],
)
def test_source_errors_name_line_and_column(text: str, message: str) -> None:
    with pytest.raises(SourceError) as caught:
        parse_source(text, "x.csv")
    assert message in str(caught.value)


def test_cli_builds_and_verifies(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    source = tmp_path / "s.csv"
    source.write_text(SMALL_SOURCE, encoding="utf-8")
    out = tmp_path / "sub" / "o.mmdb"
    assert main(["--source", str(source), "--out", str(out), "--build-epoch", "7"]) == 0
    assert "11 networks (9 IPv4, 2 IPv6)" in capsys.readouterr().out
    assert out.exists()


@pytest.mark.parametrize(
    ("content", "message"),
    [(_HEADER + "bogus,US,NA,,,,,\n", "s.csv:2: network:"), (None, "s.csv")],
)
def test_cli_reports_bad_source(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str | None, message: str
) -> None:
    source = tmp_path / "s.csv"
    if content is not None:
        source.write_text(content, encoding="utf-8")
    assert main(["--source", str(source), "--out", str(tmp_path / "o.mmdb")]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "o.mmdb").exists()


# --- the mmdb-writer's IPv4 handling, which the builder relies on -----------------------------------


def test_writer_refuses_ipv4_in_ipv6_db_without_ipv4_compatible() -> None:
    writer = MMDBWriter(ip_version=6, database_type="x-City", languages=["en"], description="x")
    with pytest.raises(ValueError, match="ipv4_compatible"):
        writer.insert_network(IPSet(["192.0.2.0/24"]), {"a": "b"})


def test_writer_ipv4_compatible_stores_ipv4_where_readers_look(tmp_path: Path) -> None:
    writer = MMDBWriter(ip_version=6, ipv4_compatible=True, database_type="x-City", languages=["en"], description="x")
    writer.insert_network(IPSet(["192.0.2.0/24"]), {"continent": {"code": "EU"}})
    writer.to_db_file(str(tmp_path / "w.mmdb"))
    with maxminddb.open_database(str(tmp_path / "w.mmdb")) as reader:
        assert reader.get_with_prefix_len("192.0.2.77") == ({"continent": {"code": "EU"}}, 24)
        assert reader.get("::c000:24d") == {"continent": {"code": "EU"}}  # ::192.0.2.77
        assert reader.get("::ffff:192.0.2.77") is None  # the writer adds no mapped alias by itself


# --- GeoLocator on the generated database ------------------------------------------------------------


@pytest.mark.parametrize(
    ("address", "source", "found", "coords", "country", "continent", "city", "reason"),
    [
        ("198.51.100.7", "city", True, (39.0438, -77.4874), "US", "NA", "Ashburn", "Ashburn, within 20 km"),
        ("198.51.100.129", "city", True, (47.6062, -122.3321), "US", "NA", "Seattle", "within 25 km"),
        ("2001:db8:2::1", "city", True, (53.3498, -6.2603), "IE", "EU", "Dublin", "within 30 km"),
        ("::ffff:203.0.113.1", "city", True, (1.3521, 103.8198), "SG", "AS", "Singapore", "within 10 km"),
        # accuracy 1000 km > 500: a centroid; coordinates dropped, country kept
        ("63.0.0.9", "country-centroid", True, None, "US", "NA", None, "accuracy 1000 km > 500 km"),
        ("41.32.1.1", "country", True, None, "EG", "AF", None, "no coordinates; country EG"),
        ("103.200.9.9", "continent", True, None, None, "AS", None, "continent AS"),
        ("8.8.8.8", "none", False, None, None, None, None, "not in database"),
        ("2001:db8:ffff::1", "none", False, None, None, None, None, "not in database"),
        # never looked up
        ("10.1.2.3", "none", False, None, None, None, None, "is in 10.0.0.0/8: not locatable"),
        ("192.168.1.1", "none", False, None, None, None, None, "192.168.0.0/16"),
        ("100.64.0.1", "none", False, None, None, None, None, "100.64.0.0/10"),
        ("127.0.0.1", "none", False, None, None, None, None, "127.0.0.0/8"),
        ("169.254.1.1", "none", False, None, None, None, None, "169.254.0.0/16"),
        ("::1", "none", False, None, None, None, None, "::1/128"),
        ("fe80::1", "none", False, None, None, None, None, "fe80::/10"),
        ("fd12::1", "none", False, None, None, None, None, "fc00::/7"),
        ("::ffff:10.0.0.1", "none", False, None, None, None, None, "10.0.0.0/8"),
        ("239.1.1.1", "none", False, None, None, None, None, "224.0.0.0/4"),
    ],
)
def test_locate_judges_each_kind_of_record(
    locator: GeoLocator,
    address: str,
    source: str,
    found: bool,
    coords: tuple[float, float] | None,
    country: str | None,
    continent: str | None,
    city: str | None,
    reason: str,
) -> None:
    result = locator.locate(ip(address))
    assert result.source == source
    assert result.found is found
    assert (None if result.latitude is None else (result.latitude, result.longitude)) == coords
    assert result.has_coordinates is (coords is not None)
    assert (result.country, result.continent, result.city) == (country, continent, city)
    assert reason in result.reason


@pytest.mark.parametrize(
    ("max_accuracy_km", "address", "source"),
    [(10, "198.51.100.7", "country-centroid"), (20, "198.51.100.7", "city"), (1000, "63.0.0.9", "city")],
)
def test_accuracy_threshold_is_configurable(small_db: Path, max_accuracy_km: int, address: str, source: str) -> None:
    with GeoLocator(small_db, max_accuracy_km=max_accuracy_km) as locator:
        assert locator.locate(ip(address)).source == source


def test_skip_networks_are_configurable(small_db: Path) -> None:
    with GeoLocator(small_db, skip_networks=[ipaddress.ip_network("198.51.100.0/24")]) as locator:
        assert locator.locate(ip("198.51.100.7")).source == "none"
        assert locator.locate(ip("203.0.113.7")).source == "city"


def test_locate_never_raises_even_when_closed(small_db: Path) -> None:
    locator = GeoLocator(small_db)
    locator.close()
    locator.close()  # twice is harmless
    result = locator.locate(ip("198.51.100.7"))
    assert result == GeoResult.unknown(result.reason)
    assert result.reason.startswith("lookup failed: ValueError")


def test_metadata_and_json_view(locator: GeoLocator) -> None:
    assert locator.database_type == "edgecache-Demo-City"
    assert locator.build_epoch == 1_700_000_000
    view = locator.locate(ip("203.0.113.5")).to_dict()
    assert view["source"] == "city"
    assert view["country"] == "SG"


def test_reload_picks_up_a_replaced_file_and_keeps_the_old_one_on_failure(small_db: Path, tmp_path: Path) -> None:
    with GeoLocator(small_db) as locator:
        assert locator.locate(ip("198.51.100.7")).city == "Ashburn"
        build(parse_source(SMALL_SOURCE.replace("Ashburn", "Reston")), small_db, build_epoch=2)
        locator.reload()
        assert locator.locate(ip("198.51.100.7")).city == "Reston"
        assert locator.build_epoch == 2
        # replace by rename, as geoipupdate does: the old map stays intact for the running reader
        broken = tmp_path / "broken.tmp"
        broken.write_bytes(b"not a database")
        os.replace(broken, small_db)
        with pytest.raises(GeoDatabaseError):
            locator.reload()
        assert locator.locate(ip("198.51.100.7")).city == "Reston"  # still serving the old map


@pytest.mark.parametrize(
    ("content", "message"),
    [(None, "cannot open GeoIP database"), (b"garbage" * 10, "not a MaxMind DB file")],
)
def test_open_errors(tmp_path: Path, content: bytes | None, message: str) -> None:
    path = tmp_path / "db.mmdb"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(GeoDatabaseError, match=message):
        GeoLocator(path)


def _write_db(path: Path, database_type: str, networks: dict[str, dict[str, Any]]) -> Path:
    writer = MMDBWriter(ip_version=6, ipv4_compatible=True, database_type=database_type, languages=["en"],
                        description="test")
    for network, record in networks.items():
        writer.insert_network(IPSet([network]), record)
    writer.to_db_file(str(path))
    return path


def test_asn_database_is_refused(tmp_path: Path) -> None:
    path = _write_db(tmp_path / "asn.mmdb", "GeoLite2-ASN", {"192.0.2.0/24": {"autonomous_system_number": 64500}})
    with pytest.raises(GeoDatabaseError, match="has no locations"):
        GeoLocator(path)


def test_country_database_gives_country_and_continent(tmp_path: Path) -> None:
    path = _write_db(
        tmp_path / "country.mmdb",
        "edgecache-Test-Country",
        {"192.0.2.0/24": {"country": {"iso_code": "IE"}, "continent": {"code": "EU"}}},
    )
    with GeoLocator(path) as locator:
        result = locator.locate(ip("192.0.2.1"))
    assert (result.source, result.country, result.continent, result.latitude) == ("country", "IE", "EU", None)


def test_dbip_city_lite_shape_without_accuracy_radius(tmp_path: Path) -> None:
    # DB-IP City Lite: MaxMind's shape, but no accuracy_radius and no geoname ids
    path = _write_db(
        tmp_path / "dbip.mmdb",
        "DBIP-City-Lite",
        {
            "192.0.2.0/24": {
                "city": {"names": {"en": "Sydney"}},
                "continent": {"code": "OC", "names": {"en": "Oceania"}},
                "country": {"iso_code": "AU", "is_in_european_union": False, "names": {"en": "Australia"}},
                "location": {"latitude": -33.8688, "longitude": 151.209},
                "subdivisions": [{"names": {"en": "New South Wales"}}],
            },
            "2001:db8::/32": {"continent": {"code": "EU"}, "country": {"iso_code": "DE"}, "location": {}},
        },
    )
    with GeoLocator(path) as locator:
        sydney = locator.locate(ip("192.0.2.1"))
        germany = locator.locate(ip("2001:db8::1"))
    assert (sydney.source, sydney.city, sydney.latitude, sydney.accuracy_km) == ("city", "Sydney", -33.8688, None)
    assert "no accuracy radius given" in sydney.reason
    assert (germany.source, germany.country) == ("country", "DE")


def test_empty_and_centroid_without_codes(tmp_path: Path) -> None:
    path = _write_db(
        tmp_path / "odd.mmdb",
        "odd-City",
        {
            "192.0.2.0/25": {"traits": {"is_anycast": True}},
            "192.0.2.128/25": {"location": {"latitude": 1.0, "longitude": 2.0, "accuracy_radius": 2000}},
        },
    )
    with GeoLocator(path) as locator:
        empty = locator.locate(ip("192.0.2.1"))
        coarse = locator.locate(ip("192.0.2.200"))
    assert (empty.found, empty.source) == (True, "none")
    assert "no location, country or continent" in empty.reason
    assert (coarse.found, coarse.source, coarse.latitude) == (True, "none", None)


# --- the committed demo database and its source -------------------------------------------------------


def test_committed_demo_database_matches_its_source() -> None:
    if not DEFAULT_OUT.exists():
        pytest.skip("geodb/demo-city.mmdb not built yet (make geodb)")
    assert verify(DEFAULT_OUT, read_source(DEFAULT_SOURCE)) == []


def test_every_region_hint_is_how_the_demo_routes(tmp_path: Path) -> None:
    """Each row's ``region_hint`` is what lookup + selection really do with all edges healthy."""
    rows = read_source(DEFAULT_SOURCE)
    out = tmp_path / "demo.mmdb"
    build(rows, out, build_epoch=1)
    inventory = parse_inventory(tomllib.loads(THREE_REGION_TOML))
    health = {edge.name: True for edge in inventory.edges}
    with GeoLocator(out) as locator:
        for row in rows:
            assert row.region_hint is not None, f"line {row.line} has no region_hint"
            for address in (row.network.network_address, row.network.broadcast_address):
                location = locator.locate(address)
                assert location.found, (row.line, str(address), location.reason)
                decision = select_edge(inventory, health, location, "demo.example/")
                assert decision.region == row.region_hint, (row.line, str(address), decision.reason)


def test_demo_source_has_every_kind_of_record() -> None:
    rows = read_source(DEFAULT_SOURCE)
    regions = {row.region_hint for row in rows}
    assert regions == {"us-east", "eu-west", "ap-southeast"}
    assert any(row.network.version == 6 for row in rows)
    assert any(row.accuracy_radius is not None and row.accuracy_radius > 500 for row in rows)
    assert any(row.country is not None and row.latitude is None for row in rows)
    assert any(row.country is None for row in rows)
    documentation = [ipaddress.ip_network(n) for n in ("198.51.100.0/24", "203.0.113.0/24", "192.0.2.0/24")]
    assert all(any(row.network == network for row in rows) for network in documentation)


# --- MaxMind's genuine test databases, when available ------------------------------------------------------


def _maxmind(name: str) -> Path:
    path = MAXMIND_TEST_DATA / name
    if not path.is_file():
        pytest.skip(f"{path} not present (set EDGECACHE_MAXMIND_TEST_DATA to MaxMind-DB's test-data directory)")
    return path


@pytest.mark.parametrize(
    ("database", "address", "source", "country", "continent", "city"),
    [
        ("GeoIP2-City-Test.mmdb", "81.2.69.142", "city", "GB", "EU", "London"),
        ("GeoIP2-City-Test.mmdb", "::ffff:81.2.69.142", "city", "GB", "EU", "London"),
        ("GeoIP2-City-Test.mmdb", "2002:5102:458e::1", "city", "GB", "EU", "London"),  # MaxMind's 6to4 alias
        ("GeoIP2-City-Test.mmdb", "214.0.0.1", "city", "SG", "AS", "Singapore"),
        ("GeoIP2-City-Test.mmdb", "2001:480:10::1", "city", "US", "NA", "San Diego"),
        ("GeoIP2-City-Test.mmdb", "149.101.100.0", "country-centroid", "US", "NA", None),
        ("GeoIP2-City-Test.mmdb", "2.3.3.0", "continent", None, "EU", None),
        # country-level record with a 100 km radius: precise enough to measure distance from
        ("GeoIP2-City-Test.mmdb", "2a02:e700::1", "city", "LY", "AF", None),
        ("GeoIP2-City-Test.mmdb", "8.8.8.8", "none", None, None, None),
        ("GeoIP2-City-Test.mmdb", "10.0.0.1", "none", None, None, None),
        ("GeoIP2-City-Test.mmdb", "127.0.0.1", "none", None, None, None),
        ("GeoLite2-City-Test.mmdb", "81.2.69.142", "city", "GB", "EU", "London"),
        ("GeoLite2-City-Test.mmdb", "2a02:e700::1", "city", "LY", "AF", None),
        ("GeoLite2-City-Test.mmdb", "149.101.100.0", "none", None, None, None),
        ("GeoIP2-Country-Test.mmdb", "81.2.69.142", "country", "GB", "EU", None),
        ("GeoIP2-Country-Test.mmdb", "149.101.100.0", "country", "US", "NA", None),
    ],
)
def test_maxmind_test_databases(
    database: str, address: str, source: str, country: str | None, continent: str | None, city: str | None
) -> None:
    with GeoLocator(_maxmind(database)) as locator:
        result = locator.locate(ip(address))
    assert (result.source, result.country, result.continent, result.city) == (source, country, continent, city)


def test_maxmind_london_routes_to_eu_west() -> None:
    inventory = parse_inventory(tomllib.loads(THREE_REGION_TOML))
    health = {edge.name: True for edge in inventory.edges}
    with GeoLocator(_maxmind("GeoIP2-City-Test.mmdb")) as locator:
        london = locator.locate(ip("81.2.69.142"))
        centroid = locator.locate(ip("149.101.100.0"))
        melbourne = locator.locate(ip("214.0.1.1"))
    assert london.accuracy_km == 10
    assert london.latitude == pytest.approx(51.5142)
    assert select_edge(inventory, health, london, "k").region == "eu-west"
    assert select_edge(inventory, health, centroid, "k").rule == "country"
    assert select_edge(inventory, health, centroid, "k").region == "us-east"
    assert select_edge(inventory, health, melbourne, "k").region == "ap-southeast"
