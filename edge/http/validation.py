"""Validators and conditional requests, from the cache's side (RFC 9111 §4.3, RFC 9110 §8.8, §13).

Two directions meet here:

* **outbound** — the cache validating its own stored response(s) with the next server:
  ``conditional_headers`` / ``revalidation_headers`` build the request (RFC 9111 §4.3.1),
  ``select_for_304`` decides which stored responses a 304 freshens (§4.3.4) and
  ``update_headers_from_304`` applies it (§3.2);
* **inbound** — a client sending *its* conditionals to the cache: ``evaluate_client_conditionals``
  answers them from a stored response (RFC 9111 §4.3.2, RFC 9110 §13.2.2) and
  ``not_modified_headers`` picks the fields of a cache-generated 304 (RFC 9110 §15.4.5).

Entity tags are parsed strictly to RFC 9110 §8.8.3 (``[ W/ ] DQUOTE *etagc DQUOTE``); a malformed
tag is not a validator, so it is neither sent nor compared — nothing is guessed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

from edge.http.dates import parse_http_date
from edge.http.forwarding import HOP_BY_HOP_FIELDS, connection_listed_fields
from edge.http.headers import HeaderList, get_all, get_first, split_all, split_list

_OWS = " \t"


# --------------------------------------------------------------------------------------------
# Entity tags (RFC 9110 §8.8.3)
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class EntityTag:
    """An entity-tag: ``opaque`` keeps its double quotes (``'"xyzzy"'``), ``weak`` is the ``W/``."""

    weak: bool
    opaque: str

    def __str__(self) -> str:
        return ("W/" if self.weak else "") + self.opaque


def _is_etagc(char: str) -> bool:
    # etagc = %x21 / %x23-7E / obs-text ; obs-text = %x80-FF (any non-ASCII code point here)
    code = ord(char)
    return code == 0x21 or 0x23 <= code <= 0x7E or code >= 0x80


def _scan_etag(text: str, start: int) -> tuple[EntityTag, int] | None:
    """Parse one entity-tag at ``text[start:]``; return it and the index after it."""
    weak = text.startswith("W/", start)
    index = start + 2 if weak else start
    if index >= len(text) or text[index] != '"':
        return None
    close = text.find('"', index + 1)
    if close == -1:
        return None
    body = text[index + 1 : close]
    if not all(_is_etagc(char) for char in body):
        return None
    return EntityTag(weak, text[index : close + 1]), close + 1


def parse_etag(value: str) -> EntityTag | None:
    """Parse an ``ETag`` field value (RFC 9110 §8.8.3); ``None`` if it is not exactly one entity-tag.

    ``W/`` is case-sensitive (``%s"W/"``).  Surrounding whitespace is allowed (RFC 9110 §5.5);
    anything else — unquoted tags, trailing text, control characters — is rejected.
    """
    text = value.strip(_OWS)
    scanned = _scan_etag(text, 0)
    if scanned is None or scanned[1] != len(text):
        return None
    return scanned[0]


def parse_etag_list(values: Iterable[str]) -> list[EntityTag] | Literal["*"] | None:
    """Parse ``If-None-Match`` / ``If-Match`` lines: ``"*" / #entity-tag`` (RFC 9110 §13.1.1-2).

    Returns ``"*"``, the list of tags (duplicates kept, order kept; empty list elements are
    ignored as RFC 9110 §5.6.1 requires), or ``None`` when the field is absent or invalid — a
    malformed member, or ``*`` mixed with anything (RFC 9110 §13.1.2: "syntactically invalid").
    A recipient cannot evaluate an invalid precondition, so callers ignore the field on ``None``.
    The list is tokenised by hand, not with ``split_list``: an opaque-tag may contain ``,`` and a
    backslash that is not an escape.
    """
    lines = list(values)
    if not lines:
        return None
    text = ", ".join(lines)
    tags: list[EntityTag] = []
    star = 0
    index = 0
    length = len(text)
    while True:
        while index < length and text[index] in " \t,":
            index += 1
        if index >= length:
            break
        if text[index] == "*":
            star += 1
            index += 1
        else:
            scanned = _scan_etag(text, index)
            if scanned is None:
                return None
            tags.append(scanned[0])
            index = scanned[1]
        while index < length and text[index] in _OWS:
            index += 1
        if index < length and text[index] != ",":
            return None
    if star:
        return "*" if star == 1 and not tags else None
    if not tags:
        return None
    return tags


def strong_compare(a: EntityTag, b: EntityTag) -> bool:
    """RFC 9110 §8.8.3.2 strong comparison: both strong and opaque-tags equal octet-by-octet."""
    return not a.weak and not b.weak and a.opaque == b.opaque


def weak_compare(a: EntityTag, b: EntityTag) -> bool:
    """RFC 9110 §8.8.3.2 weak comparison: opaque-tags equal, weakness ignored."""
    return a.opaque == b.opaque


def stored_etag(headers: HeaderList) -> EntityTag | None:
    """The stored response's entity-tag (first ``ETag`` line; RFC 9110 §8.8.3), if valid."""
    value = get_first(headers, "etag")
    return parse_etag(value) if value is not None else None


