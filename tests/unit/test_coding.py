"""Content-coding decisions (``edge.http.coding``): table-driven, plus a no-crash property."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edge.http import coding

ALL = ("br", "zstd", "gzip")


@pytest.mark.parametrize(
    ("values", "enabled", "expected"),
    [
        ([], ALL, "identity"),  # no Accept-Encoding: identity (see the module docstring)
        ([""], ALL, "identity"),
        (["gzip, deflate, br"], ALL, "br"),
        (["gzip, deflate"], ALL, "gzip"),
        (["gzip", "br"], ALL, "br"),  # several lines are one list
        (["br;q=0.5, gzip"], ALL, "gzip"),
        (["br;q=0, gzip;q=0"], ALL, "identity"),
        (["*"], ALL, "br"),
        (["*;q=0.5, gzip"], ALL, "gzip"),
        (["*;q=0"], ALL, "identity"),
        (["zstd, gzip"], ALL, "zstd"),
        (["gzip, zstd"], ("gzip", "zstd"), "gzip"),  # ties: our order of preference
        (["x-gzip"], ALL, "gzip"),
        (["BR"], ALL, "br"),
        (["br;q=0.4, identity;q=0.9"], ALL, "identity"),  # the client prefers no coding
        (["br;q=bogus, gzip"], ALL, "gzip"),  # an invalid member is ignored
        (["br;q=2"], ALL, "identity"),
        (["br"], ("gzip",), "identity"),  # a coding we do not offer
        (["deflate, compress"], ALL, "identity"),
    ],
)
def test_preferred(values: list[str], enabled: tuple[str, ...], expected: str) -> None:
    assert coding.preferred(values, enabled) == expected


@given(st.lists(st.text(max_size=30), max_size=3))
def test_preferred_is_always_an_offered_coding_or_identity(values: list[str]) -> None:
    assert coding.preferred(values, ALL) in (*ALL, "identity")


@pytest.mark.parametrize(
    ("media", "expected"),
    [
        ("text/html", True),
        ("text/css", True),
        ("application/json", True),
        ("application/problem+json", True),
        ("image/svg+xml", True),
        ("image/png", False),
        ("application/octet-stream", False),
        ("", False),
    ],
)
def test_type_matches(media: str, expected: bool) -> None:
    assert coding.type_matches(media, ["text/*", "application/json", "+json", "image/svg+xml"]) is expected


def test_compressible_needs_every_condition() -> None:
    html = [("Content-Type", "text/html; charset=utf-8")]
    types = ["text/*"]
    assert coding.compressible(200, [], html, types, 100, 1000)
    assert coding.compressible(200, [], html, types, 100, None)  # unknown length: compressed
    assert not coding.compressible(200, [], html, types, 100, 99)
    assert not coding.compressible(404, [], html, types, 100, 1000)
    assert not coding.compressible(200, [], [*html, ("Content-Encoding", "gzip")], types, 100, 1000)
    assert coding.compressible(200, [], [*html, ("Content-Encoding", "identity")], types, 100, 1000)
    assert not coding.compressible(200, [], [*html, ("Cache-Control", "public, no-transform")], types, 100, 1000)
    assert not coding.compressible(200, [("Cache-Control", "no-transform")], html, types, 100, 1000)


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ([], [("Vary", "Accept-Encoding")]),
        ([("Vary", "Cookie")], [("Vary", "Cookie, Accept-Encoding")]),
        ([("Vary", "accept-encoding")], [("Vary", "accept-encoding")]),
        ([("Vary", "*")], [("Vary", "*")]),
    ],
)
def test_with_vary_accept_encoding(headers: list[tuple[str, str]], expected: list[tuple[str, str]]) -> None:
    assert coding.with_vary_accept_encoding(headers) == expected


def test_encoded_headers() -> None:
    headers = [("ETag", '"a"'), ("Content-Length", "10"), ("Content-MD5", "x"), ("Content-Type", "text/css")]
    assert coding.encoded_headers(headers, "br") == [
        ("ETag", 'W/"a"'),
        ("Content-Type", "text/css"),
        ("Content-Encoding", "br"),
        ("edgecache-transformed", "br"),
        ("Vary", "Accept-Encoding"),
    ]
    decoded = coding.encoded_headers([("ETag", 'W/"a"'), ("Content-Encoding", "br")], "identity")
    assert decoded == [("ETag", 'W/"a"'), ("edgecache-transformed", "identity"), ("Vary", "Accept-Encoding")]


def test_after_refresh_keeps_what_the_edge_did() -> None:
    stored = coding.encoded_headers([("ETag", '"a"'), ("Content-Type", "text/css")], "gzip")
    merged = [("ETag", '"a"'), ("Content-Type", "text/css"), ("Vary", "Cookie"), ("Cache-Control", "max-age=9")]
    refreshed = coding.after_refresh(stored, merged)
    assert ("ETag", 'W/"a"') in refreshed
    assert ("Content-Encoding", "gzip") in refreshed
    assert ("Vary", "Cookie, Accept-Encoding") in refreshed
    untouched = [("ETag", '"a"')]
    assert coding.after_refresh(untouched, [("ETag", '"b"')]) == [("ETag", '"b"')]


def test_a_304_never_makes_edge_encoded_bytes_strong() -> None:
    stored = coding.encoded_headers([("Last-Modified", "Tue, 01 Dec 2026 08:00:00 GMT")], "gzip")
    merged = [*stored, ("ETag", '"new"'), ("Repr-Digest", "sha-256=:x:")]
    refreshed = coding.after_refresh(stored, merged)
    assert ("ETag", 'W/"new"') in refreshed
    assert not any(name.lower() == "repr-digest" for name, _ in refreshed)


def test_no_transform_requests_get_identity() -> None:
    assert coding.chosen_for([("Accept-Encoding", "br")], ALL) == "br"
    assert coding.chosen_for([("Accept-Encoding", "br"), ("Cache-Control", "no-transform")], ALL) == "identity"


def test_decoding_handles_several_members_and_refuses_bombs() -> None:
    import gzip

    import zstandard

    from edge.cache import compress

    assert compress.decode("gzip", gzip.compress(b"a" * 10) + gzip.compress(b"b" * 10), 100) == b"a" * 10 + b"b" * 10
    frames = zstandard.ZstdCompressor().compress(b"a" * 10) + zstandard.ZstdCompressor().compress(b"b" * 10)
    assert compress.decode("zstd", frames, 100) == b"a" * 10 + b"b" * 10
    for name, bomb in (
        ("gzip", gzip.compress(b"\0" * 10**6)),
        ("zstd", zstandard.ZstdCompressor().compress(b"\0" * 10**6)),
    ):
        with pytest.raises(compress.TooLarge):
            compress.decode(name, bomb, 1000)
    with pytest.raises(ValueError, match="truncated"):
        compress.decode("gzip", gzip.compress(b"a" * 1000)[:-4], 10**6)
