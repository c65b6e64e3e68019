"""The admin API of an edge, on its own listener (default loopback).

Purge (URL, prefix, tag, all; hard or soft), inspection of one URL's entries, statistics,
Prometheus metrics, liveness and readiness.  A configured token is required as
``Authorization: Bearer`` on every endpoint except the probes, compared in constant time.

Every worker serves this listener (the socket is shared), so an admin request lands on one
worker: purges go through the shared purge log (``edge.purge``) so that all workers obey them
before the answer; statistics are summed from the files each worker publishes every second.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import os
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import HttpVersion11, hdrs, web
from aiohttp.typedefs import Handler
from prometheus_client import CollectorRegistry, generate_latest
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from edge import dashboard, faultlog
from edge.cache.context import CacheContext
from edge.cache.fill import entry_of
from edge.cluster import shard_of
from edge.config import EdgeSettings
from edge.http import policy
from edge.http.headers import get_first
from edge.jsonbody import BadJsonBody, read_json
from edge.metrics import (
    EdgeProcessCollector,
    StatsCollector,
    collect_worker_stats,
    merge_origins,
    publish_stats_forever,
    summarize,
)
from edge.overview import Sampler, encoded_off_loop, iso, json_bytes, parse_since
from edge.runtime import EdgeRuntime
from edge.sites import purge_targets, visible_tags
from edge.store.disk import IndexIncompleteError

log = logging.getLogger("edge.admin")

SETTINGS_KEY = web.AppKey("admin_settings", EdgeSettings)
RUNTIME_KEY = web.AppKey("admin_runtime", EdgeRuntime)

OPEN_PATHS = frozenset({"/healthz", "/readyz"})
STATS_INTERVAL_S = 1.0


def token_matches(authorization: str | None, token: str) -> bool:
    """Constant-time check of ``Authorization: Bearer <token>``."""
    scheme, _, presented = (authorization or "").partition(" ")
    if scheme.lower() != "bearer":
        return False
    # A field that is not UTF-8 arrives with surrogates: compared as sent, never an error (a 500).
    return hmac.compare_digest(presented.strip().encode("utf-8", "surrogateescape"), token.encode())


@web.middleware
async def http1_only(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Only HTTP/1.0 and 1.1 on the admin listeners, as on the public ones (aiohttp would answer an
    ``HTTP/2.0`` or version-less request line as if it were one; its status line echoes that version)."""
    if request.version not in ((1, 0), (1, 1)):
        # aiohttp writes the status line with the request's version (a cached property; there is
        # no public way to set it): answer as HTTP/1.1 like the public listeners.
        with contextlib.suppress(AttributeError, TypeError):
            request._cache["version"] = HttpVersion11
        return web.Response(status=505, text="505 HTTP Version Not Supported: only HTTP/1.0 and HTTP/1.1\n",
                            headers={"Connection": "close", "Cache-Control": "no-store"})  # fmt: skip
    return await handler(request)


@web.middleware
async def require_token(request: web.Request, handler: Handler) -> web.StreamResponse:
    token = request.app[SETTINGS_KEY].admin_token
    if (token and request.path not in OPEN_PATHS and not dashboard.is_open(request.path)
            and not token_matches(request.headers.get(hdrs.AUTHORIZATION), token)):  # fmt: skip
        return web.json_response(
            {"error": "missing or wrong bearer token"},
            status=401,
            headers={hdrs.WWW_AUTHENTICATE: 'Bearer realm="edgecache-admin"'},
        )
    return await handler(request)


# -- request models ------------------------------------------------------------------------------


