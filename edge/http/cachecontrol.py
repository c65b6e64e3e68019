"""Cache-Control (RFC 9111 §5.2) and targeted cache-control fields (RFC 9213) as typed data.

One :class:`CacheControl` value describes the directives of one message, request or response; the
policy module decides what they mean.  Parsing never raises: anything the grammar does not allow is
recorded in ``problems`` and resolved *conservatively*, because RFC 9111 §4.2.1 says:

    "When there is more than one value present for a given directive (e.g., two Expires header
    field lines or multiple Cache-Control: max-age directives), either the first occurrence should
    be used or the response should be considered stale.  If directives conflict (e.g., both
    max-age and no-cache are present), the most restrictive directive should be honored.  Caches
    are encouraged to consider responses that have invalid freshness information (e.g., a max-age
    directive with non-integer content) to be stale."

Resolutions (one line each, so they can be checked against that text):

* ``max-age`` / ``s-maxage`` whose argument is not delta-seconds (``7200.0``, ``-1``, ``abc``, no
  argument) → the value ``0``: the response is stale.  Present twice with different values → ``0``
  (we choose "considered stale" over "first occurrence": it is the restrictive reading).  The same
  value twice is not a conflict.
* ``min-fresh`` repeated → the largest; ``max-stale``, ``stale-while-revalidate``,
  ``stale-if-error`` repeated → the smallest (each the most restrictive).  An invalid argument to
  one of these → that occurrence is ignored (``max-stale=abc`` does *not* mean "any staleness").
* ``max-stale`` without an argument means "a stale response of any age" (§5.2.1.2); it is stored as
  :data:`DELTA_SECONDS_INFINITY` (2^31), which §1.2.2 itself calls "infinity".
* ``no-cache`` / ``private`` with a field-name list are the *qualified* forms: ``no_cache`` /
  ``private`` stay ``False`` and the lowercased names go to ``no_cache_fields`` /
  ``private_fields``.  An empty or unparseable list is read as the unqualified directive, as is a
  mix of both forms (the unqualified one is more restrictive).
* A directive that takes no argument but has one (``no-store=1``): restrictive directives
  (``no-store``, ``must-revalidate``, ``proxy-revalidate``, ``no-transform``, ``only-if-cached``)
  still apply; permissive ones (``public``, ``immutable``, ``must-understand``) are ignored.
* Arguments may be tokens or quoted strings: §5.2 "recipients ought to accept both forms, even if a
  specific form is required for generation", so ``max-age="5"`` is 5.
* delta-seconds above 2^31 are clamped to 2147483648 (§1.2.2 "the cache MUST consider the value to
  be 2147483648").
* Unknown directives are kept in ``extensions`` and otherwise ignored (§5.2.3).

RFC 9213 targeted fields (``CDN-Cache-Control``) are Structured-Field Dictionaries parsed with
``http_sfv``; their members map onto the same :class:`CacheControl` type so the policy treats both
alike (§2.1 "The semantics and precedence of cache directives in a targeted field are the same as
those in Cache-Control").
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from functools import lru_cache

from http_sfv.dictionary import Dictionary
from http_sfv.item import InnerList, Item
from http_sfv.types import DisplayString, Token

from edge.http.headers import HeaderList, get_all, split_list

DELTA_SECONDS_INFINITY = 2147483648
"""RFC 9111 §1.2.2: the value a cache uses for any larger delta-seconds; "represents infinity"."""

_MEMO_LIMIT = 1024  # longer field values are parsed every time rather than kept in the memo
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+", re.ASCII)
_DIGITS = re.compile(r"[0-9]+", re.ASCII)

# Directives with a delta-seconds argument.
_DELTA_DIRECTIVES = frozenset(
    {"max-age", "s-maxage", "max-stale", "min-fresh", "stale-while-revalidate", "stale-if-error"}
)
# Argument-less directives that restrict caching: honoured even when (wrongly) given an argument.
_RESTRICTIVE_FLAGS = {
    "no-store": "no_store",
    "must-revalidate": "must_revalidate",
    "proxy-revalidate": "proxy_revalidate",
    "no-transform": "no_transform",
    "only-if-cached": "only_if_cached",
}
# Argument-less directives that permit more caching: ignored when given an argument.
_PERMISSIVE_FLAGS = {
    "public": "public",
    "immutable": "immutable",
    "must-understand": "must_understand",
}
_FIELD_LIST_DIRECTIVES = frozenset({"no-cache", "private"})
KNOWN_DIRECTIVES = (
    _DELTA_DIRECTIVES | set(_RESTRICTIVE_FLAGS) | set(_PERMISSIVE_FLAGS) | _FIELD_LIST_DIRECTIVES
)


@dataclass(frozen=True, slots=True)
class CacheControl:
    """The cache directives of one message (RFC 9111 §5.2, RFC 5861, RFC 8246).

    Request-only directives (§5.2.1): ``max_stale``, ``min_fresh``, ``only_if_cached``; response-only
    (§5.2.2): ``s_maxage``, ``public``, ``private``/``private_fields``, ``must_revalidate``,
    ``proxy_revalidate``, ``must_understand``, ``immutable``, ``stale_while_revalidate``; both:
    ``max_age``, ``no_cache``, ``no_store``, ``no_transform``, ``stale_if_error``.  Which side a
    value came from is the caller's knowledge; the parser accepts every directive everywhere.
    ``None`` means "absent" for every delta-seconds field.
    """

    present: bool = False
    max_age: int | None = None
    s_maxage: int | None = None
    max_stale: int | None = None
    min_fresh: int | None = None
    stale_while_revalidate: int | None = None
    stale_if_error: int | None = None
    no_cache: bool = False
    no_cache_fields: tuple[str, ...] = ()
    no_store: bool = False
    no_transform: bool = False
    only_if_cached: bool = False
    public: bool = False
    private: bool = False
    private_fields: tuple[str, ...] = ()
    must_revalidate: bool = False
    proxy_revalidate: bool = False
    must_understand: bool = False
    immutable: bool = False
    extensions: tuple[tuple[str, str | None], ...] = ()
    problems: tuple[str, ...] = ()

    @property
    def malformed(self) -> bool:
        """True when anything in the field(s) did not follow the grammar (see ``problems``)."""
        return bool(self.problems)

    @property
    def max_stale_any(self) -> bool:
        """``max-stale`` without a value: "the client will accept a stale response of any age"."""
        return self.max_stale is not None and self.max_stale >= DELTA_SECONDS_INFINITY


@dataclass(frozen=True, slots=True)
class CdnCacheControl:
    """A valid, non-empty targeted cache-control field (RFC 9213 §2) and what it says."""

    field_name: str
    directives: CacheControl


# ---------------------------------------------------------------------------------------------
# Cache-Control (RFC 9111 §5.2)


def _unquote(text: str) -> str | None:
    """The content of a quoted-string (RFC 9110 §5.6.4), or ``None`` if it is not exactly one."""
    if len(text) < 2 or text[0] != '"' or text[-1] != '"':
        return None
    out: list[str] = []
    escaped = False
    for char in text[1:-1]:
        if escaped:
            out.append(char)
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == '"':
            return None
        else:
            out.append(char)
    if escaped:  # the closing quote was escaped
        return None
    return "".join(out)


def parse_delta_seconds(argument: str | None) -> int | None:
    """delta-seconds = 1*DIGIT (RFC 9111 §1.2.2), clamped to 2^31; ``None`` if invalid.

    §1.2.2: "If a cache receives a delta-seconds value greater than the greatest integer it can
    represent ... the cache MUST consider the value to be 2147483648".  Signs, fractions, spaces
    and non-ASCII digits are not delta-seconds.
    """
    if argument is None or not _DIGITS.fullmatch(argument):
        return None
    return min(int(argument), DELTA_SECONDS_INFINITY)


def _parse_field_names(argument: str) -> tuple[str, ...] | None:
    """``#field-name`` for qualified no-cache/private; ``None`` when empty or not all tokens."""
    names: list[str] = []
    for item in split_list(argument):
        if not _TOKEN.fullmatch(item):
            return None
        lowered = item.lower()
        if lowered not in names:
            names.append(lowered)
    return tuple(names) or None


