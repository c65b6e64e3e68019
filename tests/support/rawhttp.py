"""HTTP/1.1 on raw sockets: send exact bytes, read exact answers (for malformed and hostile input)."""

from __future__ import annotations

import asyncio
import contextlib
import re
from dataclasses import dataclass

STATUS_LINE = re.compile(rb"HTTP/1\.[01] ([1-5][0-9][0-9]) [^\r\n]*\r\n")


@dataclass
class RawResponse:
    status: int
    headers: list[tuple[str, str]]
    body: bytes

    def header(self, name: str) -> str | None:
        for key, value in self.headers:
            if key.lower() == name.lower():
                return value
        return None


def parse_responses(wire: bytes, head_only: bool = False) -> list[RawResponse]:
    """Every complete response in ``wire`` (Content-Length or chunked framing); raises on malformed ones."""
    responses: list[RawResponse] = []
    rest = wire
    while rest:
        match = STATUS_LINE.match(rest)
        if match is None:
            raise ValueError(f"not a status line: {rest[:80]!r}")
        end = rest.index(b"\r\n\r\n")
        lines = rest[match.end() : end].split(b"\r\n") if end > match.end() else []
        headers = []
        for line in lines:
            name, sep, value = line.partition(b":")
            if not sep or not name or name != name.strip():
                raise ValueError(f"malformed header line {line!r}")
            headers.append((name.decode("latin-1"), value.strip().decode("latin-1")))
        rest = rest[end + 4 :]
        status = int(match.group(1))
        response = RawResponse(status, headers, b"")
        if head_only or status in (204, 304) or 100 <= status < 200:
            responses.append(response)
            continue
        length = response.header("content-length")
        if length is not None:
            size = int(length)
            if len(rest) < size:
                raise ValueError("truncated body")
            response.body, rest = rest[:size], rest[size:]
        elif (response.header("transfer-encoding") or "").lower() == "chunked":
            body = bytearray()
            while True:
                line_end = rest.index(b"\r\n")
                size = int(rest[:line_end].split(b";")[0], 16)
                rest = rest[line_end + 2 :]
                if size == 0:
                    rest = rest[rest.index(b"\r\n") + 2 :]
                    break
                body += rest[:size]
                rest = rest[size + 2 :]
            response.body = bytes(body)
        else:
            response.body, rest = rest, b""
        responses.append(response)
    return responses


async def exchange(
    port: int, payload: bytes, *, timeout: float = 5.0, half_close: bool = False
) -> tuple[bytes, bool]:
    """Send ``payload`` (then half-close), read until the server closes: (wire, closed_in_time)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    chunks: list[bytes] = []
    closed = False
    try:
        writer.write(payload)
        await writer.drain()
        if half_close and writer.can_write_eof():
            with contextlib.suppress(OSError):  # the server already closed (a refusal at once): read it
                writer.write_eof()
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                break
            chunk = await asyncio.wait_for(reader.read(65536), remaining)
            if not chunk:
                closed = True
                break
            chunks.append(chunk)
    except TimeoutError:
        closed = False
    except (ConnectionResetError, BrokenPipeError):
        closed = True  # reset by the server: a close, only a ruder one
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
    return b"".join(chunks), closed
