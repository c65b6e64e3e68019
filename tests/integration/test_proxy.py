"""The edge as an HTTP/1.1 intermediary (no caching involved): real origin stub, real sockets."""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from origin_stub import OriginStubServer
from origin_stub.body import expected_body
from tests.conftest import EDGE_NAME, EdgeFactory, free_port, raw_exchange


def edge_url(server: TestServer, path: str) -> str:
    return str(server.make_url(path))


async def test_get_relays_status_body_and_origin_headers_verbatim(edge: TestServer) -> None:
    path = "/obj/page?size=5000&max_age=60&etag=v1&header=X-Rep:%20one&header=X-Rep:%20two"
    async with aiohttp.ClientSession(auto_decompress=False) as client, client.get(edge_url(edge, path)) as resp:
        body = await resp.read()
        assert resp.status == 200
        assert body == expected_body("page", 5000)
        assert resp.headers["Content-Length"] == "5000"
        assert resp.headers["Cache-Control"] == "max-age=60"
        assert resp.headers["ETag"] == '"v1"'
        assert resp.headers.getall("X-Rep") == ["one", "two"]
        assert resp.headers["Via"].endswith(f"1.1 {EDGE_NAME}")
        assert resp.headers["Content-Type"] == "application/octet-stream"
        assert "Date" in resp.headers