def _split_directive(element: str) -> tuple[str, str | None, bool] | None:
    """``token [ "=" ( token / quoted-string ) ]`` → (lowercased name, argument, argument_valid)."""
    name, equals, raw = element.partition("=")
    name = name.strip(" \t")
    if not _TOKEN.fullmatch(name):
        return None
    if not equals:
        return name.lower(), None, True
    raw = raw.strip(" \t")
    if raw.startswith('"'):
        unquoted = _unquote(raw)
        if unquoted is None:
            return name.lower(), raw, False
        return name.lower(), unquoted, True
    return name.lower(), raw, bool(_TOKEN.fullmatch(raw))


class _Builder:
    """Collects occurrences, then resolves them with the conservative rules in the module doc."""

    def __init__(self) -> None:
        self.deltas: dict[str, list[int | None]] = {}
        self.flags: set[str] = set()
        self.field_lists: dict[str, list[tuple[str, ...] | None]] = {}
        self.extensions: list[tuple[str, str | None]] = []
        self.problems: list[str] = []

    def add(self, name: str, argument: str | None, has_argument: bool, argument_valid: bool) -> None:
        if name in _DELTA_DIRECTIVES:
            if not has_argument:
                if name == "max-stale":
                    self.deltas.setdefault(name, []).append(DELTA_SECONDS_INFINITY)
                    return
                self.problems.append(f"{name}: missing argument")
                self.deltas.setdefault(name, []).append(None)
                return
            value = parse_delta_seconds(argument) if argument_valid else None
            if value is None:
                self.problems.append(f"{name}: invalid delta-seconds {argument!r}")
            self.deltas.setdefault(name, []).append(value)
        elif name in _FIELD_LIST_DIRECTIVES:
            if not has_argument:
                self.field_lists.setdefault(name, []).append(None)
                return
            names = _parse_field_names(argument or "") if argument_valid else None
            if names is None:
                self.problems.append(f"{name}: invalid field-name list {argument!r}")
            self.field_lists.setdefault(name, []).append(names)
        elif name in _RESTRICTIVE_FLAGS:
            if has_argument:
                self.problems.append(f"{name}: unexpected argument")
            self.flags.add(name)
        elif name in _PERMISSIVE_FLAGS:
            if has_argument:
                self.problems.append(f"{name}: unexpected argument, directive ignored")
                return
            self.flags.add(name)
        else:
            self.extensions.append((name, argument if has_argument else None))

    def _freshness(self, name: str) -> int | None:
        values = self.deltas.get(name)
        if not values:
            return None
        if any(value is None for value in values):
            return 0  # invalid freshness information → stale (§4.2.1)
        if len(set(values)) > 1:
            self.problems.append(f"{name}: conflicting values {values}")
            return 0  # more than one value → "the response should be considered stale"
        return values[0]

    def _valid(self, name: str) -> list[int]:
        return [value for value in self.deltas.get(name, []) if value is not None]

    def _field_list(self, name: str) -> tuple[bool, tuple[str, ...]]:
        occurrences = self.field_lists.get(name)
        if not occurrences:
            return False, ()
        if any(names is None for names in occurrences):
            return True, ()  # unqualified (or unreadable → unqualified) wins: most restrictive
        merged: list[str] = []
        for names in occurrences:
            for item in names or ():
                if item not in merged:
                    merged.append(item)
        return False, tuple(merged)

    def build(self, present: bool) -> CacheControl:
        min_fresh = self._valid("min-fresh")
        max_stale = self._valid("max-stale")
        swr = self._valid("stale-while-revalidate")
        sie = self._valid("stale-if-error")
        no_cache, no_cache_fields = self._field_list("no-cache")
        private, private_fields = self._field_list("private")
        max_age = self._freshness("max-age")
        s_maxage = self._freshness("s-maxage")
        return CacheControl(
            present=present,
            max_age=max_age,
            s_maxage=s_maxage,
            max_stale=min(max_stale) if max_stale else None,
            min_fresh=max(min_fresh) if min_fresh else None,
            stale_while_revalidate=min(swr) if swr else None,
            stale_if_error=min(sie) if sie else None,
            no_cache=no_cache,
            no_cache_fields=no_cache_fields,
            no_store="no-store" in self.flags,
            no_transform="no-transform" in self.flags,
            only_if_cached="only-if-cached" in self.flags,
            public="public" in self.flags,
            private=private,
            private_fields=private_fields,
            must_revalidate="must-revalidate" in self.flags,
            proxy_revalidate="proxy-revalidate" in self.flags,
            must_understand="must-understand" in self.flags,
            immutable="immutable" in self.flags,
            extensions=tuple(self.extensions),
            problems=tuple(self.problems),
        )


