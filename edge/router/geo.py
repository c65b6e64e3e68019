"""Client address → location, from a MaxMind-format (``.mmdb``) database.

Why a wrapper around ``geoip2``: the router must answer every request, so a lookup may never
raise, and it must say *how much* it knows — precise coordinates, only a country, only a
continent, or nothing — because the selection falls back differently in each case
(:mod:`edge.router.select`).  The wrapper also judges the coordinates: a record whose
``accuracy_radius`` is huge (MaxMind puts country-level answers at the country's centroid with a
radius of ~1000 km) would route a client in Seattle by the middle of Kansas, so such coordinates
are dropped and only the country and continent codes are passed on.

Accepted databases (all share MaxMind's record shape):

- City type — MaxMind GeoIP2-City / GeoLite2-City, DB-IP City Lite (``DBIP-City-Lite``; it has no
  ``accuracy_radius``, so its coordinates are trusted as given), and our own demo database
  (``edgecache-Demo-City``, built by ``python -m geodb.build``);
- Enterprise type, read as a City;
- Country type — GeoIP2/GeoLite2-Country, DB-IP Country Lite: country and continent only.

Not looked up at all (the answer would be meaningless and the lookup is wasted): loopback,
link-local, multicast, unspecified, RFC 1918 / unique-local private space, carrier-grade NAT and
reserved addresses.  The documentation ranges (192.0.2.0/24, 198.51.100.0/24, 203.0.113.0/24,
2001:db8::/32) *are* looked up, deliberately, although Python calls them "private": the demo
database places them in the demo's three regions.  Pass ``skip_networks`` to change the list.

The locator is not thread-safe across :meth:`GeoLocator.reload` and lookups in other threads; the
router calls both from its event loop.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

import geoip2.database
import geoip2.errors
import geoip2.models

__all__ = [
    "DEFAULT_MAX_ACCURACY_KM",
    "DEFAULT_SKIP_NETWORKS",
    "GeoDatabaseError",
    "GeoLocator",
    "GeoResult",
    "GeoSource",
    "IPAddress",
    "IPNetwork",
]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

GeoSource = Literal["city", "country-centroid", "country", "continent", "none"]

# Coarser than this, coordinates describe a country, not a client (MaxMind's country-level
# records carry 1000 km; city records are typically 1-200 km).
DEFAULT_MAX_ACCURACY_KM = 500

DEFAULT_SKIP_NETWORKS: tuple[IPNetwork, ...] = tuple(
    ipaddress.ip_network(text)
    for text in (
        "0.0.0.0/8",  # "this network", unspecified
        "10.0.0.0/8",  # RFC 1918
        "100.64.0.0/10",  # RFC 6598 carrier-grade NAT
        "127.0.0.0/8",  # loopback
        "169.254.0.0/16",  # link-local
        "172.16.0.0/12",  # RFC 1918
        "192.168.0.0/16",  # RFC 1918
        "224.0.0.0/4",  # multicast
        "240.0.0.0/4",  # reserved, includes broadcast
        "::/128",  # unspecified
        "::1/128",  # loopback
        "fc00::/7",  # unique local
        "fe80::/10",  # link-local
        "ff00::/8",  # multicast
    )
)


class GeoDatabaseError(ValueError):
    """The database cannot be opened or is of a type we cannot use."""


@dataclass(frozen=True, slots=True)
class GeoResult:
    """What the database says about one address, judged for routing.

    ``found`` — the database had a record for the address.  ``source`` — what is usable:

    - ``"city"``: ``latitude``/``longitude`` are set and precise enough to measure distance;
    - ``"country-centroid"``: the record had coordinates, but ``accuracy_km`` exceeded the limit,
      so they were dropped; route by ``country`` (then ``continent``);
    - ``"country"``: no coordinates, a country code; ``"continent"``: only a continent code;
    - ``"none"``: nothing usable (not found, private address, empty record, database error).

    ``reason`` is a short human sentence for logs and the router's decision endpoint.
    """

    found: bool
    latitude: float | None
    longitude: float | None
    accuracy_km: int | None
    country: str | None
    continent: str | None
    city: str | None
    source: GeoSource
    reason: str

    @property
    def has_coordinates(self) -> bool:
        return self.latitude is not None and self.longitude is not None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def unknown(cls, reason: str, *, found: bool = False) -> GeoResult:
        """A result that carries nothing usable."""
        return cls(found, None, None, None, None, None, None, "none", reason)


# geoip2 names places in the first of these locales that a record has (we ask for English).
LOCALES = ("en",)

# Keys that would clash with the parameters geoip2 passes itself when it unpacks a record (or a
# part of one) into a model (or record) class: such a record makes geoip2 fail.
_MODEL_CLASH = frozenset({"self", "locales", "ip_address", "prefix_len"})
_PLACE_CLASH = frozenset({"self", "locales"})
_RECORD_CLASH = frozenset({"self"})
_PLACES = ("continent", "country", "registered_country", "represented_country")
# Per record part geoip2 unpacks: the keys that would clash there.
_COUNTRY_PARTS = {key: _PLACE_CLASH for key in _PLACES} | {"maxmind": _RECORD_CLASH, "traits": _RECORD_CLASH}
_CITY_PARTS = _COUNTRY_PARTS | {"city": _PLACE_CLASH, "location": _RECORD_CLASH, "postal": _RECORD_CLASH}


def _raw_reader(reader: geoip2.database.Reader) -> Any:
    """The ``maxminddb`` reader inside geoip2's, if this geoip2 version has one where we expect it."""
    raw = getattr(reader, "_db_reader", None)
    return raw if callable(getattr(raw, "get", None)) else None


