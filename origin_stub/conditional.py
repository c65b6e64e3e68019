"""Validators, conditional requests and byte ranges, as the origin side of RFC 9110 sees them.

Pure functions (no aiohttp, no clock) so the stub's answers are easy to reason about: the edge's
tests assume the origin gets these rules right, so they are kept small and tested on their own.
"""

from __future__ import annotations

import datetime as dt
import email.utils
import re
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = [
    "ByteRange",
    "evaluate_preconditions",
    "format_http_date",
    "if_range_allows",
    "parse_etag_list",
    "parse_http_date",
    "parse_range",
    "quote_etag",
    "strong_match",
    "weak_match",
]

_ETAG_RE = re.compile(r'(W/)?"[^"]*"')


def quote_etag(value: str) -> str:
    """Return *value* as an entity-tag, quoting it when the caller passed a bare opaque value."""
    value = value.strip()
    if _ETAG_RE.fullmatch(value):
        return value
    return f'"{value}"'


def _opaque(tag: str) -> str:
    return tag[2:] if tag.startswith("W/") else tag


def weak_match(a: str, b: str) -> bool:
    """RFC 9110 8.8.3.2 weak comparison: opaque-tags equal, W/ ignored (used by If-None-Match)."""
    return _opaque(a) == _opaque(b)


def strong_match(a: str, b: str) -> bool:
    """RFC 9110 8.8.3.2 strong comparison: both strong and equal (used by If-Range)."""
    return not a.startswith("W/") and not b.startswith("W/") and a == b


def parse_etag_list(value: str) -> list[str] | None:
    """Parse an If-None-Match / If-Match value: ``None`` means ``*``, else the entity-tags.

    Quoted tags are found with a regex because an opaque-tag may itself contain commas. Bare
    tokens (a common client mistake) are accepted as if quoted, to be forgiving in tests.
    """
    if value.strip() == "*":
        return None
    tags = [m.group(0) for m in _ETAG_RE.finditer(value)]
    if tags:
        return tags
    return [quote_etag(part) for part in value.split(",") if part.strip()]


def parse_http_date(value: str) -> dt.datetime | None:
    """Parse an HTTP-date (any of the three RFC 9110 5.6.7 formats) to an aware UTC datetime."""
    try:
        parsed = email.utils.parsedate_to_datetime(value.strip())
    except (TypeError, ValueError, IndexError):
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=dt.UTC)
    return parsed.astimezone(dt.UTC)


def format_http_date(moment: dt.datetime | float) -> str:
    """IMF-fixdate, the only HTTP-date form a server should generate (RFC 9110 5.6.7)."""
    if isinstance(moment, dt.datetime):
        moment = moment.timestamp()
    return email.utils.formatdate(moment, usegmt=True)


def evaluate_preconditions(
    *,
    if_none_match: str | None,
    if_modified_since: str | None,
    etag: str | None,
    last_modified: dt.datetime | None,
) -> bool:
    """True when a GET/HEAD should be answered 304 (RFC 9110 13.2.2 steps 3 and 4).

    If-Modified-Since is only looked at when If-None-Match is absent, because an entity-tag is
    the more precise validator and a client sending both wants the tag to decide.
    """
    if if_none_match is not None:
        tags = parse_etag_list(if_none_match)
        if tags is None:
            return True  # "*": the object always has a current representation
        return etag is not None and any(weak_match(tag, etag) for tag in tags)
    if if_modified_since is not None and last_modified is not None:
        since = parse_http_date(if_modified_since)
        return since is not None and last_modified <= since
    return False


def if_range_allows(if_range: str | None, *, etag: str | None, last_modified: dt.datetime | None) -> bool:
    """RFC 9110 13.1.5: a Range applies only if If-Range is absent or names the current version.

    An entity-tag must match strongly; a date must equal Last-Modified exactly.
    """
    if if_range is None:
        return True
    value = if_range.strip()
    if value.startswith('"') or value.startswith("W/"):
        return etag is not None and strong_match(value, etag)
    when = parse_http_date(value)
    return when is not None and last_modified is not None and when == last_modified


@dataclass(frozen=True, slots=True)
class ByteRange:
    """A satisfiable byte range, end exclusive."""

    start: int
    end: int

    @property
    def length(self) -> int:
        return self.end - self.start

    def content_range(self, size: int) -> str:
        return f"bytes {self.start}-{self.end - 1}/{size}"


_SPEC_RE = re.compile(r"(\d*)-(\d*)")


def parse_range(value: str, size: int) -> Sequence[ByteRange] | None:
    """Parse a Range header against a representation of *size* bytes (RFC 9110 14.1.2, 14.2).

    Returns ``None`` when the header must be ignored (other unit, bad syntax: serve 200), an empty
    sequence when it is valid but nothing is satisfiable (serve 416), else the ranges in order.
    """
    unit, sep, specs = value.partition("=")
    if not sep or unit.strip().lower() != "bytes":
        return None
    ranges: list[ByteRange] = []
    seen_any = False
    for raw in specs.split(","):
        spec = raw.strip()
        if not spec:
            continue
        match = _SPEC_RE.fullmatch(spec)
        if match is None:
            return None
        first, last = match.group(1), match.group(2)
        seen_any = True
        if first:
            start = int(first)
            if last and int(last) < start:
                return None
            end = min(int(last) + 1, size) if last else size
            if start < size:
                ranges.append(ByteRange(start, end))
        elif last:
            suffix = int(last)
            if suffix > 0 and size > 0:
                ranges.append(ByteRange(max(0, size - suffix), size))
        else:
            return None  # "-" alone
    if not seen_any:
        return None
    return ranges
