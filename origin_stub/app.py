"""The origin stub: a scriptable HTTP origin for edgecache's tests, demo and benchmarks.

Data plane (all counted, see ``/_stub/counters``):

- ``GET|HEAD /obj/<name>?size=&status=&max_age=&etag=...`` parametric objects with conditional
  requests, ranges, delays, chunking, early hints and wire faults;
- ``* /echo[/...]`` reports what arrived (body streamed and hashed, never held);
- ``* /s/<id>[/...]`` answers from the script PUT to ``/_stub/script/<id>``;
- ``GET /`` and ``/static/*``: the demo site.

Control plane under ``/_stub/`` (not counted): scripts, recorded requests, counters, reset, refuse.

Responses the edge will parse are written with :class:`~origin_stub.wire.ExactResponse`, so what
the code says is exactly what goes on the wire.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import hashlib
import json
import logging
import ssl
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Self, cast

import pydantic
from aiohttp import web
from aiohttp.http import HttpVersion11
from multidict import MultiMapping

from .body import body_chunks
from .conditional import (
    ByteRange,
    evaluate_preconditions,
    format_http_date,
    if_range_allows,
    parse_http_date,
    parse_range,
    quote_etag,
)
from .demo import ASSETS, INDEX, DemoAsset
from .script import ResponseSpec, ScriptRun, parse_script
from .state import RecordedRequest, StubState, split_target, wire_headers
from .wire import ExactResponse, Fault, reset_connection, send_early_hints, stream_body

__all__ = ["STATE_KEY", "OriginStubServer", "create_origin_app"]

log = logging.getLogger("origin_stub")

STATE_KEY = web.AppKey("origin_stub_state", StubState)

Headers = list[tuple[str, str]]
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

_EARLY_HINT = ("Link", "</style.css>; rel=preload; as=style")
_MAX_CHUNK_SIZE = 16 * 1024 * 1024
_MAX_SCRIPT_SIZE = 64 * 1024 * 1024
_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off", ""})


def _now() -> str:
    return format_http_date(time.time())


def _text(status: int, message: str) -> web.Response:
    return web.Response(status=status, text=message + "\n")


# --------------------------------------------------------------------------------------------
# /obj/<name>: parametric objects


def _header_safe(name: str, value: str) -> str:
    if any(c in value for c in "\r\n\x00"):
        raise ValueError(f"{name}: value must not contain CR, LF or NUL")
    return value


@dataclass(frozen=True)
class ObjParams:
    """The query parameters of ``/obj/<name>``, validated (ValueError -> 400)."""

    size: int = 1024
    status: int = 200
    cache_control: str | None = None
    etag: str | None = None
    last_modified: dt.datetime | None = None
    vary: str | None = None
    surrogate_key: str | None = None
    content_type: str = "application/octet-stream"
    extra: Headers = field(default_factory=list)
    delay: float = 0.0
    chunk_delay: float = 0.0
    chunk_size: int = 65536
    chunked: bool = False
    early_hints: bool = False
    fault: Fault | None = None

    @classmethod
    def parse(cls, query: MultiMapping[str]) -> ObjParams:
        def number(key: str, default: int, low: int, high: int | None = None) -> int:
            raw = query.get(key)
            if raw is None:
                return default
            try:
                value = int(raw)
            except ValueError:
                raise ValueError(f"{key} must be an integer, got {raw!r}") from None
            if value < low or (high is not None and value > high):
                raise ValueError(f"{key} out of range: {value}")
            return value

        def seconds(key: str) -> float:
            raw = query.get(key)
            if raw is None:
                return 0.0
            try:
                value = float(raw)
            except ValueError:
                raise ValueError(f"{key} must be a number, got {raw!r}") from None
            if not 0 <= value <= 3_600_000:
                raise ValueError(f"{key} out of range: {value}")
            return value / 1000

        def flag(key: str) -> bool:
            raw = query.get(key, "0").lower()
            if raw in _TRUE:
                return True
            if raw in _FALSE:
                return False
            raise ValueError(f"{key} must be 0 or 1, got {raw!r}")

        def text(key: str) -> str | None:
            raw = query.get(key)
            return None if raw is None else _header_safe(key, raw)

        cache_control = text("cache_control")
        if cache_control is None and "max_age" in query:
            cache_control = f"max-age={number('max_age', 0, 0)}"
        etag = text("etag")
        last_modified = None
        if (raw_lm := query.get("last_modified")) is not None:
            if raw_lm.strip().isdigit():
                last_modified = dt.datetime.fromtimestamp(int(raw_lm), dt.UTC)
            elif (last_modified := parse_http_date(raw_lm)) is None:
                raise ValueError(f"last_modified must be an HTTP-date or epoch seconds, got {raw_lm!r}")
        extra: Headers = []
        for line in query.getall("header", []):
            name, sep, value = _header_safe("header", line).partition(":")
            if not sep or not name.strip():
                raise ValueError(f"header must look like 'Name: value', got {line!r}")
            extra.append((_header_safe("header", name.strip()), _header_safe("header", value.strip())))
        fault = query.get("fault")
        if fault not in (None, "reset", "short", "long"):
            raise ValueError(f"fault must be reset, short or long, got {fault!r}")
        return cls(
            size=number("size", 1024, 0),
            status=number("status", 200, 200, 999),
            cache_control=cache_control,
            etag=quote_etag(etag) if etag else None,
            last_modified=last_modified,
            vary=text("vary"),
            surrogate_key=text("surrogate_key"),
            content_type=text("content_type") or "application/octet-stream",
            extra=extra,
            delay=seconds("delay_ms"),
            chunk_delay=seconds("chunk_delay_ms"),
            chunk_size=number("chunk_size", 65536, 1, _MAX_CHUNK_SIZE),
            chunked=flag("chunked"),
            early_hints=flag("early_hints"),
            fault=cast(Fault | None, fault),
        )

    def validator_headers(self) -> Headers:
        """The headers a 304 must repeat from the 200 (RFC 9110 15.4.5), plus Surrogate-Key."""
        headers: Headers = []
        if self.etag is not None:
            headers.append(("ETag", self.etag))
        if self.last_modified is not None:
            headers.append(("Last-Modified", format_http_date(self.last_modified)))
        if self.cache_control is not None:
            headers.append(("Cache-Control", self.cache_control))
        if self.vary is not None:
            headers.append(("Vary", self.vary))
        if self.surrogate_key is not None:
            headers.append(("Surrogate-Key", self.surrogate_key))
        return headers


def _no_body_status(status: int) -> bool:
    return status in (204, 304) or 100 <= status < 200


async def _send_bodiless(request: web.Request, status: int, headers: Headers) -> ExactResponse:
    response = ExactResponse(status, headers)
    await response.prepare(request)
    return response


def _multipart(
    name: str, ranges: Sequence[ByteRange], size: int, content_type: str, chunk_size: int
) -> tuple[str, int, Iterator[bytes]]:
    """A multipart/byteranges body (RFC 9110 14.6): boundary, exact length, lazy chunks."""
    boundary = "edgecache-stub-" + hashlib.sha256(name.encode()).hexdigest()[:16]
    heads = [
        f"--{boundary}\r\nContent-Type: {content_type}\r\nContent-Range: {r.content_range(size)}\r\n\r\n".encode()
        for r in ranges
    ]
    closing = f"--{boundary}--\r\n".encode()
    length = sum(len(head) + r.length + 2 for head, r in zip(heads, ranges, strict=True)) + len(closing)

    def parts() -> Iterator[bytes]:
        for head, r in zip(heads, ranges, strict=True):
            yield head
            yield from body_chunks(name, r.start, r.end, chunk_size)
            yield b"\r\n"
        yield closing

    return boundary, length, parts()


async def handle_obj(request: web.Request) -> web.StreamResponse:
    """``GET|HEAD /obj/<name>``: a deterministic object shaped by the query string."""
    try:
        p = ObjParams.parse(request.query)
    except ValueError as exc:
        return _text(400, f"bad parameter: {exc}")
    name = request.match_info["name"]
    if p.early_hints:
        send_early_hints(request, [_EARLY_HINT])
    if p.delay:
        await asyncio.sleep(p.delay)

    validators = p.validator_headers()
    status = p.status
    ranges: Sequence[ByteRange] | None = None
    if 200 <= status < 300:
        # RFC 9110 13.2.1: preconditions only apply when the answer would otherwise be 2xx.
        if evaluate_preconditions(
            if_none_match=request.headers.get("If-None-Match"),
            if_modified_since=request.headers.get("If-Modified-Since"),
            etag=p.etag,
            last_modified=p.last_modified,
        ):
            return await _send_bodiless(request, 304, [("Date", _now()), *validators, *p.extra])
        range_header = request.headers.get("Range")
        if (
            range_header is not None
            and request.method == "GET"
            and status == 200
            and if_range_allows(request.headers.get("If-Range"), etag=p.etag, last_modified=p.last_modified)
        ):
            ranges = parse_range(range_header, p.size)
            if ranges is not None and not ranges:
                return await _send_bodiless(
                    request,
                    416,
                    [("Date", _now()), ("Content-Range", f"bytes */{p.size}"), ("Content-Length", "0")],
                )

    headers: Headers = [("Date", _now())]
    if _no_body_status(status):
        return await _send_bodiless(request, status, [*headers, *validators, *p.extra])

    if not ranges:
        length = p.size
        chunks: Iterator[bytes] = body_chunks(name, 0, p.size, p.chunk_size)
        headers.append(("Content-Type", p.content_type))
    elif len(ranges) == 1:
        status = 206
        length = ranges[0].length
        chunks = body_chunks(name, ranges[0].start, ranges[0].end, p.chunk_size)
        headers += [("Content-Type", p.content_type), ("Content-Range", ranges[0].content_range(p.size))]
    else:
        status = 206
        boundary, length, chunks = _multipart(name, ranges, p.size, p.content_type, p.chunk_size)
        headers.append(("Content-Type", f"multipart/byteranges; boundary={boundary}"))

    # HTTP/1.0 has no chunked coding: the body is then delimited by closing the connection.
    chunked = p.chunked and request.version >= HttpVersion11
    close_delimited = p.chunked and not chunked
    if chunked:
        headers.append(("Transfer-Encoding", "chunked"))
    elif not close_delimited:
        headers.append(("Content-Length", str(length)))
    if p.status == 200:
        headers.append(("Accept-Ranges", "bytes"))
    headers += validators
    keep_alive = p.fault is None and not close_delimited
    if p.fault in ("short", "long"):
        headers.append(("Connection", "close"))
    headers += p.extra

    response = ExactResponse(status, headers, keep_alive=keep_alive)
    await response.prepare(request)
    if request.method == "HEAD":
        return response
    overflow_size = max(64, length // 2)
    await stream_body(
        request,
        response,
        chunks,
        length=length,
        chunked=chunked,
        chunk_delay=p.chunk_delay,
        fault=p.fault,
        overflow=body_chunks(name, p.size, p.size + overflow_size, p.chunk_size) if p.fault == "long" else (),
    )
    return response


# --------------------------------------------------------------------------------------------
# /echo


async def _drain_request(request: web.Request, on_data: Callable[[bytes], None]) -> None:
    """Consume the request body as it streams in, so uploads of any size cost no memory."""
    async for data in request.content.iter_any():
        on_data(data)


async def handle_echo(request: web.Request) -> web.StreamResponse:
    """``* /echo[/...]``: report the request; with ``?size=N`` answer N deterministic bytes."""
    digest = hashlib.sha256()
    length = 0

    def feed(data: bytes) -> None:
        nonlocal length
        length += len(data)
        digest.update(data)

    await _drain_request(request, feed)
    path, query = split_target(request)
    raw_size = request.query.get("size")
    if raw_size is None:
        return web.json_response(
            {
                "method": request.method,
                "path": path,
                "query": query,
                "headers": wire_headers(request),
                "body_length": length,
                "body_sha256": digest.hexdigest(),
            }
        )
    try:
        size = int(raw_size)
        if size < 0:
            raise ValueError
    except ValueError:
        return _text(400, f"bad parameter: size must be a non-negative integer, got {raw_size!r}")
    response = ExactResponse(
        200,
        [
            ("Date", _now()),
            ("Content-Type", "application/octet-stream"),
            ("Content-Length", str(size)),
            ("X-Echo-Body-Length", str(length)),
            ("X-Echo-Body-Sha256", digest.hexdigest()),
        ],
    )
    await response.prepare(request)
    if request.method != "HEAD":
        await stream_body(request, response, body_chunks("echo", 0, size, 65536), length=size, chunked=False)
    return response


# --------------------------------------------------------------------------------------------
# /s/<id>: scripted responses


async def handle_scripted(request: web.Request) -> web.StreamResponse:
    """``* /s/<id>[/...]``: record the request, then answer with the script's next spec."""
    state = request.app[STATE_KEY]
    script_id = request.match_info["id"]
    path, query = split_target(request)
    record = RecordedRequest(request.method, path, query, wire_headers(request), time.time())
    state.recorded.setdefault(script_id, []).append(record)
    run = state.scripts.get(script_id)
    # Take the spec on arrival so concurrent requests get specs in arrival order.
    spec = run.next_spec() if run is not None else None

    def feed(data: bytes) -> None:
        record.body_length += len(data)

    await _drain_request(request, feed)
    if run is None:
        return _text(404, f"no script {script_id!r}: PUT one to /_stub/script/{script_id}")
    if spec is None:
        return _text(500, "script exhausted")
    return await _serve_spec(request, spec, script_id)


