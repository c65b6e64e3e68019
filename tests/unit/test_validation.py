"""Validators and conditional requests (RFC 9110 §8.8, §13, §15.4.5; RFC 9111 §3.2, §4.3)."""

from __future__ import annotations

from typing import Literal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edge.http.dates import format_http_date
from edge.http.headers import HeaderList
from edge.http.validation import (
    EntityTag,
    answers_own_validation,
    conditional_headers,
    evaluate_client_conditionals,
    last_modified_is_strong,
    not_modified_headers,
    parse_etag,
    parse_etag_list,
    revalidation_headers,
    select_for_304,
    strong_compare,
    update_headers_from_304,
    weak_compare,
)

T0 = 784111777.0  # Sun, 06 Nov 1994 08:49:37 GMT
D0 = format_http_date(T0)
D_MINUS_1 = format_http_date(T0 - 1)
D_MINUS_100 = format_http_date(T0 - 100)
D_PLUS_100 = format_http_date(T0 + 100)


def strong(opaque: str) -> EntityTag:
    return EntityTag(False, f'"{opaque}"')


def weak(opaque: str) -> EntityTag:
    return EntityTag(True, f'"{opaque}"')


# ---- entity tags ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        pytest.param('"xyzzy"', strong("xyzzy"), id="rfc9110-8.8.3-strong"),
        pytest.param('W/"xyzzy"', weak("xyzzy"), id="rfc9110-8.8.3-weak"),
        pytest.param('""', strong(""), id="rfc9110-8.8.3-empty"),
        pytest.param('  "a"\t', strong("a"), id="rfc9110-5.5-surrounding-ows"),
        pytest.param('"a,b"', strong("a,b"), id="comma-inside"),
        pytest.param('"a\\"', EntityTag(False, '"a\\"'), id="backslash-is-not-an-escape"),
        pytest.param('"caf\u00e9"', strong("caf\u00e9"), id="obs-text"),
        pytest.param("xyzzy", None, id="unquoted"),
        pytest.param('w/"a"', None, id="rfc9110-8.8.3-weak-prefix-case-sensitive"),
        pytest.param('W/ "a"', None, id="space-after-weak"),
        pytest.param('"a" "b"', None, id="two-tags"),
        pytest.param('"a', None, id="unterminated"),
        pytest.param('"a b"', None, id="space-not-etagc"),
        pytest.param('"a\x01"', None, id="control-not-etagc"),
        pytest.param("", None, id="empty"),
        pytest.param("*", None, id="star-is-not-an-etag"),
    ],
)
def test_parse_etag(value: str, expected: EntityTag | None) -> None:
    assert parse_etag(value) == expected


def test_entity_tag_str_round_trip() -> None:
    for text in ('"x"', 'W/"x"', '""'):
        tag = parse_etag(text)
        assert tag is not None
        assert str(tag) == text


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        pytest.param([], None, id="absent"),
        pytest.param(["*"], "*", id="rfc9110-13.1.2-star"),
        pytest.param([" * "], "*", id="star-ows"),
        pytest.param(['"a"'], [strong("a")], id="one"),
        pytest.param(['"a", W/"b" ,"c"'], [strong("a"), weak("b"), strong("c")], id="rfc9110-13.1.2-list"),
        pytest.param(['"a"', 'W/"b"'], [strong("a"), weak("b")], id="rfc9110-5.3-lines"),
        pytest.param([',"a",,'], [strong("a")], id="rfc9110-5.6.1-empty-elements"),
        pytest.param(['"a,b", "c"'], [strong("a,b"), strong("c")], id="comma-in-tag"),
        pytest.param(['"a\\", "b"'], [EntityTag(False, '"a\\"'), strong("b")], id="backslash-in-tag"),
        pytest.param(['*, "a"'], None, id="rfc9110-13.1.2-star-mixed-invalid"),
        pytest.param(["*, *"], None, id="double-star-invalid"),
        pytest.param(["*", "*"], None, id="star-lines-invalid"),
        pytest.param(['"a", b'], None, id="unquoted-member-invalid"),
        pytest.param(['"a" "b"'], None, id="missing-comma-invalid"),
        pytest.param([""], None, id="empty-value"),
    ],
)
def test_parse_etag_list(values: list[str], expected: list[EntityTag] | Literal["*"] | None) -> None:
    assert parse_etag_list(values) == expected