async def test_origin_date_and_repeated_lines_survive_on_the_wire(origin: OriginStubServer, edge: TestServer) -> None:
    script = [
        {
            "status": 200,
            "headers": [
                ["Date", "Mon, 01 Jan 2024 00:00:00 GMT"],
                ["Set-Cookie", "a=1"],
                ["Link", "</a>; rel=preload"],
                ["Set-Cookie", "b=2"],
            ],
            "body": "hello",
        }
    ]
    async with aiohttp.ClientSession() as client:
        await client.put(f"{origin.url}/_stub/script/wire", json=script)
    assert edge.port is not None
    wire = await raw_exchange(edge.port, b"GET /s/wire HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    head = wire.split(b"\r\n\r\n", 1)[0].decode("latin-1")
    lines = head.split("\r\n")
    assert "Date: Mon, 01 Jan 2024 00:00:00 GMT" in lines
    cookie_lines = [line for line in lines if line.lower().startswith("set-cookie")]
    assert cookie_lines == ["Set-Cookie: a=1", "Set-Cookie: b=2"]
    assert lines.index("Set-Cookie: a=1") < lines.index("Set-Cookie: b=2")
    assert wire.endswith(b"hello")
    # aiohttp would add these to a bare response; a proxy must not invent them.
    assert not any(line.lower().startswith(("content-type:", "server:")) for line in lines)


async def test_request_hop_by_hop_fields_dropped_and_forwarding_fields_added(edge: TestServer) -> None:
    headers = {
        "Connection": "keep-alive, X-Secret",
        "X-Secret": "do-not-forward",
        "Keep-Alive": "timeout=5",
        "TE": "trailers",
        "Proxy-Authorization": "Basic Zm9vOmJhcg==",
        "X-Forwarded-For": "203.0.113.9",
        "X-End-To-End": "kept",
        "Host": "www.example.com",
    }
    async with aiohttp.ClientSession() as client, client.get(edge_url(edge, "/echo/x"), headers=headers) as resp:
        seen = await resp.json()
    names = [name.lower() for name, _ in seen["headers"]]
    for dropped in ("x-secret", "keep-alive", "te", "proxy-authorization", "connection"):
        assert dropped not in names, dropped
    received = {name.lower(): value for name, value in seen["headers"]}
    assert received["x-end-to-end"] == "kept"
    assert received["x-forwarded-for"] == "203.0.113.9, 127.0.0.1"
    assert received["x-forwarded-proto"] == "http"
    assert "x-forwarded-host" not in received  # the client's Host is not keyed, so it is not passed on
    assert received["via"] == f"1.1 {EDGE_NAME}"
    assert received["host"].startswith("127.0.0.1:")  # the origin's own authority by default


async def test_preserve_host_passes_the_client_host(origin: OriginStubServer, start_edge: EdgeFactory) -> None:
    server = await start_edge(origin.url, upstream={"preserve_host": True})
    async with (
        aiohttp.ClientSession() as client,
        client.get(edge_url(server, "/echo"), headers={"Host": "cdn.example:8080"}) as resp,
    ):
        seen = await resp.json()
    assert dict((n.lower(), v) for n, v in seen["headers"])["host"] == "cdn.example:8080"


async def test_response_hop_by_hop_fields_dropped(origin: OriginStubServer, edge: TestServer) -> None:
    script = [
        {
            "headers": [
                ["Connection", "X-Hop"],
                ["X-Hop", "secret"],
                ["Keep-Alive", "timeout=9"],
                ["Proxy-Authenticate", "Basic"],
                ["X-Kept", "yes"],
            ],
            "body": "ok",
        }
    ]
    async with aiohttp.ClientSession() as client:
        await client.put(f"{origin.url}/_stub/script/hop", json=script)
        async with client.get(edge_url(edge, "/s/hop")) as resp:
            assert await resp.text() == "ok"
            assert "X-Hop" not in resp.headers
            assert "Proxy-Authenticate" not in resp.headers
            assert resp.headers.get("Keep-Alive") is None
            assert resp.headers["X-Kept"] == "yes"


async def test_path_and_query_forwarded_byte_for_byte(edge: TestServer) -> None:
    target = "/echo/a%2Fb/./c/../d;p=1%7e?q=%20x&q=1&&z=%E2%82%AC&empty="
    assert edge.port is not None
    wire = await raw_exchange(
        edge.port, f"GET {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode()
    )
    seen = json.loads(wire.split(b"\r\n\r\n", 1)[1])
    assert seen["path"] + "?" + seen["query"] == target


@pytest.mark.parametrize("method", ["POST", "PUT", "PATCH", "DELETE", "OPTIONS", "PROPFIND", "REPORT", "MKCOL"])
async def test_every_method_forwarded_with_its_body(edge: TestServer, method: str) -> None:
    payload = b"x" * 10000
    async with (
        aiohttp.ClientSession() as client,
        client.request(method, edge_url(edge, "/echo/m"), data=payload) as resp,
    ):
        seen = await resp.json()
    assert seen["method"] == method
    assert seen["body_length"] == len(payload)
    assert seen["body_sha256"] == hashlib.sha256(payload).hexdigest()


async def test_head_relays_headers_without_body(edge: TestServer) -> None:
    assert edge.port is not None
    wire = await raw_exchange(
        edge.port, b"HEAD /obj/h?size=4096 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    head, _, rest = wire.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200")
    assert b"\r\nContent-Length: 4096" in head
    assert rest == b""


async def test_streamed_upload_of_unknown_length(edge: TestServer) -> None:
    """A chunked upload larger than any buffer reaches the origin intact, chunk by chunk."""
    block = bytes(range(256)) * 256  # 64 KiB
    digest = hashlib.sha256()

    async def upload() -> AsyncIterator[bytes]:
        for _ in range(256):  # 16 MiB
            digest.update(block)
            yield block

    async with (
        aiohttp.ClientSession() as client,
        client.post(edge_url(edge, "/echo/up"), data=upload()) as resp,
    ):
        seen = await resp.json()
    assert seen["body_length"] == 256 * len(block)
    assert seen["body_sha256"] == digest.hexdigest()
    received = dict((n.lower(), v) for n, v in seen["headers"])
    assert received.get("transfer-encoding") == "chunked"


async def test_large_download_streams_before_origin_finishes(edge: TestServer) -> None:
    """The first bytes reach the client while the origin is still sending (no full buffering)."""
    url = edge_url(edge, "/obj/slow?size=262144&chunk_size=65536&chunk_delay_ms=300")
    arrivals: list[float] = []
    received = bytearray()
    async with aiohttp.ClientSession() as client, client.get(url) as resp:
        async for chunk in resp.content.iter_any():
            arrivals.append(time.monotonic())
            received.extend(chunk)
    assert bytes(received) == expected_body("slow", 262144)
    assert len(arrivals) >= 3
    assert arrivals[-1] - arrivals[0] >= 0.5  # bytes came in spread out, as the origin sent them


async def test_large_chunked_download_is_complete(edge: TestServer) -> None:
    size = 24 * 1024 * 1024
    digest = hashlib.sha256()
    length = 0
    async with aiohttp.ClientSession() as client, client.get(edge_url(edge, f"/obj/big?size={size}&chunked=1")) as resp:
        assert resp.headers.get("Transfer-Encoding") == "chunked"
        async for chunk in resp.content.iter_chunked(1 << 20):
            digest.update(chunk)
            length += len(chunk)
    assert length == size
    assert digest.hexdigest() == hashlib.sha256(expected_body("big", size)).hexdigest()


async def test_origin_refused_is_502_with_reason(start_edge: EdgeFactory) -> None:
    server = await start_edge(f"http://127.0.0.1:{free_port()}")
    async with aiohttp.ClientSession() as client, client.get(edge_url(server, "/x")) as resp:
        assert resp.status == 502
        assert "cannot connect to origin" in await resp.text()
        assert resp.headers["Cache-Control"] == "no-store"


async def test_origin_timeout_is_504_with_reason(origin: OriginStubServer, start_edge: EdgeFactory) -> None:
    server = await start_edge(origin.url, upstream={"read_timeout": 0.3})
    async with aiohttp.ClientSession() as client, client.get(edge_url(server, "/obj/t?delay_ms=2000")) as resp:
        assert resp.status == 504
        assert "did not answer in time" in await resp.text()


async def test_origin_refusing_for_a_while_then_back(origin: OriginStubServer, edge: TestServer) -> None:
    async with aiohttp.ClientSession() as client:
        await origin.refuse_connections(1.0)
        async with client.get(edge_url(edge, "/obj/r?size=10")) as resp:
            assert resp.status == 502
        await asyncio.sleep(1.3)
        async with client.get(edge_url(edge, "/obj/r?size=10")) as resp:
            assert resp.status == 200


@pytest.mark.parametrize(
    "query",
    [
        pytest.param("fault=reset", id="reset-mid-body"),
        pytest.param("fault=short", id="content-length-longer-than-body"),
        pytest.param("fault=reset&chunked=1", id="reset-mid-chunked-body"),
        pytest.param("size=300000&chunk_delay_ms=50&chunk_size=65536&fault=reset", id="reset-after-streaming-began"),
    ],
)
async def test_origin_body_cut_breaks_client_response(edge: TestServer, query: str) -> None:
    """Never a silently short 200: the client must see the response as broken."""
    size_param = "" if "size=" in query else "size=200000&"
    async with aiohttp.ClientSession() as client, client.get(edge_url(edge, f"/obj/cut?{size_param}{query}")) as resp:
        assert resp.status == 200
        with pytest.raises(aiohttp.ClientPayloadError):
            await resp.read()


async def test_cut_chunked_body_has_no_terminating_chunk_on_the_wire(edge: TestServer) -> None:
    assert edge.port is not None
    wire = await raw_exchange(
        edge.port, b"GET /obj/cut2?size=200000&chunked=1&fault=reset HTTP/1.1\r\nHost: x\r\n\r\n"
    )
    assert wire.startswith(b"HTTP/1.1 200")
    assert not wire.endswith(b"0\r\n\r\n")


async def test_early_hints_relayed_before_final_response(edge: TestServer) -> None:
    assert edge.port is not None
    wire = await raw_exchange(
        edge.port, b"GET /obj/eh?size=10&early_hints=1 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    assert wire.startswith(b"HTTP/1.1 103 ")
    interim, _, rest = wire.partition(b"\r\n\r\n")
    assert b"\r\nLink: </style.css>; rel=preload; as=style" in interim
    assert rest.startswith(b"HTTP/1.1 200 ")


async def test_scripted_interim_responses_each_relayed(origin: OriginStubServer, edge: TestServer) -> None:
    script = [{"early_hints": [[["Link", "</a.css>; rel=preload"]], [["Link", "</b.js>; rel=preload"]]], "body": "x"}]
    async with aiohttp.ClientSession() as client:
        await client.put(f"{origin.url}/_stub/script/eh2", json=script)
    assert edge.port is not None
    wire = await raw_exchange(edge.port, b"GET /s/eh2 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert wire.count(b"HTTP/1.1 103 ") == 2
    assert wire.index(b"</a.css>") < wire.index(b"</b.js>") < wire.index(b"HTTP/1.1 200 ")


async def test_no_interim_response_to_http10_client(edge: TestServer) -> None:
    """RFC 9110 §15.2: a server MUST NOT send a 1xx response to an HTTP/1.0 client."""
    assert edge.port is not None
    wire = await raw_exchange(edge.port, b"GET /obj/eh10?size=10&early_hints=1 HTTP/1.0\r\nHost: x\r\n\r\n")
    assert wire.startswith(b"HTTP/1.0 200") or wire.startswith(b"HTTP/1.1 200")
    assert b" 103 " not in wire


async def test_loop_through_own_via_is_508(edge: TestServer) -> None:
    async with (
        aiohttp.ClientSession() as client,
        client.get(edge_url(edge, "/obj/l"), headers={"Via": f"1.0 other, 1.1 {EDGE_NAME}"}) as resp,
    ):
        assert resp.status == 508
        assert "loop" in await resp.text()


async def test_edge_pointed_at_itself_stops_the_loop(start_edge: EdgeFactory) -> None:
    port = free_port()
    server = await start_edge(f"http://127.0.0.1:{port}", port=port)
    async with aiohttp.ClientSession() as client, client.get(edge_url(server, "/anything")) as resp:
        assert resp.status == 508
        assert resp.headers.getall("Via") == [f"1.1 {EDGE_NAME}"] or f"1.1 {EDGE_NAME}" in resp.headers["Via"]


async def test_non_idempotent_request_is_never_retried(start_edge: EdgeFactory) -> None:
    """An origin that drops a request without answering: POST goes once (502), a bodiless GET is retried."""
    requests_seen: list[bytes] = []

    async def drop(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            try:
                head = await reader.readuntil(b"\r\n\r\n")
            except asyncio.IncompleteReadError:
                writer.close()
                return
            requests_seen.append(head.split(b" ", 1)[0])
            length = [
                int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")
            ]
            if length:
                await reader.readexactly(length[0])
            if len(requests_seen) <= 2:  # drop the POST and the first GET without answering
                writer.close()
                return
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            await writer.drain()

    dropper = await asyncio.start_server(drop, "127.0.0.1", 0)
    port = dropper.sockets[0].getsockname()[1]
    try:
        server = await start_edge(f"http://127.0.0.1:{port}")
        async with aiohttp.ClientSession() as client:
            async with client.post(edge_url(server, "/p"), data=b"payload") as resp:
                assert resp.status == 502
            assert requests_seen == [b"POST"]
            async with client.get(edge_url(server, "/g")) as resp:
                assert resp.status == 200
                assert await resp.text() == "ok"
            assert requests_seen == [b"POST", b"GET", b"GET"]
    finally:
        dropper.close()
        await dropper.wait_closed()


async def test_keep_alive_pool_reuses_origin_connections(start_edge: EdgeFactory) -> None:
    peers: list[tuple[str, int]] = []

    async def answer(request: web.Request) -> web.Response:
        peers.append(request.transport.get_extra_info("peername") if request.transport else ("?", 0))
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_get("/k", answer)
    origin_server = TestServer(app, host="127.0.0.1")
    await origin_server.start_server()
    try:
        server = await start_edge(str(origin_server.make_url("")))
        async with aiohttp.ClientSession() as client:
            for _ in range(20):
                async with client.get(edge_url(server, "/k")) as resp:
                    assert await resp.text() == "ok"
        assert len(peers) == 20
        assert len(set(peers)) == 1  # sequential requests ride one pooled keep-alive connection
    finally:
        await origin_server.close()


@pytest.mark.parametrize(
    "request_bytes",
    [
        pytest.param(b"GARBAGE\r\n\r\n", id="malformed-request-line"),
        pytest.param(b"GET / HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n", id="header-without-colon"),
        pytest.param(b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 20000 + b"\r\n\r\n", id="oversized-header"),
        pytest.param(b"GET /" + b"a" * 20000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", id="oversized-request-line"),
        pytest.param(b"GET / HTTP/1.1\r\nHost: a b\r\n\r\n", id="invalid-host"),
    ],
)
async def test_bad_requests_get_4xx_and_the_edge_keeps_serving(edge: TestServer, request_bytes: bytes) -> None:
    assert edge.port is not None
    wire = await raw_exchange(edge.port, request_bytes)
    status = int(wire.split(b" ", 2)[1])
    assert status in (400, 414, 431)
    async with aiohttp.ClientSession() as client, client.get(edge_url(edge, "/obj/alive?size=3")) as resp:
        assert resp.status == 200
