"""The RFC 9111 decisions of a shared cache: store?, how fresh?, how old?, serve / revalidate?

Pure functions over plain data (``HeaderList`` and floats in epoch seconds); time is always an
argument.  Each function names the section it implements.  The choices where the RFCs leave room,
stated once here and repeated where they are made:

* **Targeted fields (RFC 9213 §2.2).**  When a field of ``PolicyConfig.cdn_cache_control_names`` is
  present and valid, it *replaces* Cache-Control **and** Expires for this cache's own decisions
  (storing, no-store/private/no-cache, freshness, revalidation, stale extensions, the
  Authorization exceptions).  Cache-Control still goes downstream unchanged; nothing here edits
  stored headers except ``StoreDecision.strip_fields``.
* **Invalid freshness is stale (RFC 9111 §4.2.1).**  Bad or conflicting ``max-age``/``s-maxage``
  count as 0; several different ``Expires`` lines count as 0; an unparseable ``Expires`` (e.g.
  ``0``) is "already expired" (§5.3).
* **Heuristics (§4.2.2)** only for heuristically cacheable statuses (RFC 9110 §15.1) or ``public``:
  ``heuristic_fraction`` of (Date - Last-Modified), at most ``heuristic_max``; without
  Last-Modified, ``default_ttl`` if configured, else 0.  Other responses without explicit
  freshness are not stored at all (§3), whatever ``default_ttl`` says.
* **Request directives (§5.2.1) are advisory**; they are honoured unless
  ``honor_request_directives`` is off (a CDN protecting its origin may turn it off).  Request
  ``no-store`` is honoured always: it is a privacy request.
* **Pragma (RFC 7234 §5.4, deprecated by RFC 9111 §5.4)**: ``Pragma: no-cache`` counts as
  ``Cache-Control: no-cache`` only in a request without a Cache-Control field.
* **immutable (RFC 8246 §2.1)**: while fresh, a request ``max-age`` (what browsers send on reload)
  does not force revalidation; a request ``no-cache`` does, unless
  ``honor_request_no_cache_for_immutable`` is off.  RFC 8246 §2.1: "proxies SHOULD skip
  conditionally revalidating fresh responses containing the immutable extension unless there is
  a signal from the client that a validation is necessary (e.g., a no-cache Cache-Control request
  directive)".
* **Serving stale (§4.2.4)** only with explicit permission: request ``max-stale``,
  ``stale-while-revalidate`` (RFC 5861 §3), ``stale-if-error`` (RFC 5861 §4) or the operator's
  ``max_stale_on_error`` ("configuration in accordance with an out-of-band contract").  Never
  with ``no-cache``, ``must-revalidate``, or — in a shared cache — ``proxy-revalidate`` or
  ``s-maxage`` (§4.2.4 "MUST NOT generate a stale response if it is prohibited by an explicit
  in-protocol directive"); RFC 5861's "regardless of other freshness information" does not
  outrank those MUST NOTs.
* **Qualified no-cache / private (§5.2.2.4, §5.2.2.7)**: the named fields are stripped before
  storing (``strip_fields``).  For ``private="f"`` a shared cache MUST NOT store ``f``; for
  ``no-cache="f"`` a cache may reuse the response "if the listed header fields are excluded from
  the subsequent response", so never storing them satisfies that without revalidating every time.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from enum import StrEnum
from urllib.parse import urljoin

from edge.http import cachekey
from edge.http.cachecontrol import (
    DELTA_SECONDS_INFINITY,
    CacheControl,
    parse_cache_control,
    parse_delta_seconds,
    select_targeted_field,
)
from edge.http.dates import parse_http_date
from edge.http.headers import HeaderList, get_all, get_first, get_joined, has, split_all, split_list

HEURISTICALLY_CACHEABLE_STATUSES: frozenset[int] = frozenset(
    {200, 203, 204, 206, 300, 301, 308, 404, 405, 410, 414, 501}
)
"""RFC 9110 §15.1: status codes defined as heuristically cacheable."""

RFC9110_FINAL_STATUSES: frozenset[int] = frozenset(
    {200, 201, 202, 203, 204, 205, 206}
    | {300, 301, 302, 303, 304, 305, 307, 308}
    | set(range(400, 418))
    | {421, 422, 426}
    | {500, 501, 502, 503, 504, 505}
)
"""The final status codes RFC 9110 §15 defines (306 and 418 are unused)."""

STALE_IF_ERROR_STATUSES: frozenset[int] = frozenset({500, 502, 503, 504})
"""RFC 5861 §4: "an error is any situation that would result in a 500, 502, 503, or 504"."""

CACHEABLE_METHODS: frozenset[str] = frozenset({"GET", "HEAD"})

PROXY_SPECIFIC_FIELDS: tuple[str, ...] = (
    "proxy-authenticate",
    "proxy-authentication-info",
    "proxy-authorization",
)
"""RFC 9111 §3.1: fields specific to a client's proxy configuration MUST NOT be stored."""

