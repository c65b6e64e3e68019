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
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import hdrs, web
from aiohttp.typedefs import Handler
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from edge.cache import ORIGIN_LATENCY_BUCKETS, CacheHandler, entry_of
from edge.config import EdgeSettings
from edge.http import policy
from edge.http.headers import get_first
from edge.jsonbody import BadJsonBody, read_json
from edge.runtime import EdgeRuntime

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
    return hmac.compare_digest(presented.strip().encode(), token.encode())


@web.middleware
async def require_token(request: web.Request, handler: Handler) -> web.StreamResponse:
    token = request.app[SETTINGS_KEY].admin_token
    if token and request.path not in OPEN_PATHS and not token_matches(request.headers.get(hdrs.AUTHORIZATION), token):
        return web.json_response(
            {"error": "missing or wrong bearer token"},
            status=401,
            headers={hdrs.WWW_AUTHENTICATE: 'Bearer realm="edgecache-admin"'},
        )
    return await handler(request)


# -- request models ------------------------------------------------------------------------------


class PurgeRequest(BaseModel):
    """Body of ``POST /purge``: exactly one of ``urls``, ``prefix``, ``tags``, ``all``."""

    model_config = ConfigDict(extra="forbid")

    urls: list[str] | None = Field(default=None, min_length=1, max_length=10_000)
    prefix: str | None = None
    tags: list[str] | None = Field(default=None, min_length=1, max_length=10_000)
    all: bool | None = None
    soft: bool = False
    id: str | None = Field(default=None, max_length=128, description="set by the control plane")
    cluster_seq: int | None = Field(default=None, ge=1, description="set by the control plane")

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


def _cache(request: web.Request) -> CacheHandler:
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
            kind, values = "urls", [cache.key_for_url(url) for url in wanted.urls]
        elif wanted.prefix is not None:
            kind, values = "prefix", [cache.key_for_url(wanted.prefix)]
        elif wanted.tags is not None:
            kind, values = "tags", list(dict.fromkeys(wanted.tags))
        else:
            kind, values = "all", []
    except ValueError as exc:
        return web.json_response({"error": str(exc)}, status=422)
    purge_id = wanted.id or f"e-{uuid.uuid4().hex[:16]}"
    started = time.perf_counter()
    record, affected = await cache.purge(kind, values, wanted.soft, purge_id, wanted.cluster_seq)  # type: ignore[arg-type]
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


async def inspect(request: web.Request) -> web.Response:
    """GET /cache?url=… — every stored variant of one URL, per tier, with age, TTL and validators."""
    url = request.query.get("url")
    if not url:
        return web.json_response({"error": "query parameter url is required"}, status=400)
    cache = _cache(request)
    try:
        key = cache.key_for_url(url)
    except ValueError as exc:
        return web.json_response({"error": str(exc)}, status=400)
    await cache.sync_purges()
    now = time.time()
    variants: list[dict[str, Any]] = []
    for tier in cache.store.tiers:
        for meta in await tier.variants(key):
            verdict = cache.purges.verdict(meta.key, meta.tags, meta.stored_at)
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
                    "tags": list(meta.tags),
                    "etag": get_first(meta.headers, "etag"),
                    "last_modified": get_first(meta.headers, "last-modified"),
                    "stored_at": meta.stored_at,
                    "invalidated": meta.invalidated or verdict == "soft",
                    "purged": verdict == "hard",
                }
            )
    return web.json_response({"url": url, "key": key, "variants": variants})


def _invalidated(meta: Any) -> Any:
    from dataclasses import replace

    return replace(meta, invalidated=True)


async def healthz(request: web.Request) -> web.Response:
    """Alive: the worker's event loop answers."""
    return web.json_response({"status": "ok", "pid": os.getpid()})


async def readyz(request: web.Request) -> web.Response:
    """Ready for clients: stores open and purges from the control plane caught up."""
    runtime = request.app[RUNTIME_KEY]
    cluster_seq = 0
    if runtime.cache is not None:
        cluster_seq = await runtime.cache.purge_log.cluster_seq()
    body = {
        "ready": runtime.ready.is_set(),
        "pid": os.getpid(),
        "edge": runtime.node_name,
        "cluster_seq": cluster_seq,
        "uptime_s": round(time.monotonic() - runtime.started_monotonic, 3),
    }
    if not runtime.ready.is_set():
        body["reason"] = runtime.not_ready_reason
        return web.json_response(body, status=503)
    return web.json_response(body)