@pytest.mark.parametrize(
    ("a", "b", "strong_match", "weak_match"),
    [
        pytest.param(weak("1"), weak("1"), False, True, id="rfc9110-8.8.3.2-table3-row1"),
        pytest.param(weak("1"), weak("2"), False, False, id="rfc9110-8.8.3.2-table3-row2"),
        pytest.param(weak("1"), strong("1"), False, True, id="rfc9110-8.8.3.2-table3-row3"),
        pytest.param(strong("1"), strong("1"), True, True, id="rfc9110-8.8.3.2-table3-row4"),
        pytest.param(strong("1"), strong("2"), False, False, id="different"),
    ],
)
def test_compare(a: EntityTag, b: EntityTag, strong_match: bool, weak_match: bool) -> None:
    assert strong_compare(a, b) is strong_match
    assert strong_compare(b, a) is strong_match
    assert weak_compare(a, b) is weak_match
    assert weak_compare(b, a) is weak_match


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        pytest.param([("Last-Modified", D_MINUS_1), ("Date", D0)], True, id="rfc9110-8.8.2.2-one-second"),
        pytest.param([("Last-Modified", D0), ("Date", D0)], False, id="rfc9110-8.8.2.2-same-second"),
        pytest.param([("Last-Modified", D_MINUS_1)], False, id="no-date"),
        pytest.param([("Date", D0)], False, id="no-last-modified"),
        pytest.param([("Last-Modified", "junk"), ("Date", D0)], False, id="invalid"),
    ],
)
def test_last_modified_is_strong(headers: HeaderList, expected: bool) -> None:
    assert last_modified_is_strong(headers) is expected


# ---- sending a validation request (RFC 9111 §4.3.1) -----------------------------------------


@pytest.mark.parametrize(
    ("stored", "expected"),
    [
        pytest.param([[("ETag", '"a"')]], [("If-None-Match", '"a"')], id="rfc9111-4.3.1-must-send-etag"),
        pytest.param(
            [[("ETag", 'W/"a"'), ("Last-Modified", D_MINUS_100)]],
            [("If-None-Match", 'W/"a"'), ("If-Modified-Since", D_MINUS_100)],
            id="rfc9111-4.3.1-both-validators",
        ),
        pytest.param(
            [[("Last-Modified", D_MINUS_100), ("Date", D0)]],
            [("If-Modified-Since", D_MINUS_100)],
            id="rfc9111-4.3.1-last-modified-not-date",
        ),
        pytest.param([[("Date", D0)]], [], id="date-not-used-by-default"),
        pytest.param(
            [[("ETag", '"a"'), ("Last-Modified", D_MINUS_100)], [("ETag", '"b"')], [("ETag", '"a"')]],
            [("If-None-Match", '"a", "b"')],
            id="rfc9111-4.3.1-several-stored-all-tags-no-ims",
        ),
        pytest.param([[("ETag", "unquoted")]], [], id="malformed-etag-not-sent"),
        pytest.param([[("Last-Modified", "yesterday")]], [], id="invalid-last-modified-not-sent"),
        pytest.param([], [], id="nothing-stored"),
    ],
)
def test_conditional_headers(stored: list[HeaderList], expected: list[tuple[str, str]]) -> None:
    assert conditional_headers(stored) == expected


def test_conditional_headers_date_fallback() -> None:
    """RFC 9110 §13.1.3: caches "occasionally" use Date when there is no Last-Modified."""
    assert conditional_headers([[("Date", D0)]], date_fallback=True) == [("If-Modified-Since", D0)]
    assert conditional_headers([[("Date", D0), ("Last-Modified", D_MINUS_1)]], date_fallback=True) == [
        ("If-Modified-Since", D_MINUS_1)
    ]


