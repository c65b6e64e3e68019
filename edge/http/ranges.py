"""Range requests served from a stored complete response (RFC 9110 §14, §15.3.7, §15.5.17).

The cache stores whole representations and cuts ranges out of them itself, so it needs: the
``Range`` parser and satisfiability rules (§14.1.2, §14.2), the ``If-Range`` check (§13.1.5),
``Content-Range`` values (§14.4) and multipart/byteranges framing (§14.6, §15.3.7.2).

Choices where RFC 9110 leaves latitude (§14.2 "A server MAY ignore the Range header field"; "MAY
ignore or reject a Range header field that contains ... more than two overlapping ranges, or a set
of many small ranges that are not listed in ascending order"; §15.3.7.2 "MAY coalesce any of the
ranges that overlap, or that are separated by a gap that is smaller than the overhead of sending
multiple parts"):

* invalid syntax, an unknown unit, or more than ``MAX_RANGES`` range-specs → the Range is
  **ignored** (200 with the full representation): ignoring is always a correct answer and never
  costs more than the representation itself;
* if any two satisfiable ranges overlap or are less than ``COALESCE_GAP`` bytes apart, all ranges
  are sorted and **coalesced**; this bounds the response to at most the representation's size plus
  per-part overhead whatever the client asked.  Otherwise the ranges are kept in the requested
  order, as §15.3.7.2 asks ("SHOULD send the parts in the same order that the corresponding
  range-spec appeared");
* a zero-length representation: a suffix-range is satisfiable but names no byte we could put in a
  Content-Range, so the Range is ignored (§14.2 "MAY ignore a Range header field when the selected
  representation has no content" is the text for that); int-ranges alone are unsatisfiable → 416.
"""

from __future__ import annotations

import hashlib
import itertools
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Literal

from edge.http.coding import MARK_FIELD
from edge.http.dates import parse_http_date
from edge.http.headers import HeaderList, get_all
from edge.http.validation import last_modified_is_strong, parse_etag, stored_etag, strong_compare

MAX_RANGES = 100
COALESCE_GAP = 80  # RFC 9110 §15.3.7.2: "the typical overhead between parts ... is around 80 bytes"

_DIGITS = re.compile(r"[0-9]+", re.ASCII)
_BIG = 10**30  # stands in for any numeral too long to matter (RFC 9110 §14.1.2 overflow warning)
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+", re.ASCII)


@dataclass(frozen=True)
class ByteRange:
    """An inclusive byte range ``first``..``last`` of a representation (RFC 9110 §14.1.2)."""

    first: int
    last: int

    @property
    def length(self) -> int:
        return self.last - self.first + 1


@dataclass(frozen=True)
class RangeResult:
    """What to do with a request's ``Range`` for a representation of ``size`` bytes.

    ``kind``: ``"ignore"`` → send 200 with everything; ``"partial"`` → 206 with ``ranges`` (one
    range: a single part with ``Content-Range``; several: multipart/byteranges);
    ``"unsatisfiable"`` → 416 with ``Content-Range: bytes */size``.
    """

    kind: Literal["ignore", "partial", "unsatisfiable"]
    size: int
    ranges: tuple[ByteRange, ...] = ()

    @property
    def status(self) -> int:
        return {"ignore": 200, "partial": 206, "unsatisfiable": 416}[self.kind]

    @property
    def multipart(self) -> bool:
        return self.kind == "partial" and len(self.ranges) > 1

    @property
    def content_range(self) -> str | None:
        """The ``Content-Range`` for a single-part 206 or a 416 (RFC 9110 §14.4, §15.5.17)."""
        if self.kind == "unsatisfiable":
            return unsatisfied_content_range(self.size)
        if self.kind == "partial" and len(self.ranges) == 1:
            return content_range(self.ranges[0].first, self.ranges[0].last, self.size)
        return None


def _number(text: str) -> int | None:
    if not _DIGITS.fullmatch(text):
        return None
    return int(text) if len(text) <= 25 else _BIG


