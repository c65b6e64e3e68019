"""What an unsafe request invalidates (RFC 9111 §4.4).

"A cache MUST invalidate the target URI ... when it receives a non-error status code in response
to an unsafe request method (including methods whose safety is unknown)."  "A cache MAY invalidate
other URIs ... In particular, the URI(s) in the Location and Content-Location response header
fields (if present) are candidates for invalidation ... However, a cache MUST NOT trigger an
invalidation under these conditions if the origin ... of the URI to be invalidated differs from
that of the target URI ... This helps prevent denial-of-service attacks."  "A "non-error response"
is one with a 2xx (Successful) or 3xx (Redirection) status code."

We take the MAY: Location and Content-Location are invalidated too, when same-origin.  Turning the
returned URLs into cache keys is ``cachekey.normalize_url``'s job, and "invalidate" (remove, or mark
as needing validation) is the store's.
"""

from __future__ import annotations

from urllib.parse import SplitResult, urljoin, urlsplit, urlunsplit

from edge.http.cachekey import DEFAULT_PORTS
from edge.http.headers import HeaderList, get_all

# RFC 9110 §9.2.1: GET, HEAD, OPTIONS and TRACE are safe.  Method names are case-sensitive
# (§9.1), so "get" is an unknown method — and unknown counts as unsafe (RFC 9111 §4.4).
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})


def is_unsafe(method: str) -> bool:
    """RFC 9110 §9.2.1 / RFC 9111 §4.4: anything not known to be safe is treated as unsafe."""
    return method not in SAFE_METHODS


def _origin(parts: SplitResult) -> tuple[str, str, int | None] | None:
    """RFC 9110 §4.3.1 origin triple (scheme, host, port), default ports filled in; None if bad."""
    scheme = parts.scheme.lower()
    try:
        host = parts.hostname
        port = parts.port
    except ValueError:  # a port that is not a number, or out of range
        return None
    if not scheme or not host:
        return None
    return (scheme, host.lower(), port if port is not None else DEFAULT_PORTS.get(scheme))


def _without_fragment(parts: SplitResult) -> str:
    return urlunsplit((parts.scheme, parts.netloc, parts.path, parts.query, ""))


def invalidation_targets(method: str, status: int, request_url: str, response_headers: HeaderList) -> list[str]:
    """Absolute URLs to invalidate after a response to ``method`` on ``request_url`` (RFC 9111 §4.4).

    Empty for safe methods and for responses that are not 2xx/3xx.  Otherwise the target URI,
    then each ``Location`` / ``Content-Location`` value (resolved against the target URI as RFC
    9110 §10.2.2/§8.7 direct) whose origin — scheme, host, port with defaults normalised — equals
    the target's; duplicates and fragments removed.  Values that do not parse as URIs are skipped.
    """
    if not is_unsafe(method) or not 200 <= status <= 399:
        return []
    try:
        target = urlsplit(request_url)
    except ValueError:
        return []
    target_origin = _origin(target)
    targets = [_without_fragment(target)]
    if target_origin is None:
        return targets
    for name in ("location", "content-location"):
        for value in get_all(response_headers, name):
            reference = value.strip(" \t")
            if not reference:
                continue
            try:
                resolved = urlsplit(urljoin(request_url, reference))
            except ValueError:
                continue
            if _origin(resolved) != target_origin:
                continue
            url = _without_fragment(resolved)
            if url not in targets:
                targets.append(url)
    return targets