class PurgeRequest(BaseModel):
    """Body of ``POST /purge``: exactly one of ``urls``, ``prefix``, ``tags``, ``all``.  Strict, as
    the router's: ``"all": "yes"`` is a 422, not a purge of everything."""

    model_config = ConfigDict(extra="forbid", strict=True)

    urls: list[str] | None = Field(default=None, min_length=1, max_length=10_000)
    prefix: str | None = None
    tags: list[str] | None = Field(default=None, min_length=1, max_length=10_000)
    all: bool | None = None
    soft: bool = False
    site: str | None = Field(default=None, max_length=128, description="limit prefix, tags or all to one site")
    id: str | None = Field(default=None, max_length=128, description="set by the control plane")
    cluster_seq: int | None = Field(default=None, ge=1, le=2**63 - 1, description="set by the control plane")
    log_id: str | None = Field(default=None, min_length=1, max_length=128,
                               description="set by the control plane: the log cluster_seq counts in")  # fmt: skip

    @field_validator("urls")
    @classmethod
    def _absolute_urls(cls, value: list[str] | None) -> list[str] | None:
        for url in value or []:
            _require_absolute(url)
        return value

    @field_validator("prefix")
    @classmethod
    def _absolute_prefix(cls, value: str | None) -> str | None:
        if value is not None:
            _require_absolute(value)
        return value

    @field_validator("tags")
    @classmethod
    def _clean_tags(cls, value: list[str] | None) -> list[str] | None:
        if value is not None and any(not tag.strip() or any(c.isspace() for c in tag) for tag in value):
            raise ValueError("tags must be non-empty and contain no whitespace")
        return value

    @model_validator(mode="after")
    def _exactly_one(self) -> PurgeRequest:
        chosen = [
            name
            for name, present in (
                ("urls", self.urls is not None),
                ("prefix", self.prefix is not None),
                ("tags", self.tags is not None),
                ("all", self.all is not None),
            )
            if present
        ]
        if len(chosen) != 1:
            raise ValueError(f"exactly one of urls, prefix, tags, all is required (got {', '.join(chosen) or 'none'})")
        if self.all is False:
            raise ValueError('"all" must be true')
        return self


def _require_absolute(url: str) -> None:
    if not url.lower().startswith(("http://", "https://")) or "://" not in url or len(url.split("/", 3)[2]) == 0:
        raise ValueError(f"not an absolute http(s) URL: {url[:200]!r}")


def validation_error(exc: ValidationError) -> web.Response:
    problems = [
        {"field": ".".join(str(part) for part in item["loc"]) or "(body)", "error": item["msg"]}
        for item in exc.errors()
    ]
    return web.json_response({"error": "invalid request body", "problems": problems}, status=422)


# -- handlers ------------------------------------------------------------------------------------


def _cache(request: web.Request) -> CacheContext:
    cache = request.app[RUNTIME_KEY].cache
    if cache is None:
        raise web.HTTPNotFound(text=json.dumps({"error": "caching is disabled"}), content_type="application/json")
    return cache


async def purge(request: web.Request) -> web.Response:
    """POST /purge — when this answers, no worker of this edge serves the purged content."""
    try:
        wanted = PurgeRequest.model_validate(await read_json(request))
    except BadJsonBody as exc:
        return web.json_response({"error": exc.reason}, status=exc.status)
    except ValidationError as exc:
        return validation_error(exc)
    except RecursionError:
        return web.json_response({"error": "body is nested too deeply"}, status=400)
    cache = _cache(request)
    try:
        if wanted.urls is not None:
            requested, named = "urls", wanted.urls
        elif wanted.prefix is not None:
            requested, named = "prefix", [wanted.prefix]
        elif wanted.tags is not None:
            requested, named = "tags", wanted.tags
        else:
            requested, named = "all", []
        kind, values = purge_targets(cache.sites, requested, named, wanted.site)
    except ValueError as exc:
        return web.json_response({"error": str(exc)}, status=422)
    purge_id = wanted.id or f"e-{uuid.uuid4().hex[:16]}"
    started = time.perf_counter()
    if wanted.log_id is not None:
        await cache.purger.follow_log(wanted.log_id)
    try:
        record, affected = await cache.purger.purge(kind, values, wanted.soft, purge_id, wanted.cluster_seq)  # type: ignore[arg-type]
    except IndexIncompleteError as exc:  # not done: the control plane sends it again
        log.error("purge %s not applied to the disk tier: %s", purge_id, exc)
        return web.json_response({"error": f"not applied: {exc}"}, status=503)
    cache.counters.purges[kind] = cache.counters.purges.get(kind, 0) + 1
    return web.json_response(
        {
            "id": record.purge_id,
            "seq": record.seq,
            "cluster_seq": record.cluster_seq,
            "kind": kind,
            "soft": wanted.soft,
            "affected": affected,
            "edge": request.app[RUNTIME_KEY].node_name,
            "ms": round((time.perf_counter() - started) * 1000, 3),
        }
    )


MAX_LISTED_PARTS = 1000  # a sliced file may have thousands of parts


def _no_site(url: str, site: str | None) -> str:
    return f"no site {site!r} on this edge" if site is not None else f"no site of this edge serves {url!r}"