def _parse_spec(spec: str) -> tuple[int | None, int | None] | None:
    """One range-spec → (first, last) or (None, suffix_length); ``None`` if invalid (§14.1.2)."""
    first_text, dash, last_text = spec.partition("-")
    if not dash:
        return None
    if first_text == "":
        suffix = _number(last_text)
        return None if suffix is None else (None, suffix)
    first = _number(first_text)
    if first is None:
        return None
    if last_text == "":
        return (first, None)
    last = _number(last_text)
    if last is None or last < first:  # "invalid if the last-pos value is present and less than first-pos"
        return None
    return (first, last)


def _coalesce(ranges: list[ByteRange]) -> list[ByteRange]:
    merged: list[ByteRange] = []
    for current in sorted(ranges, key=lambda r: (r.first, r.last)):
        if merged and current.first <= merged[-1].last + COALESCE_GAP:
            previous = merged[-1]
            merged[-1] = ByteRange(previous.first, max(previous.last, current.last))
        else:
            merged.append(current)
    return merged


def _needs_coalescing(ranges: Sequence[ByteRange]) -> bool:
    ordered = sorted(ranges, key=lambda r: (r.first, r.last))
    return any(b.first <= a.last + COALESCE_GAP for a, b in itertools.pairwise(ordered))


def parse_range(value: str | None, size: int) -> RangeResult:
    """Evaluate a ``Range`` field value against a representation of ``size`` bytes (RFC 9110 §14.2).

    ``bytes=first-last``, ``first-``, ``-suffix`` and lists of them; the unit is compared
    case-insensitively (§14.1); OWS around commas is accepted and empty list elements are ignored
    (§5.6.1).  A ``last`` beyond the end is clipped, a suffix longer than the representation means
    all of it (§14.1.2).  Never raises for any ``value``; ``size`` must be >= 0.  Pass ``None`` when
    the request has no Range — or several Range lines (a singleton field; see ``range_value``).
    """
    if size < 0:
        raise ValueError("size must be >= 0")
    if value is None:
        return RangeResult("ignore", size)
    unit, eq, range_set = value.strip(" \t").partition("=")
    if not eq or not _TOKEN.fullmatch(unit) or unit.lower() != "bytes":
        return RangeResult("ignore", size)
    specs = [spec.strip(" \t") for spec in range_set.split(",")]
    specs = [spec for spec in specs if spec]
    if not specs or len(specs) > MAX_RANGES:
        return RangeResult("ignore", size)
    parsed = [_parse_spec(spec) for spec in specs]
    if any(item is None for item in parsed):
        return RangeResult("ignore", size)

    satisfiable: list[ByteRange] = []
    suffix_requested = False
    for item in parsed:
        assert item is not None
        first, last = item
        if first is None:
            assert last is not None
            if last == 0:
                continue  # "-0": a zero suffix-length is unsatisfiable
            suffix_requested = True
            if size == 0:
                continue
            satisfiable.append(ByteRange(max(size - last, 0), size - 1))
        elif first < size:
            satisfiable.append(ByteRange(first, size - 1 if last is None or last >= size else last))
    if size == 0 and suffix_requested:
        return RangeResult("ignore", size)
    if not satisfiable:
        return RangeResult("unsatisfiable", size)
    if len(satisfiable) > 1 and _needs_coalescing(satisfiable):
        satisfiable = _coalesce(satisfiable)
    return RangeResult("partial", size, tuple(satisfiable))


def range_value(request_headers: HeaderList, method: str = "GET") -> str | None:
    """The ``Range`` value to evaluate, or ``None`` when it must be ignored (RFC 9110 §14.2).

    "A server MUST ignore a Range header field received with a request method that is
    unrecognized or for which range handling is not defined. ... GET is the only method"; a
    ``Range`` on more than one line is not a valid singleton field value.
    """
    if method != "GET":
        return None
    values = get_all(request_headers, "range")
    return values[0] if len(values) == 1 else None


