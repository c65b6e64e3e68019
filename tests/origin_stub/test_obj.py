"""``/obj/<name>``: parametric objects, validators, conditionals, ranges, framing, delays, faults."""

from __future__ import annotations

import asyncio
import hashlib
import time
import tracemalloc
from typing import Any
from urllib.parse import quote

import aiohttp
import pytest
from multidict import CIMultiDictProxy

from origin_stub import OriginStubServer, body_chunks, expected_body

from .rawhttp import build_request, exchange, final, parse_responses, read_response, split_head

MiB = 1024 * 1024


async def get(http: aiohttp.ClientSession, url: str, **kw: Any) -> tuple[int, CIMultiDictProxy[str], bytes]:
    async with http.get(url, **kw) as resp:
        return resp.status, resp.headers, await resp.read()


# --- sizes and content --------------------------------------------------------------------------


@pytest.mark.parametrize("size", [0, 1, MiB])
async def test_body_is_the_deterministic_content(
    origin: OriginStubServer, http: aiohttp.ClientSession, size: int
) -> None:
    status, headers, body = await get(http, f"{origin.url}/obj/dir/file.bin?size={size}")
    assert status == 200
    assert headers["Content-Length"] == str(size)
    assert body == expected_body("dir/file.bin", size)


async def test_default_size_and_headers(origin: OriginStubServer, http: aiohttp.ClientSession) -> None:
    status, headers, body = await get(http, f"{origin.url}/obj/plain")
    assert status == 200
    assert body == expected_body("plain", 1024)
    assert headers["Content-Type"] == "application/octet-stream"
    assert "Date" in headers
    assert "Cache-Control" not in headers
    assert "ETag" not in headers


async def test_20_mib_is_streamed_not_built(origin: OriginStubServer, http: aiohttp.ClientSession) -> None:
    size = 20 * MiB
    want = hashlib.sha256()
    for chunk in body_chunks("big", 0, size, 1 << 20):
        want.update(chunk)
    got = hashlib.sha256()
    received = 0
    tracemalloc.start()
    try:
        async with http.get(f"{origin.url}/obj/big?size={size}") as resp:
            assert resp.headers["Content-Length"] == str(size)
            async for chunk in resp.content.iter_chunked(256 * 1024):
                got.update(chunk)
                received += len(chunk)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert received == size
    assert got.hexdigest() == want.hexdigest()
    # client and stub share this process: neither side may have held the body
    assert peak < 8 * MiB, f"peak traced memory {peak / MiB:.1f} MiB"


async def test_range_deep_inside_a_10_gib_object(origin: OriginStubServer, http: aiohttp.ClientSession) -> None:
    size = 10 * 1024**3
    start = 5 * 1024**3 + 11
    status, headers, body = await get(
        http, f"{origin.url}/obj/huge?size={size}", headers={"Range": f"bytes={start}-{start + 99}"}
    )
    assert status == 206
    assert headers["Content-Range"] == f"bytes {start}-{start + 99}/{size}"
    assert body == b"".join(body_chunks("huge", start, start + 100, 100))


# --- headers -----------------------------------------------------------------------------------


async def test_cache_and_validator_headers(origin: OriginStubServer, http: aiohttp.ClientSession) -> None:
    url = (
        f"{origin.url}/obj/h?size=3&max_age=60&etag=abc&last_modified=1700000000"
        "&vary=Accept-Encoding&surrogate_key=k1%20k2&content_type=text/plain"
    )
    _, headers, _ = await get(http, url)
    assert headers["Cache-Control"] == "max-age=60"
    assert headers["ETag"] == '"abc"'
    assert headers["Last-Modified"] == "Tue, 14 Nov 2023 22:13:20 GMT"
    assert headers["Vary"] == "Accept-Encoding"
    assert headers["Surrogate-Key"] == "k1 k2"
    assert headers["Content-Type"] == "text/plain"
    assert headers["Accept-Ranges"] == "bytes"


