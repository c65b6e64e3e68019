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
    ("values", "version", "problem"),
    [
        (["example.com"], (1, 1), None),
        (["example.com:8080"], (1, 1), None),
        (["[::1]:80"], (1, 1), None),
        (["192.0.2.1"], (1, 1), None),
        (["xn--bcher-kva.example"], (1, 1), None),
        (["example.com:"], (1, 1), None),  # RFC 3986: port = *DIGIT
        ([""], (1, 1), None),  # reg-name may be empty
        ([" example.com "], (1, 1), None),  # optional whitespace around a field value
        ([], (1, 1), "missing Host header"),
        ([], (1, 0), None),  # HTTP/1.0 clients need not send one
        (["a.example", "b.example"], (1, 1), "more than one Host header"),
        (["a.example", "a.example"], (1, 0), "more than one Host header"),
        (["a b"], (1, 1), "invalid Host header"),
        (["a/b"], (1, 1), "invalid Host header"),
        (["a\\b"], (1, 1), "invalid Host header"),
        (["evil.com/path"], (1, 1), "invalid Host header"),
        (["user@host"], (1, 1), "invalid Host header"),
        (["x\r\nInjected: 1"], (1, 1), "invalid Host header"),
        (["\u00e9.example"], (1, 1), "invalid Host header"),
        (["host:80:80"], (1, 1), "invalid Host header"),
        (["host:abc"], (1, 1), "invalid Host header"),
        (["[::1"], (1, 1), "invalid Host header"),
        (["a%zz"], (1, 1), "invalid Host header"),
        (["a" * 256], (1, 1), "Host header too long"),
    ],
)
def test_host_field_rfc9112_3_2(values: list[str], version: tuple[int, int], problem: str | None) -> None:
    """RFC 9112 §3.2: 400 for a missing (HTTP/1.1), repeated or malformed Host."""
    assert forwarding.host_field_problem(values, version) == problem


@given(st.lists(st.text(max_size=40), max_size=3), st.sampled_from([(1, 0), (1, 1)]))
def test_host_field_check_never_raises(values: list[str], version: tuple[int, int]) -> None:
    """Property: any Host lines get a verdict; an accepted one has no whitespace, slash or control character."""
    problem = forwarding.host_field_problem(values, version)
    if problem is None and values:
        assert not any(c in values[0].strip(" \t") for c in " /\\\r\n@?#\t")


@given(st.lists(st.tuples(st.text(max_size=20), st.text(max_size=40)), max_size=12))
def test_strip_never_raises_and_only_removes(headers: list[tuple[str, str]]) -> None:
    """Property: the result is an order-preserving subsequence without any hop-by-hop field."""
    result = forwarding.strip_hop_by_hop(headers)
    iterator = iter(headers)
    assert all(line in iterator for line in result)
    assert not any(name.lower() in forwarding.HOP_BY_HOP_FIELDS for name, _ in result)


@pytest.mark.parametrize(
    ("lines", "expected"),
    [
        ([], None),
        ([("Max-Forwards", "0")], 0),
        ([("max-forwards", " 7 ")], 7),
        ([("Max-Forwards", "3"), ("Max-Forwards", "9")], 3),  # the first line
        ([("Max-Forwards", "-1")], None),
        ([("Max-Forwards", "1.5")], None),
        ([("Max-Forwards", "")], None),
        ([("Max-Forwards", "٣")], None),  # a digit, but not an ASCII one
        ([("Max-Forwards", "9" * 40)], None),
    ],
)
def test_max_forwards_is_1_digit_or_nothing(lines: list[tuple[str, str]], expected: int | None) -> None:
    assert forwarding.max_forwards(lines) == expected


def test_a_trace_answered_here_reflects_the_request_without_credentials() -> None:
    echo = forwarding.trace_reflection("TRACE", "/a?b=1", (1, 1), [
        ("Host", "x"), ("Authorization", "Bearer s"), ("cookie", "k=s"), ("Proxy-Authorization", "Basic s"),
        ("X-Seen", "yes"),
    ])  # fmt: skip
    assert echo == b"TRACE /a?b=1 HTTP/1.1\r\nHost: x\r\nX-Seen: yes\r\n\r\n"


@given(st.lists(st.tuples(st.sampled_from(["Max-Forwards", "max-forwards", "X"]), st.text(max_size=30)), max_size=4))
def test_max_forwards_never_raises_and_is_never_negative(lines: list[tuple[str, str]]) -> None:
    value = forwarding.max_forwards(lines)
    assert value is None or value >= 0


@pytest.mark.parametrize(
    ("target", "authority"),
    [
        ("/x", None), ("*", None), ("host:443", None), ("http:/x", None), ("://x", None),
        ("http://a/b", "a"), ("http://u@h:81?q", "h:81"), ("https://h", "h"), ("HTTP://H/x", "H"), ("http:///x", ""),
    ],
)  # fmt: skip
def test_the_authority_of_an_absolute_form_target(target: str, authority: str | None) -> None:
    assert forwarding.target_authority(target) == authority
