"""Compile ``geodb/source.csv`` into a GeoIP2-City-compatible ``.mmdb`` database.

    python -m geodb.build [--source geodb/source.csv] [--out geodb/demo-city.mmdb]

Why we build our own: the demo and the tests need addresses that land in known places, and no
real database can be shipped (licences) or relied on to keep an address in one city.  The output
is read by the same code path as a real MaxMind or DB-IP file — ``geoip2.database.Reader.city()``
— so the router never has a demo-only branch.

What the file looks like to a reader:

- metadata: ``database_type`` ``edgecache-Demo-City`` (readers only check that it contains
  "City"), ``languages`` ``["en"]``, ``ip_version`` 6, record size chosen by the writer;
- records shaped like MaxMind's: ``continent {code, names}``, ``country`` and
  ``registered_country {iso_code, names}``, ``city {names}``,
  ``location {latitude, longitude, accuracy_radius}`` — each part only when the row has it;
- IPv4 rows are stored where an IPv6 database keeps IPv4 (``::a.b.c.d``, which is where readers
  look up an IPv4 address) and, as MaxMind does, aliased at ``::ffff:a.b.c.d`` (IPv4-mapped) and
  ``2002:aabb:ccdd::`` (6to4), so those IPv6 spellings of an IPv4 client resolve the same.

The build sorts networks widest first before inserting (the writer replaces a whole subtree when
a wider network is inserted after a narrower one), writes to a temporary file and renames it into
place (a router reopening on SIGHUP never sees half a file), then reopens the result with
``maxminddb`` and checks every row's answer before reporting success.  ``SOURCE_DATE_EPOCH`` or
``--build-epoch`` fixes the metadata timestamp, making the output byte-for-byte reproducible.
"""

from __future__ import annotations

import argparse
import csv
import ipaddress
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import maxminddb
from mmdb_writer import MMDBWriter
from netaddr import IPNetwork as NetaddrNetwork
from netaddr import IPSet

from edge.version import add_version_flag

__all__ = [
    "COLUMNS",
    "DEFAULT_DATABASE_TYPE",
    "DEFAULT_OUT",
    "DEFAULT_SOURCE",
    "SourceError",
    "SourceRow",
    "build",
    "main",
    "parse_source",
    "read_source",
    "verify",
]

HERE = Path(__file__).resolve().parent
DEFAULT_SOURCE = HERE / "source.csv"
DEFAULT_OUT = HERE / "demo-city.mmdb"
DEFAULT_DATABASE_TYPE = "edgecache-Demo-City"
DESCRIPTION = "edgecache demo City database (invented locations; not for real routing)"

COLUMNS = ("network", "country", "continent", "city", "latitude", "longitude", "accuracy_radius", "region_hint")

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

CONTINENT_NAMES = {
    "AF": "Africa",
    "AN": "Antarctica",
    "AS": "Asia",
    "EU": "Europe",
    "NA": "North America",
    "OC": "Oceania",
    "SA": "South America",
}

# English names for the countries a demo is likely to use; any other code is named by itself.
COUNTRY_NAMES = {
    "AE": "United Arab Emirates",
    "AR": "Argentina",
    "AU": "Australia",
    "BR": "Brazil",
    "CA": "Canada",
    "CL": "Chile",
    "CN": "China",
    "DE": "Germany",
    "EG": "Egypt",
    "ES": "Spain",
    "FR": "France",
    "GB": "United Kingdom",
    "HK": "Hong Kong",
    "ID": "Indonesia",
    "IE": "Ireland",
    "IN": "India",
    "IT": "Italy",
    "JP": "Japan",
    "KE": "Kenya",
    "KR": "South Korea",
    "LY": "Libya",
    "MX": "Mexico",
    "NG": "Nigeria",
    "NL": "Netherlands",
    "NZ": "New Zealand",
    "PL": "Poland",
    "RU": "Russia",
    "SE": "Sweden",
    "SG": "Singapore",
    "TR": "Türkiye",
    "US": "United States",
    "ZA": "South Africa",
}

# IPv6 space that mirrors IPv4 in the database; a source row there would collide with IPv4 rows.
_IPV4_SUBTREE = ipaddress.IPv6Network("::/96")
_MAPPED = ipaddress.IPv6Network("::ffff:0:0/96")
_SIX_TO_FOUR = ipaddress.IPv6Network("2002::/16")


class SourceError(ValueError):
    """A source row is invalid; the message names the file, line and column."""


