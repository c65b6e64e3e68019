"""What the origin sees of a client's request (RFC 9110 §7.6), and nothing a client can use to poison.

Hop-by-hop fields are dropped, ``Via`` grows, ``X-Forwarded-For``/``-Proto`` are the edge's own,
and nothing the client sends may change the origin's answer unless the cache key covers it: the
client's ``Host`` travels (as ``Host`` and ``X-Forwarded-Host``) only with ``preserve_host``, where
it is part of the key, and the override fields of ``upstream.strip_request_headers`` never travel.
"""

from __future__ import annotations

from collections.abc import Iterable
from urllib.parse import urlsplit

from edge.config import EdgeSettings
from edge.errors import ClientFault
from edge.http import forwarding
from edge.server.exchange import RequestHead

# Fields the edge writes itself (hop-by-hop ones are dropped anyway); Expect is answered by our
# own front end (100 Continue) when the body is first read.
_REWRITTEN = ("host", "expect", "x-forwarded-proto", "x-forwarded-host", "x-forwarded-for", "edgecache-peer",
              "edgecache-peer-proto")


def origin_target(head: RequestHead) -> str:
    """The request target as origin-form: path and query byte-for-byte as the client sent them."""
    raw = head.target
    if raw.startswith("/"):
        return raw
    if raw == "*":
        raise ClientFault("asterisk-form request targets are not forwarded")
    try:
        parts = urlsplit(raw)
    except ValueError:  # e.g. an unclosed IPv6 literal: "http://[::1/"
        raise ClientFault(f"unsupported request target {raw[:100]!r}") from None
    if parts.scheme.lower() in ("http", "https") and parts.netloc:
        return (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    raise ClientFault(f"unsupported request target {raw[:100]!r}")


def client_host(head: RequestHead) -> str:
    return head.host.decode("latin-1").strip(" \t") if head.host is not None else ""


def origin_headers(
    head: RequestHead, settings: EdgeSettings, keyed_host: str | None, node_name: str, drop: Iterable[str] = ()
) -> list[tuple[str, str]]:
    """The client's header lines as the origin receives them, but ``Host``: the origin chosen for
    the request writes its own authority there, or ``keyed_host`` (the client's Host, with
    ``preserve_host``, where it is part of the cache key)."""
    upstream = settings.upstream
    received = head.headers
    extra = (*_REWRITTEN, *upstream.strip_request_headers, *drop)
    headers = forwarding.strip_hop_by_hop(received, extra=extra)
    if any("_" in name for name, _ in headers) or any("_" in name for name in upstream.strip_request_headers):
        # CGI, WSGI, PHP and Rack read ``X_Forwarded_Host`` as ``X-Forwarded-Host`` (both become
        # HTTP_X_FORWARDED_HOST): an underscore spelling of a field we drop or write is dropped too.
        banned = {_spelled(name) for name in (*extra, *forwarding.HOP_BY_HOP_FIELDS,
                                              *forwarding.connection_listed_fields(received))}  # fmt: skip
        headers = [(name, value) for name, value in headers if _spelled(name) not in banned]
    forwarded_for = forwarding.forwarded_for_value(received, head.peer)
    if forwarded_for:
        headers.append(("X-Forwarded-For", forwarded_for))
    headers.append(("X-Forwarded-Proto", head.scheme))
    forwarded_host = keyed_host or settings.public_host
    if forwarded_host:
        headers.append(("X-Forwarded-Host", forwarded_host))
    return forwarding.append_via(headers, head.version, node_name)


def stripped_fields(head: RequestHead, settings: EdgeSettings) -> list[str]:
    """Names of the override fields the client sent that the origin will not see (logs, counters)."""
    stripped = {_spelled(name): name for name in settings.upstream.strip_request_headers}
    sent = {_spelled(name.decode("latin-1")) for name, _ in head.raw_headers}
    return sorted(stripped[name] for name in sent if name in stripped)


def _spelled(name: str) -> str:
    """A field name as frameworks that map ``-`` and ``_`` alike read it."""
    return name.lower().replace("_", "-")