async def inspect(request: web.Request) -> web.Response:
    """GET /cache?url=… — every stored variant of one URL, per tier, with age, TTL and validators, and its
    stored parts and slices (``edge.http.parts``)."""
    url = request.query.get("url")
    if not url:
        return web.json_response({"error": "query parameter url is required"}, status=400)
    cache = _cache(request)
    try:
        _, keys = purge_targets(cache.sites, "urls", [url], request.query.get("site"))
    except ValueError as exc:
        return web.json_response({"error": str(exc)}, status=400)
    if not keys:
        return web.json_response({"error": _no_site(url, request.query.get("site"))}, status=404)
    key = keys[0]
    await cache.purger.sync()
    now = time.time()
    variants: list[dict[str, Any]] = []
    stored_parts: list[dict[str, Any]] = []
    for tier in cache.store.tiers:
        for meta in await tier.parts(key):
            if len(stored_parts) < MAX_LISTED_PARTS:
                decision = policy.serve_decision("GET", (), entry_of(meta), now, cache.policy)
                stored_parts.append({
                    "tier": tier.name, "variant": meta.variant, "size": meta.size,
                    "content_range": get_first(meta.headers, "content-range"), "fresh": decision.fresh,
                    "ttl": round(decision.ttl, 3), "etag": get_first(meta.headers, "etag"), "stored_at": meta.stored_at,
                    "stored_at_iso": iso(meta.stored_at),
                })  # fmt: skip
        for meta in await tier.variants(key):
            verdict = cache.purger.view.verdict(meta.key, meta.tags, meta.stored_at)
            decision = policy.serve_decision(
                "GET", (), entry_of(meta if verdict != "soft" else _invalidated(meta)), now, cache.policy
            )
            variants.append(
                {
                    "tier": tier.name,
                    "variant": meta.variant,
                    "vary": list(meta.vary),
                    "request_headers": {name: value for name, value in meta.secondary},
                    "status": meta.status,
                    "size": meta.size,
                    "age": round(decision.age, 3),
                    "ttl": round(decision.ttl, 3),
                    "fresh": decision.fresh,
                    "tags": visible_tags(meta.tags),
                    "etag": get_first(meta.headers, "etag"),
                    "content_encoding": get_first(meta.headers, "content-encoding"),
                    "last_modified": get_first(meta.headers, "last-modified"),
                    "stored_at": meta.stored_at,
                    "stored_at_iso": iso(meta.stored_at),
                    "headers": [[name, value] for name, value in meta.headers],
                    "invalidated": meta.invalidated or verdict == "soft",
                    "purged": verdict == "hard",
                }
            )
    return web.json_response({"url": url, "key": key, "variants": variants, "parts": stored_parts})


def _invalidated(meta: Any) -> Any:
    from dataclasses import replace

    return replace(meta, invalidated=True)


async def healthz(request: web.Request) -> web.Response:
    """Alive: the worker's event loop answers."""
    return web.json_response({"status": "ok", "pid": os.getpid()})


async def readyz(request: web.Request) -> web.Response:
    """Ready for clients: stores open and purges from the control plane caught up."""
    runtime = request.app[RUNTIME_KEY]
    cluster_seq, cluster_log_id = 0, ""
    if runtime.cache is not None:
        cluster_seq, _, cluster_log_id = await runtime.cache.purger.log.cluster_position()
    body = {
        "ready": runtime.ready.is_set(),
        "pid": os.getpid(),
        "edge": runtime.node_name,
        "cluster_seq": cluster_seq,
        "cluster_log_id": cluster_log_id or None,  # which log cluster_seq counts in
        "uptime_s": round(time.monotonic() - runtime.started_monotonic, 3),
    }
    if runtime.settings.control_plane is not None and runtime.control_plane.state != "none":
        body["control_plane"] = runtime.control_plane.to_json()  # "unreachable": serving, purges wait
    if not runtime.ready.is_set():
        body["reason"] = runtime.not_ready_reason
        return web.json_response(body, status=503)
    return web.json_response(body)


# -- statistics across workers -------------------------------------------------------------------


async def origins(request: web.Request) -> web.Response:
    """GET /origins — per site and origin: state (up/down/backup), since, last error, in flight,
    requests and failures, summed over this edge's workers (each worker's own state under ``workers``)."""
    runtime = request.app[RUNTIME_KEY]
    snapshots = await asyncio.to_thread(collect_worker_stats, request.app[SETTINGS_KEY], runtime)
    sites: dict[str, dict[str, Any]] = {}
    for row in merge_origins(snapshots):
        site = sites.setdefault(row["site"], {"name": row["site"], "origins": []})
        site["origins"].append({
            "url": row["origin"], "state": row["state"], "backup": row["backup"], "weight": row["weight"],
            "since": row["since"], "since_iso": iso(row["since"]), "last_error": row["last_error"],
            "in_flight": row["in_flight"],
            "requests": row["requests"], "failures": row["failures"], "workers": row["workers"],
        })  # fmt: skip
    return web.json_response({"edge": runtime.node_name, "sites": list(sites.values())})