def _single_date(headers: HeaderList, name: str) -> float | None:
    """A singleton HTTP-date field: exactly one line holding a valid HTTP-date, else ``None``."""
    values = get_all(headers, name)
    if len(values) != 1:
        return None
    return parse_http_date(values[0])


def _first_date(headers: HeaderList, name: str) -> float | None:
    value = get_first(headers, name)
    return parse_http_date(value) if value is not None else None


def last_modified_is_strong(headers: HeaderList) -> bool:
    """RFC 9110 §8.8.2.2: a cache may treat ``Last-Modified`` as strong when the same entry's
    ``Date`` is at least one second later (so two changes within that second are impossible)."""
    modified = _first_date(headers, "last-modified")
    date = _first_date(headers, "date")
    return modified is not None and date is not None and date - modified >= 1


# --------------------------------------------------------------------------------------------
# Sending a validation request (RFC 9111 §4.3.1)
# --------------------------------------------------------------------------------------------

# Request fields that make a request conditional (RFC 9110 §13.1) or partial (§14.2, tied to
# If-Range).  A validation request is about *our* stored responses, not the client's copy.
CONDITIONAL_REQUEST_FIELDS = frozenset(
    {"if-match", "if-none-match", "if-modified-since", "if-unmodified-since", "if-range", "range"}
)


def conditional_headers(
    stored_responses: Sequence[HeaderList], *, date_fallback: bool = False
) -> list[tuple[str, str]]:
    """The precondition fields for validating ``stored_responses`` (RFC 9111 §4.3.1).

    * ``If-None-Match`` lists the entity-tags of every stored response given (the cache "MUST
      send the relevant entity tags ... if the entity tags were provided in the stored
      response(s)"), deduplicated, weak ones included (If-None-Match compares weakly).  Pass only
      complete stored responses: a partial one's tag must not be offered (RFC 9111 §4.3.2).
    * ``If-Modified-Since`` carries the ``Last-Modified`` value verbatim — only when exactly one
      stored response is being validated and it has one ("SHOULD send the Last-Modified value
      ... if ... a single stored response is being validated").  RFC 9111 §4.3.1 says nothing of
      ``Date``; RFC 9110 §13.1.3 notes caches "occasionally" use it when there is no
      Last-Modified, which we only do with ``date_fallback=True`` (an origin comparing exactly
      against its Last-Modified would then never answer 304 — harmless but useless).
    """
    tags: list[str] = []
    for headers in stored_responses:
        tag = stored_etag(headers)
        if tag is not None and str(tag) not in tags:
            tags.append(str(tag))
    fields: list[tuple[str, str]] = []
    if tags:
        fields.append(("If-None-Match", ", ".join(tags)))
    if len(stored_responses) == 1:
        headers = stored_responses[0]
        modified = get_first(headers, "last-modified")
        if modified is not None and parse_http_date(modified) is not None:
            fields.append(("If-Modified-Since", modified.strip(_OWS)))
        elif date_fallback:
            date = get_first(headers, "date")
            if date is not None and parse_http_date(date) is not None:
                fields.append(("If-Modified-Since", date.strip(_OWS)))
    return fields


