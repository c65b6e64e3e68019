"""Validation (RFC 9111 §4.3): the conditional request for one stored response, and using its 304.

The cache builds the conditional request itself from one stored response (``If-None-Match`` /
``If-Modified-Since``, §4.3.1), with the client's own conditionals removed: those are answered by
the edge from the complete object.  A 304 whose validators select the stored response freshens it
(§4.3.4); one that selects nothing must not, and the object is asked for again without conditions.
"""

from __future__ import annotations

from dataclasses import replace

from edge.cache.context import CacheContext
from edge.cache.outcomes import Refreshed
from edge.cache.respond import FRAMING_FIELDS, without_fields
from edge.http import coding, policy, validation
from edge.http.headers import HeaderList
from edge.store.base import StoredMeta
from edge.upstream import OriginRequest


def conditional(request: OriginRequest, meta: StoredMeta) -> OriginRequest:
    """A conditional GET for one stored response (§4.3.1); ``request`` has no client conditionals."""
    return replace(request, method="GET", headers=[*request.headers, *validation.conditional_headers([meta.headers])],
                   body=None)  # fmt: skip


def unconditional(request: OriginRequest) -> OriginRequest:
    """The same request without any conditional field (a 304 that matched nothing stored)."""
    return replace(
        request,
        method="GET",
        headers=[(n, v) for n, v in request.headers if n.lower() not in validation.CONDITIONAL_REQUEST_FIELDS],
        body=None,
    )


def selects(validating: StoredMeta, headers: HeaderList) -> bool:
    """Does the 304 freshen the stored response our conditional request named (§4.3.4)?"""
    return validation.answers_own_validation(
        validating.headers, headers, validating.response_time, transformed=coding.transformed(validating.headers)
    )


def refreshed(
    ctx: CacheContext,
    validating: StoredMeta,
    received: HeaderList,
    headers: HeaderList,
    request_time: float,
    response_time: float,
) -> Refreshed:
    """The stored response with the 304's headers (§4.3.4, §3.2), and whether it may be stored.

    The merged response always answers the request that caused the validation; it replaces the
    stored one only when storing is allowed (the 304's own no-store/private, a request no-store, a
    Set-Cookie this cache does not store), and it is shared with collapsed requests only then.
    """
    # The stored Age described the old response; the 304's own Age (if any) replaces it.
    merged = validation.update_headers_from_304(without_fields(validating.headers, ("age",)), headers)
    merged = coding.after_refresh(validating.headers, merged)
    decision = policy.storable("GET", validating.status, received, merged, ctx.policy)
    storable = decision.store and policy.request_allows_store(received)
    updated = without_fields(merged, (*decision.strip_fields, *FRAMING_FIELDS))
    meta = replace(validating.with_headers(updated, request_time, response_time), stored_at=request_time)
    return Refreshed(meta=meta, storable=storable)
