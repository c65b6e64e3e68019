"""Compression at the edge (``[compression]``) end to end: the bytes each client got (decoded here
with the real codecs), the headers that describe them, and what the origin was asked."""

from __future__ import annotations

import asyncio
import gzip
from typing import Any

import aiohttp
import brotli
import pytest
import zstandard
from aiohttp.test_utils import TestServer
from multidict import CIMultiDictProxy

from origin_stub import OriginStubServer
from tests.conftest import EdgeFactory
from tests.integration.test_cache import origin_count, script, seen_requests, url
from tests.integration.test_partial import detail

TEXT = ("<p>edgecache compresses text once and stores it.</p>\n" * 400).encode()
DECODERS = {
    "br": brotli.decompress,
    "gzip": gzip.decompress,
    "zstd": lambda data: zstandard.ZstdDecompressor().decompressobj().decompress(data),
}


async def fetch_raw(
    server: TestServer, path: str, headers: dict[str, str] | None = None
) -> tuple[int, CIMultiDictProxy[str], bytes]:
    """The response exactly as sent: no Accept-Encoding added, nothing decoded."""
    sent = {"Accept-Encoding": "identity", **(headers or {})}
    if sent["Accept-Encoding"] == "":
        del sent["Accept-Encoding"]
    async with (
        aiohttp.ClientSession(auto_decompress=False, skip_auto_headers=("Accept-Encoding",)) as client,
        client.get(url(server, path), headers=sent) as resp,
    ):
        return resp.status, resp.headers, await resp.read()


def text_script(
    etag: str = '"t1"', content_type: str = "text/html; charset=utf-8", extra: list[list[str]] | None = None
) -> list[dict[str, Any]]:
    headers = [["Cache-Control", "max-age=600"], ["Content-Type", content_type], ["ETag", etag], *(extra or [])]
    return [{"headers": headers, "body": TEXT.decode()}]


def origin_accept_encoding(seen: list[dict[str, Any]]) -> list[str | None]:
    values: list[str | None] = []
    for request in seen:
        found = [value for name, value in request["headers"] if name.lower() == "accept-encoding"]
        values.append(found[0] if found else None)
    return values


@pytest.mark.parametrize("coding", ["br", "zstd", "gzip"])
async def test_a_text_response_is_compressed_once_and_stored(
    origin: OriginStubServer, edge: TestServer, coding: str
) -> None:
    await script(origin, f"text-{coding}", text_script())
    path = f"/s/text-{coding}"
    status, headers, body = await fetch_raw(edge, path, {"Accept-Encoding": coding})
    assert status == 200
    assert headers["Content-Encoding"] == coding
    assert DECODERS[coding](body) == TEXT
    assert len(body) < len(TEXT) // 5
    assert headers["ETag"] == 'W/"t1"'
    assert "Accept-Encoding" in headers["Vary"]
    assert detail(headers) == "compressed"
    assert "edgecache-transformed" not in {name.lower() for name in headers}
    again_status, again, again_body = await fetch_raw(edge, path, {"Accept-Encoding": coding})
    assert (again_status, again_body, again["X-Cache"]) == (200, body, "HIT")
    assert origin_accept_encoding(await seen_requests(origin, f"text-{coding}")) == [coding]


async def test_equivalent_accept_encodings_share_one_variant(origin: OriginStubServer, edge: TestServer) -> None:
    await script(origin, "equiv", text_script())
    first = await fetch_raw(edge, "/s/equiv", {"Accept-Encoding": "gzip, deflate, br"})
    assert first[1]["Content-Encoding"] == "br"
    for value in ("br", "br;q=1.0, gzip;q=0.5", "BR, *;q=0.1", "gzip;q=0.9, br"):
        status, headers, body = await fetch_raw(edge, "/s/equiv", {"Accept-Encoding": value})
        assert (status, headers["X-Cache"], body) == (200, "HIT", first[2]), value
    status, headers, body = await fetch_raw(edge, "/s/equiv", {"Accept-Encoding": "br;q=0, gzip"})
    assert headers["Content-Encoding"] == "gzip"
    assert gzip.decompress(body) == TEXT
    assert len(await seen_requests(origin, "equiv")) == 1  # gzip was made from the stored br variant