# -- statistics across workers -------------------------------------------------------------------


def stats_dir(settings: EdgeSettings) -> Path:
    return Path(settings.cache_dir) / "stats"


def worker_snapshot(runtime: EdgeRuntime) -> dict[str, Any]:
    """This worker's counters, as written to ``stats/<pid>.json`` for the others to sum."""
    snapshot: dict[str, Any] = {"pid": os.getpid(), "time": time.time()}
    cache = runtime.cache
    if cache is None:
        return snapshot
    counters = cache.counters
    snapshot.update(
        requests=counters.requests,
        hits=counters.hits,
        misses=counters.misses,
        bytes_from_cache=counters.bytes_from_cache,
        bytes_from_origin=counters.bytes_from_origin,
        collapsed=cache.coalescer.collapsed_total,
        by_status=dict(counters.by_status),
        by_code_class=dict(counters.by_code_class),
        purges=dict(counters.purges),
        origin_latency_buckets=list(counters.origin_latency_buckets),
        origin_latency_sum=counters.origin_latency_sum,
        origin_latency_count=counters.origin_latency_count,
        tiers={tier.name: tier.stats() for tier in cache.store.tiers},
    )
    return snapshot


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def collect_worker_stats(settings: EdgeSettings, runtime: EdgeRuntime) -> list[dict[str, Any]]:
    """Every live worker's last snapshot (this worker's fresh)."""
    snapshots = {os.getpid(): worker_snapshot(runtime)}
    directory = stats_dir(settings)
    if directory.is_dir():
        for path in directory.glob("*.json"):
            with contextlib.suppress(OSError, ValueError):
                data = json.loads(path.read_text())
                pid = int(data.get("pid", 0))
                if pid and pid not in snapshots and _alive(pid):
                    snapshots[pid] = data
    return list(snapshots.values())


def summarize(snapshots: list[dict[str, Any]]) -> dict[str, Any]:
    def total(name: str) -> int:
        return sum(int(item.get(name, 0)) for item in snapshots)

    requests, hits = total("requests"), total("hits")
    from_cache, from_origin = total("bytes_from_cache"), total("bytes_from_origin")
    tiers: dict[str, dict[str, int]] = {}
    for item in snapshots:
        for name, values in item.get("tiers", {}).items():
            merged = tiers.setdefault(name, {})
            for counter, value in values.items():
                if name == "disk" and counter in ("objects", "bytes", "ready"):
                    merged[counter] = max(merged.get(counter, 0), int(value))  # shared tier: same totals
                else:
                    merged[counter] = merged.get(counter, 0) + int(value)
    by_status: dict[str, int] = {}
    by_code: dict[str, int] = {}
    purges: dict[str, int] = {}
    for item in snapshots:
        for label, count in item.get("by_status", {}).items():
            by_status[label] = by_status.get(label, 0) + int(count)
        for label, count in item.get("by_code_class", {}).items():
            by_code[label] = by_code.get(label, 0) + int(count)
        for kind, count in item.get("purges", {}).items():
            purges[kind] = purges.get(kind, 0) + int(count)
    return {
        "workers": len(snapshots),
        "requests": requests,
        "hits": hits,
        "misses": total("misses"),
        "hit_ratio": round(hits / requests, 4) if requests else None,
        "bytes_from_cache": from_cache,
        "bytes_from_origin": from_origin,
        "byte_hit_ratio": round(from_cache / (from_cache + from_origin), 4) if from_cache + from_origin else None,
        "collapsed": total("collapsed"),
        "by_cache_status": by_status,
        "by_code_class": by_code,
        "purges": purges,
        "tiers": tiers,
        "evictions": sum(values.get("evictions", 0) for values in tiers.values()),
        "corrupt_discarded": sum(values.get("corrupt_discarded", 0) for values in tiers.values()),
    }


async def stats(request: web.Request) -> web.Response:
    """GET /stats — hit ratios by requests and bytes, tiers, evictions, corrupt files; all workers."""
    runtime = request.app[RUNTIME_KEY]
    snapshots = await asyncio.to_thread(collect_worker_stats, request.app[SETTINGS_KEY], runtime)
    return web.json_response(summarize(snapshots))