async def test_cache_control_overrides_max_age_and_etags_kept_as_given(
    origin: OriginStubServer, http: aiohttp.ClientSession
) -> None:
    _, headers, _ = await get(
        http,
        f"{origin.url}/obj/h",
        params={"max_age": "60", "cache_control": "no-store", "etag": 'W/"v1"'},
    )
    assert headers["Cache-Control"] == "no-store"
    assert headers["ETag"] == 'W/"v1"'
    _, headers, _ = await get(
        http, f"{origin.url}/obj/h", params={"etag": '"v2"', "last_modified": "Wed, 01 Jan 2020 00:00:00 GMT"}
    )
    assert headers["ETag"] == '"v2"'
    assert headers["Last-Modified"] == "Wed, 01 Jan 2020 00:00:00 GMT"


async def test_repeated_header_lines_on_the_wire(origin: OriginStubServer) -> None:
    target = "/obj/h?size=2&header=X-Dup:%20one&header=X-Dup:%20two&header=Link:%20%3C/a%3E"
    got = await exchange(origin.port, build_request("GET", target))
    resp = final(parse_responses(got.data))
    assert resp.get_all("X-Dup") == ["one", "two"]
    assert b"X-Dup: one\r\nX-Dup: two\r\nLink: </a>\r\n" in resp.raw_head
    assert resp.get_all("Server") == []


@pytest.mark.parametrize("status", [404, 500, 503])
async def test_error_status_with_body(origin: OriginStubServer, http: aiohttp.ClientSession, status: int) -> None:
    got_status, headers, body = await get(http, f"{origin.url}/obj/e?size=10&status={status}&max_age=5")
    assert got_status == status
    assert body == expected_body("e", 10)
    assert headers["Cache-Control"] == "max-age=5"


async def test_204_has_neither_body_nor_length(origin: OriginStubServer) -> None:
    got = await exchange(origin.port, build_request("GET", "/obj/n?status=204&size=50"))
    resp = final(parse_responses(got.data))
    assert resp.status == 204
    assert resp.get("Content-Length") is None
    assert got.data.endswith(b"\r\n\r\n")


@pytest.mark.parametrize(
    "query",
    [
        "size=-1",
        "size=abc",
        "status=99",
        "status=1000",
        "fault=explode",
        "chunked=maybe",
        "header=nocolon",
        "last_modified=yesterday",
        "delay_ms=-5",
        "chunk_size=0",
        "header=X:%0d%0aInjected:%201",
    ],
)
async def test_bad_parameters_are_400(origin: OriginStubServer, http: aiohttp.ClientSession, query: str) -> None:
    status, _, body = await get(http, f"{origin.url}/obj/bad?{query}")
    assert status == 400
    assert body.startswith(b"bad parameter")


async def test_head_has_get_headers_but_no_body(origin: OriginStubServer) -> None:
    got = await exchange(origin.port, build_request("HEAD", "/obj/h?size=12345&etag=x"))
    resp = final(parse_responses(got.data, head=True))
    assert resp.status == 200
    assert resp.get("Content-Length") == "12345"
    assert resp.get("ETag") == '"x"'
    assert got.data.endswith(b"\r\n\r\n")  # nothing after the head


async def test_keep_alive_serves_several_requests_on_one_connection(origin: OriginStubServer) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", origin.port)
    try:
        for size in (3, 70_000, 0):
            writer.write(build_request("GET", f"/obj/k?size={size}", close=False))
            resp = await read_response(reader)
            assert resp.body == expected_body("k", size)
    finally:
        writer.close()
        await writer.wait_closed()


# --- conditional requests ------------------------------------------------------------------------

LM = "Wed, 01 Jan 2020 00:00:00 GMT"


