"""The edge inventory: one TOML file, read by the router and by every edge.

Why one file: the router needs each edge's position and public URL to send clients there, and an
edge needs the same list to know its own name and its peers.  Keeping it in one validated model
means a typo is caught at startup, naming the entry and the field, instead of surfacing as a
redirect to nowhere.

Shape of the file::

    region_fallback = ["eu-west", "us-east"]   # optional; where unlocatable clients go
    replication = 2                            # optional; owners per URL within a region

    [[edges]]
    name = "eu-west-1"
    region = "eu-west"
    latitude = 53.35
    longitude = -6.26
    url = "http://127.0.0.1:8081"
    admin_url = "http://127.0.0.1:9081"
    peer_url = "http://10.0.0.5:8081"   # optional; where the region's peers fill from it (default: url)
    country = "IE"          # optional, used when a client has a country but no coordinates
    continent = "EU"        # optional, likewise for a continent
    weight = 1.0            # optional; share of the region's keys (rendezvous hashing)
    bias_km = 0.0           # optional; added to every distance to push traffic away
    enabled = true          # optional; false keeps the entry but never routes to it

Rules (each violation raises :class:`InventoryError` naming the entry and field):

- unknown keys are errors (``extra="forbid"``); NaN and infinities are refused everywhere;
- ``url`` and ``admin_url`` are ``http``/``https`` origins: a host, an optional port, no path
  beyond ``/``, no query, fragment or credentials.  They are stored without the trailing ``/`` so
  ``edge.url + request.path_qs`` is the redirect target;
- edge names are unique; every ``region_fallback`` name is a region some edge belongs to.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlsplit

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

__all__ = [
    "CONTINENT_CODES",
    "EdgeEntry",
    "Inventory",
    "InventoryError",
    "load_inventory",
    "parse_inventory",
]

# The seven continent codes MaxMind and DB-IP use in ``continent.code``.
CONTINENT_CODES = frozenset({"AF", "AN", "AS", "EU", "NA", "OC", "SA"})


class InventoryError(ValueError):
    """The inventory file is unreadable or invalid; ``problems`` lists every finding."""

    def __init__(self, source: str, problems: list[str]) -> None:
        self.source = source
        self.problems = problems
        super().__init__(f"{source}: " + "; ".join(problems))


def _origin_url(value: str) -> str:
    """Accept an http(s) origin and return it without a trailing slash.

    Why so strict: the router appends the request's own path and query to this string, so any
    path, query or credentials here would silently corrupt every redirect.
    """
    try:
        parts = urlsplit(value)
        _ = parts.port  # raises ValueError on a non-numeric or out-of-range port
    except ValueError as exc:
        raise PydanticCustomError("url", "not a valid URL: {error}", {"error": str(exc)}) from None
    if parts.scheme not in ("http", "https"):
        raise PydanticCustomError("url", "URL scheme must be http or https")
    if not parts.hostname:
        raise PydanticCustomError("url", "URL must name a host")
    if parts.username is not None or parts.password is not None:
        raise PydanticCustomError("url", "URL must not carry credentials")
    if parts.path not in ("", "/") or parts.query or parts.fragment or value.endswith(("?", "#")):
        raise PydanticCustomError("url", "URL must be an origin: no path beyond '/', no query or fragment")
    return f"{parts.scheme}://{parts.netloc.lower()}"


def _country_code(value: str | None) -> str | None:
    """ISO 3166-1 alpha-2, upper-cased, because geo databases report it that way."""
    if value is None:
        return None
    code = value.strip().upper()
    if len(code) != 2 or not code.isascii() or not code.isalpha():
        raise PydanticCustomError("country", "country must be a 2-letter ISO 3166-1 code")
    return code


def _continent_code(value: str | None) -> str | None:
    """One of the seven codes geo databases use, so a comparison can ever match."""
    if value is None:
        return None
    code = value.strip().upper()
    if code not in CONTINENT_CODES:
        raise PydanticCustomError(
            "continent",
            "continent must be one of {codes}",
            {"codes": ", ".join(sorted(CONTINENT_CODES))},
        )
    return code


OriginUrl = Annotated[str, AfterValidator(_origin_url)]
CountryCode = Annotated[str | None, AfterValidator(_country_code)]
ContinentCode = Annotated[str | None, AfterValidator(_continent_code)]
Name = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")]


class EdgeEntry(BaseModel):
    """One edge node: where it is, how to reach it, and how much traffic it should take."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    name: Name
    region: Name
    latitude: float = Field(ge=-90.0, le=90.0)
    longitude: float = Field(ge=-180.0, le=180.0)
    url: OriginUrl
    admin_url: OriginUrl
    peer_url: OriginUrl | None = None  # where peers send peer-fill requests (default: url)
    weight: float = Field(default=1.0, gt=0.0)
    bias_km: float = 0.0
    enabled: bool = True
    country: CountryCode = None
    continent: ContinentCode = None

    @property
    def fill_url(self) -> str:
        """Where peers send peer-fill requests: ``peer_url``, else the public ``url``."""
        return self.peer_url or self.url


