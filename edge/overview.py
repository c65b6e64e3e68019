"""What the dashboard shows (``GET /api/overview``): each edge's counters sampled every few
seconds and kept for 15 minutes, turned into rates — requests/s, hit ratio by requests and by
bytes, origin offload, bandwidth, errors by status class, origin latency p50/p99.

The router samples every edge's ``/stats`` over HTTP (``RemoteSampler``); an edge samples its own
workers' published counters (``edge.metrics``).  Both keep a ring of (time, counters) per edge and
answer the same JSON shape, documented in README "Dashboard":

    {"generated_at": ISO-8601, "interval_s": 5, "edges": [{"name", "region", "state", "healthy",
     "last_error", "purge_lag", "now": {rates over the last interval}, "series": [[t, {rates}], …]}],
     "total": {"now": {…}, "series": […]}, "purges": [...], "origins": [...], "regions": {...}}
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from datetime import UTC, datetime
from typing import Any

__all__ = ["Sampler", "iso", "rates"]

log = logging.getLogger("edge.overview")

INTERVAL_S = 5.0
KEEP_S = 15 * 60
RECENT_S = 60.0  # "now" on the dashboard: the last minute
COUNTERS = ("requests", "hits", "bytes_from_cache", "bytes_from_origin")


def iso(epoch: float | None) -> str | None:
    """An epoch time as ISO-8601 UTC (browsers show it in the viewer's zone)."""
    if not epoch:
        return None
    return datetime.fromtimestamp(epoch, tz=UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _classes(stats: dict[str, Any]) -> dict[str, int]:
    return {str(name): int(count) for name, count in (stats.get("by_code_class") or {}).items()}


def rates(before: tuple[float, dict[str, Any]], after: tuple[float, dict[str, Any]]) -> dict[str, Any]:
    """The rates between two samples of one edge's cumulative counters (a restart counts from 0)."""
    (t0, a), (t1, b) = before, after
    seconds = max(t1 - t0, 1e-6)

    def delta(name: str) -> float:
        now, then = float(b.get(name) or 0), float(a.get(name) or 0)
        return now - then if now >= then else now  # the edge restarted: its counters began again

    requests, hits = delta("requests"), delta("hits")
    cached, fetched = delta("bytes_from_cache"), delta("bytes_from_origin")
    classes_before, classes_after = _classes(a), _classes(b)
    errors = {
        name: max(0, count - classes_before.get(name, 0)) / seconds
        for name, count in classes_after.items() if name in ("4xx", "5xx")
    }  # fmt: skip
    latency = _latency(a, b)
    return {
        "p50_ms": latency[0],
        "p99_ms": latency[1],
        "requests_per_s": round(requests / seconds, 2),
        "hit_ratio": round(hits / requests, 4) if requests else None,
        "byte_hit_ratio": round(cached / (cached + fetched), 4) if cached + fetched else None,
        "bandwidth_bps": round((cached + fetched) * 8 / seconds, 1),
        "offload_bytes_per_s": round(cached / seconds, 1),  # bytes the origin did not have to send
        "errors_per_s": {name: round(value, 2) for name, value in errors.items()},
    }


def _latency(a: dict[str, Any], b: dict[str, Any]) -> tuple[float | None, float | None]:
    """p50 and p99 (ms) of the requests between two samples, from the histogram's bucket counts
    (each percentile is its bucket's upper bound, as Prometheus's histogram_quantile would say)."""
    bounds = b.get("request_latency_bounds") or []
    after, before = b.get("request_latency_buckets") or [], a.get("request_latency_buckets") or []
    if not bounds or len(after) != len(bounds) + 1:
        return None, None
    counts = [max(0, now - (before[i] if i < len(before) else 0)) for i, now in enumerate(after)]
    if any(now < then for now, then in zip(after, before, strict=False)):
        counts = list(after)  # the edge restarted: its counts began again
    total = sum(counts)
    if not total:
        return None, None

    def quantile(q: float) -> float | None:
        running = 0
        for index, count in enumerate(counts):
            running += count
            if running >= q * total:
                return round(bounds[index] * 1000, 3) if index < len(bounds) else None
        return None

    return quantile(0.5), quantile(0.99)


def _sum(items: Iterable[dict[str, Any]]) -> dict[str, Any]:
    total: dict[str, Any] = {name: 0 for name in COUNTERS}
    classes: dict[str, int] = {}
    items_list = list(items)
    for stats in items_list:
        for name in COUNTERS:
            total[name] += int(stats.get(name) or 0)
        for name, count in _classes(stats).items():
            classes[name] = classes.get(name, 0) + count
    total["by_code_class"] = classes
    lists = [stats.get("request_latency_buckets") or [] for stats in items_list]
    if lists and all(len(item) == len(lists[0]) for item in lists):
        total["request_latency_buckets"] = [sum(values) for values in zip(*lists, strict=True)]
        total["request_latency_bounds"] = items_list[0].get("request_latency_bounds")
    return total


def _recent(ring: list[tuple[float, dict[str, Any]]]) -> dict[str, Any] | None:
    """Rates over the last minute (or all there is): steady enough to read, recent enough to act on."""
    if len(ring) < 2:
        return None
    last = ring[-1]
    start = next((sample for sample in reversed(ring[:-1]) if last[0] - sample[0] >= RECENT_S), ring[0])
    return rates(start, last)


class Sampler:
    """A ring of samples per edge, filled by ``fetch`` every ``interval`` seconds."""

    def __init__(self, fetch: Callable[[], Awaitable[dict[str, dict[str, Any] | None]]],
                 interval: float = INTERVAL_S, keep: float = KEEP_S) -> None:  # fmt: skip
        self.fetch = fetch
        self.interval = interval
        self.samples: dict[str, deque[tuple[float, dict[str, Any]]]] = {}
        self.size = int(keep / interval) + 1
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

    async def sample(self) -> None:
        now = time.time()
        for name, stats in (await self.fetch()).items():
            ring = self.samples.setdefault(name, deque(maxlen=self.size))
            if stats is not None:
                ring.append((now, stats))

    def edge_series(self, name: str) -> tuple[dict[str, Any] | None, list[list[Any]]]:
        ring = list(self.samples.get(name, ()))
        series: list[list[Any]] = [[iso(after[0]), rates(before, after)] for before, after in itertools.pairwise(ring)]
        return _recent(ring), series

    def total_series(self) -> tuple[dict[str, Any] | None, list[list[Any]]]:
        """The sum over edges, at each sampling round (aligned by round, newest last)."""
        rings = [list(ring) for ring in self.samples.values() if ring]
        if not rings:
            return None, []
        length = min(len(ring) for ring in rings)
        rounds = [(rings[0][-length + index][0], _sum(ring[-length + index][1] for ring in rings))
                  for index in range(length)]  # fmt: skip
        series: list[list[Any]] = [
            [iso(after[0]), rates(before, after)] for before, after in itertools.pairwise(rounds)
        ]
        return _recent(rounds), series
