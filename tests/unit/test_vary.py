"""Secondary keys from Vary (RFC 9111 §4.1, RFC 9110 §12.5.5)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edge.http.headers import HeaderList
from edge.http.vary import (
    MAX_VARIANTS_DEFAULT,
    StoredVariant,
    is_vary_star,
    matches,
    most_recent,
    normalize_field_value,
    secondary_key,
    select_variant,
    variant_id,
    variants_to_evict,
    vary_fields,
)


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        pytest.param([], (), id="no-vary"),
        pytest.param([("Vary", "")], (), id="empty-vary"),
        pytest.param([("Vary", "Accept-Encoding")], ("accept-encoding",), id="single"),
        pytest.param([("VARY", "Accept-Encoding, ACCEPT-LANGUAGE")], ("accept-encoding", "accept-language"), id="case"),
        pytest.param(
            [("Vary", "accept"), ("vary", "origin, Accept")],
            ("accept", "origin"),
            id="rfc9110-5.3-lines-combined-dedup",
        ),
        pytest.param([("Vary", " a ,, b ,")], ("a", "b"), id="rfc9110-5.6.1-empty-elements"),
        pytest.param([("Vary", "*")], None, id="rfc9111-4.1-star"),
        pytest.param([("Vary", "*, foo")], None, id="rfc9111-4.1-star-member"),
        pytest.param([("Vary", "foo"), ("Vary", "*")], None, id="rfc9111-4.1-star-other-line"),
        pytest.param([("Vary", "foo bar")], None, id="malformed-member-like-star"),
        pytest.param([("Vary", '"foo"')], None, id="quoted-member-malformed"),
    ],
)
def test_vary_fields(headers: HeaderList, expected: tuple[str, ...] | None) -> None:
    assert vary_fields(headers) == expected
    assert is_vary_star(headers) is (expected is None)


@pytest.mark.parametrize(
    ("name", "values", "expected"),
    [
        pytest.param("accept-encoding", [], None, id="rfc9111-4.1-absent-is-none"),
        pytest.param("accept-encoding", [""], "", id="rfc9111-4.1-empty-is-not-absent"),
        pytest.param("x-custom", [" a "], "a", id="rfc9110-5.5-trim"),
        pytest.param("x-custom", ["a", "b"], "a, b", id="rfc9111-4.1-combine-lines"),
        pytest.param("x-custom", ["a", "", "  "], "a", id="empty-lines-dropped"),
        pytest.param("x-custom", ["A  B"], "A  B", id="unknown-field-inner-untouched"),
        pytest.param("user-agent", ["Mozilla/5.0 (X11)"], "Mozilla/5.0 (X11)", id="unknown-field-case-kept"),
        pytest.param("accept-encoding", ["gzip,deflate"], "deflate, gzip", id="rfc9111-4.1-whitespace-around-commas"),
        pytest.param("accept-encoding", ["gzip ,  deflate"], "deflate, gzip", id="rfc9111-4.1-ows-removed"),
        pytest.param("accept-encoding", ["gzip", "br"], "br, gzip", id="rfc9111-4.1-lines-equal-list"),
        pytest.param("accept-encoding", ["GZip, BR"], "br, gzip", id="rfc9110-8.4.1-codings-case-insensitive"),
        pytest.param("accept-encoding", ["gzip;q=1.0, br;Q=0.50"], "gzip, br;q=0.5", id="rfc9110-12.4.2-qvalue"),
        pytest.param("accept-encoding", ["gzip ; q=0.000"], "gzip;q=0", id="rfc9110-12.4.2-qvalue-zero"),
        pytest.param("accept-encoding", ["gzip;q=2"], "gzip;q=2", id="invalid-qvalue-kept"),
        pytest.param("accept-encoding", ["gzip;, ,br"], "br, gzip", id="rfc9110-5.6.6-empty-param"),
        pytest.param("accept-encoding", ["br, gzip"], "br, gzip", id="rfc9110-12.5.3-canonical-order"),
        pytest.param("accept-encoding", ["gzip, br"], "br, gzip", id="rfc9110-12.5.3-order-carries-no-meaning"),
        pytest.param("accept-encoding", ["gzip;q=0.5, br, zstd;q=0.9"], "br, zstd;q=0.9, gzip;q=0.5",
                     id="rfc9110-12.5.3-by-qvalue"),
        pytest.param("accept-encoding", ["gzip, gzip;q=0"], "gzip", id="rfc9110-12.5.3-first-weight-counts"),
        pytest.param("accept-encoding", ["identity;q=0, *;q=0.1"], "*;q=0.1, identity;q=0", id="zero-kept"),
        pytest.param("accept-encoding", ["gzip;q=2, br"], "gzip;q=2, br", id="invalid-qvalue-order-kept"),
        pytest.param("accept-language", ["en-US, FR;q=0.8"], "en-us, fr;q=0.8", id="rfc4647-language-ranges-ci"),
        pytest.param("accept-language", ["fr;q=0.8, en-US"], "en-us, fr;q=0.8", id="rfc9110-12.5.4-by-qvalue"),
        pytest.param("accept-language", ["fr, en"], "fr, en", id="rfc9110-12.4.2-equal-weights-keep-order"),
        pytest.param("accept-language", ["de;q=0.5, fr, en;q=1.0"], "fr, en, de;q=0.5", id="stable-sort"),
        pytest.param("accept-charset", ["UTF-8"], "utf-8", id="rfc9110-12.5.2-charset-ci"),
        pytest.param("accept", ["Text/HTML"], "text/html", id="rfc9110-8.3.1-type-ci"),
        pytest.param(
            "accept",
            ['text/html;Level="A B";Charset=UTF-8'],
            'text/html;level="A B";charset=UTF-8',
            id="media-param-values-kept",
        ),
        pytest.param("accept", ["*/*;q=0.1 , text/*"], "*/*;q=0.1, text/*", id="media-list"),
        pytest.param("accept", ['a/b;x="1,2", c/d'], 'a/b;x="1,2", c/d', id="quoted-comma-not-split"),
        pytest.param("Accept-Encoding", ["GZIP"], "gzip", id="name-case-insensitive"),
    ],
)
def test_normalize_field_value(name: str, values: list[str], expected: str | None) -> None:
    assert normalize_field_value(name, values) == expected


def test_secondary_key_absent_vs_empty() -> None:
    """RFC 9111 §4.1: an absent field only matches absence."""
    absent = secondary_key(("accept-encoding",), [])
    empty = secondary_key(("accept-encoding",), [("Accept-Encoding", "")])
    assert absent != empty
    assert absent == (("accept-encoding", None),)
    assert empty == (("accept-encoding", ""),)
    assert variant_id(absent) != variant_id(empty)


REQUEST_GZIP: HeaderList = [("Accept-Encoding", "gzip, br"), ("User-Agent", "x")]


@pytest.mark.parametrize(
    ("stored_vary", "stored_request", "req", "expected"),
    [
        pytest.param((), [], REQUEST_GZIP, True, id="no-vary-matches-all"),
        pytest.param(None, [], REQUEST_GZIP, False, id="rfc9111-4.1-star-never-matches"),
        pytest.param(("accept-encoding",), REQUEST_GZIP, [("accept-encoding", "GZIP,br")], True, id="normalised-match"),
        pytest.param(
            ("accept-encoding",),
            REQUEST_GZIP,
            [("accept-encoding", "gzip"), ("accept-encoding", "br")],
            True,
            id="lines",
        ),
        pytest.param(
            ("accept-encoding",), REQUEST_GZIP, [("accept-encoding", "br, gzip")], True, id="reorder-same-codings"
        ),
        pytest.param(
            ("accept-language",), [("Accept-Language", "en-US,en;q=0.9")], [("accept-language", "en;q=0.90, EN-us")],
            True, id="equivalent-accept-language",
        ),
        pytest.param(
            ("accept-language",), [("Accept-Language", "en, fr")], [("accept-language", "fr, en")], False,
            id="language-tie-order-differs",
        ),
        pytest.param(("accept-encoding",), REQUEST_GZIP, [], False, id="present-vs-absent"),
        pytest.param(("accept-encoding",), [], [], True, id="absent-vs-absent"),
        pytest.param(
            ("accept-encoding", "user-agent"), REQUEST_GZIP, [("accept-encoding", "gzip, br")], False, id="all-fields"
        ),
        pytest.param(
            ("x-device",), [("X-Device", "Mobile")], [("x-device", "mobile")], False, id="unknown-case-sensitive"
        ),
    ],
)
def test_matches(
    stored_vary: tuple[str, ...] | None, stored_request: HeaderList, req: HeaderList, expected: bool
) -> None:
    stored_key = secondary_key(stored_vary or (), stored_request)
    assert matches(stored_vary, stored_key, req) is expected


def test_variant_id_stable_and_distinct() -> None:
    key = secondary_key(("accept-encoding",), REQUEST_GZIP)
    assert variant_id(key) == variant_id(secondary_key(("Accept-Encoding",), [("accept-encoding", "gzip,br")]))
    assert variant_id(()) != variant_id(key)
    assert len(variant_id(key)) == 64
    # Injective even when values contain the characters a naive join would use.
    assert variant_id((("a", "b"), ("c", None))) != variant_id((("a", "b, c"),))


def _variant(
    vid: str, vary: tuple[str, ...] | None, request: HeaderList, date: float | None, rt: float
) -> StoredVariant:
    return StoredVariant(vid, vary, secondary_key(vary or (), request), date, rt)


GZIP = _variant("gzip", ("accept-encoding",), [("Accept-Encoding", "gzip")], 1000.0, 1000.0)
GZIP_NEWER = _variant("gzip2", ("accept-encoding",), [("Accept-Encoding", "gzip")], 2000.0, 2000.0)
PLAIN = _variant("plain", (), [], 3000.0, 3000.0)
BR = _variant("br", ("accept-encoding",), [("Accept-Encoding", "br")], 5000.0, 5000.0)
STAR = _variant("star", None, [], 9000.0, 9000.0)


@pytest.mark.parametrize(
    ("variants", "req", "expected"),
    [
        pytest.param([GZIP, BR], [("Accept-Encoding", "gzip")], "gzip", id="rfc9111-4.1-selected"),
        pytest.param([GZIP, BR], [("Accept-Encoding", "deflate")], None, id="rfc9111-4.1-vary-miss"),
        pytest.param([GZIP, GZIP_NEWER], [("Accept-Encoding", "gzip")], "gzip2", id="rfc9111-4-most-recent-by-date"),
        pytest.param([GZIP, PLAIN], [("Accept-Encoding", "gzip")], "gzip", id="rfc9111-4.1-prefer-valid-vary"),
        pytest.param([GZIP, PLAIN], [("Accept-Encoding", "br")], "plain", id="no-vary-fallback"),
        pytest.param([STAR], [], None, id="rfc9111-4.1-star"),
        pytest.param([], [], None, id="empty"),
    ],
)
def test_select_variant(variants: list[StoredVariant], req: HeaderList, expected: str | None) -> None:
    chosen = select_variant(variants, req)
    assert (chosen.variant_id if chosen else None) == expected


def test_most_recent_uses_date_then_response_time() -> None:
    """RFC 9111 §4: "as determined by the Date header field"; receipt time stands in if no Date."""
    old_date_late_receipt = StoredVariant("a", (), (), 100.0, 900.0)
    new_date = StoredVariant("b", (), (), 200.0, 300.0)
    no_date = StoredVariant("c", (), (), None, 150.0)
    assert most_recent([old_date_late_receipt, new_date, no_date]) == new_date
    assert most_recent([old_date_late_receipt, no_date]) == no_date
    assert most_recent([]) is None


@pytest.mark.parametrize(
    ("count", "cap", "expected"),
    [
        pytest.param(3, 5, [], id="under-cap"),
        pytest.param(5, 5, [], id="at-cap"),
        pytest.param(7, 5, ["v0", "v1"], id="oldest-evicted"),
        pytest.param(2, 0, ["v0", "v1"], id="zero-cap"),
    ],
)
def test_variants_to_evict(count: int, cap: int, expected: list[str]) -> None:
    variants = [StoredVariant(f"v{i}", (), (), None, float(100 - i if i % 2 else i)) for i in range(count)]
    # response_time: v0=0, v1=99, v2=2, v3=97 ... sort by response_time decides, not position.
    by_age = sorted(variants, key=lambda v: v.response_time)
    assert variants_to_evict(variants, cap) == [v.variant_id for v in by_age[: max(count - cap, 0)]]
    assert len(variants_to_evict(variants, cap)) == len(expected)


def test_variants_to_evict_default_cap() -> None:
    variants = [StoredVariant(f"v{i:02d}", (), (), None, float(i)) for i in range(MAX_VARIANTS_DEFAULT + 3)]
    assert variants_to_evict(variants) == ["v00", "v01", "v02"]
    with pytest.raises(ValueError, match="max_variants"):
        variants_to_evict(variants, -1)


# ---- properties -----------------------------------------------------------------------------

_field_names = st.sampled_from(["accept", "accept-encoding", "accept-language", "accept-charset", "x-custom", "cookie"])
_values = st.lists(st.text(max_size=30) | st.text(' \t,;="\\qQ=0.1aA/*\x0b', max_size=30), max_size=4)


@given(_field_names, _values)
def test_normalisation_idempotent(name: str, values: list[str]) -> None:
    once = normalize_field_value(name, values)
    if once is None:
        assert values == []
    else:
        assert normalize_field_value(name, [once]) == once


@given(_field_names, _values)
def test_normalisation_line_split_invariant(name: str, values: list[str]) -> None:
    """RFC 9111 §4.1 / RFC 9110 §5.3: field lines (values without surrounding OWS) are equivalent
    to one line joining them with ", "."""
    lines = [value.strip(" \t") for value in values if value.strip(" \t")]
    if lines:
        assert normalize_field_value(name, lines) == normalize_field_value(name, [", ".join(lines)])


@given(st.lists(st.tuples(st.sampled_from(["Vary", "vary", "X"]), st.text(max_size=20)), max_size=4))
def test_vary_fields_never_raises(headers: list[tuple[str, str]]) -> None:
    result = vary_fields(headers)
    assert result is None or all(name == name.lower() and name for name in result)