@pytest.mark.parametrize(
    ("etag", "inm"),
    [
        ('"v1"', '"v1"'),
        ('"v1"', 'W/"v1"'),  # weak comparison
        ('W/"v1"', '"v1"'),
        ('"v1"', '"a", "v1" ,"b"'),  # list
        ('"v,1"', '"v,1"'),  # comma inside an opaque-tag
        ('"v1"', "*"),
    ],
)
async def test_if_none_match_gives_304(origin: OriginStubServer, etag: str, inm: str) -> None:
    target = f"/obj/c?size=100&max_age=30&vary=Accept&last_modified=1577836800&etag={quote(etag)}"
    got = await exchange(origin.port, build_request("GET", target, [("If-None-Match", inm)]))
    resp = final(parse_responses(got.data))
    assert resp.status == 304
    assert resp.get("ETag") == etag
    assert resp.get("Cache-Control") == "max-age=30"
    assert resp.get("Last-Modified") == LM
    assert resp.get("Vary") == "Accept"
    assert resp.get("Date") is not None
    assert resp.get("Content-Length") is None
    assert got.data.endswith(b"\r\n\r\n")


async def test_304_repeats_extra_header_lines(origin: OriginStubServer, http: aiohttp.ClientSession) -> None:
    status, headers, _ = await get(
        http, f"{origin.url}/obj/c?etag=v&header=X-Version:%202", headers={"If-None-Match": '"v"'}
    )
    assert status == 304
    assert headers["X-Version"] == "2"


async def test_if_none_match_mismatch_wins_over_if_modified_since(
    origin: OriginStubServer, http: aiohttp.ClientSession
) -> None:
    status, _, body = await get(
        http,
        f"{origin.url}/obj/c?size=10&etag=v2&last_modified=1577836800",
        headers={"If-None-Match": '"v1"', "If-Modified-Since": "Thu, 02 Jan 2020 00:00:00 GMT"},
    )
    assert status == 200
    assert body == expected_body("c", 10)


@pytest.mark.parametrize(
    ("ims", "status"),
    [
        (LM, 304),
        ("Thu, 02 Jan 2020 00:00:00 GMT", 304),
        ("Tue, 31 Dec 2019 23:59:59 GMT", 200),
        ("not a date", 200),
    ],
)
async def test_if_modified_since(origin: OriginStubServer, http: aiohttp.ClientSession, ims: str, status: int) -> None:
    got, _, _ = await get(
        http, f"{origin.url}/obj/c?size=10&last_modified=1577836800", headers={"If-Modified-Since": ims}
    )
    assert got == status


async def test_conditionals_ignored_for_non_2xx(origin: OriginStubServer, http: aiohttp.ClientSession) -> None:
    status, _, _ = await get(http, f"{origin.url}/obj/c?status=404&etag=v", headers={"If-None-Match": "*"})
    assert status == 404


# --- ranges --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "start", "end"),
    [("bytes=0-99", 0, 100), ("bytes=900-", 900, 1000), ("bytes=-10", 990, 1000), ("bytes=990-5000", 990, 1000)],
)
async def test_single_range_206(
    origin: OriginStubServer, http: aiohttp.ClientSession, spec: str, start: int, end: int
) -> None:
    status, headers, body = await get(http, f"{origin.url}/obj/r?size=1000", headers={"Range": spec})
    assert status == 206
    assert headers["Content-Range"] == f"bytes {start}-{end - 1}/1000"
    assert headers["Content-Length"] == str(end - start)
    assert body == expected_body("r", 1000)[start:end]


