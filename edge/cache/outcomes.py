"""What a fill produced, as closed types: every reader matches on them, nothing is a string kind."""

from __future__ import annotations

from dataclasses import dataclass, field

from edge.store.base import StoredMeta
from edge.upstream import OriginResponse

Headers = tuple[tuple[str, str], ...]


@dataclass(frozen=True, slots=True)
class Shared:
    """A storable response: its body streams to every reader while it is written to the tiers.

    ``headers`` are what any reader may receive (fields a shared cache must withhold, such as
    those named by ``private=``/``no-cache=``, removed); ``owner_headers``, when set, what the
    request that caused the fetch receives (everything the origin sent it)."""

    status: int
    reason: str
    headers: Headers
    owner_headers: Headers | None = field(default=None, compare=False)


@dataclass(frozen=True, slots=True)
class Unshared:
    """A response that may not be stored, so it is not shared either (RFC 9111 §3): the fill's owner
    relays it; every other reader asks the origin on its own.  ``why`` is the policy's reason."""

    status: int
    reason: str
    headers: Headers
    why: str
    upstream: OriginResponse | None = field(default=None, compare=False)


@dataclass(frozen=True, slots=True)
class Refreshed:
    """A 304 freshened the stored response (RFC 9111 §4.3.4); ``storable`` says whether it was stored
    (and so may be shared with collapsed readers)."""

    meta: StoredMeta
    storable: bool


@dataclass(frozen=True, slots=True)
class StoredElsewhere:
    """Another worker stored a fresh copy while this one waited for the key: read it from the tiers."""


@dataclass(frozen=True, slots=True)
class OriginFailed:
    """The origin answered a validation with an error and stale-if-error lets the stored copy stand in."""

    status: int


FillOutcome = Shared | Unshared | Refreshed | StoredElsewhere | OriginFailed
