"""App factories: the public proxy app and the admin app of one edge worker.

Following aiohttp's conventions, state lives under typed ``AppKey``s and resources (the origin
connection pool) are opened and closed in ``cleanup_ctx``, so tests can run the very same apps
in-process on random ports.
"""

from __future__ import annotations

import asyncio
import ipaddress
import os
import ssl
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler
from yarl import URL

from edge import faultlog
from edge.accesslog import PREPARED_KEY, timing_of
from edge.admin import catch_up_with_control_plane, create_admin_app
from edge.cache import CacheHandler, TieredStore
from edge.coalesce import KeyLocks
from edge.config import EdgeSettings
from edge.errors import ClientFault
from edge.proxy import ForwardContext, Forwarder, check_host, origin_target, plain_error
from edge.purge import PurgeLog
from edge.runtime import EdgeRuntime
from edge.store.disk import DiskStore
from edge.store.memory import MemoryStore
from edge.tls import server_ssl_context
from edge.upstream import create_origin_session

RUNTIME_KEY = web.AppKey("edge_runtime", EdgeRuntime)
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


def create_edge_app(
    settings: EdgeSettings, node_name: str | None = None, runtime: EdgeRuntime | None = None
) -> web.Application:
    """The public face of an edge: every method and path goes through the cache (or the forwarder)."""
    app = web.Application(handler_args=server_handler_args(settings), middlewares=[start_timing])
    app.on_response_prepare.append(add_server_timing)
    name = node_name or settings.node_name(settings.listen_address[1] or os.getpid())
    runtime = runtime or EdgeRuntime(settings, name)
    app[RUNTIME_KEY] = runtime
    app[CONTEXT_KEY] = ForwardContext(settings=settings, node_name=name, origin=URL(settings.origin))
    purge_networks = [ipaddress.ip_network(item, strict=False) for item in settings.purge_allow]

    async def origin_pool(app: web.Application) -> AsyncIterator[None]:
        session = create_origin_session(settings.upstream)
        runtime.forwarder = Forwarder(app[CONTEXT_KEY], session)
        if not settings.cache.enabled:
            runtime.not_ready_reason = ""
            runtime.ready.set()
            yield
            await session.close()
            return
        cache = settings.cache
        cache_dir = Path(settings.cache_dir)
        memory = MemoryStore(cache.memory_max_bytes, cache.memory_max_object_bytes) if cache.memory_max_bytes else None
        disk = DiskStore(cache_dir / "store", cache.disk_max_bytes, max_object_bytes=cache.max_object_bytes)
        await disk.start()
        purge_log = PurgeLog(cache_dir / "purge")
        handler = CacheHandler(
            app[CONTEXT_KEY],
            session,
            TieredStore(memory, disk, cache.memory_max_object_bytes),
            purge_log,
            KeyLocks(str(cache_dir / "fill.locks")),
        )
        runtime.cache = handler
        catch_up = asyncio.ensure_future(catch_up_with_control_plane(runtime, session))
        yield
        catch_up.cancel()
        await asyncio.gather(catch_up, return_exceptions=True)
        await handler.close()
        await disk.close()
        purge_log.close()
        await session.close()

    app.cleanup_ctx.append(origin_pool)

    async def handle(request: web.Request) -> web.StreamResponse:
        try:
            check_host(request)
        except ClientFault as exc:
            faultlog.report(request.remote, request.method, request.raw_path, exc.status, exc.reason)
            return plain_error(exc.status, exc.reason, name)
        if request.method == "PURGE":
            return await purge_one_url(request, runtime, purge_networks)
        if runtime.cache is not None:
            return await runtime.cache.handle(request)
        assert runtime.forwarder is not None
        return await runtime.forwarder.handle(request)

    app.router.add_route("*", "/{tail:.*}", handle)
    return app


@web.middleware
async def start_timing(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Start the request's clock before anything else runs (Server-Timing, access log)."""
    timing_of(request)
    return await handler(request)


async def add_server_timing(request: web.Request, response: web.StreamResponse) -> None:
    """``Server-Timing: lookup;dur=…, origin;dur=…, total;dur=…`` on every edge response."""
    response.headers["Server-Timing"] = timing_of(request).server_timing()
    request[PREPARED_KEY] = response


def create_ssl_context(settings: EdgeSettings) -> ssl.SSLContext | None:
    """A server TLS context from ``tls_cert``/``tls_key``, or None for plain HTTP."""
    return server_ssl_context(settings.tls_cert, settings.tls_key)


async def purge_one_url(
    request: web.Request, runtime: EdgeRuntime, allowed: list[ipaddress.IPv4Network | ipaddress.IPv6Network]
) -> web.Response:
    """``PURGE /path`` on the public listener: Varnish/Squid-style single-URL purge, from allowed networks only."""
    try:
        peer = ipaddress.ip_address((request.remote or "").split("%")[0])
    except ValueError:
        peer = None
    if peer is None or not any(peer in network for network in allowed):
        return web.json_response({"error": "PURGE not allowed from this address"}, status=403)
    if runtime.cache is None:
        return web.json_response({"error": "caching is disabled"}, status=404)
    target = origin_target(request)
    key = runtime.cache.cache_key(request, target)
    soft = request.headers.get("Soft-Purge", "").strip() in ("1", "true")
    record, affected = await runtime.cache.purge("urls", [key], soft, f"l-{uuid.uuid4().hex[:12]}")
    return web.json_response(
        {"id": record.purge_id, "seq": record.seq, "kind": "urls", "soft": soft, "affected": affected, "url": key}
    )
