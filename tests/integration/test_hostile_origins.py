"""Origins that break the rules, byte by byte (a raw asyncio server): a second response nobody asked
for, interim responses to a client that leaves, a head trickled or too large, a body delimited by
the close of the connection, statuses a GET cannot get.  Whatever the origin does, no client gets
another URL's answer, no client waits for ever, and what is stored is what was asked for."""

from __future__ import annotations

import asyncio
import socket
import struct
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from tests.conftest import EdgeFactory, raw_exchange
from tests.integration.test_hostile_requests import get
from tests.support.wait import until

Behaviour = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


def answer(body: bytes, *, cache: str = "max-age=300", extra: str = "") -> bytes:
    return (f"HTTP/1.1 200 OK\r\nCache-Control: {cache}\r\nContent-Length: {len(body)}\r\n{extra}\r\n").encode() + body


class RawOrigin:
    """Answers each request by the behaviour registered for its path; counts requests by path."""

    def __init__(self) -> None:
        self.behaviours: dict[str, Behaviour] = {}
        self.seen: Counter[str] = Counter()
        self.closed_by_peer: Counter[str] = Counter()
        self.server: asyncio.Server | None = None

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                path = head.split(b" ", 2)[1].decode()
                self.seen[path] += 1
                await self.behaviours[path.split("?")[0]](reader, writer)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        except asyncio.CancelledError:  # the test is over while a behaviour still runs: end quietly
            pass
        finally:
            writer.close()


@pytest.fixture
async def raw_origin() -> AsyncIterator[RawOrigin]:
    origin = RawOrigin()
    origin.server = await asyncio.start_server(origin.serve, "127.0.0.1", 0)
    yield origin
    origin.server.close()
    await origin.server.wait_closed()


