"""The pure rules for stored parts and slices (``edge.http.parts``): table-driven, plus properties."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edge.http import parts
from edge.http.parts import ContentRange

DATE = "Wed, 02 Dec 2026 08:00:00 GMT"
EARLIER = "Tue, 01 Dec 2026 08:00:00 GMT"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("bytes 0-9/10", ContentRange(0, 9, 10)),
        ("bytes 5-5/*", ContentRange(5, 5, None)),
        ("BYTES  1-2/3", ContentRange(1, 2, 3)),
        (" bytes 1-2/3 ", ContentRange(1, 2, 3)),
        ("bytes 9-0/10", None),  # last before first
        ("bytes 0-10/10", None),  # last past the end
        ("bytes */10", None),  # unsatisfied: no part
        ("bytes 0-9", None),
        ("items 0-9/10", None),
        ("bytes -1-9/10", None),
        ("bytes 0-9/1x", None),
        ("bytes 0-9/10, bytes 0-9/10", None),
        (None, None),
    ],
)
def test_parse_content_range(value: str | None, expected: ContentRange | None) -> None:
    assert parts.parse_content_range(value) == expected


@given(st.text(max_size=40))
def test_parse_content_range_never_raises_and_is_consistent(value: str) -> None:
    got = parts.parse_content_range(value)
    if got is not None:
        assert 0 <= got.first <= got.last
        assert got.complete is None or got.last < got.complete


@given(st.integers(0, 10**12), st.integers(0, 10**12), st.integers(1, 10**12))
def test_parse_content_range_round_trips(first: int, length: int, extra: int) -> None:
    last = first + length
    complete = last + extra
    assert parts.parse_content_range(f"bytes {first}-{last}/{complete}") == ContentRange(first, last, complete)


@pytest.mark.parametrize(
    ("status", "headers", "expected"),
    [
        (206, [("Content-Range", "bytes 0-4/10")], ContentRange(0, 4, 10)),
        (200, [("Content-Range", "bytes 0-4/10")], None),
        (206, [("Content-Range", "bytes 0-4/*")], None),  # unknown length: never combinable
        (206, [("Content-Range", "bytes 0-4/10"), ("Content-Range", "bytes 0-4/10")], None),
        (206, [("Content-Type", "multipart/byteranges; boundary=x")], None),
        (206, [("Content-Type", "Multipart/ByteRanges; boundary=x"), ("Content-Range", "bytes 0-4/10")], None),
        (206, [], None),
    ],
)
def test_single_part(status: int, headers: list[tuple[str, str]], expected: ContentRange | None) -> None:
    assert parts.single_part(status, headers) == expected


@pytest.mark.parametrize(
    ("a", "b", "same"),
    [
        ([("ETag", '"x"')], [("ETag", '"x"')], True),
        ([("ETag", '"x"')], [("ETag", '"y"')], False),
        ([("ETag", 'W/"x"')], [("ETag", 'W/"x"')], False),  # weak: never combined (§3.4)
        ([("ETag", '"x"')], [], False),
        ([("Last-Modified", EARLIER), ("Date", DATE)], [("Last-Modified", EARLIER), ("Date", DATE)], True),
        ([("Last-Modified", DATE), ("Date", DATE)], [("Last-Modified", DATE), ("Date", DATE)], False),  # not strong
        ([], [], False),
    ],
)
def test_same_representation(a: list[tuple[str, str]], b: list[tuple[str, str]], same: bool) -> None:
    assert parts.same_representation(a, b) is same
    assert parts.same_representation(b, a) is same


@pytest.mark.parametrize(
    ("reference", "other", "consistent"),
    [
        ([("ETag", '"x"')], [("ETag", '"x"')], True),
        ([("ETag", '"x"')], [("ETag", '"y"')], False),
        ([("ETag", 'W/"x"')], [("ETag", 'W/"x"')], True),  # no strong validator: the same values will do
        ([("ETag", 'W/"x"')], [("ETag", 'W/"y"')], False),
        ([("Last-Modified", DATE)], [("Last-Modified", EARLIER)], False),
        ([], [], True),
    ],
)
def test_consistent_slices(reference: list[tuple[str, str]], other: list[tuple[str, str]], consistent: bool) -> None:
    assert parts.consistent(reference, other) is consistent


@pytest.mark.parametrize(
    ("index", "size", "got", "matches"),
    [
        (0, 100, ContentRange(0, 99, 1000), True),
        (9, 100, ContentRange(900, 999, 1000), True),
        (9, 100, ContentRange(900, 949, 950), True),  # the last slice is short
        (1, 100, ContentRange(100, 150, 1000), False),  # clipped before the end
        (1, 100, ContentRange(0, 199, 1000), False),  # another range than asked
        (0, 100, ContentRange(0, 99, None), False),
        (10, 100, ContentRange(900, 999, 1000), False),
    ],
)
def test_slice_matches(index: int, size: int, got: ContentRange, matches: bool) -> None:
    assert parts.slice_matches(index, size, got) is matches


def test_variant_ids_are_parts_and_never_vary_ids() -> None:
    assert parts.is_part(parts.slice_variant(4096, 3))
    assert parts.is_slice(parts.slice_variant(4096, 3))
    part = parts.part_variant("abc", 0, 9)
    assert parts.is_part(part)
    assert not parts.is_slice(part)
    assert parts.part_base(part) == "abc"
    assert parts.part_base(parts.part_variant("", 0, 9)) == ""
    assert not parts.is_part("0" * 64)
    assert parts.slice_request_range(2, 100) == "bytes=200-299"
    assert list(parts.slices_touching(99, 100, 100)) == [0, 1]


@pytest.mark.parametrize(
    ("new", "others", "expected"),
    [
        (ContentRange(0, 9, 30), [ContentRange(10, 19, 30)], [0]),  # touching
        (ContentRange(0, 9, 30), [ContentRange(11, 19, 30)], []),  # a gap
        (ContentRange(10, 19, 30), [ContentRange(20, 29, 30), ContentRange(0, 9, 30)], [1, 0]),
        (ContentRange(0, 9, 30), [ContentRange(20, 29, 30), ContentRange(5, 20, 30)], [1, 0]),  # transitive
    ],
)
def test_connected(new: ContentRange, others: list[ContentRange], expected: list[int]) -> None:
    assert parts.connected(new, others) == expected


def test_covering_prefers_the_largest_part() -> None:
    stored = [ContentRange(0, 9, 100), ContentRange(0, 50, 100), ContentRange(40, 99, 100)]
    assert parts.covering(stored, 5, 9) == 1
    assert parts.covering(stored, 45, 60) == 2
    assert parts.covering(stored, 5, 60) is None