def if_range_allows(if_range_value: str | None, stored_headers: HeaderList) -> bool:
    """Evaluate ``If-Range`` against the stored response (RFC 9110 §13.1.5); ``True`` → honour Range.

    No If-Range → ``True``.  An entity-tag (recognised by a DQUOTE in the first three characters)
    must match the stored ETag by *strong* comparison — a weak tag never does.  An HTTP-date must be
    exactly equal to the stored Last-Modified, and that Last-Modified must be strong in the sense of
    §8.8.2.2 (the stored Date at least one second later); anything unparseable is false.  False
    means: ignore Range and send the whole representation (200).
    """
    if if_range_value is None:
        return True
    text = if_range_value.strip(" \t")
    if '"' in text[:3]:
        tag = parse_etag(text)
        current = stored_etag(stored_headers)
        return tag is not None and current is not None and strong_compare(tag, current)
    requested = parse_http_date(text)
    if requested is None or not last_modified_is_strong(stored_headers):
        return False
    if any(name.lower() == MARK_FIELD for name, _ in stored_headers):
        return False  # bytes this cache encoded: the same Last-Modified does not mean the same bytes
    modified_values = get_all(stored_headers, "last-modified")
    modified = parse_http_date(modified_values[0]) if modified_values else None
    return modified is not None and modified == requested


def content_range(first: int, last: int, size: int) -> str:
    """``Content-Range`` for a satisfied byte range: ``bytes first-last/size`` (RFC 9110 §14.4)."""
    if not 0 <= first <= last < size:
        raise ValueError(f"range {first}-{last} is not within a representation of {size} bytes")
    return f"bytes {first}-{last}/{size}"


def unsatisfied_content_range(size: int) -> str:
    """``Content-Range`` of a 416: ``bytes */size`` (RFC 9110 §14.4, §15.5.17)."""
    return f"bytes */{size}"


def _field_bytes(value: str) -> bytes:
    """A field value back to the octets it arrived as (aiohttp decodes with surrogateescape)."""
    try:
        return value.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        return value.encode("utf-8", "replace")


def multipart_content_type(boundary: str) -> str:
    """The 206's ``Content-Type`` for several ranges (RFC 9110 §14.6)."""
    return f"multipart/byteranges; boundary={boundary}"


def multipart_parts(
    ranges: Sequence[ByteRange], content_type: str | None, size: int, boundary: str
) -> Iterator[tuple[bytes, ByteRange | None]]:
    """The framing of a multipart/byteranges body (RFC 9110 §14.6, §15.3.7.2, RFC 2046 §5.1.1).

    Yields ``(header_bytes, range)`` per part — the caller writes ``header_bytes`` then the bytes
    of ``range`` from the stored body — and finally ``(closing_delimiter, None)``.  Each part has
    ``Content-Type`` (when the representation has one) and ``Content-Range``.  The total length is
    ``multipart_length``, for the response's Content-Length.
    """
    for index, byte_range in enumerate(ranges):
        lead = b"--" if index == 0 else b"\r\n--"
        lines = [lead + boundary.encode("ascii")]
        if content_type is not None:
            lines.append(b"Content-Type: " + _field_bytes(content_type))
        lines.append(b"Content-Range: " + content_range(byte_range.first, byte_range.last, size).encode("ascii"))
        yield b"\r\n".join(lines) + b"\r\n\r\n", byte_range
    yield b"\r\n--" + boundary.encode("ascii") + b"--\r\n", None


def multipart_length(ranges: Sequence[ByteRange], content_type: str | None, size: int, boundary: str) -> int:
    """Exact byte length of the multipart body ``multipart_parts`` frames."""
    framing = multipart_parts(ranges, content_type, size, boundary)
    return sum(len(head) + (part.length if part is not None else 0) for head, part in framing)


def multipart_boundary(seed: str) -> str:
    """A boundary derived from ``seed`` (e.g. the cache key + response time; this layer has no
    randomness or clock).  Hex of a SHA-256, 32 characters: valid per RFC 2046 §5.1.1 and, being
    derived from unpredictable-to-the-client data, practically never found in the content."""
    return hashlib.sha256(seed.encode("utf-8", "surrogatepass")).hexdigest()[:32]