def _declares_close(headers: Headers) -> bool:
    return any(n.lower() == "connection" and "close" in (t.strip().lower() for t in v.split(",")) for n, v in headers)


async def _serve_spec(request: web.Request, spec: ResponseSpec, script_id: str) -> web.StreamResponse:
    """Send one spec: its headers verbatim, plus Date and framing only where the spec has none."""
    for hints in spec.early_hints:
        send_early_hints(request, hints)
    if spec.delay_ms:
        await asyncio.sleep(spec.delay_ms / 1000)

    headers = spec.header_pairs()
    names = {name.lower() for name, _ in headers}
    sends_body = request.method != "HEAD" and not _no_body_status(spec.status)
    length = spec.body_length()

    te_declared = any(n.lower() == "transfer-encoding" and "chunked" in v.lower() for n, v in headers)
    wants_chunked = (spec.chunked or te_declared) and not _no_body_status(spec.status)
    chunked = wants_chunked and request.version >= HttpVersion11
    close_delimited = wants_chunked and not chunked
    if "date" not in names:
        headers.append(("Date", _now()))
    if chunked and not te_declared:
        headers.append(("Transfer-Encoding", "chunked"))

    declared: str | None = None
    if "content-length" in names:
        declared = next(v for n, v in headers if n.lower() == "content-length")
    elif spec.content_length is not None:
        declared = str(spec.content_length)
        headers.append(("Content-Length", declared))
    elif not wants_chunked and not _no_body_status(spec.status):
        declared = str(length)
        headers.append(("Content-Length", declared))

    # Keep the connection only when the client can tell where this response ends.
    misframed = sends_body and not chunked and declared is not None and declared.strip() != str(length)
    keep_alive = not (spec.fault or close_delimited or misframed or _declares_close(headers))
    response = ExactResponse(spec.status, headers, keep_alive=keep_alive)
    await response.prepare(request)
    if sends_body:
        await stream_body(
            request,
            response,
            spec.body_iter(script_id),
            length=length,
            chunked=chunked,
            chunk_delay=spec.chunk_delay_ms / 1000,
            fault=spec.fault,
        )
    elif spec.fault == "reset":
        await reset_connection(request)
    return response


