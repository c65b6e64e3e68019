"""HTTP face of the control plane: ``POST /purge``, ``GET /purges``, ``GET /purges/<id>``.

- ``POST /purge`` — body: exactly one of ``{"urls": [...]}``, ``{"prefix": "http://h/p"}``,
  ``{"tags": [...]}``, ``{"all": true}``, plus optional ``"soft": true``.  Logged durably, then
  sent to every enabled edge in parallel.  ``200`` with ``{"id", "seq", "kind", "soft",
  "created_at", "edges": {name: {"status": "applied"|"failed", "affected", "error", "ms"}},
  "applied", "failed"}``; ``400`` (not JSON) / ``422`` (bad fields: ``error`` names them,
  ``problems`` lists them); ``503`` if the log cannot be written (nothing was sent).
- ``GET /purges/<id>`` (or ``/purges/<seq>``) — the record, ``edges: {name: {"status":
  "applied"|"failed"|"rejected"|"pending", "affected", "error", "at", "ms", "via"}}``, counts,
  ``lagging`` (failed or pending edges), ``complete``; ``404`` if unknown or deleted by retention.
- ``GET /purges?after=N[&limit=L]`` — for an edge catching up: ``{"records": [...in sequence
  order...], "latest_seq", "oldest_seq", "truncated", "more", "log_id"}``.  ``truncated``:
  records after N were deleted by retention — treat everything stored as purged, then apply
  ``records``.  ``more``: ask again from the last record's ``seq``.  ``limit`` 1..10000, default 1000.
- ``GET /purges[?limit=L]`` — the newest records (default 100, newest first), each with a
  ``summary`` of where it stands, and ``edges``: every edge's watermark, lag and last error.

Auth: with ``admin_token`` set, every endpoint needs ``Authorization: Bearer <admin_token>``
(constant-time compare); the ``GET`` endpoints also accept ``edge_token``, which the edges hold
already (an edge's ``control_plane_token`` can be either).

Hosting: :func:`register_control_plane` adds the routes (under an optional ``prefix``) and a
``cleanup_ctx`` to an existing app — the router's admin app, later — and returns the
:class:`ControlPlane` (also under :data:`CONTROL_PLANE_KEY`) whose ``counters`` and
``edge_lag()`` the router exports.  :func:`create_control_plane_app` is the standalone app.
Auth is checked per handler, not by middleware, so hosting changes nothing for the host's routes.
"""

from __future__ import annotations

import json
import logging
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Protocol

from aiohttp import hdrs, web
from pydantic import ValidationError

from edge import faultlog
from edge.admin import http1_only, token_matches
from edge.controlplane.log import IdempotencyConflict
from edge.controlplane.models import ControlPlaneSettings, PurgeRequest
from edge.controlplane.purgelog import PurgeLogUnavailable, open_purge_log
from edge.controlplane.service import ControlPlane, ControlPlaneCounters
from edge.controlplane.shared import SharedControlPlane
from edge.inventory import Inventory
from edge.jsonbody import BadJsonBody, read_json

__all__ = ["CONTROL_PLANE_KEY", "create_control_plane_app", "register_control_plane"]

log = logging.getLogger("edge.controlplane")

class ControlPlaneApi(Protocol):
    """What the handlers need: the embedded control plane (:class:`ControlPlane`, SQLite, fan-out)
    and the shared one (:class:`SharedControlPlane`, Redis, edges read the stream) both are it."""

    counters: ControlPlaneCounters

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    async def purge(self, request: PurgeRequest, idempotency_key: str | None = None) -> dict[str, Any]: ...

    async def describe(self, purge_id: str) -> dict[str, Any] | None: ...

    async def page(self, after: int, limit: int) -> dict[str, Any]: ...

    async def overview(self, limit: int = 100) -> dict[str, Any]: ...

    def edge_lag(self) -> dict[str, int]: ...


CONTROL_PLANE_KEY = web.AppKey("control_plane", ControlPlaneApi)
MAX_IDEMPOTENCY_KEY = 200

DEFAULT_PAGE = 1000
MAX_PAGE = 10_000
DEFAULT_RECENT = 100
MAX_RECENT = 1000

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _error(status: int, message: str, **extra: Any) -> web.Response:
    return web.json_response({"error": message, **extra}, status=status)


def _authorized(settings: ControlPlaneSettings, request: web.Request, *, write: bool) -> bool:
    if not settings.admin_token:
        return True
    header = request.headers.get(hdrs.AUTHORIZATION)
    if token_matches(header, settings.admin_token):
        return True
    return not write and settings.edge_token is not None and token_matches(header, settings.edge_token)


def _guarded(settings: ControlPlaneSettings, handler: Handler, *, write: bool) -> Handler:
    async def guarded(request: web.Request) -> web.StreamResponse:
        if not _authorized(settings, request, write=write):
            return web.json_response(
                {"error": "missing or wrong bearer token"},
                status=401,
                headers={hdrs.WWW_AUTHENTICATE: 'Bearer realm="edgecache-control-plane"'},
            )
        return await handler(request)

    return guarded


