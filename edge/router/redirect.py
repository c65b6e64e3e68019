"""The router's public listener: every request answered with a redirect, on our own front end.

A redirect is known as soon as the request head is: the client address (socket peer, or
``X-Forwarded-For`` from a trusted proxy), its location and coverage zone, and the edge the selector
picks for the URL — all memoised (``Router``) — so it is answered from the parser callback with one
write (``fast``), no task.  Requests with a body (``307``: the client repeats it to the edge) go
through ``handle`` and close the connection rather than read a body nobody needs.

Bookkeeping stays off the hot path: counters are integers turned into Prometheus families at
scrape time (``RouterMetrics``), and access-log entries are tuples formatted in batches.
"""

from __future__ import annotations

import html
import logging
import sys
import time
from collections.abc import Sequence
from typing import Any

from lru import LRU

from edge import faultlog
from edge.accesslog import LineWriter
from edge.protection import Guard
from edge.router.accesslog import AccessLogger, AccessRecord
from edge.router.app import (
    NO_HEALTHY_EDGE,
    REDIRECT_METHODS,
    ROUTE_HEADER,
    Router,
    RouteResult,
    request_target,
    route_summary,
)
from edge.router.clientip import ClientAddress
from edge.router.coverage import CoverageZone
from edge.router.geo import GeoResult
from edge.router.select import Selector, shard_key
from edge.server.exchange import Exchange, RequestHead
from edge.server.protocol import Listener, listen
from edge.server.wire import header_block, http_date, status_line

log = logging.getLogger("edge.router")

_XFF = b"x-forwarded-for"
_KEEP_ALIVE_10 = b"Connection: keep-alive\r\n"
_CLOSE = b"Connection: close\r\n"
ANSWERS_MEMO = 16384
ANSWERS_MEMO_MAX_URL = 1024  # longer redirects are built afresh: memory must not grow with client-chosen lengths


def redirect_body(location: str) -> bytes:
    link = html.escape(location, quote=True)
    return (
        "<!DOCTYPE html>\n<html><head><title>Moved</title></head>"
        f'<body><p>Served from <a href="{link}">{link}</a>.</p></body></html>\n'
    ).encode()


# One access-log entry, formatted later: when, peer, client, location, zone, selector, cache key,
# spread token, method, host, target, version, status, body bytes, referer, user agent, latency.
Entry = tuple[
    float, "str | None", ClientAddress, GeoResult, "CoverageZone | None", Selector, str, "str | None", str, str, str,
    str, int, int, "bytes | None", "bytes | None", int,
]


