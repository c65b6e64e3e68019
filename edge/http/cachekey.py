"""The primary cache key: which stored responses a request's target URI can reach (RFC 9111 §2).

RFC 9111 §2: "The primary cache key consists of the request method and target URI"; §4 lets a
stored response be reused only when "the presented target URI (Section 7.1 of [HTTP]) and that of
the stored response match".  What "match" means is RFC 9110 §4.2.3 (http(s) URI normalization and
comparison) on top of RFC 3986 §6.2.2 (syntax-based normalization).  A CDN has two ways to be wrong
here and only one of them is safe: an over-specific key merely duplicates entries (lower hit ratio);
an over-general key *merges distinct resources* and serves one resource's bytes for another — the
essence of cache poisoning.  So every normalization below is one the RFCs state preserves meaning,
and everything else is kept byte-for-byte:

* scheme and host are case-insensitive (RFC 3986 §6.2.2.1, RFC 9110 §4.2.3): lower-cased;
* a port equal to the scheme's default, or an empty port, is the same origin (RFC 9110 §4.2.3,
  RFC 3986 §6.2.3): removed; leading zeros in a port are dropped (it is a number);
* an empty path is "/" for http(s) (RFC 9110 §4.2.3);
* percent-encoded *unreserved* characters are equivalent to the characters (RFC 3986 §6.2.2.2;
  RFC 9110 §4.2.3 "characters other than those in the reserved set are equivalent to their
  percent-encoded octets"): ``%41`` → ``A``, ``%7e`` → ``~``; the hex digits of every remaining
  escape are upper-cased (RFC 3986 §6.2.2.1).  A *reserved* escape such as ``%2F`` is kept: ``/a%2Fb``
  and ``/a/b`` are different resources;
* characters that may not appear raw in a request-target (controls, space, ``"<>\\^`{|}``, DEL and
  non-ASCII) are percent-encoded (as UTF-8, or as the original bytes for surrogate-escaped text):
  the equivalence above makes this meaning-preserving, and it guarantees a key never carries a raw
  control character into a log line, a ``Cache-Status: key=`` or an index row.

Deliberately NOT done:

* dot segments (``/a/../b``) are NOT resolved.  RFC 3986 §6.2.2.3 only licenses that for references
  being resolved, and origins disagree on what a literal ``..`` in a request-target means (some 400,
  some serve a file, some route it to an application).  Resolving it here would let a request for
  ``/x/../index.html`` fill the entry for ``/index.html`` with whatever the origin answered to the
  *literal* path.  Likewise ``//`` is not collapsed.
* the query is kept verbatim (apart from the escaping of characters that cannot appear raw and of
  upper-casing escape hex digits) unless the operator opts in to ``ignore_query``, ``sort_query`` or
  ``drop_params``; applications read ``?a=1&b=2`` and ``?b=2&a=1`` differently often enough that the
  RFCs do not call them equivalent.
* an empty query (``/a?``) is treated as no query.  RFC 3986 §6.2.3 says a normalizer should keep the
  delimiter, but no server we know distinguishes them, our HTTP stack (yarl) cannot tell them apart
  either, and a purge of ``https://h/a`` must reach the entry stored for ``/a?``.
* the request method is not part of the key: GET and HEAD share stored responses (RFC 9111 §4
  "the request method associated with the stored response allows it to be used for the presented
  request" — a stored GET response can answer HEAD); the proxy decides which methods reach the
  cache at all.

The key is itself an absolute URL (``https://example.com/a/b?x=1``), so a prefix purge can be
expressed as a URL and normalized by exactly the same code (``normalize_url``), and ``key_hash``
turns it into a file name so nothing a client sends ever becomes a path.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from urllib.parse import unquote, urlsplit

_ALPHA = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_DIGIT = "0123456789"
_HEX = frozenset("0123456789abcdefABCDEF")
# RFC 3986 §2.3 unreserved, §2.2 reserved (gen-delims + sub-delims).
UNRESERVED = frozenset(_ALPHA + _DIGIT + "-._~")
_SUB_DELIMS = frozenset("!$&'()*+,;=")
# What may stay raw in a path: pchar = unreserved / pct-encoded / sub-delims / ":" / "@", plus "/".
# "?" and "#" would end the path, so they are escaped even though they are reserved: only a caller
# that mis-split the request-target can hand them to us, and escaping keeps the key injective.
_PATH_RAW = UNRESERVED | _SUB_DELIMS | frozenset(":@/%")
# query = *( pchar / "/" / "?" ); "#" would start a fragment.
_QUERY_RAW = _PATH_RAW | frozenset("?")
# reg-name / IP-literal characters, plus ":" for the port; "%" for pct-encoded reg-names.
_HOST_RAW = UNRESERVED | _SUB_DELIMS | frozenset(":[]%")

DEFAULT_PORTS = {"http": 80, "https": 443}


@dataclass(frozen=True)
class CacheKeyConfig:
    """Operator choices that widen the key beyond what the RFCs call equivalent (DESIGN §3).

    ``drop_params`` holds parameter names compared exactly (after percent-decoding the name), or
    simple prefix patterns ending in ``*`` such as ``utm_*``.  ``include_host=False`` is for single-site
    deployments where every Host maps to the same origin content.
    """

    ignore_query: bool = False
    sort_query: bool = False
    drop_params: frozenset[str] = field(default_factory=frozenset)
    include_host: bool = True

    def __post_init__(self) -> None:
        for pattern in self.drop_params:
            if not pattern or "*" in pattern[:-1]:
                raise ValueError(f"drop_params pattern {pattern!r}: only a trailing '*' is supported")


def _encode_char(char: str) -> str:
    """Percent-encode one character as its UTF-8 octets (surrogate escapes as the original byte)."""
    try:
        data = char.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        data = char.encode("utf-8", "surrogatepass")
    return "".join(f"%{byte:02X}" for byte in data)


def _normalize_component(text: str, raw_ok: frozenset[str], *, decode_unreserved: bool, fold_case: bool = False) -> str:
    """RFC 3986 §6.2.2.1/§6.2.2.2 on one component; escape what may not appear raw.

    A ``%`` not followed by two hex digits is kept as-is: it is malformed, and origins differ on
    whether they reject it or read it literally, so it must not be merged with ``%25``.
    ``fold_case`` lower-cases the (decoded) characters but never the hex digits of an escape.
    """
    out: list[str] = []
    index = 0
    length = len(text)
    while index < length:
        char = text[index]
        if char == "%" and index + 2 < length and text[index + 1] in _HEX and text[index + 2] in _HEX:
            hex_digits = text[index + 1 : index + 3]
            decoded = chr(int(hex_digits, 16))
            if decode_unreserved and decoded in UNRESERVED:
                out.append(decoded.lower() if fold_case else decoded)
            else:
                out.append("%" + hex_digits.upper())
            index += 3
            continue
        if fold_case and "A" <= char <= "Z":
            char = char.lower()
        out.append(char if char in raw_ok else _encode_char(char))
        index += 1
    return "".join(out)


def decode_unreserved(path: str) -> str:
    """A path with percent-encoded unreserved characters decoded, as keys normalise it (§6.2.2.2)."""
    return _normalize_component(path, _PATH_RAW, decode_unreserved=True)


def _split_host_port(host: str) -> tuple[str, str | None]:
    """Split ``host[:port]`` (IPv6 literals in brackets); the port is ``None`` when absent."""
    if host.startswith("["):
        close = host.find("]")
        if close != -1:
            rest = host[close + 1 :]
            if rest.startswith(":"):
                return host[: close + 1], rest[1:]
            if not rest:
                return host, None
        return host, None
    if host.count(":") == 1:
        name, _, port = host.partition(":")
        return name, port
    return host, None


def _normalize_host(scheme: str, host: str) -> str:
    """Lower-case the host, drop a default or empty port, canonicalise the port number."""
    name, port = _split_host_port(host.strip())
    # Brackets are only meaningful around a whole IP-literal (RFC 3986 §3.2.2); anywhere else they
    # are escaped so the key still parses as a URL.
    is_ip_literal = name.startswith("[") and name.endswith("]") and name.count("[") == name.count("]") == 1
    raw_ok = _HOST_RAW if is_ip_literal else _HOST_RAW - {"[", "]"}
    name = _normalize_component(name, raw_ok, decode_unreserved=True, fold_case=True)
    if port is None:
        return name
    if port == "":
        return name  # RFC 3986 §6.2.3: "http://h:/" is "http://h/"
    if port.isascii() and port.isdigit() and len(port) <= 10:
        number = int(port)
        if DEFAULT_PORTS.get(scheme) == number:
            return name
        return f"{name}:{number}"
    # Not a port at all; keep it (escaped) so distinct garbage stays distinct.
    return name + ":" + _normalize_component(port, _HOST_RAW - {":", "[", "]"}, decode_unreserved=False)


def _param_dropped(name: str, patterns: frozenset[str]) -> bool:
    candidates = {name, unquote(name)}
    for pattern in patterns:
        if pattern.endswith("*"):
            prefix = pattern[:-1]
            if any(candidate.startswith(prefix) for candidate in candidates):
                return True
        elif pattern in candidates:
            return True
    return False


def _normalize_query(query: str | None, config: CacheKeyConfig) -> str | None:
    if query is None or config.ignore_query:
        return None
    query = _normalize_component(query, _QUERY_RAW, decode_unreserved=False)
    if config.sort_query or config.drop_params:
        # Only here do we interpret the query as name=value pairs joined by "&" (the
        # application/x-www-form-urlencoded convention): the operator asked us to.
        params = [part for part in query.split("&") if part]
        if config.drop_params:
            params = [part for part in params if not _param_dropped(part.partition("=")[0], config.drop_params)]
        if config.sort_query:
            # Stable sort by name only: repeated names keep their relative order, which
            # applications commonly rely on (a=1&a=2 is a list [1, 2]).
            params.sort(key=lambda part: part.partition("=")[0])
        query = "&".join(params)
    return query or None


def cache_key(scheme: str, host: str, path: str, query: str | None, config: CacheKeyConfig) -> str:
    """The primary cache key for a request (RFC 9111 §2, §4; RFC 9110 §4.2.3; RFC 3986 §6.2.2).

    ``path`` and ``query`` are the raw (still percent-encoded) parts of the request-target, without
    the ``?``; ``host`` is the Host / :authority value, port included.  Returns an absolute URL string
    normalised as described in the module docstring; equal keys mean "same target URI".
    """
    scheme_l = scheme.strip().lower()
    norm_scheme = _normalize_component(scheme_l, UNRESERVED | frozenset("+"), decode_unreserved=False)
    norm_host = _normalize_host(scheme_l, host) if config.include_host else ""
    if not path.startswith("/"):
        # origin-form always starts with "/"; "" is "/" (RFC 9110 §4.2.3).  Prefixing also keeps a
        # relative-looking path from running into the host part of the key.
        path = "/" + path
    norm_path = _normalize_component(path, _PATH_RAW, decode_unreserved=True)
    norm_query = _normalize_query(query, config)
    key = f"{norm_scheme}://{norm_host}{norm_path}"
    if norm_query is not None:
        key += "?" + norm_query
    return key


def key_hash(key: str) -> str:
    """Hex SHA-256 of a cache key: the storage name of its entry (DESIGN §3).

    Keys never reach the file system as paths; the hash is fixed-length, filesystem-safe and
    collision-resistant.  (Not an RFC rule; the RFC 9111 §2 key is the input.)
    """
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()


def normalize_url(absolute_url: str, config: CacheKeyConfig | None = None) -> str:
    """The cache key an absolute URL maps to — the same one ``cache_key`` builds from its parts.

    Used for purge requests (DESIGN §4) and for the URIs an unsafe method invalidates (RFC 9111
    §4.4), so a URL written by an operator or an origin reaches exactly the entries a request for
    it would.  Userinfo and fragment are not part of the target URI (RFC 9110 §4.2.4, §7.1) and
    are dropped.  Raises ``ValueError`` for a URL without scheme and host.
    """
    config = config or CacheKeyConfig()
    # Escape controls, spaces and non-ASCII first, exactly as cache_key would: urlsplit silently
    # deletes tabs and newlines, which would make the purge miss the entry.
    text = "".join(char if 0x21 <= ord(char) <= 0x7E else _encode_char(char) for char in absolute_url.strip(" \t\r\n"))
    parts = urlsplit(text)
    if not parts.scheme or not parts.netloc:
        raise ValueError(f"not an absolute http(s) URL: {absolute_url!r}")
    authority = parts.netloc.rpartition("@")[2]
    return cache_key(parts.scheme, authority, parts.path, parts.query or None, config)


def url_prefix_matches(key: str, prefix_url: str, config: CacheKeyConfig | None = None) -> bool:
    """True when ``key`` falls under the purge prefix ``prefix_url`` (DESIGN §4 prefix purge).

    The prefix is normalised with ``normalize_url`` under the same config as the keys, so
    ``https://EXAMPLE.com:443/img`` covers ``https://example.com/img/a.png``.  Because a normalised
    URL always has a path starting with ``/``, a prefix never crosses a host boundary
    (``https://a.com`` does not match ``https://a.com.evil/``).  The match is a plain string prefix
    otherwise: ``/img`` covers ``/img/…`` and ``/images``, as CDN prefix purges conventionally do.
    """
    return key.startswith(normalize_url(prefix_url, config))
