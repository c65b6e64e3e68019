"""storable(): RFC 9111 §3 (+§3.5, §5.2.1.5, §5.2.2.3, §5.2.2.5, §5.2.2.7) and RFC 9213, shared cache."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edge.http.headers import HeaderList
from edge.http.policy import (
    DEFAULT_CONFIG,
    HOP_BY_HOP_FIELDS,
    PROXY_SPECIFIC_FIELDS,
    PolicyConfig,
    StoreDecision,
    request_allows_store,
    storable,
)

PRIVATE_CACHE = PolicyConfig(shared=False)
COOKIES_OK = PolicyConfig(store_set_cookie=True)
EDGE_TARGETS = PolicyConfig(cdn_cache_control_names=("Edgecache-CDN-Cache-Control", "CDN-Cache-Control"))
NOTHING_UNDERSTOOD = PolicyConfig(understood_statuses=frozenset())

AUTH: HeaderList = [("Authorization", "Bearer abc")]
DATE = ("Date", "Tue, 14 Nov 2023 22:13:20 GMT")


def cc(value: str) -> list[tuple[str, str]]:
    return [DATE, ("Cache-Control", value)]


@pytest.mark.parametrize(
    ("method", "status", "request_headers", "response_headers", "config", "store", "reason"),
    [
        # §3 method and status
        pytest.param(
            "GET",
            200,
            [],
            cc("max-age=60"),
            DEFAULT_CONFIG,
            True,
            "explicit-freshness",
            id="9111-3-get-200-max-age",
        ),
        pytest.param(
            "HEAD",
            200,
            [],
            cc("max-age=60"),
            DEFAULT_CONFIG,
            True,
            "explicit-freshness",
            id="9111-3-head-storable",
        ),
        pytest.param(
            "get",
            200,
            [],
            cc("max-age=60"),
            DEFAULT_CONFIG,
            True,
            "explicit-freshness",
            id="9111-3-method-case",
        ),
        pytest.param(
            "POST",
            200,
            [],
            cc("max-age=60"),
            DEFAULT_CONFIG,
            False,
            "method",
            id="9111-3-post-not-understood",
        ),
        pytest.param("PUT", 200, [], cc("max-age=60"), DEFAULT_CONFIG, False, "method", id="9111-3-put"),
        pytest.param(
            "GET", 103, [], cc("max-age=60"), DEFAULT_CONFIG, False, "status", id="9111-3-1xx-not-final"
        ),
        pytest.param("GET", 100, [], cc("max-age=60"), DEFAULT_CONFIG, False, "status", id="9111-3-100"),
        pytest.param("GET", 600, [], cc("max-age=60"), DEFAULT_CONFIG, False, "status", id="9111-3-600"),
        pytest.param(
            "GET",
            206,
            [],
            cc("max-age=60"),
            DEFAULT_CONFIG,
            False,
            "partial",
            id="9111-3.3-206-never-complete",
        ),
        pytest.param(
            "GET",
            206,
            [],
            cc("public, max-age=60"),
            DEFAULT_CONFIG,
            False,
            "partial",
            id="9111-3.3-206-public",
        ),
        pytest.param(
            "GET",
            304,
            [],
            cc("max-age=60"),
            DEFAULT_CONFIG,
            False,
            "not-modified",
            id="9111-4.3.4-304-freshens-not-stored",
        ),
        # §3 "at least one of": explicit freshness, public, heuristically cacheable status
        pytest.param("GET", 200, [], [DATE], DEFAULT_CONFIG, True, "heuristic", id="9111-3-200-heuristic"),
        pytest.param("GET", 203, [], [DATE], DEFAULT_CONFIG, True, "heuristic", id="9110-15.1-203"),
        pytest.param("GET", 204, [], [DATE], DEFAULT_CONFIG, True, "heuristic", id="9110-15.1-204"),
        pytest.param("GET", 300, [], [DATE], DEFAULT_CONFIG, True, "heuristic", id="9110-15.1-300"),
        pytest.param("GET", 301, [], [DATE], DEFAULT_CONFIG, True, "heuristic", id="9110-15.1-301"),
        pytest.param("GET", 308, [], [DATE], DEFAULT_CONFIG, True, "heuristic", id="9110-15.1-308"),
        pytest.param("GET", 404, [], [DATE], DEFAULT_CONFIG, True, "heuristic", id="9110-15.1-404"),
        pytest.param("GET", 405, [], [DATE], DEFAULT_CONFIG, True, "heuristic", id="9110-15.1-405"),
        pytest.param("GET", 410, [], [DATE], DEFAULT_CONFIG, True, "heuristic", id="9110-15.1-410"),
        pytest.param("GET", 414, [], [DATE], DEFAULT_CONFIG, True, "heuristic", id="9110-15.1-414"),
        pytest.param("GET", 501, [], [DATE], DEFAULT_CONFIG, True, "heuristic", id="9110-15.1-501"),
        pytest.param("GET", 201, [], [DATE], DEFAULT_CONFIG, False, "no-freshness-info", id="9111-3-201"),
        pytest.param("GET", 302, [], [DATE], DEFAULT_CONFIG, False, "no-freshness-info", id="9111-3-302"),
        pytest.param("GET", 307, [], [DATE], DEFAULT_CONFIG, False, "no-freshness-info", id="9111-3-307"),
        pytest.param("GET", 403, [], [DATE], DEFAULT_CONFIG, False, "no-freshness-info", id="9111-3-403"),
        pytest.param("GET", 500, [], [DATE], DEFAULT_CONFIG, False, "no-freshness-info", id="9111-3-500"),
        pytest.param("GET", 503, [], [DATE], DEFAULT_CONFIG, False, "no-freshness-info", id="9111-3-503"),
        pytest.param(
            "GET",
            302,
            [],
            cc("max-age=60"),
            DEFAULT_CONFIG,
            True,
            "explicit-freshness",
            id="9111-3-302-max-age",
        ),
        pytest.param(
            "GET",
            302,
            [],
            cc("max-age=abc"),
            DEFAULT_CONFIG,
            True,
            "explicit-freshness",
            id="9111-3-302-invalid-max-age-stored-stale",
        ),
        pytest.param(
            "GET",
            302,
            [],
            cc("s-maxage=60"),
            DEFAULT_CONFIG,
            True,
            "explicit-freshness",
            id="9111-3-302-s-maxage-shared",
        ),
        pytest.param(
            "GET",
            302,
            [],
            cc("s-maxage=60"),
            PRIVATE_CACHE,
            False,
            "no-freshness-info",
            id="9111-3-302-s-maxage-private-cache",
        ),
        pytest.param(
            "GET",
            302,
            [],
            [DATE, ("Expires", "Tue, 14 Nov 2023 23:13:20 GMT")],
            DEFAULT_CONFIG,
            True,
            "explicit-freshness",
            id="9111-3-302-expires",
        ),
        pytest.param(
            "GET",
            302,
            [],
            [DATE, ("Expires", "0")],
            DEFAULT_CONFIG,
            True,
            "explicit-freshness",
            id="9111-5.3-302-invalid-expires-stored-expired",
        ),
        pytest.param("GET", 302, [], cc("public"), DEFAULT_CONFIG, True, "public", id="9111-3-302-public"),
        pytest.param("GET", 500, [], cc("public"), DEFAULT_CONFIG, True, "public", id="9111-3-500-public"),
        pytest.param(
            "GET",
            302,
            [],
            cc("x-unknown=1"),
            DEFAULT_CONFIG,
            False,
            "no-freshness-info",
            id="9111-5.2.3-unknown-extension-ignored",
        ),
        # no-cache: storable, revalidated on use (§5.2.2.4, §4)
        pytest.param(
            "GET",
            200,
            [],
            cc("no-cache"),
            DEFAULT_CONFIG,
            True,
            "heuristic",
            id="9111-5.2.2.4-no-cache-200-storable",
        ),
        pytest.param(
            "GET",
            302,
            [],
            cc("no-cache"),
            DEFAULT_CONFIG,
            False,
            "no-freshness-info",
            id="9111-5.2.2.4-no-cache-302-not-enough",
        ),
        pytest.param(
            "GET",
            302,
            [],
            cc("no-cache, max-age=60"),
            DEFAULT_CONFIG,
            True,
            "explicit-freshness",
            id="9111-5.2.2.4-no-cache-with-max-age",
        ),
        # no-store (§5.2.2.5, §5.2.1.5)
        pytest.param(
            "GET", 200, [], cc("no-store"), DEFAULT_CONFIG, False, "no-store", id="9111-5.2.2.5-no-store"
        ),
        pytest.param(
            "GET",
            200,
            [],
            cc("max-age=60, No-Store"),
            DEFAULT_CONFIG,
            False,
            "no-store",
            id="9111-5.2.2.5-no-store-beats-max-age",
        ),
        pytest.param(
            "GET",
            200,
            [],
            cc("public, no-store"),
            DEFAULT_CONFIG,
            False,
            "no-store",
            id="9111-5.2.2.5-no-store-beats-public",
        ),
        pytest.param(
            "GET",
            200,
            [],
            [DATE, ("Cache-Control", "max-age=60"), ("Cache-Control", "no-store")],
            DEFAULT_CONFIG,
            False,
            "no-store",
            id="9111-5.2.2.5-second-line",
        ),
        pytest.param(
            "GET",
            200,
            [("Cache-Control", "no-store")],
            cc("max-age=60"),
            DEFAULT_CONFIG,
            False,
            "request-no-store",
            id="9111-5.2.1.5-request-no-store",
        ),
        pytest.param(
            "GET",
            200,
            [("Pragma", "no-store")],
            cc("max-age=60"),
            DEFAULT_CONFIG,
            True,
            "explicit-freshness",
            id="9111-5.4-pragma-no-store-meaningless",
        ),
        # must-understand (§5.2.2.3, §3)
        pytest.param(
            "GET",
            200,
            [],
            cc("must-understand, no-store, max-age=60"),
            DEFAULT_CONFIG,
            True,
            "explicit-freshness",
            id="9111-5.2.2.3-understood-ignores-no-store",
        ),
        pytest.param(
            "GET",
            299,
            [],
            cc("must-understand, no-store, max-age=60"),
            DEFAULT_CONFIG,
            False,
            "must-understand-unknown-status",
            id="9111-5.2.2.3-unknown-status",
        ),
        pytest.param(
            "GET",
            299,
            [],
            cc("must-understand, max-age=60"),
            DEFAULT_CONFIG,
            False,
            "must-understand-unknown-status",
            id="9111-3-must-understand-unknown-no-no-store",
        ),
        pytest.param(
            "GET",
            299,
            [],
            cc("max-age=60"),
            DEFAULT_CONFIG,
            True,
            "explicit-freshness",
            id="9111-3-unknown-status-without-must-understand",
        ),
        pytest.param(
            "GET",
            200,
            [],
            cc("must-understand, no-store, max-age=60"),
            NOTHING_UNDERSTOOD,
            False,
            "must-understand-unknown-status",
            id="9111-5.2.2.3-configured-understood-set",
        ),
        pytest.param(
            "GET",
            418,
            [],
            cc("must-understand, no-store, max-age=60"),
            DEFAULT_CONFIG,
            False,
            "must-understand-unknown-status",
            id="9110-15.5.19-418-unused",
        ),
        pytest.param(
            "GET",
            200,
            [],
            cc("must-understand=1, no-store, max-age=60"),
            DEFAULT_CONFIG,
            False,
            "no-store",
            id="9111-5.2.2.3-malformed-must-understand-ignored",
        ),
        # private (§5.2.2.7)
        pytest.param(
            "GET",
            200,
            [],
            cc("private, max-age=60"),
            DEFAULT_CONFIG,
            False,
            "private",
            id="9111-5.2.2.7-private-shared",
        ),
        pytest.param(
            "GET", 200, [], cc("PRIVATE"), DEFAULT_CONFIG, False, "private", id="9111-5.2.2.7-private-case"
        ),
        pytest.param(
            "GET",
            200,
            [],
            cc("private, public, max-age=60"),
            DEFAULT_CONFIG,
            False,
            "private",
            id="9111-4.2.1-private-and-public-most-restrictive",
        ),
        pytest.param(
            "GET",
            200,
            [],
            cc('private="X-User", max-age=60'),
            DEFAULT_CONFIG,
            True,
            "explicit-freshness",
            id="9111-5.2.2.7-qualified-storable",
        ),
        pytest.param(
            "GET",
            200,
            [],
            cc("private, max-age=60"),
            PRIVATE_CACHE,
            True,
            "explicit-freshness",
            id="9111-5.2.2.7-private-cache-may-store",
        ),
        pytest.param(
            "GET",
            302,
            [],
            cc("private"),
            PRIVATE_CACHE,
            True,
            "private",
            id="9111-3-private-cache-private-directive-enough",
        ),
        # Authorization (§3.5)
        pytest.param(
            "GET",
            200,
            AUTH,
            cc("max-age=60"),
            DEFAULT_CONFIG,
            False,
            "authorization",
            id="9111-3.5-authorization-max-age-not-enough",
        ),
        pytest.param(
            "GET",
            200,
            AUTH,
            [DATE],
            DEFAULT_CONFIG,
            False,
            "authorization",
            id="9111-3.5-authorization-heuristic-not-enough",
        ),
        pytest.param(
            "GET", 200, AUTH, cc("public"), DEFAULT_CONFIG, True, "public", id="9111-3.5-authorization-public"
        ),
        pytest.param(
            "GET",
            200,
            AUTH,
            cc("s-maxage=60"),
            DEFAULT_CONFIG,
            True,
            "explicit-freshness",
            id="9111-3.5-authorization-s-maxage",
        ),
        pytest.param(
            "GET",
            200,
            AUTH,
            cc("must-revalidate, max-age=60"),
            DEFAULT_CONFIG,
            True,
            "explicit-freshness",
            id="9111-3.5-authorization-must-revalidate",
        ),
        pytest.param(
            "GET",
            200,
            AUTH,
            cc("must-revalidate"),
            DEFAULT_CONFIG,
            True,
            "heuristic",
            id="9111-3.5-authorization-must-revalidate-heuristic",
        ),
        pytest.param(
            "GET",
            200,
            AUTH,
            cc("proxy-revalidate, max-age=60"),
            DEFAULT_CONFIG,
            False,
            "authorization",
            id="9111-3.5-authorization-proxy-revalidate-not-listed",
        ),
        pytest.param(
            "GET",
            200,
            [("authorization", "Basic x")],
            cc("max-age=60"),
            DEFAULT_CONFIG,
            False,
            "authorization",
            id="9111-3.5-authorization-name-case",
        ),
        pytest.param(
            "GET",
            200,
            AUTH,
            cc("max-age=60"),
            PRIVATE_CACHE,
            True,
            "explicit-freshness",
            id="9111-3.5-private-cache-unaffected",
        ),
        pytest.param(
            "GET",
            200,
            AUTH,
            cc("public, private"),
            DEFAULT_CONFIG,
            False,
            "private",
            id="9111-3.5-authorization-public-but-private",
        ),
        # Set-Cookie (local policy)
        pytest.param(
            "GET",
            200,
            [],
            [*cc("max-age=60"), ("Set-Cookie", "a=b")],
            DEFAULT_CONFIG,
            False,
            "set-cookie",
            id="local-set-cookie-refused",
        ),
        pytest.param(
            "GET",
            200,
            [],
            [*cc("max-age=60"), ("Set-Cookie", "a=b")],
            COOKIES_OK,
            True,
            "explicit-freshness",
            id="local-set-cookie-configured",
        ),
        pytest.param(
            "GET",
            200,
            [],
            [*cc('max-age=60, private="Set-Cookie"'), ("Set-Cookie", "a=b")],
            DEFAULT_CONFIG,
            True,
            "explicit-freshness",
            id="9111-5.2.2.7-private-set-cookie-stripped",
        ),
        pytest.param(
            "GET",
            200,
            [],
            [*cc('max-age=60, no-cache="set-cookie"'), ("Set-Cookie", "a=b")],
            DEFAULT_CONFIG,
            True,
            "explicit-freshness",
            id="9111-5.2.2.4-no-cache-set-cookie-stripped",
        ),
        # RFC 9213 targeted fields
        pytest.param(
            "GET",
            200,
            [],
            [*cc("max-age=60"), ("CDN-Cache-Control", "no-store")],
            DEFAULT_CONFIG,
            False,
            "no-store",
            id="9213-2.2-cdn-no-store-overrides-cc",
        ),
        pytest.param(
            "GET",
            200,
            [],
            [*cc("no-store"), ("CDN-Cache-Control", "max-age=600")],
            DEFAULT_CONFIG,
            True,
            "explicit-freshness",
            id="9213-3.1-cdn-max-age-beats-cc-no-store",
        ),
        pytest.param(
            "GET",
            200,
            [],
            [*cc("no-store"), ("CDN-Cache-Control", "none")],
            DEFAULT_CONFIG,
            True,
            "heuristic",
            id="9213-3.1-cdn-none-beats-cc-no-store",
        ),
        pytest.param(
            "GET",
            200,
            [],
            [*cc("max-age=60"), ("CDN-Cache-Control", "private")],
            DEFAULT_CONFIG,
            False,
            "private",
            id="9213-2.2-cdn-private",
        ),
        pytest.param(
            "GET",
            200,
            [],
            [*cc("private"), ("CDN-Cache-Control", "max-age=60")],
            DEFAULT_CONFIG,
            True,
            "explicit-freshness",
            id="9213-2.2-cc-private-ignored",
        ),
        pytest.param(
            "GET",
            200,
            [],
            [*cc("no-store"), ("CDN-Cache-Control", "max-age=60,,")],
            DEFAULT_CONFIG,
            False,
            "no-store",
            id="9213-2.1-invalid-cdn-falls-back-to-cc",
        ),
        pytest.param(
            "GET",
            200,
            [],
            [*cc("no-store"), ("CDN-Cache-Control", "")],
            DEFAULT_CONFIG,
            False,
            "no-store",
            id="9213-2.1-empty-cdn-falls-back-to-cc",
        ),
        pytest.param(
            "GET",
            302,
            [],
            [DATE, ("Expires", "Tue, 14 Nov 2023 23:13:20 GMT"), ("CDN-Cache-Control", "none")],
            DEFAULT_CONFIG,
            False,
            "no-freshness-info",
            id="9213-2.2-expires-ignored",
        ),
        pytest.param(
            "GET",
            302,
            [],
            [*cc("max-age=60"), ("CDN-Cache-Control", "must-revalidate")],
            DEFAULT_CONFIG,
            False,
            "no-freshness-info",
            id="9213-2.2-cc-max-age-ignored",
        ),
        pytest.param(
            "GET",
            200,
            AUTH,
            [*cc("public"), ("CDN-Cache-Control", "max-age=60")],
            DEFAULT_CONFIG,
            False,
            "authorization",
            id="9213-2.2-authorization-needs-cdn-directive",
        ),
        pytest.param(
            "GET",
            200,
            AUTH,
            [*cc("max-age=60"), ("CDN-Cache-Control", "max-age=60, public")],
            DEFAULT_CONFIG,
            True,
            "explicit-freshness",
            id="9213-2.2-authorization-cdn-public",
        ),
        pytest.param(
            "GET",
            200,
            [],
            [*cc("max-age=60"), ("CDN-Cache-Control", "must-understand, no-store")],
            DEFAULT_CONFIG,
            True,
            "heuristic",
            id="9213-2.2-cdn-must-understand",
        ),
        pytest.param(
            "GET",
            200,
            [],
            [*cc("max-age=60"), ("Edgecache-CDN-Cache-Control", "no-store")],
            DEFAULT_CONFIG,
            True,
            "explicit-freshness",
            id="9213-2.2-field-not-on-target-list",
        ),
        pytest.param(
            "GET",
            200,
            [],
            [
                *cc("max-age=60"),
                ("Edgecache-CDN-Cache-Control", "no-store"),
                ("CDN-Cache-Control", "max-age=5"),
            ],
            EDGE_TARGETS,
            False,
            "no-store",
            id="9213-2.2-configured-target-list-order",
        ),
    ],
)
def test_storable(
    method: str,
    status: int,
    request_headers: HeaderList,
    response_headers: HeaderList,
    config: PolicyConfig,
    store: bool,
    reason: str,
) -> None:
    decision = storable(method, status, request_headers, response_headers, config)
    assert (decision.store, decision.reason) == (store, reason)


@pytest.mark.parametrize(
    ("response_headers", "config", "present", "absent"),
    [
        pytest.param(
            cc('max-age=60, private="X-User, Set-Cookie"'),
            DEFAULT_CONFIG,
            ("x-user", "set-cookie"),
            (),
            id="9111-5.2.2.7-private-fields-stripped",
        ),
        pytest.param(
            cc('max-age=60, private="X-User"'),
            PRIVATE_CACHE,
            (),
            ("x-user",),
            id="9111-5.2.2.7-private-cache-keeps-fields",
        ),
        pytest.param(
            cc('max-age=60, no-cache="X-Token"'),
            DEFAULT_CONFIG,
            ("x-token",),
            (),
            id="9111-5.2.2.4-no-cache-fields-stripped",
        ),
        pytest.param(
            cc('max-age=60, no-cache="X-Token"'),
            PRIVATE_CACHE,
            ("x-token",),
            (),
            id="9111-5.2.2.4-no-cache-fields-any-cache",
        ),
        pytest.param(
            [*cc("max-age=60"), ("Connection", "X-Hop, close")],
            DEFAULT_CONFIG,
            ("x-hop", "close"),
            (),
            id="9110-7.6.1-connection-nominated",
        ),
        pytest.param(cc("max-age=60"), DEFAULT_CONFIG, PROXY_SPECIFIC_FIELDS, (), id="9111-3.1-proxy-fields"),
        pytest.param(
            cc("max-age=60"),
            DEFAULT_CONFIG,
            HOP_BY_HOP_FIELDS,
            ("cache-control", "date"),
            id="9111-3.1-hop-by-hop",
        ),
        pytest.param(
            [*cc('private="X-A"'), ("CDN-Cache-Control", 'max-age=5, private="X-B"')],
            DEFAULT_CONFIG,
            ("x-b",),
            ("x-a",),
            id="9213-2.2-targeted-private-fields",
        ),
    ],
)
def test_strip_fields(
    response_headers: HeaderList, config: PolicyConfig, present: tuple[str, ...], absent: tuple[str, ...]
) -> None:
    decision = storable("GET", 200, [], response_headers, config)
    assert decision.store
    for name in present:
        assert name in decision.strip_fields
    for name in absent:
        assert name not in decision.strip_fields
    assert len(set(decision.strip_fields)) == len(decision.strip_fields)


@pytest.mark.parametrize(
    ("request_headers", "allowed"),
    [
        pytest.param([], True, id="9111-5.2.1.5-absent"),
        pytest.param([("Cache-Control", "no-store")], False, id="9111-5.2.1.5-no-store"),
        pytest.param([("cache-control", "max-age=0, NO-STORE")], False, id="9111-5.2.1.5-case"),
        pytest.param([("Cache-Control", "no-cache")], True, id="9111-5.2.1.4-no-cache-may-store"),
        pytest.param([("Pragma", "no-store")], True, id="9111-5.4-pragma-irrelevant"),
    ],
)
def test_request_allows_store(request_headers: HeaderList, allowed: bool) -> None:
    assert request_allows_store(request_headers) is allowed


def test_request_no_store_honoured_even_when_request_directives_are_off() -> None:
    """RFC 9111 §5.2.1.5 no-store is a privacy MUST; the advisory switch does not cover it."""
    config = PolicyConfig(honor_request_directives=False)
    decision = storable("GET", 200, [("Cache-Control", "no-store")], cc("max-age=60"), config)
    assert decision == StoreDecision(False, "request-no-store", decision.strip_fields)


_HEADER_NAMES = st.sampled_from(
    [
        "Cache-Control",
        "CDN-Cache-Control",
        "Expires",
        "Date",
        "Last-Modified",
        "Age",
        "Set-Cookie",
        "Authorization",
        "Pragma",
        "Connection",
    ]
)


@given(
    st.sampled_from(["GET", "HEAD", "POST"]),
    st.integers(min_value=0, max_value=999),
    st.lists(st.tuples(_HEADER_NAMES, st.text(max_size=30)), max_size=5),
    st.lists(st.tuples(_HEADER_NAMES, st.text(max_size=30)), max_size=6),
)
def test_storable_never_raises(
    method: str, status: int, request_headers: HeaderList, response_headers: HeaderList
) -> None:
    """Property: any header soup gives a decision; a refusal always says why."""
    decision = storable(method, status, request_headers, response_headers)
    assert decision.reason
    if decision.store:
        assert method in ("GET", "HEAD")
        assert 200 <= status <= 599
        assert status not in (206, 304)
