"""Requests an anonymous client can send to hurt others: a GET carrying a body that never ends (it
must hold up nobody else's fill, and its body is not in the key), a fragment in the target (keyed
as ``%23`` while the origin saw the path without it), ``Max-Forwards`` on TRACE and OPTIONS (RFC
9110 §7.6.2), a target no URL parser takes, and malformed requests on the admin listener (a
traceback each, before)."""

from __future__ import annotations

import asyncio
import json
import logging

import aiohttp
import pytest

from edge import faultlog
from origin_stub import OriginStubServer
from tests.conftest import EdgeFactory, raw_exchange
from tests.support.wait import until


async def get(url: str, **headers: str) -> tuple[int, dict[str, str], bytes]:
    async with aiohttp.ClientSession() as client, client.get(url, headers=headers) as resp:
        return resp.status, dict(resp.headers), await resp.read()


async def test_a_get_whose_body_never_ends_holds_up_no_other_client(
    origin: OriginStubServer, start_edge: EdgeFactory
) -> None:
    edge = await start_edge(origin.url)
    path = "/obj/hot?size=10&max_age=60"
    _reader, writer = await asyncio.open_connection("127.0.0.1", edge.port)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\nAccept-Encoding: gzip, deflate\r\nContent-Length: 1000\r\n\r\na".encode())
    await writer.drain()
    try:
        # The slow request is in before the others (its body is read before it goes anywhere).
        cache = edge.runtime.cache
        assert cache is not None
        await until(lambda: cache.counters.requests == 1, timeout=5, what="the slow GET taken in")
        same = {"Accept-Encoding": "gzip, deflate"}  # the same variant: they would share its fill
        answers = await asyncio.wait_for(asyncio.gather(*(get(str(edge.make_url(path)), **same) for _ in range(4))), 10)
        assert [status for status, _, _ in answers] == [200] * 4
        # Their fill is their own (before, they joined the slow GET's fill and waited out its body).
        assert all("fwd=bypass" not in headers["Cache-Status"] for _, headers, _ in answers)
    finally:
        writer.close()


async def test_a_get_with_a_body_is_passed_to_the_origin_and_never_stored(
    origin: OriginStubServer, start_edge: EdgeFactory
) -> None:
    edge = await start_edge(origin.url)
    wire = await raw_exchange(edge.port, b"GET /echo/gb HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n"
                                         b"Connection: close\r\n\r\nabc")  # fmt: skip
    head, _, body = wire.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), wire[:300]
    assert b"fwd=bypass" in head
    assert b"detail=request-body" in head
    assert json.loads(body)["body_length"] == 3  # the origin got it: the request is the client's own
    path = "/obj/gb?size=10&max_age=60"
    wire = await raw_exchange(edge.port, f"GET {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n"
                                         f"Connection: close\r\n\r\nabc".encode())  # fmt: skip
    assert wire.startswith(b"HTTP/1.1 200")
    _, headers, _ = await get(str(edge.make_url(path)))
    assert headers["X-Cache"] == "MISS"  # what the GET with a body got was not stored


@pytest.mark.parametrize("target", [b"/static/photo.svg#x", b"/p?q=1#frag", b"http://x/a#b"])
async def test_a_fragment_in_the_target_is_refused(
    origin: OriginStubServer, start_edge: EdgeFactory, target: bytes
) -> None:
    edge = await start_edge(origin.url)
    wire = await raw_exchange(edge.port, b"GET " + target + b" HTTP/1.1\r\nHost: x\r\n\r\n")
    assert wire.startswith(b"HTTP/1.1 400"), wire[:200]
    assert b"fragment" in wire


async def test_an_unparseable_absolute_target_is_a_400(origin: OriginStubServer, start_edge: EdgeFactory) -> None:
    edge = await start_edge(origin.url)
    wire = await raw_exchange(edge.port, b"GET http://[::1/x HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert wire.startswith(b"HTTP/1.1 400"), wire[:200]


async def test_max_forwards_zero_is_answered_here(origin: OriginStubServer, start_edge: EdgeFactory) -> None:
    edge = await start_edge(origin.url)
    before = origin.state.total
    wire = await raw_exchange(edge.port, b"OPTIONS /echo/mf HTTP/1.1\r\nHost: x\r\nMax-Forwards: 0\r\n"
                                         b"Connection: close\r\n\r\n")  # fmt: skip
    head, _, body = wire.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), wire[:300]
    assert b"\r\nAllow: GET, HEAD, POST" in head
    assert body == b""
    wire = await raw_exchange(edge.port, b"TRACE /echo/mf HTTP/1.1\r\nHost: x\r\nMax-Forwards: 0\r\nX-Seen: yes\r\n"
                                         b"Authorization: Bearer secret\r\nCookie: s=secret\r\n"
                                         b"Connection: close\r\n\r\n")  # fmt: skip
    head, _, body = wire.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), wire[:300]
    assert b"Content-Type: message/http" in head
    assert body.startswith(b"TRACE /echo/mf HTTP/1.1\r\n")
    assert b"X-Seen: yes" in body
    assert b"secret" not in body
    assert origin.state.total == before  # neither reached the origin