def test_revalidation_headers_replace_client_conditionals() -> None:
    """RFC 9111 §4.3.1: the validation request carries *our* validators, not the client's."""
    client = [
        ("Host", "example.com"),
        ("If-None-Match", '"client"'),
        ("If-Modified-Since", D_MINUS_100),
        ("If-Match", '"x"'),
        ("If-Unmodified-Since", D0),
        ("Range", "bytes=0-1"),
        ("If-Range", '"client"'),
        ("Accept-Encoding", "gzip"),
    ]
    stored = [[("ETag", '"ours"'), ("Last-Modified", D_MINUS_1)]]
    assert revalidation_headers(stored, client) == [
        ("Host", "example.com"),
        ("Accept-Encoding", "gzip"),
        ("If-None-Match", '"ours"'),
        ("If-Modified-Since", D_MINUS_1),
    ]


def test_revalidation_headers_synthesised() -> None:
    assert revalidation_headers([[("ETag", '"a"')]]) == [("If-None-Match", '"a"')]


# ---- freshening (RFC 9111 §4.3.4, §3.2) ------------------------------------------------------

S_A: HeaderList = [("ETag", '"a"'), ("Date", D_MINUS_100)]
S_A2: HeaderList = [("ETag", '"a"'), ("Date", D0)]
S_B: HeaderList = [("ETag", '"b"'), ("Date", D0)]
S_WA_OLD: HeaderList = [("ETag", 'W/"a"'), ("Date", D_MINUS_100)]
S_WA_NEW: HeaderList = [("ETag", 'W/"a"'), ("Date", D0)]
S_LM: HeaderList = [("Last-Modified", D_MINUS_100), ("Date", D0)]
S_LM_WEAK: HeaderList = [("Last-Modified", D0), ("Date", D0)]
S_LM_OTHER_TAG: HeaderList = [("ETag", '"z"'), ("Last-Modified", D_MINUS_100), ("Date", D0)]
S_NONE: HeaderList = [("Date", D0)]


@pytest.mark.parametrize(
    ("stored", "response", "expected"),
    [
        pytest.param([S_A, S_B, S_A2], [("ETag", '"a"')], [0, 2], id="rfc9111-4.3.4-strong-all-matching"),
        pytest.param([S_B], [("ETag", '"a"')], [], id="rfc9111-4.3.4-strong-none-must-not-update"),
        pytest.param([S_WA_OLD], [("ETag", '"a"')], [], id="strong-vs-weak-stored-no-strong-match"),
        pytest.param([S_WA_OLD, S_WA_NEW, S_B], [("ETag", 'W/"a"')], [1], id="rfc9111-4.3.4-weak-most-recent-by-date"),
        pytest.param([S_A], [("ETag", 'W/"a"')], [0], id="weak-matches-strong-stored"),
        pytest.param([S_B], [("ETag", 'W/"a"')], [], id="weak-no-match"),
        pytest.param(
            [S_LM, S_NONE],
            [("Last-Modified", D_MINUS_100), ("Date", D0)],
            [0],
            id="rfc9110-8.8.2.2-strong-last-modified",
        ),
        pytest.param(
            [S_LM_OTHER_TAG],
            [("Last-Modified", D_MINUS_100), ("Date", D0), ("ETag", '"a"')],
            [],
            id="last-modified-coincidence-with-conflicting-etag",
        ),
        pytest.param(
            [S_LM_WEAK, S_LM_WEAK],
            [("Last-Modified", D0), ("Date", D0)],
            [1],
            id="weak-last-modified-most-recent-later-index",
        ),
        pytest.param([S_NONE], [("Date", D0)], [0], id="rfc9111-4.3.4-no-validators-single"),
        pytest.param([S_NONE, S_NONE], [("Date", D0)], [], id="rfc9111-4.3.4-no-validators-several"),
        pytest.param([S_A], [("Date", D0)], [], id="rfc9111-4.3.4-no-validators-stored-has-one"),
        pytest.param([], [("ETag", '"a"')], [], id="nothing-stored"),
    ],
)
def test_select_for_304(stored: list[HeaderList], response: HeaderList, expected: list[int]) -> None:
    assert select_for_304(stored, response) == expected


