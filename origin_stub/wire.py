"""Putting exact bytes on the wire from inside aiohttp.

The stub exists to show the edge what real (and broken) origins send, so it must not let aiohttp
tidy its responses: aiohttp adds ``Server``/``Content-Type``/``Connection`` headers, clips the body
at ``Content-Length`` and appends the chunked terminator. :class:`ExactResponse` switches all of
that off, and :func:`stream_body` does the framing (and the deliberate mis-framing) itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import socket
import struct
import termios
from collections.abc import Iterable, Sequence
from http import HTTPStatus
from typing import Literal

from aiohttp import web
from aiohttp.http import HttpVersion11
from multidict import CIMultiDict

__all__ = [
    "ExactResponse",
    "Fault",
    "frame_chunk",
    "reason_phrase",
    "reset_connection",
    "send_early_hints",
    "stream_body",
]

Fault = Literal["reset", "short", "long"]

HeaderPairs = Sequence[tuple[str, str]]

_CHUNKED_EOF = b"0\r\n\r\n"
# How long a "reset" fault waits for the peer to acknowledge the bytes already sent. Without the
# wait, the RST could overtake them and the client would see less than "about half" the body.
_RESET_FLUSH_TIMEOUT = 5.0


def reason_phrase(status: int) -> str:
    """The standard reason phrase, or ``Unknown`` for codes http.HTTPStatus does not know."""
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Unknown"


class ExactResponse(web.StreamResponse):
    """A response whose status line and header block are exactly the pairs it was given.

    Repeated names stay separate lines, in order, spelled as given. The body is written raw: the
    caller frames it (see :func:`stream_body`), so it can also get the framing wrong on purpose.
    """

    def __init__(self, status: int, headers: HeaderPairs, *, keep_alive: bool = True) -> None:
        super().__init__(status=status, reason=reason_phrase(status), headers=CIMultiDict(headers))
        if not keep_alive:
            self.force_close()

    async def _prepare_headers(self) -> None:
        # Deliberately not calling super(): it would add headers and arm the payload writer's
        # Content-Length clipping / chunked encoding. Only the keep-alive decision is kept.
        request = self._req
        assert request is not None
        if self._keep_alive is None:
            self._keep_alive = request.keep_alive


def frame_chunk(data: bytes) -> bytes:
    """One chunk of the chunked transfer coding (RFC 9112 7.1)."""
    return b"%x\r\n%b\r\n" % (len(data), data)


def send_early_hints(request: web.BaseRequest, headers: HeaderPairs) -> None:
    """Write one ``103 Early Hints`` interim response straight to the socket.

    aiohttp has no API for interim responses; since nothing of the final response has been
    written yet, raw bytes on the transport land in the right place. HTTP/1.0 clients cannot
    receive 1xx responses (RFC 9110 15.2), so they get none.
    """
    transport = request.transport
    if request.version < HttpVersion11 or transport is None or transport.is_closing():
        return
    lines = "".join(f"{name}: {value}\r\n" for name, value in headers)
    transport.write(f"HTTP/1.1 103 Early Hints\r\n{lines}\r\n".encode())


def _unacked_bytes(sock: socket.socket) -> int:
    """Bytes the kernel still holds for the peer (Linux SIOCOUTQ); 0 where unknown."""
    request = getattr(termios, "TIOCOUTQ", None)
    if request is None:
        return 0
    try:
        raw = fcntl.ioctl(sock.fileno(), request, struct.pack("i", 0))
    except OSError:
        return 0
    value: int = struct.unpack("i", raw)[0]
    return value


async def reset_connection(request: web.BaseRequest) -> None:
    """Abort the TCP connection with an RST once what was already written has reached the peer.

    SO_LINGER 0 makes close() send RST instead of FIN, which is what a crashing origin looks like.
    We first wait (bounded) for the asyncio buffer and the kernel send queue to drain, because an
    RST discards unsent data and the client is meant to see the partial body before the reset.
    """
    transport = request.transport
    if transport is None or transport.is_closing():
        return
    loop = asyncio.get_running_loop()
    deadline = loop.time() + _RESET_FLUSH_TIMEOUT
    sock = transport.get_extra_info("socket")
    while loop.time() < deadline and not transport.is_closing():
        pending = transport.get_write_buffer_size()
        if pending == 0 and sock is not None:
            pending = _unacked_bytes(sock)
        if pending == 0:
            break
        await asyncio.sleep(0.002)
    if transport.is_closing():
        return
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()


async def stream_body(
    request: web.BaseRequest,
    response: ExactResponse,
    chunks: Iterable[bytes],
    *,
    length: int,
    chunked: bool,
    chunk_delay: float = 0.0,
    fault: Fault | None = None,
    overflow: Iterable[bytes] = (),
) -> None:
    """Write a prepared response's body, framed (or broken) as asked.

    - ``reset``: about half of *length* bytes, then an RST (:func:`reset_connection`);
    - ``short``: about half, then stop; the caller made the response ``keep_alive=False`` so
      aiohttp closes the connection (FIN) right after, with the terminator/rest never sent;
    - ``long``: the whole body, then the *overflow* bytes past its declared end.

    *chunk_delay* seconds pass between chunks (not before the first). A client that goes away
    mid-body just ends the response: there is nobody left to tell.
    """
    limit = length // 2 if fault in ("reset", "short") else None
    sent = 0
    try:
        for index, chunk in enumerate(chunks):
            if limit is not None:
                if sent >= limit:
                    break
                chunk = chunk[: limit - sent]
            if index and chunk_delay > 0:
                await asyncio.sleep(chunk_delay)
            if chunk:
                await response.write(frame_chunk(chunk) if chunked else chunk)
                sent += len(chunk)
        if fault == "reset":
            await reset_connection(request)
            return
        if fault == "short":
            return
        if chunked:
            await response.write(_CHUNKED_EOF)
        for extra in overflow:
            await response.write(extra)
    except ConnectionError:
        response.force_close()
