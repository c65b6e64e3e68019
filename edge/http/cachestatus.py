"""The ``Cache-Status`` response field (RFC 9211) and the legacy ``X-Cache`` summary.

RFC 9211 §2: the value is a Structured Fields List (RFC 8941 / RFC 9651); "Each member of the List
represents a cache that has handled the request. The first member represents the cache closest to
the origin server, and the last member represents the cache closest to the user" — so a cache
*appends* its member at the end, and "When adding a value to the Cache-Status header field, caches
SHOULD preserve the existing field value".  "Each List member identifies the cache that inserted
it, and this identifier MUST be a String or Token."  Parameters (§2.1-§2.8): ``hit`` (Boolean),
``fwd`` (Token), ``fwd-status`` (Integer), ``ttl`` (Integer, negative when stale), ``stored``
(Boolean), ``collapsed`` (Boolean), ``key`` (String), ``detail`` (String or Token).  "hit" and
"fwd" are exclusive.  Serialisation goes through ``http_sfv``, never by hand.

RFC 9211 §2 also says an intermediary "SHOULD NOT append a Cache-Status member to responses that
it generates locally ... unless the generated response is based upon a stored response (e.g., 304
... and 206 ...)" — that is the proxy's decision (it simply doesn't call us for a local 400).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, get_args

from http_sfv.item import Item
from http_sfv.list import List as SfList
from http_sfv.types import Token

FwdReason = Literal["bypass", "method", "uri-miss", "vary-miss", "miss", "request", "stale", "partial", "peer"]
# RFC 9211 §2.2, "from most specific to least".
FWD_REASONS: tuple[FwdReason, ...] = get_args(FwdReason)

_SF_TOKEN = re.compile(r"[A-Za-z*][!#$%&'*+\-.^_`|~0-9A-Za-z:/]*", re.ASCII)
_SF_INT_MAX = 999_999_999_999_999  # RFC 8941 §3.3.1


def _printable(text: str) -> bool:
    return all(0x20 <= ord(char) <= 0x7E for char in text)


def _sanitize(text: str) -> str:
    """Make free text fit an sf-string (printable ASCII): escape anything else as %XX of UTF-8."""
    if _printable(text):
        return text
    out: list[str] = []
    for char in text:
        if 0x20 <= ord(char) <= 0x7E:
            out.append(char)
        else:
            out.extend(f"%{byte:02X}" for byte in char.encode("utf-8", "surrogatepass"))
    return "".join(out)


def _token_or_string(text: str) -> Token | str:
    return Token(text) if _SF_TOKEN.fullmatch(text) else text


@dataclass(frozen=True)
class CacheStatus:
    """This cache's member of ``Cache-Status`` (RFC 9211 §2).

    ``cache_name`` is serialised as a Token when it is one, else as a String; a name that cannot
    be either (non-printable or non-ASCII characters, or empty) is a configuration error and
    raises ``ValueError`` here.  ``key`` and ``detail`` come from request data, so instead of
    failing they are made printable-ASCII (non-printable characters percent-escaped).  ``detail``
    is a Token when it is one, else a String.
    """

    cache_name: str
    hit: bool = False
    fwd: FwdReason | None = None
    fwd_status: int | None = None
    ttl: int | None = None
    stored: bool | None = None
    collapsed: bool | None = None
    key: str | None = None
    detail: str | None = None
    fwd_origin: str | None = None  # extension parameter: which origin server answered

    def __post_init__(self) -> None:
        if not self.cache_name or not _printable(self.cache_name):
            raise ValueError(f"cache name {self.cache_name!r} is neither an sf-token nor an sf-string")
        if self.hit and self.fwd is not None:
            raise ValueError('RFC 9211 §2.1: "hit" and "fwd" are exclusive')
        if self.fwd is not None and self.fwd not in FWD_REASONS:
            raise ValueError(f"unknown fwd reason {self.fwd!r}")
        if self.fwd_status is not None and not 100 <= self.fwd_status <= 999:
            raise ValueError(f"fwd-status {self.fwd_status} is not a status code")
        if self.ttl is not None and not -_SF_INT_MAX <= self.ttl <= _SF_INT_MAX:
            raise ValueError(f"ttl {self.ttl} is outside the sf-integer range")

    def to_item(self) -> Item:
        """The member as an ``Item`` with its parameters in RFC 9211 order."""
        item = Item(_token_or_string(self.cache_name))
        params = item.params
        if self.hit:
            params["hit"] = True
        if self.fwd is not None:
            params["fwd"] = Token(self.fwd)
        if self.fwd_status is not None:
            params["fwd-status"] = self.fwd_status
        if self.ttl is not None:
            params["ttl"] = self.ttl
        if self.stored is not None:
            params["stored"] = self.stored
        if self.collapsed is not None:
            params["collapsed"] = self.collapsed
        if self.key is not None:
            params["key"] = _sanitize(self.key)
        if self.detail is not None:
            params["detail"] = _token_or_string(_sanitize(self.detail))
        if self.fwd_origin is not None:
            params["fwd-origin"] = _sanitize(self.fwd_origin)
        return item

    def serialize(self) -> str:
        """This member alone, as a ``Cache-Status`` field value (RFC 9211 §2, RFC 8941 §4.1)."""
        members = SfList()
        members.append(self.to_item())
        return str(members)


def parse_cache_status(values: Sequence[str]) -> SfList | None:
    """Parse ``Cache-Status`` lines as one SF List (RFC 8941 §4.2: lines are combined with ","),
    ``None`` if absent, empty or invalid."""
    text = ", ".join(value for value in values if value.strip(" \t"))
    if not text:
        return None
    parsed = SfList()
    try:
        parsed.parse(text.encode("ascii"))
    except (ValueError, IndexError, UnicodeError):
        return None
    return parsed


def append_cache_status(existing_values: Sequence[str], status: CacheStatus) -> str:
    """The ``Cache-Status`` value with our member appended after the upstream ones (RFC 9211 §2).

    A valid upstream value is preserved verbatim ("SHOULD preserve the existing field value").
    An invalid one is dropped: RFC 8941 §4.2 makes a recipient discard the *whole* field when any
    of it fails to parse, so keeping it would also hide our member.
    """
    ours = status.serialize()
    if parse_cache_status(existing_values) is None:
        return ours
    upstream = ", ".join(value.strip(" \t") for value in existing_values if value.strip(" \t"))
    return f"{upstream}, {ours}"


def x_cache_value(status: CacheStatus) -> str:
    """A one-word summary for the legacy ``X-Cache`` header (no RFC; conventional CDN usage).

    ===========  ==============================================================================
    HIT          ``hit`` and not stale (ttl absent or >= 0)
    STALE        ``hit`` with a negative ttl: served stale without going forward (RFC 5861)
    REVALIDATED  ``fwd=stale`` and the next hop answered 304: the stored response was reused
    EXPIRED      ``fwd=stale`` and a full response replaced the stored one
    MISS         ``fwd`` = uri-miss, vary-miss, miss or partial — or nothing at all recorded
    REFRESH      ``fwd=request``: the client's request directives forbade using the fresh copy
    BYPASS       ``fwd=bypass``: configuration says this request is not cached
    PASS         ``fwd=method``: the method must go to the origin (unsafe / not cacheable)
    ===========  ==============================================================================
    """
    if status.hit:
        return "STALE" if status.ttl is not None and status.ttl < 0 else "HIT"
    if status.fwd == "stale":
        return "REVALIDATED" if status.fwd_status == 304 else "EXPIRED"
    if status.fwd == "request":
        return "REFRESH"
    if status.fwd == "bypass":
        return "BYPASS"
    if status.fwd == "method":
        return "PASS"
    return "MISS"