def test_select_for_304_response_times_break_ties() -> None:
    stored = [[("ETag", 'W/"a"')], [("ETag", 'W/"a"')]]
    assert select_for_304(stored, [("ETag", 'W/"a"')], response_times=[200.0, 100.0]) == [0]
    assert select_for_304(stored, [("ETag", 'W/"a"')], response_times=[100.0, 200.0]) == [1]
    with pytest.raises(ValueError, match="parallel"):
        select_for_304(stored, [("ETag", 'W/"a"')], response_times=[1.0])


@pytest.mark.parametrize(
    ("stored", "new", "expected"),
    [
        pytest.param(
            [("Date", D_MINUS_100), ("Cache-Control", "max-age=10"), ("Content-Type", "text/plain")],
            [("Date", D0), ("Cache-Control", "max-age=60")],
            [("Date", D0), ("Cache-Control", "max-age=60"), ("Content-Type", "text/plain")],
            id="rfc9111-3.2-replace-in-place",
        ),
        pytest.param(
            [("Link", "<a>"), ("X", "1"), ("Link", "<b>")],
            [("Link", "<c>")],
            [("Link", "<c>"), ("X", "1")],
            id="rfc9111-3.2-all-lines-of-a-name-replaced",
        ),
        pytest.param(
            [("Date", D_MINUS_100)],
            [("Expires", D_PLUS_100), ("X-New", "1"), ("x-new", "2")],
            [("Date", D_MINUS_100), ("Expires", D_PLUS_100), ("X-New", "1"), ("x-new", "2")],
            id="rfc9111-3.2-new-fields-added",
        ),
        pytest.param(
            [("Content-Length", "5")],
            [("Content-Length", "0")],
            [("Content-Length", "5")],
            id="rfc9111-3.2-content-length-excepted",
        ),
        pytest.param(
            [("Content-Encoding", "gzip"), ("Content-Range", "bytes 0-4/10")],
            [("Content-Encoding", "br"), ("Content-Range", "bytes 5-9/10")],
            [("Content-Encoding", "gzip"), ("Content-Range", "bytes 0-4/10")],
            id="rfc9111-3.2-fields-the-stored-body-depends-on",
        ),
        pytest.param(
            [("Content-Type", "text/plain")],
            [("Content-Type", "text/html")],
            [("Content-Type", "text/html")],
            id="rfc9111-3.2-content-star-not-a-signal",
        ),
        pytest.param(
            [],
            [
                ("Connection", "close, X-Hop"),
                ("X-Hop", "1"),
                ("Keep-Alive", "timeout=5"),
                ("Transfer-Encoding", "chunked"),
                ("TE", "trailers"),
                ("Upgrade", "h2c"),
                ("Proxy-Connection", "keep-alive"),
                ("Proxy-Authenticate", "Basic"),
                ("Proxy-Authentication-Info", "x"),
                ("Proxy-Authorization", "x"),
                ("ETag", '"a"'),
            ],
            [("ETag", '"a"')],
            id="rfc9111-3.1-hop-by-hop-and-proxy-fields-excepted",
        ),
        pytest.param(
            [("Set-Cookie", "old=1")],
            [("Cache-Control", 'private="Set-Cookie", max-age=5'), ("Set-Cookie", "new=1"), ("X-Sec", "1")],
            [("Set-Cookie", "old=1"), ("Cache-Control", 'private="Set-Cookie", max-age=5'), ("X-Sec", "1")],
            id="rfc9111-3.1-qualified-private-not-stored",
        ),
        pytest.param(
            [],
            [("Cache-Control", 'no-cache="X-A, x-b"'), ("X-A", "1"), ("X-B", "2"), ("X-C", "3")],
            [("Cache-Control", 'no-cache="X-A, x-b"'), ("X-C", "3")],
            id="rfc9111-3.1-qualified-no-cache-not-stored",
        ),
    ],
)
def test_update_headers_from_304(stored: HeaderList, new: HeaderList, expected: list[tuple[str, str]]) -> None:
    assert update_headers_from_304(stored, new) == expected