def parse_cache_control(values: Iterable[str]) -> CacheControl:
    """Parse every Cache-Control field line of a message (RFC 9111 §5.2) into :class:`CacheControl`.

    Lines are combined as one list (RFC 9110 §5.3), directive names compared case-insensitively,
    token and quoted-string arguments both accepted (§5.2), and every grammar violation resolved
    conservatively per §4.2.1 (see the module docstring).  Never raises.  Results are memoised
    (the value is immutable), because the hit path asks about the same stored lines repeatedly.
    """
    lines = tuple(values)
    if sum(map(len, lines)) > _MEMO_LIMIT:
        return _parse_cache_control_lines(lines)
    return _parse_cache_control_memo(lines)


def _parse_cache_control_lines(values: tuple[str, ...]) -> CacheControl:
    builder = _Builder()
    for value in values:
        for element in split_list(value):
            parts = _split_directive(element)
            if parts is None:
                builder.problems.append(f"not a directive: {element!r}")
                continue
            name, argument, argument_valid = parts
            builder.add(name, argument, "=" in element, argument_valid)
    return builder.build(present=bool(values))


_parse_cache_control_memo = lru_cache(maxsize=2048)(_parse_cache_control_lines)


def parse_cache_control_headers(headers: HeaderList) -> CacheControl:
    """:func:`parse_cache_control` over every ``Cache-Control`` line of ``headers`` (RFC 9111 §5.2)."""
    return parse_cache_control(get_all(headers, "Cache-Control"))


