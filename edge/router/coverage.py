"""Coverage zones: operator overrides that pin client networks to an edge or a region.

Why: a geo database is a guess.  An operator often *knows* better — the office network is behind
the Frankfurt edge, a partner's IPv6 block peers directly with us in Singapore, a mislocated ISP
range should go west.  A coverage-zone file states that as data, and the selection
(:func:`edge.router.select.select_edge`) lets a matching zone win over distance, provided the
zone's edge (or an edge of its region) is healthy.

File format (TOML)::

    [[zones]]
    network = "10.0.0.0/8"
    edge = "eu-west-1"          # pin to one edge ...

    [[zones]]
    network = "2001:db8:2::/48"
    region = "ap-southeast"     # ... or to a region (rendezvous hashing picks the edge)
    name = "partner-sg"         # optional label, shown in routing decisions

Lookup is longest-prefix match, so a /24 inside a /8 overrides it.  Exactly one of ``edge`` or
``region`` per zone; networks must not have host bits set and must not repeat.  IPv4-mapped IPv6
addresses are looked up as IPv4.  Loading reads a file; everything after that is pure.
"""

from __future__ import annotations

import ipaddress
import tomllib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_core import PydanticCustomError

from edge.inventory import Inventory

__all__ = [
    "CoverageError",
    "CoverageMap",
    "CoverageZone",
    "load_coverage",
    "parse_coverage",
]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

_MAPPED = ipaddress.IPv6Network("::ffff:0:0/96")


class CoverageError(ValueError):
    """The coverage file is unreadable or invalid; ``problems`` lists every finding."""

    def __init__(self, source: str, problems: list[str]) -> None:
        self.source = source
        self.problems = problems
        super().__init__(f"{source}: " + "; ".join(problems))


