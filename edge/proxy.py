"""The public request handler: a thin driver between the client, the rules in ``edge.http`` and the origin.

This slice forwards every request (no cache yet) as a correct HTTP/1.1 intermediary: bodies
streamed both ways in chunks, hop-by-hop fields dropped, ``Via``/``X-Forwarded-*`` added, 1xx
relayed, origin failures turned into 502/504 with a reason, and a body cut by the origin turned
into a cut client connection rather than a short, complete-looking response.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from urllib.parse import urlsplit

from aiohttp import ClientResponse, ClientSession, hdrs, web
from multidict import CIMultiDict
from yarl import URL

from edge import faultlog
from edge.accesslog import client_gone, timing_of
from edge.config import EdgeSettings
from edge.errors import ClientFault, EdgeError, LoopDetected, OriginBodyBroken
from edge.http import forwarding
from edge.upstream import OriginRequest, decode_raw_headers, iter_body, send_to_origin

log = logging.getLogger("edge.proxy")

BODY_CHUNK = 64 * 1024

# Fields the edge rewrites itself on the way to the origin (hop-by-hop ones are dropped anyway).
# Expect is answered by our own server (100 Continue) before the handler runs.
_REQUEST_FIELDS_REWRITTEN = ("host", "expect", "x-forwarded-proto", "x-forwarded-host")


class RelayResponse(web.StreamResponse):
    """A response that carries the origin's header fields and nothing aiohttp would invent.

    aiohttp's server adds ``Content-Type: application/octet-stream`` to any non-empty body that
    lacks one and a ``Server: aiohttp`` line; an intermediary must not alter what the origin said
    about its content (browsers sniff a missing type, a made-up one breaks that).  ``Date`` is
    still added when missing, as RFC 9110 §6.6.1 asks of a recipient with a clock.
    """

    async def _prepare_headers(self) -> None:
        had_content_type = hdrs.CONTENT_TYPE in self.headers
        had_server = hdrs.SERVER in self.headers
        await super()._prepare_headers()
        if not had_content_type:
            self.headers.popall(hdrs.CONTENT_TYPE, None)
        if not had_server:
            self.headers.popall(hdrs.SERVER, None)


@dataclass(frozen=True, slots=True)
class ForwardContext:
    """Per-worker facts the handler needs: who we are and where the origin is."""

    settings: EdgeSettings
    node_name: str
    origin: URL


def plain_error(status: int, reason: str, node_name: str) -> web.Response:
    """A short text error the client (or its operator) can read; never cached downstream."""
    return web.Response(
        status=status,
        text=f"{reason}\n",
        headers={hdrs.CACHE_CONTROL: "no-store", hdrs.VIA: f"1.1 {node_name}"},
    )


def origin_target(request: web.BaseRequest) -> str:
    """The request target as origin-form (path and query byte-for-byte as the client sent them)."""
    raw = request.raw_path
    if raw.startswith("/"):
        return raw
    if raw == "*":
        raise ClientFault("asterisk-form request targets are not forwarded")
    parts = urlsplit(raw)
    if parts.scheme.lower() in ("http", "https") and parts.netloc:
        return (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    raise ClientFault(f"unsupported request target {raw[:100]!r}")


def upstream_url(origin: URL, target: str) -> URL:
    base = str(origin).rstrip("/")
    return URL(base + target, encoded=True)


def check_host(request: web.BaseRequest) -> None:
    """Refuse a request whose ``Host`` lines are missing, repeated or malformed (RFC 9112 §3.2).

    Runs before the cache is consulted, so a hostile name can neither be served a hit nor reach a
    key, a log line or the origin.
    """
    hosts = [value.decode("latin-1") for name, value in request.raw_headers if name.lower() == b"host"]
    problem = forwarding.host_field_problem(hosts, (request.version.major, request.version.minor))
    if problem is not None:
        raise ClientFault(problem)


def build_origin_headers(request: web.BaseRequest, context: ForwardContext) -> list[tuple[str, str]]:
    """Client header lines as forwarded to the origin, per RFC 9110 §7.6 plus X-Forwarded-*.

    Nothing the client sends may change the origin's answer unless the cache key covers it: the
    client's ``Host`` is passed on (as ``Host`` and ``X-Forwarded-Host``) only with
    ``preserve_host``, where it is part of the key; otherwise the origin sees its own authority and
    the configured ``public_host``.  Override headers (``upstream.strip_request_headers``) are dropped.
    """
    received = decode_raw_headers(request.raw_headers)
    upstream = context.settings.upstream
    host = request.headers.get(hdrs.HOST, "")
    if host and forwarding.host_field_problem([host], (1, 1)) is not None:
        raise ClientFault("invalid Host header")
    headers = forwarding.strip_hop_by_hop(
        received, extra=(*_REQUEST_FIELDS_REWRITTEN, "x-forwarded-for", *upstream.strip_request_headers)
    )
    keyed_host = host if upstream.preserve_host and host else None
    headers.insert(0, ("Host", keyed_host or context.origin.raw_authority or ""))
    forwarded_for = forwarding.forwarded_for_value(received, request.remote)
    if forwarded_for:
        headers.append(("X-Forwarded-For", forwarded_for))
    headers.append(("X-Forwarded-Proto", request.scheme))
    forwarded_host = keyed_host or context.settings.public_host
    if forwarded_host:
        headers.append(("X-Forwarded-Host", forwarded_host))
    return forwarding.append_via(headers, (request.version.major, request.version.minor), context.node_name)


def stripped_fields(request: web.BaseRequest, context: ForwardContext) -> list[str]:
    """Names of the override fields the client sent that the origin will not see (for logs, counters)."""
    stripped = set(context.settings.upstream.strip_request_headers)
    return sorted({name.decode("latin-1").lower() for name, _ in request.raw_headers} & stripped)


async def stream_request_body(request: web.BaseRequest) -> AsyncIterator[bytes]:
    """The client's body in chunks as it arrives, so an upload never sits in memory."""
    while True:
        chunk = await request.content.readany()
        if not chunk:
            return
        yield chunk