# --------------------------------------------------------------------------------------------
# /_stub/: control plane


async def put_script(request: web.Request) -> web.Response:
    """Install (or replace, restarting at the first response) the script for an id."""
    state = request.app[STATE_KEY]
    try:
        script = parse_script(json.loads(await request.read()))
    except (ValueError, RecursionError, pydantic.ValidationError) as exc:  # includes json.JSONDecodeError
        return web.json_response({"error": "invalid script", "detail": str(exc)}, status=400)
    script_id = request.match_info["id"]
    state.scripts[script_id] = ScriptRun(script)
    return web.json_response({"id": script_id, "responses": len(script.responses)})


async def delete_script(request: web.Request) -> web.Response:
    """Forget one script and the requests it recorded."""
    state = request.app[STATE_KEY]
    script_id = request.match_info["id"]
    existed = state.scripts.pop(script_id, None) is not None
    state.recorded.pop(script_id, None)
    return web.json_response({"id": script_id, "deleted": existed})


async def get_script_requests(request: web.Request) -> web.Response:
    state = request.app[STATE_KEY]
    records = state.recorded.get(request.match_info["id"], [])
    return web.json_response([r.to_json() for r in records])


async def get_counters(request: web.Request) -> web.Response:
    state = request.app[STATE_KEY]
    path = request.query.get("path")
    if path is not None:
        return web.json_response({"path": path, "count": state.paths.get(path, 0)})
    return web.json_response(state.counters_json())