@pytest.mark.parametrize("accept", ["", "identity", "deflate", "br;q=0, zstd;q=0, gzip;q=0"])
async def test_a_client_that_accepts_no_coding_gets_identity_decoded_from_storage(
    origin: OriginStubServer, edge: TestServer, accept: str
) -> None:
    await script(origin, "plain", text_script())
    await fetch_raw(edge, "/s/plain", {"Accept-Encoding": "br"})
    status, headers, body = await fetch_raw(edge, "/s/plain", {"Accept-Encoding": accept})
    assert (status, body) == (200, TEXT)
    assert "Content-Encoding" not in headers
    assert headers["ETag"] == 'W/"t1"'
    assert "Accept-Encoding" in headers["Vary"]
    assert ";hit" in headers["Cache-Status"]
    assert detail(headers) == "decompressed"
    assert len(await seen_requests(origin, "plain")) == 1


async def test_an_identity_first_request_stores_identity_and_says_vary(
    origin: OriginStubServer, edge: TestServer
) -> None:
    await script(origin, "idfirst", text_script())
    status, headers, body = await fetch_raw(edge, "/s/idfirst")
    assert (status, body, headers["ETag"]) == (200, TEXT, '"t1"')
    assert "Content-Encoding" not in headers
    assert "Accept-Encoding" in headers["Vary"]
    assert origin_accept_encoding(await seen_requests(origin, "idfirst")) == ["identity"]
    _, headers, body = await fetch_raw(edge, "/s/idfirst")
    assert (headers["X-Cache"], body) == ("HIT", TEXT)


async def test_what_must_not_be_compressed_is_not(origin: OriginStubServer, edge: TestServer) -> None:
    gzipped = gzip.compress(TEXT)
    await script(origin, "pre", [{
        "headers": [["Cache-Control", "max-age=600"], ["Content-Type", "text/html"], ["Content-Encoding", "gzip"],
                    ["Vary", "Accept-Encoding"]],
        "body_b64": __import__("base64").b64encode(gzipped).decode(),
    }])  # fmt: skip
    await script(origin, "notransform", text_script(extra=[["Cache-Control", "no-transform"]]))
    await script(origin, "tiny", [{"headers": [["Cache-Control", "max-age=600"], ["Content-Type", "text/plain"]],
                                   "body": "small"}])  # fmt: skip
    await script(origin, "image", text_script(content_type="image/png"))
    _, headers, body = await fetch_raw(edge, "/s/pre", {"Accept-Encoding": "br"})
    assert (headers["Content-Encoding"], body) == ("gzip", gzipped)  # already encoded: passed as it is
    _, headers, body = await fetch_raw(edge, "/s/notransform", {"Accept-Encoding": "br"})
    assert ("Content-Encoding" in headers, body, headers["ETag"]) == (False, TEXT, '"t1"')
    _, headers, body = await fetch_raw(edge, "/s/tiny", {"Accept-Encoding": "br"})
    assert ("Content-Encoding" in headers, body) == (False, b"small")
    _, headers, body = await fetch_raw(edge, "/s/image", {"Accept-Encoding": "br"})
    assert ("Content-Encoding" in headers, "Vary" in headers, body) == (False, False, TEXT)
    status, headers, body = await fetch_raw(edge, "/s/image", {"Accept-Encoding": "gzip"})
    assert (status, headers["X-Cache"], body) == (200, "HIT", TEXT)  # no Vary: one object for all


async def test_a_request_with_no_transform_gets_the_bytes_as_they_are(
    origin: OriginStubServer, edge: TestServer
) -> None:
    await script(origin, "reqnt", text_script())
    _, headers, body = await fetch_raw(edge, "/s/reqnt", {"Accept-Encoding": "br", "Cache-Control": "no-transform"})
    assert ("Content-Encoding" in headers, body) == (False, TEXT)


async def test_ranges_are_served_on_the_encoded_representation(origin: OriginStubServer, edge: TestServer) -> None:
    await script(origin, "rng", text_script())
    _, _, encoded = await fetch_raw(edge, "/s/rng", {"Accept-Encoding": "br"})
    status, headers, body = await fetch_raw(edge, "/s/rng", {"Accept-Encoding": "br", "Range": "bytes=5-24"})
    assert (status, body) == (206, encoded[5:25])
    assert headers["Content-Range"] == f"bytes 5-24/{len(encoded)}"
    assert headers["Content-Encoding"] == "br"
    status, headers, body = await fetch_raw(edge, "/s/rng", {"Range": "bytes=5-24"})  # identity
    assert (status, body) == (206, TEXT[5:25])


