"""Range requests from a stored representation (RFC 9110 §13.1.5, §14, §15.3.7, §15.5.17)."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edge.http.dates import format_http_date
from edge.http.headers import HeaderList
from edge.http.ranges import (
    COALESCE_GAP,
    MAX_RANGES,
    ByteRange,
    RangeResult,
    content_range,
    if_range_allows,
    multipart_boundary,
    multipart_content_type,
    multipart_length,
    multipart_parts,
    parse_range,
    range_value,
    unsatisfied_content_range,
)

SIZE = 10000


def partial(*pairs: tuple[int, int]) -> RangeResult:
    return RangeResult("partial", SIZE, tuple(ByteRange(a, b) for a, b in pairs))


IGNORE = RangeResult("ignore", SIZE)
UNSATISFIABLE = RangeResult("unsatisfiable", SIZE)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        # RFC 9110 §14.1.2's own examples, representation of 10000 bytes.
        pytest.param("bytes=0-499", partial((0, 499)), id="rfc9110-14.1.2-first-500"),
        pytest.param("bytes=500-999", partial((500, 999)), id="rfc9110-14.1.2-second-500"),
        pytest.param("bytes=-500", partial((9500, 9999)), id="rfc9110-14.1.2-suffix"),
        pytest.param("bytes=9500-", partial((9500, 9999)), id="rfc9110-14.1.2-open-ended"),
        pytest.param("bytes=0-0,-1", partial((0, 0), (9999, 9999)), id="rfc9110-14.1.2-first-and-last"),
        pytest.param(
            "bytes= 0-999, 4500-5499, -1000",
            partial((0, 999), (4500, 5499), (9000, 9999)),
            id="rfc9110-14.1.2-three-with-ows",
        ),
        pytest.param("bytes=500-600,601-999", partial((500, 999)), id="rfc9110-14.1.2-adjacent-coalesced"),
        pytest.param("bytes=500-700,601-999", partial((500, 999)), id="rfc9110-14.1.2-overlap-coalesced"),
        # Clipping and satisfiability.
        pytest.param("bytes=0-99999", partial((0, 9999)), id="rfc9110-14.1.2-last-clipped"),
        pytest.param("bytes=-99999", partial((0, 9999)), id="rfc9110-14.1.2-suffix-longer-than-rep"),
        pytest.param("bytes=9999-9999", partial((9999, 9999)), id="last-byte"),
        pytest.param("bytes=10000-", UNSATISFIABLE, id="rfc9110-14.1.2-first-pos-at-length"),
        pytest.param("bytes=10000-10500", UNSATISFIABLE, id="rfc9110-14.1.2-beyond"),
        pytest.param("bytes=-0", UNSATISFIABLE, id="rfc9110-14.1.2-zero-suffix"),
        pytest.param("bytes=20000-,0-1", partial((0, 1)), id="rfc9110-14.1.2-unsatisfiable-member-dropped"),
        pytest.param("bytes=99999999999999999999999999999999999-", UNSATISFIABLE, id="rfc9110-14.1.2-huge-numeral"),
        pytest.param("bytes=0-99999999999999999999999999999999999", partial((0, 9999)), id="huge-last-pos"),
        # Ordering and coalescing.
        pytest.param("bytes=5000-5099,0-99", partial((5000, 5099), (0, 99)), id="rfc9110-15.3.7.2-request-order-kept"),
        pytest.param(
            f"bytes=0-99,{100 + COALESCE_GAP - 1}-300", partial((0, 300)), id="rfc9110-15.3.7.2-small-gap-coalesced"
        ),
        pytest.param(
            f"bytes=0-99,{100 + COALESCE_GAP + 1}-300",
            partial((0, 99), (100 + COALESCE_GAP + 1, 300)),
            id="gap-larger-than-overhead-kept",
        ),
        pytest.param("bytes=900-999,0-10,5-20", partial((0, 20), (900, 999)), id="coalesced-are-sorted"),
        pytest.param("bytes=0-,0-,0-", partial((0, 9999)), id="rfc9110-14.2-overlapping-repeats"),
        # Syntax: ignore (serve 200).
        pytest.param("BYTES=0-1", partial((0, 1)), id="rfc9110-14.1-unit-case-insensitive"),
        pytest.param("items=0-1", IGNORE, id="rfc9110-14.2-unknown-unit"),
        pytest.param("bytes=1-0", IGNORE, id="rfc9110-14.1.2-last-before-first-invalid"),
        pytest.param("bytes=abc", IGNORE, id="not-a-range"),
        pytest.param("bytes=0-1;x", IGNORE, id="trailing-junk"),
        pytest.param("bytes=", IGNORE, id="empty-set"),
        pytest.param("bytes=,", IGNORE, id="only-empty-elements"),
        pytest.param("bytes=0-1,,500-600", partial((0, 1), (500, 600)), id="rfc9110-5.6.1-empty-element"),
        pytest.param("bytes 0-1", IGNORE, id="missing-equals"),
        pytest.param("bytes=--1", IGNORE, id="double-dash"),
        pytest.param("bytes=+1-2", IGNORE, id="sign"),
        pytest.param("bytes=\u0661-2", IGNORE, id="non-ascii-digit"),
        pytest.param("bytes = 0-1", IGNORE, id="space-in-unit"),
        pytest.param(None, IGNORE, id="no-range"),
        pytest.param("bytes=" + ",".join(f"{i}-{i}" for i in range(0, 2 * (MAX_RANGES + 1), 2)), IGNORE, id="too-many"),
    ],
)
def test_parse_range(value: str | None, expected: RangeResult) -> None:
    assert parse_range(value, SIZE) == expected


@pytest.mark.parametrize(
    ("value", "kind"),
    [
        pytest.param("bytes=0-0", "unsatisfiable", id="rfc9110-14.1.2-zero-length-int-range"),
        pytest.param("bytes=-1", "ignore", id="rfc9110-14.2-zero-length-suffix-ignored"),
        pytest.param("bytes=0-,-5", "ignore", id="zero-length-mixed"),
        pytest.param("junk", "ignore", id="zero-length-junk"),
    ],
)
def test_parse_range_zero_length(value: str, kind: str) -> None:
    assert parse_range(value, 0).kind == kind


def test_parse_range_negative_size() -> None:
    with pytest.raises(ValueError, match="size"):
        parse_range("bytes=0-1", -1)


@pytest.mark.parametrize(
    ("result", "status", "header", "multipart"),
    [
        pytest.param(partial((0, 499)), 206, "bytes 0-499/10000", False, id="rfc9110-15.3.7.1-single-part"),
        pytest.param(partial((0, 0), (9999, 9999)), 206, None, True, id="rfc9110-15.3.7.2-multipart"),
        pytest.param(UNSATISFIABLE, 416, "bytes */10000", False, id="rfc9110-15.5.17-416"),
        pytest.param(IGNORE, 200, None, False, id="ignored"),
    ],
)
def test_range_result_properties(result: RangeResult, status: int, header: str | None, multipart: bool) -> None:
    assert result.status == status
    assert result.content_range == header
    assert result.multipart is multipart


@pytest.mark.parametrize(
    ("method", "headers", "expected"),
    [
        pytest.param("GET", [("Range", "bytes=0-1")], "bytes=0-1", id="get"),
        pytest.param("HEAD", [("Range", "bytes=0-1")], None, id="rfc9110-14.2-only-get"),
        pytest.param("POST", [("Range", "bytes=0-1")], None, id="rfc9110-14.2-post-ignored"),
        pytest.param("GET", [("Range", "bytes=0-1"), ("range", "bytes=2-3")], None, id="two-lines-invalid"),
        pytest.param("GET", [], None, id="absent"),
    ],
)
def test_range_value(method: str, headers: HeaderList, expected: str | None) -> None:
    assert range_value(headers, method) == expected


T0 = 784111777.0
LM = format_http_date(T0 - 100)
STORED: HeaderList = [("ETag", '"v1"'), ("Last-Modified", LM), ("Date", format_http_date(T0))]
STORED_WEAK_LM: HeaderList = [("Last-Modified", LM), ("Date", LM)]
STORED_WEAK_TAG: HeaderList = [("ETag", 'W/"v1"')]


@pytest.mark.parametrize(
    ("if_range", "stored", "expected"),
    [
        pytest.param(None, STORED, True, id="no-if-range"),
        pytest.param('"v1"', STORED, True, id="rfc9110-13.1.5-strong-match"),
        pytest.param('"v2"', STORED, False, id="rfc9110-13.1.5-etag-mismatch"),
        pytest.param('W/"v1"', STORED, False, id="rfc9110-13.1.5-weak-tag-never-matches"),
        pytest.param('"v1"', STORED_WEAK_TAG, False, id="rfc9110-13.1.5-stored-weak"),
        pytest.param(LM, STORED, True, id="rfc9110-13.1.5-date-exact"),
        pytest.param(format_http_date(T0 - 99), STORED, False, id="rfc9110-13.1.5-date-not-exact"),
        pytest.param("Sunday, 06-Nov-94 08:47:57 GMT", STORED, True, id="rfc9110-5.6.7-rfc850-same-instant"),
        pytest.param(LM, STORED_WEAK_LM, False, id="rfc9110-8.8.2.2-weak-last-modified"),
        pytest.param(LM, [("ETag", '"v1"')], False, id="no-last-modified"),
        pytest.param("garbage", STORED, False, id="unparseable"),
        pytest.param('"v1', STORED, False, id="broken-etag"),
    ],
)
def test_if_range_allows(if_range: str | None, stored: HeaderList, expected: bool) -> None:
    assert if_range_allows(if_range, stored) is expected


def test_content_range() -> None:
    assert content_range(0, 0, 1) == "bytes 0-0/1"
    assert unsatisfied_content_range(0) == "bytes */0"
    for bad in ((1, 0, 5), (0, 5, 5), (-1, 0, 5)):
        with pytest.raises(ValueError, match="not within"):
            content_range(*bad)


def test_multipart_framing() -> None:
    """RFC 9110 §14.6 example shape: delimiter, part fields, blank line, data; closing delimiter."""
    body = b"0123456789"
    ranges = [ByteRange(0, 1), ByteRange(8, 9)]
    out = b""
    for head, part in multipart_parts(ranges, "text/plain", len(body), "THIS_STRING_SEPARATES"):
        out += head
        if part is not None:
            out += body[part.first : part.last + 1]
    assert out == (
        b"--THIS_STRING_SEPARATES\r\n"
        b"Content-Type: text/plain\r\n"
        b"Content-Range: bytes 0-1/10\r\n"
        b"\r\n"
        b"01"
        b"\r\n--THIS_STRING_SEPARATES\r\n"
        b"Content-Type: text/plain\r\n"
        b"Content-Range: bytes 8-9/10\r\n"
        b"\r\n"
        b"89"
        b"\r\n--THIS_STRING_SEPARATES--\r\n"
    )
    assert multipart_length(ranges, "text/plain", len(body), "THIS_STRING_SEPARATES") == len(out)
    assert multipart_content_type("B") == "multipart/byteranges; boundary=B"


def test_multipart_without_content_type() -> None:
    heads = [head for head, _ in multipart_parts([ByteRange(0, 0)], None, 1, "b")]
    assert heads[0] == b"--b\r\nContent-Range: bytes 0-0/1\r\n\r\n"


def test_multipart_boundary() -> None:
    boundary = multipart_boundary("https://h/a|123.5")
    assert boundary == multipart_boundary("https://h/a|123.5")
    assert boundary != multipart_boundary("https://h/a|123.6")
    assert len(boundary) == 32
    assert boundary.isalnum()


# ---- properties -----------------------------------------------------------------------------


@given(st.text(max_size=60) | st.from_regex(r"\A[bB][yY][tT][eE][sS]=[0-9 ,\-]{0,30}\Z"), st.integers(0, 20000))
def test_parse_range_never_raises_and_stays_in_bounds(value: str, size: int) -> None:
    result = parse_range(value, size)
    assert result.kind in ("ignore", "partial", "unsatisfiable")
    if result.kind == "partial":
        assert 1 <= len(result.ranges) <= MAX_RANGES
        for byte_range in result.ranges:
            assert 0 <= byte_range.first <= byte_range.last < size
        # Coalescing bounds the transfer: never more than the representation.
        assert sum(r.length for r in result.ranges) <= size
    else:
        assert result.ranges == ()


@given(st.lists(st.tuples(st.integers(0, 12000), st.integers(0, 3000)), min_size=1, max_size=8), st.integers(1, 10000))
def test_parse_range_results_disjoint(specs: list[tuple[int, int]], size: int) -> None:
    value = "bytes=" + ",".join(f"{first}-{first + extra}" for first, extra in specs)
    result = parse_range(value, size)
    assert result.kind in ("partial", "unsatisfiable")
    ordered = sorted(result.ranges, key=lambda r: r.first)
    for left, right in itertools.pairwise(ordered):
        assert left.last < right.first
    # Every requested satisfiable byte is still covered.
    for first, extra in specs:
        if first < size:
            last = min(first + extra, size - 1)
            assert any(r.first <= first and last <= r.last for r in result.ranges)


@given(st.text(max_size=40), st.sampled_from([STORED, STORED_WEAK_LM, STORED_WEAK_TAG, []]))
def test_if_range_never_raises(value: str, stored: HeaderList) -> None:
    assert if_range_allows(value, stored) in (True, False)