def revalidation_headers(
    stored_responses: Sequence[HeaderList],
    client_request_headers: HeaderList = (),
    *,
    date_fallback: bool = False,
) -> list[tuple[str, str]]:
    """The header list of the request a cache forwards to validate its stored response(s).

    RFC 9111 §4.3.1: the cache "starts with ... a request it is attempting to satisfy or ...
    synthesizes a request" (for background revalidation pass the stored request's headers), and
    "updates that request with one or more precondition header fields" from its stored responses.

    The client's own ``If-None-Match`` / ``If-Modified-Since`` / ``If-Match`` /
    ``If-Unmodified-Since`` / ``If-Range`` and its ``Range`` are removed: they describe the
    *client's* copy, so a 304 to them would say nothing about ours (we could not build the 200
    the client may need from it), and forwarding ``Range`` without its ``If-Range`` could splice
    bytes of a new representation into the client's old one.  The cache answers the client's
    conditionals and range itself, from the validated response (``evaluate_client_conditionals``,
    ``ranges.parse_range``).  (RFC 9111 §4.3.2 also allows merging the client's entity-tags into
    ours; we do not, for simplicity.)  ``If-Match``/``If-Unmodified-Since`` are not evaluated by the
    cache at all (RFC 9111 §4.3.2: "not applicable to a cache"; RFC 9110 §13.1.1/§13.1.4: they
    "can be ignored by caches"): the stored response answers a GET that carries them.
    """
    kept = [(name, value) for name, value in client_request_headers if name.lower() not in CONDITIONAL_REQUEST_FIELDS]
    return kept + conditional_headers(stored_responses, date_fallback=date_fallback)


# --------------------------------------------------------------------------------------------
# Freshening stored responses upon validation (RFC 9111 §4.3.4, §3.2)
# --------------------------------------------------------------------------------------------


def _recency(headers: HeaderList, response_time: float, index: int) -> tuple[float, float, int]:
    date = _first_date(headers, "date")
    return (date if date is not None else response_time, response_time, index)


def answers_own_validation(
    validated: HeaderList, response_304_headers: HeaderList, response_time: float, *, transformed: bool = False
) -> bool:
    """Does a 304 freshen the one stored response whose validators this cache sent (RFC 9111 §4.3.4)?

    When the conditional request was built from exactly one stored response, a 304 refers to that
    response.  §4.3.4's rules select it when the 304's validators match it, and never when they
    contradict it; a 304 that carries no validator at all answers the request that was sent, so it
    freshens that response too — RFC 9110 §15.4.5 asks origins to repeat the validators, but many
    omit them, and treating such a 304 as a mismatch costs a second, unconditional request.
    """
    if select_for_304([validated], response_304_headers, [response_time]):
        return True
    new_tag, sent_tag = stored_etag(response_304_headers), stored_etag(validated)
    if transformed and new_tag is not None and sent_tag is not None and weak_compare(new_tag, sent_tag):
        # ``transformed``: the stored bytes are the origin's, encoded by this cache, which made the
        # tag weak (RFC 9110 §8.8.1); the origin's 304 names its own strong tag for the same value.
        return True
    return new_tag is None and _first_date(response_304_headers, "last-modified") is None


def select_for_304(
    stored_responses: Sequence[HeaderList],
    response_304_headers: HeaderList,
    response_times: Sequence[float] | None = None,
) -> list[int]:
    """Indices of the stored responses a 304 freshens (RFC 9111 §4.3.4), possibly none.

    ``stored_responses`` is the "initial set": those that could have been chosen for the request
    (same key, Vary matched), fresh or not.  ``response_times`` (parallel) break recency ties;
    without them the later index counts as more recent.  The first matching rule applies:

    1. The 304 has strong validators — a strong ``ETag``, and/or a ``Last-Modified`` that is strong
       by RFC 9110 §8.8.2.2 (its ``Date`` at least 1 s later): every stored response with one of
       them is updated; none if none matches ("MUST NOT use the new response to update any").
       A stored response whose own ETag contradicts the 304's (not even a weak match) is never
       selected by a Last-Modified coincidence.
    2. Only weak validators: the *most recent* stored response they match (weak ETag comparison,
       or equal Last-Modified) is updated.
    3. No validator at all: the single stored response, if there is exactly one and it has no
       validator either.
    """
    times = list(response_times) if response_times is not None else [0.0] * len(stored_responses)
    if len(times) != len(stored_responses):
        raise ValueError("response_times must parallel stored_responses")
    new_tag = stored_etag(response_304_headers)
    new_modified = _first_date(response_304_headers, "last-modified")
    strong_tag = new_tag is not None and not new_tag.weak
    strong_modified = new_modified is not None and last_modified_is_strong(response_304_headers)

    def etag_conflicts(headers: HeaderList) -> bool:
        old = stored_etag(headers)
        return new_tag is not None and old is not None and not weak_compare(old, new_tag)

    def modified_equal(headers: HeaderList) -> bool:
        return new_modified is not None and _first_date(headers, "last-modified") == new_modified

    if strong_tag or strong_modified:
        chosen: list[int] = []
        for index, headers in enumerate(stored_responses):
            old = stored_etag(headers)
            by_tag = strong_tag and new_tag is not None and old is not None and strong_compare(old, new_tag)
            by_date = strong_modified and modified_equal(headers) and not etag_conflicts(headers)
            if by_tag or by_date:
                chosen.append(index)
        return chosen

    if new_tag is not None or new_modified is not None:
        weak_matches: list[int] = []
        for index, headers in enumerate(stored_responses):
            old = stored_etag(headers)
            by_tag = new_tag is not None and old is not None and weak_compare(old, new_tag)
            by_date = modified_equal(headers) and not etag_conflicts(headers)
            if by_tag or by_date:
                weak_matches.append(index)
        if not weak_matches:
            return []
        return [max(weak_matches, key=lambda i: _recency(stored_responses[i], times[i], i))]

    if len(stored_responses) == 1:
        only = stored_responses[0]
        if stored_etag(only) is None and get_first(only, "last-modified") is None:
            return [0]
    return []