async def cluster(request: web.Request) -> web.Response:
    """GET /cluster[?url=…] — this edge's view of its region: peers and their health, parents, and
    (with ``url``) the URL's owners, computed as the router computes them."""
    cache = _cache(request)
    if cache.cluster is None:
        return web.json_response({"error": "no [cluster] configured on this edge"}, status=404)
    url = request.query.get("url")
    shard = None
    if url is not None:  # the URL's key on its site, as a request for it is keyed here
        try:
            _, keys = purge_targets(cache.sites, "urls", [url], request.query.get("site"))
        except ValueError as exc:
            return web.json_response({"error": str(exc)}, status=400)
        if not keys:
            return web.json_response({"error": _no_site(url, request.query.get("site"))}, status=404)
        shard = shard_of(keys[0])
    return web.json_response(cache.cluster.describe(shard))


async def stats(request: web.Request) -> web.Response:
    """GET /stats — hit ratios by requests and bytes, tiers, evictions, corrupt files; all workers."""
    runtime = request.app[RUNTIME_KEY]
    snapshots = await asyncio.to_thread(collect_worker_stats, request.app[SETTINGS_KEY], runtime)
    return web.json_response(summarize(snapshots))


async def metrics(request: web.Request) -> web.Response:
    """GET /metrics — Prometheus text format, summed over the edge's workers."""
    runtime = request.app[RUNTIME_KEY]
    snapshots = await asyncio.to_thread(collect_worker_stats, request.app[SETTINGS_KEY], runtime)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(StatsCollector(snapshots, runtime.node_name, request.app[SETTINGS_KEY]))
    registry.register(EdgeProcessCollector(snapshots, runtime.node_name))  # process_* of the supervisor and all workers
    return web.Response(body=generate_latest(registry), headers={"Content-Type": "text/plain; version=0.0.4"})


async def reload(request: web.Request) -> web.Response:
    """POST /reload — validate the configuration and, if valid, roll the workers onto it (like SIGHUP)."""
    accepted, message = await asyncio.to_thread(request.app[RUNTIME_KEY].request_reload)
    if not accepted:
        return web.json_response({"error": message}, status=422 if "config" in message else 409)
    return web.json_response({"status": message}, status=202)


async def openapi(request: web.Request) -> web.Response:
    """GET /openapi.json — the admin API described for tools and humans."""
    return web.json_response(openapi_document())


def openapi_document() -> dict[str, Any]:
    purge_schema = PurgeRequest.model_json_schema()
    json_ok = {"200": {"description": "OK", "content": {"application/json": {}}}}
    auth_error = {"401": {"description": "missing or wrong bearer token"}}
    return {
        "openapi": "3.1.0",
        "info": {"title": "edgecache edge admin API", "version": "1"},
        "components": {
            "schemas": {"PurgeRequest": purge_schema},
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{"bearer": []}],
        "paths": {
            "/purge": {
                "post": {
                    "summary": "Purge by URLs, prefix, tags or everything; hard or soft",
                    "requestBody": {
                        "required": True,
                        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/PurgeRequest"}}},
                    },
                    "responses": {
                        **json_ok,
                        "400": {"description": "body is not JSON"},
                        "422": {"description": "invalid fields"},
                        **auth_error,
                    },
                }
            },
            "/cache": {
                "get": {
                    "summary": "Inspect the stored variants of one URL, and its stored parts and slices",
                    "parameters": [{"name": "url", "in": "query", "required": True, "schema": {"type": "string"}}],
                    "responses": {**json_ok, "400": {"description": "missing or bad url"}, **auth_error},
                }
            },
            "/stats": {"get": {"summary": "Hit ratios, tiers, evictions, corrupt files", "responses": json_ok}},
            "/cluster": {"get": {"summary": "The region: peers, parents, a URL's owners", "responses": json_ok}},
            "/origins": {"get": {"summary": "Each site's origins: state, since, last error", "responses": json_ok}},
            "/metrics": {"get": {"summary": "Prometheus metrics", "responses": {"200": {"description": "text"}}}},
            "/healthz": {"get": {"summary": "Liveness", "security": [], "responses": json_ok}},
            "/readyz": {
                "get": {
                    "summary": "Readiness (stores open, purges caught up)",
                    "security": [],
                    "responses": {**json_ok, "503": {"description": "not ready"}},
                }
            },
            "/openapi.json": {"get": {"summary": "This document", "responses": json_ok}},
            "/reload": {
                "post": {
                    "summary": "Validate the configuration and roll the workers onto it (like SIGHUP)",
                    "responses": {"202": {"description": "reload started"}, "422": {"description": "invalid config"}},
                }
            },
        },
    }