HOP_BY_HOP_FIELDS: tuple[str, ...] = (
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "transfer-encoding",
    "upgrade",
)
"""RFC 9110 §7.6.1 connection-specific fields; RFC 9111 §3.1 lets a cache drop them before storage."""


@dataclass(frozen=True, slots=True)
class PolicyConfig:
    """The cache's knobs; the defaults are a strict RFC 9111 shared cache."""

    shared: bool = True
    heuristic_fraction: float = 0.1
    heuristic_max: float = 86400.0
    default_ttl: float | None = None
    store_set_cookie: bool = False
    understood_statuses: frozenset[int] = RFC9110_FINAL_STATUSES
    heuristic_statuses: frozenset[int] = HEURISTICALLY_CACHEABLE_STATUSES
    cacheable_methods: frozenset[str] = CACHEABLE_METHODS
    cdn_cache_control_names: tuple[str, ...] = ("CDN-Cache-Control",)
    honor_request_directives: bool = True
    honor_pragma_no_cache: bool = True
    honor_request_no_cache_for_immutable: bool = True
    max_stale_on_error: float = 0.0


DEFAULT_CONFIG = PolicyConfig()


# ---------------------------------------------------------------------------------------------
# Directives in force


@dataclass(frozen=True, slots=True)
class ResponseDirectives:
    """The directives this cache obeys for a response, and where they came from."""

    directives: CacheControl
    source: str
    targeted: bool


def response_directives(response_headers: HeaderList, config: PolicyConfig = DEFAULT_CONFIG) -> ResponseDirectives:
    """Targeted field if one is valid (RFC 9213 §2.2), else Cache-Control (RFC 9111 §5.2.2).

    RFC 9213 §2.2: the cache "MUST ignore the Cache-Control and Expires header fields in that
    response, unless no valid, non-empty value is available from the listed header fields".
    """
    targeted = select_targeted_field(response_headers, config.cdn_cache_control_names)
    if targeted is not None:
        return ResponseDirectives(targeted.directives, targeted.field_name, True)
    directives = parse_cache_control(get_all(response_headers, "Cache-Control"))
    return ResponseDirectives(directives, "Cache-Control", False)


def request_directives(request_headers: HeaderList, config: PolicyConfig = DEFAULT_CONFIG) -> CacheControl:
    """The request directives this cache honours (RFC 9111 §5.2.1; Pragma per RFC 7234 §5.4).

    §5.2.1: request directives "are advisory; caches MAY implement them" — with
    ``honor_request_directives`` off this is empty.  ``Pragma: no-cache`` counts as no-cache only
    when the request has no Cache-Control field (RFC 7234 §5.4; RFC 9111 §5.4 deprecates Pragma
    but gives no other meaning).  A request ``no-cache`` takes no argument (§5.2.1.4); one given
    a field list anyway is still read as no-cache.
    """
    if not config.honor_request_directives:
        return CacheControl()
    directives = parse_cache_control(get_all(request_headers, "Cache-Control"))
    if directives.no_cache_fields:
        directives = replace(directives, no_cache=True, no_cache_fields=())
    if (
        config.honor_pragma_no_cache
        and not directives.present
        and any(item.lower() == "no-cache" for item in split_all(request_headers, "Pragma"))
    ):
        directives = replace(directives, no_cache=True)
    return directives


def request_allows_store(request_headers: HeaderList) -> bool:
    """False when the request carries ``no-store`` (RFC 9111 §5.2.1.5).

    "a cache MUST NOT store any part of either this request or any response to it".  Honoured
    regardless of ``honor_request_directives``: it protects the client's privacy.  It does not
    stop serving an already stored response ("the no-store request directive does not apply to the
    already stored response").
    """
    return not parse_cache_control(get_all(request_headers, "Cache-Control")).no_store


# ---------------------------------------------------------------------------------------------
# Storing (RFC 9111 §3)


@dataclass(frozen=True, slots=True)
class StoreDecision:
    """Whether to store, a short reason for Cache-Status ``detail``, and fields not to store."""

    store: bool
    reason: str
    strip_fields: tuple[str, ...] = ()