class RedirectService:
    """``edge.server.protocol.Service`` for the router."""

    slow_headers: frozenset[bytes] = frozenset()

    def __init__(self, router: Router, *, access_log: bool = True, logger: logging.Logger | None = None) -> None:
        """``access_log`` lines go to ``logger`` when given (tests), else to ``access_log_file`` or stderr."""
        self.router = router
        settings = router.settings
        self.formatter = AccessLogger(settings.log_format)
        self.access_log: LineWriter | None = None
        if access_log and settings.access_log:
            self.access_log = LineWriter(self.format_entry, path=settings.access_log_file, logger=logger,
                                         fd=sys.stderr.fileno())  # fmt: skip
        self._answers: Any = LRU(ANSWERS_MEMO)  # (status, location) -> (head without Date, body)
        protection = settings.protection
        wanted = protection.rate or protection.max_connections or protection.max_connections_per_ip
        self.guard = Guard(protection) if wanted else None
        if self.guard is not None:
            self.guard.refusals = router.metrics.refusals  # counted where /metrics reads them

    def fast(self, head: RequestHead) -> Sequence[bytes] | None:
        if head.has_body:
            return None
        if head.method == "CONNECT" or head.target == "*":
            return (_not_a_resource(head),)
        return (self._answer(head),)

    async def handle(self, ex: Exchange) -> None:
        """A request with a body: the same answer; its body is not read (the connection closes)."""
        ex.close_after = True
        head = ex.head
        not_redirected = head.method == "CONNECT" or head.target == "*"
        answer = _not_a_resource(head, close=True) if not_redirected else self._answer(head, close=True)
        ex.started = ex.finished = True
        ex.status = int(answer[9:12])
        ex.protocol.write(answer)

    def completed(self, ex: Exchange) -> None:
        pass  # logged when answered

    def refused(self, peer: str | None, status: int, reason: str, request: str) -> None:
        faultlog.refused_request(peer, request, status, reason)

    def _answer(self, head: RequestHead, close: bool = False) -> bytes:
        router = self.router
        settings = router.settings
        method = head.method
        authority, target = request_target(head.target)
        host = authority or (head.host.decode("latin-1").strip() if head.host else "")
        peer = head.peer
        if router.trusted:
            xff = [value.decode("latin-1") for name, value in head.raw_headers if name.lower() == _XFF]
        else:
            xff = []
        decided = time.perf_counter()
        client, location, zone, token = router.resolve(peer, xff)
        guard = self.guard
        if guard is not None and guard.rates is not None:
            refusal = guard.take(str(client.address) if client.address is not None else peer or "-")
            if refusal is not None:
                return b"".join(refusal.response(head.keep_alive and not close, method == "HEAD"))
        cache_key = shard_key(target)
        selector = router.selector()
        if settings.debug_header:
            decision = selector.decide(location, cache_key, zone, token)
            edge, rule = decision.edge, decision.rule
        else:
            decision = None
            chosen = selector.choose(location, cache_key, zone, token)
            edge, rule = chosen if chosen is not None else (None, "none")
        seconds = time.perf_counter() - decided
        metrics = router.metrics
        metrics.observe_decision(seconds)
        if edge is not None:
            status = 302 if method in REDIRECT_METHODS else 307
            redirect = edge.url + target
            memo_key = (status, redirect)
            memo = self._answers.get(memo_key)
            if memo is None:
                body = redirect_body(redirect)
                fields = [("Cache-Control", "no-store"), ("Location", redirect),
                          ("Content-Type", "text/html; charset=utf-8"), ("Content-Length", str(len(body)))]  # fmt: skip
                memo = (status_line(status) + header_block(fields), body)
                if len(redirect) <= ANSWERS_MEMO_MAX_URL:
                    self._answers[memo_key] = memo
            prefix, body = memo
            metrics.redirected(edge.name, edge.region, rule, status)
        else:
            status, redirect = 503, None
            reason = NO_HEALTHY_EDGE if decision is None else decision.reason
            body = f"503 Service Unavailable: {reason}; try again in {router.retry_after} s.\n".encode()
            fields = [("Cache-Control", "no-store"), ("Retry-After", router.retry_after),
                      ("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", str(len(body)))]  # fmt: skip
            prefix = status_line(503) + header_block(fields)
            metrics.unavailable += 1
        answer: bytes = prefix + http_date.line()
        if decision is not None:
            result = RouteResult(client, location, zone, cache_key, decision, status, redirect, seconds * 1e6)
            answer += f"{ROUTE_HEADER}: {route_summary(result)}\r\n".encode("ascii")
        if close or not head.keep_alive:
            answer += _CLOSE
        elif head.version < (1, 1):
            answer += _KEEP_ALIVE_10
        answer += b"\r\n"
        if method != "HEAD":
            answer += body
        if self.access_log is not None:
            latency = int((time.perf_counter() - head.started) * 1e6)
            self.access_log.add((
                time.time(), peer, client, location, zone, selector, cache_key, token, method, host, target,
                f"{head.version[0]}.{head.version[1]}", status, 0 if method == "HEAD" else len(body), head.referer,
                head.user_agent, latency,
            ))  # fmt: skip
        return answer

    def format_entry(self, entry: Entry) -> str:
        """An access-log line, built when the batch is written (the decision recomputed then)."""
        (when, peer, client, location, zone, selector, cache_key, token, method, host, target, version, status,
         body_bytes, referer, user_agent, latency) = entry  # fmt: skip
        record = AccessRecord(
            peer=peer, client=client, location=location, zone=zone,
            decision=selector.decide(location, cache_key, zone, token), method=method, host=host, target=target,
            version=version, status=status, body_bytes=body_bytes,
            referer=referer.decode("latin-1") if referer is not None else None,
            user_agent=user_agent.decode("latin-1") if user_agent is not None else None, latency_us=latency,
            client_text=token,
        )  # fmt: skip
        line: str = (
            self.formatter.json_line(record, when) if self.formatter.format == "json"
            else self.formatter.combined_line(record, when)
        )  # fmt: skip
        return line



def _not_a_resource(head: RequestHead, close: bool = False) -> bytes:
    """``OPTIONS *`` asks about the router itself (RFC 9110 §9.3.7): what it answers; ``CONNECT``
    asks for a tunnel, which a redirector does not make (the edges answer it 400 likewise).
    Neither names a resource to redirect to."""
    if head.method == "OPTIONS":
        status, fields, body = 200, [("Allow", "GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS")], b""
    else:
        body = b"400 Bad Request: no tunnels here (CONNECT); this router redirects requests for resources.\n"
        status, fields = 400, [("Content-Type", "text/plain; charset=utf-8")]
    fields += [("Cache-Control", "no-store"), ("Content-Length", str(len(body)))]
    if close or not head.keep_alive:
        fields.append(("Connection", "close"))
    return status_line(status) + header_block(fields) + http_date.line() + b"\r\n" + body


async def serve_redirects(router: Router, host: str, port: int, ssl: Any = None, *,
                          logger: logging.Logger | None = None) -> tuple[Listener, RedirectService]:  # fmt: skip
    """The redirect listener on ``host:port`` (0: any free port), with the router's limits."""
    service = RedirectService(router, logger=logger)
    gate = service.guard if service.guard is not None and service.guard.connections is not None else None
    listener = await listen(service, router.settings.limits.server_limits(), host=host, port=port, ssl=ssl, gate=gate)
    return listener, service
