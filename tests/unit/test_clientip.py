"""Client address resolution: trust only X-Forwarded-For entries our own proxies wrote."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge.router.clientip import ClientAddress, client_address, parse_address, parse_networks

TRUSTED = parse_networks(["10.0.0.0/8", "192.168.0.0/16", "fd00::/8"])


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("203.0.113.5", "203.0.113.5"),
        ("  203.0.113.5 ", "203.0.113.5"),
        ("203.0.113.5:5678", "203.0.113.5"),
        ("2001:db8::1", "2001:db8::1"),
        ("[2001:db8::1]", "2001:db8::1"),
        ("[2001:db8::1]:443", "2001:db8::1"),
        ("::ffff:198.51.100.7", "198.51.100.7"),  # IPv4-mapped → IPv4
        ("[::ffff:198.51.100.7]:80", "198.51.100.7"),
        ("::1", "::1"),
        ("", None),
        ("unknown", None),
        ("_hidden", None),
        ("203.0.113.5:", None),
        ("203.0.113.5:http", None),
        ("203.0.113.5:70000", None),
        ("203.0.113.256", None),
        ("[203.0.113.5]", None),  # brackets are for IPv6
        ("[2001:db8::1", None),
        ("[2001:db8::1]443", None),
        ("[2001:db8::1]:", None),
        ("fe80::1%eth0", None),  # zone ids mean nothing off the host that wrote them
        ("1:2", None),
        ("203.0.113.5 198.51.100.7", None),
        ("x" * 500, None),
        ("203.0.113.5\udcff", None),  # aiohttp decodes bad bytes as lone surrogates
        ("٣.٣.٣.٣", None),  # non-ASCII digits
    ],
)
def test_parse_address(text: str, expected: str | None) -> None:
    result = parse_address(text)
    assert result == (None if expected is None else ipaddress.ip_address(expected))


@pytest.mark.parametrize(
    ("peer", "xff", "address", "source", "detail"),
    [
        # untrusted peer: the header is ignored, whatever it says
        ("198.51.100.7", ["1.2.3.4"], "198.51.100.7", "peer", "not a trusted proxy"),
        ("198.51.100.7:51234", [], "198.51.100.7", "peer", "not a trusted proxy"),
        # trusted peer without a header
        ("10.0.0.2", [], "10.0.0.2", "peer", "sent no X-Forwarded-For"),
        ("10.0.0.2", ["", " , "], "10.0.0.2", "peer", "sent no X-Forwarded-For"),
        # one hop
        ("10.0.0.2", ["203.0.113.5"], "203.0.113.5", "x-forwarded-for", "right-most untrusted"),
        # a chain through our own proxies: skip trusted hops from the right
        ("10.0.0.2", ["203.0.113.5, 10.1.1.1, 192.168.3.4"], "203.0.113.5", "x-forwarded-for", "entry (0)"),
        # the client forged entries to the left; the right-most untrusted one wins
        ("10.0.0.2", ["6.6.6.6, 203.0.113.5, 10.1.1.1"], "203.0.113.5", "x-forwarded-for", "entry (1)"),
        # several header lines are one list, in order
        ("10.0.0.2", ["6.6.6.6", "203.0.113.5", "10.1.1.1"], "203.0.113.5", "x-forwarded-for", "entry (1)"),
        # empty list elements are skipped, not malformed
        ("10.0.0.2", ["203.0.113.5,,", " ,10.1.1.1"], "203.0.113.5", "x-forwarded-for", "right-most"),
        # all trusted: the left-most
        ("10.0.0.2", ["10.9.9.9, 192.168.1.1"], "10.9.9.9", "x-forwarded-for", "every X-Forwarded-For entry"),
        # malformed right-most entry: nothing beyond the peer is vouched for
        ("10.0.0.2", ["203.0.113.5, unknown"], "10.0.0.2", "peer", "entry 1 'unknown' is malformed"),
        # malformed entry behind a trusted hop: the last good (trusted) address
        ("10.0.0.2", ["203.0.113.5, garbage, 10.1.1.1"], "10.1.1.1", "x-forwarded-for", "'garbage' is malformed"),
        # ports, brackets and mapped addresses
        ("10.0.0.2:443", ["[2001:db8::7]:5555"], "2001:db8::7", "x-forwarded-for", "right-most"),
        ("[::ffff:10.0.0.2]:443", ["::ffff:203.0.113.5"], "203.0.113.5", "x-forwarded-for", "right-most"),
        ("10.0.0.2", ["203.0.113.5:8080, [fd00::1]:80"], "203.0.113.5", "x-forwarded-for", "entry (0)"),
        # an IPv6 proxy
        ("[fd00::2]:443", ["2001:db8::9"], "2001:db8::9", "x-forwarded-for", "right-most"),
        # an unparseable peer (a Unix socket, say): no address, and the header is not believed
        ("", ["203.0.113.5"], None, "peer", "is not an IP address"),
        ("/run/router.sock", ["203.0.113.5"], None, "peer", "is not an IP address"),
    ],
)
def test_client_address(peer: str, xff: list[str], address: str | None, source: str, detail: str) -> None:
    result = client_address(peer, xff, TRUSTED)
    assert result.address == (None if address is None else ipaddress.ip_address(address))
    assert result.source == source
    assert detail in result.detail


def test_nothing_trusted_means_peer_always() -> None:
    assert client_address("10.0.0.2", ["203.0.113.5"], []) == ClientAddress(
        ipaddress.ip_address("10.0.0.2"), "peer", "peer is not a trusted proxy"
    )


def test_long_malformed_entries_are_truncated_in_detail() -> None:
    result = client_address("10.0.0.2", ["y" * 10_000], TRUSTED)
    assert result.address == ipaddress.ip_address("10.0.0.2")
    assert len(result.detail) < 300


@pytest.mark.parametrize(
    ("values", "message"),
    [
        (["10.0.0.1/8"], r"trusted_proxies\[0\] \('10.0.0.1/8'\): .*host bits"),
        (["10.0.0.0/8", "nonsense"], r"trusted_proxies\[1\] \('nonsense'\)"),
    ],
)
def test_parse_networks_names_bad_entry(values: list[str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_networks(values)


# --- properties --------------------------------------------------------------------------------

_header_text = st.text(alphabet=st.characters(codec="utf-8"), max_size=80)
_addresses = st.one_of(
    st.ip_addresses(v=4).map(str),
    st.ip_addresses(v=6).map(str),
    st.sampled_from(["10.1.2.3", "192.168.0.9", "fd00::5", "10.0.0.2"]),  # trusted ones
)
_entries = st.one_of(
    _addresses,
    _addresses.map(lambda a: f"[{a}]:443" if ":" in a else f"{a}:8080"),
    st.sampled_from(["unknown", "_hidden", "", "  ", "1.2.3", "[::1", "::ffff:1.2.3.4"]),
    _header_text,
)


def _appearing(peer: str, xff: list[str]) -> set[object]:
    """Every address the inputs spell, normalised the way the resolver normalises them."""
    found: set[object] = set()
    for text in [peer, *(entry for line in xff for entry in line.split(","))]:
        address = parse_address(text)
        if address is not None:
            found.add(address)
    return found


@settings(max_examples=300)
@given(peer=st.one_of(_addresses, _header_text), xff=st.lists(_header_text, max_size=4))
def test_never_raises_on_arbitrary_text(peer: str, xff: list[str]) -> None:
    result = client_address(peer, xff, TRUSTED)
    assert result.address is None or result.address in _appearing(peer, xff)


@settings(max_examples=300)
@given(
    peer=st.sampled_from(["10.0.0.2", "[fd00::2]:443", "198.51.100.7"]),
    lines=st.lists(st.lists(_entries, max_size=5).map(", ".join), max_size=3),
)
def test_result_is_peer_or_a_header_address(peer: str, lines: list[str]) -> None:
    result = client_address(peer, lines, TRUSTED)
    peer_address = parse_address(peer)
    assert result.address is not None
    if result.source == "peer":
        assert result.address == peer_address
    else:
        assert result.address in _appearing("", lines)
    if peer_address is not None and not any(peer_address in net for net in TRUSTED):
        assert result.address == peer_address  # an untrusted peer can never redirect us


@given(client=st.ip_addresses(v=4), hops=st.lists(st.sampled_from(["10.1.1.1", "192.168.4.4"]), max_size=4))
def test_real_client_behind_trusted_chain_is_found(client: ipaddress.IPv4Address, hops: list[str]) -> None:
    if any(client in net for net in TRUSTED):
        return
    result = client_address("10.0.0.2", [", ".join([str(client), *hops])], TRUSTED)
    assert result.address == client