def _strip_fields(directives: CacheControl, response_headers: HeaderList, config: PolicyConfig) -> tuple[str, ...]:
    """Lowercased names of response fields a cache must (or may) leave out of storage (§3.1)."""
    names: list[str] = []
    candidates: list[str] = []
    if config.shared:
        candidates.extend(directives.private_fields)  # §5.2.2.7 "MUST NOT store the listed"
    candidates.extend(directives.no_cache_fields)  # §5.2.2.4, see module docstring
    candidates.extend(PROXY_SPECIFIC_FIELDS)  # §3.1 MUST NOT
    candidates.extend(HOP_BY_HOP_FIELDS)  # §3.1 MAY, RFC 9110 §7.6.1
    candidates.extend(item.lower() for item in split_all(response_headers, "Connection"))
    for name in candidates:
        if name not in names:
            names.append(name)
    return tuple(names)


def storable(
    method: str,
    status: int,
    request_headers: HeaderList,
    response_headers: HeaderList,
    config: PolicyConfig = DEFAULT_CONFIG,
    *,
    partial: bool = False,
) -> StoreDecision:
    """May this cache store the response? RFC 9111 §3 (+§3.5, §5.2.2.3, §5.2.2.5, §5.2.2.7, RFC 9213).

    Checks, in order, each giving its ``reason`` when it refuses:
    ``method`` (§3 "request method is understood": GET and HEAD), ``status`` (§3 "final" —
    1xx and out-of-range codes), ``partial`` (206, unless ``partial``: the caller stores it as a
    part of its representation, never as a complete response; §3.3),
    ``not-modified`` (304: it freshens a stored response, §4.3.4, it is not one),
    ``request-no-store`` (§5.2.1.5), ``must-understand-unknown-status`` (§5.2.2.3; an understood
    status with must-understand makes no-store ignored), ``no-store`` (§5.2.2.5), ``private``
    (§5.2.2.7, shared cache), ``authorization`` (§3.5: a shared cache needs public,
    must-revalidate or s-maxage), ``set-cookie`` (local policy unless ``store_set_cookie`` or the
    origin named Set-Cookie in ``private=``/``no-cache=``), ``no-freshness-info`` (§3: none of
    Expires, max-age, s-maxage, public, or a heuristically cacheable status).  A response with
    ``no-cache`` is storable; it is revalidated on every use (§4).  When a valid targeted field
    is present its directives replace Cache-Control and Expires (RFC 9213 §2.2).
    """
    in_force = response_directives(response_headers, config)
    directives = in_force.directives
    strip = _strip_fields(directives, response_headers, config)

    def refuse(reason: str) -> StoreDecision:
        return StoreDecision(False, reason, strip)

    if method.upper() not in config.cacheable_methods:
        return refuse("method")
    if not 200 <= status <= 599:
        return refuse("status")
    if status == 206 and not partial:
        return refuse("partial")
    if status == 304:
        return refuse("not-modified")
    if not request_allows_store(request_headers):
        return refuse("request-no-store")
    no_store = directives.no_store
    if directives.must_understand:
        if status not in config.understood_statuses:
            return refuse("must-understand-unknown-status")
        # §5.2.2.3: "the cache SHOULD ignore the no-store directive if it understands and
        # implements the status code's caching requirements."
        no_store = False
    if no_store:
        return refuse("no-store")
    if config.shared and directives.private:
        return refuse("private")
    if (
        config.shared
        and has(request_headers, "Authorization")
        and not (directives.public or directives.must_revalidate or directives.s_maxage is not None)
    ):
        return refuse("authorization")
    if not config.store_set_cookie and has(response_headers, "Set-Cookie") and "set-cookie" not in strip:
        return refuse("set-cookie")

    if (
        directives.max_age is not None
        or (config.shared and directives.s_maxage is not None)
        or (not in_force.targeted and has(response_headers, "Expires"))
    ):
        return StoreDecision(True, "explicit-freshness", strip)
    if directives.public:
        return StoreDecision(True, "public", strip)
    if not config.shared and directives.private:
        return StoreDecision(True, "private", strip)
    if status in config.heuristic_statuses:
        return StoreDecision(True, "heuristic", strip)
    return refuse("no-freshness-info")


