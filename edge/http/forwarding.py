"""What an HTTP/1.1 intermediary must change in a message it forwards (RFC 9110 §7.6).

Pure functions over header lists so the proxy handler stays a thin driver and the rules are
table-tested: which fields are hop-by-hop (§7.6.1), how ``Via`` grows and reveals a loop
(§7.6.3), and the de-facto ``X-Forwarded-*`` fields origins use to see the real client.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

from edge.http.headers import HeaderList, get_all, get_first, split_list

# RFC 9110 §7.6.1 names Connection, Proxy-Connection, Keep-Alive, TE, Transfer-Encoding and
# Upgrade. Proxy-Authenticate/-Authorization concern the hop to *this* proxy, and Trailer
# announces trailers we never relay (aiohttp cannot send them), so they are dropped too.
HOP_BY_HOP_FIELDS = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-connection",
        "te",
        "transfer-encoding",
        "upgrade",
        "proxy-authenticate",
        "proxy-authorization",
        "trailer",
    }
)


# Request fields that frameworks honour to rewrite the URL, method, host or scheme they think they
# serve, while a cache keys on none of them: one hostile value would be stored for everyone (cache
# poisoning).  Removed from every forwarded request by default (``upstream.strip_request_headers``).
# ``Forwarded``/``X-Forwarded-Host`` are replaced by values the edge controls, not relayed.
DEFAULT_STRIPPED_REQUEST_FIELDS = (
    "forwarded",
    "x-forwarded-host",
    "x-forwarded-server",
    "x-forwarded-port",
    "x-forwarded-prefix",
    "x-forwarded-scheme",
    "x-forwarded-ssl",
    "x-original-host",
    "x-host",
    "x-original-url",
    "x-rewrite-url",
    "x-http-method-override",
    "x-http-method",
    "x-method-override",
    "x-original-method",
    "x-scheme",
    "x-url-scheme",
    "front-end-https",
    "x-real-ip",
)


def connection_listed_fields(headers: HeaderList) -> set[str]:
    """Field names a sender marked hop-by-hop by listing them in ``Connection`` (§7.6.1)."""
    listed: set[str] = set()
    for value in get_all(headers, "connection"):
        listed.update(option.lower() for option in split_list(value))
    return listed


def strip_hop_by_hop(headers: HeaderList, extra: Iterable[str] = ()) -> list[tuple[str, str]]:
    """Remove hop-by-hop fields, those named in ``Connection``, and any ``extra`` names.

    The order and repetition of every other line are kept: origins and clients may depend on
    both (e.g. several ``Set-Cookie`` or ``Link`` lines).
    """
    dropped = HOP_BY_HOP_FIELDS | connection_listed_fields(headers) | {name.lower() for name in extra}
    return [(name, value) for name, value in headers if name.lower() not in dropped]


def via_entry(http_version: tuple[int, int], pseudonym: str) -> str:
    """One ``Via`` member for this hop: ``1.1 name`` (the protocol name is omitted for HTTP)."""
    major, minor = http_version
    return f"{major}.{minor} {pseudonym}"


def via_pseudonyms(headers: HeaderList) -> list[str]:
    """The received-by part of every ``Via`` member, lower-cased, in order (§7.6.3)."""
    names: list[str] = []
    for value in get_all(headers, "via"):
        for member in split_list(value):
            parts = member.split()
            if len(parts) >= 2:
                names.append(parts[1].lower())
    return names


def is_loop(headers: HeaderList, pseudonym: str) -> bool:
    """True when this node already handled the message: it would forward it to itself forever."""
    return pseudonym.lower() in via_pseudonyms(headers)


def append_via(headers: HeaderList, http_version: tuple[int, int], pseudonym: str) -> list[tuple[str, str]]:
    """Headers with this hop's ``Via`` member appended after the existing ones."""
    return [*headers, ("Via", via_entry(http_version, pseudonym))]


def forwarded_for_value(headers: HeaderList, peer: str | None) -> str | None:
    """``X-Forwarded-For`` with the peer appended to whatever earlier proxies recorded."""
    previous = [item for value in get_all(headers, "x-forwarded-for") for item in split_list(value)]
    if peer:
        previous.append(peer)
    return ", ".join(previous) if previous else None


# RFC 3986 §3.2.2/§3.2.3: host = IP-literal / IPv4address / reg-name, then an optional ":" port.
# reg-name is *( unreserved / pct-encoded / sub-delims ); IPv4 addresses match it too.
_REG_NAME = r"(?:[A-Za-z0-9\-._~!$&'()*+,;=]|%[0-9A-Fa-f]{2})*"
_IP_LITERAL = r"\[(?:[0-9A-Fa-f:.]+|v[0-9A-Fa-f]+\.[A-Za-z0-9\-._~!$&'()*+,;=:]+)\]"
_HOST_FIELD = re.compile(rf"(?:{_IP_LITERAL}|{_REG_NAME})(?::[0-9]*)?")
MAX_HOST_LENGTH = 255


def host_field_problem(values: Sequence[str], http_version: tuple[int, int]) -> str | None:
    """Why a request's ``Host`` lines are unacceptable, or None (RFC 9112 §3.2).

    A server must answer 400 to an HTTP/1.1 request without ``Host``, to any request with more
    than one ``Host`` line, and to one whose value is not ``uri-host [":" port]``.  Checking this
    before the cache is consulted keeps hostile names out of keys, logs and origin requests alike.
    """
    if len(values) > 1:
        return "more than one Host header"
    if not values:
        return "missing Host header" if http_version >= (1, 1) else None
    value = values[0].strip(" \t")
    if len(value) > MAX_HOST_LENGTH:
        return "Host header too long"
    if _HOST_FIELD.fullmatch(value) is None:
        return "invalid Host header"
    return None


def target_authority(target: str) -> str | None:
    """The authority of an absolute-form request target, userinfo dropped (RFC 9112 §3.2.2: a
    server uses it and ignores ``Host``); None for any other form."""
    if target.startswith("/"):
        return None
    scheme, separator, rest = target.partition("://")
    if not separator or not scheme:
        return None
    end = len(rest)
    for delimiter in "/?#":
        index = rest.find(delimiter)
        if 0 <= index < end:
            end = index
    return rest[:end].rpartition("@")[2]


# -- Max-Forwards (RFC 9110 §7.6.2): TRACE and OPTIONS stop at the hop where it reaches zero -----

MAX_FORWARDS_METHODS = frozenset({"TRACE", "OPTIONS"})
# What a TRACE answer never reflects (RFC 9110 §9.3.8: fields likely to carry sensitive data).
TRACE_HIDDEN_FIELDS = frozenset(
    {"authorization", "proxy-authorization", "cookie", "edgecache-peer", "x-api-key", "x-auth-token"}
)


def max_forwards(headers: HeaderList) -> int | None:
    """The ``Max-Forwards`` value (1*DIGIT, the first line), or None when absent or not a number."""
    value = get_first(headers, "max-forwards")
    if value is None:
        return None
    value = value.strip(" \t")
    if not value.isascii() or not value.isdigit() or len(value) > 18:
        return None
    return int(value)


def trace_reflection(method: str, target: str, version: tuple[int, int], headers: HeaderList) -> bytes:
    """The ``message/http`` content of a TRACE answered here: the request as received, less the
    fields that may carry credentials."""
    lines = [f"{method} {target} HTTP/{version[0]}.{version[1]}"]
    lines.extend(f"{name}: {value}" for name, value in headers if name.lower() not in TRACE_HIDDEN_FIELDS)
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1", "replace")
