"""The Cache-Status field (RFC 9211) and X-Cache."""

from __future__ import annotations

from typing import Any

import pytest
from http_sfv.list import List as SfList
from hypothesis import given
from hypothesis import strategies as st

from edge.http.cachestatus import (
    FWD_REASONS,
    CacheStatus,
    FwdReason,
    append_cache_status,
    parse_cache_status,
    x_cache_value,
)


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        pytest.param(CacheStatus("ExampleCache", hit=True), "ExampleCache;hit", id="rfc9211-3-minimal-hit"),
        pytest.param(CacheStatus("ExampleCache", hit=True, ttl=376), "ExampleCache;hit;ttl=376", id="rfc9211-3-ttl"),
        pytest.param(
            CacheStatus("ExampleCache", hit=True, ttl=-412), "ExampleCache;hit;ttl=-412", id="rfc9211-3-stale-hit"
        ),
        pytest.param(CacheStatus("ExampleCache", fwd="uri-miss"), "ExampleCache;fwd=uri-miss", id="rfc9211-3-miss"),
        pytest.param(
            CacheStatus("ExampleCache", fwd="stale", fwd_status=304),
            "ExampleCache;fwd=stale;fwd-status=304",
            id="rfc9211-3-validated",
        ),
        pytest.param(
            CacheStatus("ExampleCache", fwd="uri-miss", collapsed=True),
            "ExampleCache;fwd=uri-miss;collapsed",
            id="rfc9211-3-collapsed",
        ),
        pytest.param(
            CacheStatus("ExampleCache", fwd="uri-miss", collapsed=False),
            "ExampleCache;fwd=uri-miss;collapsed=?0",
            id="rfc9211-3-not-collapsed",
        ),
        pytest.param(
            CacheStatus("ForwardProxyCache", fwd="uri-miss", collapsed=True, stored=True),
            "ForwardProxyCache;fwd=uri-miss;stored;collapsed",
            id="rfc9211-2.5-stored",
        ),
        pytest.param(CacheStatus("Example CDN", hit=True), '"Example CDN";hit', id="rfc9211-2-name-as-string"),
        pytest.param(
            CacheStatus("cache-3.example.com:8080", hit=True), "cache-3.example.com:8080;hit", id="sf-token-name"
        ),
        pytest.param(CacheStatus("3cache", hit=True), '"3cache";hit', id="digit-start-is-not-a-token"),
        pytest.param(
            CacheStatus("ExampleCache", hit=True, detail="MEMORY"),
            "ExampleCache;hit;detail=MEMORY",
            id="rfc9211-2.8-detail-token",
        ),
        pytest.param(
            CacheStatus("c", hit=True, detail="stale while revalidate"),
            'c;hit;detail="stale while revalidate"',
            id="rfc9211-2.8-detail-string",
        ),
        pytest.param(
            CacheStatus("c", fwd="miss", key='https://h/a"b\\c'),
            'c;fwd=miss;key="https://h/a\\"b\\\\c"',
            id="rfc9211-2.7-key-escaped",
        ),
        pytest.param(
            CacheStatus("c", fwd="miss", key="https://h/é\n"),
            'c;fwd=miss;key="https://h/%C3%A9%0A"',
            id="key-sanitised",
        ),
        pytest.param(CacheStatus("c"), "c", id="bare-member"),
    ],
)
def test_serialize(status: CacheStatus, expected: str) -> None:
    assert status.serialize() == expected


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        pytest.param({"cache_name": ""}, "cache name", id="empty-name"),
        pytest.param({"cache_name": "caché"}, "cache name", id="non-ascii-name"),
        pytest.param({"cache_name": "a\tb"}, "cache name", id="control-in-name"),
        pytest.param({"cache_name": "c", "hit": True, "fwd": "miss"}, "exclusive", id="rfc9211-2.1-hit-fwd-exclusive"),
        pytest.param({"cache_name": "c", "fwd": "nope"}, "fwd reason", id="unknown-fwd"),
        pytest.param({"cache_name": "c", "fwd": "miss", "fwd_status": 42}, "status code", id="bad-fwd-status"),
        pytest.param({"cache_name": "c", "ttl": 10**16}, "sf-integer", id="rfc8941-3.3.1-int-range"),
    ],
)
def test_invalid_members(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        CacheStatus(**kwargs)


@pytest.mark.parametrize(
    ("existing", "expected"),
    [
        pytest.param([], "edge;hit", id="no-upstream"),
        pytest.param(
            ["OriginCache; hit; ttl=1100"], "OriginCache; hit; ttl=1100, edge;hit", id="rfc9211-2-append-at-end"
        ),
        pytest.param(
            ["ReverseProxyCache; hit", "ForwardProxyCache; fwd=uri-miss"],
            "ReverseProxyCache; hit, ForwardProxyCache; fwd=uri-miss, edge;hit",
            id="rfc9211-3-multiple-lines-preserved",
        ),
        pytest.param(["", "  "], "edge;hit", id="empty-lines"),
        pytest.param(["not valid ;;"], "edge;hit", id="rfc8941-4.2-invalid-upstream-dropped"),
    ],
)
def test_append_cache_status(existing: list[str], expected: str) -> None:
    assert append_cache_status(existing, CacheStatus("edge", hit=True)) == expected


def test_parse_cache_status_order_closest_to_origin_first() -> None:
    parsed = parse_cache_status(["OriginCache; hit", '"CDN Company Here"; hit; ttl=545'])
    assert parsed is not None
    assert [member.value for member in parsed] == ["OriginCache", "CDN Company Here"]
    assert parsed[1].params["ttl"] == 545
    assert parse_cache_status([]) is None
    assert parse_cache_status(["é"]) is None


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        pytest.param(CacheStatus("c", hit=True, ttl=10), "HIT", id="hit"),
        pytest.param(CacheStatus("c", hit=True), "HIT", id="hit-no-ttl"),
        pytest.param(CacheStatus("c", hit=True, ttl=-3), "STALE", id="stale-hit"),
        pytest.param(CacheStatus("c", fwd="stale", fwd_status=304), "REVALIDATED", id="revalidated"),
        pytest.param(CacheStatus("c", fwd="stale", fwd_status=200), "EXPIRED", id="expired"),
        pytest.param(CacheStatus("c", fwd="stale"), "EXPIRED", id="expired-default-status"),
        pytest.param(CacheStatus("c", fwd="uri-miss"), "MISS", id="uri-miss"),
        pytest.param(CacheStatus("c", fwd="vary-miss"), "MISS", id="vary-miss"),
        pytest.param(CacheStatus("c", fwd="miss"), "MISS", id="miss"),
        pytest.param(CacheStatus("c", fwd="partial"), "MISS", id="partial"),
        pytest.param(CacheStatus("c", fwd="request"), "REFRESH", id="request"),
        pytest.param(CacheStatus("c", fwd="bypass"), "BYPASS", id="bypass"),
        pytest.param(CacheStatus("c", fwd="method"), "PASS", id="method"),
        pytest.param(CacheStatus("c"), "MISS", id="nothing"),
    ],
)
def test_x_cache_value(status: CacheStatus, expected: str) -> None:
    assert x_cache_value(status) == expected