# ---- client conditionals (RFC 9111 §4.3.2, RFC 9110 §13.2.2) --------------------------------

STORED: HeaderList = [("ETag", '"v1"'), ("Last-Modified", D_MINUS_100), ("Date", D0)]
STORED_WEAK: HeaderList = [("ETag", 'W/"v1"'), ("Date", D0)]
STORED_NO_VALIDATORS: HeaderList = [("Date", D0)]
STORED_NOTHING: HeaderList = []


@pytest.mark.parametrize(
    ("method", "request_headers", "stored_status", "stored", "expected"),
    [
        pytest.param("GET", [], 200, STORED, None, id="unconditional"),
        pytest.param("GET", [("If-None-Match", '"v1"')], 200, STORED, 304, id="rfc9110-13.1.2-match"),
        pytest.param("HEAD", [("If-None-Match", '"v1"')], 200, STORED, 304, id="rfc9110-13.2.2-head"),
        pytest.param("GET", [("If-None-Match", 'W/"v1"')], 200, STORED, 304, id="rfc9110-13.1.2-weak-comparison"),
        pytest.param("GET", [("If-None-Match", '"v1"')], 200, STORED_WEAK, 304, id="weak-stored"),
        pytest.param("GET", [("If-None-Match", '"x", "v1"')], 200, STORED, 304, id="list-member"),
        pytest.param("GET", [("If-None-Match", '"v2"')], 200, STORED, None, id="rfc9110-13.1.2-no-match"),
        pytest.param("GET", [("If-None-Match", "*")], 200, STORED_NOTHING, 304, id="rfc9110-13.1.2-star"),
        pytest.param("GET", [("If-None-Match", '"v1"')], 200, STORED_NO_VALIDATORS, None, id="no-stored-etag"),
        pytest.param(
            "GET",
            [("If-None-Match", '"v2"'), ("If-Modified-Since", D0)],
            200,
            STORED,
            None,
            id="rfc9110-13.1.3-ims-ignored-with-inm",
        ),
        pytest.param(
            "GET",
            [("If-None-Match", "garbage"), ("If-Modified-Since", D0)],
            200,
            STORED,
            None,
            id="rfc9110-13.1.3-ims-ignored-even-with-invalid-inm",
        ),
        pytest.param("GET", [("If-Modified-Since", D_MINUS_100)], 200, STORED, 304, id="rfc9110-13.1.3-equal"),
        pytest.param("GET", [("If-Modified-Since", D0)], 200, STORED, 304, id="rfc9110-13.1.3-later"),
        pytest.param("GET", [("If-Modified-Since", format_http_date(T0 - 101))], 200, STORED, None, id="modified"),
        pytest.param("GET", [("If-Modified-Since", "not a date")], 200, STORED, None, id="rfc9110-13.1.3-invalid"),
        pytest.param(
            "GET",
            [("If-Modified-Since", D0), ("If-Modified-Since", D0)],
            200,
            STORED,
            None,
            id="rfc9110-13.1.3-two-lines",
        ),
        pytest.param("GET", [("If-Modified-Since", D0)], 200, STORED_WEAK, 304, id="rfc9111-4.3.2-date-instead"),
        pytest.param(
            "GET", [("If-Modified-Since", D_MINUS_1)], 200, STORED_WEAK, None, id="rfc9111-4.3.2-date-later-than-ims"
        ),
        pytest.param("GET", [("If-Modified-Since", D0)], 200, STORED_NOTHING, None, id="no-reference-time"),
        pytest.param("POST", [("If-None-Match", '"v1"')], 200, STORED, None, id="rfc9111-4-unsafe-written-through"),
        pytest.param("GET", [("If-None-Match", '"v1"')], 404, STORED, None, id="rfc9110-13.2.1-non-2xx-ignored"),
        pytest.param("GET", [("If-None-Match", '"v1"')], 206, STORED, 304, id="rfc9111-4.3.2-206"),
        pytest.param("GET", [("If-Match", '"other"')], 200, STORED, None, id="rfc9111-4.3.2-if-match-not-for-caches"),
        pytest.param(
            "GET", [("If-Unmodified-Since", D_MINUS_1 + "x")], 200, STORED, None, id="rfc9111-4.3.2-ius-not-for-caches"
        ),
    ],
)
def test_evaluate_client_conditionals(
    method: str, request_headers: HeaderList, stored_status: int, stored: HeaderList, expected: int | None
) -> None:
    assert evaluate_client_conditionals(method, request_headers, stored_status, stored) == expected


