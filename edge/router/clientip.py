"""Which address is the client?  The socket peer, or ``X-Forwarded-For`` behind trusted proxies.

Why so careful: ``X-Forwarded-For`` is written by whoever sent the request, so anything but the
entries our own proxies appended can be forged.  We believe the header only when the socket peer
is in a configured trusted network, and then only as far as the chain of trusted hops reaches:

1. The peer is not trusted → the peer is the client (the header is ignored).
2. Otherwise combine every ``X-Forwarded-For`` line in order (RFC 9110 §5.3: repeated lines of a
   list field equal one comma-joined line), drop empty elements (§5.6.1), and walk from the right,
   the hop nearest to us.  A trusted entry is one of our proxies: keep walking.  The first
   untrusted entry is the client.
3. Every entry is trusted → the left-most one (the request began inside our own network).
4. A malformed entry (``unknown``, an obfuscated name, garbage) stops the walk: whatever is to its
   left was written by someone we cannot vouch for, so we answer with the last good address seen
   — the trusted entry to its right, or the peer itself when the right-most entry is malformed.

Entries may carry a port (``1.2.3.4:5678``) or brackets (``[2001:db8::1]:443``); both are
stripped.  IPv4-mapped IPv6 (``::ffff:1.2.3.4``) is normalised to IPv4 everywhere, so trusted
networks are written as IPv4.  IPv6 zone identifiers (``fe80::1%eth0``) are malformed: a zone only
means something on the host that wrote it.

Pure: no I/O.  :func:`client_address` never raises; a peer we cannot parse (a Unix socket, say)
yields ``address=None``.
"""

from __future__ import annotations

import functools
import ipaddress
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

__all__ = ["ClientAddress", "IPAddress", "IPNetwork", "client_address", "parse_address", "parse_networks"]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# Long enough for any real address with port and brackets; longer entries are not addresses and
# repeating them verbatim in ``detail`` would let a client inflate our logs.
_MAX_ENTRY = 64


@dataclass(frozen=True, slots=True)
class ClientAddress:
    """The resolved client: the address, where it came from, and a sentence saying why."""

    address: IPAddress | None
    source: Literal["peer", "x-forwarded-for"]
    detail: str


def _normalise(address: IPAddress) -> IPAddress:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def parse_address(text: str) -> IPAddress | None:
    """One address as it appears in a peer name or a forwarding header, or ``None``.

    Accepted: ``1.2.3.4``, ``1.2.3.4:80``, ``2001:db8::1``, ``[2001:db8::1]``,
    ``[2001:db8::1]:443``, surrounding whitespace.  A bare IPv6 address is never read as
    host:port — its colons are the address.
    """
    text = text.strip()
    if not text or len(text) > _MAX_ENTRY or "%" in text:
        return None
    host = text
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            return None
        host, rest = text[1:end], text[end + 1 :]
        if rest and not (rest.startswith(":") and _is_port(rest[1:])):
            return None
        if ":" not in host:  # brackets are for IPv6 only
            return None
    elif text.count(":") == 1:
        host, port = text.split(":")
        if not _is_port(port):
            return None
    if _DOTTED_QUAD.fullmatch(host):  # the common case, without ipaddress's general parser
        a, b, c, d = host.split(".")
        return ipaddress.IPv4Address((int(a) << 24) | (int(b) << 16) | (int(c) << 8) | int(d))
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return None
    return _normalise(address)


# Exactly the IPv4 text ``ipaddress`` accepts: four decimal octets, ASCII digits, 0-255, no leading zeros.
_OCTET = r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
_DOTTED_QUAD = re.compile(rf"{_OCTET}\.{_OCTET}\.{_OCTET}\.{_OCTET}")


_MAX_PEER_MEMO = 128  # longer peer texts are parsed, not remembered


@functools.lru_cache(maxsize=1024)
def _parse_peer(peer: str) -> IPAddress | None:
    """:func:`parse_address` for socket peers: few distinct ones (our proxies), so remembered."""
    return parse_address(peer)


def _is_port(text: str) -> bool:
    return 0 < len(text) <= 5 and text.isascii() and text.isdigit() and int(text) <= 65535


def parse_networks(values: Iterable[str]) -> list[IPNetwork]:
    """Trusted-proxy networks from configuration; raises ``ValueError`` naming the bad entry.

    Host bits are refused (``10.0.0.1/8``) because they usually mean a typo in the prefix length.
    """
    networks: list[IPNetwork] = []
    for index, value in enumerate(values):
        try:
            networks.append(ipaddress.ip_network(value.strip(), strict=True))
        except ValueError as exc:
            raise ValueError(f"trusted_proxies[{index}] ({value!r}): {exc}") from None
    return networks


def _trusted(address: IPAddress, trusted: Sequence[IPNetwork]) -> bool:
    return any(address in network for network in trusted)


def _show(entry: str) -> str:
    return repr(entry if len(entry) <= _MAX_ENTRY else entry[:_MAX_ENTRY] + "…")


def client_address(peer: str, xff_values: Sequence[str], trusted: Sequence[IPNetwork]) -> ClientAddress:
    """Resolve the client address by the rules in the module docstring; never raises."""
    peer_address = _parse_peer(peer) if len(peer) <= _MAX_PEER_MEMO else parse_address(peer)
    if peer_address is None:
        return ClientAddress(None, "peer", f"peer {_show(peer)} is not an IP address")
    if not _trusted(peer_address, trusted):
        return ClientAddress(peer_address, "peer", "peer is not a trusted proxy")
    entries = [entry.strip() for line in xff_values for entry in line.split(",")]
    entries = [entry for entry in entries if entry]
    if not entries:
        return ClientAddress(peer_address, "peer", "trusted peer sent no X-Forwarded-For")

    current: IPAddress = peer_address
    current_source: Literal["peer", "x-forwarded-for"] = "peer"
    for position in range(len(entries) - 1, -1, -1):
        address = parse_address(entries[position])
        if address is None:
            return ClientAddress(
                current,
                current_source,
                f"X-Forwarded-For entry {position} {_show(entries[position])} is malformed; "
                f"using the last good address to its right",
            )
        current, current_source = address, "x-forwarded-for"
        if not _trusted(address, trusted):
            return ClientAddress(
                address, "x-forwarded-for", f"right-most untrusted X-Forwarded-For entry ({position})"
            )
    return ClientAddress(current, "x-forwarded-for", "every X-Forwarded-For entry is trusted; using the left-most")
