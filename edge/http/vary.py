"""Secondary cache keys from ``Vary`` (RFC 9111 §4.1, RFC 9110 §12.5.5).

A stored response that carries ``Vary`` may only be reused for a request whose *nominated* request
header fields match those of the request that caused it to be stored (RFC 9111 §4.1).  We record,
per stored variant, the tuple of nominated field names and their normalised values (the
*secondary key*), and compare it with the same computation on a new request.

What "match" allows (RFC 9111 §4.1), and how far we go:

1. "adding or removing whitespace, where allowed in the header field's syntax";
2. "combining multiple header field lines with the same field name";
3. "normalizing both header field values in a way that is known to have identical semantics,
   according to the header field's specification (e.g., ... case-normalization, where values are
   defined to be case-insensitive)".

For *every* field we do what is safe without knowing its syntax: drop leading/trailing whitespace
of each line (never part of a field value, RFC 9110 §5.5), drop empty lines, and combine lines
with ``", "`` (RFC 9110 §5.3).  For the fields whose grammar we know and whose members are
case-insensitive we go further (see ``_KNOWN_LIST_FIELDS``): split the list honouring quoted
strings, remove optional whitespace around ``,`` and ``;``, drop empty list members and empty
parameters, lower-case what the grammar defines as case-insensitive, and write qvalues canonically
(``q=0.50`` → ``q=0.5``, ``q=1.000`` → ``q=1``).

Where a field's preference is given by qvalues and nothing else, member order is not part of its
meaning, so we put the members in a canonical order (``_WEIGHTED_FIELDS``):

- ``Accept-Encoding`` (RFC 9110 §12.5.3): a content-coding is acceptable or not by its qvalue and
  "the acceptable content-coding with the highest non-zero qvalue is preferred" — order plays no
  part at all.  Members are sorted by descending qvalue, then name; ``q=1`` (the default) is
  dropped; a coding listed twice keeps its first weight.  ``gzip, br`` ≡ ``br;q=1, gzip``.
- ``Accept-Language`` (RFC 9110 §12.5.4, RFC 4647): qvalues rank the ranges, but servers break
  equal-qvalue ties by order (§12.4.2 warns of it), so members are sorted by descending qvalue
  *stably*: ``fr;q=0.5, en`` ≡ ``en, fr;q=0.5``, while ``en, fr`` and ``fr, en`` stay different.

Members that are not well-formed (a quoted string, an invalid qvalue) leave the field's order as
it is: being too strict costs a vary-miss, being too lax serves one client another's variant.

Unknown fields (``User-Agent``, ``Cookie``, ``X-Device`` ...) get only the safe treatment: being
too strict costs a vary-miss, being too lax serves one client another client's variant.

"If (after any normalization that might take place) a header field is absent from a request, it
can only match another request if it is also absent there" — so an absent field is ``None`` in the
secondary key and is distinct from a present-but-empty one (``""``).

"A stored response with a Vary header field value containing a member "*" always fails to match"
— ``vary_fields`` returns ``None`` for it and callers should not store such a response at all
(``is_vary_star``).  A ``Vary`` member that is not a field-name token is malformed; we cannot know
what the origin meant, so we treat the response exactly like ``Vary: *`` (never reused without
revalidation) rather than guess.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from edge.http.headers import HeaderList, get_all, split_all, split_list

MAX_VARIANTS_DEFAULT = 32

SecondaryKey = tuple[tuple[str, str | None], ...]

_TCHAR = frozenset("!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
_OWS = " \t"
_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")
_QVALUE = re.compile(r"(?:0(?:\.[0-9]{0,3})?|1(?:\.0{0,3})?)", re.ASCII)

# Request fields whose value is a comma-separated list of `token-ish [ *( OWS ";" OWS param ) ]`
# members.  "all": the whole member is case-insensitive (content-codings RFC 9110 §8.4.1, language
# ranges RFC 4647 §2 / RFC 9110 §12.5.4, charsets RFC 9110 §12.5.2, parameter names RFC 9110
# §5.6.6, the weight "q" RFC 9110 §12.4.2).  "media": only the media type/subtype and parameter
# names are case-insensitive (RFC 9110 §8.3.1); parameter values may be case-sensitive.
_KNOWN_LIST_FIELDS: dict[str, str] = {
    "accept-encoding": "all",
    "accept-language": "all",
    "accept-charset": "all",
    "accept": "media",
}
# Fields whose members' order carries no meaning beyond their qvalues: "any" = ties too,
# "stable" = equal qvalues keep their order (see the module docstring).
_WEIGHTED_FIELDS: dict[str, str] = {"accept-encoding": "any", "accept-language": "stable"}


def _is_token(text: str) -> bool:
    return bool(text) and all(char in _TCHAR for char in text)


def vary_fields(response_headers: HeaderList) -> tuple[str, ...] | None:
    """The field names nominated by every ``Vary`` line, lower-cased, deduplicated, in order.

    RFC 9111 §4.1 / RFC 9110 §12.5.5.  ``None`` means the response can never be selected: a
    member ``*`` anywhere (also ``*, foo`` or a separate ``Vary: *`` line), or a member that is not
    a field-name (malformed — treated like ``*``, see module docstring).  ``()`` means no
    selecting fields (no ``Vary``, or an empty one): the response matches any request.
    """
    names: list[str] = []
    for member in split_all(response_headers, "vary"):
        if member == "*" or not _is_token(member):
            return None
        name = member.translate(_ASCII_LOWER)
        if name not in names:
            names.append(name)
    return tuple(names)


def is_vary_star(response_headers: HeaderList) -> bool:
    """True when the response can never match a later request (RFC 9111 §4.1 "*"), so storing it
    is pointless; malformed ``Vary`` values count too (see ``vary_fields``)."""
    return vary_fields(response_headers) is None


def _canonical_qvalue(text: str) -> str:
    """RFC 9110 §12.4.2 qvalue in shortest form; anything not a qvalue is returned unchanged."""
    if not _QVALUE.fullmatch(text):
        return text
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return text or "0"


def _split_params(member: str) -> list[str]:
    """Split a list member on ``;`` outside quoted strings; pieces are whitespace-trimmed.

    Trimming uses ``str.strip()`` like ``split_list`` does, so a second pass sees the same pieces.
    """
    pieces: list[str] = []
    current: list[str] = []
    in_quotes = False
    escaped = False
    for char in member:
        if escaped:
            current.append(char)
            escaped = False
            continue
        if in_quotes and char == "\\":
            current.append(char)
            escaped = True
            continue
        if char == '"':
            in_quotes = not in_quotes
        if char == ";" and not in_quotes:
            pieces.append("".join(current).strip())
            current = []
            continue
        current.append(char)
    pieces.append("".join(current).strip())
    return pieces


def _normalize_member(member: str, mode: str) -> str:
    pieces = _split_params(member)
    head, params = pieces[0], [piece for piece in pieces[1:] if piece]
    if mode == "all" or '"' not in head:  # media types: type/subtype, never a quoted string
        head = head.translate(_ASCII_LOWER)
    out = [head]
    for param in params:
        name, eq, value = param.partition("=")
        if '"' in name:
            out.append(param)  # malformed; leave it alone
            continue
        name = name.translate(_ASCII_LOWER)
        if eq and not value.startswith('"'):
            if mode == "all":
                value = value.translate(_ASCII_LOWER)
            if name == "q":
                value = _canonical_qvalue(value)
        out.append(name + eq + value)
    return ";".join(out)


def _combine_lines(values: Iterable[str]) -> str:
    """Steps 1-2 for any field: trim each line, drop empty lines, join with ", "."""
    return ", ".join(line for line in (value.strip(_OWS) for value in values) if line)


def normalize_field_value(name: str, values: Sequence[str]) -> str | None:
    """Normalise the request field ``name`` for Vary matching (RFC 9111 §4.1).

    ``values`` are the field's lines in order; ``None`` is returned when there are none (absent
    field — distinct from a present, empty ``""``).  The result is idempotent: normalising it again
    yields itself.  See the module docstring for what is and is not normalised, and why.
    """
    if not values:
        return None
    combined = _combine_lines(values)
    mode = _KNOWN_LIST_FIELDS.get(name.lower())
    if mode is None:
        return combined
    # Split the *combined* value rather than each line so that a malformed member (an unclosed
    # quote) swallows the same text whichever way the lines were presented: idempotence.
    members = [member for member in (_normalize_member(m, mode) for m in split_list(combined)) if member]
    ordering = _WEIGHTED_FIELDS.get(name.lower())
    if ordering is not None:
        members = _by_weight(members, ordering == "any")
    return ", ".join(members)  # ";" alone is an empty element


def _by_weight(members: list[str], ties_unordered: bool) -> list[str]:
    """Normalised members in canonical order by qvalue (see the module docstring); unchanged when
    any member is not ``value[;q=qvalue]``."""
    weighted: list[tuple[float, str]] = []
    seen: set[str] = set()
    for member in members:
        value, _, params = member.partition(";")
        if '"' in member or not value:
            return members
        if params:
            name, eq, q = params.partition("=")
            if name != "q" or not eq or not _QVALUE.fullmatch(q) or ";" in q:
                return members
            weight = float(q)
        else:
            weight = 1.0
        if ties_unordered and value in seen:
            continue  # a coding listed twice: its first weight counts
        seen.add(value)
        weighted.append((weight, value))
    if ties_unordered:
        weighted.sort(key=lambda item: (-item[0], item[1]))
    else:
        weighted.sort(key=lambda item: -item[0])  # stable: equal weights keep their order
    return [value if weight == 1.0 else f"{value};q={_canonical_qvalue(_format_weight(weight))}"
            for weight, value in weighted]  # fmt: skip


def _format_weight(weight: float) -> str:
    return f"{weight:.3f}"


def secondary_key(fields: Sequence[str], request_headers: HeaderList) -> SecondaryKey:
    """The normalised values of the nominated fields, ``None`` for an absent one (RFC 9111 §4.1).

    Store it with the response (together with the response's own ``vary_fields``) and compare it
    with ``matches`` on later requests.
    """
    key: list[tuple[str, str | None]] = []
    for name in fields:
        lower = name.translate(_ASCII_LOWER)
        key.append((lower, normalize_field_value(lower, get_all(request_headers, lower))))
    return tuple(key)


def variant_id(key: SecondaryKey) -> str:
    """A stable hex identifier (SHA-256) of a secondary key, for naming stored variants.

    Injective by construction (JSON of the pairs, ``null`` for absent), stable across processes
    and Python versions.  A response without ``Vary`` has the id of the empty key.
    """
    encoded = json.dumps([[name, value] for name, value in key], ensure_ascii=True, separators=(",", ":"))
    return hashlib.sha256(encoded.encode("ascii")).hexdigest()


def matches(
    stored_vary_fields: tuple[str, ...] | None, stored_secondary_key: SecondaryKey, request_headers: HeaderList
) -> bool:
    """Whether a stored variant may be selected for this request (RFC 9111 §4.1).

    ``stored_vary_fields`` is ``vary_fields`` of the stored response (``None`` never matches);
    ``stored_secondary_key`` is what ``secondary_key`` gave for the request that stored it.
    """
    if stored_vary_fields is None:
        return False
    return secondary_key(stored_vary_fields, request_headers) == stored_secondary_key


@dataclass(frozen=True)
class StoredVariant:
    """What variant selection needs to know about one stored response under a primary key.

    ``date`` is the parsed ``Date`` of the stored response (``None`` if absent/invalid);
    ``response_time`` is when the cache received it (RFC 9111 §4.2.3).
    """

    variant_id: str
    vary: tuple[str, ...] | None
    secondary_key: SecondaryKey
    date: float | None
    response_time: float


def _recency(variant: StoredVariant) -> tuple[float, float, str]:
    # Date decides (RFC 9111 §4 "as determined by the Date header field"); a response without a
    # Date was given one equal to its receipt time by RFC 9110 §6.6.1, so response_time stands in
    # for it and breaks ties; the id makes the order total and deterministic.
    date = variant.date if variant.date is not None else variant.response_time
    return (date, variant.response_time, variant.variant_id)


def most_recent(variants: Iterable[StoredVariant]) -> StoredVariant | None:
    """The most recent variant by ``Date`` (RFC 9111 §4: "When more than one suitable response is
    stored, a cache MUST use the most recent one (as determined by the Date header field)")."""
    return max(variants, key=_recency, default=None)


def select_variant(variants: Iterable[StoredVariant], request_headers: HeaderList) -> StoredVariant | None:
    """Choose the stored response to use for a request, or ``None`` for a vary-miss (RFC 9111 §4.1).

    Among the variants that match: RFC 9111 §4.1 "When a cache has multiple stored responses for a
    target URI and one or more omits the Vary header field, the cache SHOULD choose the most recent
    stored response with a valid Vary field value" — so variants with a non-empty valid ``Vary``
    are preferred over ones without; then the most recent by ``Date`` (§4).  We do not rank by
    qvalues (the optional "known mechanism" of §4.1).
    """
    candidates = [variant for variant in variants if matches(variant.vary, variant.secondary_key, request_headers)]
    with_vary = [variant for variant in candidates if variant.vary]
    return most_recent(with_vary or candidates)


def variants_to_evict(variants: Iterable[StoredVariant], max_variants: int = MAX_VARIANTS_DEFAULT) -> list[str]:
    """Ids of the variants to drop so that at most ``max_variants`` remain: the oldest by
    ``response_time`` first (not an RFC rule — a bound against a client cycling through header
    values to flood one URL with variants; RFC 9111 §3 lets a cache decline to store)."""
    if max_variants < 0:
        raise ValueError("max_variants must be >= 0")
    ordered = sorted(variants, key=lambda variant: (variant.response_time, variant.variant_id))
    excess = len(ordered) - max_variants
    return [variant.variant_id for variant in ordered[: max(excess, 0)]]