def test_ims_uses_response_time_without_date() -> None:
    """RFC 9111 §4.3.2: "(or, if no Date field is present, the time that the stored response was
    received)"."""
    request = [("If-Modified-Since", D0)]
    assert evaluate_client_conditionals("GET", request, 200, [], response_time=T0) == 304
    assert evaluate_client_conditionals("GET", request, 200, [], response_time=T0 + 1) is None


@pytest.mark.parametrize(
    ("request_headers", "expected"),
    [
        pytest.param([("If-Match", '"v1"')], None, id="rfc9110-13.1.1-match"),
        pytest.param([("If-Match", "*")], None, id="rfc9110-13.1.1-star"),
        pytest.param([("If-Match", '"v2"')], 412, id="rfc9110-13.1.1-no-match"),
        pytest.param([("If-Match", 'W/"v1"')], 412, id="rfc9110-13.1.1-strong-comparison"),
        pytest.param([("If-Match", "junk")], None, id="invalid-ignored"),
        pytest.param([("If-Unmodified-Since", D_MINUS_100)], None, id="rfc9110-13.1.4-unmodified"),
        pytest.param([("If-Unmodified-Since", format_http_date(T0 - 101))], 412, id="rfc9110-13.1.4-modified"),
        pytest.param(
            [("If-Match", '"v1"'), ("If-Unmodified-Since", format_http_date(T0 - 101))],
            None,
            id="rfc9110-13.2.2-ius-ignored-with-if-match",
        ),
        pytest.param([("If-Match", '"v1"'), ("If-None-Match", '"v1"')], 304, id="rfc9110-13.2.2-if-match-then-inm"),
        pytest.param([("If-Match", '"v2"'), ("If-None-Match", '"v1"')], 412, id="rfc9110-13.2.2-if-match-first"),
    ],
)
def test_evaluate_origin_preconditions(request_headers: HeaderList, expected: int | None) -> None:
    assert (
        evaluate_client_conditionals("GET", request_headers, 200, STORED, evaluate_origin_preconditions=True)
        == expected
    )


def test_if_match_needs_a_stored_etag() -> None:
    assert (
        evaluate_client_conditionals(
            "GET", [("If-Match", '"v1"')], 200, STORED_NO_VALIDATORS, evaluate_origin_preconditions=True
        )
        == 412
    )
    assert (
        evaluate_client_conditionals(
            "GET", [("If-Unmodified-Since", D0)], 200, STORED_NO_VALIDATORS, evaluate_origin_preconditions=True
        )
        is None
    )


@pytest.mark.parametrize(
    ("stored", "expected"),
    [
        pytest.param(
            [
                ("Date", D0),
                ("ETag", '"a"'),
                ("Last-Modified", D_MINUS_100),
                ("Content-Type", "text/html"),
                ("Content-Length", "10"),
                ("Content-Encoding", "gzip"),
                ("Content-Language", "en"),
                ("Cache-Control", "max-age=60"),
                ("Expires", D_PLUS_100),
                ("Vary", "Accept-Encoding"),
                ("Content-Location", "/a.html"),
                ("Set-Cookie", "a=b"),
            ],
            [
                ("Date", D0),
                ("ETag", '"a"'),
                ("Cache-Control", "max-age=60"),
                ("Expires", D_PLUS_100),
                ("Vary", "Accept-Encoding"),
                ("Content-Location", "/a.html"),
            ],
            id="rfc9110-15.4.5-listed-fields-only",
        ),
        pytest.param(
            [("Date", D0), ("Last-Modified", D_MINUS_100), ("Content-Length", "3")],
            [("Date", D0), ("Last-Modified", D_MINUS_100)],
            id="rfc9110-15.4.5-last-modified-without-etag",
        ),
    ],
)
def test_not_modified_headers(stored: HeaderList, expected: list[tuple[str, str]]) -> None:
    assert not_modified_headers(stored) == expected


