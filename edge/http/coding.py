"""Content codings the edge applies itself (RFC 9110 §8.4, §12.5.3): which one a client gets, which
responses may be compressed, and how a transformed response's fields change.  No I/O, no codecs.

* ``Accept-Encoding`` is reduced before lookup to the one coding the client will get — the
  best of the enabled codings it accepts, by its qvalues then our preference, or ``identity``
  — so equivalent header values share one stored variant and the origin is asked for that coding.
  A request without ``Accept-Encoding`` gets ``identity``: RFC 9110 §12.5.3 would allow any coding,
  but clients that send none (curl, scripts) generally cannot decode one.
* A response is compressed when it is a 200 the origin sent without a content coding, of a
  compressible media type, at least ``min_size`` bytes (when its length is known), and neither it
  nor the request carries ``no-transform`` (RFC 9111 §5.2.1.6, §5.2.2.6).
* A transformed response gets ``Content-Encoding``, ``Vary: Accept-Encoding`` and a weak ``ETag``
  (RFC 9110 §8.8.1: the encoded bytes differ, so a strong validator would be a lie); digests of the
  original bytes are dropped.  Every response of a compressible type gets ``Vary: Accept-Encoding``,
  since what is sent for its URL depends on that field from now on.
"""

from __future__ import annotations

from collections.abc import Sequence

from edge.http.cachecontrol import parse_cache_control
from edge.http.headers import HeaderList, get_all, get_first, split_all

IDENTITY = "identity"
# Kept with a response the edge encoded or decoded, never sent: its 304s are matched and merged as
# the origin's representation's (``after_refresh``), not as a response the origin made weak.
MARK_FIELD = "edgecache-transformed"
CODINGS = ("br", "zstd", "gzip")
# Fields describing the bytes before our coding: wrong after it.
_DIGEST_FIELDS = frozenset({"content-md5", "digest", "repr-digest", "content-digest", "content-length"})


def _qvalue(params: list[str]) -> float | None:
    for param in params:
        name, _, value = param.partition("=")
        if name.strip().lower() == "q":
            try:
                weight = float(value.strip())
            except ValueError:
                return None
            return weight if 0 <= weight <= 1 else None
    return 1.0


def accepted(values: Sequence[str]) -> dict[str, float]:
    """The codings an ``Accept-Encoding`` value lists, by lower-cased name, with their qvalues
    (``*`` included as listed; invalid members ignored)."""
    weights: dict[str, float] = {}
    for line in values:
        for member in line.split(","):
            name, *params = member.split(";")
            coding = name.strip().lower()
            if not coding:
                continue
            weight = _qvalue(params)
            if weight is not None:
                weights[coding] = max(weight, weights.get(coding, 0.0)) if coding in weights else weight
    if "x-gzip" in weights and "gzip" not in weights:
        weights["gzip"] = weights["x-gzip"]  # RFC 9110 §8.4.1.3: a compatible alias
    return weights


def preferred(values: Sequence[str], enabled: Sequence[str]) -> str:
    """The coding a request with these ``Accept-Encoding`` lines gets: one of ``enabled`` (in our
    order of preference) or ``identity``."""
    if not values:
        return IDENTITY
    weights = accepted(values)
    wildcard = weights.get("*")
    best, best_weight = IDENTITY, 0.0
    for coding in enabled:
        weight = weights.get(coding, wildcard if wildcard is not None else 0.0)
        if weight > best_weight:
            best, best_weight = coding, weight
    identity_weight = weights.get(IDENTITY)
    if best != IDENTITY and identity_weight is not None and identity_weight > best_weight:
        return IDENTITY  # the client prefers the bytes as they are
    return best


def chosen_for(request_headers: HeaderList, enabled: Sequence[str]) -> str:
    """The coding a request gets: ``preferred``, except ``identity`` for a request that asks
    intermediaries not to transform (RFC 9111 §5.2.1.6) — it gets the bytes as the origin has them."""
    if no_transform(request_headers):
        return IDENTITY
    return preferred(get_all(request_headers, "accept-encoding"), enabled)


def with_accept_encoding(headers: HeaderList, coding: str) -> list[tuple[str, str]]:
    """Request fields with ``Accept-Encoding`` replaced by the one coding chosen."""
    kept = [(name, value) for name, value in headers if name.lower() != "accept-encoding"]
    kept.append(("Accept-Encoding", coding))
    return kept