def post_response_storable(
    status: int,
    request_url: str,
    request_headers: HeaderList,
    response_headers: HeaderList,
    config: PolicyConfig = DEFAULT_CONFIG,
) -> StoreDecision:
    """May the response to a POST be stored for later GETs of the target URI? RFC 9111 §2, RFC 9110 §9.3.3.

    "Responses to POST requests are only cacheable when they include explicit freshness
    information ... and a Content-Location header field that has the same value as the POST's
    target URI"; such a response is then what a GET of that URI would return.  Reasons:
    ``content-location`` (absent, unparseable, or naming another URI), ``no-explicit-freshness``,
    then every rule of :func:`storable` for a GET.
    """
    refuse_strip = StoreDecision(False, "content-location")
    locations = [value.strip(" \t") for value in get_all(response_headers, "content-location")]
    if len(locations) != 1 or not locations[0]:
        return refuse_strip
    try:
        same = cachekey.normalize_url(urljoin(request_url, locations[0])) == cachekey.normalize_url(request_url)
    except ValueError:
        return refuse_strip
    if not same:
        return refuse_strip
    decision = storable("GET", status, request_headers, response_headers, config)
    if decision.store and decision.reason != "explicit-freshness":
        return StoreDecision(False, "no-explicit-freshness", decision.strip_fields)
    return decision


# ---------------------------------------------------------------------------------------------
# Freshness lifetime (RFC 9111 §4.2.1, §4.2.2)


@dataclass(frozen=True, slots=True)
class Lifetime:
    """A freshness lifetime in seconds, where it came from, and whether it is heuristic."""

    seconds: float
    source: str
    heuristic: bool


def _date_value(response_headers: HeaderList, response_time: float) -> float:
    """date_value: the Date field, or the receive time when it is absent or invalid.

    RFC 9111 §4.2.1 (Expires - Date, "using the time the message was received if it is not
    present, as per Section 6.6.1 of [HTTP]").
    """
    date = get_first(response_headers, "Date")
    parsed = parse_http_date(date, now=response_time) if date is not None else None
    return response_time if parsed is None else parsed


def _clamp(seconds: float) -> float:
    return float(min(max(seconds, 0.0), DELTA_SECONDS_INFINITY))


def freshness_lifetime(
    status: int,
    response_headers: HeaderList,
    response_time: float,
    config: PolicyConfig = DEFAULT_CONFIG,
) -> Lifetime:
    """freshness_lifetime of a response: RFC 9111 §4.2.1, first match wins.

    Order: targeted field (RFC 9213: its s-maxage, then max-age; Expires ignored) or
    Cache-Control s-maxage (shared cache) > max-age > Expires - Date (Date absent → the
    ``response_time``; invalid Expires such as ``0`` → 0, "already expired" §5.3; differing
    duplicate Expires lines → 0, §4.2.1 "considered stale") > heuristic (§4.2.2, see
    :func:`heuristic_lifetime`).  The result is clamped to [0, 2^31].
    """
    return _lifetime(status, response_headers, response_time, response_directives(response_headers, config), config)


def _lifetime(
    status: int,
    response_headers: HeaderList,
    response_time: float,
    in_force: ResponseDirectives,
    config: PolicyConfig,
) -> Lifetime:
    directives = in_force.directives
    prefix = "cdn-" if in_force.targeted else ""
    if config.shared and directives.s_maxage is not None:
        return Lifetime(_clamp(directives.s_maxage), f"{prefix}s-maxage", False)
    if directives.max_age is not None:
        return Lifetime(_clamp(directives.max_age), f"{prefix}max-age", False)
    if not in_force.targeted:
        expires_lines = get_all(response_headers, "Expires")
        if expires_lines:
            if len({line.strip(" \t") for line in expires_lines}) > 1:
                return Lifetime(0.0, "expires-conflict", False)
            expires = parse_http_date(expires_lines[0], now=response_time)
            if expires is None:
                return Lifetime(0.0, "expires-invalid", False)
            return Lifetime(_clamp(expires - _date_value(response_headers, response_time)), "expires", False)
    return heuristic_lifetime(status, response_headers, response_time, directives, config)