# ---- properties -----------------------------------------------------------------------------


@given(st.text(max_size=40) | st.text('"W/ \ta\\', max_size=10))
def test_parse_etag_never_raises_and_round_trips(value: str) -> None:
    tag = parse_etag(value)
    if tag is not None:
        assert parse_etag(str(tag)) == tag
        assert str(tag) == value.strip(" \t")


@given(st.lists(st.text(max_size=30) | st.text('"W/ ,*\\a\t', max_size=30), max_size=4))
def test_parse_etag_list_never_raises(values: list[str]) -> None:
    result = parse_etag_list(values)
    if isinstance(result, list):
        assert result
        assert parse_etag_list([", ".join(str(tag) for tag in result)]) == result


_tags = st.builds(
    EntityTag,
    st.booleans(),
    st.text(st.characters(min_codepoint=0x23, max_codepoint=0x7E), max_size=8).map(lambda body: f'"{body}"'),
)


@given(st.lists(_tags, min_size=1, max_size=5))
def test_etag_list_round_trip(tags: list[EntityTag]) -> None:
    assert parse_etag_list([", ".join(str(tag) for tag in tags)]) == tags


@given(
    st.sampled_from(["GET", "HEAD", "POST"]),
    st.lists(
        st.tuples(
            st.sampled_from(["If-None-Match", "If-Modified-Since", "If-Match", "If-Unmodified-Since"]),
            st.text(max_size=30) | st.sampled_from([D0, '"v1"', "*", 'W/"v1"']),
        ),
        max_size=3,
    ),
    st.booleans(),
)
def test_evaluate_client_conditionals_never_raises(
    method: str, request_headers: list[tuple[str, str]], as_origin: bool
) -> None:
    result = evaluate_client_conditionals(method, request_headers, 200, STORED, evaluate_origin_preconditions=as_origin)
    assert result in (None, 304, 412)
    if not as_origin:
        assert result != 412


@pytest.mark.parametrize(
    ("stored", "answer", "expected"),
    [
        pytest.param([("ETag", '"a"')], [("ETag", '"a"')], True, id="9111-4.3.4-same-strong-etag"),
        pytest.param([("ETag", '"a"')], [("ETag", '"b"')], False, id="9111-4.3.4-other-strong-etag"),
        pytest.param([("ETag", 'W/"a"')], [("ETag", 'W/"b"')], False, id="9111-4.3.4-other-weak-etag"),
        pytest.param([("ETag", '"a"')], [], True, id="edge-4.3.4-no-validator-answers-our-request"),
        pytest.param([("ETag", '"a"')], [("Cache-Control", "max-age=60")], True, id="edge-no-validator-new-fields"),
        pytest.param(
            [("Last-Modified", "Sun, 06 Nov 1994 08:49:37 GMT")], [], True, id="edge-no-validator-last-modified-stored"
        ),
        pytest.param(
            [("ETag", '"a"')], [("Last-Modified", "Sun, 06 Nov 1994 08:49:37 GMT")], False,
            id="9111-4.3.4-validator-that-matches-nothing",
        ),
    ],
)
def test_a_304_answers_the_conditional_request_we_built(
    stored: list[tuple[str, str]], answer: list[tuple[str, str]], expected: bool
) -> None:
    """The edge builds each conditional request from one stored response; the 304 refers to it."""
    assert answers_own_validation(stored, answer, 0.0) is expected