# Fields a cache never takes from a 304 / HEAD / combined response into a stored one (RFC 9111
# §3.2): §3.1's storage exceptions (Connection and the fields it names, the other hop-by-hop
# fields of RFC 9110 §7.6.1, Proxy-Authenticate / -Authentication-Info / -Authorization),
# Content-Length (named by §3.2), and the fields the stored *bytes* depend on — Content-Encoding
# (the stored body is encoded with the stored coding; a 304 claiming another would make us
# mislabel those bytes) and Content-Range (positions of a stored partial body; §3.2 also calls
# it "automatically processed").  Content-Type and the other Content-* fields ARE updated:
# "the Content-* prefix is not a signal that a header field is omitted from update".
UPDATE_EXCLUDED_FIELDS = HOP_BY_HOP_FIELDS | frozenset(
    {"proxy-authentication-info", "content-length", "content-encoding", "content-range"}
)


def _qualified_field_names(headers: HeaderList, directives: Iterable[str]) -> set[str]:
    """Field names listed in qualified ``no-cache="..."`` / ``private="..."`` (RFC 9111 §5.2.2.4,
    §5.2.2.7); §3.1 says these "can have arguments that prevent storage of header fields"."""
    wanted = set(directives)
    names: set[str] = set()
    for member in split_all(headers, "cache-control"):
        name, eq, argument = member.partition("=")
        if not eq or name.strip(_OWS).lower() not in wanted:
            continue
        argument = argument.strip(_OWS)
        if len(argument) >= 2 and argument.startswith('"') and argument.endswith('"'):
            argument = argument[1:-1]
        names.update(field.lower() for field in split_list(argument))
    return names


def update_headers_from_304(stored_headers: HeaderList, new_headers: HeaderList) -> list[tuple[str, str]]:
    """The stored response's header list after freshening with ``new_headers`` (RFC 9111 §3.2).

    "the cache MUST add each header field in the provided response to the stored response,
    replacing field values that are already present" — every line of a name present in the new
    response replaces every stored line of that name (at the position of the first), new names
    are appended; except ``UPDATE_EXCLUDED_FIELDS``, the fields named by the new response's
    ``Connection``, and those its qualified ``no-cache``/``private`` directives keep out of a
    shared cache (§3.1).  Stored fields the new response does not mention stay as they were.
    Also right for freshening with a HEAD response (§4.3.5) and combining partial content (§3.4).
    """
    excluded = (
        UPDATE_EXCLUDED_FIELDS
        | connection_listed_fields(new_headers)
        | _qualified_field_names(new_headers, ("no-cache", "private"))
    )
    replacements: dict[str, list[tuple[str, str]]] = {}
    for name, value in new_headers:
        lower = name.lower()
        if lower not in excluded:
            replacements.setdefault(lower, []).append((name, value))
    result: list[tuple[str, str]] = []
    emitted: set[str] = set()
    for name, value in stored_headers:
        lower = name.lower()
        if lower in replacements:
            if lower not in emitted:
                result.extend(replacements[lower])
                emitted.add(lower)
            continue
        result.append((name, value))
    for lower, lines in replacements.items():
        if lower not in emitted:
            result.extend(lines)
    return result


# --------------------------------------------------------------------------------------------
# Handling a client's conditional request (RFC 9111 §4.3.2, RFC 9110 §13.2.2)
# --------------------------------------------------------------------------------------------


def _stored_reference_time(stored_headers: HeaderList, response_time: float | None) -> float | None:
    """RFC 9111 §4.3.2: Last-Modified, else the stored Date, else when it was received."""
    modified = _first_date(stored_headers, "last-modified")
    if modified is not None:
        return modified
    date = _first_date(stored_headers, "date")
    if date is not None:
        return date
    return response_time