def _format_argument(value: str) -> str:
    if _TOKEN.fullmatch(value):
        return value
    escaped = value.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'


def format_cache_control(cc: CacheControl) -> str:
    """Serialise directives back to a Cache-Control field value (RFC 9111 §5.2 generation rules).

    delta-seconds use the token form, field-name lists the quoted-string form (§5.2.2.4/§5.2.2.7);
    ``max-stale`` of "any age" is written without an argument.  ``problems`` are not represented:
    the output is the normalised meaning, so parsing it again gives the same directives.
    """
    parts: list[str] = []
    for name, value in (
        ("max-age", cc.max_age),
        ("s-maxage", cc.s_maxage),
        ("min-fresh", cc.min_fresh),
        ("stale-while-revalidate", cc.stale_while_revalidate),
        ("stale-if-error", cc.stale_if_error),
    ):
        if value is not None:
            parts.append(f"{name}={value}")
    if cc.max_stale is not None:
        parts.append("max-stale" if cc.max_stale_any else f"max-stale={cc.max_stale}")
    if cc.no_cache:
        parts.append("no-cache")
    elif cc.no_cache_fields:
        parts.append(f'no-cache="{", ".join(cc.no_cache_fields)}"')
    if cc.private:
        parts.append("private")
    elif cc.private_fields:
        parts.append(f'private="{", ".join(cc.private_fields)}"')
    for name, attribute in {**_RESTRICTIVE_FLAGS, **_PERMISSIVE_FLAGS}.items():
        if getattr(cc, attribute):
            parts.append(name)
    for name, argument in cc.extensions:
        parts.append(name if argument is None else f"{name}={_format_argument(argument)}")
    return ", ".join(parts)


# ---------------------------------------------------------------------------------------------
# Targeted cache-control fields (RFC 9213)