@dataclass(frozen=True, slots=True)
class SourceRow:
    """One validated line of the source file."""

    line: int
    network: IPNetwork
    country: str | None
    continent: str
    city: str | None
    latitude: float | None
    longitude: float | None
    accuracy_radius: int | None
    region_hint: str | None

    def record(self) -> dict[str, Any]:
        """The record as MaxMind shapes it; parts the row lacks are left out, not emptied."""
        record: dict[str, Any] = {
            "continent": {"code": self.continent, "names": {"en": CONTINENT_NAMES[self.continent]}},
        }
        if self.country is not None:
            country = {"iso_code": self.country, "names": {"en": COUNTRY_NAMES.get(self.country, self.country)}}
            record["country"] = country
            record["registered_country"] = dict(country)
        if self.city is not None:
            record["city"] = {"names": {"en": self.city}}
        if self.latitude is not None and self.longitude is not None and self.accuracy_radius is not None:
            record["location"] = {
                "latitude": self.latitude,
                "longitude": self.longitude,
                "accuracy_radius": self.accuracy_radius,
            }
        return record

    def tree_networks(self) -> list[ipaddress.IPv6Network]:
        """Where this row lives in the 128-bit tree, aliases included (see the module docstring)."""
        if isinstance(self.network, ipaddress.IPv6Network):
            return [self.network]
        value, length = int(self.network.network_address), self.network.prefixlen
        return [
            ipaddress.IPv6Network((value, 96 + length)),
            ipaddress.IPv6Network((int(_MAPPED.network_address) | value, 96 + length)),
            ipaddress.IPv6Network((int(_SIX_TO_FOUR.network_address) | (value << 80), 16 + length)),
        ]


def _fail(source: str, line: int, column: str, message: str) -> SourceError:
    return SourceError(f"{source}:{line}: {column}: {message}")


def _parse_row(fields: dict[str, str], source: str, line: int) -> SourceRow:
    def text(column: str) -> str | None:
        value = fields[column].strip()
        return value or None

    raw_network = text("network")
    if raw_network is None:
        raise _fail(source, line, "network", "required")
    try:
        network = ipaddress.ip_network(raw_network, strict=True)
    except ValueError as exc:
        raise _fail(source, line, "network", str(exc)) from None
    if isinstance(network, ipaddress.IPv6Network) and any(
        network.subnet_of(space) for space in (_IPV4_SUBTREE, _MAPPED, _SIX_TO_FOUR)
    ):
        raise _fail(source, line, "network", "this IPv6 space mirrors IPv4; write the IPv4 network instead")

    country = text("country")
    if country is not None:
        country = country.upper()
        if len(country) != 2 or not country.isascii() or not country.isalpha():
            raise _fail(source, line, "country", f"{country!r} is not a 2-letter ISO 3166-1 code")
    continent = (text("continent") or "").upper()
    if continent not in CONTINENT_NAMES:
        raise _fail(source, line, "continent", f"required, one of {' '.join(sorted(CONTINENT_NAMES))}")
    city = text("city")
    if city is not None and country is None:
        raise _fail(source, line, "city", "a city needs a country")

    coordinates: list[float | None] = []
    for column, limit in (("latitude", 90.0), ("longitude", 180.0)):
        value = text(column)
        if value is None:
            coordinates.append(None)
            continue
        try:
            number = float(value)
        except ValueError:
            raise _fail(source, line, column, f"{value!r} is not a number") from None
        if not -limit <= number <= limit:  # also refuses NaN
            raise _fail(source, line, column, f"{number} is outside [-{limit:g}, {limit:g}]")
        coordinates.append(number)
    latitude, longitude = coordinates
    if (latitude is None) != (longitude is None):
        raise _fail(source, line, "latitude/longitude", "give both or neither")

    accuracy: int | None = None
    raw_accuracy = text("accuracy_radius")
    if raw_accuracy is not None:
        if not raw_accuracy.isascii() or not raw_accuracy.isdigit() or not 1 <= int(raw_accuracy) <= 65535:
            raise _fail(source, line, "accuracy_radius", f"{raw_accuracy!r} is not a whole number of km (1-65535)")
        accuracy = int(raw_accuracy)
    if latitude is not None and accuracy is None:
        raise _fail(source, line, "accuracy_radius", "required with coordinates (readers judge precision by it)")
    if latitude is None and accuracy is not None:
        raise _fail(source, line, "accuracy_radius", "only meaningful with coordinates")

    return SourceRow(line, network, country, continent, city, latitude, longitude, accuracy, text("region_hint"))


def parse_source(text: str, source: str = "<source>") -> list[SourceRow]:
    """Parse the CSV text: comments and blank lines skipped, header checked, rows validated."""
    header: list[str] | None = None
    rows: list[SourceRow] = []
    seen: dict[IPNetwork, int] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        values = next(csv.reader([line]))
        if header is None:
            header = [value.strip() for value in values]
            if tuple(header) != COLUMNS:
                raise _fail(source, number, "header", f"expected {','.join(COLUMNS)}")
            continue
        if len(values) != len(COLUMNS):
            raise _fail(source, number, "row", f"expected {len(COLUMNS)} columns, found {len(values)}")
        row = _parse_row(dict(zip(COLUMNS, values, strict=True)), source, number)
        if row.network in seen:
            raise _fail(source, number, "network", f"{row.network} already given on line {seen[row.network]}")
        seen[row.network] = number
        rows.append(row)
    if header is None:
        raise SourceError(f"{source}: no header line")
    if not rows:
        raise SourceError(f"{source}: no networks")
    return rows


