"""The HTTP/1.1 server protocol of the edge and the router (in the spirit of uvicorn's httptools_impl).

Parser callbacks only collect (method, target, header lines, body chunks) and check limits as
they go.  The *connection cycle* lives here: keep-alive, pipelined requests answered strictly in
order, half-closed clients answered before the close, timeouts for slow clients (a sweeper, not a
timer per request), backpressure both ways, one path for every refusal (400/408/413/414/431/501/505
with a reason, then close).  The *request cycle* is the service's: for a request whose answer is
known in advance, ``service.fast(head)`` returns the complete response and it is written at once,
synchronously, from the parser callback — no task, no per-request objects beyond the head; anything
else becomes an :class:`~edge.server.exchange.Exchange` run by ``service.handle`` in a task.

Rules, as h11 states them at the top of its state machine:

- Only HTTP/1.0 and HTTP/1.1 are served; other versions get 505 and the connection is closed.
- llhttp is strict: conflicting ``Content-Length``/``Transfer-Encoding``, obs-fold, bad chunk sizes
  and bad tokens are errors (400); a transfer coding other than ``chunked`` is not implemented (501).
- A request is refused before it reaches the service when its line (414), a header line, the
  number of header lines or their total size (431), its body (413) or its ``Host`` (400, RFC 9112
  §3.2) is out of bounds.  Nothing of a refused request is ever forwarded.
- Timeouts: the head must arrive within ``header_timeout`` of its first byte (or of the connection,
  for the first request), a body must not pause longer than ``body_timeout``, an idle keep-alive
  connection lives ``keepalive_timeout``, a client that reads nothing for ``send_timeout`` is cut.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import re
import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol, cast

import httptools

from edge.http.forwarding import host_field_problem, target_authority
from edge.server.exchange import Exchange, RequestHead
from edge.server.flow import ClientGone, FlowControl
from edge.server.wire import error_response

log = logging.getLogger("edge.server")

MAX_PIPELINED = 64  # requests parsed ahead of the one being answered before reading pauses
SWEEP_INTERVAL = 0.5
_HTTP09_LINE = re.compile(rb"^[A-Za-z]+ [^ \r\n]+\r?\n")
_TOKEN_METHOD_LINE = re.compile(rb"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+ [^ \r\n]+ HTTP/1\.[01]\r\n")

IDLE, HEAD, BODY, BUSY = range(4)


@dataclass(frozen=True, slots=True)
class ServerLimits:
    """Bounds on what one client may send (``[limits]`` in the edge and router configuration)."""

    max_line_size: int = 8190
    max_field_size: int = 8190
    max_headers: int = 128
    max_header_bytes: int = 64 * 1024
    max_body_size: int = 1024 * 1024 * 1024
    header_timeout: float = 10.0
    body_timeout: float = 60.0
    keepalive_timeout: float = 75.0
    send_timeout: float = 60.0


class Service(Protocol):
    """What a listener serves: the edge's cache, the router's redirects."""

    slow_headers: frozenset[bytes]  # lower-cased names that rule out ``fast`` for a request

    def fast(self, head: RequestHead) -> Sequence[bytes] | None:
        """The complete response (buffers to write in order) if it is known now, else None."""
        ...

    async def handle(self, exchange: Exchange) -> None:
        """Answer one request (the general path)."""
        ...

    def completed(self, exchange: Exchange) -> None:
        """The exchange is over (access log, counters)."""
        ...

    def refused(self, peer: str | None, status: int, reason: str, request: str) -> None:
        """The front end refused a request before the service saw it (logs, counters)."""
        ...


class _Refused(Exception):
    """Raised from a parser callback: stop parsing, answer ``status`` with ``reason``, close."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


class ConnectionGate(Protocol):
    """Who may open a connection (``edge.protection``): refused ones are closed at once."""

    def admit(self, peer: str | None) -> bool: ...

    def release(self, peer: str | None) -> None: ...