def _sf_delta(value: object) -> int | None:
    """An sf-integer >= 0 (RFC 9213 §2.1: max-age "has an integer value"); else ``None``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        return None
    return min(value, DELTA_SECONDS_INFINITY)


def _sf_field_names(value: object) -> tuple[str, ...] | None:
    """A String holding a comma-separated field-name list (no-cache / private), else ``None``."""
    if not isinstance(value, str) or isinstance(value, Token | DisplayString):
        return None
    return _parse_field_names(value)


def _describe(value: object) -> str:
    if isinstance(value, Decimal):
        return f"decimal {value}"
    return f"{type(value).__name__} {value!r}"


def _directives_from_dictionary(members: Sequence[tuple[str, object]]) -> CacheControl:
    """Map RFC 8941/9651 Dictionary members onto :class:`CacheControl` (RFC 9213 §2.1).

    Value types follow §2.1: no value → Boolean true, delta-seconds → Integer, field lists →
    String.  "Implementations SHOULD NOT consume values that violate these inferred constraints",
    so such a member is not used as given: a bad ``max-age``/``s-maxage`` (``1.5``, ``"60"``,
    ``-1``, ``?1``) becomes 0 — stale, as RFC 9111 §4.2.1 encourages for invalid freshness — and any
    other ill-typed member is ignored (except that an ill-typed ``no-cache``/``private`` is read as
    the unqualified directive, the restrictive choice).  Parameters are ignored.
    """
    builder = _Builder()
    for name, member in members:
        value: object = member.value if isinstance(member, Item) else member
        if isinstance(member, InnerList):
            value = list(member)
        if name in _DELTA_DIRECTIVES:
            delta = _sf_delta(value)
            if delta is None and name == "max-stale" and value is True:
                delta = DELTA_SECONDS_INFINITY
            if delta is None:
                builder.problems.append(f"{name}: not a non-negative Integer ({_describe(value)})")
                if name in ("max-age", "s-maxage"):
                    builder.deltas[name] = [0]
                continue
            builder.deltas[name] = [delta]
        elif name in _FIELD_LIST_DIRECTIVES:
            if value is True:
                builder.field_lists[name] = [None]
                continue
            names = _sf_field_names(value)
            if names is None:
                builder.problems.append(f"{name}: not a field-name String ({_describe(value)})")
            builder.field_lists[name] = [names]
        elif name in _RESTRICTIVE_FLAGS or name in _PERMISSIVE_FLAGS:
            if value is True:
                builder.flags.add(name)
            else:
                builder.problems.append(f"{name}: not Boolean true ({_describe(value)}), ignored")
        else:
            builder.extensions.append((name, None if value is True else str(value)))
    return builder.build(present=True)


def parse_cdn_cache_control(
    values: Iterable[str], field_name: str = "CDN-Cache-Control"
) -> CdnCacheControl | None:
    """Parse a targeted cache-control field (RFC 9213 §2.1); ``None`` when it must be ignored.

    The lines are combined (RFC 9110 §5.3) and parsed as a Structured-Field Dictionary.  RFC 9213
    §2.1: "If a targeted field in a given response is empty, or a parsing error is encountered,
    that field MUST be ignored by the cache (i.e., it behaves as if the field were not present,
    likely falling back to other cache-control mechanisms present)" — so any SF error (including
    uppercase keys, which SF does not allow) ignores the *whole* field, and the caller falls back
    to Cache-Control.  Blank lines are skipped before combining.  Never raises.
    """
    stripped = (value.strip(" \t") for value in values)
    lines = tuple(line for line in stripped if line)
    if sum(map(len, lines)) > _MEMO_LIMIT:
        return _parse_cdn_lines(lines, field_name)
    return _parse_cdn_memo(lines, field_name)


def _parse_cdn_lines(lines: tuple[str, ...], field_name: str) -> CdnCacheControl | None:
    if not lines:
        return None
    dictionary = Dictionary()
    try:
        dictionary.parse(", ".join(lines).encode("ascii"))
    except Exception:  # http_sfv raises ValueError (and may raise others) on any invalid input
        return None
    members = list(dictionary.items())
    if not members:
        return None
    return CdnCacheControl(field_name=field_name, directives=_directives_from_dictionary(members))


_parse_cdn_memo = lru_cache(maxsize=2048)(_parse_cdn_lines)


def select_targeted_field(headers: HeaderList, names: Sequence[str]) -> CdnCacheControl | None:
    """The first field of the cache's target list that is present and valid (RFC 9213 §2.2).

    "the cache MUST select the first (in target-list order) field with a valid, non-empty value
    and use its value to determine the caching policy for the response, and it MUST ignore the
    Cache-Control and Expires header fields in that response, unless no valid, non-empty value is
    available from the listed header fields."  ``None`` → use Cache-Control/Expires as usual.
    """
    for name in names:
        lines = get_all(headers, name)
        if not lines:
            continue
        parsed = parse_cdn_cache_control(lines, field_name=name)
        if parsed is not None:
            return parsed
    return None


__all__ = [
    "DELTA_SECONDS_INFINITY",
    "KNOWN_DIRECTIVES",
    "CacheControl",
    "CdnCacheControl",
    "format_cache_control",
    "parse_cache_control",
    "parse_cache_control_headers",
    "parse_cdn_cache_control",
    "parse_delta_seconds",
    "select_targeted_field",
]
