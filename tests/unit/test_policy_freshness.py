"""freshness_lifetime (RFC 9111 §4.2.1, §4.2.2, RFC 9213) and age (RFC 9111 §4.2.3, §5.1)."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edge.http.cachecontrol import DELTA_SECONDS_INFINITY
from edge.http.dates import format_http_date
from edge.http.headers import HeaderList
from edge.http.policy import (
    DEFAULT_CONFIG,
    Lifetime,
    PolicyConfig,
    age_header_value,
    current_age,
    freshness_lifetime,
    parse_age,
)

T0 = 1_700_000_000.0  # Tue, 14 Nov 2023 22:13:20 GMT
INF = float(DELTA_SECONDS_INFINITY)
PRIVATE_CACHE = PolicyConfig(shared=False)
DEFAULT_TTL = PolicyConfig(default_ttl=300.0)
FRACTION_20 = PolicyConfig(heuristic_fraction=0.2)
EDGE_TARGETS = PolicyConfig(cdn_cache_control_names=("Edgecache-CDN-Cache-Control", "CDN-Cache-Control"))


def date(offset: float) -> str:
    return format_http_date(T0 + offset)


def with_date(*pairs: tuple[str, str]) -> list[tuple[str, str]]:
    return [("Date", date(0)), *pairs]


@pytest.mark.parametrize(
    ("status", "headers", "response_time", "config", "expected"),
    [
        # §4.2.1 precedence
        pytest.param(
            200,
            with_date(("Cache-Control", "max-age=60, s-maxage=120")),
            T0,
            DEFAULT_CONFIG,
            Lifetime(120, "s-maxage", False),
            id="9111-4.2.1-s-maxage-beats-max-age",
        ),
        pytest.param(
            200,
            with_date(("Cache-Control", "s-maxage=10, max-age=600")),
            T0,
            DEFAULT_CONFIG,
            Lifetime(10, "s-maxage", False),
            id="9111-4.2.1-s-maxage-shorter-still-wins",
        ),
        pytest.param(
            200,
            with_date(("Cache-Control", "max-age=60, s-maxage=120")),
            T0,
            PRIVATE_CACHE,
            Lifetime(60, "max-age", False),
            id="9111-4.2.1-private-cache-ignores-s-maxage",
        ),
        pytest.param(
            200,
            with_date(("Cache-Control", "max-age=60"), ("Expires", date(3600))),
            T0,
            DEFAULT_CONFIG,
            Lifetime(60, "max-age", False),
            id="9111-5.3-max-age-beats-expires",
        ),
        pytest.param(
            200,
            with_date(("Cache-Control", "s-maxage=5"), ("Expires", date(3600))),
            T0,
            DEFAULT_CONFIG,
            Lifetime(5, "s-maxage", False),
            id="9111-5.3-s-maxage-beats-expires",
        ),
        pytest.param(
            200,
            with_date(("Expires", date(3600))),
            T0,
            DEFAULT_CONFIG,
            Lifetime(3600, "expires", False),
            id="9111-4.2.1-expires-minus-date",
        ),
        pytest.param(
            200,
            [("Date", date(-100)), ("Expires", date(3600))],
            T0,
            DEFAULT_CONFIG,
            Lifetime(3700, "expires", False),
            id="9111-4.2.1-expires-uses-origin-date-not-clock",
        ),
        pytest.param(
            200,
            [("Expires", date(3600))],
            T0 + 100,
            DEFAULT_CONFIG,
            Lifetime(3500, "expires", False),
            id="9111-4.2.1-expires-without-date-uses-response-time",
        ),
        pytest.param(
            200,
            [("Date", "garbage"), ("Expires", date(3600))],
            T0 + 100,
            DEFAULT_CONFIG,
            Lifetime(3500, "expires", False),
            id="9110-6.6.1-invalid-date-uses-response-time",
        ),
        pytest.param(
            200,
            with_date(("Expires", "0")),
            T0,
            DEFAULT_CONFIG,
            Lifetime(0, "expires-invalid", False),
            id="9111-5.3-expires-0-already-expired",
        ),
        pytest.param(
            200,
            with_date(("Expires", "Tue, 14 Nov 2023 23:13:20 UTC")),
            T0,
            DEFAULT_CONFIG,
            Lifetime(0, "expires-invalid", False),
            id="9111-4.2-expires-non-gmt-invalid",
        ),
        pytest.param(
            200,
            with_date(("Expires", "Thu, 18  Aug  2050 02:01:18 GMT")),
            T0,
            DEFAULT_CONFIG,
            Lifetime(0, "expires-invalid", False),
            id="9110-5.6.7-expires-double-spaces-invalid",
        ),
        pytest.param(
            200,
            with_date(("Expires", "Thu, 18-Aug-2050 02:01:18 GMT")),
            T0,
            DEFAULT_CONFIG,
            Lifetime(0, "expires-invalid", False),
            id="9110-5.6.7-expires-dashes-4digit-year-invalid",
        ),
        pytest.param(
            200,
            with_date(("Expires", date(-60))),
            T0,
            DEFAULT_CONFIG,
            Lifetime(0, "expires", False),
            id="9111-4.2.1-expires-in-past",
        ),
        pytest.param(
            200,
            with_date(("Expires", date(60)), ("Expires", date(120))),
            T0,
            DEFAULT_CONFIG,
            Lifetime(0, "expires-conflict", False),
            id="9111-4.2.1-two-expires-stale",
        ),
        pytest.param(
            200,
            with_date(("Expires", date(60)), ("Expires", date(60))),
            T0,
            DEFAULT_CONFIG,
            Lifetime(60, "expires", False),
            id="9111-4.2.1-two-equal-expires",
        ),
        pytest.param(
            200,
            with_date(("Expires", "Sunday, 19-Nov-23 22:13:20 GMT")),
            T0,
            DEFAULT_CONFIG,
            Lifetime(5 * 86400, "expires", False),
            id="9110-5.6.7-expires-rfc850",
        ),
        pytest.param(
            200,
            with_date(("Expires", "Sun Nov 19 22:13:20 2023")),
            T0,
            DEFAULT_CONFIG,
            Lifetime(5 * 86400, "expires", False),
            id="9110-5.6.7-expires-asctime",
        ),
        pytest.param(
            200,
            with_date(("Cache-Control", "max-age=7200.0"), ("Expires", date(3600))),
            T0,
            DEFAULT_CONFIG,
            Lifetime(0, "max-age", False),
            id="9111-4.2.1-invalid-max-age-stale",
        ),
        pytest.param(
            200,
            with_date(("Cache-Control", "max-age=60"), ("Cache-Control", "max-age=120")),
            T0,
            DEFAULT_CONFIG,
            Lifetime(0, "max-age", False),
            id="9111-4.2.1-dup-max-age-stale",
        ),
        pytest.param(
            200,
            with_date(("Cache-Control", "s-maxage=60, s-maxage=1, max-age=600")),
            T0,
            DEFAULT_CONFIG,
            Lifetime(0, "s-maxage", False),
            id="9111-4.2.1-dup-s-maxage-stale",
        ),
        pytest.param(
            200,
            with_date(("Cache-Control", 'max-age="60"')),
            T0,
            DEFAULT_CONFIG,
            Lifetime(60, "max-age", False),
            id="9111-5.2-quoted-max-age",
        ),
        pytest.param(
            200,
            with_date(("Cache-Control", "max-age=99999999999")),
            T0,
            DEFAULT_CONFIG,
            Lifetime(INF, "max-age", False),
            id="9111-1.2.2-clamp-2^31",
        ),
        pytest.param(
            200,
            with_date(("Expires", "Fri, 31 Dec 9999 23:59:59 GMT")),
            T0,
            DEFAULT_CONFIG,
            Lifetime(INF, "expires", False),
            id="9111-1.2.2-expires-clamped",
        ),
        pytest.param(
            302,
            with_date(("Cache-Control", "max-age=60")),
            T0,
            DEFAULT_CONFIG,
            Lifetime(60, "max-age", False),
            id="9111-4.2.1-any-status-explicit",
        ),
        pytest.param(
            200,
            with_date(("Cache-Control", "max-age=0")),
            T0,
            DEFAULT_CONFIG,
            Lifetime(0, "max-age", False),
            id="9111-5.2.2.1-max-age-0",
        ),
        # RFC 9213 targeted field
        pytest.param(
            200,
            with_date(("Cache-Control", "max-age=60, s-maxage=120"), ("CDN-Cache-Control", "max-age=600")),
            T0,
            DEFAULT_CONFIG,
            Lifetime(600, "cdn-max-age", False),
            id="9213-3.1-cdn-max-age-beats-s-maxage",
        ),
        pytest.param(
            200,
            with_date(("CDN-Cache-Control", "max-age=600, s-maxage=30")),
            T0,
            DEFAULT_CONFIG,
            Lifetime(30, "cdn-s-maxage", False),
            id="9213-2.2-cdn-s-maxage",
        ),
        pytest.param(
            200,
            with_date(("Cache-Control", "max-age=60"), ("CDN-Cache-Control", "max-age=600,,")),
            T0,
            DEFAULT_CONFIG,
            Lifetime(60, "max-age", False),
            id="9213-2.1-invalid-cdn-ignored",
        ),
        pytest.param(
            200,
            with_date(("Cache-Control", "max-age=60"), ("CDN-Cache-Control", "max-age=1.5")),
            T0,
            DEFAULT_CONFIG,
            Lifetime(0, "cdn-max-age", False),
            id="9213-2.1-cdn-decimal-stale",
        ),
        pytest.param(
            200,
            with_date(
                ("Cache-Control", "max-age=60"),
                ("Expires", date(60)),
                ("Last-Modified", date(-10000)),
                ("CDN-Cache-Control", "must-revalidate"),
            ),
            T0,
            DEFAULT_CONFIG,
            Lifetime(1000, "heuristic", True),
            id="9213-2.2-cc-and-expires-ignored-heuristic",
        ),
        pytest.param(
            200,
            with_date(("Expires", date(60)), ("CDN-Cache-Control", "none")),
            T0,
            DEFAULT_CONFIG,
            Lifetime(0, "heuristic", True),
            id="9213-2.2-expires-ignored",
        ),
        pytest.param(
            200,
            with_date(("CDN-Cache-Control", "max-age=600"), ("Edgecache-CDN-Cache-Control", "max-age=5")),
            T0,
            EDGE_TARGETS,
            Lifetime(5, "cdn-max-age", False),
            id="9213-2.2-target-list-order",
        ),
        pytest.param(
            200,
            with_date(("Edgecache-CDN-Cache-Control", "max-age=5"), ("Cache-Control", "max-age=60")),
            T0,
            DEFAULT_CONFIG,
            Lifetime(60, "max-age", False),
            id="9213-2.2-unlisted-field-no-effect",
        ),
        # §4.2.2 heuristic freshness
        pytest.param(
            200,
            with_date(("Last-Modified", date(-10000))),
            T0,
            DEFAULT_CONFIG,
            Lifetime(1000, "heuristic", True),
            id="9111-4.2.2-ten-percent-of-age",
        ),
        pytest.param(
            200,
            with_date(("Last-Modified", date(-10000))),
            T0,
            FRACTION_20,
            Lifetime(2000, "heuristic", True),
            id="9111-4.2.2-configured-fraction",
        ),
        pytest.param(
            200,
            with_date(("Last-Modified", date(-10_000_000))),
            T0,
            DEFAULT_CONFIG,
            Lifetime(86400, "heuristic", True),
            id="9111-4.2.2-capped",
        ),
        pytest.param(
            200,
            with_date(("Last-Modified", date(100))),
            T0,
            DEFAULT_CONFIG,
            Lifetime(0, "heuristic", True),
            id="9111-4.2.2-last-modified-after-date",
        ),
        pytest.param(
            200,
            [("Last-Modified", date(-10000))],
            T0 + 500,
            DEFAULT_CONFIG,
            Lifetime(1050, "heuristic", True),
            id="9111-4.2.2-no-date-uses-response-time",
        ),
        pytest.param(
            200,
            with_date(("Last-Modified", "yesterday")),
            T0,
            DEFAULT_CONFIG,
            Lifetime(0, "heuristic", True),
            id="9111-4.2.2-invalid-last-modified",
        ),
        pytest.param(
            200,
            with_date(),
            T0,
            DEFAULT_CONFIG,
            Lifetime(0, "heuristic", True),
            id="9111-4.2.2-no-last-modified",
        ),
        pytest.param(
            200,
            with_date(),
            T0,
            DEFAULT_TTL,
            Lifetime(300, "default-ttl", True),
            id="config-default-ttl-no-last-modified",
        ),
        pytest.param(
            200,
            with_date(("Last-Modified", date(-10000))),
            T0,
            DEFAULT_TTL,
            Lifetime(1000, "heuristic", True),
            id="config-last-modified-beats-default-ttl",
        ),
        pytest.param(
            302,
            with_date(),
            T0,
            DEFAULT_TTL,
            Lifetime(0, "none", False),
            id="9111-3-default-ttl-not-for-non-heuristic-status",
        ),
        pytest.param(
            404,
            with_date(("Last-Modified", date(-10000))),
            T0,
            DEFAULT_CONFIG,
            Lifetime(1000, "heuristic", True),
            id="9110-15.1-404-heuristic",
        ),
        pytest.param(
            301,
            with_date(("Last-Modified", date(-10000))),
            T0,
            DEFAULT_CONFIG,
            Lifetime(1000, "heuristic", True),
            id="9110-15.1-301-heuristic",
        ),
        pytest.param(
            302,
            with_date(("Last-Modified", date(-10000))),
            T0,
            DEFAULT_CONFIG,
            Lifetime(0, "none", False),
            id="9111-4.2.2-302-not-heuristic",
        ),
        pytest.param(
            500,
            with_date(("Last-Modified", date(-10000))),
            T0,
            DEFAULT_CONFIG,
            Lifetime(0, "none", False),
            id="9111-4.2.2-500-not-heuristic",
        ),
        pytest.param(
            302,
            with_date(("Cache-Control", "public"), ("Last-Modified", date(-10000))),
            T0,
            DEFAULT_CONFIG,
            Lifetime(1000, "heuristic", True),
            id="9111-5.2.2.9-public-heuristic",
        ),
        pytest.param(
            302,
            with_date(("Cache-Control", "private"), ("Last-Modified", date(-10000))),
            T0,
            PRIVATE_CACHE,
            Lifetime(1000, "heuristic", True),
            id="9111-5.2.2.7-private-cache-heuristic",
        ),
        pytest.param(
            200,
            with_date(("Expires", date(10)), ("Last-Modified", date(-10000))),
            T0,
            DEFAULT_CONFIG,
            Lifetime(10, "expires", False),
            id="9111-4.2.2-explicit-wins-over-heuristic",
        ),
    ],
)
def test_freshness_lifetime(
    status: int, headers: HeaderList, response_time: float, config: PolicyConfig, expected: Lifetime
) -> None:
    assert freshness_lifetime(status, headers, response_time, config) == expected


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        pytest.param([], 0, id="9111-4.2.3-absent"),
        pytest.param([("Age", "60")], 60, id="9111-5.1-age"),
        pytest.param([("Age", " 60 ")], 60, id="9111-5.1-ows"),
        pytest.param([("Age", "7200.0")], 0, id="9111-5.1-decimal-ignored"),
        pytest.param([("Age", "-1")], 0, id="9111-5.1-negative-ignored"),
        pytest.param([("Age", "abc")], 0, id="9111-5.1-letters-ignored"),
        pytest.param([("Age", "")], 0, id="9111-5.1-empty-ignored"),
        pytest.param([("Age", "60, 120")], 60, id="9111-5.1-list-first-member"),
        pytest.param([("Age", "abc, 120")], 0, id="9111-5.1-list-first-invalid-ignored"),
        pytest.param([("Age", "60"), ("Age", "120")], 60, id="9111-5.1-first-line"),
        pytest.param([("age", "99999999999")], DELTA_SECONDS_INFINITY, id="9111-1.2.2-age-clamp"),
    ],
)
def test_parse_age(headers: HeaderList, expected: int) -> None:
    assert parse_age(headers) == expected


@pytest.mark.parametrize(
    ("headers", "request_time", "response_time", "now", "expected"),
    [
        pytest.param([("Date", date(0))], T0, T0, T0, 0.0, id="9111-4.2.3-brand-new"),
        pytest.param([("Date", date(0))], T0, T0, T0 + 30, 30.0, id="9111-4.2.3-resident-time"),
        pytest.param(
            [("Date", date(0)), ("Age", "60")], T0, T0, T0 + 30, 90.0, id="9111-4.2.3-age-plus-resident"
        ),
        pytest.param(
            [("Date", date(0)), ("Age", "7200.0")], T0, T0, T0 + 30, 30.0, id="9111-5.1-invalid-age-ignored"
        ),
        pytest.param([("Date", date(-100))], T0, T0, T0, 100.0, id="9111-4.2.3-apparent-age"),
        pytest.param(
            [("Date", date(-100)), ("Age", "20")],
            T0,
            T0,
            T0 + 5,
            105.0,
            id="9111-4.2.3-apparent-age-beats-smaller-age",
        ),
        pytest.param(
            [("Date", date(-100)), ("Age", "500")],
            T0,
            T0,
            T0 + 5,
            505.0,
            id="9111-4.2.3-age-beats-smaller-apparent",
        ),
        pytest.param([("Date", date(3600))], T0, T0, T0, 0.0, id="9111-4.2.3-negative-apparent-age-zero"),
        pytest.param([("Date", date(0))], T0 - 5, T0, T0, 5.0, id="9111-4.2.3-response-delay"),
        pytest.param(
            [("Date", date(0)), ("Age", "10")],
            T0 - 5,
            T0,
            T0 + 1,
            16.0,
            id="9111-4.2.3-age-corrected-by-delay",
        ),
        pytest.param(
            [("Date", date(-3)), ("Age", "10")],
            T0 - 5,
            T0,
            T0,
            15.0,
            id="9111-4.2.3-corrected-age-value-wins",
        ),
        pytest.param([], T0 - 2, T0, T0 + 10, 12.0, id="9111-4.2.3-no-date-uses-response-time"),
        pytest.param([("Date", date(0))], T0 + 5, T0, T0, 0.0, id="clock-skew-negative-delay-zero"),
        pytest.param([("Date", date(0))], T0, T0, T0 - 10, 0.0, id="clock-stepped-back-resident-zero"),
        pytest.param([("Date", date(-1.5))], T0, T0, T0, 2.0, id="9110-5.6.7-date-whole-seconds"),
    ],
)
def test_current_age(
    headers: HeaderList, request_time: float, response_time: float, now: float, expected: float
) -> None:
    assert current_age(headers, request_time, response_time, now) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("age", "expected"),
    [
        pytest.param(0.0, 0, id="9111-5.1-zero"),
        pytest.param(59.9, 59, id="9111-5.1-fraction-dropped"),
        pytest.param(60.0, 60, id="9111-5.1-integer"),
        pytest.param(-3.0, 0, id="9111-5.1-non-negative"),
        pytest.param(math.nan, 0, id="nan"),
        pytest.param(3e9, DELTA_SECONDS_INFINITY, id="9111-1.2.2-cap"),
        pytest.param(math.inf, DELTA_SECONDS_INFINITY, id="9111-1.2.2-inf"),
    ],
)
def test_age_header_value(age: float, expected: int) -> None:
    assert age_header_value(age) == expected


@given(
    st.lists(st.tuples(st.sampled_from(["Age", "Date"]), st.text(max_size=30)), max_size=3),
    st.floats(min_value=0, max_value=10),
    st.floats(min_value=0, max_value=1e6),
    st.floats(min_value=0, max_value=1e6),
)
def test_current_age_properties(
    headers: HeaderList, request_delay: float, resident: float, extra: float
) -> None:
    """Properties (§4.2.3): never negative, grows one-for-one with resident time, ≥ Age + delay."""
    response_time = T0
    request_time = T0 - request_delay
    early = current_age(headers, request_time, response_time, response_time + resident)
    late = current_age(headers, request_time, response_time, response_time + resident + extra)
    assert early >= resident - 1e-6 >= -1e-6
    assert late - early == pytest.approx(extra, abs=1e-6)
    assert early >= parse_age(headers) + request_delay - 1e-6


@given(
    st.integers(min_value=0, max_value=999),
    st.lists(
        st.tuples(
            st.sampled_from(["Cache-Control", "CDN-Cache-Control", "Expires", "Date", "Last-Modified"]),
            st.text(max_size=40),
        ),
        max_size=5,
    ),
)
def test_freshness_lifetime_never_raises(status: int, headers: HeaderList) -> None:
    """Property: any headers give a lifetime in [0, 2^31]."""
    lifetime = freshness_lifetime(status, headers, T0)
    assert 0 <= lifetime.seconds <= INF