def _any_match(
    tags: Sequence[EntityTag], current: EntityTag | None, compare: Callable[[EntityTag, EntityTag], bool]
) -> bool:
    return current is not None and any(compare(tag, current) for tag in tags)


def evaluate_client_conditionals(
    method: str,
    request_headers: HeaderList,
    stored_status: int,
    stored_headers: HeaderList,
    *,
    response_time: float | None = None,
    evaluate_origin_preconditions: bool = False,
) -> int | None:
    """Answer a client's preconditions from a stored response: 304, 412 or ``None`` (serve it).

    RFC 9111 §4.3.2 with RFC 9110 §13.2.2's order.  Only for GET/HEAD (every other method is
    written through to the origin, RFC 9111 §4) and only when the stored response is a 200 or 206
    (§4.3.2 "stored 200 (OK) or 206 (Partial Content)"; RFC 9110 §13.2.1 has preconditions ignored
    when the unconditional answer would not be 2xx).

    * If-None-Match (steps 3): ``*``, or any listed tag matching the stored ETag by *weak*
      comparison (RFC 9110 §13.1.2) → 304.  When If-None-Match is present If-Modified-Since is
      ignored entirely (RFC 9110 §13.1.3), even if If-None-Match turned out invalid.
    * If-Modified-Since (step 4): one line, a valid HTTP-date; compared with the stored
      Last-Modified, else its Date, else ``response_time`` (RFC 9111 §4.3.2); earlier or equal
      → 304.  (There is no "date in the future" rule any more in RFC 9110.)
    * If-Match / If-Unmodified-Since (steps 1-2) are "not applicable to a cache" (RFC 9111
      §4.3.2) and are skipped, unless ``evaluate_origin_preconditions=True`` — for a deployment
      where the edge answers authoritatively: If-Match compares strongly (a stored ETag is
      required; ``*`` is true), If-Unmodified-Since needs a stored Last-Modified; false → 412.
      Invalid fields are ignored.

    If-Range (step 5) is ``ranges.if_range_allows``'s business.
    """
    if method not in ("GET", "HEAD") or stored_status not in (200, 206):
        return None
    current = stored_etag(stored_headers)

    if evaluate_origin_preconditions:
        if_match = get_all(request_headers, "if-match")
        if if_match:
            parsed = parse_etag_list(if_match)
            # "*" is true (we hold a representation); an invalid field is ignored.
            if isinstance(parsed, list) and not _any_match(parsed, current, strong_compare):
                return 412
        else:
            unmodified_since = _single_date(request_headers, "if-unmodified-since")
            modified = _first_date(stored_headers, "last-modified")
            if unmodified_since is not None and modified is not None and modified > unmodified_since:
                return 412

    if_none_match = get_all(request_headers, "if-none-match")
    if if_none_match:
        parsed_none = parse_etag_list(if_none_match)
        if parsed_none == "*":
            return 304
        if isinstance(parsed_none, list) and _any_match(parsed_none, current, weak_compare):
            return 304
        return None

    modified_since = _single_date(request_headers, "if-modified-since")
    if modified_since is not None:
        reference = _stored_reference_time(stored_headers, response_time)
        if reference is not None and reference <= modified_since:
            return 304
    return None


# RFC 9110 §15.4.5: a 304 carries "any of the following header fields that would have been sent in
# a 200 (OK) response to the same request: Content-Location, Date, ETag, and Vary; Cache-Control and
# Expires", and "SHOULD NOT generate representation metadata other than the above listed fields
# unless said metadata exists for the purpose of guiding cache updates (e.g., Last-Modified might
# be useful if the response does not have an ETag field)".
NOT_MODIFIED_FIELDS = ("content-location", "date", "etag", "vary", "cache-control", "expires")


def not_modified_headers(stored_headers: HeaderList) -> list[tuple[str, str]]:
    """The stored fields a cache-generated 304 carries (RFC 9110 §15.4.5), in stored order.

    The listed fields, plus ``Last-Modified`` only when there is no ``ETag``.  Nothing else: no
    Content-Length/Content-Type/Content-Encoding (there is no content), no other fields — a 304's
    purpose is to minimise transfer, and its recipient keeps its own stored copy of the rest.  The
    proxy adds ``Age`` (RFC 9111 §4) and ``Cache-Status`` itself.
    """
    wanted = set(NOT_MODIFIED_FIELDS)
    if stored_etag(stored_headers) is None:
        wanted.add("last-modified")
    return [(name, value) for name, value in stored_headers if name.lower() in wanted]
