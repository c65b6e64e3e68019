"""serve_decision and the error path: RFC 9111 §4, §4.2.4, §5.2.1, §5.2.2; RFC 5861; RFC 8246; RFC 9213."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edge.http.dates import format_http_date
from edge.http.headers import HeaderList
from edge.http.policy import (
    DEFAULT_CONFIG,
    Action,
    PolicyConfig,
    StoredEntry,
    can_serve_stale_on_error,
    is_error_status,
    must_revalidate_or_504,
    serve_decision,
)

T0 = 1_700_000_000.0
PRIVATE_CACHE = PolicyConfig(shared=False)
IGNORE_CLIENT = PolicyConfig(honor_request_directives=False)
NO_PRAGMA = PolicyConfig(honor_pragma_no_cache=False)
IMMUTABLE_WINS = PolicyConfig(honor_request_no_cache_for_immutable=False)
STALE_ON_ERROR_300 = PolicyConfig(max_stale_on_error=300)


def stored(*pairs: tuple[str, str], status: int = 200, invalidated_at: float | None = None) -> StoredEntry:
    """A response received at T0 (request sent at T0) with Date: T0 plus ``pairs``."""
    headers = [("Date", format_http_date(T0)), *pairs]
    return StoredEntry(status, headers, T0, T0, invalidated_at)


def cc(value: str) -> tuple[str, str]:
    return ("Cache-Control", value)


def req(*values: str) -> list[tuple[str, str]]:
    return [("Cache-Control", value) for value in values]


MAX_AGE_100 = stored(cc("max-age=100"))
A, F, R = Action.FRESH_HIT, Action.STALE_HIT, Action.REVALIDATE
SWR = Action.STALE_WHILE_REVALIDATE


@pytest.mark.parametrize(
    ("method", "request_headers", "entry", "now", "config", "action", "detail"),
    [
        # §4.2 fresh / stale
        pytest.param("GET", [], MAX_AGE_100, T0 + 10, DEFAULT_CONFIG, A, "fresh", id="9111-4.2-fresh"),
        pytest.param("HEAD", [], MAX_AGE_100, T0 + 10, DEFAULT_CONFIG, A, "fresh", id="9111-4-head-from-get"),
        pytest.param("GET", [], MAX_AGE_100, T0 + 99.9, DEFAULT_CONFIG, A, "fresh", id="9111-4.2-just-fresh"),
        pytest.param(
            "GET",
            [],
            MAX_AGE_100,
            T0 + 100,
            DEFAULT_CONFIG,
            R,
            "stale",
            id="9111-4.2-lifetime-equals-age-is-stale",
        ),
        pytest.param("GET", [], MAX_AGE_100, T0 + 500, DEFAULT_CONFIG, R, "stale", id="9111-4.2-stale"),
        pytest.param(
            "POST",
            [],
            MAX_AGE_100,
            T0 + 10,
            DEFAULT_CONFIG,
            Action.BYPASS,
            "method",
            id="9111-4-method-cannot-be-served",
        ),
        pytest.param(
            "GET",
            [],
            stored(cc("max-age=100"), ("Age", "95")),
            T0 + 10,
            DEFAULT_CONFIG,
            R,
            "stale",
            id="9111-4.2.3-age-header-counts",
        ),
        pytest.param(
            "GET",
            [],
            stored(cc("max-age=100"), ("Age", "95.0")),
            T0 + 10,
            DEFAULT_CONFIG,
            A,
            "fresh",
            id="9111-5.1-invalid-age-ignored",
        ),
        pytest.param(
            "GET",
            [],
            stored(("Expires", "0")),
            T0,
            DEFAULT_CONFIG,
            R,
            "stale",
            id="9111-5.3-invalid-expires-stale",
        ),
        pytest.param(
            "GET",
            [],
            stored(cc("max-age=100, s-maxage=5")),
            T0 + 10,
            DEFAULT_CONFIG,
            R,
            "s-maxage",
            id="9111-4.2.1-s-maxage-governs-shared",
        ),
        pytest.param(
            "GET",
            [],
            stored(cc("max-age=100, s-maxage=5")),
            T0 + 10,
            PRIVATE_CACHE,
            A,
            "fresh",
            id="9111-4.2.1-s-maxage-ignored-private",
        ),
        pytest.param(
            "GET",
            [],
            stored(("Last-Modified", format_http_date(T0 - 10000))),
            T0 + 500,
            DEFAULT_CONFIG,
            A,
            "fresh",
            id="9111-4.2.2-heuristic-fresh",
        ),
        pytest.param(
            "GET",
            [],
            stored(("Last-Modified", format_http_date(T0 - 10000))),
            T0 + 1500,
            DEFAULT_CONFIG,
            R,
            "stale",
            id="9111-4.2.2-heuristic-stale",
        ),
        pytest.param(
            "GET",
            [],
            stored(cc("max-age=10"), ("CDN-Cache-Control", "max-age=600")),
            T0 + 300,
            DEFAULT_CONFIG,
            A,
            "fresh",
            id="9213-2.2-cdn-lifetime",
        ),
        # response no-cache (§5.2.2.4)
        pytest.param(
            "GET",
            [],
            stored(cc("no-cache, max-age=100")),
            T0 + 1,
            DEFAULT_CONFIG,
            R,
            "no-cache",
            id="9111-5.2.2.4-no-cache-always-revalidate",
        ),
        pytest.param(
            "GET",
            req("max-stale"),
            stored(cc("no-cache")),
            T0 + 1,
            DEFAULT_CONFIG,
            R,
            "no-cache",
            id="9111-5.2.2.4-no-cache-beats-max-stale",
        ),
        pytest.param(
            "GET",
            [],
            stored(cc('no-cache="X-Token", max-age=100'), ("X-Token", "t")),
            T0 + 1,
            DEFAULT_CONFIG,
            R,
            "no-cache-fields",
            id="9111-5.2.2.4-qualified-field-present",
        ),
        pytest.param(
            "GET",
            [],
            stored(cc('no-cache="X-Token", max-age=100')),
            T0 + 1,
            DEFAULT_CONFIG,
            A,
            "fresh",
            id="9111-5.2.2.4-qualified-field-stripped",
        ),
        pytest.param(
            "GET",
            [],
            stored(cc("max-age=100"), ("CDN-Cache-Control", "no-cache")),
            T0 + 1,
            DEFAULT_CONFIG,
            R,
            "no-cache",
            id="9213-2.2-cdn-no-cache",
        ),
        pytest.param(
            "GET",
            [],
            stored(cc("no-cache"), ("CDN-Cache-Control", "max-age=100")),
            T0 + 1,
            DEFAULT_CONFIG,
            A,
            "fresh",
            id="9213-2.2-cc-no-cache-ignored-for-cdn",
        ),
        # request no-cache / Pragma (§5.2.1.4, §5.4)
        pytest.param(
            "GET",
            req("no-cache"),
            MAX_AGE_100,
            T0 + 1,
            DEFAULT_CONFIG,
            R,
            "request-no-cache",
            id="9111-5.2.1.4-request-no-cache",
        ),
        pytest.param(
            "GET",
            req('no-cache="x"'),
            MAX_AGE_100,
            T0 + 1,
            DEFAULT_CONFIG,
            R,
            "request-no-cache",
            id="9111-5.2.1.4-request-no-cache-with-argument",
        ),
        pytest.param(
            "GET",
            [("Pragma", "no-cache")],
            MAX_AGE_100,
            T0 + 1,
            DEFAULT_CONFIG,
            R,
            "request-no-cache",
            id="7234-5.4-pragma-without-cache-control",
        ),
        pytest.param(
            "GET",
            [("Pragma", "x, No-Cache")],
            MAX_AGE_100,
            T0 + 1,
            DEFAULT_CONFIG,
            R,
            "request-no-cache",
            id="7234-5.4-pragma-list-case",
        ),
        pytest.param(
            "GET",
            [("Pragma", "no-cache"), *req("max-age=3600")],
            MAX_AGE_100,
            T0 + 1,
            DEFAULT_CONFIG,
            A,
            "fresh",
            id="7234-5.4-pragma-ignored-with-cache-control",
        ),
        pytest.param(
            "GET",
            [("Pragma", "no-cache")],
            MAX_AGE_100,
            T0 + 1,
            NO_PRAGMA,
            A,
            "fresh",
            id="config-pragma-off",
        ),
        pytest.param(
            "GET",
            req("no-cache"),
            MAX_AGE_100,
            T0 + 1,
            IGNORE_CLIENT,
            A,
            "fresh",
            id="9111-5.2.1-advisory-config-off",
        ),
        # request max-age / min-fresh (§5.2.1.1, §5.2.1.3)
        pytest.param(
            "GET",
            req("max-age=20"),
            MAX_AGE_100,
            T0 + 10,
            DEFAULT_CONFIG,
            A,
            "fresh",
            id="9111-5.2.1.1-age-within",
        ),
        pytest.param(
            "GET",
            req("max-age=10"),
            MAX_AGE_100,
            T0 + 10,
            DEFAULT_CONFIG,
            A,
            "fresh",
            id="9111-5.2.1.1-age-equal-ok",
        ),
        pytest.param(
            "GET",
            req("max-age=5"),
            MAX_AGE_100,
            T0 + 10,
            DEFAULT_CONFIG,
            R,
            "request-max-age",
            id="9111-5.2.1.1-too-old",
        ),
        pytest.param(
            "GET",
            req("max-age=0"),
            MAX_AGE_100,
            T0 + 1,
            DEFAULT_CONFIG,
            R,
            "request-max-age",
            id="9111-5.2.1.1-max-age-0-reload",
        ),
        pytest.param(
            "GET",
            req("max-age=abc"),
            MAX_AGE_100,
            T0 + 1,
            DEFAULT_CONFIG,
            R,
            "request-max-age",
            id="9111-4.2.1-invalid-request-max-age-is-0",
        ),
        pytest.param(
            "GET",
            req("min-fresh=50"),
            MAX_AGE_100,
            T0 + 10,
            DEFAULT_CONFIG,
            A,
            "fresh",
            id="9111-5.2.1.3-enough-left",
        ),
        pytest.param(
            "GET",
            req("min-fresh=95"),
            MAX_AGE_100,
            T0 + 10,
            DEFAULT_CONFIG,
            R,
            "request-min-fresh",
            id="9111-5.2.1.3-not-enough-left",
        ),
        pytest.param(
            "GET",
            req("min-fresh=10", "max-stale"),
            MAX_AGE_100,
            T0 + 200,
            DEFAULT_CONFIG,
            R,
            "request-min-fresh",
            id="9111-5.2.1.3-stale-never-satisfies",
        ),
        # request max-stale (§5.2.1.2) and what forbids it (§4.2.4)
        pytest.param(
            "GET",
            req("max-stale"),
            MAX_AGE_100,
            T0 + 10_000,
            DEFAULT_CONFIG,
            F,
            "max-stale",
            id="9111-5.2.1.2-any-staleness",
        ),
        pytest.param(
            "GET",
            req("max-stale=50"),
            MAX_AGE_100,
            T0 + 140,
            DEFAULT_CONFIG,
            F,
            "max-stale",
            id="9111-5.2.1.2-within",
        ),
        pytest.param(
            "GET",
            req("max-stale=50"),
            MAX_AGE_100,
            T0 + 150,
            DEFAULT_CONFIG,
            F,
            "max-stale",
            id="9111-5.2.1.2-boundary",
        ),
        pytest.param(
            "GET",
            req("max-stale=50"),
            MAX_AGE_100,
            T0 + 151,
            DEFAULT_CONFIG,
            R,
            "stale",
            id="9111-5.2.1.2-beyond",
        ),
        pytest.param(
            "GET",
            req("max-stale=abc"),
            MAX_AGE_100,
            T0 + 110,
            DEFAULT_CONFIG,
            R,
            "stale",
            id="9111-5.2.1.2-invalid-value-no-permission",
        ),
        pytest.param(
            "GET",
            req("max-stale"),
            stored(cc("max-age=100, must-revalidate")),
            T0 + 110,
            DEFAULT_CONFIG,
            R,
            "must-revalidate",
            id="9111-5.2.2.2-must-revalidate-blocks-max-stale",
        ),
        pytest.param(
            "GET",
            req("max-stale"),
            stored(cc("max-age=100, proxy-revalidate")),
            T0 + 110,
            DEFAULT_CONFIG,
            R,
            "proxy-revalidate",
            id="9111-5.2.2.8-proxy-revalidate-blocks",
        ),
        pytest.param(
            "GET",
            req("max-stale"),
            stored(cc("max-age=100, proxy-revalidate")),
            T0 + 110,
            PRIVATE_CACHE,
            F,
            "max-stale",
            id="9111-5.2.2.8-private-cache-unaffected",
        ),
        pytest.param(
            "GET",
            req("max-stale"),
            stored(cc("s-maxage=100")),
            T0 + 110,
            DEFAULT_CONFIG,
            R,
            "s-maxage",
            id="9111-5.2.2.10-s-maxage-implies-proxy-revalidate",
        ),
        pytest.param(
            "GET",
            req("max-stale"),
            stored(cc("max-age=100"), ("CDN-Cache-Control", "max-age=100, must-revalidate")),
            T0 + 110,
            DEFAULT_CONFIG,
            R,
            "must-revalidate",
            id="9213-2.2-cdn-must-revalidate",
        ),
        pytest.param(
            "GET",
            req("max-stale"),
            stored(cc("max-age=100, must-revalidate"), ("CDN-Cache-Control", "max-age=100")),
            T0 + 110,
            DEFAULT_CONFIG,
            F,
            "max-stale",
            id="9213-2.2-cc-must-revalidate-ignored",
        ),
        pytest.param(
            "GET",
            req("max-age=200", "max-stale=50"),
            MAX_AGE_100,
            T0 + 120,
            DEFAULT_CONFIG,
            F,
            "max-stale",
            id="9111-5.2.1.1-max-age-with-max-stale",
        ),
        pytest.param(
            "GET",
            req("max-age=110", "max-stale=50"),
            MAX_AGE_100,
            T0 + 120,
            DEFAULT_CONFIG,
            R,
            "request-max-age",
            id="9111-5.2.1.1-max-age-still-limits",
        ),
        pytest.param(
            "GET",
            req("max-age=200"),
            MAX_AGE_100,
            T0 + 120,
            DEFAULT_CONFIG,
            R,
            "request-max-age",
            id="9111-5.2.1.1-no-stale-without-max-stale",
        ),
        # RFC 5861 §3 stale-while-revalidate
        pytest.param(
            "GET",
            [],
            stored(cc("max-age=100, stale-while-revalidate=60")),
            T0 + 130,
            DEFAULT_CONFIG,
            SWR,
            "stale-while-revalidate",
            id="5861-3-within-window",
        ),
        pytest.param(
            "GET",
            [],
            stored(cc("max-age=100, stale-while-revalidate=60")),
            T0 + 160,
            DEFAULT_CONFIG,
            SWR,
            "stale-while-revalidate",
            id="5861-3-window-inclusive",
        ),
        pytest.param(
            "GET",
            [],
            stored(cc("max-age=100, stale-while-revalidate=60")),
            T0 + 161,
            DEFAULT_CONFIG,
            R,
            "stale",
            id="5861-3-beyond-window",
        ),
        pytest.param(
            "GET",
            [],
            stored(cc("max-age=100, stale-while-revalidate=60")),
            T0 + 50,
            DEFAULT_CONFIG,
            A,
            "fresh",
            id="5861-3-fresh-is-plain-hit",
        ),
        pytest.param(
            "GET",
            [],
            stored(cc("max-age=100, stale-while-revalidate=0")),
            T0 + 100,
            DEFAULT_CONFIG,
            R,
            "stale",
            id="5861-3-zero-window",
        ),
        pytest.param(
            "GET",
            [],
            stored(cc("max-age=100, stale-while-revalidate=60, must-revalidate")),
            T0 + 130,
            DEFAULT_CONFIG,
            R,
            "must-revalidate",
            id="9111-4.2.4-must-revalidate-blocks-swr",
        ),
        pytest.param(
            "GET",
            [],
            stored(cc("max-age=100, stale-while-revalidate=60, proxy-revalidate")),
            T0 + 130,
            DEFAULT_CONFIG,
            R,
            "proxy-revalidate",
            id="9111-4.2.4-proxy-revalidate-blocks-swr",
        ),
        pytest.param(
            "GET",
            [],
            stored(cc("s-maxage=100, stale-while-revalidate=60")),
            T0 + 130,
            DEFAULT_CONFIG,
            R,
            "s-maxage",
            id="9111-4.2.4-s-maxage-blocks-swr",
        ),
        pytest.param(
            "GET",
            [],
            stored(cc("s-maxage=100, stale-while-revalidate=60")),
            T0 + 130,
            PRIVATE_CACHE,
            R,
            "stale",
            id="9111-4.2.4-private-cache-no-s-maxage-lifetime",
        ),
        pytest.param(
            "GET",
            req("no-cache"),
            stored(cc("max-age=100, stale-while-revalidate=60")),
            T0 + 130,
            DEFAULT_CONFIG,
            R,
            "request-no-cache",
            id="5861-3-request-no-cache-blocks",
        ),
        pytest.param(
            "GET",
            req("max-age=0"),
            stored(cc("max-age=100, stale-while-revalidate=60")),
            T0 + 130,
            DEFAULT_CONFIG,
            R,
            "request-max-age",
            id="9111-5.2.1.1-client-max-age-blocks-swr",
        ),
        pytest.param(
            "GET",
            req("max-stale=5"),
            stored(cc("max-age=100, stale-while-revalidate=60")),
            T0 + 130,
            DEFAULT_CONFIG,
            SWR,
            "stale-while-revalidate",
            id="5861-3-swr-wider-than-max-stale",
        ),
        pytest.param(
            "GET",
            [],
            stored(cc("max-age=100"), ("CDN-Cache-Control", "max-age=100, stale-while-revalidate=60")),
            T0 + 130,
            DEFAULT_CONFIG,
            SWR,
            "stale-while-revalidate",
            id="9213-2.2-cdn-swr",
        ),
        pytest.param(
            "GET",
            [],
            stored(cc("max-age=100, stale-while-revalidate=60"), ("CDN-Cache-Control", "max-age=100")),
            T0 + 130,
            DEFAULT_CONFIG,
            R,
            "stale",
            id="9213-2.2-cc-swr-ignored-for-cdn",
        ),
        # RFC 8246 immutable
        pytest.param(
            "GET",
            req("max-age=0"),
            stored(cc("max-age=100, immutable")),
            T0 + 10,
            DEFAULT_CONFIG,
            A,
            "immutable",
            id="8246-2-reload-max-age-0-skipped",
        ),
        pytest.param(
            "GET",
            req("no-cache"),
            stored(cc("max-age=100, immutable")),
            T0 + 10,
            DEFAULT_CONFIG,
            R,
            "request-no-cache",
            id="8246-2.1-no-cache-signal-honoured",
        ),
        pytest.param(
            "GET",
            [("Pragma", "no-cache")],
            stored(cc("max-age=100, immutable")),
            T0 + 10,
            DEFAULT_CONFIG,
            R,
            "request-no-cache",
            id="8246-2.1-pragma-signal-honoured",
        ),
        pytest.param(
            "GET",
            req("no-cache"),
            stored(cc("max-age=100, immutable")),
            T0 + 10,
            IMMUTABLE_WINS,
            A,
            "immutable",
            id="8246-2.1-config-ignore-client-no-cache",
        ),
        pytest.param(
            "GET",
            req("no-cache"),
            stored(cc("max-age=100, immutable")),
            T0 + 110,
            IMMUTABLE_WINS,
            R,
            "request-no-cache",
            id="8246-2-stale-immutable-revalidated",
        ),
        pytest.param(
            "GET",
            [],
            stored(cc("max-age=100, immutable")),
            T0 + 110,
            DEFAULT_CONFIG,
            R,
            "stale",
            id="8246-2-stale-immutable-normal",
        ),
        pytest.param(
            "GET",
            req("min-fresh=95"),
            stored(cc("max-age=100, immutable")),
            T0 + 10,
            DEFAULT_CONFIG,
            R,
            "request-min-fresh",
            id="8246-2-min-fresh-still-applies",
        ),
        pytest.param(
            "GET",
            req("max-age=0"),
            stored(cc("max-age=100, no-cache, immutable")),
            T0 + 10,
            DEFAULT_CONFIG,
            R,
            "no-cache",
            id="9111-4.2.1-no-cache-beats-immutable",
        ),
        # invalidation / soft purge (§4.4)
        pytest.param(
            "GET",
            [],
            stored(cc("max-age=100"), invalidated_at=T0 + 5),
            T0 + 10,
            DEFAULT_CONFIG,
            R,
            "invalidated",
            id="9111-4.4-invalidated-fresh-entry",
        ),
        pytest.param(
            "GET",
            [],
            stored(cc("max-age=100"), invalidated_at=T0 - 5),
            T0 + 10,
            DEFAULT_CONFIG,
            A,
            "fresh",
            id="9111-4.4-invalidation-before-store-ignored",
        ),
        pytest.param(
            "GET",
            [],
            stored(cc("max-age=100, stale-while-revalidate=30"), invalidated_at=T0 + 5),
            T0 + 20,
            DEFAULT_CONFIG,
            SWR,
            "stale-while-revalidate",
            id="soft-purge-swr-from-purge-time",
        ),
        pytest.param(
            "GET",
            [],
            stored(cc("max-age=100, stale-while-revalidate=30"), invalidated_at=T0 + 5),
            T0 + 40,
            DEFAULT_CONFIG,
            R,
            "invalidated",
            id="soft-purge-swr-window-from-purge-time",
        ),
        pytest.param(
            "GET",
            req("max-stale"),
            stored(cc("max-age=100"), invalidated_at=T0 + 5),
            T0 + 10,
            DEFAULT_CONFIG,
            F,
            "max-stale",
            id="soft-purge-client-max-stale",
        ),
    ],
)
def test_serve_decision(
    method: str,
    request_headers: HeaderList,
    entry: StoredEntry,
    now: float,
    config: PolicyConfig,
    action: Action,
    detail: str,
) -> None:
    decision = serve_decision(method, request_headers, entry, now, config)
    assert (decision.action, decision.detail) == (action, detail)


@pytest.mark.parametrize(
    ("request_headers", "entry", "now", "expected"),
    [
        pytest.param(
            [],
            MAX_AGE_100,
            T0 + 10,
            {
                "fresh": True,
                "age": 10,
                "lifetime": 100,
                "ttl": 90,
                "staleness": 0,
                "expires_at": T0 + 100,
                "must_revalidate": False,
                "heuristic": False,
            },
            id="9111-4.2-fresh-numbers",
        ),
        pytest.param(
            [],
            MAX_AGE_100,
            T0 + 130,
            {"fresh": False, "age": 130, "ttl": -30, "staleness": 30, "expires_at": T0 + 100},
            id="9111-4.2-stale-numbers",
        ),
        pytest.param(
            [],
            stored(cc("max-age=100"), ("Age", "40")),
            T0 + 10,
            {"age": 50, "ttl": 50, "expires_at": T0 + 60},
            id="9111-4.2.3-age-shortens-ttl",
        ),
        pytest.param(
            [],
            stored(cc("max-age=100"), invalidated_at=T0 + 5),
            T0 + 10,
            {"fresh": False, "ttl": 90, "staleness": 5, "expires_at": T0 + 5},
            id="9111-4.4-invalidated",
        ),
        pytest.param(
            [],
            stored(cc("max-age=100"), invalidated_at=T0 + 50),
            T0 + 10,
            {"fresh": False, "staleness": 0, "expires_at": T0 + 10},
            id="invalidation-from-future-clamped",
        ),
        pytest.param(
            [],
            stored(("Last-Modified", format_http_date(T0 - 10000))),
            T0,
            {"lifetime": 1000, "heuristic": True},
            id="9111-4.2.2-heuristic-flag",
        ),
        pytest.param(
            [],
            stored(cc("max-age=100, must-revalidate")),
            T0 + 10,
            {"must_revalidate": True},
            id="9111-5.2.2.2-flag",
        ),
        pytest.param(
            req("only-if-cached"),
            MAX_AGE_100,
            T0 + 500,
            {"action": Action.REVALIDATE, "only_if_cached": True},
            id="9111-5.2.1.7-flag-on-revalidate",
        ),
        pytest.param(
            req("only-if-cached"),
            MAX_AGE_100,
            T0 + 5,
            {"action": Action.FRESH_HIT, "only_if_cached": True},
            id="9111-5.2.1.7-fresh-served",
        ),
        pytest.param(
            req("only-if-cached"), MAX_AGE_100, T0 + 5, {"only_if_cached": True}, id="9111-5.2.1.7-reported"
        ),
        pytest.param(
            [],
            stored(cc("max-age=100, stale-while-revalidate=60")),
            T0,
            {"stale_while_revalidate_window": 60},
            id="5861-3-window-reported",
        ),
        pytest.param(
            [],
            stored(cc("max-age=100, stale-while-revalidate=60, must-revalidate")),
            T0,
            {"stale_while_revalidate_window": 0},
            id="5861-3-window-zero-when-forbidden",
        ),
        # RFC 5861 §4 stale-if-error windows
        pytest.param(
            [],
            stored(cc("max-age=100, stale-if-error=600")),
            T0,
            {"stale_if_error_window": 600},
            id="5861-4-response-window",
        ),
        pytest.param(
            req("stale-if-error=60"),
            stored(cc("max-age=100, stale-if-error=600")),
            T0,
            {"stale_if_error_window": 60},
            id="5861-4-request-window-governs-request",
        ),
        pytest.param(
            req("stale-if-error=900"),
            MAX_AGE_100,
            T0,
            {"stale_if_error_window": 900},
            id="5861-4-request-only",
        ),
        pytest.param([], MAX_AGE_100, T0, {"stale_if_error_window": 0}, id="9111-4.2.4-no-permission"),
        pytest.param(
            [],
            stored(cc("max-age=100, stale-if-error=600, must-revalidate")),
            T0,
            {"stale_if_error_window": 0},
            id="9111-4.2.4-must-revalidate-zero",
        ),
        pytest.param(
            [],
            stored(cc("max-age=100, stale-if-error=600, proxy-revalidate")),
            T0,
            {"stale_if_error_window": 0},
            id="9111-4.2.4-proxy-revalidate-zero",
        ),
        pytest.param(
            [],
            stored(cc("s-maxage=100, stale-if-error=600")),
            T0,
            {"stale_if_error_window": 0},
            id="9111-4.2.4-s-maxage-zero",
        ),
        pytest.param(
            [],
            stored(cc("max-age=100, stale-if-error=600, no-cache")),
            T0,
            {"stale_if_error_window": 0},
            id="9111-5.2.2.4-no-cache-zero",
        ),
        pytest.param(
            req("stale-if-error=60"),
            stored(cc("must-revalidate, max-age=1")),
            T0,
            {"stale_if_error_window": 0},
            id="9111-4.2.4-request-cannot-override-must-revalidate",
        ),
    ],
)
def test_serve_decision_details(
    request_headers: HeaderList, entry: StoredEntry, now: float, expected: dict[str, object]
) -> None:
    decision = serve_decision("GET", request_headers, entry, now)
    for name, value in expected.items():
        actual = getattr(decision, name)
        if isinstance(value, bool | Action):
            assert actual == value, name
        else:
            assert actual == pytest.approx(value), name


def test_operator_stale_on_error_window_reported() -> None:
    """RFC 9111 §4.2.4 "configuration in accordance with an out-of-band contract"."""
    decision = serve_decision("GET", [], MAX_AGE_100, T0, STALE_ON_ERROR_300)
    assert decision.stale_if_error_window == 300


@pytest.mark.parametrize(
    ("request_headers", "entry", "now", "config", "expected"),
    [
        pytest.param(
            [],
            stored(cc("max-age=100, stale-if-error=60")),
            T0 + 130,
            DEFAULT_CONFIG,
            True,
            id="5861-4-within-window",
        ),
        pytest.param(
            [],
            stored(cc("max-age=100, stale-if-error=60")),
            T0 + 160,
            DEFAULT_CONFIG,
            True,
            id="5861-4-window-inclusive",
        ),
        pytest.param(
            [],
            stored(cc("max-age=100, stale-if-error=60")),
            T0 + 161,
            DEFAULT_CONFIG,
            False,
            id="5861-4-beyond-window",
        ),
        pytest.param([], MAX_AGE_100, T0 + 130, DEFAULT_CONFIG, False, id="9111-4.2.4-no-permission"),
        pytest.param([], MAX_AGE_100, T0 + 130, STALE_ON_ERROR_300, True, id="9111-4.2.4-operator-contract"),
        pytest.param([], MAX_AGE_100, T0 + 500, STALE_ON_ERROR_300, False, id="9111-4.2.4-operator-limit"),
        pytest.param([], MAX_AGE_100, T0 + 50, DEFAULT_CONFIG, True, id="9111-4.3.3-still-fresh"),
        pytest.param(
            req("stale-if-error=120"),
            stored(cc("max-age=100, stale-if-error=10")),
            T0 + 160,
            DEFAULT_CONFIG,
            True,
            id="5861-4-request-extends",
        ),
        pytest.param(
            req("stale-if-error=0"),
            stored(cc("max-age=100, stale-if-error=600")),
            T0 + 101,
            DEFAULT_CONFIG,
            False,
            id="5861-4-request-refuses",
        ),
        pytest.param(
            [],
            stored(cc("max-age=100, stale-if-error=600, must-revalidate")),
            T0 + 130,
            DEFAULT_CONFIG,
            False,
            id="9111-5.2.2.2-must-revalidate-504",
        ),
        pytest.param(
            [],
            stored(cc("max-age=100, stale-if-error=600, proxy-revalidate")),
            T0 + 130,
            DEFAULT_CONFIG,
            False,
            id="9111-5.2.2.8-proxy-revalidate-504",
        ),
        pytest.param(
            [],
            stored(cc("max-age=100, stale-if-error=600, proxy-revalidate")),
            T0 + 130,
            PRIVATE_CACHE,
            True,
            id="9111-5.2.2.8-private-cache-may",
        ),
        pytest.param(
            [],
            stored(cc("s-maxage=100, stale-if-error=600")),
            T0 + 130,
            DEFAULT_CONFIG,
            False,
            id="9111-5.2.2.10-s-maxage-504",
        ),
        pytest.param(
            [],
            stored(cc("max-age=100, stale-if-error=600, no-cache")),
            T0 + 10,
            DEFAULT_CONFIG,
            False,
            id="9111-5.2.2.4-no-cache-even-fresh",
        ),
        pytest.param(
            [],
            stored(cc('max-age=100, no-cache="X-T"'), ("X-T", "1")),
            T0 + 10,
            DEFAULT_CONFIG,
            False,
            id="9111-5.2.2.4-no-cache-field-present",
        ),
        pytest.param(
            [],
            stored(cc("max-age=100, stale-if-error=60"), invalidated_at=T0 + 5),
            T0 + 50,
            DEFAULT_CONFIG,
            True,
            id="soft-purge-sie-from-purge-time",
        ),
        pytest.param(
            [],
            stored(cc("max-age=100, stale-if-error=60"), invalidated_at=T0 + 5),
            T0 + 70,
            DEFAULT_CONFIG,
            False,
            id="soft-purge-sie-window-over",
        ),
        pytest.param(
            [],
            stored(cc("max-age=100"), ("CDN-Cache-Control", "max-age=100, stale-if-error=60")),
            T0 + 130,
            DEFAULT_CONFIG,
            True,
            id="9213-2.2-cdn-sie",
        ),
        pytest.param(
            [],
            stored(cc("max-age=100, stale-if-error=60"), ("CDN-Cache-Control", "max-age=100")),
            T0 + 130,
            DEFAULT_CONFIG,
            False,
            id="9213-2.2-cc-sie-ignored-for-cdn",
        ),
    ],
)
def test_can_serve_stale_on_error(
    request_headers: HeaderList, entry: StoredEntry, now: float, config: PolicyConfig, expected: bool
) -> None:
    assert can_serve_stale_on_error(entry, request_headers, now, config) is expected


@pytest.mark.parametrize(
    ("entry", "config", "expected"),
    [
        pytest.param(stored(cc("max-age=100, must-revalidate")), DEFAULT_CONFIG, True, id="9111-5.2.2.2"),
        pytest.param(
            stored(cc("max-age=100, must-revalidate")), PRIVATE_CACHE, True, id="9111-5.2.2.2-any-cache"
        ),
        pytest.param(stored(cc("max-age=100, proxy-revalidate")), DEFAULT_CONFIG, True, id="9111-5.2.2.8"),
        pytest.param(
            stored(cc("max-age=100, proxy-revalidate")), PRIVATE_CACHE, False, id="9111-5.2.2.8-not-private"
        ),
        pytest.param(stored(cc("s-maxage=100")), DEFAULT_CONFIG, True, id="9111-5.2.2.10"),
        pytest.param(stored(cc("no-cache")), DEFAULT_CONFIG, True, id="9111-5.2.2.4"),
        pytest.param(stored(cc("max-age=100, stale-if-error=60")), DEFAULT_CONFIG, False, id="plain"),
        pytest.param(
            stored(("CDN-Cache-Control", "must-revalidate")),
            DEFAULT_CONFIG,
            True,
            id="9213-2.2-cdn-must-revalidate",
        ),
        pytest.param(
            stored(cc("must-revalidate"), ("CDN-Cache-Control", "max-age=10")),
            DEFAULT_CONFIG,
            False,
            id="9213-2.2-cc-ignored",
        ),
    ],
)
def test_must_revalidate_or_504(entry: StoredEntry, config: PolicyConfig, expected: bool) -> None:
    assert must_revalidate_or_504(entry, config) is expected


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        pytest.param(500, True, id="5861-4-500"),
        pytest.param(502, True, id="5861-4-502"),
        pytest.param(503, True, id="5861-4-503"),
        pytest.param(504, True, id="5861-4-504"),
        pytest.param(501, False, id="5861-4-501-not-error"),
        pytest.param(404, False, id="5861-4-404"),
    ],
)
def test_is_error_status(status: int, expected: bool) -> None:
    assert is_error_status(status) is expected


_REQUEST_CC = st.sampled_from(
    [
        "",
        "no-cache",
        "max-age=0",
        "max-age=50",
        "max-stale",
        "max-stale=30",
        "min-fresh=20",
        "only-if-cached",
        "stale-if-error=100",
        "no-store",
        "max-age=abc",
    ]
)
_RESPONSE_CC = st.sampled_from(
    [
        "max-age=100",
        "s-maxage=100",
        "no-cache",
        "must-revalidate, max-age=100",
        "max-age=100, immutable",
        "max-age=100, stale-while-revalidate=50",
        "proxy-revalidate, max-age=100",
        "public",
        "max-age=x",
        "",
    ]
)


@given(
    _REQUEST_CC,
    _REQUEST_CC,
    _RESPONSE_CC,
    _RESPONSE_CC,
    st.floats(min_value=-10, max_value=1000),
    st.one_of(st.none(), st.floats(min_value=-10, max_value=1000)),
)
def test_serve_invariants(
    request_a: str, request_b: str, response_a: str, response_b: str, offset: float, invalidated: float | None
) -> None:
    """Properties (§4.2.4): stale is never served when forbidden; fresh hits are really fresh."""
    entry = stored(
        cc(response_a), cc(response_b), invalidated_at=None if invalidated is None else T0 + invalidated
    )
    decision = serve_decision("GET", req(request_a, request_b), entry, T0 + offset)
    if decision.action in (Action.STALE_HIT, Action.STALE_WHILE_REVALIDATE):
        assert not decision.fresh
        assert not decision.must_revalidate
    if decision.action is Action.FRESH_HIT:
        assert decision.fresh
    if decision.must_revalidate:
        assert decision.stale_if_error_window == 0
        assert decision.stale_while_revalidate_window == 0
        assert (
            not can_serve_stale_on_error(entry, req(request_a, request_b), T0 + offset + 1) or decision.fresh
        )