async def test_a_response_nobody_asked_for_answers_no_other_request(
    raw_origin: RawOrigin, start_edge: EdgeFactory
) -> None:
    sent = asyncio.Event()
    dropped = asyncio.Event()

    async def late(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(answer(b"late", cache="no-store"))
        await writer.drain()
        await asyncio.sleep(0.05)  # the edge has put the connection back in its pool
        writer.write(answer(b"SMUGGLED", extra="X-Smuggled: 1\r\n"))  # unasked
        await writer.drain()
        sent.set()
        if await reader.read(1) == b"":
            dropped.set()

    async def victim(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(answer(b"victim00"))
        await writer.drain()

    raw_origin.behaviours.update({"/late": late, "/victim": victim})
    edge = await start_edge(raw_origin.url)
    assert (await get(str(edge.make_url("/late"))))[2] == b"late"
    await asyncio.wait_for(sent.wait(), 5)
    await asyncio.wait_for(dropped.wait(), 5)  # the edge closed the connection the bytes came on
    for _ in range(2):
        status, headers, body = await get(str(edge.make_url("/victim")))
        assert (status, body) == (200, b"victim00")
        assert "X-Smuggled" not in headers


async def test_the_client_that_started_a_fill_leaving_during_early_hints_fails_nobody(
    raw_origin: RawOrigin, start_edge: EdgeFactory
) -> None:
    released = asyncio.Event()

    async def hints(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n")
        await writer.drain()
        await released.wait()
        writer.write(b"HTTP/1.1 103 Early Hints\r\nLink: </b.css>; rel=preload\r\n\r\n")
        await writer.drain()
        await asyncio.sleep(0.05)
        writer.write(answer(b"final-body"))
        await writer.drain()

    raw_origin.behaviours["/hints"] = hints
    edge = await start_edge(raw_origin.url)
    sock = socket.create_connection(("127.0.0.1", edge.port))
    sock.setblocking(False)
    loop = asyncio.get_running_loop()
    await loop.sock_sendall(sock, b"GET /hints HTTP/1.1\r\nHost: x\r\nAccept-Encoding: identity\r\n\r\n")
    assert (await asyncio.wait_for(loop.sock_recv(sock, 4096), 5)).startswith(b"HTTP/1.1 103")
    same = {"Accept-Encoding": "identity"}  # the variant A asked for: they share A's fill
    others = [asyncio.ensure_future(get(str(edge.make_url("/hints")), **same)) for _ in range(3)]
    cache = edge.runtime.cache
    assert cache is not None
    await until(lambda: cache.counters.requests >= 4, timeout=5, what="the others joined the fill")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()  # a reset, while the edge still has a 103 to relay to it
    await asyncio.sleep(0.05)
    released.set()
    answers = await asyncio.wait_for(asyncio.gather(*others), 10)
    assert [(status, body) for status, _, body in answers] == [(200, b"final-body")] * 3
    assert raw_origin.seen["/hints"] == 1


async def test_a_head_trickled_a_byte_at_a_time_is_cut_at_read_timeout(
    raw_origin: RawOrigin, start_edge: EdgeFactory
) -> None:
    async def drip(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        for byte in b"HTTP/1.1 200 OK\r\nX-Slow: " + b"x" * 200:
            writer.write(bytes([byte]))
            await writer.drain()
            await asyncio.sleep(0.1)

    async def hints(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        for _ in range(200):
            writer.write(b"HTTP/1.1 103 Early Hints\r\n\r\n")
            await writer.drain()
            await asyncio.sleep(0.1)

    raw_origin.behaviours.update({"/drip": drip, "/hint-flood": hints})
    edge = await start_edge(raw_origin.url, upstream={"read_timeout": 1.0})
    for path in ("/drip", "/hint-flood"):
        status, _, _ = await asyncio.wait_for(get(str(edge.make_url(path))), 8)
        assert status == 504, path


async def test_a_head_over_64_kib_is_a_502(raw_origin: RawOrigin, start_edge: EdgeFactory) -> None:
    async def big(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\nX-Big: " + b"y" * (100 * 1024) + b"\r\nContent-Length: 2\r\n\r\nok")
        await writer.drain()

    async def many(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\n" + b"X-N: 1\r\n" * 20_000 + b"Content-Length: 2\r\n\r\nok")
        await writer.drain()

    raw_origin.behaviours.update({"/big": big, "/many": many})
    edge = await start_edge(raw_origin.url)
    for path in ("/big", "/many"):
        status, _, _ = await get(str(edge.make_url(path)))
        assert status == 502, path


async def test_a_body_delimited_by_the_close_is_whole(raw_origin: RawOrigin, start_edge: EdgeFactory) -> None:
    async def closing(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\nCache-Control: max-age=300\r\n\r\n" + b"z" * 5000)
        await writer.drain()
        writer.close()

    raw_origin.behaviours["/closing"] = closing
    edge = await start_edge(raw_origin.url)
    first = await get(str(edge.make_url("/closing")))
    second = await get(str(edge.make_url("/closing")))
    assert (first[0], first[2], second[0], second[2]) == (200, b"z" * 5000, 200, b"z" * 5000)
    assert second[1]["X-Cache"] == "HIT"
    assert raw_origin.seen["/closing"] == 1


@pytest.mark.parametrize("status_line", [b"HTTP/1.1 101 Switching Protocols", b"HTTP/1.1 600 Odd", b"HTTP/1.1 999 X"])
async def test_a_status_a_get_cannot_get_is_a_502(
    raw_origin: RawOrigin, start_edge: EdgeFactory, status_line: bytes
) -> None:
    async def odd(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(status_line + b"\r\nContent-Length: 2\r\n\r\nok")
        await writer.drain()

    raw_origin.behaviours["/odd"] = odd
    edge = await start_edge(raw_origin.url)
    wire = await raw_exchange(edge.port, b"GET /odd HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert wire.startswith(b"HTTP/1.1 502"), wire[:200]


async def test_a_body_that_breaks_before_its_first_byte_is_a_502_not_a_cut(
    raw_origin: RawOrigin, start_edge: EdgeFactory
) -> None:
    """Nothing of a shared fill's response was sent yet (its head waits for the first stored
    bytes): the client can still be told why, and the next request asks the origin again.  (A
    response relayed unstored sends its head at once, as nginx does, so that streams start.)"""
    cache = "max-age=300"

    async def empty(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(f"HTTP/1.1 200 OK\r\nCache-Control: {cache}\r\nContent-Length: 100\r\n\r\n".encode())
        await writer.drain()
        writer.close()

    raw_origin.behaviours["/empty"] = empty
    edge = await start_edge(raw_origin.url)
    for attempt in (1, 2):
        wire = await raw_exchange(edge.port, b"GET /empty HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert wire.startswith(b"HTTP/1.1 502"), wire[:300]
        assert b"Content-Length: 100" not in wire
        assert raw_origin.seen["/empty"] == attempt