async def test_multiple_ranges_are_multipart_byteranges(origin: OriginStubServer) -> None:
    size = 200_000
    got = await exchange(
        origin.port,
        build_request("GET", f"/obj/m?size={size}&content_type=text/x-test", [("Range", "bytes=0-9, 70000-170000,-5")]),
    )
    resp = final(parse_responses(got.data))
    assert resp.status == 206
    ctype = resp.get("Content-Type") or ""
    assert ctype.startswith("multipart/byteranges; boundary=")
    boundary = ctype.split("boundary=", 1)[1].encode()
    assert resp.get("Content-Length") == str(len(resp.body))
    assert resp.body.endswith(b"--" + boundary + b"--\r\n")
    parts = resp.body.split(b"--" + boundary + b"\r\n")[1:]
    full = expected_body("m", size)
    wanted = [(0, 10), (70000, 170001), (size - 5, size)]
    assert len(parts) == 3
    for part, (start, end) in zip(parts, wanted, strict=True):
        head, _, rest = part.partition(b"\r\n\r\n")
        assert f"Content-Range: bytes {start}-{end - 1}/{size}".encode() in head
        assert b"Content-Type: text/x-test" in head
        assert rest.startswith(full[start:end] + b"\r\n")


@pytest.mark.parametrize("spec", ["bytes=1000-", "bytes=5000-6000", "bytes=-0"])
async def test_unsatisfiable_range_416(origin: OriginStubServer, http: aiohttp.ClientSession, spec: str) -> None:
    status, headers, body = await get(http, f"{origin.url}/obj/r?size=1000", headers={"Range": spec})
    assert status == 416
    assert headers["Content-Range"] == "bytes */1000"
    assert body == b""


@pytest.mark.parametrize("spec", ["bytes=5-1", "items=0-1", "bytes=abc", "bytes="])
async def test_invalid_range_is_ignored(origin: OriginStubServer, http: aiohttp.ClientSession, spec: str) -> None:
    status, _, body = await get(http, f"{origin.url}/obj/r?size=100", headers={"Range": spec})
    assert status == 200
    assert body == expected_body("r", 100)


@pytest.mark.parametrize(
    ("if_range", "status"),
    [
        ('"v1"', 206),
        ('"v2"', 200),
        ('W/"v1"', 200),  # weak tags never satisfy If-Range
        (LM, 206),
        ("Thu, 02 Jan 2020 00:00:00 GMT", 200),
    ],
)
async def test_if_range(origin: OriginStubServer, http: aiohttp.ClientSession, if_range: str, status: int) -> None:
    got_status, _, body = await get(
        http,
        f"{origin.url}/obj/r?size=100&etag=v1&last_modified=1577836800",
        headers={"Range": "bytes=10-19", "If-Range": if_range},
    )
    assert got_status == status
    full = expected_body("r", 100)
    assert body == (full[10:20] if status == 206 else full)


async def test_range_on_head_is_ignored(origin: OriginStubServer) -> None:
    got = await exchange(origin.port, build_request("HEAD", "/obj/r?size=100", [("Range", "bytes=0-9")]))
    resp = final(parse_responses(got.data, head=True))
    assert resp.status == 200
    assert resp.get("Content-Length") == "100"


# --- framing ---------------------------------------------------------------------------------


async def test_chunked_vs_content_length_on_the_wire(origin: OriginStubServer) -> None:
    got = await exchange(origin.port, build_request("GET", "/obj/t?size=10000&chunked=1&chunk_size=3000"))
    resp = final(parse_responses(got.data))
    assert resp.get("Transfer-Encoding") == "chunked"
    assert resp.get("Content-Length") is None
    assert resp.complete
    assert resp.body == expected_body("t", 10000)
    assert b"\r\nbb8\r\n" in got.data  # 3000-byte chunks
    assert got.data.endswith(b"\r\n0\r\n\r\n")

    got = await exchange(origin.port, build_request("GET", "/obj/t?size=10000"))
    resp = final(parse_responses(got.data))
    assert resp.get("Transfer-Encoding") is None
    assert resp.get("Content-Length") == "10000"
    assert resp.body == expected_body("t", 10000)


async def test_chunked_for_http10_is_close_delimited(origin: OriginStubServer) -> None:
    got = await exchange(origin.port, build_request("GET", "/obj/t?size=500&chunked=1", version="HTTP/1.0"))
    head, rest = split_head(got.data)
    assert got.data.startswith(b"HTTP/1.0 200")
    assert head.get("Transfer-Encoding") is None
    assert head.get("Content-Length") is None
    assert rest == expected_body("t", 500)


