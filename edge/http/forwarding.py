"""What an HTTP/1.1 intermediary must change in a message it forwards (RFC 9110 §7.6).

Pure functions over header lists so the proxy handler stays a thin driver and the rules are
table-tested: which fields are hop-by-hop (§7.6.1), how ``Via`` grows and reveals a loop
(§7.6.3), and the de-facto ``X-Forwarded-*`` fields origins use to see the real client.
"""

from __future__ import annotations

from collections.abc import Iterable

from edge.http.headers import HeaderList, get_all, split_list

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


def is_valid_host_header(value: str) -> bool:
    """A ``Host`` value a proxy can safely pass on (RFC 9110 §7.2, RFC 3986 authority).

    Whitespace, control characters, userinfo and path separators are refused so that a client
    cannot smuggle a second authority or line into what the origin sees.
    """
    if not value or len(value) > 255:
        return False
    forbidden = set(' \t\r\n/\\@?#"<>`{}|^')
    return not any(char in forbidden or ord(char) < 0x21 or ord(char) > 0x7E for char in value)
