"""Bytes on the wire: status lines, header blocks, chunked framing, the cached ``Date`` field.

Everything here is precomputed or memoised, because the hit path pays for every allocation: a
status line is a table lookup, ``Date`` is re-encoded once a second, error answers are short texts
with ``Cache-Control: no-store`` and a reason a person can read.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from email.utils import formatdate
from http import HTTPStatus

# RFC 9110 §15: the reason phrase is informational; ours are the standard ones.
STATUS_LINES: dict[int, bytes] = {
    status.value: f"HTTP/1.1 {status.value} {status.phrase}\r\n".encode("latin-1") for status in HTTPStatus
}
REASONS: dict[int, str] = {status.value: status.phrase for status in HTTPStatus}

LAST_CHUNK = b"0\r\n\r\n"
CRLF = b"\r\n"


def status_line(status: int, reason: str | None = None) -> bytes:
    """``HTTP/1.1 <status> <reason>\\r\\n``; a relayed reason phrase is kept when it is safe to send."""
    if not reason:
        line = STATUS_LINES.get(status)
        if line is not None:
            return line
        return b"HTTP/1.1 %d \r\n" % status
    if reason == REASONS.get(status):
        return STATUS_LINES[status]
    cleaned = "".join(c for c in reason if c == "\t" or " " <= c <= "~" or "\x80" <= c <= "\xff")
    return b"HTTP/1.1 %d %s\r\n" % (status, cleaned.encode("latin-1"))


def header_block(headers: Iterable[tuple[str, str]]) -> bytes:
    """``Name: value\\r\\n`` lines, latin-1 (RFC 9110 §5.5: field values are octets); no final CRLF.

    Values come from the origin, the store or our own code, never from a client unchecked; CR, LF
    and NUL are still removed so no value can ever split into a second line.
    """
    parts = []
    for name, value in headers:
        if "\r" in value or "\n" in value or "\x00" in value:
            value = value.replace("\r", " ").replace("\n", " ").replace("\x00", " ")
        parts.append(f"{name}: {value}\r\n")
    return "".join(parts).encode("latin-1", "replace")


def chunk(data: bytes | bytearray | memoryview) -> bytes:
    """One chunk of a chunked body (RFC 9112 §7.1)."""
    return b"%x\r\n%s\r\n" % (len(data), data)


class HttpDate:
    """The ``Date`` field line (RFC 9110 §6.6.1), re-encoded at most once a second."""

    __slots__ = ("_line", "_second", "_value")

    def __init__(self) -> None:
        self._second = -1
        self._line = b""
        self._value = ""

    def line(self, now: float | None = None) -> bytes:
        second = int(time.time() if now is None else now)
        if second != self._second:
            self._second = second
            self._value = formatdate(second, usegmt=True)
            self._line = b"Date: " + self._value.encode("ascii") + b"\r\n"
        return self._line

    def value(self, now: float | None = None) -> str:
        self.line(now)
        return self._value


http_date = HttpDate()


def error_response(status: int, reason: str, *, close: bool, extra: Iterable[tuple[str, str]] = ()) -> bytes:
    """A complete plain-text error answer: the reason for a person, never stored by anyone."""
    body = (reason.strip() + "\n").encode("utf-8", "replace")
    head = [
        ("Content-Type", "text/plain; charset=utf-8"),
        ("Cache-Control", "no-store"),
        *extra,
        ("Content-Length", str(len(body))),
    ]
    if close:
        head.append(("Connection", "close"))
    return status_line(status) + http_date.line() + header_block(head) + CRLF + body