def heuristic_lifetime(
    status: int,
    response_headers: HeaderList,
    response_time: float,
    directives: CacheControl,
    config: PolicyConfig = DEFAULT_CONFIG,
) -> Lifetime:
    """Heuristic freshness (RFC 9111 §4.2.2) for a response without explicit expiration.

    Allowed only for heuristically cacheable statuses (RFC 9110 §15.1), responses marked
    ``public`` (§5.2.2.9 "If a response with the public directive has no explicit freshness
    information, it is heuristically cacheable"), and — in a private cache — ``private``.  The
    value is ``heuristic_fraction`` * (Date - Last-Modified), "no more than some fraction of the
    interval since that time", capped at ``heuristic_max``; without a usable Last-Modified it is
    ``default_ttl`` if configured, else 0.  Otherwise the lifetime is 0 with source ``none``.
    """
    allowed = status in config.heuristic_statuses or directives.public or (not config.shared and directives.private)
    if not allowed:
        return Lifetime(0.0, "none", False)
    last_modified_text = get_first(response_headers, "Last-Modified")
    last_modified = parse_http_date(last_modified_text, now=response_time) if last_modified_text is not None else None
    if last_modified is not None:
        interval = _date_value(response_headers, response_time) - last_modified
        seconds = min(interval * config.heuristic_fraction, config.heuristic_max)
        return Lifetime(_clamp(seconds), "heuristic", True)
    if config.default_ttl is not None:
        return Lifetime(_clamp(config.default_ttl), "default-ttl", True)
    return Lifetime(0.0, "heuristic", True)


# ---------------------------------------------------------------------------------------------
# Age (RFC 9111 §4.2.3, §5.1)


def parse_age(response_headers: HeaderList) -> int:
    """age_value from the Age field (RFC 9111 §5.1), or 0.

    "a cache encountering a message with a list-based Age field value SHOULD use the first member
    of the field value, discarding subsequent ones.  If the field value (after discarding
    additional members, as per above) is invalid (e.g., it contains something other than a
    non-negative integer), a cache SHOULD ignore the field."  So ``7200.0``, ``-1``, ``abc`` give 0;
    values above 2^31 are 2^31 (§1.2.2).
    """
    joined = get_joined(response_headers, "Age")
    if joined is None:
        return 0
    members = split_list(joined)
    if not members:
        return 0
    value = parse_delta_seconds(members[0])
    return 0 if value is None else value


def current_age(response_headers: HeaderList, request_time: float, response_time: float, now: float) -> float:
    """current_age of a stored response, exactly RFC 9111 §4.2.3.

    apparent_age = max(0, response_time - date_value); response_delay = response_time -
    request_time; corrected_age_value = age_value + response_delay; corrected_initial_age =
    max(apparent_age, corrected_age_value) (the conservative combination); resident_time = now -
    response_time; current_age = corrected_initial_age + resident_time.  date_value is the Date
    field or, without a valid one, ``response_time``.  Negative delays or resident times (clocks
    stepped backwards) count as 0 so an age never shrinks below what the origin chain reported.
    """
    age_value = parse_age(response_headers)
    date_value = _date_value(response_headers, response_time)
    apparent_age = max(0.0, response_time - date_value)
    response_delay = max(0.0, response_time - request_time)
    corrected_age_value = age_value + response_delay
    corrected_initial_age = max(apparent_age, corrected_age_value)
    resident_time = max(0.0, now - response_time)
    return corrected_initial_age + resident_time


def age_header_value(age: float) -> int:
    """The ``Age`` value to send (RFC 9111 §5.1): whole seconds, non-negative, at most 2^31.

    §4 "a cache MUST generate an Age header field ... with a value equal to the stored response's
    current_age"; §5.1 makes it a non-negative integer (fractions are dropped); §1.2.2 caps it.
    """
    if math.isnan(age) or age <= 0:
        return 0
    if age >= DELTA_SECONDS_INFINITY:
        return DELTA_SECONDS_INFINITY
    return math.floor(age)


# ---------------------------------------------------------------------------------------------
# Reuse (RFC 9111 §4, §4.2, §4.2.4, §5.2; RFC 5861; RFC 8246)


class Action(StrEnum):
    """What the driver does with a stored response for the presented request."""

    FRESH_HIT = "fresh-hit"
    """Serve it; no contact with the origin."""
    STALE_HIT = "stale-hit"
    """Serve it stale, as the client allowed (max-stale); no refresh required."""
    STALE_WHILE_REVALIDATE = "stale-while-revalidate"
    """Serve it stale now and revalidate in the background (RFC 5861 §3)."""
    REVALIDATE = "revalidate"
    """Send a conditional request (§4.3.1) and use the answer; stale-if-error may apply."""
    BYPASS = "bypass"
    """The stored response cannot serve this method; forward the request as a miss."""