def _problems(exc: ValidationError) -> list[dict[str, str]]:
    problems = []
    for item in exc.errors():
        message = str(item["msg"]).removeprefix("Value error, ")
        if item["type"] == "extra_forbidden":
            message = "unknown field"
        elif item["type"] == "missing":
            message = "required field is missing"
        problems.append({"field": ".".join(str(part) for part in item["loc"]) or "(body)", "error": message})
    return problems


def _int_param(request: web.Request, name: str, default: int, low: int, high: int) -> int:
    text = request.query.get(name)
    if text is None:
        return default
    if not (text.isascii() and text.isdigit() and len(text) <= 19) or not low <= int(text) <= high:
        raise web.HTTPBadRequest(
            text=json.dumps({"error": f"{name}: must be an integer from {low} to {high}, got {text[:40]!r}"}),
            content_type="application/json",
        )
    return int(text)


class _Handlers:
    def __init__(self, control_plane: ControlPlaneApi) -> None:
        self.control_plane = control_plane

    async def purge(self, request: web.Request) -> web.Response:
        key = request.headers.get("Idempotency-Key")
        if key is not None and (not key or len(key) > MAX_IDEMPOTENCY_KEY or not key.isprintable()):
            return _error(400, f"Idempotency-Key: 1 to {MAX_IDEMPOTENCY_KEY} printable characters")
        try:
            wanted = PurgeRequest.model_validate(await read_json(request))
        except BadJsonBody as exc:
            return _error(exc.status, exc.reason)
        except RecursionError:
            return _error(400, "body is nested too deeply")
        except ValidationError as exc:
            problems = _problems(exc)
            reason = "; ".join(f"{item['field']}: {item['error']}" for item in problems)
            return _error(422, f"invalid purge request: {reason}", problems=problems)
        try:
            result = await self.control_plane.purge(wanted, key)
        except sqlite3.Error as exc:
            log.error("cannot write the purge log: %s", exc)
            return _error(503, f"purge log unavailable, nothing was purged: {exc}")
        except IdempotencyConflict as exc:
            return _error(422, str(exc))
        except PurgeLogUnavailable as exc:
            return web.json_response(
                {"error": f"purge log unavailable, nothing was purged: {exc}"}, status=503, headers={"Retry-After": "1"}
            )
        return web.json_response(result)

    async def purges(self, request: web.Request) -> web.Response:
        try:
            return await self._purges(request)
        except PurgeLogUnavailable as exc:
            return _error(503, str(exc))

    async def _purges(self, request: web.Request) -> web.Response:
        if "after" in request.query:
            after = _int_param(request, "after", 0, 0, 2**63 - 1)
            limit = _int_param(request, "limit", DEFAULT_PAGE, 1, MAX_PAGE)
            return web.json_response(await self.control_plane.page(after, limit))
        limit = _int_param(request, "limit", DEFAULT_RECENT, 1, MAX_RECENT)
        return web.json_response(await self.control_plane.overview(limit))

    async def purge_status(self, request: web.Request) -> web.Response:
        purge_id = request.match_info["purge_id"]
        try:
            found = await self.control_plane.describe(purge_id)
        except PurgeLogUnavailable as exc:
            return _error(503, str(exc))
        if found is None:
            return _error(404, f"no purge {purge_id!r} (unknown, or deleted by retention)")
        return web.json_response(found)


def register_control_plane(
    app: web.Application, inventory: Inventory, settings: ControlPlaneSettings, *, prefix: str = ""
) -> ControlPlaneApi:
    """Add the control plane's routes (under ``prefix``) and lifecycle to ``app``; return it: the
    embedded one for a SQLite log, the shared one for a Redis log (``settings.purge_log``)."""
    control_plane: ControlPlaneApi
    if settings.purge_log is not None and not settings.purge_log.startswith("sqlite:"):
        purge_log = open_purge_log(settings.purge_log, max_records=settings.max_records, max_age=settings.max_age)
        control_plane = SharedControlPlane(inventory, settings, purge_log)
    else:
        control_plane = ControlPlane(inventory, settings)
    app[CONTROL_PLANE_KEY] = control_plane

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        await control_plane.start()
        yield
        await control_plane.close()

    app.cleanup_ctx.append(lifecycle)
    handlers = _Handlers(control_plane)
    base = prefix.rstrip("/")
    app.router.add_post(f"{base}/purge", _guarded(settings, handlers.purge, write=True))
    app.router.add_get(f"{base}/purges", _guarded(settings, handlers.purges, write=False))
    app.router.add_get(f"{base}/purges/{{purge_id}}", _guarded(settings, handlers.purge_status, write=False))
    return control_plane


def create_control_plane_app(inventory: Inventory, settings: ControlPlaneSettings) -> web.Application:
    """The standalone control-plane app (what ``python -m edge.controlplane`` serves)."""
    faultlog.quiet_admin_parse_errors()  # a request aiohttp cannot parse: one line, no traceback
    app = web.Application(middlewares=[http1_only])
    register_control_plane(app, inventory, settings)
    return app
