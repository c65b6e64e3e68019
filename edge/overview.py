"""What the dashboard shows (``GET /api/overview``): each edge's counters sampled every few
seconds and kept for 15 minutes, turned into rates — requests/s, hit ratio by requests and by
bytes, origin offload, bandwidth, errors by status class, client latency p50/p99.

The router samples every edge's ``/stats`` over HTTP; an edge samples its own workers' published
counters (``edge.metrics``).  Both keep a ring of (time, counters) per edge and
answer the same JSON shape, documented in README "Dashboard":

    {"generated_at": ISO-8601, "interval_s": 5, "edges": [{"name", "region", "state", "healthy",
     "last_error", "purge_lag", "now": {rates over the last interval}, "series": [[t, {rates}], …]}],
     "total": {"now": {…}, "series": […]}, "purges": [...], "origins": [...], "regions": {...}}
"""

from __future__ import annotations

import asyncio
import gzip
import json
import logging
import re
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

from edge.http import coding

__all__ = [
    "Sampler", "combine", "encoded", "encoded_off_loop", "flow", "iso", "json_bytes", "parse_since", "point_time",
    "present", "quantile", "rates",
]  # fmt: skip

log = logging.getLogger("edge.overview")

INTERVAL_S = 5.0
KEEP_S = 15 * 60
RECENT_S = 60.0  # "now" on the dashboard: the last minute
COUNTERS = ("requests", "hits", "bytes_from_cache", "bytes_from_origin")
GZIP_MIN_BYTES = 1400  # below one packet compressing saves nothing worth its CPU
GZIP_LEVEL = 5  # JSON of numbers shrinks ~8x here; higher levels cost twice the CPU for ~5 % more
THREAD_MIN_BYTES = 64 * 1024  # a first load's whole history: compressed off the loop that serves redirects