@dataclass(frozen=True, slots=True)
class StoredEntry:
    """What the policy needs to know about a stored response.

    ``invalidated_at`` is the time of an invalidation or soft purge (RFC 9111 §4.4 "mark them as
    invalid and in need of a mandatory validation"); it applies when at or after
    ``response_time`` (a later refresh clears it) and makes the entry stale from that moment.
    """

    status: int
    headers: HeaderList
    request_time: float
    response_time: float
    invalidated_at: float | None = None


@dataclass(frozen=True, slots=True)
class ServeDecision:
    """The verdict for one request against one stored response, plus what the driver needs later.

    ``fresh`` = RFC 9111 §4.2 ``freshness_lifetime > current_age`` and not invalidated;
    ``ttl`` = lifetime - age (negative once stale); ``staleness`` = seconds since the entry stopped
    being fresh (0 while fresh); ``expires_at`` = the wall-clock time that happens/happened, so
    windows can be rechecked later; ``stale_if_error_window`` = how long past ``expires_at`` an
    origin error (RFC 5861 §4) still lets the entry be served (0 when forbidden);
    ``must_revalidate`` = serving it stale is forbidden, so an unreachable origin means 504
    (§5.2.2.2); ``only_if_cached`` = the client asked for only-if-cached, so a REVALIDATE verdict
    becomes a 504 (§5.2.1.7); ``detail`` is a short token for Cache-Status.
    """

    action: Action
    detail: str
    fresh: bool
    age: float
    lifetime: float
    ttl: float
    staleness: float
    expires_at: float
    heuristic: bool
    stale_while_revalidate_window: float
    stale_if_error_window: float
    must_revalidate: bool
    only_if_cached: bool
    directives: CacheControl = field(default_factory=CacheControl, repr=False)

    @property
    def serve_from_cache(self) -> bool:
        """True for the verdicts that answer from the stored response right away."""
        return self.action in (Action.FRESH_HIT, Action.STALE_HIT, Action.STALE_WHILE_REVALIDATE)


def _stale_prohibition(directives: CacheControl, config: PolicyConfig) -> str | None:
    """Which directive forbids reusing the response stale, if any (RFC 9111 §4.2.4)."""
    if directives.no_cache:
        return "no-cache"  # §5.2.2.4 "even by caches that have been configured to send stale"
    if directives.must_revalidate:
        return "must-revalidate"  # §5.2.2.2
    if config.shared and directives.proxy_revalidate:
        return "proxy-revalidate"  # §5.2.2.8
    if config.shared and directives.s_maxage is not None:
        return "s-maxage"  # §5.2.2.10 "incorporates the semantics of proxy-revalidate"
    return None


def _stale_if_error_window(directives: CacheControl, request: CacheControl, config: PolicyConfig) -> float:
    """Seconds past expiry that an error still allows serving stale (RFC 5861 §4).

    The request's stale-if-error, when present, governs that request ("its scope of application
    is the request it appears in"); otherwise the response's ("any request applicable to the
    cached response"); otherwise the operator's ``max_stale_on_error``.  0 when a directive
    forbids stale reuse (RFC 9111 §4.2.4).
    """
    if _stale_prohibition(directives, config) is not None:
        return 0.0
    if request.stale_if_error is not None:
        return float(request.stale_if_error)
    if directives.stale_if_error is not None:
        return float(directives.stale_if_error)
    return max(0.0, config.max_stale_on_error)


def _has_no_cache_fields(directives: CacheControl, headers: HeaderList) -> bool:
    return any(has(headers, name) for name in directives.no_cache_fields)


@dataclass(frozen=True, slots=True)
class _Timing:
    lifetime: Lifetime
    age: float
    ttl: float
    expires_at: float
    staleness: float
    invalidated: bool


def _timing(entry: StoredEntry, in_force: ResponseDirectives, now: float, config: PolicyConfig) -> _Timing:
    lifetime = _lifetime(entry.status, entry.headers, entry.response_time, in_force, config)
    age = current_age(entry.headers, entry.request_time, entry.response_time, now)
    ttl = lifetime.seconds - age
    expires_at = now + ttl
    invalidated = entry.invalidated_at is not None and entry.invalidated_at >= entry.response_time
    if invalidated and entry.invalidated_at is not None:
        expires_at = min(expires_at, entry.invalidated_at, now)
    staleness = max(0.0, now - expires_at) if (invalidated or ttl <= 0) else 0.0
    return _Timing(lifetime, age, ttl, expires_at, staleness, invalidated)