async def test_revalidating_a_compressed_variant_costs_one_request(origin: OriginStubServer, edge: TestServer) -> None:
    await script(origin, "reval", [
        {"headers": [["Cache-Control", "max-age=10"], ["Age", "20"], ["Content-Type", "text/css"],
                     ["ETag", '"r1"']], "body": TEXT.decode()},
        {"status": 304, "headers": [["Cache-Control", "max-age=600"], ["ETag", '"r1"']]},
    ])  # fmt: skip
    _, _, first = await fetch_raw(edge, "/s/reval", {"Accept-Encoding": "br"})
    status, headers, body = await fetch_raw(edge, "/s/reval", {"Accept-Encoding": "br"})
    assert (status, body) == (200, first)
    assert (headers["Content-Encoding"], headers["ETag"]) == ("br", 'W/"r1"')
    assert "fwd-status=304" in headers["Cache-Status"]
    seen = await seen_requests(origin, "reval")
    assert len(seen) == 2
    assert ["If-None-Match", 'W/"r1"'] in seen[1]["headers"]
    _, headers, _ = await fetch_raw(edge, "/s/reval", {"Accept-Encoding": "br"})
    assert (headers["X-Cache"], headers["ETag"], headers["Vary"]) == ("HIT", 'W/"r1"', "Accept-Encoding")


async def test_disabled_compression_forwards_accept_encoding_untouched(
    origin: OriginStubServer, start_edge: EdgeFactory
) -> None:
    edge = await start_edge(origin.url, compression={"enabled": False})
    await script(origin, "off", text_script())
    status, headers, body = await fetch_raw(edge, "/s/off", {"Accept-Encoding": "gzip, br"})
    assert (status, body, "Content-Encoding" in headers) == (200, TEXT, False)
    assert origin_accept_encoding(await seen_requests(origin, "off")) == ["gzip, br"]


async def test_algorithms_and_types_are_configurable(origin: OriginStubServer, start_edge: EdgeFactory) -> None:
    edge = await start_edge(origin.url, compression={"algorithms": ["gzip"], "types": ["application/x-custom"],
                                                     "min_size": 10})  # fmt: skip
    await script(origin, "custom", text_script(content_type="application/x-custom"))
    await script(origin, "html", text_script())
    _, headers, body = await fetch_raw(edge, "/s/custom", {"Accept-Encoding": "br, gzip"})
    assert headers["Content-Encoding"] == "gzip"
    assert gzip.decompress(body) == TEXT
    _, headers, body = await fetch_raw(edge, "/s/html", {"Accept-Encoding": "br, gzip"})
    assert ("Content-Encoding" in headers, body) == (False, TEXT)
    assert await origin_count(origin, "/s/html") == 1


async def test_hits_of_a_compressed_variant_take_the_fast_path(origin: OriginStubServer, edge: Any) -> None:
    """A variant chosen only by Accept-Encoding is found by the hit fast path (edge.cache.hit)."""
    await script(origin, "fast", text_script())
    _, _, encoded = await fetch_raw(edge, "/s/fast", {"Accept-Encoding": "gzip, br"})
    service = edge.worker.service
    calls: list[bool] = []
    original = service.hit_path.fast

    def spy(head: Any) -> Any:
        answer = original(head)
        calls.append(answer is not None)
        return answer

    service.hit_path.fast = spy
    try:
        status, headers, body = await fetch_raw(edge, "/s/fast", {"Accept-Encoding": "br;q=0.9, gzip;q=0.1"})
        identity = await fetch_raw(edge, "/s/fast")  # no identity variant yet: the general path derives it
        again = await fetch_raw(edge, "/s/fast")
    finally:
        service.hit_path.fast = original
    assert (status, body, headers["Content-Encoding"], headers["X-Cache"]) == (200, encoded, "br", "HIT")
    assert identity[2] == again[2] == TEXT
    assert calls == [True, False, True]


async def test_concurrent_clients_of_different_codings_each_get_their_own(
    origin: OriginStubServer, edge: TestServer
) -> None:
    slow = text_script()
    slow[0]["delay_ms"] = 200
    await script(origin, "mixed", {"responses": slow, "repeat_last": True})
    results = await asyncio.gather(
        fetch_raw(edge, "/s/mixed", {"Accept-Encoding": "br"}),
        fetch_raw(edge, "/s/mixed"),
        fetch_raw(edge, "/s/mixed", {"Accept-Encoding": "gzip"}),
        fetch_raw(edge, "/s/mixed", {"Accept-Encoding": "br"}),
    )
    (_, br_headers, br_body), (_, plain_headers, plain), (_, gz_headers, gz_body), (_, _, br_again) = results
    assert (br_headers["Content-Encoding"], brotli.decompress(br_body)) == ("br", TEXT)
    assert ("Content-Encoding" not in plain_headers, plain) == (True, TEXT)
    assert (gz_headers["Content-Encoding"], gzip.decompress(gz_body)) == ("gzip", TEXT)
    assert brotli.decompress(br_again) == TEXT