# --- timing -------------------------------------------------------------------------------------


async def test_delay_before_headers(origin: OriginStubServer, http: aiohttp.ClientSession) -> None:
    started = time.monotonic()
    async with http.get(f"{origin.url}/obj/d?size=10&delay_ms=300") as resp:
        headers_at = time.monotonic()
        assert await resp.read() == expected_body("d", 10)
    assert headers_at - started >= 0.3


async def test_chunk_delay_between_chunks(origin: OriginStubServer, http: aiohttp.ClientSession) -> None:
    async with http.get(f"{origin.url}/obj/d?size=3000&chunk_size=1000&chunk_delay_ms=150") as resp:
        headers_at = time.monotonic()
        body = await resp.read()
        done_at = time.monotonic()
    assert body == expected_body("d", 3000)
    assert done_at - headers_at >= 0.3  # two gaps between three chunks


# --- early hints -----------------------------------------------------------------------------


async def test_early_hints_precede_the_final_response(origin: OriginStubServer) -> None:
    got = await exchange(origin.port, build_request("GET", "/obj/eh?size=5&early_hints=1"))
    assert got.data.startswith(
        b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload; as=style\r\n\r\nHTTP/1.1 200 OK\r\n"
    )
    responses = parse_responses(got.data)
    assert [r.status for r in responses] == [103, 200]
    assert responses[1].body == expected_body("eh", 5)


async def test_no_early_hints_for_http10(origin: OriginStubServer) -> None:
    got = await exchange(origin.port, build_request("GET", "/obj/eh?size=5&early_hints=1", version="HTTP/1.0"))
    assert got.data.startswith(b"HTTP/1.0 200 OK\r\n")


# --- faults --------------------------------------------------------------------------------------


async def test_fault_reset_sends_half_then_rst(origin: OriginStubServer) -> None:
    size = 300_000
    got = await exchange(origin.port, build_request("GET", f"/obj/f?size={size}&fault=reset"))
    head, rest = split_head(got.data)
    assert head.get("Content-Length") == str(size)
    assert got.reset
    assert rest == expected_body("f", size)[: size // 2]


async def test_fault_reset_chunked_has_no_terminator(origin: OriginStubServer) -> None:
    got = await exchange(origin.port, build_request("GET", "/obj/f?size=100000&chunked=1&fault=reset"))
    resp = final(parse_responses(got.data))
    assert got.reset
    assert not resp.complete
    assert resp.body == expected_body("f", 100000)[:50000]
    assert not got.data.endswith(b"0\r\n\r\n")


async def test_fault_short_sends_half_then_fin(origin: OriginStubServer) -> None:
    size = 100_001
    got = await exchange(origin.port, build_request("GET", f"/obj/f?size={size}&fault=short"))
    head, rest = split_head(got.data)
    assert not got.reset
    assert head.get("Content-Length") == str(size)
    assert rest == expected_body("f", size)[: size // 2]


async def test_fault_long_sends_more_than_declared(origin: OriginStubServer) -> None:
    size = 1000
    got = await exchange(origin.port, build_request("GET", f"/obj/f?size={size}&fault=long", close=False))
    head, rest = split_head(got.data)
    assert head.get("Content-Length") == str(size)
    assert head.get("Connection") == "close"
    assert len(rest) > size
    assert rest[:size] == expected_body("f", size)


@pytest.mark.parametrize("fault", ["reset", "short"])
async def test_aiohttp_client_sees_truncation(
    origin: OriginStubServer, http: aiohttp.ClientSession, fault: str
) -> None:
    async with http.get(f"{origin.url}/obj/f?size=400000&fault={fault}") as resp:
        assert resp.status == 200
        with pytest.raises(aiohttp.ClientPayloadError):
            await resp.read()
