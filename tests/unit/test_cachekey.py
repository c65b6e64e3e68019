"""Primary cache key normalisation (RFC 9111 §2/§4, RFC 9110 §4.2.3, RFC 3986 §6.2.2)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edge.http.cachekey import CacheKeyConfig, cache_key, key_hash, normalize_url, url_prefix_matches

PLAIN = CacheKeyConfig()


@pytest.mark.parametrize(
    ("scheme", "host", "path", "query", "expected"),
    [
        pytest.param("http", "example.com", "/a", None, "http://example.com/a", id="basic"),
        pytest.param(
            "HTTP", "Example.COM", "/A", None, "http://example.com/A", id="rfc3986-6.2.2.1-case-scheme-host-not-path"
        ),
        pytest.param("http", "example.com:80", "/", None, "http://example.com/", id="rfc9110-4.2.3-default-port-http"),
        pytest.param(
            "https", "example.com:443", "/", None, "https://example.com/", id="rfc9110-4.2.3-default-port-https"
        ),
        pytest.param(
            "http", "example.com:443", "/", None, "http://example.com:443/", id="rfc9110-4.2.3-other-port-kept"
        ),
        pytest.param(
            "https", "example.com:80", "/", None, "https://example.com:80/", id="rfc9110-4.2.3-http-port-on-https-kept"
        ),
        pytest.param("http", "example.com:", "/", None, "http://example.com/", id="rfc3986-6.2.3-empty-port"),
        pytest.param(
            "http", "example.com:0080", "/", None, "http://example.com/", id="rfc3986-6.2.3-port-leading-zeros"
        ),
        pytest.param("http", "example.com:08080", "/", None, "http://example.com:8080/", id="port-is-a-number"),
        pytest.param("http", "[::1]:80", "/", None, "http://[::1]/", id="ipv6-default-port"),
        pytest.param("http", "[::1]:8080", "/", None, "http://[::1]:8080/", id="ipv6-port"),
        pytest.param("http", "[::1]", "/", None, "http://[::1]/", id="ipv6-no-port"),
        pytest.param("http", "[::1]x", "/", None, "http://%5B::1%5Dx/", id="stray-brackets-escaped"),
        pytest.param("http", "%41.example", "/", None, "http://a.example/", id="host-escape-decoded-then-lowercased"),
        pytest.param("http", "a@b/c", "/", None, "http://a%40b%2Fc/", id="host-delimiters-escaped"),
        pytest.param("http", "example.com", "", None, "http://example.com/", id="rfc9110-4.2.3-empty-path-is-slash"),
        pytest.param(
            "http", "h", "/%41%62%7e%2d%2E%5F", None, "http://h/Ab~-._", id="rfc3986-6.2.2.2-decode-unreserved"
        ),
        pytest.param("http", "h", "/a%2fb", None, "http://h/a%2Fb", id="rfc3986-6.2.2.1-reserved-kept-hex-upper"),
        pytest.param("http", "h", "/a%3f%23%25", None, "http://h/a%3F%23%25", id="rfc3986-2.2-reserved-escapes-kept"),
        pytest.param(
            "http", "h", "/%e2%82%ac", None, "http://h/%E2%82%AC", id="rfc3986-6.2.2.1-non-ascii-escape-upper"
        ),
        pytest.param("http", "h", "/a/../b/./c", None, "http://h/a/../b/./c", id="dot-segments-not-resolved"),
        pytest.param("http", "h", "//a//b", None, "http://h//a//b", id="double-slash-kept"),
        pytest.param("http", "h", "/a%zz%4", None, "http://h/a%zz%4", id="malformed-escape-kept-verbatim"),
        pytest.param("http", "h", "/a b", None, "http://h/a%20b", id="rfc9110-4.2.3-raw-space-escaped"),
        pytest.param("http", "h", "/\x00\x1f\x7f", None, "http://h/%00%1F%7F", id="controls-escaped"),
        pytest.param("http", "h", "/é", None, "http://h/%C3%A9", id="non-ascii-escaped-utf8"),
        pytest.param("http", "h", "/\udce9", None, "http://h/%E9", id="surrogateescape-original-byte"),
        pytest.param(
            "http", "h", '/<>"{}|\\^`', None, "http://h/%3C%3E%22%7B%7D%7C%5C%5E%60", id="rfc3986-2-disallowed-escaped"
        ),
        pytest.param("http", "h", "/a?b#c", None, "http://h/a%3Fb%23c", id="mis-split-path-stays-injective"),
        pytest.param("http", "h", "a", None, "http://h/a", id="relative-path-gets-slash"),
        pytest.param("http", "h", "/p", "", "http://h/p", id="empty-query-is-no-query"),
        pytest.param("http", "h", "/p", "b=2&a=1", "http://h/p?b=2&a=1", id="query-verbatim-order"),
        pytest.param("http", "h", "/p", "a=%7e&b=%2f", "http://h/p?a=%7E&b=%2F", id="query-escapes-not-decoded"),
        pytest.param("http", "h", "/p", "a=1 2#x", "http://h/p?a=1%202%23x", id="query-raw-specials-escaped"),
        pytest.param("http", "h", "/p", "a=?/:@", "http://h/p?a=?/:@", id="rfc3986-3.4-query-chars-raw"),
    ],
)
def test_cache_key_normalisation(scheme: str, host: str, path: str, query: str | None, expected: str) -> None:
    assert cache_key(scheme, host, path, query, PLAIN) == expected


@pytest.mark.parametrize(
    ("config", "query", "expected"),
    [
        pytest.param(CacheKeyConfig(ignore_query=True), "a=1", "http://h/p", id="ignore-query"),
        pytest.param(CacheKeyConfig(sort_query=True), "b=2&a=1", "http://h/p?a=1&b=2", id="sort"),
        pytest.param(
            CacheKeyConfig(sort_query=True), "a=2&b=1&a=1", "http://h/p?a=2&a=1&b=1", id="sort-stable-for-repeats"
        ),
        pytest.param(CacheKeyConfig(sort_query=True), "b&&a&", "http://h/p?a&b", id="sort-drops-empty-pieces"),
        pytest.param(
            CacheKeyConfig(drop_params=frozenset({"fbclid"})), "x=1&fbclid=9&y=2", "http://h/p?x=1&y=2", id="drop-exact"
        ),
        pytest.param(
            CacheKeyConfig(drop_params=frozenset({"utm_*"})),
            "utm_source=a&x=1&utm_medium=b",
            "http://h/p?x=1",
            id="drop-prefix",
        ),
        pytest.param(
            CacheKeyConfig(drop_params=frozenset({"utm_source"})),
            "utm%5Fsource=a&x=1",
            "http://h/p?x=1",
            id="drop-decoded-name",
        ),
        pytest.param(CacheKeyConfig(drop_params=frozenset({"a"})), "a=1", "http://h/p", id="drop-everything-no-query"),
        pytest.param(
            CacheKeyConfig(drop_params=frozenset({"a"})), "ab=1", "http://h/p?ab=1", id="drop-exact-not-prefix"
        ),
        pytest.param(
            CacheKeyConfig(sort_query=True, drop_params=frozenset({"utm_*"})),
            "z=1&utm_x=2&a=3",
            "http://h/p?a=3&z=1",
            id="drop-and-sort",
        ),
        pytest.param(CacheKeyConfig(include_host=False), "a=1", "http:///p?a=1", id="no-host"),
    ],
)
def test_cache_key_config(config: CacheKeyConfig, query: str, expected: str) -> None:
    assert cache_key("http", "h", "/p", query, config) == expected


def test_drop_params_pattern_validation() -> None:
    with pytest.raises(ValueError, match="trailing"):
        CacheKeyConfig(drop_params=frozenset({"a*b"}))
    with pytest.raises(ValueError, match="trailing"):
        CacheKeyConfig(drop_params=frozenset({""}))


def test_method_not_in_key_get_and_head_share() -> None:
    """RFC 9111 §4: a stored GET response may answer HEAD — the key has no method."""
    assert "GET" not in cache_key("http", "h", "/", None, PLAIN)


def test_key_hash_is_sha256_hex() -> None:
    digest = key_hash("http://h/")
    assert len(digest) == 64
    assert set(digest) <= set("0123456789abcdef")
    assert digest == key_hash("http://h/")
    assert digest != key_hash("http://h/a")


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        pytest.param("http://Example.com:80/a?b=1", "http://example.com/a?b=1", id="default-port"),
        pytest.param("https://user:pw@h/a", "https://h/a", id="rfc9110-4.2.4-userinfo-dropped"),
        pytest.param("https://h/a#frag", "https://h/a", id="rfc9110-7.1-fragment-dropped"),
        pytest.param("https://h", "https://h/", id="empty-path"),
        pytest.param("https://h/a?", "https://h/a", id="empty-query"),
        pytest.param("https://h/%7euser", "https://h/~user", id="unreserved-decoded"),
        pytest.param("HTTPS://[::1]:443/x", "https://[::1]/x", id="ipv6"),
        pytest.param(
            "https://h/a b\tc?q=1 2", "https://h/a%20b%09c?q=1%202", id="raw-space-and-tab-escaped-like-cache-key"
        ),
        pytest.param("https://h/é", "https://h/%C3%A9", id="non-ascii-escaped-like-cache-key"),
    ],
)
def test_normalize_url(url: str, expected: str) -> None:
    assert normalize_url(url) == expected


@pytest.mark.parametrize("url", ["/just/a/path", "example.com/a", "", "http:///a"])
def test_normalize_url_rejects_non_absolute(url: str) -> None:
    with pytest.raises(ValueError, match="absolute"):
        normalize_url(url)


def test_normalize_url_agrees_with_cache_key() -> None:
    config = CacheKeyConfig(sort_query=True, drop_params=frozenset({"utm_*"}))
    assert normalize_url("HTTP://H:80/a%7e?utm_a=1&b=2&a=1", config) == cache_key("http", "h", "/a~", "a=1&b=2", config)


@pytest.mark.parametrize(
    ("key", "prefix", "expected"),
    [
        pytest.param("https://example.com/img/a.png", "https://EXAMPLE.com:443/img", True, id="normalised-prefix"),
        pytest.param("https://example.com/img2/a.png", "https://example.com/img", True, id="string-prefix"),
        pytest.param("https://example.com/img/a.png", "https://example.com/img/", True, id="directory-prefix"),
        pytest.param("https://example.com/css/a.css", "https://example.com/img", False, id="other-path"),
        pytest.param("https://a.com.evil/x", "https://a.com", False, id="no-host-boundary-crossing"),
        pytest.param("http://example.com/img/a", "https://example.com/img", False, id="scheme-differs"),
        pytest.param("https://example.com:8443/img", "https://example.com/img", False, id="port-differs"),
        pytest.param("https://example.com/a~b", "https://example.com/a%7E", True, id="prefix-escape-normalised"),
        pytest.param("https://example.com/", "https://example.com", True, id="root"),
    ],
)
def test_url_prefix_matches(key: str, prefix: str, expected: bool) -> None:
    assert url_prefix_matches(key, prefix) is expected


# ---- properties -----------------------------------------------------------------------------

_text = st.text(st.characters(codec="utf-8"), max_size=40)
_configs = st.builds(
    CacheKeyConfig,
    ignore_query=st.booleans(),
    sort_query=st.booleans(),
    drop_params=st.frozensets(st.sampled_from(["a", "utm_*", "b"]), max_size=2),
    include_host=st.booleans(),
)


@given(st.sampled_from(["http", "https", "HTTP"]), _text, _text, st.none() | _text, _configs)
def test_cache_key_stable_printable_and_idempotent(
    scheme: str, host: str, path: str, query: str | None, config: CacheKeyConfig
) -> None:
    key = cache_key(scheme, host, path, query, config)
    assert key == cache_key(scheme, host, path, query, config)
    assert all(0x21 <= ord(char) <= 0x7E for char in key), key  # no controls, spaces or non-ASCII
    if key.split("/")[2]:
        # Normalising the key again as a URL is a fixed point (same code path as purges).
        assert normalize_url(key, config) == key


@given(_text, _text)
def test_distinct_paths_never_merge_except_by_rfc_equivalence(a: str, b: str) -> None:
    """Two paths map to the same key only if they are RFC 3986 §6.2.2-equivalent: re-encoding both
    keys' paths gives back the keys (the normalised form is canonical)."""
    key_a = cache_key("http", "h", "/" + a, None, PLAIN)
    key_b = cache_key("http", "h", "/" + b, None, PLAIN)
    if key_a == key_b:
        assert cache_key("http", "h", key_a[len("http://h") :], None, PLAIN) == key_a