async def get_log(request: web.Request) -> web.Response:
    """``GET /_stub/log?path=/p``: ``[{method, headers}]`` of the requests for ``/p``, oldest first."""
    path = request.query.get("path")
    if path is None:
        return _text(400, "bad parameter: path is required")
    return web.json_response(request.app[STATE_KEY].log.get(path, []))


async def handle_healthz(request: web.Request) -> web.Response:
    """``GET /healthz``: 200 ``ok``, or the status ``/_stub/health`` set (a failing health check)."""
    status = request.app[STATE_KEY].health_status
    return web.Response(status=status, text="ok\n" if status == 200 else "unhealthy on purpose\n")


def _status_param(request: web.Request) -> int | None:
    raw = request.query.get("status", "")
    if not raw.isdigit() or not (int(raw) == 0 or 100 <= int(raw) <= 599):
        return None
    return int(raw)


async def post_health(request: web.Request) -> web.Response:
    """``POST /_stub/health?status=503``: /healthz answers that (200 restores it)."""
    status = _status_param(request)
    if status is None or status == 0:
        return _text(400, "bad parameter: status must be an HTTP status")
    request.app[STATE_KEY].health_status = status
    return web.json_response({"health_status": status})


async def post_fail(request: web.Request) -> web.Response:
    """``POST /_stub/fail?status=500``: every data-plane request but /healthz gets that status
    (``status=0`` restores normal answers)."""
    status = _status_param(request)
    if status is None:
        return _text(400, "bad parameter: status must be 0 or an HTTP status")
    request.app[STATE_KEY].fail_status = status
    return web.json_response({"fail_status": status})