def read_source(path: str | Path) -> list[SourceRow]:
    """Read and validate a source file (UTF-8)."""
    return parse_source(Path(path).read_text(encoding="utf-8"), str(path))


class _Writer(MMDBWriter):
    """``MMDBWriter`` with a settable build epoch, for reproducible output."""

    def __init__(self, build_epoch: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._build_epoch = build_epoch

    def _build_meta(self) -> dict[str, Any]:
        meta = super()._build_meta()
        meta["build_epoch"] = self._build_epoch
        return meta


def _default_epoch() -> int:
    value = os.environ.get("SOURCE_DATE_EPOCH", "").strip()
    return int(value) if value.isdigit() else int(time.time())


def build(
    rows: Sequence[SourceRow],
    out: str | Path,
    *,
    database_type: str = DEFAULT_DATABASE_TYPE,
    build_epoch: int | None = None,
) -> None:
    """Write ``rows`` to ``out`` atomically (temporary file in the same directory, then rename)."""
    writer = _Writer(
        _default_epoch() if build_epoch is None else build_epoch,
        ip_version=6,
        ipv4_compatible=True,
        database_type=database_type,
        languages=["en"],
        description={"en": DESCRIPTION},
    )
    placed: list[tuple[ipaddress.IPv6Network, str, SourceRow]] = []
    for row in rows:
        primary, *aliases = row.tree_networks()
        # The primary IPv4 network goes in as IPv4: the writer's ipv4_compatible mode files it
        # under ::a.b.c.d, exactly where readers look IPv4 addresses up.
        placed.append((primary, str(row.network), row))
        placed.extend((alias, str(alias), row) for alias in aliases)
    placed.sort(key=lambda item: (item[0].prefixlen, int(item[0].network_address)))
    for _, network, row in placed:
        writer.insert_network(IPSet([NetaddrNetwork(network)]), row.record())
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    temporary = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    try:
        writer.to_db_file(str(temporary))
        os.replace(temporary, out)
    finally:
        temporary.unlink(missing_ok=True)


def _expected(rows: Sequence[SourceRow], address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> SourceRow:
    containing = [row for row in rows if row.network.version == address.version and address in row.network]
    return max(containing, key=lambda row: row.network.prefixlen)


def verify(path: str | Path, rows: Sequence[SourceRow], *, database_type: str = DEFAULT_DATABASE_TYPE) -> list[str]:
    """Reopen the database and check metadata and every row's answer; returns problems (empty = good).

    Each row is probed at its first and last address, as IPv4 (when it is IPv4) and through both
    IPv6 aliases; the expected answer is the most specific source row containing the probe.
    """
    problems: list[str] = []
    with maxminddb.open_database(str(path)) as reader:
        meta = reader.metadata()
        if meta.database_type != database_type:
            problems.append(f"database_type is {meta.database_type!r}, expected {database_type!r}")
        if meta.ip_version != 6 or list(meta.languages) != ["en"]:
            problems.append(f"metadata ip_version={meta.ip_version} languages={meta.languages}")
        for row in rows:
            for probe in (row.network.network_address, row.network.broadcast_address):
                expected = _expected(rows, probe).record()
                spellings: list[str] = [str(probe)]
                if isinstance(probe, ipaddress.IPv4Address):
                    spellings.append(f"::ffff:{probe}")
                    spellings.append(str(ipaddress.IPv6Address(int(_SIX_TO_FOUR.network_address) | (int(probe) << 80))))
                for spelling in spellings:
                    found = reader.get(spelling)
                    if found != expected:
                        problems.append(f"line {row.line}: {spelling} reads {found!r}, expected {expected!r}")
    return problems


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m geodb.build", description=__doc__.splitlines()[0])
    add_version_flag(parser, "python -m geodb.build")
    parser.add_argument("--source", type=Path, default=DEFAULT_SOURCE, help="CSV source (default: %(default)s)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="database to write (default: %(default)s)")
    parser.add_argument("--database-type", default=DEFAULT_DATABASE_TYPE, help="must contain 'City' for geoip2")
    parser.add_argument(
        "--build-epoch", type=int, default=None, help="metadata timestamp (default: $SOURCE_DATE_EPOCH or now)"
    )
    args = parser.parse_args(argv)
    try:
        rows = read_source(args.source)
    except (OSError, SourceError) as exc:
        print(f"geodb.build: {exc}", file=sys.stderr)
        return 2
    build(rows, args.out, database_type=args.database_type, build_epoch=args.build_epoch)
    problems = verify(args.out, rows, database_type=args.database_type)
    if problems:
        for problem in problems:
            print(f"geodb.build: {args.out}: {problem}", file=sys.stderr)
        return 1
    v4 = sum(1 for row in rows if row.network.version == 4)
    print(
        f"wrote {args.out}: {len(rows)} networks ({v4} IPv4, {len(rows) - v4} IPv6), "
        f"{args.out.stat().st_size} bytes, verified"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