class Connections:
    """Every open connection of one listener group: timeouts, graceful shutdown, counts."""

    def __init__(self, limits: ServerLimits, gate: ConnectionGate | None = None) -> None:
        self.limits = limits
        self.gate = gate  # protection: per-address and total connection caps
        self.refused = 0
        self.open: set[HttpProtocol] = set()
        self.accepted = 0
        self.closing = False
        self._sweeper: asyncio.Task[None] | None = None

    def add(self, connection: HttpProtocol) -> None:
        self.open.add(connection)
        self.accepted += 1
        if self._sweeper is None:
            self._sweeper = asyncio.get_running_loop().create_task(self._sweep())

    def discard(self, connection: HttpProtocol) -> None:
        self.open.discard(connection)

    async def _sweep(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(SWEEP_INTERVAL)
            now = loop.time()
            for connection in list(self.open):
                connection.check_deadline(now)

    async def shutdown(self, grace: float) -> None:
        """Stop keep-alive, close idle connections, wait ``grace`` seconds for busy ones, cut the rest."""
        self.closing = True
        for connection in list(self.open):
            connection.shut_down()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace
        while self.open and loop.time() < deadline:  # noqa: ASYNC110 - connections close on their own schedule
            await asyncio.sleep(0.05)
        for connection in list(self.open):
            connection.abort()
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None


class HttpProtocol(asyncio.Protocol):
    """One client connection."""

    def __init__(self, service: Service, connections: Connections, loop: asyncio.AbstractEventLoop) -> None:
        self.service = service
        self.connections = connections
        self.limits = connections.limits
        self.loop = loop
        self.slow_headers = service.slow_headers
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport = None  # type: ignore[assignment]
        self.flow: FlowControl = None  # type: ignore[assignment]
        self.peer: str | None = None
        self.gated = False  # counted by the connection gate: released when it closes
        self.scheme = "http"
        self.tls = False
        self.shutting_down = False
        self.closed = False
        self.read_eof = False
        self.phase = IDLE
        self.deadline = float("inf")
        self.stalled_since = 0.0
        self.requests = 0
        # The request being parsed
        self._url = b""
        self._headers: list[tuple[bytes, bytes]] = []
        self._header_bytes = 0
        self._head_data = 0
        self._host: bytes | None = None
        self._hosts = 0
        self._fast = True
        self._user_agent: bytes | None = None
        self._referer: bytes | None = None
        self._expect: bytes | None = None
        self._content_length = -1
        self._chunked = False
        self._started = 0.0
        self._in_trailers = False
        self._body_size = 0
        # The request cycle
        self.parsing: Exchange | None = None
        self.active: Exchange | None = None
        self.pending: collections.deque[Exchange | RequestHead] = collections.deque()
        self._refusal: bytes | None = None
        self._complete_head: RequestHead | None = None
        self._head_chunks: list[bytes] = []
        self._completed_in_feed = 0

    # -- connection --------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's transports are not subclasses
        self.flow = FlowControl(self.transport)
        peername = transport.get_extra_info("peername")
        self.peer = peername[0] if isinstance(peername, tuple) else None
        gate = self.connections.gate
        if gate is not None:
            if not gate.admit(self.peer):
                self.connections.refused += 1
                self.closed = True
                self.transport.abort()  # before a byte is read: the cheapest refusal there is
                return
            self.gated = True
        self.tls = transport.get_extra_info("sslcontext") is not None
        self.scheme = "https" if self.tls else "http"
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.connections.add(self)
        self.deadline = self.loop.time() + self.limits.header_timeout
        if self.connections.closing:
            self.shut_down()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.gated:
            self.gated = False
            gate = self.connections.gate
            assert gate is not None
            gate.release(self.peer)
        self.flow.lost()
        for exchange in (self.parsing, *self.pending):
            if isinstance(exchange, Exchange) and exchange.body is not None and not exchange.body.complete:
                exchange.body.fail("client closed the connection during the request body")
        self.pending.clear()
        self.connections.discard(self)

    def eof_received(self) -> bool:
        """Half-close: answer what was received, then close (``True`` keeps the write side open)."""
        self.read_eof = True
        if self.parsing is not None and self.parsing.body is not None and not self.parsing.body.complete:
            self.parsing.body.fail("client stopped sending in the middle of the request body")
            if self.parsing in self.pending:
                self.pending.remove(self.parsing)
        if self.active is None and not self.pending:
            self._close()
        return True

    def pause_writing(self) -> None:
        self.flow.pause_writing()
        self.stalled_since = self.loop.time()

    def resume_writing(self) -> None:
        self.flow.resume_writing()
        if self.active is None and not self.closed:
            self._next()

    def data_received(self, data: bytes) -> None:
        if self.closed or self._refusal is not None:
            return
        in_head = self.phase == HEAD
        self._completed_in_feed = 0
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade as upgrade:
            self._after_upgrade(data, upgrade)
        except httptools.HttpParserCallbackError as exc:
            cause = exc.__context__
            if isinstance(cause, _Refused):
                self.refuse(cause.status, cause.reason)
            else:
                log.error("parser callback failed", exc_info=cause or exc)
                self.refuse(500, "internal error while reading the request")
        except httptools.HttpParserInvalidMethodError:
            start = self._request_start(data)
            line = start.split(b"\r\n", 1)[0]
            if _TOKEN_METHOD_LINE.match(start):
                self.refuse(501, "request method not implemented", line)
            else:
                self.refuse(400, "invalid request method", line)
        except httptools.HttpParserError as exc:
            message = str(exc) or "malformed request"
            start = self._request_start(data)
            if _HTTP09_LINE.match(start) and self.phase in (IDLE, HEAD):
                self.refuse(505, "only HTTP/1.0 and HTTP/1.1 are supported", start.split(b"\n", 1)[0])
            elif "invalid http version" in message.lower():
                self.refuse(505, "only HTTP/1.0 and HTTP/1.1 are supported")
            else:
                self.refuse(400, f"malformed request: {message}")
        else:
            if self.phase == HEAD:
                # Bytes of a head still incomplete: llhttp buffers a partial header line whole, so
                # bound what one client can make us hold before the head is complete.
                self._head_data = (self._head_data if in_head else 0) + len(data)
                if self._head_data > self.limits.max_header_bytes + self.limits.max_line_size:
                    self.refuse(431, "request header fields too large")
                elif len(self._head_chunks) < 64:
                    self._head_chunks.append(data)  # to name the request line if it turns out bad

    def _request_start(self, data: bytes) -> bytes:
        """The bytes where the failing request began, when they can be told apart (for the log and
        a 501/505 instead of a 400); empty when a request completed earlier in the same data."""
        if self._completed_in_feed:
            return b""
        return b"".join(self._head_chunks)[:512] + data[:512]

    def _after_upgrade(self, data: bytes, upgrade: httptools.HttpParserUpgrade) -> None:
        """An ``Upgrade`` request (h2c, websocket) is answered as plain HTTP/1.1 (RFC 9110 §7.8 lets a
        server ignore Upgrade); CONNECT is refused by the service.  The parser stopped right after
        the message, so the rest of the data is fed to a fresh parser."""
        offset = upgrade.args[0] if upgrade.args else len(data)
        self.parser = httptools.HttpRequestParser(self)
        rest = data[offset:]
        if rest:
            self.data_received(rest)

    # -- parser callbacks --------------------------------------------------------------------
    def on_message_begin(self) -> None:
        self._url = b""
        self._headers = []
        self._header_bytes = 0
        self._host = None
        self._hosts = 0
        self._fast = True
        self._user_agent = None
        self._referer = None
        self._expect = None
        self._content_length = -1
        self._chunked = False
        self._in_trailers = False
        self._body_size = 0
        self._started = time.perf_counter()
        if self.phase in (IDLE, BUSY):
            self.phase = HEAD
            self.deadline = self.loop.time() + self.limits.header_timeout

    def on_url(self, url: bytes) -> None:
        self._url += url
        if len(self._url) + 16 > self.limits.max_line_size:
            raise _Refused(414, "request line too long")

    def on_header(self, name: bytes, value: bytes) -> None:
        size = len(name) + len(value) + 4
        if size > self.limits.max_field_size:
            raise _Refused(431, "a request header field is too large")
        self._header_bytes += size
        if self._header_bytes > self.limits.max_header_bytes:
            raise _Refused(431, "request header fields too large in total")
        if self._in_trailers:
            return  # trailer fields of a chunked body are not forwarded
        if len(self._headers) >= self.limits.max_headers:
            raise _Refused(431, "too many request header fields")
        self._headers.append((name, value))
        lowered = name.lower()
        if lowered in self.slow_headers:
            self._fast = False
        if lowered == b"host":
            self._host = value
            self._hosts += 1
        elif lowered == b"user-agent":
            self._user_agent = value
        elif lowered == b"referer":
            self._referer = value
        elif lowered == b"content-length":
            self._content_length = int(value) if value.strip().isdigit() else -1
        elif lowered == b"transfer-encoding":
            if value.strip().lower() != b"chunked":
                raise _Refused(501, "transfer codings other than chunked are not implemented")
            self._chunked = True
        elif lowered == b"expect":
            self._expect = value
            self._fast = False

    def on_headers_complete(self) -> None:
        parser = self.parser
        version_text = parser.get_http_version()
        if version_text == "1.1":
            version = (1, 1)
        elif version_text == "1.0":
            version = (1, 0)
        else:
            raise _Refused(505, "only HTTP/1.0 and HTTP/1.1 are supported")
        if self._hosts > 1:
            hosts = [value.decode("latin-1") for name, value in self._headers if name.lower() == b"host"]
        else:
            hosts = [self._host.decode("latin-1")] if self._host is not None else []
        if b"#" in self._url:  # RFC 9112 §3.2: no request-target form has a fragment
            raise _Refused(400, "a request target has no fragment (#)")
        problem = host_field_problem(hosts, version)
        if problem is not None:
            raise _Refused(400, problem)
        host = self._host
        if self._url[:1] != b"/" and (authority := target_authority(self._url.decode("latin-1"))) is not None:
            # RFC 9112 §3.2.2: the target's authority stands for Host (site, key, logs), checked alike.
            problem = host_field_problem([authority], version) if authority else "no host in the request target"
            if problem is not None:
                raise _Refused(400, problem.replace("Host header", "host in the request target"))
            host = authority.encode("latin-1")
        if self._content_length > self.limits.max_body_size:
            raise _Refused(413, "request body too large")
        expect_continue = False
        if self._expect is not None:
            if self._expect.strip().lower() != b"100-continue":
                raise _Refused(417, "only the 100-continue expectation is supported")
            expect_continue = version >= (1, 1)
        has_body = self._chunked or self._content_length > 0
        self.requests += 1
        head = RequestHead(
            parser.get_method().decode("ascii"),
            self._url,
            version,
            self._headers,
            peer=self.peer,
            scheme=self.scheme,
            keep_alive=parser.should_keep_alive() and not self.shutting_down,
            started=self._started,
            host=host,
            fast=self._fast and not has_body,
            has_body=has_body,
            user_agent=self._user_agent,
            referer=self._referer,
            expect_continue=expect_continue,
        )
        self._head_data = 0
        self._head_chunks = []
        self._in_trailers = True
        if has_body:
            exchange = Exchange(self, head)
            self.parsing = exchange
            self.phase = BODY
            self.deadline = self.loop.time() + self.limits.body_timeout
            self._dispatch(exchange)
        else:
            self._complete_head = head

    def on_body(self, body: bytes) -> None:
        exchange = self.parsing
        if exchange is None or exchange.body is None:
            return
        self._body_size += len(body)
        if self._body_size > self.limits.max_body_size:
            raise _Refused(413, "request body too large")
        self.deadline = self.loop.time() + self.limits.body_timeout
        exchange.body.feed(body)

    def on_message_complete(self) -> None:
        self._in_trailers = False
        self._completed_in_feed += 1
        exchange = self.parsing
        self.phase = BUSY
        if exchange is not None:
            assert exchange.body is not None
            exchange.body.finish()
            self.parsing = None
        else:
            head, self._complete_head = self._complete_head, None
            assert head is not None
            self._dispatch(head)
        if self.phase == BUSY and self.active is None and not self.pending and not self.closed:
            self.phase = IDLE
            self.deadline = self.loop.time() + self.limits.keepalive_timeout

    # -- the request cycle -------------------------------------------------------------------
    def _dispatch(self, item: Exchange | RequestHead) -> None:
        """A complete head (or a head whose body will stream): answer it now, or queue it in order."""
        if self.closed:
            return
        if self.active is not None or self.pending or self.flow.write_paused:
            self.pending.append(item)
            if len(self.pending) >= MAX_PIPELINED:
                self.flow.pause_reading()
            return
        self._serve(item)

    def _serve(self, item: Exchange | RequestHead) -> None:
        if isinstance(item, RequestHead):
            if item.fast:
                response = self.service.fast(item)
                if response is not None:
                    if len(response) == 1:
                        self.transport.write(response[0])
                    else:
                        self.transport.writelines(response)
                    if not item.keep_alive:
                        self._close()
                    elif self.flow.write_paused:
                        self.flow.pause_reading()  # the client does not read: parse no further
                    return
            item = Exchange(self, item)
        self.active = item
        task = self.loop.create_task(self._run(item))
        task.add_done_callback(self._finished)

    async def _run(self, exchange: Exchange) -> None:
        try:
            await self.service.handle(exchange)
            if not exchange.started:
                await exchange.respond(500, [("Cache-Control", "no-store")], b"no response\n")
            elif not exchange.finished:
                await exchange.end()
        except ClientGone:
            exchange.close_after = True
        except Exception:
            log.exception("error while answering %s %r", exchange.head.method, exchange.head.raw_target[:200])
            if not exchange.started and not self.closed:
                exchange.started = exchange.finished = True
                exchange.status = 500
                exchange.close_after = True
                self.write(error_response(500, "internal error", close=True))
            else:
                exchange.abort()

    def _finished(self, task: asyncio.Task[None]) -> None:
        exchange = self.active
        self.active = None
        if exchange is not None:
            try:
                self.service.completed(exchange)
            except Exception:
                log.exception("completing an exchange failed")
            if exchange.close_after or not exchange.finished:
                self.pending.clear()  # "Connection: close": nothing after this response is answered
                self._close()
                return
        self._next()

    def _next(self) -> None:
        """Answer queued pipelined requests in order, until one needs a task or the client stalls."""
        while self.pending and self.active is None and not self.flow.write_paused and not self.closed:
            self._serve(self.pending.popleft())
        if self.closed or self.active is not None or self.pending:
            if not self.closed and not self.flow.write_paused and len(self.pending) < MAX_PIPELINED:
                self.flow.resume_reading()
            return
        if self._refusal is not None:
            self.transport.write(self._refusal)
            self._close()
            return
        if self.read_eof or self.shutting_down:
            self._close()
            return
        if self.phase == BUSY:
            self.phase = IDLE
            self.deadline = self.loop.time() + self.limits.keepalive_timeout
        if not self.flow.write_paused:
            self.flow.resume_reading()

    # -- output and refusals -----------------------------------------------------------------
    def write(self, data: bytes) -> None:
        if not self.closed:
            self.transport.write(data)

    def _close(self) -> None:
        if not self.closed:
            self.closed = True
            self.flow.closed = True
            self.transport.close()

    def abort(self) -> None:
        if not self.closed:
            self.closed = True
            self.flow.lost()
            self.transport.abort()

    def refuse(self, status: int, reason: str, line: bytes | None = None) -> None:
        """The one path for a refused request: one line in the log, the reason to the client, close."""
        try:
            self.service.refused(self.peer, status, reason, line.decode("latin-1", "replace") if line else "")
        except Exception:
            log.exception("logging a refused request failed")
        answer = error_response(status, reason, close=True)
        self.flow.pause_reading()
        broken = self.parsing
        self.parsing = None
        if broken is not None and broken.body is not None and not broken.body.complete:
            broken.body.fail(reason)
            if broken in self.pending:
                self.pending.remove(broken)
            elif broken is self.active:
                if not broken.started:
                    broken.started = broken.finished = True
                    broken.status = status
                    broken.close_after = True
                    self.write(answer)
                    self._close()
                else:
                    self.abort()
                return
        if self.active is None and not self.pending:
            self.write(answer)
            self._close()
        else:
            self._refusal = answer  # after the responses already owed, in order

    def shut_down(self) -> None:
        """Graceful shutdown: idle connections close now, busy ones after their current response."""
        self.shutting_down = True
        if self.active is None and not self.pending and self.phase in (IDLE, HEAD):
            self._close()

    def check_deadline(self, now: float) -> None:
        """Called by the sweeper about twice a second."""
        if self.closed:
            return
        if self.flow.write_paused and now - self.stalled_since > self.limits.send_timeout:
            log.debug("client %s read nothing for %.0f s; closing", self.peer, now - self.stalled_since)
            self.abort()
            return
        if now < self.deadline:
            return
        if self.phase == HEAD:
            self.refuse(408, "request header timeout")
        elif self.phase == BODY:
            self.refuse(408, "request body timeout")
        elif self.phase == IDLE and self.active is None and not self.pending:
            self._close()
        else:
            self.deadline = float("inf")


class Listener:
    """One listening socket served by :class:`HttpProtocol` with ``service``."""

    def __init__(self, server: asyncio.Server, connections: Connections) -> None:
        self.server = server
        self.connections = connections

    @property
    def port(self) -> int:
        port: int = self.server.sockets[0].getsockname()[1]
        return port

    async def close(self, grace: float = 5.0) -> None:
        """Stop accepting, let in-flight responses finish for ``grace`` seconds, close everything."""
        self.server.close()
        await self.connections.shutdown(grace)
        await self.server.wait_closed()


async def listen(
    service: Service,
    limits: ServerLimits,
    *,
    sock: socket.socket | None = None,
    host: str = "127.0.0.1",
    port: int = 0,
    ssl: Any = None,
    connections: Connections | None = None,
    gate: ConnectionGate | None = None,
) -> Listener:
    """Serve ``service`` on an inherited socket (workers) or a new one (tests, the router)."""
    loop = asyncio.get_running_loop()
    group = connections or Connections(limits, gate)

    def factory() -> HttpProtocol:
        return HttpProtocol(service, group, loop)

    if sock is not None:
        server = await loop.create_server(factory, sock=sock, ssl=ssl, backlog=4096)
    else:
        server = await loop.create_server(factory, host=host, port=port, ssl=ssl, backlog=4096, reuse_address=True)
    return Listener(server, group)
