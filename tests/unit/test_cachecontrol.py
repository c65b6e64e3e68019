"""Cache-Control (RFC 9111 §5.2, RFC 5861, RFC 8246) and targeted fields (RFC 9213) parsing."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from http_sfv.dictionary import Dictionary
from hypothesis import given
from hypothesis import strategies as st

from edge.http.cachecontrol import (
    DELTA_SECONDS_INFINITY,
    CacheControl,
    format_cache_control,
    parse_cache_control,
    parse_cache_control_headers,
    parse_cdn_cache_control,
    parse_delta_seconds,
    select_targeted_field,
)

INF = DELTA_SECONDS_INFINITY


def assert_fields(cc: CacheControl, expected: dict[str, Any]) -> None:
    actual = {name: getattr(cc, name) for name in expected}
    assert actual == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        pytest.param("0", 0, id="9111-1.2.2-zero"),
        pytest.param("60", 60, id="9111-1.2.2-plain"),
        pytest.param("007", 7, id="9111-1.2.2-leading-zeros"),
        pytest.param("2147483648", INF, id="9111-1.2.2-exactly-2^31"),
        pytest.param("2147483649", INF, id="9111-1.2.2-clamp"),
        pytest.param("99999999999999999999999", INF, id="9111-1.2.2-clamp-huge"),
        pytest.param("7200.0", None, id="9111-1.2.2-decimal"),
        pytest.param("-1", None, id="9111-1.2.2-negative"),
        pytest.param("+5", None, id="9111-1.2.2-plus"),
        pytest.param(" 5", None, id="9111-1.2.2-space"),
        pytest.param("abc", None, id="9111-1.2.2-letters"),
        pytest.param("", None, id="9111-1.2.2-empty"),
        pytest.param("\u0665", None, id="9111-1.2.2-non-ascii-digit"),
        pytest.param(None, None, id="9111-1.2.2-absent"),
    ],
)
def test_parse_delta_seconds(value: str | None, expected: int | None) -> None:
    assert parse_delta_seconds(value) == expected


@pytest.mark.parametrize(
    ("lines", "expected", "malformed"),
    [
        # --- names, forms, lists
        pytest.param([], {"present": False, "max_age": None}, False, id="9111-5.2-absent"),
        pytest.param([""], {"present": True, "max_age": None}, False, id="9111-5.2-empty-line"),
        pytest.param(["max-age=60"], {"max_age": 60}, False, id="9111-5.2.2.1-max-age"),
        pytest.param(
            ["MAX-AGE=60, Public"], {"max_age": 60, "public": True}, False, id="9111-5.2-case-insensitive"
        ),
        pytest.param(['max-age="60"'], {"max_age": 60}, False, id="9111-5.2-quoted-argument-accepted"),
        pytest.param(
            ["max-age=60", "public"], {"max_age": 60, "public": True}, False, id="9110-5.3-several-lines"
        ),
        pytest.param([",,max-age=5,, ,"], {"max_age": 5}, False, id="9110-5.6.1-empty-elements"),
        pytest.param(["max-age = 5"], {"max_age": 5}, False, id="lenient-spaces-around-equals"),
        pytest.param(
            ['no-cache="a, b", max-age=5'],
            {"no_cache_fields": ("a", "b"), "max_age": 5},
            False,
            id="9110-5.6.4-comma-inside-quotes",
        ),
        # --- invalid freshness → stale (§4.2.1)
        pytest.param(["max-age=7200.0"], {"max_age": 0}, True, id="9111-4.2.1-max-age-decimal-stale"),
        pytest.param(["max-age=-1"], {"max_age": 0}, True, id="9111-4.2.1-max-age-negative-stale"),
        pytest.param(["max-age=abc"], {"max_age": 0}, True, id="9111-4.2.1-max-age-letters-stale"),
        pytest.param(["max-age"], {"max_age": 0}, True, id="9111-4.2.1-max-age-no-value-stale"),
        pytest.param(["max-age="], {"max_age": 0}, True, id="9111-4.2.1-max-age-empty-stale"),
        pytest.param(['max-age="6 0"'], {"max_age": 0}, True, id="9111-4.2.1-max-age-quoted-space"),
        pytest.param(['max-age="60'], {"max_age": 0}, True, id="9111-4.2.1-max-age-unterminated"),
        pytest.param(["max-age=60 public"], {"max_age": 0}, True, id="9111-4.2.1-missing-comma"),
        pytest.param(["s-maxage=1.5"], {"s_maxage": 0}, True, id="9111-4.2.1-s-maxage-invalid-stale"),
        # --- duplicates (§4.2.1)
        pytest.param(["max-age=60, max-age=60"], {"max_age": 60}, False, id="9111-4.2.1-dup-same-ok"),
        pytest.param(["max-age=60, max-age=120"], {"max_age": 0}, True, id="9111-4.2.1-dup-differ-stale"),
        pytest.param(["max-age=60", "max-age=120"], {"max_age": 0}, True, id="9111-4.2.1-dup-lines-stale"),
        pytest.param(["max-age=60, max-age=abc"], {"max_age": 0}, True, id="9111-4.2.1-dup-one-invalid"),
        pytest.param(["s-maxage=1, s-maxage=2"], {"s_maxage": 0}, True, id="9111-4.2.1-dup-s-maxage"),
        pytest.param(["min-fresh=5, min-fresh=9"], {"min_fresh": 9}, False, id="9111-4.2.1-dup-min-fresh"),
        pytest.param(["max-stale=5, max-stale"], {"max_stale": 5}, False, id="9111-4.2.1-dup-max-stale"),
        pytest.param(
            ["stale-while-revalidate=50, stale-while-revalidate=20"],
            {"stale_while_revalidate": 20},
            False,
            id="5861-3-dup-smallest",
        ),
        # --- 2^31 (§1.2.2)
        pytest.param(["max-age=99999999999"], {"max_age": INF}, False, id="9111-1.2.2-max-age-clamp"),
        pytest.param(["s-maxage=2147483649"], {"s_maxage": INF}, False, id="9111-1.2.2-s-maxage-clamp"),
        # --- request directives (§5.2.1)
        pytest.param(["max-stale"], {"max_stale": INF, "max_stale_any": True}, False, id="9111-5.2.1.2-any"),
        pytest.param(["max-stale=10"], {"max_stale": 10, "max_stale_any": False}, False, id="9111-5.2.1.2-n"),
        pytest.param(['max-stale="10"'], {"max_stale": 10}, False, id="9111-5.2.1.2-quoted"),
        pytest.param(["max-stale=abc"], {"max_stale": None}, True, id="9111-5.2.1.2-invalid-ignored"),
        pytest.param(["max-stale="], {"max_stale": None}, True, id="9111-5.2.1.2-empty-ignored"),
        pytest.param(["min-fresh=20"], {"min_fresh": 20}, False, id="9111-5.2.1.3-min-fresh"),
        pytest.param(["min-fresh=x"], {"min_fresh": None}, True, id="9111-5.2.1.3-invalid-ignored"),
        pytest.param(["no-cache"], {"no_cache": True}, False, id="9111-5.2.1.4-no-cache"),
        pytest.param(["no-store"], {"no_store": True}, False, id="9111-5.2.1.5-no-store"),
        pytest.param(["no-transform"], {"no_transform": True}, False, id="9111-5.2.1.6-no-transform"),
        pytest.param(["only-if-cached"], {"only_if_cached": True}, False, id="9111-5.2.1.7-only-if-cached"),
        # --- response directives (§5.2.2)
        pytest.param(["must-revalidate"], {"must_revalidate": True}, False, id="9111-5.2.2.2"),
        pytest.param(["must-understand"], {"must_understand": True}, False, id="9111-5.2.2.3"),
        pytest.param(
            ["no-cache"], {"no_cache": True, "no_cache_fields": ()}, False, id="9111-5.2.2.4-unqualified"
        ),
        pytest.param(
            ['no-cache="Set-Cookie, X-Foo"'],
            {"no_cache": False, "no_cache_fields": ("set-cookie", "x-foo")},
            False,
            id="9111-5.2.2.4-qualified-lowercased",
        ),
        pytest.param(
            ["no-cache=Set-Cookie"],
            {"no_cache": False, "no_cache_fields": ("set-cookie",)},
            False,
            id="9111-5.2.2.4-token-form-accepted",
        ),
        pytest.param(
            ['no-cache="a", no-cache="b, A"'],
            {"no_cache": False, "no_cache_fields": ("a", "b")},
            False,
            id="9111-5.2.2.4-qualified-merged",
        ),
        pytest.param(
            ['no-cache="a", no-cache'],
            {"no_cache": True, "no_cache_fields": ()},
            False,
            id="9111-4.2.1-unqualified-wins",
        ),
        pytest.param(['no-cache=""'], {"no_cache": True}, True, id="9111-5.2.2.4-empty-list-unqualified"),
        pytest.param(['no-cache="a b"'], {"no_cache": True}, True, id="9111-5.2.2.4-bad-list-unqualified"),
        pytest.param(
            ['no-cache="a, max-age=5'],
            {"no_cache": True, "max_age": None},
            True,
            id="9111-5.2.2.4-unterminated-unqualified",
        ),
        pytest.param(["no-store"], {"no_store": True}, False, id="9111-5.2.2.5"),
        pytest.param(["NO-STORE=1"], {"no_store": True}, True, id="9111-5.2.2.5-argument-still-honoured"),
        pytest.param(["public"], {"public": True}, False, id="9111-5.2.2.9"),
        pytest.param(['public="x"'], {"public": False}, True, id="9111-5.2.2.9-argument-ignored"),
        pytest.param(["private"], {"private": True, "private_fields": ()}, False, id="9111-5.2.2.7"),
        pytest.param(
            ['private="Authorization-Info, X-User"'],
            {"private": False, "private_fields": ("authorization-info", "x-user")},
            False,
            id="9111-5.2.2.7-qualified",
        ),
        pytest.param(['private=","'], {"private": True}, True, id="9111-5.2.2.7-empty-list-unqualified"),
        pytest.param(["proxy-revalidate"], {"proxy_revalidate": True}, False, id="9111-5.2.2.8"),
        pytest.param(["s-maxage=10"], {"s_maxage": 10}, False, id="9111-5.2.2.10"),
        pytest.param(['s-maxage="10"'], {"s_maxage": 10}, False, id="9111-5.2.2.10-quoted"),
        pytest.param(["immutable"], {"immutable": True}, False, id="8246-2-immutable"),
        pytest.param(["immutable=1"], {"immutable": False}, True, id="8246-2-argument-ignored"),
        pytest.param(
            ["must-understand=yes"], {"must_understand": False}, True, id="9111-5.2.2.3-argument-ignored"
        ),
        pytest.param(["stale-while-revalidate=30"], {"stale_while_revalidate": 30}, False, id="5861-3-swr"),
        pytest.param(
            ["stale-while-revalidate"], {"stale_while_revalidate": None}, True, id="5861-3-no-value"
        ),
        pytest.param(["stale-if-error=60"], {"stale_if_error": 60}, False, id="5861-4-sie"),
        pytest.param(["stale-if-error=1.5"], {"stale_if_error": None}, True, id="5861-4-invalid-ignored"),
        # --- extensions and garbage (§5.2.3)
        pytest.param(
            ['private, community="UCI"'],
            {"private": True, "extensions": (("community", "UCI"),)},
            False,
            id="9111-5.2.3-community-example",
        ),
        pytest.param(
            ['foo, Bar="baz, qux", x=1'],
            {"extensions": (("foo", None), ("bar", "baz, qux"), ("x", "1"))},
            False,
            id="9111-5.2.3-extensions-kept",
        ),
        pytest.param(['x="a\\"b"'], {"extensions": (("x", 'a"b'),)}, False, id="9110-5.6.4-quoted-pair"),
        pytest.param(["=5, max-age=5"], {"max_age": 5}, True, id="9111-5.2-no-name"),
        pytest.param(["max age=5"], {"max_age": None}, True, id="9111-5.2-space-in-name"),
        pytest.param(['"max-age"=5'], {"max_age": None}, True, id="9111-5.2-quoted-name"),
    ],
)
def test_parse_cache_control(lines: list[str], expected: dict[str, Any], malformed: bool) -> None:
    cc = parse_cache_control(lines)
    assert_fields(cc, expected)
    assert cc.malformed is malformed, cc.problems


def test_parse_cache_control_headers_reads_all_lines() -> None:
    """RFC 9110 §5.3: every Cache-Control line counts, names compared case-insensitively."""
    headers = [("cache-control", "max-age=60"), ("X-Other", "no-store"), ("CACHE-CONTROL", "public")]
    cc = parse_cache_control_headers(headers)
    assert (cc.max_age, cc.public, cc.no_store) == (60, True, False)


@pytest.mark.parametrize(
    ("lines", "expected"),
    [
        pytest.param(["max-age=60, public"], "max-age=60, public", id="simple"),
        pytest.param(["MAX-STALE"], "max-stale", id="9111-5.2.1.2-any-written-bare"),
        pytest.param(['no-cache="A,b"'], 'no-cache="a, b"', id="9111-5.2.2.4-quoted-form"),
        pytest.param(["max-age=1.5"], "max-age=0", id="9111-4.2.1-invalid-normalised"),
        pytest.param(['foo="a b", bar=baz'], 'foo="a b", bar=baz', id="extension-quoting"),
    ],
)
def test_format_cache_control(lines: list[str], expected: str) -> None:
    assert format_cache_control(parse_cache_control(lines)) == expected


def _meaning(cc: CacheControl) -> CacheControl:
    return dataclasses.replace(cc, present=True, problems=())


_DIRECTIVE_WORDS = st.sampled_from(
    [
        "max-age",
        "s-maxage",
        "max-stale",
        "min-fresh",
        "no-cache",
        "no-store",
        "private",
        "public",
        "must-revalidate",
        "proxy-revalidate",
        "must-understand",
        "immutable",
        "stale-while-revalidate",
        "stale-if-error",
        "only-if-cached",
        "no-transform",
        "x-ext",
        "MAX-AGE",
    ]
)
_ARGUMENTS = st.one_of(
    st.none(),
    st.integers(min_value=-5, max_value=2**40).map(str),
    st.text(max_size=8),
    st.text(max_size=8).map(lambda text: '"' + text + '"'),
)


@st.composite
def _cache_control_lines(draw: st.DrawFn) -> list[str]:
    """Mostly-plausible Cache-Control lines, with plenty of junk mixed in."""
    lines: list[str] = []
    for _ in range(draw(st.integers(min_value=0, max_value=3))):
        if draw(st.booleans()):
            lines.append(draw(st.text(max_size=30)))
            continue
        elements = []
        for _ in range(draw(st.integers(min_value=0, max_value=5))):
            name = draw(_DIRECTIVE_WORDS)
            argument = draw(_ARGUMENTS)
            elements.append(name if argument is None else f"{name}={argument}")
        lines.append(", ".join(elements))
    return lines


@given(st.lists(st.text(max_size=40), max_size=4))
def test_parse_never_raises_on_any_text(lines: list[str]) -> None:
    """Property (RFC 9111 §5.2): parsing any text yields a CacheControl, never an exception."""
    cc = parse_cache_control(lines)
    assert isinstance(cc, CacheControl)
    for value in (cc.max_age, cc.s_maxage, cc.max_stale, cc.min_fresh):
        assert value is None or 0 <= value <= INF


@given(_cache_control_lines())
def test_parse_format_round_trip(lines: list[str]) -> None:
    """Property: formatting the parsed meaning and parsing again gives the same meaning."""
    first = parse_cache_control(lines)
    again = parse_cache_control([format_cache_control(first)])
    assert _meaning(again) == _meaning(first)
    assert not again.malformed


# ---------------------------------------------------------------------------------------------
# RFC 9213 targeted fields


@pytest.mark.parametrize(
    ("lines", "expected"),
    [
        pytest.param(["max-age=60"], {"max_age": 60}, id="9213-2.1-max-age"),
        pytest.param(
            ["max-age=60", "must-revalidate"],
            {"max_age": 60, "must_revalidate": True},
            id="9213-2.1-lines-combined",
        ),
        pytest.param(["max-age=60;foo=bar"], {"max_age": 60}, id="9213-2.1-parameters-ignored"),
        pytest.param(["s-maxage=30, max-age=60"], {"s_maxage": 30, "max_age": 60}, id="9213-2.2-s-maxage"),
        pytest.param(["max-age=1, max-age=2"], {"max_age": 2}, id="9651-3.2-dup-key-last-wins"),
        pytest.param(["max-age=999999999999999"], {"max_age": INF}, id="9111-1.2.2-clamp"),
        pytest.param(["max-age=1.5"], {"max_age": 0}, id="9213-2.1-decimal-not-consumed-stale"),
        pytest.param(['max-age="60"'], {"max_age": 0}, id="9213-2.1-string-not-consumed-stale"),
        pytest.param(["max-age=-1"], {"max_age": 0}, id="9213-2.1-negative-stale"),
        pytest.param(["max-age"], {"max_age": 0}, id="9213-2.1-boolean-stale"),
        pytest.param(["max-age=(1 2)"], {"max_age": 0}, id="9213-2.1-inner-list-stale"),
        pytest.param(["no-store"], {"no_store": True}, id="9213-2.2-no-store"),
        pytest.param(["no-store=?0"], {"no_store": False}, id="9213-2.1-false-ignored"),
        pytest.param(["no-store=1"], {"no_store": False}, id="9213-2.1-integer-ignored"),
        pytest.param(["private"], {"private": True}, id="9213-2.2-private"),
        pytest.param(
            ['private="set-cookie"'],
            {"private": False, "private_fields": ("set-cookie",)},
            id="9213-2.1-private-fields",
        ),
        pytest.param(["no-cache"], {"no_cache": True}, id="9213-2.2-no-cache"),
        pytest.param(
            ['no-cache="a, B"'],
            {"no_cache": False, "no_cache_fields": ("a", "b")},
            id="9213-2.1-no-cache-fields-string",
        ),
        pytest.param(["no-cache=a"], {"no_cache": True}, id="9213-2.1-no-cache-token-unqualified"),
        pytest.param(["must-revalidate"], {"must_revalidate": True}, id="9213-2.2-must-revalidate"),
        pytest.param(
            ["stale-while-revalidate=30, stale-if-error=60"],
            {"stale_while_revalidate": 30, "stale_if_error": 60},
            id="9213-2.2-5861-extensions",
        ),
        pytest.param(["stale-if-error=1.0"], {"stale_if_error": None}, id="9213-2.1-sie-decimal-ignored"),
        pytest.param(["none"], {"max_age": None, "extensions": (("none", None),)}, id="9213-3.1-none"),
        pytest.param(["max-stale"], {"max_stale": INF}, id="9213-max-stale-any"),
    ],
)
def test_parse_cdn_cache_control(lines: list[str], expected: dict[str, Any]) -> None:
    parsed = parse_cdn_cache_control(lines)
    assert parsed is not None
    assert parsed.field_name == "CDN-Cache-Control"
    assert_fields(parsed.directives, expected)


@pytest.mark.parametrize(
    "lines",
    [
        pytest.param([], id="9213-2.1-absent"),
        pytest.param([""], id="9213-2.1-empty"),
        pytest.param(["  "], id="9213-2.1-blank"),
        pytest.param(["max-age=60,,"], id="9213-2.1-invalid-dictionary"),
        pytest.param(["Max-Age=60"], id="9213-2.1-uppercase-key-invalid"),
        pytest.param(["max-age=60 s-maxage=3"], id="9213-2.1-missing-comma"),
        pytest.param(['no-cache="a'], id="9213-2.1-unterminated-string"),
        pytest.param(["max-age=60", "Foo"], id="9213-2.1-one-bad-line-ignores-all"),
        pytest.param(["max-age=\u00e960"], id="9213-2.1-non-ascii"),
        pytest.param(["max-age=1234567890123456"], id="9651-3.3.1-integer-too-long"),
    ],
)
def test_parse_cdn_cache_control_ignored(lines: list[str]) -> None:
    """RFC 9213 §2.1: empty or unparseable → the whole field is ignored (None)."""
    assert parse_cdn_cache_control(lines) is None


@pytest.mark.parametrize(
    ("headers", "names", "expected_field", "expected_max_age"),
    [
        pytest.param(
            [("CDN-Cache-Control", "max-age=60")],
            ["CDN-Cache-Control"],
            "CDN-Cache-Control",
            60,
            id="9213-2.2-single",
        ),
        pytest.param(
            [("cdn-cache-control", "max-age=60")],
            ["CDN-Cache-Control"],
            "CDN-Cache-Control",
            60,
            id="9213-2.2-name-case-insensitive",
        ),
        pytest.param(
            [("CDN-Cache-Control", "max-age=60"), ("Edgecache-CDN-Cache-Control", "max-age=5")],
            ["Edgecache-CDN-Cache-Control", "CDN-Cache-Control"],
            "Edgecache-CDN-Cache-Control",
            5,
            id="9213-2.2-first-in-target-list-order",
        ),
        pytest.param(
            [("CDN-Cache-Control", "max-age=60"), ("Edgecache-CDN-Cache-Control", "max-age=5,,")],
            ["Edgecache-CDN-Cache-Control", "CDN-Cache-Control"],
            "CDN-Cache-Control",
            60,
            id="9213-2.2-invalid-first-skipped",
        ),
        pytest.param(
            [("CDN-Cache-Control", "")], ["CDN-Cache-Control"], None, None, id="9213-2.2-empty-falls-back"
        ),
        pytest.param(
            [("Other-Cache-Control", "max-age=5")],
            ["CDN-Cache-Control"],
            None,
            None,
            id="9213-2.2-not-on-target-list",
        ),
        pytest.param([], [], None, None, id="9213-2.2-empty-target-list"),
    ],
)
def test_select_targeted_field(
    headers: list[tuple[str, str]], names: list[str], expected_field: str | None, expected_max_age: int | None
) -> None:
    selected = select_targeted_field(headers, names)
    if expected_field is None:
        assert selected is None
        return
    assert selected is not None
    assert selected.field_name == expected_field
    assert selected.directives.max_age == expected_max_age


@given(st.lists(st.text(max_size=40), max_size=3))
def test_parse_cdn_never_raises(lines: list[str]) -> None:
    """Property (RFC 9213 §2.1): any text is either a valid field or ignored, never an error."""
    parsed = parse_cdn_cache_control(lines)
    assert parsed is None or isinstance(parsed.directives, CacheControl)


@given(
    st.dictionaries(
        st.sampled_from(["max-age", "s-maxage", "stale-while-revalidate", "stale-if-error", "min-fresh"]),
        st.integers(min_value=0, max_value=999_999_999_999_999),
        min_size=1,
    ),
    st.sets(st.sampled_from(["no-store", "no-cache", "private", "must-revalidate", "public", "immutable"])),
)
def test_cdn_structured_round_trip(integers: dict[str, int], flags: set[str]) -> None:
    """Property: what http_sfv serialises, we read back with the same meaning (RFC 9213 §2.1)."""
    dictionary = Dictionary()
    dictionary.update(integers)
    for flag in flags:
        dictionary[flag] = True
    parsed = parse_cdn_cache_control([str(dictionary)])
    assert parsed is not None
    cc = parsed.directives
    assert not cc.malformed
    for name, value in integers.items():
        assert getattr(cc, name.replace("-", "_")) == min(value, INF)
    assert cc.no_store == ("no-store" in flags)
    assert cc.no_cache == ("no-cache" in flags)
    assert cc.private == ("private" in flags)
    assert cc.must_revalidate == ("must-revalidate" in flags)
    assert cc.public == ("public" in flags)
    assert cc.immutable == ("immutable" in flags)