def serve_decision(
    method: str,
    request_headers: HeaderList,
    entry: StoredEntry,
    now: float,
    config: PolicyConfig = DEFAULT_CONFIG,
) -> ServeDecision:
    """May the stored response satisfy this request now? RFC 9111 §4, §4.2, §4.2.4, §5.2.1.

    In order: method the stored response can serve (else BYPASS); response ``no-cache``
    (§5.2.2.4, always REVALIDATE) or stored fields named by ``no-cache="…"``; request ``no-cache``
    (§5.2.1.4, REVALIDATE — except a fresh ``immutable`` response when
    ``honor_request_no_cache_for_immutable`` is off, RFC 8246 §2.1).  Fresh (§4.2, not
    invalidated): request ``max-age`` (§5.2.1.1; not applied to ``immutable``, RFC 8246 §2) and
    ``min-fresh`` (§5.2.1.3) may force REVALIDATE, else FRESH_HIT.  Stale: a prohibiting
    directive (no-cache, must-revalidate, shared proxy-revalidate / s-maxage; §4.2.4) or request
    ``min-fresh`` / ``max-age`` without a satisfying ``max-stale`` → REVALIDATE;
    ``stale-while-revalidate`` window (RFC 5861 §3, inclusive) → STALE_WHILE_REVALIDATE; request
    ``max-stale`` (§5.2.1.2) → STALE_HIT; otherwise REVALIDATE.  ``only_if_cached`` (§5.2.1.7) is
    reported for the driver to turn a REVALIDATE into 504.
    """
    in_force = response_directives(entry.headers, config)
    directives = in_force.directives
    request = request_directives(request_headers, config)
    timing = _timing(entry, in_force, now, config)
    prohibition = _stale_prohibition(directives, config)
    fresh = timing.ttl > 0 and not timing.invalidated
    swr_window = (
        0.0
        if prohibition is not None or directives.stale_while_revalidate is None
        else float(directives.stale_while_revalidate)
    )

    def decide(action: Action, detail: str) -> ServeDecision:
        return ServeDecision(
            action=action,
            detail=detail,
            fresh=fresh,
            age=timing.age,
            lifetime=timing.lifetime.seconds,
            ttl=timing.ttl,
            staleness=timing.staleness,
            expires_at=timing.expires_at,
            heuristic=timing.lifetime.heuristic,
            stale_while_revalidate_window=swr_window,
            stale_if_error_window=_stale_if_error_window(directives, request, config),
            must_revalidate=prohibition is not None,
            only_if_cached=request.only_if_cached,
            directives=directives,
        )

    if method.upper() not in config.cacheable_methods:
        return decide(Action.BYPASS, "method")
    if directives.no_cache:
        return decide(Action.REVALIDATE, "no-cache")
    if _has_no_cache_fields(directives, entry.headers):
        return decide(Action.REVALIDATE, "no-cache-fields")
    if request.no_cache:
        if fresh and directives.immutable and not config.honor_request_no_cache_for_immutable:
            return decide(Action.FRESH_HIT, "immutable")
        return decide(Action.REVALIDATE, "request-no-cache")

    if fresh:
        if request.min_fresh is not None and timing.ttl < request.min_fresh:
            return decide(Action.REVALIDATE, "request-min-fresh")
        if request.max_age is not None and timing.age > request.max_age:
            if directives.immutable:
                return decide(Action.FRESH_HIT, "immutable")
            return decide(Action.REVALIDATE, "request-max-age")
        return decide(Action.FRESH_HIT, "fresh")

    stale_detail = "invalidated" if timing.invalidated and timing.ttl > 0 else "stale"
    if prohibition is not None:
        return decide(Action.REVALIDATE, prohibition)
    if request.min_fresh is not None:
        return decide(Action.REVALIDATE, "request-min-fresh")
    client_accepts_stale = request.max_stale is not None and timing.staleness <= request.max_stale
    if request.max_age is not None and (timing.age > request.max_age or not client_accepts_stale):
        return decide(Action.REVALIDATE, "request-max-age")
    if swr_window > 0 and timing.staleness <= swr_window:
        return decide(Action.STALE_WHILE_REVALIDATE, "stale-while-revalidate")
    if client_accepts_stale:
        return decide(Action.STALE_HIT, "max-stale")
    return decide(Action.REVALIDATE, stale_detail)


@dataclass(frozen=True, slots=True)
class HitWindow:
    """When a request with no cache directives of its own is a fresh hit on a stored response.

    Precomputed once per stored response, so a hit compares one number with the clock instead of
    re-deciding: for ``response_time <= now < fresh_until``, :func:`serve_decision` for a plain
    GET/HEAD says FRESH_HIT, ``current_age = now + age_offset`` (RFC 9111 §4.2.3, whose constant
    terms are folded into ``age_offset``) and ``ttl = lifetime - current_age``.
    """

    fresh_until: float
    age_offset: float
    lifetime: float
    response_time: float


