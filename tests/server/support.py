"""Driving :class:`HttpProtocol` by feeding bytes: a transport that records what was written."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from edge.server.exchange import Exchange, RequestHead
from edge.server.protocol import Connections, HttpProtocol, ServerLimits


class FakeSocket:
    family = 2

    def setsockopt(self, *args: Any) -> None:
        pass

    def fileno(self) -> int:
        return -1


class RecordingTransport(asyncio.Transport):
    """Enough of a transport for the protocol: writes are recorded, close/abort remembered."""

    def __init__(self, high_water: int = 1 << 30) -> None:
        super().__init__()
        self.output = bytearray()
        self.closed = False
        self.aborted = False
        self.reading = True
        self.protocol: HttpProtocol | None = None
        self.high_water = high_water
        self.buffered = 0

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("192.0.2.10", 50000), "socket": FakeSocket()}.get(name, default)

    def write(self, data: bytes | bytearray | memoryview) -> None:  # type: ignore[override]
        assert not self.closed, "write after close"
        self.output += data
        self.buffered += len(data)
        if self.buffered > self.high_water and self.protocol is not None and not self.protocol.flow.write_paused:
            self.protocol.pause_writing()

    def writelines(self, chunks: Any) -> None:
        for data in chunks:
            self.write(data)

    def drain_client(self) -> None:
        """The client read everything."""
        self.buffered = 0
        if self.protocol is not None and self.protocol.flow.write_paused:
            self.protocol.resume_writing()

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            if self.protocol is not None:
                asyncio.get_running_loop().call_soon(self.protocol.connection_lost, None)

    def abort(self) -> None:
        self.aborted = True
        self.close()

    def is_closing(self) -> bool:
        return self.closed

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        pass

    def get_write_buffer_size(self) -> int:
        return self.buffered


FAST_BODY = b"fast!"
FAST_RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n" + FAST_BODY


class EchoService:
    """``/fast`` answers from ``fast``; everything else is echoed by ``handle`` (method, target, body)."""

    slow_headers = frozenset({b"x-slow"})

    def __init__(self) -> None:
        self.handled: list[str] = []
        self.refusals: list[tuple[int, str]] = []
        self.completed_count = 0
        self.gate: asyncio.Event | None = None

    def fast(self, head: RequestHead) -> Sequence[bytes] | None:
        if head.raw_target == b"/fast":
            self.handled.append("fast")
            return [FAST_RESPONSE if head.keep_alive else FAST_RESPONSE.replace(b"OK\r\n", b"OK\r\nConnection: close\r\n")]
        return None

    async def handle(self, exchange: Exchange) -> None:
        head = exchange.head
        self.handled.append(f"{head.method} {head.target}")
        if self.gate is not None:
            await self.gate.wait()
        body = b""
        async for chunk in exchange.body_chunks():
            body += chunk
        if head.target == "/stream":
            await exchange.start(200, headers=[("X-Kind", "stream")])
            for part in (b"one", b"two", b"three"):
                await exchange.write(part)
            await exchange.end()
            return
        if head.target == "/boom":
            raise RuntimeError("handler bug")
        text = f"{head.method} {head.target} {len(body)}".encode() + b" " + body
        await exchange.respond(200, [("Content-Type", "text/plain")], text)

    def completed(self, exchange: Exchange) -> None:
        self.completed_count += 1

    def refused(self, peer: str | None, status: int, reason: str, request: str) -> None:
        self.refusals.append((status, reason))


def connect(service: EchoService | None = None, limits: ServerLimits | None = None, high_water: int = 1 << 30
            ) -> tuple[HttpProtocol, RecordingTransport, EchoService]:  # fmt: skip
    service = service or EchoService()
    loop = asyncio.get_running_loop()
    protocol = HttpProtocol(service, Connections(limits or ServerLimits()), loop)
    transport = RecordingTransport(high_water)
    transport.protocol = protocol
    protocol.connection_made(transport)
    return protocol, transport, service


async def settle(rounds: int = 20) -> None:
    """Let the handler tasks run (they only await each other and the fake transport)."""
    for _ in range(rounds):
        await asyncio.sleep(0)