# ---- properties -----------------------------------------------------------------------------

_names = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), min_size=1, max_size=20)
_free = st.text(max_size=30)


@st.composite
def _statuses(draw: st.DrawFn) -> CacheStatus:
    hit = draw(st.booleans())
    fwd: FwdReason | None = None if hit else draw(st.none() | st.sampled_from(FWD_REASONS))
    return CacheStatus(
        draw(_names),
        hit=hit,
        fwd=fwd,
        fwd_status=draw(st.none() | st.integers(100, 599)),
        ttl=draw(st.none() | st.integers(-(10**12), 10**12)),
        stored=draw(st.none() | st.booleans()),
        collapsed=draw(st.none() | st.booleans()),
        key=draw(st.none() | _free),
        detail=draw(st.none() | _free),
    )


@given(_statuses())
def test_serialisation_parses_back(status: CacheStatus) -> None:
    parsed = SfList()
    parsed.parse(status.serialize().encode("ascii"))
    assert len(parsed) == 1
    member = parsed[0]
    assert member.value == status.cache_name
    params = member.params
    assert params.get("hit", False) is status.hit
    assert params.get("fwd") == status.fwd
    assert params.get("fwd-status") == status.fwd_status
    assert params.get("ttl") == status.ttl
    assert params.get("stored") == status.stored
    assert params.get("collapsed") == status.collapsed
    if status.key is not None and status.key.isascii() and status.key.isprintable():
        assert params["key"] == status.key


@given(st.lists(_free, max_size=3), _statuses())
def test_append_never_raises_and_ours_is_last(existing: list[str], status: CacheStatus) -> None:
    value = append_cache_status(existing, status)
    parsed = parse_cache_status([value])
    assert parsed is not None
    assert parsed[-1].value == status.cache_name