def hit_window(entry: StoredEntry, config: PolicyConfig = DEFAULT_CONFIG) -> HitWindow | None:
    """The fresh-hit window of a stored response (RFC 9111 §4.2), or None if a plain request can never
    be a fresh hit on it (response no-cache or no-cache fields, §5.2.2.4; invalidated, §4.4)."""
    in_force = response_directives(entry.headers, config)
    directives = in_force.directives
    if directives.no_cache or _has_no_cache_fields(directives, entry.headers):
        return None
    if entry.invalidated_at is not None and entry.invalidated_at >= entry.response_time:
        return None
    lifetime = _lifetime(entry.status, entry.headers, entry.response_time, in_force, config).seconds
    initial_age = current_age(entry.headers, entry.request_time, entry.response_time, entry.response_time)
    return HitWindow(
        fresh_until=entry.response_time + lifetime - initial_age,
        age_offset=initial_age - entry.response_time,
        lifetime=lifetime,
        response_time=entry.response_time,
    )


def must_revalidate_or_504(entry: StoredEntry, config: PolicyConfig = DEFAULT_CONFIG) -> bool:
    """True when the stored response may never be served stale, so a failed revalidation is a 504.

    RFC 9111 §5.2.2.2: "if a cache is disconnected, the cache MUST generate an error response
    rather than reuse the stale response.  The generated status code SHOULD be 504 (Gateway
    Timeout)"; the same holds for proxy-revalidate (§5.2.2.8) and s-maxage (§5.2.2.10) in a shared
    cache, and for no-cache (§5.2.2.4), which needs "a successful response" from the origin.
    """
    directives = response_directives(entry.headers, config).directives
    return _stale_prohibition(directives, config) is not None


def can_serve_stale_on_error(
    entry: StoredEntry,
    request_headers: HeaderList,
    now: float,
    config: PolicyConfig = DEFAULT_CONFIG,
) -> bool:
    """After the origin failed (unreachable, or 500/502/503/504), may the stored response be sent?

    RFC 9111 §4.3.3 lets a cache treat a 5xx "as if the server failed to respond" and "send a
    previously stored response, subject to its constraints on doing so (see Section 4.2.4)".
    §4.2.4: never when prohibited (no-cache, must-revalidate, shared proxy-revalidate/s-maxage),
    and a stale response only when "explicitly permitted by the client or origin server (e.g., by
    ... extension directives such as those defined in [RFC5861], or configuration ...)": the
    staleness must be within the stale-if-error window (RFC 5861 §4, see ``ServeDecision``).  A
    response that is still fresh (e.g. the revalidation was forced by a request no-cache) may be
    sent unless the response itself said no-cache.
    """
    in_force = response_directives(entry.headers, config)
    directives = in_force.directives
    if directives.no_cache or _has_no_cache_fields(directives, entry.headers):
        return False
    timing = _timing(entry, in_force, now, config)
    if timing.ttl > 0 and not timing.invalidated:
        return True
    if _stale_prohibition(directives, config) is not None:
        return False
    window = _stale_if_error_window(directives, request_directives(request_headers, config), config)
    return window > 0 and timing.staleness <= window


def is_error_status(status: int) -> bool:
    """RFC 5861 §4: the statuses that count as an "error" for stale-if-error."""
    return status in STALE_IF_ERROR_STATUSES


__all__ = [
    "CACHEABLE_METHODS",
    "DEFAULT_CONFIG",
    "HEURISTICALLY_CACHEABLE_STATUSES",
    "HOP_BY_HOP_FIELDS",
    "PROXY_SPECIFIC_FIELDS",
    "RFC9110_FINAL_STATUSES",
    "STALE_IF_ERROR_STATUSES",
    "Action",
    "HitWindow",
    "Lifetime",
    "PolicyConfig",
    "ResponseDirectives",
    "ServeDecision",
    "StoreDecision",
    "StoredEntry",
    "age_header_value",
    "can_serve_stale_on_error",
    "current_age",
    "freshness_lifetime",
    "heuristic_lifetime",
    "hit_window",
    "is_error_status",
    "must_revalidate_or_504",
    "parse_age",
    "post_response_storable",
    "request_allows_store",
    "request_directives",
    "response_directives",
    "serve_decision",
    "storable",
]
