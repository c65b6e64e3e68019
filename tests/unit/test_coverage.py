"""Coverage zones: longest-prefix match over operator overrides, with errors naming the entry."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge.router.coverage import CoverageError, CoverageMap, CoverageZone, load_coverage, parse_coverage
from tests.unit.test_inventory import three_region

ZONES_TOML = """\
[[zones]]
network = "10.0.0.0/8"
edge = "eu-west-1"

[[zones]]
network = "10.20.0.0/16"
region = "ap-southeast"
name = "lab"

[[zones]]
network = "10.20.30.0/24"
edge = "us-east-2"

[[zones]]
network = "2001:db8:2::/48"
region = "eu-west"

[[zones]]
network = "2001:db8:2:ff00::/56"
edge = "ap-southeast-1"

[[zones]]
network = "::ffff:172.16.0.0/108"
region = "us-east"
"""


@pytest.fixture
def coverage(tmp_path: Path) -> CoverageMap:
    path = tmp_path / "coverage.toml"
    path.write_text(ZONES_TOML, encoding="utf-8")
    return load_coverage(path, three_region())


@pytest.mark.parametrize(
    ("address", "network", "target"),
    [
        ("10.1.2.3", "10.0.0.0/8", "edge eu-west-1"),
        ("10.20.1.1", "10.20.0.0/16", "region ap-southeast"),
        ("10.20.30.40", "10.20.30.0/24", "edge us-east-2"),  # most specific wins
        ("10.20.31.0", "10.20.0.0/16", "region ap-southeast"),
        ("10.255.255.255", "10.0.0.0/8", "edge eu-west-1"),
        ("::ffff:10.20.30.1", "10.20.30.0/24", "edge us-east-2"),  # mapped → IPv4
        ("2001:db8:2::1", "2001:db8:2::/48", "region eu-west"),
        ("2001:db8:2:ff12::1", "2001:db8:2:ff00::/56", "edge ap-southeast-1"),
        ("172.16.5.5", "172.16.0.0/12", "region us-east"),  # a mapped zone is stored as IPv4
        ("11.0.0.1", None, None),
        ("9.255.255.255", None, None),
        ("2001:db8:3::1", None, None),
        ("::a14:1e01", None, None),  # IPv4-compatible is not IPv4-mapped: no match
    ],
)
def test_longest_prefix_lookup(coverage: CoverageMap, address: str, network: str | None, target: str | None) -> None:
    zone = coverage.lookup(ipaddress.ip_address(address))
    if network is None:
        assert zone is None
    else:
        assert zone is not None
        assert str(zone.network) == network
        assert zone.target == target


def test_labels(coverage: CoverageMap) -> None:
    assert [zone.label for zone in coverage.zones[:2]] == ["10.0.0.0/8", "lab"]
    assert len(coverage) == 6


def test_default_route_zones() -> None:
    coverage = parse_coverage({"zones": [{"network": "0.0.0.0/0", "region": "a"}, {"network": "::/0", "region": "b"}]})
    assert coverage.lookup(ipaddress.ip_address("8.8.8.8")).region == "a"  # type: ignore[union-attr]
    assert coverage.lookup(ipaddress.ip_address("2001:db8::1")).region == "b"  # type: ignore[union-attr]


def test_empty_file_is_an_empty_map() -> None:
    coverage = parse_coverage({})
    assert len(coverage) == 0
    assert coverage.lookup(ipaddress.ip_address("10.0.0.1")) is None


@pytest.mark.parametrize(
    ("zones", "message"),
    [
        ([{"network": "10.0.0.1/8", "edge": "a"}], "zones[0] (10.0.0.1/8): network: 10.0.0.1/8 has host bits set"),
        ([{"network": "banana", "edge": "a"}], "zones[0] (banana): network: 'banana' does not appear to be"),
        ([{"network": 10, "edge": "a"}], "zones[0]: network: must be a string such as '10.0.0.0/8'"),
        ([{"network": "10.0.0.0/8"}], "zones[0] (10.0.0.0/8): give exactly one of 'edge' or 'region'"),
        ([{"network": "10.0.0.0/8", "edge": "a", "region": "r"}], "zones[0] (10.0.0.0/8): give exactly one"),
        ([{"network": "10.0.0.0/8", "edge": ""}], "zones[0] (10.0.0.0/8): edge: String should have at least 1"),
        ([{"network": "10.0.0.0/8", "edge": "a", "pop": "x"}], "zones[0] (10.0.0.0/8): pop: Extra inputs"),
        ([{"edge": "a"}], "zones[0]: network: Field required"),
        (
            [{"network": "10.0.0.0/8", "edge": "a"}, {"network": "10.0.0.0/8", "region": "r"}],
            "zones[1] (10.0.0.0/8): network: duplicate network, first used by zones[0]",
        ),
        (
            [{"network": "172.16.0.0/12", "edge": "a"}, {"network": "::ffff:172.16.0.0/108", "edge": "b"}],
            "zones[1] (172.16.0.0/12): network: duplicate network",
        ),
    ],
)
def test_invalid_zones_name_the_entry(zones: list[dict[str, Any]], message: str) -> None:
    with pytest.raises(CoverageError) as caught:
        parse_coverage({"zones": zones}, "zones.toml")
    assert message in str(caught.value)
    assert str(caught.value).startswith("zones.toml: ")


@pytest.mark.parametrize(
    ("zone", "message"),
    [
        ({"network": "10.0.0.0/8", "edge": "eu-west-9"}, "zones[0] (10.0.0.0/8): edge: no edge named 'eu-west-9'"),
        ({"network": "10.0.0.0/8", "region": "mars"}, "zones[0] (10.0.0.0/8): region: no region named 'mars'"),
    ],
)
def test_names_are_checked_against_the_inventory(zone: dict[str, Any], message: str) -> None:
    with pytest.raises(CoverageError, match=message.replace("[", r"\[").replace("(", r"\(").replace(")", r"\)")):
        parse_coverage({"zones": [zone]}, inventory=three_region())
    assert len(parse_coverage({"zones": [zone]})) == 1  # without an inventory, names are not checked


@pytest.mark.parametrize(
    ("content", "message"),
    [("[[zones]\n", "not valid TOML"), ("zones = 1", "zones: Input should be a valid list")],
)
def test_file_errors(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "coverage.toml"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(CoverageError, match=message):
        load_coverage(path)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(CoverageError, match="cannot read"):
        load_coverage(tmp_path / "nope.toml")


# --- property: the table agrees with a brute-force longest-prefix match -------------------------


@st.composite
def _v4_networks(draw: st.DrawFn) -> ipaddress.IPv4Network:
    length = draw(st.integers(min_value=0, max_value=32))
    address = draw(st.integers(min_value=0, max_value=2**32 - 1))
    return ipaddress.IPv4Network((address >> (32 - length) << (32 - length) if length else 0, length))


@settings(max_examples=200)
@given(
    networks=st.lists(_v4_networks(), max_size=12, unique=True),
    probes=st.lists(st.ip_addresses(v=4), min_size=1, max_size=10),
)
def test_lookup_matches_brute_force(
    networks: list[ipaddress.IPv4Network], probes: list[ipaddress.IPv4Address]
) -> None:
    zones = [CoverageZone(network=network, region=f"r{index}") for index, network in enumerate(networks)]
    coverage = CoverageMap(zones)
    # probe inside each network too, not only at random
    all_probes = probes + [network.network_address for network in networks]
    for probe in all_probes:
        containing = [zone for zone in zones if probe in zone.network]
        expected = max(containing, key=lambda zone: zone.network.prefixlen) if containing else None
        assert coverage.lookup(probe) == expected
