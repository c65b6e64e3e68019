"""Refusing connections: the origin "goes down" (ECONNREFUSED) and comes back on the same port."""

from __future__ import annotations

import asyncio
import time

import aiohttp
import pytest

from origin_stub import OriginStubServer, expected_body

from .rawhttp import build_request, exchange, final, parse_responses, read_all, read_response


async def connect_refused(port: int) -> bool:
    try:
        _, writer = await asyncio.open_connection("127.0.0.1", port)
    except ConnectionRefusedError:
        return True
    writer.close()
    await writer.wait_closed()
    return False


async def test_refuse_endpoint_window_then_same_port(origin: OriginStubServer, http: aiohttp.ClientSession) -> None:
    port = origin.port
    async with http.post(f"{origin.url}/_stub/refuse?seconds=0.6") as resp:
        assert resp.status == 200
        assert await resp.json() == {"refusing_for": 0.6}
        assert resp.headers["Connection"] == "close"
    answered = time.monotonic()
    refusing_now = origin.refusing
    assert refusing_now
    assert await connect_refused(port)
    with pytest.raises(aiohttp.ClientConnectorError):
        async with http.get(f"{origin.url}/obj/x"):
            pass
    while await connect_refused(port):
        assert time.monotonic() - answered < 5, "never came back"
        await asyncio.sleep(0.02)
    assert time.monotonic() - answered >= 0.4
    assert not origin.refusing
    assert origin.port == port
    async with http.get(f"{origin.url}/obj/x?size=7") as resp:
        assert await resp.read() == expected_body("x", 7)


async def test_refuse_drops_idle_keep_alive_but_finishes_requests_in_flight(origin: OriginStubServer) -> None:
    # an idle kept-alive connection...
    idle_reader, idle_writer = await asyncio.open_connection("127.0.0.1", origin.port)
    idle_writer.write(build_request("GET", "/obj/k?size=3", close=False))
    assert (await read_response(idle_reader)).body == expected_body("k", 3)
    # ...and one in the middle of a slow response
    busy = asyncio.create_task(
        exchange(origin.port, build_request("GET", "/obj/slow?size=4000&chunk_size=1000&chunk_delay_ms=100"))
    )
    await asyncio.sleep(0.1)

    await origin.refuse_connections(0.3)

    assert (await read_all(idle_reader, timeout=2)).data == b""  # closed by the server
    idle_writer.close()
    await idle_writer.wait_closed()
    slow = final(parse_responses((await busy).data))
    assert slow.body == expected_body("slow", 4000)
    await origin.wait_listening()
    got = await exchange(origin.port, build_request("GET", "/obj/k?size=3"))
    assert final(parse_responses(got.data)).body == expected_body("k", 3)


async def test_refusing_again_restarts_the_window(origin: OriginStubServer) -> None:
    await origin.refuse_connections(0.2)
    await origin.refuse_connections(0.6)
    await asyncio.sleep(0.35)
    assert await connect_refused(origin.port)
    await asyncio.wait_for(origin.wait_listening(), 5)
    assert not await connect_refused(origin.port)


async def test_stop_while_refusing_then_restart_on_the_same_port(http: aiohttp.ClientSession) -> None:
    server = OriginStubServer()
    with pytest.raises(RuntimeError):
        _ = server.port
    await server.start()
    port = server.port
    async with http.get(f"{server.url}/obj/r") as resp:
        assert resp.status == 200
    await server.refuse_connections(30)
    started = time.monotonic()
    await server.stop()
    assert time.monotonic() - started < 5
    assert await connect_refused(port)
    with pytest.raises(RuntimeError):
        await server.refuse_connections(1)
    async with server:  # an origin restart: same port, same state
        assert server.port == port
        assert not server.refusing
        async with http.get(f"{server.url}/_stub/counters?path=/obj/r") as resp:
            assert await resp.json() == {"path": "/obj/r", "count": 1}


async def test_refuse_validates_seconds(origin: OriginStubServer, http: aiohttp.ClientSession) -> None:
    for bad in ("", "abc", "-1", "99999"):
        async with http.post(f"{origin.url}/_stub/refuse?seconds={bad}") as resp:
            assert resp.status == 400
    with pytest.raises(ValueError, match="seconds"):
        await origin.refuse_connections(-1)
    assert not origin.refusing


async def test_fixed_port_and_double_start(http: aiohttp.ClientSession) -> None:
    async with OriginStubServer() as first:
        port = first.port
    async with OriginStubServer(port=port) as again:
        assert again.url == f"http://127.0.0.1:{port}"
        with pytest.raises(RuntimeError):
            await again.start()
        async with http.get(f"{again.url}/obj/p?size=1") as resp:
            assert resp.status == 200
