"""RFC 9110 §7.6 rules for what an intermediary forwards, table-driven."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edge.http import forwarding


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        pytest.param(
            [("Connection", "keep-alive"), ("Keep-Alive", "timeout=5"), ("X-A", "1")],
            [("X-A", "1")],
            id="9110-7.6.1-fixed-hop-by-hop-fields",
        ),
        pytest.param(
            [("Connection", "close, X-Secret"), ("x-secret", "s"), ("X-Kept", "k")],
            [("X-Kept", "k")],
            id="9110-7.6.1-fields-listed-in-connection",
        ),
        pytest.param(
            [("connection", "X-One"), ("Connection", "x-two"), ("X-One", "1"), ("X-Two", "2"), ("X-Three", "3")],
            [("X-Three", "3")],
            id="9110-7.6.1-connection-on-several-lines",
        ),
        pytest.param(
            [("TE", "trailers"), ("Transfer-Encoding", "chunked"), ("Upgrade", "h2c"), ("Proxy-Connection", "x")],
            [],
            id="9110-7.6.1-te-transfer-encoding-upgrade",
        ),
        pytest.param(
            [("Set-Cookie", "a=1"), ("Date", "x"), ("Set-Cookie", "b=2")],
            [("Set-Cookie", "a=1"), ("Date", "x"), ("Set-Cookie", "b=2")],
            id="end-to-end-repeated-lines-keep-order",
        ),
    ],
)
def test_strip_hop_by_hop(headers: list[tuple[str, str]], expected: list[tuple[str, str]]) -> None:
    assert forwarding.strip_hop_by_hop(headers) == expected


def test_strip_hop_by_hop_extra_names_are_case_insensitive() -> None:
    headers = [("Host", "a"), ("EXPECT", "100-continue"), ("X-B", "b")]
    assert forwarding.strip_hop_by_hop(headers, extra=("host", "Expect")) == [("X-B", "b")]


@pytest.mark.parametrize(
    ("via_lines", "name", "looped"),
    [
        pytest.param([], "edge-1", False, id="no-via"),
        pytest.param(["1.1 edge-1"], "edge-1", True, id="9110-7.6.3-own-name"),
        pytest.param(["1.0 fred, 1.1 EDGE-1 (comment)"], "edge-1", True, id="9110-7.6.3-later-member-any-case"),
        pytest.param(["1.1 edge-10"], "edge-1", False, id="prefix-is-not-a-match"),
        pytest.param(["HTTP/1.1 other", "1.1 edge-2"], "edge-1", False, id="other-proxies-only"),
        pytest.param(["garbage"], "edge-1", False, id="malformed-member-ignored"),
    ],
)
def test_loop_detection_through_via(via_lines: list[str], name: str, looped: bool) -> None:
    headers = [("Via", line) for line in via_lines]
    assert forwarding.is_loop(headers, name) is looped


def test_via_is_appended_after_existing_members() -> None:
    headers = forwarding.append_via([("Via", "1.0 fred")], (1, 1), "edge-1")
    assert headers == [("Via", "1.0 fred"), ("Via", "1.1 edge-1")]


@pytest.mark.parametrize(
    ("lines", "peer", "expected"),
    [
        pytest.param([], "10.0.0.1", "10.0.0.1", id="first-proxy"),
        pytest.param(["1.2.3.4"], "10.0.0.1", "1.2.3.4, 10.0.0.1", id="appends-peer"),
        pytest.param(["1.2.3.4, 5.6.7.8", "9.9.9.9"], "::1", "1.2.3.4, 5.6.7.8, 9.9.9.9, ::1", id="several-lines"),
        pytest.param([], None, None, id="no-peer-no-header"),
    ],
)
def test_forwarded_for(lines: list[str], peer: str | None, expected: str | None) -> None:
    headers = [("X-Forwarded-For", line) for line in lines]
    assert forwarding.forwarded_for_value(headers, peer) == expected


@pytest.mark.parametrize(
    ("host", "valid"),
    [
        ("example.com", True),
        ("example.com:8080", True),
        ("[::1]:80", True),
        ("", False),
        ("a b", False),
        ("evil.com/path", False),
        ("user@host", False),
        ("x\r\nInjected: 1", False),
        ("é.example", False),
    ],
)
def test_host_header_validation(host: str, valid: bool) -> None:
    assert forwarding.is_valid_host_header(host) is valid


@given(st.lists(st.tuples(st.text(max_size=20), st.text(max_size=40)), max_size=12))
def test_strip_never_raises_and_only_removes(headers: list[tuple[str, str]]) -> None:
    """Property: the result is an order-preserving subsequence without any hop-by-hop field."""
    result = forwarding.strip_hop_by_hop(headers)
    iterator = iter(headers)
    assert all(line in iterator for line in result)
    assert not any(name.lower() in forwarding.HOP_BY_HOP_FIELDS for name, _ in result)
