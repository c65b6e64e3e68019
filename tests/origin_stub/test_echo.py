"""``/echo``: what arrived, with the body streamed and hashed rather than held."""

from __future__ import annotations

import hashlib
import json
import tracemalloc
from collections.abc import AsyncIterator

import aiohttp
import pytest

from origin_stub import OriginStubServer, body_chunks, expected_body

from .rawhttp import build_request, exchange, final, parse_responses

MiB = 1024 * 1024


async def test_echo_reports_the_request(origin: OriginStubServer) -> None:
    request = build_request(
        "PUT", "/echo/a/b%2Fc?z=1&z=2&q", [("X-Dup", "first"), ("X-Other", "o"), ("x-dup", "second")], body=b"payload"
    )
    got = await exchange(origin.port, request)
    resp = final(parse_responses(got.data))
    report = json.loads(resp.body)
    assert report["method"] == "PUT"
    assert report["path"] == "/echo/a/b%2Fc"
    assert report["query"] == "z=1&z=2&q"
    assert report["headers"] == [
        ["Host", "127.0.0.1"],
        ["X-Dup", "first"],
        ["X-Other", "o"],
        ["x-dup", "second"],
        ["Content-Length", "7"],
        ["Connection", "close"],
    ]
    assert report["body_length"] == 7
    assert report["body_sha256"] == hashlib.sha256(b"payload").hexdigest()


@pytest.mark.parametrize("method", ["GET", "POST", "DELETE", "PATCH", "OPTIONS"])
async def test_echo_any_method(origin: OriginStubServer, http: aiohttp.ClientSession, method: str) -> None:
    async with http.request(method, f"{origin.url}/echo") as resp:
        assert resp.status == 200
        report = await resp.json()
    assert report["method"] == method
    assert report["path"] == "/echo"
    assert report["body_length"] == 0
    assert report["body_sha256"] == hashlib.sha256(b"").hexdigest()


async def _upload(size: int) -> AsyncIterator[bytes]:
    for chunk in body_chunks("upload", 0, size, 256 * 1024):
        yield chunk


async def test_streamed_5_mib_upload(origin: OriginStubServer, http: aiohttp.ClientSession) -> None:
    size = 5 * MiB
    want = hashlib.sha256(b"".join(body_chunks("upload", 0, size, MiB))).hexdigest()
    tracemalloc.start()
    try:
        async with http.post(f"{origin.url}/echo/up", data=_upload(size)) as resp:
            report = await resp.json()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert report["body_length"] == size
    assert report["body_sha256"] == want
    assert peak < 3 * MiB, f"peak traced memory {peak / MiB:.1f} MiB"
    # sent chunked: the stub saw the framing header, not a length
    assert ["Transfer-Encoding", "chunked"] in report["headers"]


async def test_echo_with_size_streams_bytes_back(origin: OriginStubServer, http: aiohttp.ClientSession) -> None:
    async with http.post(f"{origin.url}/echo?size=100000", data=b"abc") as resp:
        assert resp.status == 200
        assert resp.headers["X-Echo-Body-Length"] == "3"
        assert resp.headers["X-Echo-Body-Sha256"] == hashlib.sha256(b"abc").hexdigest()
        assert resp.headers["Content-Length"] == "100000"
        assert await resp.read() == expected_body("echo", 100000)


async def test_echo_bad_size(origin: OriginStubServer, http: aiohttp.ClientSession) -> None:
    async with http.get(f"{origin.url}/echo?size=-3") as resp:
        assert resp.status == 400