def create_admin_app(settings: EdgeSettings, runtime: EdgeRuntime) -> web.Application:
    faultlog.quiet_admin_parse_errors()  # a request aiohttp cannot parse: one line, no traceback
    app = web.Application(middlewares=[http1_only, require_token])
    app[SETTINGS_KEY] = settings
    app[RUNTIME_KEY] = runtime

    async def stats_publisher(app: web.Application) -> AsyncIterator[None]:
        task = asyncio.ensure_future(publish_stats_forever(settings, runtime))
        yield
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    app.cleanup_ctx.append(stats_publisher)
    app.router.add_post("/purge", purge)
    app.router.add_get("/cache", inspect)
    app.router.add_get("/stats", stats)
    app.router.add_get("/origins", origins)
    app.router.add_get("/cluster", cluster)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/openapi.json", openapi)
    app.router.add_post("/reload", reload)
    dashboard.add_dashboard_routes(app)
    app.router.add_get("/api/overview", overview)

    async def sampler(app: web.Application) -> AsyncIterator[None]:
        async def fetch() -> dict[str, dict[str, Any] | None]:
            snapshots = await asyncio.to_thread(collect_worker_stats, settings, runtime)
            return {runtime.node_name: summarize(snapshots)}

        running = app[SAMPLER_KEY] = Sampler(fetch)
        running.start()
        yield
        await running.stop()

    app.cleanup_ctx.append(sampler)
    return app


SAMPLER_KEY = web.AppKey("sampler", Sampler)


async def overview(request: web.Request) -> web.Response:
    """``GET /api/overview``: this edge for its dashboard (the router's shape, one edge)."""
    runtime = request.app[RUNTIME_KEY]
    settings = request.app[SETTINGS_KEY]
    sampler = request.app[SAMPLER_KEY]
    try:
        since = parse_since(request.query.get("since"))
    except ValueError as exc:
        return web.json_response({"error": str(exc)}, status=400)
    now, series = sampler.edge_series(runtime.node_name, since)
    snapshots = await asyncio.to_thread(collect_worker_stats, settings, runtime)
    origin_rows: dict[str, dict[str, Any]] = {}
    for row in merge_origins(snapshots):
        site = origin_rows.setdefault(row["site"], {"name": row["site"], "origins": []})
        site["origins"].append({"url": row["origin"], "state": row["state"], "since": row["since"],
                                "since_iso": iso(row["since"]),
                                "last_error": row["last_error"], "requests": row["requests"],
                                "failures": row["failures"]})  # fmt: skip
    ready = runtime.ready.is_set()
    cache = runtime.cache
    cluster = cache.cluster if cache is not None else None
    link = runtime.control_plane
    edge = {
        "name": runtime.node_name, "region": cluster.me.region if cluster is not None else "",
        "state": "up" if ready else "starting", "healthy": ready,
        "last_error": None if ready else runtime.not_ready_reason,
        # The edge cannot know what the log holds that it has not heard of: the router's /purges
        # says the lag; here, how far it applied and whether it is listening.
        "purge_lag": None,
        # a Redis log is read (connected, unreachable…); a router pushes purges (it knows the lag)
        "control_plane": link.state if link.state != "none" or not settings.control_plane else "push",
        "applied_seq": await cache.purger.log.cluster_seq() if cache is not None else link.applied_seq,
        "now": now, "series": series, "url": None, "admin_url": None,
    }  # fmt: skip
    purges = []
    if cache is not None:
        for record in await cache.purger.log.recent(20):
            purges.append({
                "id": record.purge_id, "seq": record.seq, "cluster_seq": record.cluster_seq, "kind": record.kind,
                "values": list(record.values), "soft": record.soft, "created_at": record.at,
                "created_at_iso": iso(record.at), "summary": {"applied": 1, "complete": True, "lagging": []},
            })  # fmt: skip
    payload = {
        "scope": "edge", "generated_at": iso(time.time()), "interval_s": sampler.interval, "edges": [edge],
        "total": {"now": now, "series": series}, "purges": purges, "purge_error": None,
        "origins": {runtime.node_name: {"edge": runtime.node_name, "sites": list(origin_rows.values())}},
        "regions": {},
    }  # fmt: skip
    body, headers = await encoded_off_loop(json_bytes(payload), request.headers.getall("Accept-Encoding", []))
    return web.Response(body=body, headers=headers)
