"""Partial content a shared cache keeps (RFC 9111 §3.3-3.4, RFC 9110 §14.4, §15.3.7) and slices.

A 206 for a single range is stored as a *part* of its representation, under the same key as the
complete response but as a variant of its own (so every purge and invalidation of the key covers
it).  Parts are named so that they can never be mistaken for a complete response: their variant
ids start with ``~``, which a Vary variant id (hex) never does.  Two kinds:

* ``~part/<vary variant>/<first>-<last>``: whatever range a client asked for; parts of the same
  representation that touch or overlap are combined into one, and a set covering everything
  becomes the complete response (§3.4);
* ``~slice/<size>/<index>``: the ``index``-th slice of ``size`` bytes (nginx's slice module), addressed
  directly so a request never lists them.  A slice records the Vary of its response and is used
  only by requests it matches.

Combining and serving several parts as one needs them to be the same representation: "the stored
response and the new response have the same strong validator" (§3.4).  Nothing here does I/O.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from edge.http.headers import HeaderList, get_all, get_first
from edge.http.validation import last_modified_is_strong, stored_etag

PART_MARK = "~"

_CONTENT_RANGE = re.compile(r"bytes[ \t]+([0-9]{1,19})-([0-9]{1,19})/([0-9]{1,19}|\*)", re.ASCII | re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class ContentRange:
    """A satisfied ``Content-Range``: bytes ``first``..``last`` of ``complete`` (None: unknown, ``*``)."""

    first: int
    last: int
    complete: int | None

    @property
    def length(self) -> int:
        return self.last - self.first + 1

    @property
    def whole(self) -> bool:
        """Covers the entire representation."""
        return self.first == 0 and self.complete is not None and self.last == self.complete - 1


def parse_content_range(value: str | None) -> ContentRange | None:
    """``bytes first-last/complete`` (RFC 9110 §14.4); None when invalid, unsatisfied or inconsistent.

    Invalid includes ``last < first`` and ``last >= complete`` ("A Content-Range field value is
    invalid if it contains a range-resp that has a last-pos value less than its first-pos value,
    or a complete-length value less than or equal to its last-pos value").
    """
    if value is None:
        return None
    match = _CONTENT_RANGE.fullmatch(value.strip(" \t"))
    if match is None:
        return None
    first, last = int(match.group(1)), int(match.group(2))
    complete = None if match.group(3) == "*" else int(match.group(3))
    if last < first or (complete is not None and last >= complete):
        return None
    return ContentRange(first, last, complete)


def single_part(status: int, headers: HeaderList) -> ContentRange | None:
    """The range a 206 carries when it is one part of a known-length representation, else None.

    A multipart/byteranges 206 has no ``Content-Range`` of its own (§15.3.7.2) and is not stored;
    nor is a part of unknown complete length (it could never be combined or served beyond itself).
    """
    if status != 206:
        return None
    values = get_all(headers, "content-range")
    if len(values) != 1:
        return None
    content_type = (get_first(headers, "content-type") or "").strip().lower()
    if content_type.startswith("multipart/byteranges"):
        return None
    parsed = parse_content_range(values[0])
    if parsed is None or parsed.complete is None:
        return None
    return parsed


def strong_validator(headers: HeaderList) -> tuple[str, str] | None:
    """The strong validator of a response: a strong ETag, else a strong Last-Modified (RFC 9110
    §8.8.2.2: a Date at least a second later); None when there is neither."""
    tag = stored_etag(headers)
    if tag is not None:
        return None if tag.weak else ("etag", tag.opaque)
    if last_modified_is_strong(headers):
        modified = get_first(headers, "last-modified")
        assert modified is not None
        return ("last-modified", modified.strip())
    return None


def same_representation(a: HeaderList, b: HeaderList) -> bool:
    """May bytes of these two responses be combined (RFC 9111 §3.4)?  Both need a strong validator
    and the validators must be equal: an ETag compared strongly, else the same strong Last-Modified."""
    validator = strong_validator(a)
    return validator is not None and validator == strong_validator(b)


def consistent(reference: HeaderList, other: HeaderList) -> bool:
    """May a slice be served after another in one response?  Same strong validator when the
    reference has one; without one (nginx's slice module compares ETags only), the same ETag and
    Last-Modified values as sent, so a changed object is still caught whenever the origin says so."""
    if strong_validator(reference) is not None:
        return same_representation(reference, other)
    return all(
        (get_first(reference, name) or "").strip() == (get_first(other, name) or "").strip()
        for name in ("etag", "last-modified")
    )


def part_variant(base: str, first: int, last: int) -> str:
    return f"{PART_MARK}part/{base}/{first}-{last}"


def slice_variant(size: int, index: int) -> str:
    return f"{PART_MARK}slice/{size}/{index}"


def is_part(variant: str) -> bool:
    """Is this variant id a part or slice (never selected as a complete response)?"""
    return variant.startswith(PART_MARK)


def is_slice(variant: str) -> bool:
    return variant.startswith(PART_MARK + "slice/")


def part_base(variant: str) -> str | None:
    """The Vary variant id a ``~part/`` id belongs to."""
    if not variant.startswith(PART_MARK + "part/"):
        return None
    return variant[len(PART_MARK + "part/") :].rpartition("/")[0]


def slice_request_range(index: int, size: int) -> str:
    """The ``Range`` value that asks the origin for slice ``index`` of ``size`` bytes."""
    return f"bytes={index * size}-{(index + 1) * size - 1}"


def slice_expected(index: int, size: int, complete: int) -> tuple[int, int] | None:
    """The byte range slice ``index`` covers in a representation of ``complete`` bytes (None: past the end)."""
    first = index * size
    if first >= complete:
        return None
    return first, min(first + size, complete) - 1


def slice_matches(index: int, size: int, got: ContentRange) -> bool:
    """Does a 206 answer the request for slice ``index`` exactly (an origin may clip the end only)?"""
    if got.complete is None:
        return False
    return slice_expected(index, size, got.complete) == (got.first, got.last)


def slices_touching(first: int, last: int, size: int) -> range:
    """Indexes of the slices holding bytes ``first``..``last``."""
    return range(first // size, last // size + 1)


def covering(parts: Sequence[ContentRange], first: int, last: int) -> int | None:
    """Index in ``parts`` of one part holding all of ``first``..``last`` (the largest such), or None."""
    best: int | None = None
    for index, part in enumerate(parts):
        if part.first <= first and last <= part.last and (best is None or part.length > parts[best].length):
            best = index
    return best


def connected(new: ContentRange, others: Sequence[ContentRange]) -> list[int]:
    """Indexes of the ``others`` that join ``new`` into one contiguous run (touching or overlapping,
    transitively), in order of their first byte."""
    low, high = new.first, new.last
    chosen: set[int] = set()
    changed = True
    while changed:
        changed = False
        for index, part in enumerate(others):
            if index not in chosen and part.first <= high + 1 and part.last >= low - 1:
                chosen.add(index)
                low, high = min(low, part.first), max(high, part.last)
                changed = True
    return sorted(chosen, key=lambda index: (others[index].first, others[index].last))


def with_content_range(headers: HeaderList, part: ContentRange | None) -> list[tuple[str, str]]:
    """``headers`` with their ``Content-Range`` replaced by ``part``'s (removed when ``part`` is None)."""
    kept = [(name, value) for name, value in headers if name.lower() != "content-range"]
    if part is not None:
        assert part.complete is not None
        kept.append(("Content-Range", f"bytes {part.first}-{part.last}/{part.complete}"))
    return kept
