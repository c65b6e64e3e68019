"""Inventory loading: the three-region demo shape loads; every kind of mistake names entry and field."""

from __future__ import annotations

import copy
import tomllib
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from edge.inventory import EdgeEntry, Inventory, InventoryError, load_inventory, parse_inventory

# The demo's shape: three regions, two edges in us-east and eu-west, one in ap-southeast.  Other test
# modules import this string so every router test reasons about the same cluster.
THREE_REGION_TOML = """\
region_fallback = ["eu-west", "us-east", "ap-southeast"]
replication = 1

[[edges]]
name = "us-east-1"
region = "us-east"
latitude = 38.9
longitude = -77.0
url = "http://127.0.0.1:8101/"
admin_url = "http://127.0.0.1:9101"
country = "US"
continent = "NA"

[[edges]]
name = "us-east-2"
region = "us-east"
latitude = 39.04
longitude = -77.49
url = "http://127.0.0.1:8102"
admin_url = "http://127.0.0.1:9102"
country = "us"
continent = "na"

[[edges]]
name = "eu-west-1"
region = "eu-west"
latitude = 53.35
longitude = -6.26
url = "http://127.0.0.1:8201"
admin_url = "http://127.0.0.1:9201"
country = "IE"
continent = "EU"

[[edges]]
name = "eu-west-2"
region = "eu-west"
latitude = 53.33
longitude = -6.25
url = "https://EU-WEST-2.example.net:8443"
admin_url = "http://127.0.0.1:9202"
country = "IE"
continent = "EU"
weight = 2.0

[[edges]]
name = "ap-southeast-1"
region = "ap-southeast"
latitude = 1.35
longitude = 103.82
url = "http://127.0.0.1:8301"
admin_url = "http://127.0.0.1:9301"
country = "SG"
continent = "AS"
"""


def three_region() -> Inventory:
    return parse_inventory(tomllib.loads(THREE_REGION_TOML), "three-region")


def test_loads_demo_shape_from_file(tmp_path: Path) -> None:
    path = tmp_path / "inventory.toml"
    path.write_text(THREE_REGION_TOML, encoding="utf-8")
    inventory = load_inventory(path)
    assert [edge.name for edge in inventory.edges] == [
        "us-east-1", "us-east-2", "eu-west-1", "eu-west-2", "ap-southeast-1",
    ]
    assert inventory.regions() == ["us-east", "eu-west", "ap-southeast"]
    assert inventory.region_fallback == ["eu-west", "us-east", "ap-southeast"]
    assert inventory.replication == 1
    assert [edge.name for edge in inventory.in_region("eu-west")] == ["eu-west-1", "eu-west-2"]
    assert inventory.edge("nope") is None


@pytest.mark.parametrize(
    ("name", "field", "expected"),
    [
        ("us-east-1", "url", "http://127.0.0.1:8101"),  # trailing slash dropped: url + path_qs
        ("eu-west-2", "url", "https://eu-west-2.example.net:8443"),  # host lower-cased
        ("us-east-2", "country", "US"),  # codes upper-cased
        ("us-east-2", "continent", "NA"),
        ("us-east-1", "weight", 1.0),  # defaults
        ("us-east-1", "bias_km", 0.0),
        ("us-east-1", "enabled", True),
        ("eu-west-2", "weight", 2.0),
    ],
)
def test_normalised_and_default_fields(name: str, field: str, expected: object) -> None:
    edge = three_region().edge(name)
    assert edge is not None
    assert getattr(edge, field) == expected


def test_minimal_inventory_defaults() -> None:
    inventory = parse_inventory(
        {"edges": [{"name": "a", "region": "r", "latitude": 0, "longitude": 0,
                    "url": "http://a", "admin_url": "http://a:9000"}]}
    )
    assert inventory.region_fallback == []
    assert inventory.replication == 1
    assert inventory.edges[0].country is None
    assert inventory.edges[0].continent is None


def _mutated(change: dict[str, Any], index: int | None = 2) -> dict[str, Any]:
    """The demo inventory with ``change`` applied to edge ``index`` (or the top level if None)."""
    data = copy.deepcopy(tomllib.loads(THREE_REGION_TOML))
    target = data if index is None else data["edges"][index]
    for key, value in change.items():
        if value is _DELETE:
            del target[key]
        else:
            target[key] = value
    return data


_DELETE = object()