async def post_reset(request: web.Request) -> web.Response:
    request.app[STATE_KEY].reset()
    return web.json_response({"reset": True})


async def post_refuse(request: web.Request) -> web.Response:
    """Answer, then refuse new connections for ``seconds`` (needs OriginStubServer or the CLI)."""
    state = request.app[STATE_KEY]
    raw = request.query.get("seconds", "")
    try:
        seconds = float(raw)
        if not 0 <= seconds <= 3600:
            raise ValueError
    except ValueError:
        return _text(400, f"bad parameter: seconds must be a number in [0, 3600], got {raw!r}")
    if state.refuser is None:
        return _text(
            501,
            "refuse needs a server that owns its listening socket: run the stub with "
            "OriginStubServer or `python -m origin_stub`, not a bare create_origin_app()",
        )
    # The listener is closed before the 200 goes out, so a client that has the answer can rely
    # on the next connection attempt being refused.
    await state.refuser(seconds)
    response = web.json_response({"refusing_for": seconds})
    response.force_close()
    return response


# --------------------------------------------------------------------------------------------
# demo site


async def _serve_asset(request: web.Request, asset: DemoAsset) -> web.StreamResponse:
    validators = asset.validator_headers()
    if evaluate_preconditions(
        if_none_match=request.headers.get("If-None-Match"),
        if_modified_since=request.headers.get("If-Modified-Since"),
        etag=asset.etag,
        last_modified=asset.last_modified,
    ):
        return await _send_bodiless(request, 304, [("Date", _now()), *validators])
    headers: Headers = [
        ("Date", _now()),
        ("Content-Type", asset.content_type),
        ("Content-Length", str(len(asset.body))),
        *validators,
    ]
    response = ExactResponse(200, headers)
    await response.prepare(request)
    if request.method != "HEAD":
        await stream_body(request, response, [asset.body], length=len(asset.body), chunked=False)
    return response