class CoverageZone(BaseModel):
    """One override: clients in ``network`` go to ``edge``, or to a healthy edge of ``region``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    network: IPNetwork
    edge: str | None = Field(default=None, min_length=1)
    region: str | None = Field(default=None, min_length=1)
    name: str | None = None

    @field_validator("network", mode="before")
    @classmethod
    def _strict_network(cls, value: object) -> object:
        """Refuse host bits: ``10.0.0.1/8`` is usually a mistyped prefix, not a /8."""
        if isinstance(value, ipaddress.IPv4Network | ipaddress.IPv6Network):
            network: IPNetwork = value
        elif isinstance(value, str):
            try:
                network = ipaddress.ip_network(value.strip(), strict=True)
            except ValueError as exc:
                raise PydanticCustomError("network", "{error}", {"error": str(exc)}) from None
        else:
            raise PydanticCustomError("network", "must be a string such as '10.0.0.0/8' or '2001:db8::/32'")
        if isinstance(network, ipaddress.IPv6Network) and network.subnet_of(_MAPPED) and network.prefixlen >= 96:
            # Lookups see mapped addresses as IPv4, so store the zone as IPv4 too.
            base = network.network_address.ipv4_mapped
            assert base is not None
            network = ipaddress.IPv4Network((base, network.prefixlen - 96))
        return network

    @model_validator(mode="after")
    def _one_target(self) -> CoverageZone:
        if (self.edge is None) == (self.region is None):
            raise PydanticCustomError("target", "give exactly one of 'edge' or 'region'")
        return self

    @property
    def label(self) -> str:
        """How decisions name this zone: its ``name``, else its network."""
        return self.name or str(self.network)

    @property
    def target(self) -> str:
        return f"edge {self.edge}" if self.edge is not None else f"region {self.region}"


class _CoverageFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    zones: list[CoverageZone] = Field(default_factory=list)


class CoverageMap:
    """Longest-prefix-match table of :class:`CoverageZone`; immutable after construction."""

    def __init__(self, zones: Sequence[CoverageZone]) -> None:
        self.zones: tuple[CoverageZone, ...] = tuple(zones)
        # version → prefix length → network integer → zone.  At most 33 (IPv4) or 129 (IPv6)
        # dictionary probes per lookup, independent of the number of zones.
        self._table: dict[int, dict[int, dict[int, CoverageZone]]] = {4: {}, 6: {}}
        problems: list[str] = []
        first: dict[IPNetwork, int] = {}
        for index, zone in enumerate(self.zones):
            net = zone.network
            if net in first:
                problems.append(
                    f"zones[{index}] ({net}): network: duplicate network, first used by zones[{first[net]}]"
                )
                continue
            first[net] = index
            by_len = self._table[net.version].setdefault(net.prefixlen, {})
            by_len[int(net.network_address)] = zone
        if problems:
            raise CoverageError("<coverage>", problems)
        self._lengths = {
            version: sorted(by_len, reverse=True) for version, by_len in self._table.items()
        }

    def __len__(self) -> int:
        return len(self.zones)

    def lookup(self, address: IPAddress) -> CoverageZone | None:
        """The most specific zone containing ``address``, or ``None``."""
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        value = int(address)
        bits = address.max_prefixlen
        table = self._table[address.version]
        for length in self._lengths[address.version]:
            key = (value >> (bits - length)) << (bits - length) if length else 0
            zone = table[length].get(key)
            if zone is not None:
                return zone
        return None

    def check_against(self, inventory: Inventory) -> list[str]:
        """Names of edges or regions the inventory does not know, one message per zone."""
        edges = {edge.name for edge in inventory.edges}
        regions = set(inventory.regions())
        problems: list[str] = []
        for index, zone in enumerate(self.zones):
            if zone.edge is not None and zone.edge not in edges:
                problems.append(f"zones[{index}] ({zone.network}): edge: no edge named {zone.edge!r}")
            if zone.region is not None and zone.region not in regions:
                problems.append(f"zones[{index}] ({zone.network}): region: no region named {zone.region!r}")
        return problems


def _describe(error: Mapping[str, Any], data: object) -> str:
    """``zones[2] (10.0.0.0/8): edge: <message>`` — the entry by index and network, then the field."""
    loc = tuple(error.get("loc", ()))
    message = str(error.get("msg", "invalid"))
    if len(loc) >= 2 and loc[0] == "zones" and isinstance(loc[1], int):
        label = f"zones[{loc[1]}]"
        raw = data.get("zones") if isinstance(data, Mapping) else None
        if isinstance(raw, list) and 0 <= loc[1] < len(raw) and isinstance(raw[loc[1]], Mapping):
            network = raw[loc[1]].get("network")
            if isinstance(network, str):
                label += f" ({network})"
        field = ".".join(str(part) for part in loc[2:])
        return f"{label}: {field}: {message}" if field else f"{label}: {message}"
    if loc:
        return f"{'.'.join(str(part) for part in loc)}: {message}"
    return message


def parse_coverage(
    data: Mapping[str, Any], source: str = "<coverage>", inventory: Inventory | None = None
) -> CoverageMap:
    """Validate decoded TOML into a :class:`CoverageMap`; with ``inventory``, check the names too."""
    try:
        parsed = _CoverageFile.model_validate(data)
    except ValidationError as exc:
        raise CoverageError(source, [_describe(error, data) for error in exc.errors()]) from None
    try:
        coverage = CoverageMap(parsed.zones)
    except CoverageError as exc:
        raise CoverageError(source, exc.problems) from None
    if inventory is not None:
        problems = coverage.check_against(inventory)
        if problems:
            raise CoverageError(source, problems)
    return coverage


def load_coverage(path: str | Path, inventory: Inventory | None = None) -> CoverageMap:
    """Read a coverage-zone TOML file; raises :class:`CoverageError` naming the faulty entry."""
    source = str(path)
    try:
        with open(path, "rb") as handle:
            data = tomllib.load(handle)
    except OSError as exc:
        raise CoverageError(source, [f"cannot read: {exc.strerror or exc}"]) from None
    except tomllib.TOMLDecodeError as exc:
        raise CoverageError(source, [f"not valid TOML: {exc}"]) from None
    return parse_coverage(data, source, inventory)
