"""Cache keys (DESIGN.md §3): the URL the *origin* is asked for, unless the client's Host is passed on.

With ``preserve_host`` off (the default) the origin never sees which name or scheme the client
used, so ``http://edge-a/x`` and ``https://cdn.example/x`` are the same object, and a purge naming
either URL (or any other host) reaches it.  Normalisation is pure (``edge.http.cachekey``) and
memoised here: a hit computes its key with one dictionary lookup.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from lru import LRU
from yarl import URL

from edge.config import CacheSettings
from edge.http import cachekey
from edge.server.exchange import RequestHead

MEMO_SIZE = 32768
MEMO_MAX_TARGET = 512  # longer targets are keyed afresh each time: memory must not grow with their length


def key_config(settings: CacheSettings) -> cachekey.CacheKeyConfig:
    return cachekey.CacheKeyConfig(
        ignore_query=settings.ignore_query,
        sort_query=settings.sort_query,
        drop_params=frozenset(settings.drop_query_params),
    )


class CacheKeys:
    """The keys of one site.  ``namespace`` starts every key of a configured site (``site:<name>:``),
    so two sites never share an object whatever their hosts; the ``origin`` shorthand's site has
    none, and its keys are the URLs they always were (stored objects and purges carry over)."""

    def __init__(
        self, settings: CacheSettings, origin: URL, preserve_host: bool, namespace: str = ""
    ) -> None:
        self.config = key_config(settings)
        self.origin_scheme = origin.scheme
        self.origin_authority = origin.raw_authority or ""
        self.preserve_host = preserve_host
        self.namespace = namespace
        self._memo: LRU[str, str] = LRU(MEMO_SIZE)

    def for_target(self, target: str) -> str:
        """The key of an origin-form target when the client's Host is not part of keys (memoised)."""
        key = self._memo.get(target)
        if key is None:
            path, mark, query = target.partition("?")
            key = self.namespace + cachekey.cache_key(
                self.origin_scheme, self.origin_authority, path, query if mark else None, self.config
            )
            if len(target) <= MEMO_MAX_TARGET:
                self._memo[target] = key
        return key

    def for_request(self, head: RequestHead, target: str) -> str:
        if not self.preserve_host:
            return self.for_target(target)
        host = head.host.decode("latin-1").strip(" \t") if head.host else self.origin_authority
        path, mark, query = target.partition("?")
        authority = host or self.origin_authority
        return self.namespace + cachekey.cache_key(head.scheme, authority, path, query if mark else None, self.config)

    def for_url(self, url: str) -> str:
        """The key (or key prefix) an absolute URL names, by the same rule as :meth:`for_request`."""
        normalized = cachekey.normalize_url(url, self.config)
        if self.preserve_host:
            return self.namespace + normalized
        parts = urlsplit(url)
        target = parts.path or "/"
        if parts.query or url.endswith("?"):
            target += "?" + parts.query
        return self.for_target(target)