class Forwarder:
    """Forwards one request to the origin and relays the answer."""

    def __init__(self, context: ForwardContext, session: ClientSession) -> None:
        self.context = context
        self.session = session

    async def handle(self, request: web.Request) -> web.StreamResponse:
        try:
            return await self._forward(request)
        except ConnectionError as exc:
            return client_gone(request, exc)
        except EdgeError as exc:
            if isinstance(exc, OriginBodyBroken):
                raise
            faultlog.report(request.remote, request.method, request.raw_path, exc.status, exc.reason)
            return plain_error(exc.status, exc.reason, self.context.node_name)

    async def _forward(self, request: web.Request) -> web.StreamResponse:
        received = decode_raw_headers(request.raw_headers)
        if forwarding.is_loop(received, self.context.node_name):
            raise LoopDetected(f"request loop: it already passed through {self.context.node_name}")
        target = origin_target(request)
        origin_request = OriginRequest(
            method=request.method,
            url=upstream_url(self.context.origin, target),
            headers=build_origin_headers(request, self.context),
            body=stream_request_body(request) if request.body_exists else None,
        )

        async def relay_interim(status: int, reason: str, headers: list[tuple[str, str]]) -> None:
            # RFC 9110 §15.2: never send a 1xx to an HTTP/1.0 client.
            if request.version < (1, 1) or request.writer is None:
                return
            lines = [f"HTTP/1.1 {status} {reason}".rstrip()]
            lines.extend(f"{name}: {value}" for name, value in forwarding.strip_hop_by_hop(headers))
            await request.writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
            request.writer.output_size = 0  # the final response has not started yet

        started = time.monotonic()
        upstream = await send_to_origin(self.session, origin_request, on_interim=relay_interim)
        timing_of(request).origin_ms = (time.monotonic() - started) * 1000
        try:
            response = self._client_response(upstream)
            await response.prepare(request)
            if request.method != hdrs.METH_HEAD:
                try:
                    async for chunk in iter_body(upstream):
                        await response.write(chunk)
                except OriginBodyBroken as exc:
                    log.warning("%s %s: %s; closing client connection", request.method, target[:200], exc)
                    self._break_client_connection(request)
                    raise
            await response.write_eof()
            return response
        finally:
            upstream.release() if upstream.content.at_eof() else upstream.close()

    def _client_response(self, upstream: ClientResponse) -> RelayResponse:
        headers = forwarding.strip_hop_by_hop(decode_raw_headers(upstream.raw_headers))
        version = (upstream.version.major, upstream.version.minor) if upstream.version else (1, 1)
        headers = forwarding.append_via(headers, version, self.context.node_name)
        return RelayResponse(status=upstream.status, reason=upstream.reason or None, headers=CIMultiDict(headers))

    @staticmethod
    def _break_client_connection(request: web.BaseRequest) -> None:
        """Close the client's connection without a terminating chunk: the truncation stays visible."""
        transport = request.transport
        if transport is not None:
            transport.close()
