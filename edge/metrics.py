"""Counters of one edge worker, and how they become ``/stats`` and Prometheus metrics.

The request path only increments plain integers on a per-worker object (no locks, no labels, no
``prometheus_client`` objects on the hot path).  Each worker publishes a snapshot of them every
second to ``stats/<pid>.json`` in the cache directory; an admin request, whichever worker it lands
on, sums the live workers' snapshots, and ``prometheus_client`` collectors turn the sums into metric
families at scrape time.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import json
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from prometheus_client import ProcessCollector
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

from edge.config import EdgeSettings
from edge.origins import LATENCY_BUCKETS
from edge.store.disk import pid_alive
from edge.version import package_version

if TYPE_CHECKING:
    from edge.cache.context import CacheContext
    from edge.runtime import EdgeRuntime
    from edge.sites import SiteTable

STATS_INTERVAL_S = 1.0

ORIGIN_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
# Client-side: from the first byte of a request to the end of its response (hits are sub-millisecond).
REQUEST_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


@dataclass(slots=True)
class CacheCounters:
    """Per-worker counters exposed by /stats and /metrics (summed over workers there)."""

    requests: int = 0
    hits: int = 0
    misses: int = 0
    bytes_from_cache: int = 0
    bytes_from_origin: int = 0
    by_status: dict[str, int] = field(default_factory=dict)
    purges: dict[str, int] = field(default_factory=dict)
    by_code_class: dict[str, int] = field(default_factory=dict)
    origin_latency_buckets: list[int] = field(default_factory=lambda: [0] * (len(ORIGIN_LATENCY_BUCKETS) + 1))
    origin_latency_sum: float = 0.0
    origin_latency_count: int = 0
    refused: dict[str, int] = field(default_factory=dict)  # by status, before the request reached the cache
    stripped_headers: dict[str, int] = field(default_factory=dict)  # override fields removed, by name

    compressed: dict[str, int] = field(default_factory=dict)  # responses the edge encoded, by coding
    request_latency_buckets: list[int] = field(default_factory=lambda: [0] * (len(REQUEST_LATENCY_BUCKETS) + 1))
    request_latency_sum: float = 0.0

    errors: dict[str, int] = field(default_factory=dict)  # "status reason": answers the edge generated

    def count_error(self, status: int, exc: Exception) -> None:
        """An error answer the edge made itself (502 unreachable, 504 timeout, 508 loop…), by cause."""
        reason = re.sub(r"(?<!^)(?=[A-Z])", "_", type(exc).__name__).lower()
        key = f"{status} {reason}"
        self.errors[key] = self.errors.get(key, 0) + 1

    def observe_request(self, seconds: float) -> None:
        index = bisect.bisect_left(REQUEST_LATENCY_BUCKETS, seconds)
        self.request_latency_buckets[index] += 1
        self.request_latency_sum += seconds

    def count_compressed(self, coding: str) -> None:
        self.compressed[coding] = self.compressed.get(coding, 0) + 1

    def count(self, label: str) -> None:
        self.by_status[label] = self.by_status.get(label, 0) + 1

    def count_refused(self, status: int) -> None:
        """A request the front end refused (malformed, too large…): an answer by status class too,
        so the dashboard's and Prometheus's errors include what never reached the cache."""
        label = str(status)
        self.refused[label] = self.refused.get(label, 0) + 1
        code_class = f"{status // 100}xx"
        self.by_code_class[code_class] = self.by_code_class.get(code_class, 0) + 1

    def count_stripped(self, names: list[str]) -> None:
        for name in names:
            self.stripped_headers[name] = self.stripped_headers.get(name, 0) + 1

    def observe_origin(self, seconds: float) -> None:
        index = next((i for i, bound in enumerate(ORIGIN_LATENCY_BUCKETS) if seconds <= bound), -1)
        self.origin_latency_buckets[index] += 1
        self.origin_latency_sum += seconds
        self.origin_latency_count += 1



def stats_dir(settings: EdgeSettings) -> Path:
    return Path(settings.cache_dir) / "stats"


def worker_snapshot(runtime: EdgeRuntime) -> dict[str, Any]:
    """This worker's counters, as written to ``stats/<pid>.json`` for the others to sum."""
    snapshot: dict[str, Any] = {"pid": os.getpid(), "time": time.time(), "supervisor": _supervisor()}
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
        compressed=dict(counters.compressed),
        origin_latency_buckets=list(counters.origin_latency_buckets),
        origin_latency_sum=counters.origin_latency_sum,
        origin_latency_count=counters.origin_latency_count,
        tiers={tier.name: tier.stats() for tier in cache.store.tiers},
        origins=origin_snapshot(cache.sites),
        peers={name: {"requests": c.requests, "hits": c.hits, "failures": c.failures}
               for name, c in (cache.cluster.counters.items() if cache.cluster is not None else ())},
        control_plane=runtime.control_plane.to_json(),
        protection=_protection_counts(cache),
        errors=dict(counters.errors),
        request_latency_buckets=list(counters.request_latency_buckets),
        request_latency_sum=counters.request_latency_sum,
        connections_active=len(runtime.connections.open) if runtime.connections is not None else 0,
        connections_accepted=runtime.connections.accepted if runtime.connections is not None else 0,
    )  # fmt: skip
    return snapshot


