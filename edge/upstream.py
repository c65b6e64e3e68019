"""Origin access: a keep-alive pool of HTTP/1.1 connections per worker, on httptools, errors mapped to
status hints, 1xx relayed.

Why not aiohttp's client, which served here before: on the miss path it cost more CPU than all the
cache work around it (a profile of 1 KiB misses put a quarter of the worker's time in
``ClientSession._request`` alone), and an intermediary needs things it hides — every interim 1xx
response (RFC 9110 §15.2), header lines exactly as received, and no invented request fields.  This is
the mirror image of the server front end: a parser whose callbacks only collect, flow control both
ways, one connection per request at a time, reused while the origin keeps it alive.

Rules:

- Only a bodiless GET/HEAD/OPTIONS is retried, once, and only when the connection closed before any
  byte of an answer arrived (a keep-alive connection the origin had just closed, usually; RFC 9110
  §9.2.2); nothing else is ever resent.
- ``connect_timeout`` bounds connecting; ``read_timeout`` bounds every silence of the origin, before
  the head (→ 504) and inside the body (→ the body is broken: the client's connection is cut).
- A response is reusable only when its body was read to the end and neither side said ``close``;
  answers to HEAD never are (httptools cannot be told a body is absent), nor are broken ones.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import socket
import ssl
import time
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol, cast

import httptools
from yarl import URL

from edge.config import UpstreamSettings
from edge.errors import OriginBodyBroken, OriginTimeout, OriginUnreachable
from edge.server.wire import chunk

InterimSink = Callable[[int, str, list[tuple[str, str]]], Awaitable[None]]

SAFE_RETRY_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
BODY_HIGH_WATER = 1024 * 1024  # origin body bytes read ahead of the consumer before reading pauses
BODY_LOW_WATER = 256 * 1024
MAX_HEAD_BYTES = 64 * 1024  # one response head (status line and fields), as nginx's "upstream sent too big header"
MAX_RELAYED_INTERIM = 16  # 1xx responses passed on to the client per request (103 Early Hints: one or two)
DNS_TTL_S = 60.0


def _expire(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_exception(TimeoutError())


def decode_raw_headers(raw: Sequence[tuple[bytes, bytes]]) -> list[tuple[str, str]]:
    """Header lines exactly as the peer sent them: order, case and repetition kept (latin-1 safe)."""
    return [(name.decode("latin-1"), value.decode("latin-1")) for name, value in raw]


class OriginRoute(Protocol):
    """Where a request goes: a site's origins (``edge.origins.OriginGroup``)."""

    name: str  # the site's
    async def send(self, request: OriginRequest, on_interim: InterimSink | None = None) -> OriginResponse: ...


@dataclass(frozen=True, slots=True)
class OriginRequest:
    """A request for one of a site's origins.  ``target`` is origin-form; ``host`` the ``Host`` to
    send (the client's, with ``preserve_host``) or None for the chosen origin's own authority;
    ``affinity`` what ``consistent_hash`` balancing hashes (the cache key)."""

    method: str
    target: str
    headers: list[tuple[str, str]]
    route: OriginRoute
    host: str | None = None
    body: AsyncIterable[bytes] | None = None
    affinity: str = ""


class _Failed(Exception):
    """The connection failed; ``before_response`` when not a byte of an answer had arrived."""

    def __init__(self, reason: str, before_response: bool) -> None:
        super().__init__(reason)
        self.before_response = before_response


@dataclass(slots=True)
class _Head:
    status: int
    reason: str
    headers: list[tuple[bytes, bytes]]
    keep_alive: bool
    content_length: int | None


