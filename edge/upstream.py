"""Origin access: one pooled aiohttp client per worker, errors mapped to status hints, 1xx relayed.

aiohttp's client reads interim (1xx) responses and throws them away inside
``ClientResponse.start``; it offers no hook.  An intermediary must forward them (RFC 9110
§15.2), so :class:`InterimRelayingResponse` wraps the connection protocol's ``read`` for the
duration of ``start`` and hands every 1xx message (except 100 Continue, which the edge's own
server already answered for its client) to a per-request sink found in a context variable.  The
context variable is how the sink reaches the response object that aiohttp constructs for us.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

import aiohttp
from aiohttp import ClientResponse, ClientSession, ClientTimeout, TCPConnector
from yarl import URL

from edge.config import UpstreamSettings
from edge.errors import OriginBodyBroken, OriginTimeout, OriginUnreachable

InterimSink = Callable[[int, str, list[tuple[str, str]]], Awaitable[None]]
_interim_sink: ContextVar[InterimSink | None] = ContextVar("edge_interim_sink", default=None)

SAFE_RETRY_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})

# Headers aiohttp's client would invent; an intermediary must not add what the client did not send.
_NO_AUTO_HEADERS = ("Accept", "Accept-Encoding", "User-Agent", "Content-Type")


def decode_raw_headers(raw: Sequence[tuple[bytes, bytes]]) -> list[tuple[str, str]]:
    """Header lines exactly as the peer sent them: order, case and repetition kept (latin-1 safe)."""
    return [(name.decode("latin-1"), value.decode("latin-1")) for name, value in raw]


class InterimRelayingResponse(ClientResponse):
    """A ``ClientResponse`` that reports 1xx interim responses before the final one."""

    async def start(self, connection: aiohttp.connector.Connection) -> ClientResponse:
        sink = _interim_sink.get()
        protocol = connection.protocol
        if sink is None or protocol is None:
            return await super().start(connection)
        original_read = protocol.read

        async def read_and_relay() -> Any:
            message, payload = await original_read()
            if 100 < message.code < 200 and message.code != 101:
                await sink(message.code, message.reason, decode_raw_headers(message.raw_headers))
            return message, payload

        setattr(protocol, "read", read_and_relay)  # noqa: B010 - shadow the bound method on purpose
        try:
            return await super().start(connection)
        finally:
            delattr(protocol, "read")


def create_origin_session(settings: UpstreamSettings) -> ClientSession:
    """The per-worker keep-alive pool to the origin.

    Bodies are relayed as bytes (no decompression), cookies are not kept, and aiohttp's own
    retry of idempotent requests is off: it would resend PUT/DELETE bodies that were streamed
    from the client and are gone; :func:`send_to_origin` retries only bodiless safe requests.
    """
    connector = TCPConnector(
        limit=settings.pool_size,
        limit_per_host=0,
        keepalive_timeout=settings.keepalive_timeout,
        ttl_dns_cache=60,
    )
    session = ClientSession(
        connector=connector,
        timeout=ClientTimeout(
            total=None, sock_connect=settings.connect_timeout, sock_read=settings.read_timeout
        ),
        auto_decompress=False,
        cookie_jar=aiohttp.DummyCookieJar(),
        response_class=InterimRelayingResponse,
        read_bufsize=2**18,
        max_line_size=16384,
        max_field_size=16384,
    )
    session._retry_connection = False
    return session


@dataclass(frozen=True, slots=True)
class OriginRequest:
    method: str
    url: URL
    headers: list[tuple[str, str]]
    body: AsyncIterator[bytes] | None = None


async def send_to_origin(
    session: ClientSession, request: OriginRequest, on_interim: InterimSink | None = None
) -> ClientResponse:
    """Send ``request`` and return the response once its headers arrived.

    Raises :class:`OriginUnreachable` (→ 502) or :class:`OriginTimeout` (→ 504).  A bodiless
    GET/HEAD/OPTIONS is retried once when a pooled connection turns out to be closed by the
    origin; anything else is never retried, as RFC 9110 §9.2.2 requires of non-idempotent requests.
    """
    token = _interim_sink.set(on_interim)
    attempts = 2 if request.method in SAFE_RETRY_METHODS and request.body is None else 1
    try:
        for attempt in range(attempts):
            try:
                return await session.request(
                    request.method,
                    request.url,
                    headers=request.headers,
                    data=request.body,
                    allow_redirects=False,
                    skip_auto_headers=_NO_AUTO_HEADERS,
                    compress=None,
                )
            except aiohttp.ServerDisconnectedError as exc:
                if attempt + 1 < attempts:
                    continue
                raise OriginUnreachable(f"origin closed the connection before answering ({exc})") from exc
            except (TimeoutError, aiohttp.ServerTimeoutError) as exc:
                raise OriginTimeout("origin did not answer in time") from exc
            except aiohttp.ClientConnectorError as exc:
                raise OriginUnreachable(f"cannot connect to origin: {exc.os_error.strerror or exc}") from exc
            except aiohttp.ClientResponseError as exc:
                raise OriginUnreachable(f"origin sent an invalid response: {exc.message}") from exc
            except (aiohttp.ClientError, OSError) as exc:
                raise OriginUnreachable(f"origin connection failed: {exc}") from exc
        raise AssertionError("unreachable")  # pragma: no cover - the loop always returns or raises
    finally:
        _interim_sink.reset(token)


async def iter_body(response: ClientResponse) -> AsyncIterator[bytes]:
    """Yield the origin body as it arrives; a cut or stalled body raises instead of ending quietly."""
    try:
        while True:
            chunk = await response.content.readany()
            if not chunk:
                return
            yield chunk
    except (TimeoutError, aiohttp.ServerTimeoutError) as exc:
        raise OriginBodyBroken("origin body stalled") from exc
    except (aiohttp.ClientPayloadError, aiohttp.ClientError, OSError, asyncio.IncompleteReadError) as exc:
        raise OriginBodyBroken(f"origin body ended early: {exc}") from exc
