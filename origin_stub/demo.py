"""The demo site: one HTML page and three small assets, served from strings in code.

Kept in code (not files) so the stub has no data to install; the validators are derived from the
content and a fixed date, so they are stable across restarts and revalidation yields 304s.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from dataclasses import dataclass

from .conditional import format_http_date

__all__ = ["ASSETS", "INDEX", "DemoAsset"]

_LAST_MODIFIED = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)


@dataclass(frozen=True)
class DemoAsset:
    """A static representation with everything needed to answer GET, HEAD and 304."""

    body: bytes
    content_type: str
    cache_control: str
    with_last_modified: bool = True

    @property
    def etag(self) -> str:
        return '"' + hashlib.sha256(self.body).hexdigest()[:16] + '"'

    @property
    def last_modified(self) -> dt.datetime | None:
        return _LAST_MODIFIED if self.with_last_modified else None

    def validator_headers(self) -> list[tuple[str, str]]:
        headers = [("ETag", self.etag), ("Cache-Control", self.cache_control)]
        if self.last_modified is not None:
            headers.append(("Last-Modified", format_http_date(self.last_modified)))
        return headers


_HTML = """<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>edgecache demo origin</title>
  <link rel="stylesheet" href="/static/style.css">
</head>
<body>
  <header><img src="/static/logo.svg" alt="edgecache logo" width="64" height="64">
    <h1>edgecache demo origin</h1></header>
  <main>
    <p>This page comes from the origin stub. Fetch it through an edge and watch the
       <code>Cache-Status</code> and <code>Age</code> response headers.</p>
    <img src="/static/photo.svg" alt="a landscape" width="320" height="180">
    <p id="served">Served by …</p>
    <ul>
      <li><a href="/obj/demo/small?size=2048&amp;max_age=60">a 2 KiB object, cacheable 60 s</a></li>
      <li><a href="/obj/demo/big?size=10485760&amp;max_age=300">a 10 MiB object, cacheable 5 min</a></li>
      <li><a href="/obj/demo/private?cache_control=private">a private object</a></li>
    </ul>
  </main>
  <script src="/static/served.js"></script>
</body>
</html>
"""

_SERVED_JS = """// Which edge served this page, and was it a hit?  Asked again with HEAD: the same object, its headers.
fetch(location.href, {method: "HEAD"}).then((response) => {
  const via = response.headers.get("Via") || "";
  const cache = response.headers.get("X-Cache") || "";
  const status = response.headers.get("Cache-Status") || "";
  const edge = via ? via.split(",").pop().trim().split(" ").pop() : "";
  document.getElementById("served").textContent = edge
    ? `Served by edge ${edge}: ${cache || "?"} (Cache-Status: ${status})`
    : "Served by the origin directly (no edge in between).";
}).catch(() => { document.getElementById("served").textContent = ""; });
"""

_CSS = """body { font-family: system-ui, sans-serif; margin: 2rem auto; max-width: 44rem; color: #1b2330; }
header { display: flex; align-items: center; gap: 1rem; }
h1 { font-size: 1.6rem; }
code { background: #eef2f7; padding: 0 .25rem; border-radius: 3px; }
"""

_LOGO = """<svg xmlns="http://www.w3.org/2000/svg" width="64" height="64" viewBox="0 0 64 64">
  <circle cx="32" cy="32" r="30" fill="#2f6fde"/>
  <path d="M14 34 L32 14 L50 34 L32 50 Z" fill="#ffffff"/>
</svg>
"""

_PHOTO = """<svg xmlns="http://www.w3.org/2000/svg" width="320" height="180" viewBox="0 0 320 180">
  <rect width="320" height="180" fill="#9fd3ff"/>
  <circle cx="260" cy="45" r="22" fill="#ffd24a"/>
  <path d="M0 180 L90 70 L160 150 L220 95 L320 180 Z" fill="#3c7a45"/>
</svg>
"""

INDEX = DemoAsset(
    body=_HTML.encode(),
    content_type="text/html; charset=utf-8",
    cache_control="public, max-age=10",
    with_last_modified=False,
)

_STATIC_CACHE_CONTROL = "public, max-age=60"

ASSETS: dict[str, DemoAsset] = {
    "style.css": DemoAsset(_CSS.encode(), "text/css; charset=utf-8", _STATIC_CACHE_CONTROL),
    "logo.svg": DemoAsset(_LOGO.encode(), "image/svg+xml", _STATIC_CACHE_CONTROL),
    "photo.svg": DemoAsset(_PHOTO.encode(), "image/svg+xml", _STATIC_CACHE_CONTROL),
    "served.js": DemoAsset(_SERVED_JS.encode(), "text/javascript; charset=utf-8", _STATIC_CACHE_CONTROL),
}