@pytest.mark.parametrize(("method", "target", "cache"), [
    ("OPTIONS", b"/echo/off", False), ("TRACE", b"/echo/off", False), ("OPTIONS", b"*", True),
])  # fmt: skip
async def test_max_forwards_zero_is_answered_here_whatever_the_cache_does(
    origin: OriginStubServer, start_edge: EdgeFactory, method: str, target: bytes, cache: bool
) -> None:
    edge = await start_edge(origin.url, cache={"enabled": cache})
    before = origin.state.total
    wire = await raw_exchange(edge.port, method.encode() + b" " + target + b" HTTP/1.1\r\nHost: x\r\n"
                                         b"Max-Forwards: 0\r\nConnection: close\r\n\r\n")  # fmt: skip
    assert wire.startswith(b"HTTP/1.1 200"), wire[:300]
    assert origin.state.total == before


async def test_underscore_spellings_of_hop_by_hop_and_configured_fields_stay_here(
    origin: OriginStubServer, start_edge: EdgeFactory
) -> None:
    edge = await start_edge(origin.url, upstream={"strip_request_headers": ["x_custom"]})
    wire = await raw_exchange(edge.port, b"GET /echo/u HTTP/1.1\r\nHost: x\r\nTransfer_Encoding: chunked\r\n"
                                         b"Proxy_Authorization: Basic x\r\nConnection: x-foo, close\r\nX_Foo: 1\r\n"
                                         b"X_Custom: 1\r\nX-Custom: 2\r\nX-Kept: 3\r\n\r\n")  # fmt: skip
    head, _, body = wire.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), wire[:300]
    seen = {name.lower() for name, _ in json.loads(body)["headers"]}
    assert "x-kept" in seen
    assert not seen & {"transfer_encoding", "proxy_authorization", "x_foo", "x_custom", "x-custom"}


@pytest.mark.parametrize("method", ["OPTIONS", "TRACE"])
async def test_max_forwards_is_decremented_on_the_way(
    origin: OriginStubServer, start_edge: EdgeFactory, method: str
) -> None:
    edge = await start_edge(origin.url)
    wire = await raw_exchange(edge.port, f"{method} /echo/mf HTTP/1.1\r\nHost: x\r\nMax-Forwards: 5\r\n"
                                         f"Connection: close\r\n\r\n".encode())  # fmt: skip
    head, _, body = wire.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), wire[:300]
    seen = {name.lower(): value for name, value in json.loads(body)["headers"]}
    assert seen["max-forwards"] == "4"


async def test_a_malformed_admin_request_is_one_line_not_a_traceback(
    origin: OriginStubServer, start_edge: EdgeFactory, caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    monkeypatch.setattr(faultlog, "faults", faultlog.FaultLog())  # this test's own rate-limit window
    _, admin = await start_edge(origin.url, with_admin=True)
    caplog.set_level(logging.INFO)
    for request in (b"GET / HTTP/1.2\r\n\r\n", b"\x16\x03\x01garbage\r\n\r\n", b"GET /\x00 HTTP/1.1\r\n\r\n",
                    b"GET / HTTP/1.1\r\nBad Header: y\r\n\r\n"):  # fmt: skip
        wire = await raw_exchange(admin.port, request)
        assert b" 400 " in wire.split(b"\r\n", 1)[0], wire[:200]
    assert not [record for record in caplog.records if record.exc_info], [r.getMessage() for r in caplog.records]
    lines = [record.getMessage() for record in caplog.records if record.name == "edge.client"]
    assert any("admin request" in line for line in lines)
    assert not [line for line in lines if "\n" in line]  # one line each, whatever aiohttp's message


async def test_a_chunked_get_without_chunks_is_an_ordinary_get(origin: OriginStubServer, start_edge: EdgeFactory) -> None:
    edge = await start_edge(origin.url)
    request = (b"GET /obj/chunked-empty?size=10&max_age=60 HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
               b"Connection: close\r\n\r\n0\r\n\r\n")  # fmt: skip
    first = await raw_exchange(edge.port, request)
    second = await raw_exchange(edge.port, request)
    assert first.startswith(b"HTTP/1.1 200")
    assert b"X-Cache: MISS" in first
    assert b"X-Cache: HIT" in second


@pytest.mark.parametrize("line", [b"GET / HTTP/2.0", b"GET /healthz HTTP/2.0", b"GET /"])
async def test_the_admin_listener_speaks_http_1_only(
    origin: OriginStubServer, start_edge: EdgeFactory, line: bytes
) -> None:
    _, admin = await start_edge(origin.url, with_admin=True)
    wire = await raw_exchange(admin.port, line + b"\r\nHost: x\r\n\r\n")
    assert wire.startswith(b"HTTP/1.1 505 "), wire[:200]
    assert b"Location" not in wire


async def test_admin_odd_input_is_a_4xx_not_a_500(origin: OriginStubServer, start_edge: EdgeFactory) -> None:
    """A token that is not UTF-8, an unknown site to inspect, a sequence SQLite cannot hold."""
    _, admin = await start_edge(origin.url, with_admin=True, admin_token="s3cret")
    for token in (b"\xff\xfe", b"\xed\xa0\x80"):
        wire = await raw_exchange(admin.port, b"GET /stats HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + token
                                  + b"\r\nConnection: close\r\n\r\n")  # fmt: skip
        assert wire.startswith(b"HTTP/1.1 401"), wire[:200]
    auth = {"Authorization": "Bearer s3cret"}
    async with aiohttp.ClientSession(headers=auth) as client:
        url = f"http://127.0.0.1:{admin.port}/cache"
        async with client.get(url, params={"url": "http://www.example.com/a", "site": "nonexistent"}) as resp:
            assert resp.status == 404
        body = {"all": True, "cluster_seq": 99999999999999999999}
        async with client.post(f"http://127.0.0.1:{admin.port}/purge", json=body) as resp:
            assert resp.status == 422