class StatsCollector:
    """Turns the summed worker snapshots into Prometheus metric families at scrape time."""

    def __init__(self, snapshots: list[dict[str, Any]], edge: str) -> None:
        self.snapshots = snapshots
        self.edge = edge

    def describe(self) -> list[Any]:
        return []

    def collect(self) -> Any:
        summary = summarize(self.snapshots)
        requests = CounterMetricFamily(
            "edgecache_requests", "Requests by cache status (X-Cache value)", labels=["edge", "cache_status"]
        )
        for label, count in summary["by_cache_status"].items():
            requests.add_metric([self.edge, label], count)
        yield requests
        responses = CounterMetricFamily(
            "edgecache_responses", "Responses by status class (5xx = origin failures, 504s...)", labels=["edge", "code"]
        )
        for label, count in summary["by_code_class"].items():
            responses.add_metric([self.edge, label], count)
        yield responses
        served = CounterMetricFamily("edgecache_bytes_served", "Body bytes sent to clients", labels=["edge", "source"])
        served.add_metric([self.edge, "cache"], summary["bytes_from_cache"])
        served.add_metric([self.edge, "origin"], summary["bytes_from_origin"])
        yield served
        collapsed = CounterMetricFamily("edgecache_collapsed_requests", "Requests that joined a fill", labels=["edge"])
        collapsed.add_metric([self.edge], summary["collapsed"])
        yield collapsed
        purges = CounterMetricFamily("edgecache_purges", "Purges applied by kind", labels=["edge", "kind"])
        for kind, count in summary["purges"].items():
            purges.add_metric([self.edge, kind], count)
        yield purges
        objects = GaugeMetricFamily("edgecache_tier_objects", "Objects per tier", labels=["edge", "tier"])
        size = GaugeMetricFamily("edgecache_tier_bytes", "Bytes per tier", labels=["edge", "tier"])
        evictions = CounterMetricFamily("edgecache_evictions", "Evictions per tier", labels=["edge", "tier"])
        corrupt = CounterMetricFamily("edgecache_corrupt_discarded", "Corrupt objects found", labels=["edge", "tier"])
        for tier, values in summary["tiers"].items():
            objects.add_metric([self.edge, tier], values.get("objects", 0))
            size.add_metric([self.edge, tier], values.get("bytes", 0))
            evictions.add_metric([self.edge, tier], values.get("evictions", 0))
            corrupt.add_metric([self.edge, tier], values.get("corrupt_discarded", 0))
        yield from (objects, size, evictions, corrupt)
        workers = GaugeMetricFamily("edgecache_workers_alive", "Worker processes answering", labels=["edge"])
        workers.add_metric([self.edge], summary["workers"])
        yield workers
        buckets = [0] * (len(ORIGIN_LATENCY_BUCKETS) + 1)
        latency_sum = 0.0
        for item in self.snapshots:
            for index, count in enumerate(item.get("origin_latency_buckets", [])):
                if index < len(buckets):
                    buckets[index] += int(count)
            latency_sum += float(item.get("origin_latency_sum", 0.0))
        cumulative, running = [], 0
        for bound, count in zip([*map(str, ORIGIN_LATENCY_BUCKETS), "+Inf"], buckets, strict=True):
            running += count
            cumulative.append((bound, running))
        latency = HistogramMetricFamily(
            "edgecache_origin_latency_seconds", "Time from request to origin response headers", labels=["edge"]
        )
        latency.add_metric([self.edge], cumulative, latency_sum)
        yield latency


async def metrics(request: web.Request) -> web.Response:
    """GET /metrics — Prometheus text format, summed over the edge's workers."""
    runtime = request.app[RUNTIME_KEY]
    snapshots = await asyncio.to_thread(collect_worker_stats, request.app[SETTINGS_KEY], runtime)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(StatsCollector(snapshots, runtime.node_name))
    return web.Response(body=generate_latest(registry), headers={"Content-Type": "text/plain; version=0.0.4"})


async def reload(request: web.Request) -> web.Response:
    """POST /reload — validate the configuration and, if valid, roll the workers onto it (like SIGHUP)."""
    from edge.supervisor import request_reload

    accepted, message = await asyncio.to_thread(request_reload)
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
                    "summary": "Inspect the stored variants of one URL",
                    "parameters": [{"name": "url", "in": "query", "required": True, "schema": {"type": "string"}}],
                    "responses": {**json_ok, "400": {"description": "missing or bad url"}, **auth_error},
                }
            },
            "/stats": {"get": {"summary": "Hit ratios, tiers, evictions, corrupt files", "responses": json_ok}},
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