class OriginConnection(asyncio.Protocol):
    """One connection to the origin, answering one request at a time."""

    def __init__(self, pool: OriginPool) -> None:
        self.pool = pool
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.closed = False
        self.idle_since = 0.0
        self.received_any = False
        self.heads: collections.deque[_Head] = collections.deque()
        self.body: collections.deque[bytes] = collections.deque()
        self.body_size = 0
        self.message_done = False
        self.failure: _Failed | None = None
        self.waiter: asyncio.Future[None] | None = None
        self.read_paused = False
        self.write_paused = False
        self.drained: asyncio.Future[None] | None = None
        self._reason = b""
        self._headers: list[tuple[bytes, bytes]] = []
        self._content_length: int | None = None
        self._chunked = False
        self._head_bytes = 0
        self._in_body = False
        self.in_use = False  # a request is outstanding: bytes on an idle connection are a protocol error
        self.lost: asyncio.Future[None] = self.loop.create_future()

    # -- asyncio.Protocol ----------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data: bytes) -> None:
        if not self.in_use:
            # RFC 9112 §9.3: responses pair with requests in order.  Bytes nobody asked for (an
            # origin answering twice) would answer the next request, for another URL: drop the
            # connection instead.
            self._fail("origin sent data on an idle connection", before=False)
            return
        self.received_any = True
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail("origin switched protocols", before=False)
        except httptools.HttpParserError as exc:
            self._fail(f"origin sent an invalid response: {exc}", before=False)
        self._wake()

    def eof_received(self) -> bool:
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if not self.lost.done():
            self.lost.set_result(None)
        self.pool.forget(self)
        if (not self.message_done and exc is None and self.failure is None and self._in_body
                and self._content_length is None and not self._chunked):  # fmt: skip
            self.message_done = True  # RFC 9112 §6.3 (8): a close-delimited body ends with the connection
        if not self.message_done:
            reason = f"origin closed the connection ({exc})" if exc else "origin closed the connection"
            self._fail(reason, before=not self.received_any)
        drained, self.drained = self.drained, None
        if drained is not None and not drained.done():
            drained.set_result(None)
        self._wake()

    def pause_writing(self) -> None:
        self.write_paused = True

    def resume_writing(self) -> None:
        self.write_paused = False
        drained, self.drained = self.drained, None
        if drained is not None and not drained.done():
            drained.set_result(None)

    # -- parser callbacks ----------------------------------------------------------------------
    def on_message_begin(self) -> None:
        if self.message_done:  # a second final response to one request: nothing of it is taken
            self._fail("origin sent more than one response to a request", before=False)
            raise _Failed("unsolicited response", False)
        self._reason = b""
        self._headers = []
        self._content_length = None
        self._chunked = False
        self._head_bytes = 0
        self._in_body = False

    def _count_head(self, size: int) -> None:
        self._head_bytes += size
        if self._head_bytes > MAX_HEAD_BYTES:
            self._fail(f"origin response head over {MAX_HEAD_BYTES // 1024} KiB", before=False)
            raise _Failed("response head too large", False)  # stops the parser (a callback error)

    def on_status(self, status: bytes) -> None:
        self._count_head(len(status) + 16)
        self._reason += status

    def on_header(self, name: bytes, value: bytes) -> None:
        if self._in_body:
            return  # trailer fields are not relayed
        self._count_head(len(name) + len(value) + 4)
        self._headers.append((name, value))
        lowered = name.lower()
        if lowered == b"content-length" and value.strip().isdigit():
            self._content_length = int(value)
        elif lowered == b"transfer-encoding":
            self._chunked = True  # chunked last, or the parser refused it

    def on_headers_complete(self) -> None:
        status = self.parser.get_status_code()
        self._in_body = status >= 200
        head = _Head(status, self._reason.decode("latin-1"), self._headers, self.parser.should_keep_alive(),
                     self._content_length)  # fmt: skip
        self.heads.append(head)

    def on_body(self, body: bytes) -> None:
        self.body.append(body)
        self.body_size += len(body)
        if self.body_size > BODY_HIGH_WATER and not self.read_paused and self.transport is not None:
            self.read_paused = True
            self.transport.pause_reading()

    def on_message_complete(self) -> None:
        if self._in_body:
            self.message_done = True

    # -- the requester's side --------------------------------------------------------------------
    def _fail(self, reason: str, *, before: bool) -> None:
        if self.failure is None:
            self.failure = _Failed(reason, before)
        if self.transport is not None:
            self.transport.close()

    def _wake(self) -> None:
        waiter, self.waiter = self.waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def _wait(self, seconds: float) -> None:
        """Until the parser made progress; TimeoutError after ``seconds`` of silence (a timer, not
        ``wait_for``: this runs for every response and every body chunk)."""
        waiter = self.waiter = self.loop.create_future()
        timer = self.loop.call_later(seconds, _expire, waiter)
        try:
            await waiter
        finally:
            timer.cancel()
            self.waiter = None

    def write(self, data: bytes) -> None:
        if self.transport is None or self.closed:
            raise _Failed("origin connection closed while sending the request", not self.received_any)
        self.transport.write(data)

    async def drain(self) -> None:
        if self.write_paused and not self.closed:
            self.drained = self.loop.create_future()
            await self.drained
        if self.closed:
            raise _Failed("origin connection closed while sending the request", not self.received_any)

    async def next_head(self, seconds: float) -> _Head:
        """The next response head, within ``seconds`` however the bytes trickle in."""
        deadline = self.loop.time() + seconds
        while not self.heads:
            if self.failure is not None:
                raise self.failure
            await self._wait(max(0.0, deadline - self.loop.time()))
        return self.heads.popleft()

    async def read(self, seconds: float) -> bytes:
        """The next body chunk; ``b""`` at the end of the message."""
        while not self.body:
            if self.message_done:
                return b""
            if self.failure is not None:
                raise OriginBodyBroken(f"origin body ended early: {self.failure}")
            try:
                await self._wait(seconds)
            except TimeoutError:
                raise OriginBodyBroken("origin body stalled") from None
        data = self.body.popleft()
        self.body_size -= len(data)
        if self.read_paused and self.body_size <= BODY_LOW_WATER and self.transport is not None and not self.closed:
            self.read_paused = False
            self.transport.resume_reading()
        return data