def _protection_counts(cache: CacheContext) -> dict[str, int]:
    counts: dict[str, int] = {}
    if cache.protection is not None:
        counts.update(cache.protection.refusals)
    busy = sum(site.origins.busy for site in cache.sites.sites)
    if busy:
        counts["origin_busy"] = busy
    return counts


def origin_snapshot(sites: SiteTable) -> list[dict[str, Any]]:
    """This worker's view of every origin: health and counters."""
    now = time.time()
    rows: list[dict[str, Any]] = []
    for site in sites.sites:
        for origin in site.origins.origins:
            rows.append({
                "site": site.name, "origin": origin.label, "state": origin.state_name(now),
                "backup": origin.settings.backup, "weight": origin.settings.weight,
                "since": origin.health.since, "last_error": origin.health.last_error,
                "in_flight": origin.in_flight, "requests": origin.requests, "failures": origin.failures,
                "latency_buckets": list(origin.latency_buckets), "latency_sum": origin.latency_sum,
            })  # fmt: skip
    return rows


def merge_origins(snapshots: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every worker's view of each origin, as one row: counters summed, the state the most recent
    change (by ``since``) says, and each worker's own state alongside."""
    merged: dict[tuple[str, str], dict[str, Any]] = {}
    for item in snapshots:
        pid = item.get("pid")
        for row in item.get("origins", []):
            ident = (str(row["site"]), str(row["origin"]))
            entry = merged.get(ident)
            if entry is None:
                zeros = {"in_flight": 0, "requests": 0, "failures": 0, "latency_sum": 0.0, "workers": {}}
                entry = merged[ident] = {**row, **zeros, "latency_buckets": [0] * len(row["latency_buckets"])}
            elif float(row["since"]) > float(entry["since"]):
                entry.update(state=row["state"], since=row["since"], last_error=row["last_error"])
            for name in ("in_flight", "requests", "failures", "latency_sum"):
                entry[name] += row[name]
            entry["latency_buckets"] = [a + b for a, b in zip(entry["latency_buckets"], row["latency_buckets"],
                                                              strict=False)]  # fmt: skip
            entry["workers"][str(pid)] = row["state"]
    for item in snapshots:  # what exited workers sent to each origin still counts (not their view of it)
        for key, counters in (item.get("origin_counters") or {}).items():
            site, _, origin = key.partition("\n")
            entry = merged.get((site, origin))
            if entry is None:
                continue  # an origin no longer configured
            for name in ("requests", "failures", "latency_sum"):
                entry[name] += counters[name]
            entry["latency_buckets"] = [a + b for a, b in zip(entry["latency_buckets"], counters["latency_buckets"],
                                                              strict=False)]  # fmt: skip
    return list(merged.values())


RETIRED = "retired.json"
# The counters a worker leaves behind when it exits (crash, reload, stop) — requests, bytes, statuses,
# errors, latency, connections, tier, peer and origin counters — are folded into RETIRED so that
# the edge's sums never go back: Prometheus reads a drop as a reset and the dashboard as a restart,
# and either turns the survivors' whole totals into a spike.
_RETIRED_NUMBERS = (
    "requests", "hits", "misses", "bytes_from_cache", "bytes_from_origin", "collapsed", "origin_latency_sum",
    "origin_latency_count", "request_latency_sum", "connections_accepted",
)  # fmt: skip
_RETIRED_MAPS = ("by_status", "by_code_class", "purges", "compressed", "errors", "protection")
_RETIRED_LISTS = ("origin_latency_buckets", "request_latency_buckets")


def _supervisor() -> str:
    return os.environ.get("EDGECACHE_SUPERVISOR_PID", "")


def _fold(total: dict[str, Any], snapshot: dict[str, Any]) -> None:
    for name in _RETIRED_NUMBERS:
        total[name] = total.get(name, 0) + snapshot.get(name, 0)
    for name in _RETIRED_MAPS:
        merged = total.setdefault(name, {})
        for key, value in (snapshot.get(name) or {}).items():
            merged[key] = merged.get(key, 0) + value
    for name in _RETIRED_LISTS:
        values = snapshot.get(name) or []
        mine = total.get(name) or [0] * len(values)
        if len(mine) == len(values):
            total[name] = [a + b for a, b in zip(mine, values, strict=True)]
    for tier, counters in (snapshot.get("tiers") or {}).items():  # counters only: sizes are the living's
        merged = total.setdefault("tiers", {}).setdefault(tier, {})
        for key, value in counters.items():
            if key not in ("objects", "bytes", "ready"):
                merged[key] = merged.get(key, 0) + value
    for peer, counters in (snapshot.get("peers") or {}).items():
        merged = total.setdefault("peers", {}).setdefault(peer, {})
        for key, value in counters.items():
            merged[key] = merged.get(key, 0) + value
    for row in snapshot.get("origins") or []:
        entry = total.setdefault("origin_counters", {}).setdefault(
            f"{row['site']}\n{row['origin']}",
            {"requests": 0, "failures": 0, "latency_sum": 0.0, "latency_buckets": [0] * len(row["latency_buckets"])},
        )
        for key in ("requests", "failures", "latency_sum"):
            entry[key] += row[key]
        if len(entry["latency_buckets"]) == len(row["latency_buckets"]):
            entry["latency_buckets"] = [a + b for a, b in zip(entry["latency_buckets"], row["latency_buckets"],
                                                              strict=True)]  # fmt: skip


def _retire(directory: Path, paths: list[Path], extra: dict[str, Any] | None = None) -> None:
    """Fold these exited workers' files (and ``extra``, this worker's last snapshot as it exits)
    into RETIRED, under a lock so that two workers never fold the same file twice."""
    import fcntl

    supervisor = _supervisor()
    with contextlib.suppress(OSError), open(directory / ".retire.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        total: dict[str, Any] = {}
        with contextlib.suppress(OSError, ValueError):
            total = json.loads((directory / RETIRED).read_text())
        if total.get("supervisor") != supervisor:
            total = {}  # a previous run of the edge: its counters began again with this one
        total["supervisor"] = supervisor
        for path in paths:
            with contextlib.suppress(OSError, ValueError):
                data = json.loads(path.read_text())
                path.unlink()  # gone under the lock: nobody folds it again
                if data.get("supervisor", supervisor) == supervisor:
                    _fold(total, data)
        if extra is not None:
            _fold(total, extra)
        temporary = directory / f".{RETIRED}.{os.getpid()}.tmp"
        temporary.write_text(json.dumps(total))
        os.replace(temporary, directory / RETIRED)


def collect_worker_stats(settings: EdgeSettings, runtime: EdgeRuntime) -> list[dict[str, Any]]:
    """Every live worker's last snapshot (this worker's fresh), and the counters of the workers
    that exited during this run of the edge (one snapshot marked ``retired``)."""
    snapshots = {os.getpid(): worker_snapshot(runtime)}
    directory = stats_dir(settings)
    retired: dict[str, Any] | None = None
    if directory.is_dir():
        exited: list[Path] = []
        for path in directory.glob("*.json"):
            if path.name == RETIRED:
                continue
            with contextlib.suppress(OSError, ValueError):
                data = json.loads(path.read_text())
                pid = int(data.get("pid", 0))
                if pid and pid not in snapshots and pid_alive(pid):
                    snapshots[pid] = data
                elif pid != os.getpid():
                    exited.append(path)
        if exited:
            _retire(directory, exited)
        with contextlib.suppress(OSError, ValueError):
            retired = json.loads((directory / RETIRED).read_text())
    items = list(snapshots.values())
    if retired is not None and retired.get("supervisor") == _supervisor():
        items.append({**retired, "retired": True})
    return items


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
    compressed: dict[str, int] = {}
    for item in snapshots:
        for name, count in item.get("compressed", {}).items():
            compressed[name] = compressed.get(name, 0) + int(count)
        for label, count in item.get("by_status", {}).items():
            by_status[label] = by_status.get(label, 0) + int(count)
        for label, count in item.get("by_code_class", {}).items():
            by_code[label] = by_code.get(label, 0) + int(count)
        for kind, count in item.get("purges", {}).items():
            purges[kind] = purges.get(kind, 0) + int(count)
    return {
        "workers": sum(1 for item in snapshots if not item.get("retired")),
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
        "compressed": compressed,
        "tiers": tiers,
        "evictions": sum(values.get("evictions", 0) for values in tiers.values()),
        "corrupt_discarded": sum(values.get("corrupt_discarded", 0) for values in tiers.values()),
        # client-side latency histogram (edgecache_request_seconds), bucket counts for these bounds
        "request_latency_bounds": list(REQUEST_LATENCY_BUCKETS),
        "request_latency_buckets": [
            sum(int(item.get("request_latency_buckets", [0] * (len(REQUEST_LATENCY_BUCKETS) + 1))[index])
                for item in snapshots if len(item.get("request_latency_buckets", [])) > index)
            for index in range(len(REQUEST_LATENCY_BUCKETS) + 1)
        ],
    }



class StatsCollector:
    """Turns the summed worker snapshots into Prometheus metric families at scrape time."""

    def __init__(self, snapshots: list[dict[str, Any]], edge: str, settings: EdgeSettings | None = None) -> None:
        self.snapshots = snapshots
        self.edge = edge
        self.settings = settings

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
        compressions = CounterMetricFamily(
            "edgecache_compressions", "Responses the edge compressed (once, then stored), by coding",
            labels=["edge", "coding"],
        )  # fmt: skip
        for name, count in summary["compressed"].items():
            compressions.add_metric([self.edge, name], count)
        yield compressions
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
        yield from self._operations()
        workers = GaugeMetricFamily("edgecache_workers_alive", "Worker processes answering", labels=["edge"])
        workers.add_metric([self.edge], summary["workers"])
        yield workers
        refusals = CounterMetricFamily(
            "edgecache_protection_refusals", "Requests and connections refused by [protection], by reason",
            labels=["edge", "reason"],
        )  # fmt: skip
        totals: dict[str, int] = {}
        for item in self.snapshots:
            for reason, count in item.get("protection", {}).items():
                totals[reason] = totals.get(reason, 0) + int(count)
        for reason, count in sorted(totals.items()):
            refusals.add_metric([self.edge, reason], count)
        yield refusals
        links = [item["control_plane"] for item in self.snapshots if item.get("control_plane", {}).get("state")
                 not in (None, "none")]  # fmt: skip
        if links:
            connected = GaugeMetricFamily(
                "edgecache_control_plane_connected",
                "Workers reading the shared purge log now (0: Redis unreachable; still serving)", labels=["edge"],
            )  # fmt: skip
            connected.add_metric([self.edge], sum(1 for link in links if link["state"] == "connected"))
            yield connected
            applied = GaugeMetricFamily("edgecache_control_plane_applied_seq",
                                        "Highest purge-log sequence this edge applied", labels=["edge"])  # fmt: skip
            applied.add_metric([self.edge], max(int(link.get("applied_seq") or 0) for link in links))
            yield applied
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
        yield from self._origins()

    def _operations(self) -> Any:
        """What an nginx/Varnish exporter would show: connections, client latency, capacity, build."""
        errors = CounterMetricFamily(
            "edgecache_errors", "Error answers the edge made itself, by status and cause (origin_unreachable, "
            "origin_timeout, loop_detected, origins_down, origin_busy…)", labels=["edge", "status", "reason"],
        )  # fmt: skip
        totals: dict[str, int] = {}
        for item in self.snapshots:
            for key, count in item.get("errors", {}).items():
                totals[key] = totals.get(key, 0) + int(count)
        for key, count in sorted(totals.items()):
            status, _, reason = key.partition(" ")
            errors.add_metric([self.edge, status, reason], count)
        yield errors
        active = GaugeMetricFamily("edgecache_connections_active", "Open client connections", labels=["edge"])
        active.add_metric([self.edge], sum(int(item.get("connections_active", 0)) for item in self.snapshots))
        yield active
        accepted = CounterMetricFamily("edgecache_connections_accepted", "Client connections accepted",
                                       labels=["edge"])  # fmt: skip
        accepted.add_metric([self.edge], sum(int(item.get("connections_accepted", 0)) for item in self.snapshots))
        yield accepted
        buckets = [0] * (len(REQUEST_LATENCY_BUCKETS) + 1)
        total = 0.0
        for item in self.snapshots:
            for index, count in enumerate(item.get("request_latency_buckets", [])):
                if index < len(buckets):
                    buckets[index] += int(count)
            total += float(item.get("request_latency_sum", 0.0))
        cumulative, running = [], 0
        for bound, count in zip([*map(str, REQUEST_LATENCY_BUCKETS), "+Inf"], buckets, strict=True):
            running += count
            cumulative.append((bound, running))
        latency = HistogramMetricFamily(
            "edgecache_request_seconds", "Client requests: first byte received to response sent (every request)",
            labels=["edge"],
        )  # fmt: skip
        latency.add_metric([self.edge], cumulative, total)
        yield latency
        if self.settings is not None:
            capacity = GaugeMetricFamily("edgecache_tier_capacity_bytes", "Configured capacity per tier (fill %)",
                                         labels=["edge", "tier"])  # fmt: skip
            cache = self.settings.cache
            capacity.add_metric([self.edge, "memory"], cache.memory_max_bytes * self.settings.workers)
            capacity.add_metric([self.edge, "disk"], cache.disk_max_bytes)
            yield capacity
        info = GaugeMetricFamily("edgecache_build_info", "This edge's version (always 1)", labels=["edge", "version"])
        info.add_metric([self.edge, package_version()], 1)
        yield info

    def _origins(self) -> Any:
        rows = merge_origins(self.snapshots)
        up = GaugeMetricFamily("edgecache_origin_up", "1 while the origin is up (backups: available)",
                               labels=["edge", "site", "origin"])  # fmt: skip
        requests = CounterMetricFamily("edgecache_origin_requests", "Requests sent to the origin",
                                       labels=["edge", "site", "origin"])  # fmt: skip
        errors = CounterMetricFamily("edgecache_origin_errors", "Connect errors, timeouts and 5xx answers",
                                     labels=["edge", "site", "origin"])  # fmt: skip
        latency = HistogramMetricFamily("edgecache_origin_request_seconds", "Time to the origin's response head",
                                        labels=["edge", "site", "origin"])  # fmt: skip
        for row in rows:
            labels = [self.edge, row["site"], row["origin"]]
            up.add_metric(labels, 0 if row["state"] == "down" else 1)
            requests.add_metric(labels, row["requests"])
            errors.add_metric(labels, row["failures"])
            cumulative, running = [], 0
            for bound, count in zip([*map(str, LATENCY_BUCKETS), "+Inf"], row["latency_buckets"], strict=False):
                running += count
                cumulative.append((bound, running))
            latency.add_metric(labels, cumulative, row["latency_sum"])
        yield from (up, requests, errors, latency)
        peers: dict[str, dict[str, int]] = {}
        for item in self.snapshots:
            for name, values in item.get("peers", {}).items():
                merged = peers.setdefault(name, {"requests": 0, "hits": 0, "failures": 0})
                for counter in merged:
                    merged[counter] += int(values.get(counter, 0))
        families = {
            "requests": CounterMetricFamily("edgecache_peer_requests", "Misses sent to the key's owner in the region",
                                            labels=["edge", "peer"]),
            "hits": CounterMetricFamily("edgecache_peer_hits", "Peer requests the owner answered from its cache",
                                        labels=["edge", "peer"]),
            "failures": CounterMetricFamily("edgecache_peer_failures",
                                            "Peer requests that failed (the origin was asked instead)",
                                            labels=["edge", "peer"]),
        }  # fmt: skip
        for name, values in peers.items():
            for counter, family in families.items():
                family.add_metric([self.edge, name], values[counter])
        yield from families.values()



async def publish_stats_forever(settings: EdgeSettings, runtime: EdgeRuntime) -> None:
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
        with contextlib.suppress(OSError):  # what this worker counted stays in the edge's sums
            _retire(directory, [path], worker_snapshot(runtime))




class EdgeProcessCollector:
    """``process_*`` of the whole edge — the supervisor and every worker — rather than of the
    worker that happened to answer the scrape: one worker's CPU counter would jump between
    workers from scrape to scrape and read as resets.  CPU (with the exited workers' share, so it
    never goes back), memory and open fds are summed; the start time is the oldest (the
    supervisor's)."""

    SUMMED = ("process_cpu_seconds_total", "process_resident_memory_bytes", "process_virtual_memory_bytes",
              "process_open_fds")  # fmt: skip

    def __init__(self, snapshots: list[dict[str, Any]], edge: str) -> None:
        pids = {int(item["pid"]) for item in snapshots if item.get("pid") and not item.get("retired")}
        supervisor = _supervisor()
        self.supervisor = int(supervisor) if supervisor.isdigit() else None
        if self.supervisor is not None:
            pids.add(self.supervisor)
        self.pids = sorted(pid for pid in pids if pid_alive(pid))
        self.edge = edge

    def _reaped_cpu(self) -> float:
        """CPU seconds of the supervisor's exited (reaped) workers — ``cutime + cstime`` — so the
        sum keeps rising when a worker exits instead of losing that worker's share."""
        if self.supervisor is None:
            return 0.0
        try:
            text = Path(f"/proc/{self.supervisor}/stat").read_text()
        except OSError:
            return 0.0
        fields = text[text.rindex(")") + 2:].split()  # after "pid (comm) "; fields[0] is field 3
        return (int(fields[13]) + int(fields[14])) / os.sysconf("SC_CLK_TCK")

    def collect(self) -> Any:

        sums: dict[str, float] = {}
        start: float | None = None
        max_fds: float | None = None
        for pid in self.pids:
            collector = ProcessCollector(pid=lambda pid=pid: pid, registry=None)  # type: ignore[misc]
            for family in collector.collect():
                for sample in family.samples:
                    if sample.name in self.SUMMED:
                        sums[sample.name] = sums.get(sample.name, 0.0) + sample.value
                    elif sample.name == "process_start_time_seconds":
                        start = sample.value if start is None else min(start, sample.value)
                    elif sample.name == "process_max_fds":
                        max_fds = sample.value if max_fds is None else min(max_fds, sample.value)
        helps = {
            "process_cpu_seconds_total": "CPU seconds of the edge's supervisor and workers, user and system",
            "process_resident_memory_bytes": "Resident memory of the edge's supervisor and workers",
            "process_virtual_memory_bytes": "Virtual memory of the edge's supervisor and workers",
            "process_open_fds": "Open file descriptors of the edge's supervisor and workers",
        }
        if "process_cpu_seconds_total" in sums:
            yield CounterMetricFamily("process_cpu_seconds", helps["process_cpu_seconds_total"],
                                      value=sums["process_cpu_seconds_total"] + self._reaped_cpu())  # fmt: skip
        for name in self.SUMMED[1:]:
            if name in sums:
                yield GaugeMetricFamily(name, helps[name], value=sums[name])
        if start is not None:
            yield GaugeMetricFamily("process_start_time_seconds", "When the edge's supervisor started (epoch)",
                                    value=start)  # fmt: skip
        if max_fds is not None:
            yield GaugeMetricFamily("process_max_fds", "The lowest open-file limit of the edge's processes",
                                    value=max_fds)  # fmt: skip
        processes = GaugeMetricFamily("edgecache_processes", "The edge's live processes (supervisor and workers)",
                                      labels=["edge"])  # fmt: skip
        processes.add_metric([self.edge], len(self.pids))
        yield processes