async def _publish_stats_forever(settings: EdgeSettings, runtime: EdgeRuntime) -> None:
    directory = stats_dir(settings)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{os.getpid()}.json"
    try:
        while True:
            temporary = path.with_suffix(".tmp")
            temporary.write_text(json.dumps(worker_snapshot(runtime)))
            os.replace(temporary, path)
            await asyncio.sleep(STATS_INTERVAL_S)
    finally:
        with contextlib.suppress(OSError):
            path.unlink()


def create_admin_app(settings: EdgeSettings, runtime: EdgeRuntime) -> web.Application:
    app = web.Application(middlewares=[require_token])
    app[SETTINGS_KEY] = settings
    app[RUNTIME_KEY] = runtime

    async def stats_publisher(app: web.Application) -> AsyncIterator[None]:
        task = asyncio.ensure_future(_publish_stats_forever(settings, runtime))
        yield
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    app.cleanup_ctx.append(stats_publisher)
    app.router.add_post("/purge", purge)
    app.router.add_get("/cache", inspect)
    app.router.add_get("/stats", stats)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/openapi.json", openapi)
    app.router.add_post("/reload", reload)
    return app


# -- catching up with the cluster control plane --------------------------------------------------


async def catch_up_with_control_plane(runtime: EdgeRuntime, session: aiohttp.ClientSession) -> None:
    """Before turning ready, apply every cluster purge this edge missed while it was down.

    Asks ``GET {control_plane}/purges?after=N`` (N = last cluster sequence applied, kept in the
    purge log on disk).  If the control plane's log no longer reaches back to N, everything stored
    so far is treated as purged (a hard purge-all), so a purged object can never come back.
    Retries until it succeeds: an edge that cannot know what it missed must not take clients.
    """
    settings = runtime.settings
    cache = runtime.cache
    if settings.control_plane is None or cache is None:
        if cache is not None:
            cache.caught_up.set()
        runtime.not_ready_reason = ""
        runtime.ready.set()
        return
    headers = {hdrs.AUTHORIZATION: f"Bearer {settings.control_plane_token}"} if settings.control_plane_token else {}
    base = settings.control_plane.rstrip("/")
    delay = 0.2
    while True:
        try:
            after = await cache.purge_log.cluster_seq()
            async with session.get(
                f"{base}/purges", params={"after": str(after), "limit": "1000"}, headers=headers
            ) as response:
                if response.status != 200:
                    raise RuntimeError(f"control plane answered {response.status}")
                page = await response.json()
            if page.get("truncated"):
                latest = int(page.get("latest_seq", after))
                log.warning("purge log truncated past %d: treating everything stored as purged", after)
                await cache.purge("all", [], False, f"catch-up-{latest}", latest or None)
                continue
            records = page.get("records", [])
            for record in records:
                try:
                    await _apply_cluster_record(cache, record)
                except (ValueError, KeyError, TypeError) as exc:
                    # One unusable record must not keep the edge out of service forever.
                    log.error("skipping unusable cluster purge %r: %s", record.get("id"), exc)
            if not records or int(page.get("latest_seq", 0)) <= await cache.purge_log.cluster_seq():
                cache.caught_up.set()
                runtime.not_ready_reason = ""
                runtime.ready.set()
                log.info("caught up with the control plane at sequence %d", await cache.purge_log.cluster_seq())
                return
        except (aiohttp.ClientError, TimeoutError, RuntimeError, ValueError, KeyError) as exc:
            runtime.not_ready_reason = f"catching up with the control plane: {exc}"
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)


async def _apply_cluster_record(cache: CacheHandler, record: dict[str, Any]) -> None:
    kind = record.get("kind")
    values = list(record.get("values") or [])
    if kind == "urls":
        values = [cache.key_for_url(url) for url in values]
    elif kind == "prefix":
        values = [cache.key_for_url(prefix) for prefix in values]
    elif kind not in ("tags", "all"):
        raise ValueError(f"unknown purge kind {kind!r}")
    await cache.purge(kind, values, bool(record.get("soft")), str(record.get("id")), int(record["seq"]))
