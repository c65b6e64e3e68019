"""App factories: the public proxy app and the admin app of one edge worker.

Following aiohttp's conventions, state lives under typed ``AppKey``s and resources (the origin
connection pool) are opened and closed in ``cleanup_ctx``, so tests can run the very same apps
in-process on random ports.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from aiohttp import web
from yarl import URL

from edge.admin import create_admin_app
from edge.cache import CacheHandler, TieredStore
from edge.config import EdgeSettings
from edge.proxy import ForwardContext, Forwarder
from edge.store.disk import DiskStore
from edge.store.memory import MemoryStore
from edge.upstream import create_origin_session

FORWARDER_KEY = web.AppKey("forwarder", Forwarder)
CACHE_KEY = web.AppKey("cache_handler", CacheHandler)
CONTEXT_KEY = web.AppKey("forward_context", ForwardContext)

__all__ = ["create_admin_app", "create_edge_app", "server_handler_args"]


def server_handler_args(settings: EdgeSettings) -> dict[str, Any]:
    """Request-parsing limits for aiohttp's HTTP server; beyond them clients get 400, not a crash."""
    return {
        "max_line_size": settings.limits.max_line_size,
        "max_field_size": settings.limits.max_field_size,
        "max_headers": settings.limits.max_headers,
        "keepalive_timeout": 75.0,
    }


def create_edge_app(settings: EdgeSettings, node_name: str | None = None) -> web.Application:
    """The public face of an edge: every method and path goes through the forwarder."""
    app = web.Application(handler_args=server_handler_args(settings))
    name = node_name or settings.node_name(settings.listen_address[1] or os.getpid())
    app[CONTEXT_KEY] = ForwardContext(settings=settings, node_name=name, origin=URL(settings.origin))

    async def origin_pool(app: web.Application) -> AsyncIterator[None]:
        session = create_origin_session(settings.upstream)
        app[FORWARDER_KEY] = Forwarder(app[CONTEXT_KEY], session)
        if not settings.cache.enabled:
            yield
            await session.close()
            return
        cache = settings.cache
        memory = MemoryStore(cache.memory_max_bytes, cache.memory_max_object_bytes) if cache.memory_max_bytes else None
        disk = DiskStore(Path(settings.cache_dir), cache.disk_max_bytes, max_object_bytes=cache.max_object_bytes)
        await disk.start()
        handler = CacheHandler(app[CONTEXT_KEY], session, TieredStore(memory, disk, cache.memory_max_object_bytes))
        app[CACHE_KEY] = handler
        yield
        await handler.close()
        await disk.close()
        await session.close()

    app.cleanup_ctx.append(origin_pool)

    async def handle(request: web.Request) -> web.StreamResponse:
        handler = request.app.get(CACHE_KEY)
        if handler is not None:
            return await handler.handle(request)
        return await request.app[FORWARDER_KEY].handle(request)

    app.router.add_route("*", "/{tail:.*}", handle)
    return app
