"""Sites: which configuration answers a request, chosen by its ``Host`` (virtual hosts).

Matching (``SiteTable.for_host``): the port is ignored, names compare case-insensitively and
without a trailing dot; an exact name wins over a wildcard, a longer ``*.suffix`` over a shorter one
(``*.example.com`` matches every name below ``example.com``, not ``example.com`` itself), and ``*``
catches the rest.  No match: the request gets 421 Misdirected Request and no origin is contacted.

A site carries what differs per site: its cache keys (namespaced, so two sites never share an
object), its origins (``edge.origins``), its slice size and whether the client's Host is kept.
Every stored object is tagged with its site (``site_tags``), so purges can be limited to one site.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from lru import LRU
from yarl import URL

from edge.cache.keys import CacheKeys
from edge.config import DEFAULT_SITE, EdgeSettings, SiteSettings
from edge.origins import OriginGroup

SITE_TAG_MARK = "\x1f"  # cannot occur in a Surrogate-Key or Cache-Tag value: namespaces site tags


def normalize_host(value: str) -> str:
    """A request's Host as sites are matched: no port, lower case, no trailing dot."""
    host = value.strip(" \t").lower()
    if host.startswith("["):
        end = host.find("]")
        host = host[: end + 1] if end > 0 else host
    elif host.count(":") == 1:
        host = host.partition(":")[0]
    return host.rstrip(".")


def matches(pattern: str, host: str) -> bool:
    if pattern == "*":
        return True
    if pattern.startswith("*."):
        return host.endswith(pattern[1:]) and len(host) > len(pattern) - 1
    return pattern == host


def site_tags(site: str, tags: tuple[str, ...]) -> tuple[str, ...]:
    """The tags an object of ``site`` is stored with: its own, the same namespaced by the site (for
    purges limited to one site), and the site's own tag (purge everything of a site)."""
    return (*tags, *(f"{site}{SITE_TAG_MARK}{tag}" for tag in tags), site_tag(site))


def site_tag(site: str) -> str:
    return f"{site}{SITE_TAG_MARK}"


def scoped_tags(site: str, tags: list[str]) -> list[str]:
    return [f"{site}{SITE_TAG_MARK}{tag}" for tag in tags]


def visible_tags(tags: tuple[str, ...]) -> list[str]:
    """The tags as the origin gave them (for display)."""
    return [tag for tag in tags if SITE_TAG_MARK not in tag]


def purge_targets(table: SiteTable, kind: str, values: list[str], site: str | None) -> tuple[str, list[str]]:
    """What an admin or cluster purge names, as keys or tags: URLs by their host's site (``site``,
    when given, instead); a prefix, tags or everything in ``site`` only, or in every site when it is
    absent.  A cluster purge names what *some* edges serve: a site this edge does not have, or a URL
    none of its sites serves, names nothing here (an empty purge that still counts as applied)."""
    chosen: Site | None = None
    if site is not None:
        chosen = table.by_name.get(site)
        if chosen is None:
            return kind if kind != "all" else "tags", []
        if chosen.settings.name == DEFAULT_SITE and len(table.sites) == 1:
            chosen = None  # the only site: objects stored before sites existed carry no site tag
    if kind == "urls":
        keys = []
        for url in values:
            owner = chosen or table.for_url(url)
            if owner is not None:
                keys.append(owner.keys.for_url(url))
        return "urls", keys
    if kind == "prefix":
        every = [chosen] if chosen is not None else table.sites
        return "prefix", list(dict.fromkeys(each.keys.for_url(value) for each in every for value in values))
    if kind == "tags":
        return "tags", scoped_tags(chosen.name, values) if chosen is not None else list(dict.fromkeys(values))
    if kind == "all":
        return ("tags", [site_tag(chosen.name)]) if chosen is not None else ("all", [])
    raise ValueError(f"unknown purge kind {kind!r}")


@dataclass(eq=False)
class Site:
    name: str
    settings: SiteSettings
    keys: CacheKeys
    origins: OriginGroup
    slice_size: int
    preserve_host: bool

    @property
    def choice(self) -> bool:
        """More than one origin: responses say which one answered (Cache-Status ``fwd-origin``)."""
        return len(self.origins.origins) > 1


def build_site(settings: EdgeSettings, site: SiteSettings, state_dir: Path | None) -> Site:
    overrides = {
        name: value
        for name, value in site.cache.model_dump().items()
        if value is not None and name in ("ignore_query", "sort_query", "drop_query_params")
    }
    signed = settings.protection.for_site(site.protection).signed_urls
    if signed is not None:  # every holder of a valid link shares one object
        dropped = list(overrides.get("drop_query_params", settings.cache.drop_query_params))
        overrides["drop_query_params"] = [*dropped, signed.param, signed.expires_param]
    cache = settings.cache.model_copy(update=overrides)
    if site.name == DEFAULT_SITE and settings.origin is not None and site.hosts == ["*"]:
        keys = CacheKeys(cache, URL(settings.origin), site.preserve_host)  # the keys it always had
    else:
        keys = CacheKeys(cache, URL(f"http://{site.name}"), site.preserve_host, namespace=f"site:{site.name}:")
    slice_size = site.cache.slice_size if site.cache.slice_size is not None else settings.cache.slice_size
    return Site(site.name, site, keys, OriginGroup(site, settings.upstream, state_dir), slice_size, site.preserve_host)


class SiteTable:
    """Every site of the edge, and the host → site choice (memoised: one dictionary lookup on a hit)."""

    def __init__(self, sites: list[Site]) -> None:
        self.sites = sites
        self.by_name = {site.name: site for site in sites}
        self._exact: dict[str, Site] = {}
        self._wildcards: list[tuple[str, Site]] = []
        self._default: Site | None = None
        for site in sites:
            for pattern in site.settings.hosts:
                if pattern == "*":
                    self._default = site
                elif pattern.startswith("*."):
                    self._wildcards.append((pattern, site))
                else:
                    self._exact[pattern] = site
        self._wildcards.sort(key=lambda item: -len(item[0]))
        self._memo: LRU[bytes, Site | None] = LRU(4096)
        self.single = sites[0] if len(sites) == 1 and self._default is sites[0] else None

    def for_host(self, raw: bytes | None) -> Site | None:
        """The site a request's Host selects (None: 421)."""
        if self.single is not None:
            return self.single
        key = raw or b""
        if key in self._memo:
            return self._memo[key]
        site = self.match(key.decode("latin-1"))
        if len(key) <= 255:  # a host name's longest: client-chosen junk is matched, not remembered
            self._memo[key] = site
        return site

    def match(self, host_value: str) -> Site | None:
        host = normalize_host(host_value)
        exact = self._exact.get(host)
        if exact is not None:
            return exact
        for pattern, site in self._wildcards:
            if matches(pattern, host):
                return site
        return self._default

    def for_url(self, url: str) -> Site | None:
        """The site an absolute URL's host selects (admin purges name URLs)."""
        authority = url.split("://", 1)[-1].split("/", 1)[0].split("?", 1)[0].rpartition("@")[2]
        return self.match(authority)

    def start(self) -> None:
        for site in self.sites:
            site.origins.start()

    async def close(self) -> None:
        for site in self.sites:
            await site.origins.close()