@dataclass(eq=False)
class OriginResponse:
    """The origin's answer: its head now, its body as it arrives (``read``/``iter_body``)."""

    status: int
    reason: str
    raw_headers: list[tuple[bytes, bytes]]
    content_length: int | None
    connection: OriginConnection
    reusable: bool
    read_timeout: float
    slot: asyncio.Semaphore
    released: bool = field(default=False)
    on_release: Callable[[], None] | None = field(default=None, repr=False)
    origin_label: str = ""  # which origin answered: its URL (access log, /origins)
    origin_name: str = ""  # ... and its name, which clients may see (Cache-Status fwd-origin)
    via_peer: str | None = None  # the peer (its inventory name) that answered, on a peer fill

    @property
    def at_eof(self) -> bool:
        conn = self.connection
        return conn.message_done and not conn.body

    async def read(self) -> bytes:
        return await self.connection.read(self.read_timeout)

    def release(self) -> None:
        """Done with it: back to the pool if the whole body was read and it may be reused, else closed."""
        if self.released:
            return
        self.released = True
        self.slot.release()
        if self.on_release is not None:
            self.on_release()
        conn = self.connection
        if self.reusable and self.at_eof and not conn.closed and conn.failure is None:
            conn.pool.put_back(conn)
        elif conn.transport is not None and not conn.closed:
            conn.transport.close()


async def iter_body(response: OriginResponse) -> AsyncIterator[bytes]:
    """The origin body as it arrives; a cut or stalled body raises instead of ending quietly."""
    while True:
        data = await response.read()
        if not data:
            return
        yield data


