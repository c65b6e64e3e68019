"""A deliberately dumb HTTP/1.1 client on raw asyncio sockets.

The stub's job is to put exact (and sometimes broken) bytes on the wire; a real HTTP client would
normalise, merge or reject them, so these tests read the bytes themselves.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass
class RawResponse:
    status: int
    reason: str
    headers: list[tuple[str, str]]
    body: bytes
    complete: bool  # the framing was satisfied (all declared bytes / chunked terminator seen)
    raw_head: bytes

    def get(self, name: str) -> str | None:
        values = self.get_all(name)
        return values[0] if values else None

    def get_all(self, name: str) -> list[str]:
        return [v for n, v in self.headers if n.lower() == name.lower()]


@dataclass
class Exchange:
    data: bytes
    reset: bool  # the connection ended with ECONNRESET rather than a clean EOF


def build_request(
    method: str,
    target: str,
    headers: Sequence[tuple[str, str]] = (),
    body: bytes = b"",
    *,
    version: str = "HTTP/1.1",
    close: bool = True,
) -> bytes:
    lines = [f"{method} {target} {version}", "Host: 127.0.0.1"]
    lines += [f"{n}: {v}" for n, v in headers]
    if body:
        lines.append(f"Content-Length: {len(body)}")
    if close:
        lines.append("Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


async def read_all(reader: asyncio.StreamReader, timeout: float = 10.0) -> Exchange:
    """Read until EOF or reset."""
    chunks: list[bytes] = []
    reset = False
    async with asyncio.timeout(timeout):
        while True:
            try:
                data = await reader.read(65536)
            except ConnectionResetError:
                reset = True
                break
            if not data:
                break
            chunks.append(data)
    return Exchange(b"".join(chunks), reset)


async def exchange(port: int, request: bytes, timeout: float = 10.0) -> Exchange:
    """Send *request* on a fresh connection and read everything until the server ends it."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(request)
        await writer.drain()
        return await read_all(reader, timeout)
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


async def read_response(reader: asyncio.StreamReader, *, head: bool = False) -> RawResponse:
    """Read exactly one final response from a kept-alive connection (1xx are skipped)."""
    while True:
        raw_head = await reader.readuntil(b"\r\n\r\n")
        status, reason, headers = _parse_head(raw_head)
        if not 100 <= status < 200:
            break
    if head or status in (204, 304):
        return RawResponse(status, reason, headers, b"", True, raw_head)
    length = _content_length(headers)
    assert length is not None, "read_response needs Content-Length framing"
    body = await reader.readexactly(length)
    return RawResponse(status, reason, headers, body, True, raw_head)


def _parse_head(raw_head: bytes) -> tuple[int, str, list[tuple[str, str]]]:
    lines = raw_head.decode("latin-1").split("\r\n")
    _version, status, *reason = lines[0].split(" ", 2)
    headers: list[tuple[str, str]] = []
    for line in lines[1:]:
        if not line:
            continue
        name, _, value = line.partition(":")
        headers.append((name, value.strip()))
    return int(status), (reason[0] if reason else ""), headers


def _content_length(headers: list[tuple[str, str]]) -> int | None:
    for name, value in headers:
        if name.lower() == "content-length":
            return int(value)
    return None


def _dechunk(data: bytes) -> tuple[bytes, bool, bytes]:
    """Decode chunked coding; returns (body, saw_terminator, bytes after the message)."""
    body: list[bytes] = []
    pos = 0
    while True:
        eol = data.find(b"\r\n", pos)
        if eol < 0:
            return b"".join(body), False, b""
        size = int(data[pos:eol].split(b";")[0], 16)
        start = eol + 2
        if size == 0:
            end = data.find(b"\r\n", start)  # no trailers in these tests
            return b"".join(body), end >= 0, data[end + 2 :] if end >= 0 else b""
        chunk = data[start : start + size]
        body.append(chunk)
        if len(chunk) < size or data[start + size : start + size + 2] != b"\r\n":
            return b"".join(body), False, b""
        pos = start + size + 2


def parse_responses(data: bytes, *, head: bool = False) -> list[RawResponse]:
    """Split a captured byte stream into responses (interim 1xx ones included, in order)."""
    responses: list[RawResponse] = []
    while data:
        end = data.find(b"\r\n\r\n")
        assert end >= 0, f"incomplete head: {data[:200]!r}"
        raw_head, data = data[: end + 4], data[end + 4 :]
        status, reason, headers = _parse_head(raw_head)
        if 100 <= status < 200 or status in (204, 304) or head:
            responses.append(RawResponse(status, reason, headers, b"", True, raw_head))
            continue
        te = ",".join(v for n, v in headers if n.lower() == "transfer-encoding")
        length = _content_length(headers)
        if "chunked" in te.lower():
            body, complete, data = _dechunk(data)
        elif length is not None:
            body, data = data[:length], data[length:]
            complete = len(body) == length
        else:
            body, data, complete = data, b"", True
        responses.append(RawResponse(status, reason, headers, body, complete, raw_head))
        if not complete:
            break
    return responses


def final(responses: list[RawResponse]) -> RawResponse:
    """The first non-1xx response."""
    return next(r for r in responses if not 100 <= r.status < 200)


def split_head(data: bytes) -> tuple[RawResponse, bytes]:
    """The first response head (no body parsing) and every byte after it, for mis-framed replies."""
    end = data.find(b"\r\n\r\n")
    assert end >= 0, f"incomplete head: {data[:200]!r}"
    raw_head = data[: end + 4]
    status, reason, headers = _parse_head(raw_head)
    return RawResponse(status, reason, headers, b"", False, raw_head), data[end + 4 :]