async def handle_index(request: web.Request) -> web.StreamResponse:
    return await _serve_asset(request, INDEX)


async def handle_static(request: web.Request) -> web.StreamResponse:
    asset = ASSETS.get(request.match_info["file"])
    if asset is None:
        raise web.HTTPNotFound()
    return await _serve_asset(request, asset)


# --------------------------------------------------------------------------------------------
# app factory and server


def _is_control(path: str) -> bool:
    return path == "/_stub" or path.startswith("/_stub/")


@web.middleware
async def _count_and_track(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Count every data-plane request on arrival; note which connections are mid-request."""
    state = request.app[STATE_KEY]
    path, _ = split_target(request)
    if not _is_control(path):
        state.count(path, request.raw_path)
        state.note(path, request.method, wire_headers(request))
    conn = request.protocol
    state.busy[conn] += 1
    try:
        if state.fail_status and not _is_control(path) and path != "/healthz":
            failing = web.Response(status=state.fail_status, text="failing on purpose (/_stub/fail)\n")
        else:
            failing = None
        return failing if failing is not None else await handler(request)
    finally:
        state.busy[conn] -= 1
        if state.busy[conn] <= 0:
            del state.busy[conn]


async def _name_response(request: web.Request, response: web.StreamResponse) -> None:
    """``X-Stub-Name`` on data-plane responses of a named instance (which one answered)."""
    name = request.app[STATE_KEY].name
    if name and not _is_control(split_target(request)[0]):
        response.headers["X-Stub-Name"] = name


def create_origin_app() -> web.Application:
    """Build the stub app; fresh state per call so parallel tests never share counters."""
    # Scripts may carry literal bodies of a few MiB; data-plane bodies are streamed, never read.
    app = web.Application(middlewares=[_count_and_track], client_max_size=_MAX_SCRIPT_SIZE)
    app[STATE_KEY] = StubState()
    app.on_response_prepare.append(_name_response)
    r = app.router
    r.add_get("/", handle_index)
    r.add_get("/static/{file}", handle_static)
    r.add_get("/obj/{name:.+}", handle_obj)
    r.add_route("*", "/echo", handle_echo)
    r.add_route("*", "/echo/{tail:.*}", handle_echo)
    r.add_route("*", "/s/{id}", handle_scripted)
    r.add_route("*", "/s/{id}/{tail:.*}", handle_scripted)
    r.add_put("/_stub/script/{id}", put_script)
    r.add_delete("/_stub/script/{id}", delete_script)
    r.add_get("/_stub/script/{id}/requests", get_script_requests)
    r.add_get("/_stub/counters", get_counters)
    r.add_get("/_stub/log", get_log)
    r.add_post("/_stub/reset", post_reset)
    r.add_post("/_stub/refuse", post_refuse)
    r.add_get("/healthz", handle_healthz)
    r.add_post("/_stub/health", post_health)
    r.add_post("/_stub/fail", post_fail)
    return app


class OriginStubServer:
    """The stub on a real listening socket, which it can close and reopen to play "origin down".

    ``async with OriginStubServer() as origin: ... origin.url ...``
    """

    def __init__(
        self, host: str = "127.0.0.1", port: int = 0, name: str = "", ssl_context: ssl.SSLContext | None = None
    ) -> None:
        self._host = host
        self._ssl = ssl_context  # set: the stub speaks HTTPS (origins behind TLS)
        self._requested_port = port
        self._app = create_origin_app()
        self._state = self._app[STATE_KEY]
        self._state.name = name
        self._state.refuser = self.refuse_connections
        self._runner: web.AppRunner | None = None
        self._site: web.TCPSite | None = None
        self._port: int | None = None
        self._resume_task: asyncio.Task[None] | None = None
        self._listening = asyncio.Event()

    @property
    def app(self) -> web.Application:
        return self._app

    @property
    def state(self) -> StubState:
        """Direct access to counters and scripts, for in-process tests that prefer it to HTTP."""
        return self._state

    @property
    def port(self) -> int:
        """The bound port (the real one when created with port=0); still known after stop()."""
        if self._port is None:
            raise RuntimeError("OriginStubServer is not started")
        return self._port

    @property
    def url(self) -> str:
        host = f"[{self._host}]" if ":" in self._host else self._host
        return f"{'https' if self._ssl else 'http'}://{host}:{self.port}"

    @property
    def refusing(self) -> bool:
        """True while refuse_connections() has the listening socket closed."""
        return self._runner is not None and self._site is None

    async def start(self) -> None:
        """Listen; after a stop() this is an origin restart: same port, same counters and scripts."""
        if self._runner is not None:
            raise RuntimeError("OriginStubServer already started")
        # A short shutdown timeout: a test that abandons a slow (chunk_delay_ms) download must not
        # make stop() wait a minute for the handler.
        runner = web.AppRunner(self._app, shutdown_timeout=1.0, access_log=None)
        await runner.setup()
        self._runner = runner
        try:
            await self._listen(self._requested_port if self._port is None else self._port)
        except BaseException:
            self._runner = None
            await runner.cleanup()
            raise
        self._port = runner.addresses[0][1]

    async def stop(self) -> None:
        if self._resume_task is not None:
            self._resume_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._resume_task
            self._resume_task = None
        runner, self._runner, self._site = self._runner, None, None
        self._listening.clear()
        if runner is not None:
            await runner.cleanup()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    async def _listen(self, port: int) -> None:
        assert self._runner is not None
        site = web.TCPSite(self._runner, self._host, port, reuse_address=True, ssl_context=self._ssl)
        await site.start()
        self._site = site
        self._listening.set()

    async def refuse_connections(self, seconds: float) -> None:
        """Close the listening socket now and reopen it on the same port after *seconds*.

        Returns as soon as connections are being refused (not after the window), so a test can
        act during the window; ``await wait_listening()`` waits for the end of it. Idle keep-alive
        connections are closed too, as a dead origin would drop them, so clients must reconnect
        and get ECONNREFUSED; requests in progress finish, then their connections close. Calling
        it again while refusing restarts the window.
        """
        if seconds < 0:
            raise ValueError("seconds must be >= 0")
        runner = self._runner
        if runner is None:
            raise RuntimeError("OriginStubServer is not started")
        if self._resume_task is not None:
            self._resume_task.cancel()
            self._resume_task = None
        if self._site is not None:
            site, self._site = self._site, None
            self._listening.clear()
            await site.stop()
        if runner.server is not None:
            for conn in runner.server.connections:
                if conn in self._state.busy:
                    conn.close()
                else:
                    conn.force_close()
        self._resume_task = asyncio.create_task(self._resume_after(seconds))

    async def wait_listening(self) -> None:
        """Wait until the server accepts connections (immediately unless refusing)."""
        await self._listening.wait()

    async def _resume_after(self, seconds: float) -> None:
        await asyncio.sleep(seconds)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 5.0
        while True:
            try:
                await self._listen(self.port)
                return
            except OSError as exc:
                # Someone else may hold the port for a moment; a test gets a clear log line.
                if loop.time() >= deadline:
                    log.error("origin_stub could not listen again on port %s: %s", self.port, exc)
                    raise
                await asyncio.sleep(0.05)