def iso(epoch: float | None) -> str | None:
    """An epoch time as ISO-8601 UTC (browsers show it in the viewer's zone)."""
    if not epoch:
        return None
    try:
        return datetime.fromtimestamp(epoch, tz=UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
    except (OverflowError, ValueError, OSError):  # beyond what a date can say (a bogus build time): no date
        return None


def json_bytes(payload: dict[str, Any]) -> bytes:
    """Compact JSON: the dashboard's first load carries every point of 15 minutes."""
    return json.dumps(payload, separators=(",", ":")).encode()


def encoded(body: bytes, accept_encoding: Sequence[str]) -> tuple[bytes, dict[str, str]]:
    """``body`` gzipped when the client accepts it (RFC 9110 §12.5.3 weights, ``q=0`` refuses) and
    it is worth it, with the fields that say so; the same body and fields either way otherwise."""
    headers = {"Content-Type": "application/json; charset=utf-8", "Vary": "Accept-Encoding",
               "Cache-Control": "no-store"}  # fmt: skip
    if len(body) >= GZIP_MIN_BYTES and coding.preferred(accept_encoding, ("gzip",)) == "gzip":
        headers["Content-Encoding"] = "gzip"
        return gzip.compress(body, GZIP_LEVEL, mtime=0), headers
    return body, headers


async def encoded_off_loop(body: bytes, accept_encoding: Sequence[str]) -> tuple[bytes, dict[str, str]]:
    """:func:`encoded`, in a thread for a large body (the bytes are immutable: safe to hand over)."""
    if len(body) >= THREAD_MIN_BYTES:
        return await asyncio.to_thread(encoded, body, accept_encoding)
    return encoded(body, accept_encoding)


def point_time(epoch: float) -> str:
    """A chart point's time: ISO-8601 UTC to the millisecond, so that rounds closer than a second
    apart (a short ``dashboard_interval``) stay distinct and ``?since=`` never skips one."""
    return datetime.fromtimestamp(epoch, tz=UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _classes(stats: dict[str, Any]) -> dict[str, int]:
    return {str(name): int(count) for name, count in (stats.get("by_code_class") or {}).items()}


def flow(before: tuple[float, dict[str, Any]], after: tuple[float, dict[str, Any]]) -> dict[str, Any]:
    """Per-second counts between two samples of one edge's cumulative counters (a restart counts
    from 0).  Flows of several edges add up; ratios and percentiles are taken only after adding."""
    (t0, a), (t1, b) = before, after
    seconds = max(t1 - t0, 1e-6)
    restarted = float(b.get("requests") or 0) < float(a.get("requests") or 0)

    def delta(then: float, now: float) -> float:
        return now if restarted or now < then else now - then  # after a restart its counters began again

    out: dict[str, Any] = {name: delta(float(a.get(name) or 0), float(b.get(name) or 0)) / seconds for name in COUNTERS}
    classes_before, classes_after = _classes(a), _classes(b)
    out["classes"] = {
        name: delta(classes_before.get(name, 0), count) / seconds
        for name, count in classes_after.items() if name in ("4xx", "5xx")
    }  # fmt: skip
    bounds = b.get("request_latency_bounds") or []
    after_counts, before_counts = b.get("request_latency_buckets") or [], a.get("request_latency_buckets") or []
    if bounds and len(after_counts) == len(bounds) + 1:
        if restarted or any(now < then for now, then in zip(after_counts, before_counts, strict=False)):
            before_counts = []
        out["bounds"] = list(bounds)
        out["buckets"] = [
            max(0, now - (before_counts[i] if i < len(before_counts) else 0)) / seconds
            for i, now in enumerate(after_counts)
        ]  # fmt: skip
    return out


def combine(flows: Iterable[dict[str, Any]]) -> dict[str, Any] | None:
    """The sum of several edges' flows (None when there is none: nobody answered)."""
    items = list(flows)
    if not items:
        return None
    total: dict[str, Any] = {name: sum(item[name] for item in items) for name in COUNTERS}
    classes: dict[str, float] = {}
    for item in items:
        for name, value in item["classes"].items():
            classes[name] = classes.get(name, 0.0) + value
    total["classes"] = classes
    histograms = [item for item in items if "buckets" in item]
    if histograms and all(item["bounds"] == histograms[0]["bounds"] for item in histograms):
        total["bounds"] = histograms[0]["bounds"]
        total["buckets"] = [sum(values) for values in zip(*(item["buckets"] for item in histograms), strict=True)]
    return total


def present(current: dict[str, Any]) -> dict[str, Any]:
    """What the dashboard shows of a flow: rates, ratios and client latency percentiles."""
    requests, hits = current["requests"], current["hits"]
    cached, fetched = current["bytes_from_cache"], current["bytes_from_origin"]
    bounds, buckets = current.get("bounds") or [], current.get("buckets") or []
    return {
        "p50_ms": quantile(0.5, bounds, buckets),
        "p99_ms": quantile(0.99, bounds, buckets),
        "requests_per_s": round(requests, 2),
        "hit_ratio": round(min(1.0, hits / requests), 4) if requests else None,
        "byte_hit_ratio": round(cached / (cached + fetched), 4) if cached + fetched else None,
        "bandwidth_bps": round((cached + fetched) * 8, 1),
        "offload_bytes_per_s": round(cached, 1),  # bytes the origin did not have to send
        "errors_per_s": {name: round(value, 2) for name, value in current["classes"].items()},
    }


def rates(before: tuple[float, dict[str, Any]], after: tuple[float, dict[str, Any]]) -> dict[str, Any]:
    """The dashboard's figures between two samples of one edge."""
    return present(flow(before, after))


def quantile(q: float, bounds: list[float], counts: list[float]) -> float | None:
    """The q-quantile in ms of a histogram's per-bucket counts, as Prometheus's
    ``histogram_quantile`` computes it: linear within the bucket, and the highest finite bound
    when it falls in the +Inf bucket (so a p99 beyond the last bound still reads as "at least")."""
    total = sum(counts)
    if not bounds or not total:
        return None
    rank = q * total
    running = 0.0
    for index, count in enumerate(counts):
        if running + count >= rank and count > 0:
            if index >= len(bounds):
                return round(bounds[-1] * 1000, 3)
            lower = bounds[index - 1] if index else 0.0
            upper = bounds[index]
            return round((lower + (upper - lower) * (rank - running) / count) * 1000, 3)
        running += count
    return round(bounds[-1] * 1000, 3)


Sample = tuple[float, dict[str, Any] | None]  # None: the edge did not answer that round


def _recent(ring: list[Sample]) -> dict[str, Any] | None:
    """The flow over the last minute (or all there is since the edge last answered): steady enough
    to read, recent enough to act on; None when it did not answer the last round."""
    if len(ring) < 2:
        return None
    last_time, last = ring[-1]
    if last is None:
        return None
    start: tuple[float, dict[str, Any]] | None = None
    for at, stats in reversed(ring[:-1]):
        if stats is None:
            break
        start = (at, stats)
        if last_time - at >= RECENT_S:
            break
    return flow(start, (last_time, last)) if start is not None else None


class Sampler:
    """A ring of samples per edge, filled by ``fetch`` every ``interval`` seconds.  Every edge is
    sampled in the same round (the same time), so the whole CDN's figures add the edges' flows
    round by round; an edge that stops answering drops out of the total at once."""

    def __init__(self, fetch: Callable[[], Awaitable[dict[str, dict[str, Any] | None]]],
                 interval: float = INTERVAL_S, keep: float = KEEP_S) -> None:  # fmt: skip
        self.fetch = fetch
        self.interval = interval
        self.samples: dict[str, deque[Sample]] = {}
        self.size = int(keep / interval) + 1
        self._points: dict[str, deque[list[Any]]] = {}  # per edge: [ISO time, figures] per round
        self._now: dict[str, dict[str, Any] | None] = {}  # per edge: the last minute's figures
        self._total_points: deque[list[Any]] = deque(maxlen=self.size)
        self._total_now: dict[str, Any] | None = None
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.ensure_future(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def _run(self) -> None:
        while True:
            try:
                await self.sample()
            except Exception:  # a sampling failure costs one point of a chart, never the process
                log.exception("dashboard sampling failed")
            await asyncio.sleep(self.interval)

    async def sample(self, now: float | None = None) -> None:
        answers = await self.fetch()
        self.record(time.time() if now is None else now, answers)

    def record(self, now: float, answers: dict[str, dict[str, Any] | None]) -> None:
        """One round: each edge's counters, or None for an edge that did not answer.  Edges no
        longer asked about (removed or disabled) are forgotten.  The figures are worked out here,
        once per round, so that a dashboard request only copies them (the router's event loop
        also answers redirects)."""
        for name in list(self.samples):
            if name not in answers:
                for table in (self.samples, self._points, self._now):
                    table.pop(name, None)
        flows: list[dict[str, Any]] = []
        recents: list[dict[str, Any]] = []
        for name, stats in answers.items():
            ring = self.samples.setdefault(name, deque(maxlen=self.size))
            points = self._points.setdefault(name, deque(maxlen=self.size))
            if ring and ring[-1][1] is not None and stats is not None:
                current = flow((ring[-1][0], ring[-1][1]), (now, stats))
                flows.append(current)
                points.append([point_time(now), present(current)])
            ring.append((now, stats))
            recent = _recent(list(ring))
            self._now[name] = present(recent) if recent else None
            if recent:
                recents.append(recent)
        total = combine(flows)
        if total is not None:
            self._total_points.append([point_time(now), present(total)])
        current_total = combine(recents)
        self._total_now = present(current_total) if current_total else None

    def edge_series(self, name: str, since: str | None = None) -> tuple[dict[str, Any] | None, list[list[Any]]]:
        """One edge's last minute and its points (only those after ``since``: a page's refresh)."""
        return self._now.get(name), _after(self._points.get(name, ()), since)

    def total_series(self, since: str | None = None) -> tuple[dict[str, Any] | None, list[list[Any]]]:
        """The sum over the edges that answered, round by round (by time, newest last)."""
        return self._total_now, _after(self._total_points, since)


_ISO_UTC = re.compile(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(\.\d{1,3})?Z")


def parse_since(value: str | None) -> str | None:
    """``?since=`` of ``/api/overview``: a time as the points carry it (``2026-12-02T14:05:00.250Z``,
    or to the second), written as the points are so that the two compare as strings."""
    if value is None or value == "":
        return None
    match = _ISO_UTC.fullmatch(value)
    if match is None:
        raise ValueError("since: expected an ISO-8601 UTC time such as 2026-12-02T14:05:00Z")
    return f"{match[1]}.{(match[2] or '.')[1:].ljust(3, '0')}Z"


def _after(points: Iterable[list[Any]], since: str | None) -> list[list[Any]]:
    if since is None:
        return list(points)
    return [point for point in points if point[0] > since]