@pytest.mark.parametrize(
    ("change", "index", "message"),
    [
        ({"latitude": 90.5}, 2, "edges[2] (eu-west-1): latitude: Input should be less than or equal to 90"),
        ({"latitude": -91}, 2, "edges[2] (eu-west-1): latitude: Input should be greater than or equal to -90"),
        ({"longitude": 180.1}, 2, "edges[2] (eu-west-1): longitude: Input should be less than or equal to 180"),
        ({"latitude": "north"}, 2, "edges[2] (eu-west-1): latitude: Input should be a valid number"),
        ({"latitude": float("nan")}, 2, "edges[2] (eu-west-1): latitude:"),
        ({"bias_km": float("inf")}, 2, "edges[2] (eu-west-1): bias_km: Input should be a finite number"),
        ({"weight": 0}, 2, "edges[2] (eu-west-1): weight: Input should be greater than 0"),
        ({"weight": -1.5}, 2, "edges[2] (eu-west-1): weight: Input should be greater than 0"),
        ({"url": "ftp://x"}, 2, "edges[2] (eu-west-1): url: URL scheme must be http or https"),
        ({"url": "http://x/edge"}, 2, "edges[2] (eu-west-1): url: URL must be an origin"),
        ({"url": "http://x/?a=1"}, 2, "edges[2] (eu-west-1): url: URL must be an origin"),
        ({"url": "http://x#top"}, 2, "edges[2] (eu-west-1): url: URL must be an origin"),
        ({"url": "http:///nohost"}, 2, "edges[2] (eu-west-1): url: URL must name a host"),
        ({"url": "127.0.0.1:8080"}, 2, "edges[2] (eu-west-1): url: URL scheme must be http or https"),
        ({"admin_url": "http://u:p@x"}, 2, "edges[2] (eu-west-1): admin_url: URL must not carry credentials"),
        ({"admin_url": "http://x:99999"}, 2, "edges[2] (eu-west-1): admin_url: not a valid URL"),
        ({"country": "IRL"}, 2, "edges[2] (eu-west-1): country: country must be a 2-letter ISO 3166-1 code"),
        ({"continent": "EUR"}, 2, "edges[2] (eu-west-1): continent: continent must be one of AF, AN, AS"),
        ({"colour": "blue"}, 2, "edges[2] (eu-west-1): colour: Extra inputs are not permitted"),
        ({"enabled": "maybe"}, 2, "edges[2] (eu-west-1): enabled: Input should be a valid boolean"),
        ({"name": _DELETE}, 2, "edges[2]: name: Field required"),
        ({"name": "has space"}, 2, "edges[2] (has space): name: String should match pattern"),
        ({"region": ""}, 2, "edges[2] (eu-west-1): region: String should have at least 1 character"),
        ({"name": "us-east-1"}, 2, "edges[2] (us-east-1): name: duplicate edge name, first used by edges[0]"),
        ({"region_fallback": ["eu-west", "mars"]}, None, "region_fallback[1] (mars): no edge is in this region"),
        ({"replication": 0}, None, "replication: Input should be greater than or equal to 1"),
        ({"edges": []}, None, "edges: List should have at least 1 item"),
        ({"regions": []}, None, "regions: Extra inputs are not permitted"),
    ],
)
def test_invalid_entries_name_entry_and_field(change: dict[str, Any], index: int | None, message: str) -> None:
    with pytest.raises(InventoryError) as caught:
        parse_inventory(_mutated(change, index), "inv.toml")
    assert message in str(caught.value)
    assert str(caught.value).startswith("inv.toml: ")


def test_message_format_from_the_design_brief() -> None:
    data = _mutated({"name": "eu-west", "latitude": 100}, 1)
    expected = "edges[1] (eu-west): latitude: Input should be less than or equal to 90"
    with pytest.raises(InventoryError) as caught:
        parse_inventory(data)
    assert caught.value.problems == [expected]


def test_every_problem_is_reported() -> None:
    data = _mutated({"latitude": 100, "url": "ftp://x"}, 2)
    with pytest.raises(InventoryError) as caught:
        parse_inventory(data)
    assert [problem.split(":")[1].strip() for problem in caught.value.problems] == ["latitude", "url"]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("[[edges]\nname = 1", "not valid TOML"),
        ("edges = 5", "edges: Input should be a valid list"),
        ("", "edges: Field required"),
    ],
)
def test_file_level_errors(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "inventory.toml"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(InventoryError, match=message) as caught:
        load_inventory(path)
    assert str(path) in str(caught.value)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(InventoryError, match="cannot read"):
        load_inventory(tmp_path / "absent.toml")


def test_entries_are_immutable() -> None:
    edge = three_region().edges[0]
    with pytest.raises(ValidationError):
        edge.weight = 5.0
    assert isinstance(hash(edge), int)
    assert isinstance(edge, EdgeEntry)
