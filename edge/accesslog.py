"""Access logs and Server-Timing for the edge: one line per request, the facts an operator greps for.

The cache handler records where the time went in ``request[TIMING_KEY]`` (lookup, origin); the
``Server-Timing`` header (W3C Server Timing) is written from it just before the response head is
sent, and the access log line after the response is complete, with the bytes actually sent.
Formats: JSON lines (one object per line, for log pipelines) or Apache "combined" with the cache
status and timings appended (for humans and classic tools).
"""

from __future__ import annotations

import json
import logging
import sys
import time
from dataclasses import dataclass
from typing import Literal

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger

AccessLogFormat = Literal["json", "combined", "off"]

ACCESS_LOGGER_NAME = "edge.access"


@dataclass(slots=True)
class Timing:
    """Milliseconds spent per phase of one request (monotonic clock)."""

    started: float
    lookup_ms: float | None = None
    origin_ms: float | None = None

    def server_timing(self) -> str:
        """The ``Server-Timing`` value: lookup, origin (when contacted) and total so far."""
        parts = []
        if self.lookup_ms is not None:
            parts.append(f"lookup;dur={self.lookup_ms:.3f}")
        if self.origin_ms is not None:
            parts.append(f"origin;dur={self.origin_ms:.3f}")
        parts.append(f"total;dur={(time.monotonic() - self.started) * 1000:.3f}")
        return ", ".join(parts)


TIMING_KEY = web.RequestKey("request_timing", Timing)
PREPARED_KEY = web.RequestKey("prepared_response", web.StreamResponse)


def client_gone(request: web.BaseRequest, exc: ConnectionError) -> web.StreamResponse:
    """The client disconnected while its response was being sent: end quietly, not as a server error.

    Returning the already-started response lets aiohttp record the request as a premature
    disconnection (debug level) instead of logging a 500 with a traceback for every impatient client.
    """
    response: web.StreamResponse | None = request.get(PREPARED_KEY)
    if response is None:
        raise exc
    if request.transport is not None:
        request.transport.close()
    return response


def timing_of(request: web.BaseRequest) -> Timing:
    """The request's timing record, created on first use."""
    timing = request.get(TIMING_KEY)
    if timing is None:
        timing = Timing(time.monotonic())
        request[TIMING_KEY] = timing
    return timing


def configure_access_logger() -> logging.Logger:
    """Access lines go to stdout, one per line, without the application log's prefix."""
    logger = logging.getLogger(ACCESS_LOGGER_NAME)
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stdout)
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)
        logger.propagate = False
        logger.setLevel(logging.INFO)
    return logger


def reopen_log_files() -> None:
    """SIGUSR1 (log rotation): files are reopened on their next write; stdout/stderr need nothing."""
    for name in (ACCESS_LOGGER_NAME, ""):
        for handler in logging.getLogger(name or None).handlers:
            if isinstance(handler, logging.FileHandler):
                handler.close()  # mode "a": the next emit opens the path anew


class EdgeAccessLogger(AbstractAccessLogger):
    """aiohttp access logger writing JSON lines or combined format (``access_log_format``)."""

    output_format: AccessLogFormat = "json"

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        if self.output_format == "off" or not self.logger.isEnabledFor(logging.INFO):
            return
        timing = request.get(TIMING_KEY)
        origin_ms = timing.origin_ms if isinstance(timing, Timing) else None
        cache = response.headers.get("X-Cache", "-")
        # Body bytes when the length is known (the common case); for chunked responses aiohttp
        # only knows the total written, headers included.
        sent = response.content_length if response.content_length is not None else response.body_length
        if request.method == "HEAD" or response.status in (204, 304):
            sent = 0
        if self.output_format == "json":
            line = json.dumps(
                {
                    "time": _iso_now(),
                    "client": request.remote,
                    "method": request.method,
                    "target": request.raw_path,
                    "proto": f"HTTP/{request.version.major}.{request.version.minor}",
                    "status": response.status,
                    "bytes": sent,
                    "cache": cache,
                    "cache_status": response.headers.get("Cache-Status"),
                    "origin_ms": None if origin_ms is None else round(origin_ms, 3),
                    "duration_ms": round(time * 1000, 3),
                    "referer": request.headers.get("Referer"),
                    "user_agent": request.headers.get("User-Agent"),
                },
                separators=(",", ":"),
            )
        else:
            line = (
                f'{request.remote or "-"} - - [{_clf_now()}] "{request.method} {request.raw_path} '
                f'HTTP/{request.version.major}.{request.version.minor}" {response.status} {sent} '
                f'"{_quote(request.headers.get("Referer"))}" "{_quote(request.headers.get("User-Agent"))}" '
                f"cache={cache} origin_ms={'-' if origin_ms is None else f'{origin_ms:.3f}'} "
                f"duration_ms={time * 1000:.3f}"
            )
        self.logger.info(line)

    @property
    def enabled(self) -> bool:
        return self.output_format != "off"


def access_logger_class(log_format: AccessLogFormat) -> type[EdgeAccessLogger]:
    """A logger class bound to one format (aiohttp instantiates it itself)."""
    return type(f"EdgeAccessLogger_{log_format}", (EdgeAccessLogger,), {"output_format": log_format})


def _quote(value: str | None) -> str:
    return "-" if not value else value.replace('"', "%22")


def _iso_now() -> str:
    now = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now % 1 * 1000):03d}Z"


def _clf_now() -> str:
    return time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime())