class OriginPool:
    """Keep-alive connections to one origin, per worker."""

    def __init__(self, origin: URL, settings: UpstreamSettings, tls: ssl.SSLContext | None = None) -> None:
        self.origin = origin
        self.settings = settings
        self.host = origin.host or "127.0.0.1"
        self.port = origin.port or (443 if origin.scheme == "https" else 80)
        self.authority = origin.raw_authority or self.host
        self.prefix = origin.raw_path.rstrip("/")  # an origin URL's path is prepended to every target
        if origin.scheme == "https":
            self.ssl: ssl.SSLContext | None = tls if tls is not None else ssl.create_default_context()
        else:
            self.ssl = None
        self.idle: list[OriginConnection] = []
        self.open = 0
        self._slots = asyncio.Semaphore(settings.pool_size)
        self._addresses: list[tuple[int, tuple[str, int]]] = []
        self._resolved_at = -DNS_TTL_S
        self.closed = False

    # -- connections ---------------------------------------------------------------------------
    async def _resolve(self) -> list[tuple[int, tuple[str, int]]]:
        now = time.monotonic()
        if not self._addresses or now - self._resolved_at > DNS_TTL_S:
            infos = await asyncio.get_running_loop().getaddrinfo(self.host, self.port, type=socket.SOCK_STREAM)
            self._addresses = [(int(family), (str(address[0]), int(address[1]))) for family, _, _, _, address in infos]
            self._resolved_at = now
        return self._addresses

    async def _connect(self) -> OriginConnection:
        loop = asyncio.get_running_loop()
        try:
            addresses = await asyncio.wait_for(self._resolve(), self.settings.connect_timeout)
            last: OSError | None = None
            for family, (host, port) in addresses:
                try:
                    _, protocol = await asyncio.wait_for(
                        loop.create_connection(
                            lambda: OriginConnection(self), host, port, family=family, ssl=self.ssl,
                            server_hostname=self.host if self.ssl else None,
                        ),
                        self.settings.connect_timeout,
                    )  # fmt: skip
                except OSError as exc:
                    last = exc
                    continue
                self.open += 1
                return protocol
        except TimeoutError:
            raise OriginTimeout("origin did not accept the connection in time") from None
        except OSError as exc:  # name resolution
            raise OriginUnreachable(f"cannot connect to origin: {exc.strerror or exc}") from exc
        raise OriginUnreachable(f"cannot connect to origin: {last.strerror if last and last.strerror else last}")

    def _take_idle(self) -> OriginConnection | None:
        keepalive = self.settings.keepalive_timeout
        now = time.monotonic()
        while self.idle:
            conn = self.idle.pop()
            if conn.closed or now - conn.idle_since > keepalive:
                if conn.transport is not None and not conn.closed:
                    conn.transport.close()
                continue
            return conn
        return None

    def put_back(self, conn: OriginConnection) -> None:
        if self.closed or self.settings.keepalive_timeout <= 0:
            if conn.transport is not None:
                conn.transport.close()
            return
        if conn.heads or conn.body:  # more than was asked for arrived: the stream cannot be trusted
            if conn.transport is not None:
                conn.transport.close()
            return
        conn.in_use = False
        conn.message_done = False
        conn.received_any = False
        conn.idle_since = time.monotonic()
        self.idle.append(conn)

    def forget(self, conn: OriginConnection) -> None:
        if conn in self.idle:
            self.idle.remove(conn)
        self.open = max(0, self.open - 1)

    async def close(self) -> None:
        """Close the idle connections and wait (briefly) until they are closed, so nothing leaks."""
        self.closed = True
        idle, self.idle = self.idle, []
        for conn in idle:
            if conn.transport is not None:
                conn.transport.close()
        pending = [conn.lost for conn in idle if not conn.lost.done()]
        if pending:
            await asyncio.wait(pending, timeout=1.0)

    async def probe(self, path: str, host: str | None, seconds: float) -> int:
        """An active health check: ``GET path`` on a fresh connection; the status, or raises
        OriginUnreachable / OriginTimeout.  Not counted against ``pool_size``."""

        async def check() -> int:
            reader, writer = await asyncio.open_connection(
                self.host, self.port, ssl=self.ssl, server_hostname=self.host if self.ssl else None
            )
            try:
                request = (f"GET {self.prefix}{path} HTTP/1.1\r\nHost: {host or self.authority}\r\n"
                           "User-Agent: edgecache-health\r\nConnection: close\r\n\r\n")  # fmt: skip
                writer.write(request.encode("latin-1", "replace"))
                line = await reader.readline()
                parts = line.split(b" ", 2)
                if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or not parts[1].isdigit():
                    raise OriginUnreachable(f"health check: not an HTTP response: {line[:60]!r}")
                return int(parts[1])
            finally:
                writer.close()
                with contextlib.suppress(OSError, ssl.SSLError, TimeoutError):
                    await asyncio.wait_for(writer.wait_closed(), 1.0)

        try:
            return await asyncio.wait_for(check(), seconds)
        except TimeoutError:
            raise OriginTimeout(f"health check: no answer within {seconds:g} s") from None
        except (OSError, ssl.SSLError) as exc:
            raise OriginUnreachable(f"health check: {getattr(exc, 'strerror', None) or exc}") from exc

    # -- requests --------------------------------------------------------------------------------
    async def request(self, request: OriginRequest, on_interim: InterimSink | None = None) -> OriginResponse:
        """Send ``request``; return once the final response head arrived (interim ones are relayed)."""
        retriable = request.method in SAFE_RETRY_METHODS and request.body is None
        await self._slots.acquire()  # at most pool_size connections in use; released with the response
        try:
            for attempt in range(2):
                conn = self._take_idle()
                if conn is None:
                    conn = await self._connect()
                try:
                    return await self._exchange(conn, request, on_interim)
                except _Failed as failed:
                    if conn.transport is not None:
                        conn.transport.close()
                    if failed.before_response and retriable and attempt == 0:
                        continue  # closed before answering (often a stale keep-alive one): once more, fresh
                    raise OriginUnreachable(str(failed), before_response=failed.before_response) from None
                except TimeoutError:
                    if conn.transport is not None:
                        conn.transport.close()
                    raise OriginTimeout("origin did not answer in time") from None
                except BaseException:
                    if conn.transport is not None:
                        conn.transport.close()
                    raise
            raise AssertionError("unreachable")  # pragma: no cover
        except BaseException:
            self._slots.release()
            raise

    async def _exchange(
        self, conn: OriginConnection, request: OriginRequest, on_interim: InterimSink | None
    ) -> OriginResponse:
        conn.message_done = False
        conn.in_use = True
        target = self.prefix + request.target if self.prefix else request.target
        lines = [f"{request.method} {target} HTTP/1.1\r\n", f"Host: {request.host or self.authority}\r\n"]
        has_length = False
        for name, value in request.headers:
            lowered = name.lower()
            if lowered == "content-length":
                has_length = True
            lines.append(f"{name}: {value}\r\n")
        chunked = request.body is not None and not has_length
        if chunked:
            lines.append("Transfer-Encoding: chunked\r\n")
        lines.append("\r\n")
        conn.write("".join(lines).encode("latin-1", "replace"))
        if request.body is not None:
            await self._send_body(conn, request.body, chunked)
        read_timeout = self.settings.read_timeout
        # The whole head, interim responses included, within read_timeout: an origin trickling a
        # byte or a 103 at a time would otherwise hold its clients for ever.
        deadline = conn.loop.time() + read_timeout
        relayed = 0
        while True:
            head = await conn.next_head(max(0.0, deadline - conn.loop.time()))
            if head.status >= 200 or head.status == 101:
                break
            if on_interim is not None and head.status != 100 and relayed < MAX_RELAYED_INTERIM:
                relayed += 1
                await on_interim(head.status, head.reason, decode_raw_headers(head.headers))
        if head.status == 101 or head.status > 599:  # never asked for (Upgrade is not forwarded); not HTTP
            raise _Failed(f"origin answered with status {head.status}", False)
        reusable = head.keep_alive and request.method != "HEAD" and head.status != 101
        if request.method == "HEAD" or head.status in (204, 304):
            conn.message_done = True  # no body follows (httptools does not know about HEAD)
        return OriginResponse(head.status, head.reason, head.headers, head.content_length, conn, reusable,
                              read_timeout, self._slots)  # fmt: skip

    async def _send_body(self, conn: OriginConnection, body: AsyncIterable[bytes], chunked: bool) -> None:
        async for data in body:
            conn.write(chunk(data) if chunked else data)
            await conn.drain()
        if chunked:
            conn.write(b"0\r\n\r\n")


async def send_to_origin(request: OriginRequest, on_interim: InterimSink | None = None) -> OriginResponse:
    """Send ``request`` to its site's origins and return the response once its head arrived; raises
    :class:`OriginUnreachable` (→ 502), :class:`OriginTimeout` (→ 504) or ``OriginsDown`` (→ 503)."""
    return await request.route.send(request, on_interim)