class Inventory(BaseModel):
    """Every edge, plus the cluster-wide routing knobs."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    edges: list[EdgeEntry] = Field(min_length=1)
    region_fallback: list[str] = Field(default_factory=list)
    replication: int = Field(default=1, ge=1)

    @field_validator("edges")
    @classmethod
    def _unique_names(cls, edges: list[EdgeEntry]) -> list[EdgeEntry]:
        """Names are keys in health maps and purge logs, so a duplicate would merge two edges."""
        first: dict[str, int] = {}
        for index, edge in enumerate(edges):
            if edge.name in first:
                raise PydanticCustomError(
                    "edgecache_entry",
                    "edges[{index}] ({name}): name: duplicate edge name, first used by edges[{first}]",
                    {"index": index, "name": edge.name, "first": first[edge.name]},
                )
            first[edge.name] = index
        return edges

    @model_validator(mode="after")
    def _fallback_regions_exist(self) -> Inventory:
        """A fallback to a region no edge is in would be a silent no-op; say so at startup."""
        known = set(self.regions())
        for index, region in enumerate(self.region_fallback):
            if region not in known:
                raise PydanticCustomError(
                    "edgecache_entry",
                    "region_fallback[{index}] ({region}): no edge is in this region (known: {known})",
                    {"index": index, "region": region, "known": ", ".join(self.regions())},
                )
        return self

    def regions(self) -> list[str]:
        """Region names in order of first appearance, the inventory's own preference order."""
        seen: dict[str, None] = {}
        for edge in self.edges:
            seen.setdefault(edge.region, None)
        return list(seen)

    def edge(self, name: str) -> EdgeEntry | None:
        """The edge called ``name``, if any."""
        for edge in self.edges:
            if edge.name == name:
                return edge
        return None

    def in_region(self, region: str) -> list[EdgeEntry]:
        """The edges of one region, in inventory order."""
        return [edge for edge in self.edges if edge.region == region]


def _describe(error: Mapping[str, Any], data: object) -> str:
    """Turn one pydantic error into ``edges[1] (eu-west): latitude: <message>``.

    Why: pydantic's own rendering names ``edges.1.latitude``; an operator scanning a file of
    many ``[[edges]]`` tables wants the edge's name too.
    """
    loc = tuple(error.get("loc", ()))
    message = str(error.get("msg", "invalid"))
    if error.get("type") == "edgecache_entry":
        return message  # our own validators already name the entry
    if len(loc) >= 2 and loc[0] == "edges" and isinstance(loc[1], int):
        index = loc[1]
        label = f"edges[{index}]"
        name = _raw_name(data, index)
        if name is not None:
            label += f" ({name})"
        field = ".".join(str(part) for part in loc[2:])
        return f"{label}: {field}: {message}" if field else f"{label}: {message}"
    if loc:
        return f"{'.'.join(str(part) for part in loc)}: {message}"
    return message


def _raw_name(data: object, index: int) -> str | None:
    """The ``name`` the file gave entry ``index``, even when that entry failed validation."""
    if not isinstance(data, Mapping):
        return None
    edges = data.get("edges")
    if not isinstance(edges, list) or not 0 <= index < len(edges):
        return None
    entry = edges[index]
    if isinstance(entry, Mapping):
        name = entry.get("name")
        if isinstance(name, str) and name:
            return name
    return None


def parse_inventory(data: Mapping[str, Any], source: str = "<inventory>") -> Inventory:
    """Validate already-decoded TOML; ``source`` only labels error messages."""
    try:
        return Inventory.model_validate(data)
    except ValidationError as exc:
        problems = [_describe(error, data) for error in exc.errors()]
        raise InventoryError(source, problems) from None


def load_inventory(path: str | Path) -> Inventory:
    """Read and validate an inventory TOML file, raising :class:`InventoryError` on any fault."""
    source = str(path)
    try:
        with open(path, "rb") as handle:
            data = tomllib.load(handle)
    except OSError as exc:
        raise InventoryError(source, [f"cannot read: {exc.strerror or exc}"]) from None
    except tomllib.TOMLDecodeError as exc:
        raise InventoryError(source, [f"not valid TOML: {exc}"]) from None
    return parse_inventory(data, source)
