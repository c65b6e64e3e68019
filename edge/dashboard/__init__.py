"""The live dashboard: one page (plain HTML, CSS and JavaScript shipped with the package, nothing
fetched from elsewhere) served at ``/dashboard`` on the router's admin listener (the whole CDN)
and on each edge's (that edge), refreshed every few seconds from ``/api/overview``.

``GET /`` redirects to it.  The page and its files need no token; ``/api/overview`` is guarded
like the rest of the admin API, and the page asks for the token once (kept for the session).
"""

from __future__ import annotations

from pathlib import Path

from aiohttp import web

__all__ = ["STATIC_DIR", "add_dashboard_routes"]

STATIC_DIR = Path(__file__).resolve().parent / "static"
OPEN_PATHS = ("/dashboard", "/dashboard/")


async def _root(request: web.Request) -> web.StreamResponse:
    raise web.HTTPFound("/dashboard")


async def _page(request: web.Request) -> web.StreamResponse:
    return web.FileResponse(STATIC_DIR / "index.html", headers={"Cache-Control": "no-cache"})


def add_dashboard_routes(app: web.Application) -> None:
    """``/`` → ``/dashboard``, the page, and its files under ``/dashboard/static/``."""
    app.router.add_get("/", _root)
    app.router.add_get("/dashboard", _page)
    app.router.add_get("/dashboard/", _root)  # the habit of a trailing slash leads to the page too
    app.router.add_static("/dashboard/static/", STATIC_DIR, append_version=False)


def is_open(path: str) -> bool:
    """Paths anyone may fetch without the admin token: the page itself, never data."""
    return path in ("/", "/dashboard", "/dashboard/") or path.startswith("/dashboard/static/")