def _plain_record(data: object, city: bool) -> bool:
    """Would geoip2 build its model from ``data`` without error (and read it as ``_judge_raw`` does)?

    geoip2 unpacks every part with ``**(part or {})``: each must be empty, or a dict without keys
    that clash with geoip2's own arguments; a city's ``names`` must be a dict or absent (geoip2
    reads ``names.get``); ``traits.network`` absent (geoip2 parses it).  Real databases always
    pass; anything else goes the model way.
    """
    if not isinstance(data, dict) or not _MODEL_CLASH.isdisjoint(data):
        return False
    parts = _CITY_PARTS if city else _COUNTRY_PARTS
    for key, part in data.items():
        clash = parts.get(key)
        if clash is not None and part and (not isinstance(part, dict) or not clash.isdisjoint(part)):
            return False
    traits = data.get("traits")
    if traits and traits.get("network") is not None:
        return False
    if not city:
        return True
    place = data.get("city")
    if place and place.get("names") is not None and not isinstance(place["names"], dict):
        return False
    subdivisions = data.get("subdivisions")
    if not subdivisions:
        return True
    if not isinstance(subdivisions, list):
        return False
    return all(isinstance(item, dict) and _PLACE_CLASH.isdisjoint(item) for item in subdivisions)


def _normalise(address: IPAddress) -> IPAddress:
    """Look IPv4-mapped IPv6 (``::ffff:a.b.c.d``) up as the IPv4 address it is."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


class GeoLocator:
    """One open ``.mmdb`` database; ``locate()`` never raises.

    Open it once per process (the reader memory-maps the file) and close it on shutdown, or use
    it as a context manager.  :meth:`reload` reopens the same path — the router does so on
    SIGHUP after ``geoipupdate`` replaced the file.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        max_accuracy_km: int = DEFAULT_MAX_ACCURACY_KM,
        skip_networks: Sequence[IPNetwork] = DEFAULT_SKIP_NETWORKS,
    ) -> None:
        self.path = Path(path)
        self.max_accuracy_km = max_accuracy_km
        self._skip = tuple(skip_networks)
        # (version, first, last, network) per skipped network, in order: integer compares instead of
        # ``address in network`` (the same test: host bits of a network are zero)
        self._skip_ranges = tuple(
            (network.version, int(network.network_address), int(network.broadcast_address), network)
            for network in self._skip
        )
        self._reader, self._kind = self._open(self.path)
        self._raw = _raw_reader(self._reader)

    @staticmethod
    def _open(path: Path) -> tuple[geoip2.database.Reader, Literal["city", "enterprise", "country"]]:
        """Open and classify a database; fail loudly at startup rather than per request."""
        try:
            reader = geoip2.database.Reader(str(path), locales=list(LOCALES))
        except (OSError, ValueError) as exc:
            # maxminddb.InvalidDatabaseError is a RuntimeError subclass; catch below.
            raise GeoDatabaseError(f"{path}: cannot open GeoIP database: {exc}") from exc
        except RuntimeError as exc:
            raise GeoDatabaseError(f"{path}: not a MaxMind DB file: {exc}") from exc
        db_type = reader.metadata().database_type
        kind: Literal["city", "enterprise", "country"]
        if "City" in db_type:
            kind = "city"
        elif "Enterprise" in db_type:
            kind = "enterprise"
        elif "Country" in db_type:
            kind = "country"
        else:
            reader.close()
            raise GeoDatabaseError(
                f"{path}: database type {db_type!r} has no locations; use a City or Country database"
            )
        return reader, kind

    @property
    def database_type(self) -> str:
        return str(self._reader.metadata().database_type)

    @property
    def build_epoch(self) -> int:
        """When the database was built (seconds since the epoch), for status pages and staleness."""
        return int(self._reader.metadata().build_epoch)

    def reload(self) -> None:
        """Reopen ``path``; on failure the old database stays in service and the error is raised."""
        reader, kind = self._open(self.path)
        old = self._reader
        self._reader, self._kind, self._raw = reader, kind, _raw_reader(reader)
        old.close()

    def close(self) -> None:
        """Release the memory map; closing twice is harmless."""
        self._reader.close()

    def __enter__(self) -> GeoLocator:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def locate(self, address: IPAddress) -> GeoResult:
        """Everything usable about ``address``; never raises (a failure is ``source="none"``)."""
        try:
            return self._locate(address)
        except Exception as exc:  # a geo failure must degrade routing, never fail a request
            return GeoResult.unknown(f"lookup failed: {type(exc).__name__}: {exc}")

    def _locate(self, address: IPAddress) -> GeoResult:
        address = _normalise(address)
        version, value = address.version, int(address)
        for skip_version, first, last, network in self._skip_ranges:
            if skip_version == version and first <= value <= last:
                return GeoResult.unknown(f"{address} is in {network}: not locatable, not looked up")
        raw = self._raw
        if raw is not None:
            # The fast path: read geoip2's raw record (a dict) directly instead of building its
            # model objects, whenever the model would be built without error from it — then both
            # give the same values.  Anything unusual goes the model way below, errors included.
            data = raw.get(address)
            if data is None:
                return GeoResult.unknown(f"{address} not in database")
            city = self._kind != "country"
            if _plain_record(data, city):
                return self._judge_raw(data, city)
        try:
            if self._kind == "city":
                record: geoip2.models.Country = self._reader.city(address)
            elif self._kind == "enterprise":
                record = self._reader.enterprise(address)
            else:
                record = self._reader.country(address)
        except geoip2.errors.AddressNotFoundError:
            return GeoResult.unknown(f"{address} not in database")
        return self._judge(record)

    def _judge_raw(self, data: dict[str, Any], city: bool) -> GeoResult:
        """:meth:`_judge` on a raw record that :func:`_plain_record` accepted, as geoip2 would read it."""
        country = (data.get("country") or {}).get("iso_code") or None
        continent = (data.get("continent") or {}).get("code") or None
        if not city:
            return self._verdict(country, continent, None, None, None, None)
        names = (data.get("city") or {}).get("names")
        city_name = (names.get(LOCALES[0]) if names and LOCALES[0] in names else None) or None
        location = data.get("location") or {}
        return self._verdict(
            country, continent, city_name, location.get("latitude"), location.get("longitude"),
            location.get("accuracy_radius"),
        )  # fmt: skip

    def _judge(self, record: geoip2.models.Country) -> GeoResult:
        """Decide which parts of a record routing may rely on."""
        country = record.country.iso_code or None
        continent = record.continent.code or None
        city_name: str | None = None
        latitude = longitude = None
        accuracy: int | None = None
        if isinstance(record, geoip2.models.City):
            city_name = record.city.name or None
            location = record.location
            latitude, longitude = location.latitude, location.longitude
            accuracy = location.accuracy_radius
        return self._verdict(country, continent, city_name, latitude, longitude, accuracy)

    def _verdict(
        self,
        country: str | None,
        continent: str | None,
        city_name: str | None,
        latitude: float | None,
        longitude: float | None,
        accuracy: int | None,
    ) -> GeoResult:
        if latitude is not None and longitude is not None:
            if accuracy is None or accuracy <= self.max_accuracy_km:
                where = city_name or "no city name"
                precision = f"within {accuracy} km" if accuracy is not None else "no accuracy radius given"
                return GeoResult(
                    True, latitude, longitude, accuracy, country, continent, city_name, "city",
                    f"coordinates ({where}, {precision})",
                )
            if country is not None or continent is not None:
                return GeoResult(
                    True, None, None, accuracy, country, continent, city_name, "country-centroid",
                    f"accuracy {accuracy} km > {self.max_accuracy_km} km: coordinates are a centroid; "
                    f"using country {country or '-'} / continent {continent or '-'}",
                )
            return GeoResult.unknown(
                f"accuracy {accuracy} km > {self.max_accuracy_km} km and no country or continent",
                found=True,
            )
        if country is not None:
            return GeoResult(
                True, None, None, accuracy, country, continent, city_name, "country",
                f"no coordinates; country {country}",
            )
        if continent is not None:
            return GeoResult(
                True, None, None, accuracy, None, continent, city_name, "continent",
                f"no coordinates or country; continent {continent}",
            )
        return GeoResult.unknown("record has no location, country or continent", found=True)
