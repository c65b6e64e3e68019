"""The admin API of an edge, on its own listener (default loopback).

This slice answers liveness and readiness; purge, inspection, stats and metrics join it with the
cache.  A configured token is required as ``Authorization: Bearer`` on every endpoint except the
probes, compared in constant time so response timing leaks nothing about it.
"""

from __future__ import annotations

import hmac
import os
import time

from aiohttp import hdrs, web
from aiohttp.typedefs import Handler

from edge.config import EdgeSettings

SETTINGS_KEY = web.AppKey("admin_settings", EdgeSettings)
STARTED_KEY = web.AppKey("admin_started", float)

OPEN_PATHS = frozenset({"/healthz", "/readyz"})


def token_matches(authorization: str | None, token: str) -> bool:
    """Constant-time check of ``Authorization: Bearer <token>``."""
    scheme, _, presented = (authorization or "").partition(" ")
    if scheme.lower() != "bearer":
        return False
    return hmac.compare_digest(presented.strip().encode(), token.encode())


@web.middleware
async def require_token(request: web.Request, handler: Handler) -> web.StreamResponse:
    token = request.app[SETTINGS_KEY].admin_token
    if token and request.path not in OPEN_PATHS and not token_matches(
        request.headers.get(hdrs.AUTHORIZATION), token
    ):
        return web.json_response(
            {"error": "missing or wrong bearer token"},
            status=401,
            headers={hdrs.WWW_AUTHENTICATE: 'Bearer realm="edgecache-admin"'},
        )
    return await handler(request)


async def healthz(request: web.Request) -> web.Response:
    """Alive: the worker's event loop answers."""
    return web.json_response({"status": "ok", "pid": os.getpid()})


async def readyz(request: web.Request) -> web.Response:
    """Ready to take clients (the cache slice adds: index loaded, purges caught up)."""
    uptime = time.monotonic() - request.app[STARTED_KEY]
    return web.json_response({"ready": True, "pid": os.getpid(), "uptime_s": round(uptime, 3)})


def create_admin_app(settings: EdgeSettings) -> web.Application:
    app = web.Application(middlewares=[require_token])
    app[SETTINGS_KEY] = settings
    app[STARTED_KEY] = time.monotonic()
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    return app
