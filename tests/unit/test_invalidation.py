"""Invalidation by unsafe methods (RFC 9111 §4.4)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edge.http.headers import HeaderList
from edge.http.invalidation import invalidation_targets, is_unsafe

URL = "https://example.com/articles/1?x=1"


@pytest.mark.parametrize(
    ("method", "expected"),
    [
        pytest.param("GET", False, id="rfc9110-9.2.1-get"),
        pytest.param("HEAD", False, id="rfc9110-9.2.1-head"),
        pytest.param("OPTIONS", False, id="rfc9110-9.2.1-options"),
        pytest.param("TRACE", False, id="rfc9110-9.2.1-trace"),
        pytest.param("POST", True, id="post"),
        pytest.param("PUT", True, id="put"),
        pytest.param("DELETE", True, id="delete"),
        pytest.param("PATCH", True, id="patch"),
        pytest.param("PURGE", True, id="rfc9111-4.4-unknown-is-unsafe"),
        pytest.param("get", True, id="rfc9110-9.1-method-case-sensitive"),
    ],
)
def test_is_unsafe(method: str, expected: bool) -> None:
    assert is_unsafe(method) is expected


@pytest.mark.parametrize(
    ("method", "status", "headers", "expected"),
    [
        pytest.param("GET", 200, [], [], id="safe-method"),
        pytest.param("POST", 200, [], [URL], id="rfc9111-4.4-target-uri"),
        pytest.param("DELETE", 204, [], [URL], id="rfc9111-4.4-2xx"),
        pytest.param("POST", 303, [], [URL], id="rfc9111-4.4-3xx-non-error"),
        pytest.param("POST", 400, [], [], id="rfc9111-4.4-4xx-error"),
        pytest.param("POST", 500, [], [], id="rfc9111-4.4-5xx-error"),
        pytest.param("POST", 101, [], [], id="1xx-not-final"),
        pytest.param("FOO", 200, [], [URL], id="rfc9111-4.4-unknown-method"),
        pytest.param(
            "POST",
            201,
            [("Location", "/articles/2"), ("Content-Location", "2?v=1")],
            [URL, "https://example.com/articles/2", "https://example.com/articles/2?v=1"],
            id="rfc9111-4.4-location-and-content-location-resolved",
        ),
        pytest.param(
            "PUT",
            200,
            [("Content-Location", "https://EXAMPLE.com:443/c")],
            [URL, "https://EXAMPLE.com:443/c"],
            id="rfc9110-4.3.1-same-origin-default-port-and-case",
        ),
        pytest.param(
            "POST",
            201,
            [("Location", "https://other.example/x"), ("Content-Location", "http://example.com/y")],
            [URL],
            id="rfc9111-4.4-other-origin-must-not",
        ),
        pytest.param(
            "POST", 201, [("Location", "https://example.com:8443/x")], [URL], id="rfc9111-4.4-other-port-other-origin"
        ),
        pytest.param("POST", 201, [("Location", "//other.example/x")], [URL], id="network-path-reference"),
        pytest.param("POST", 201, [("Location", "/a#frag")], [URL, "https://example.com/a"], id="fragment-dropped"),
        pytest.param("POST", 201, [("Location", URL)], [URL], id="duplicates-removed"),
        pytest.param("POST", 201, [("Location", "")], [URL], id="empty-location"),
        pytest.param("POST", 201, [("Location", "https://[::1/")], [URL], id="unparseable-skipped"),
        pytest.param("POST", 201, [("Location", "https://example.com:99999/")], [URL], id="bad-port-skipped"),
    ],
)
def test_invalidation_targets(method: str, status: int, headers: HeaderList, expected: list[str]) -> None:
    assert invalidation_targets(method, status, URL, headers) == expected


def test_default_port_in_request_url() -> None:
    assert invalidation_targets("POST", 200, "http://h:80/a", [("Location", "http://h/b")]) == [
        "http://h:80/a",
        "http://h/b",
    ]


@given(
    st.sampled_from(["POST", "PUT", "GET", "X"]),
    st.integers(100, 599),
    st.text(max_size=30),
    st.lists(st.tuples(st.sampled_from(["Location", "Content-Location"]), st.text(max_size=30)), max_size=3),
)
def test_invalidation_never_raises(method: str, status: int, url: str, headers: list[tuple[str, str]]) -> None:
    targets = invalidation_targets(method, status, url, headers)
    assert len(targets) == len(set(targets))
    if method == "GET" or not 200 <= status <= 399:
        assert targets == []
