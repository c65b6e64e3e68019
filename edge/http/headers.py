"""Header fields as plain data, shared by every pure module in ``edge.http``.

The pure layer never sees aiohttp's multidicts: it takes headers as an ordered sequence of
``(name, value)`` pairs, exactly as they arrived (repeated lines kept, names in any case), so the
same code serves the proxy, the stores and table-driven tests.  RFC 9110 §5 rules apply: names
compare case-insensitively, repeated lines of a list-based field are equivalent to one line joined
with commas.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

HeaderList = Sequence[tuple[str, str]]


def get_all(headers: HeaderList, name: str) -> list[str]:
    """Every value of ``name`` in order, one per field line (RFC 9110 §5.2).

    The length is compared before the case-folded name: the rules ask for a dozen fields per
    response, and lower-casing every line's name for each of them showed up in miss profiles.
    """
    wanted = name.lower()
    size = len(wanted)
    return [value for key, value in headers if len(key) == size and key.lower() == wanted]


def get_first(headers: HeaderList, name: str) -> str | None:
    """The first line's value, for singleton fields such as ``Date`` or ``ETag``."""
    wanted = name.lower()
    size = len(wanted)
    for key, value in headers:
        if len(key) == size and key.lower() == wanted:
            return value
    return None


def get_joined(headers: HeaderList, name: str) -> str | None:
    """All lines of a list-based field combined as RFC 9110 §5.3 allows; ``None`` if absent."""
    values = get_all(headers, name)
    if not values:
        return None
    return ", ".join(values)


def has(headers: HeaderList, name: str) -> bool:
    wanted = name.lower()
    size = len(wanted)
    return any(len(key) == size and key.lower() == wanted for key, _ in headers)


def split_list(value: str) -> list[str]:
    """Split an RFC 9110 §5.6.1 comma-separated list, honouring quoted strings.

    Empty elements (``a,,b``, leading/trailing commas) are dropped as the RFC requires of
    recipients; surrounding whitespace is trimmed; quotes and escapes inside elements are kept
    verbatim so that a caller can still parse ``name="a, b"``.
    """
    items: list[str] = []
    current: list[str] = []
    in_quotes = False
    escaped = False
    for char in value:
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
            current.append(char)
            continue
        if char == "," and not in_quotes:
            item = "".join(current).strip()
            if item:
                items.append(item)
            current = []
            continue
        current.append(char)
    item = "".join(current).strip()
    if item:
        items.append(item)
    return items


def split_all(headers: HeaderList, name: str) -> list[str]:
    """All elements of a list-based field across every line carrying it."""
    items: list[str] = []
    for value in get_all(headers, name):
        items.extend(split_list(value))
    return items


def without(headers: HeaderList, names: Iterable[str]) -> list[tuple[str, str]]:
    """A copy of ``headers`` without any line whose name is in ``names`` (case-insensitive)."""
    dropped = {name.lower() for name in names}
    return [(key, value) for key, value in headers if key.lower() not in dropped]