def content_coding(headers: HeaderList) -> str | None:
    """The response's content coding: None for none (or ``identity``), else the lower-cased list."""
    codings = [value.strip().lower() for value in split_all(headers, "content-encoding")]
    codings = [coding for coding in codings if coding and coding != IDENTITY]
    return ", ".join(codings) if codings else None


def media_type(headers: HeaderList) -> str:
    return (get_first(headers, "content-type") or "").split(";", 1)[0].strip().lower()


def type_matches(media: str, patterns: Sequence[str]) -> bool:
    """``text/*``-style patterns; ``+json``/``+xml`` suffixes match any ``*/*+json`` type."""
    if not media:
        return False
    for pattern in patterns:
        pattern = pattern.strip().lower()
        if pattern == media:
            return True
        if pattern.endswith("/*") and media.startswith(pattern[:-1]):
            return True
        if pattern.startswith("+") and media.endswith(pattern):
            return True
    return False


def no_transform(headers: HeaderList) -> bool:
    return parse_cache_control(get_all(headers, "cache-control")).no_transform


def compressible(
    status: int, request_headers: HeaderList, response_headers: HeaderList, types: Sequence[str], min_size: int,
    length: int | None,
) -> bool:  # fmt: skip
    """May the edge compress this response (see the module docstring)?"""
    return (
        status == 200
        and content_coding(response_headers) is None
        and type_matches(media_type(response_headers), types)
        and (length is None or length >= min_size)
        and not no_transform(response_headers)
        and not no_transform(request_headers)
    )


def varies_by_coding(
    status: int, request_headers: HeaderList, response_headers: HeaderList, types: Sequence[str]
) -> bool:
    """Does what the edge sends for this response depend on ``Accept-Encoding`` (it would compress
    it, or it is already encoded)?  Such responses must say ``Vary: Accept-Encoding``."""
    if status != 200 or no_transform(response_headers):
        return False
    return content_coding(response_headers) is not None or type_matches(media_type(response_headers), types)


def with_vary_accept_encoding(headers: HeaderList) -> list[tuple[str, str]]:
    """``headers`` with ``Accept-Encoding`` added to ``Vary`` (unless listed, or ``Vary: *``)."""
    listed = [value.strip().lower() for value in split_all(headers, "vary")]
    kept = list(headers)
    if "accept-encoding" in listed or "*" in listed:
        return kept
    if not listed:
        kept.append(("Vary", "Accept-Encoding"))
        return kept
    kept = [(name, value) for name, value in kept if name.lower() != "vary"]
    kept.append(("Vary", ", ".join([*(v.strip() for v in split_all(headers, "vary")), "Accept-Encoding"])))
    return kept


def weak_etag(value: str) -> str:
    """RFC 9110 §8.8.1: a transformed representation's validator is weak."""
    text = value.strip()
    return text if text.startswith("W/") else f"W/{text}"


def encoded_headers(headers: HeaderList, coding: str) -> list[tuple[str, str]]:
    """The fields of a response the edge encoded with ``coding`` (or decoded, ``identity``)."""
    kept = [
        (name, weak_etag(value) if name.lower() == "etag" else value)
        for name, value in headers
        if name.lower() not in _DIGEST_FIELDS and name.lower() != "content-encoding"
    ]
    kept = [(name, value) for name, value in kept if name.lower() != MARK_FIELD]
    if coding != IDENTITY:
        kept.append(("Content-Encoding", coding))
    kept.append((MARK_FIELD, coding))
    return with_vary_accept_encoding(kept)


def transformed(headers: HeaderList) -> bool:
    """Did the edge encode (or decode) these stored bytes itself?"""
    return get_first(headers, MARK_FIELD) is not None


def after_refresh(stored: HeaderList, merged: HeaderList) -> list[tuple[str, str]]:
    """A stored response the edge encoded, freshened by a 304 (RFC 9111 §4.3.4): the 304 speaks of
    the origin's representation, so our coding, our weak ETag and ``Vary: Accept-Encoding`` stay."""
    if not transformed(stored):
        return list(merged)
    stored_coding = get_all(stored, "content-encoding")
    dropped = {*_DIGEST_FIELDS, "content-encoding", MARK_FIELD}
    kept = [
        (name, weak_etag(value) if name.lower() == "etag" else value)
        for name, value in merged
        if name.lower() not in dropped
    ]
    kept.extend(("Content-Encoding", value) for value in stored_coding)
    kept.append((MARK_FIELD, get_first(stored, MARK_FIELD) or IDENTITY))
    return with_vary_accept_encoding(kept)
