"""Errors that know who is at fault and which status a client should see.

They are raised deep in the I/O layers and turned into HTTP responses only by the handler, so
every layer can say *what* went wrong without knowing how it is rendered (h11's style).
"""

from __future__ import annotations


class EdgeError(Exception):
    """Base class: ``status`` is the HTTP status hint, ``reason`` a short plain-text explanation,
    ``headers`` fields the error response carries (``Retry-After``...)."""

    status = 500

    def __init__(self, reason: str, headers: tuple[tuple[str, str], ...] = ()) -> None:
        super().__init__(reason)
        self.reason = reason
        self.headers = headers


class ClientFault(EdgeError):
    """The client sent something we will not forward (bad header, loop...)."""

    status = 400


class Misdirected(ClientFault):
    """The request's Host names no site of this edge (RFC 9110 §15.5.20): nothing is forwarded."""

    status = 421


class LoopDetected(ClientFault):
    """The request already passed through this edge: forwarding it again would never end."""

    status = 508


class OriginUnreachable(EdgeError):
    """Connecting to the origin failed, or it closed before answering (``before_response``: not a
    byte of an answer had arrived, so an idempotent request may go to another origin)."""

    status = 502

    def __init__(self, reason: str, *, before_response: bool = True) -> None:
        super().__init__(reason)
        self.before_response = before_response


class OriginsDown(EdgeError):
    """Every origin of the site is down (the circuit is open): answered at once, not after timeouts."""

    status = 503


class OriginBusy(OriginsDown):
    """The site's origin requests in flight reached ``max_origin_inflight``: answered at once
    (``503`` with ``Retry-After``, or stale content where allowed), the origin sees no more."""


class OriginTimeout(EdgeError):
    """The origin accepted the connection but did not answer in time."""

    status = 504


class OriginBodyBroken(EdgeError):
    """The origin's body ended early or stalled after the headers were relayed.

    By then the client has a status line, so the only honest signal left is to break the
    client's connection too: a short body must never look like a complete one.
    """

    status = 502
