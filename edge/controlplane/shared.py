"""The control plane when the purge log is shared in Redis: routers only append, edges read.

Any number of routers run this with the same settings and no files of their own.  ``purge``
appends to the stream (one Lua call: a sequence, an id, idempotency) and then waits, at most
``timeout``, for the enabled edges' acknowledgements — which the edges write to Redis themselves
after applying the purge they read with ``XREAD BLOCK`` — so its answer says, per edge, applied or
still pending, exactly as the embedded control plane's fan-out does.  Nothing is pushed to edges:
an edge that was away replays the stream from where it stopped before it turns ready.

When Redis cannot be reached every call raises :class:`PurgeLogUnavailable` (answered ``503``):
a purge is never reported as logged when it was not.  ``reachable`` and ``last_error`` feed the
router's ``/readyz``-independent metrics (redirects do not need Redis).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

from edge.controlplane.log import ClusterPurge, Delivery, EdgeStatus, edge_status
from edge.controlplane.models import ControlPlaneSettings, PurgeRequest
from edge.controlplane.purgelog import PurgeLog, PurgeLogUnavailable
from edge.controlplane.service import ControlPlaneCounters
from edge.inventory import EdgeEntry, Inventory
from edge.overview import iso

__all__ = ["SharedControlPlane"]

log = logging.getLogger("edge.controlplane")

POLL_FIRST_S = 0.002  # acknowledgements arrive within milliseconds on a LAN: look again soon …
POLL_MAX_S = 0.05  # … then less often
PRUNE_EVERY_S = 10.0


class SharedControlPlane:
    """Purges appended to a shared log; per-edge status from the edges' own acknowledgements."""

    def __init__(self, inventory: Inventory, settings: ControlPlaneSettings, purge_log: PurgeLog) -> None:
        self.inventory = inventory
        self.settings = settings
        self.log = purge_log
        self.edges: list[EdgeEntry] = [edge for edge in inventory.edges if edge.enabled]
        self.counters = ControlPlaneCounters()
        self.reachable: bool | None = None  # None until the first call
        self.last_error: str | None = None
        self._lag: dict[str, int] = {edge.name: 0 for edge in self.edges}
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self.log.start()
        self._task = asyncio.create_task(self._housekeeping(), name="purge-log-housekeeping")
        log.info("control plane: purge log %s, shared (routers append, edges read)", self.log.url.shown)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        await self.log.close()

    def _noted(self, error: PurgeLogUnavailable | None) -> None:
        """Log a change of reachability once, not every call."""
        if error is None:
            if self.reachable is False:
                log.warning("purge log %s reachable again", self.log.url.shown)
            self.reachable, self.last_error = True, None
            return
        if self.reachable is not False:
            log.error("%s", error)
        self.reachable, self.last_error = False, str(error)

    async def _guard(self, call: Any) -> Any:
        try:
            result = await call
        except PurgeLogUnavailable as exc:
            self._noted(exc)
            raise
        self._noted(None)
        return result

    async def _housekeeping(self) -> None:
        """Retention, and the lag gauge, every few seconds (idempotent across routers)."""
        while True:
            try:
                await self._guard(self.log.prune())
                await self._refresh_lag()
            except PurgeLogUnavailable:
                pass
            except Exception:
                log.exception("purge log housekeeping failed")
            await asyncio.sleep(min(PRUNE_EVERY_S, self.settings.retry_interval * 5))

    async def _refresh_lag(self) -> None:
        latest = await self._guard(self.log.latest_seq())
        progress = await self._guard(self.log.progress())
        self._lag = {edge.name: max(0, latest - progress.get(edge.name, 0)) for edge in self.edges}

    # -- the purge call --------------------------------------------------------------------------
    async def purge(self, request: PurgeRequest, idempotency_key: str | None = None) -> dict[str, Any]:
        started = time.perf_counter()
        record, created = await self._guard(self.log.append(request, idempotency_key))
        if created:
            self.counters.bump(self.counters.purges, record.kind)
            self.counters.soft_purges += int(record.soft)
        deadline = time.monotonic() + self.settings.timeout
        progress: dict[str, int] = {}
        pause = POLL_FIRST_S
        while True:
            try:
                progress = await self._guard(self.log.progress())
            except PurgeLogUnavailable:
                break  # logged; who applied it shows later in GET /purges/<id>
            if all(progress.get(edge.name, 0) >= record.seq for edge in self.edges) or time.monotonic() >= deadline:
                break
            await asyncio.sleep(pause)
            pause = min(pause * 2, POLL_MAX_S)
        rows: dict[str, Delivery] = {}
        with contextlib.suppress(PurgeLogUnavailable):
            rows = (await self._guard(self.log.deliveries(record.seq, record.seq))).get(record.seq, {})
        self.counters.fanout_count += 1
        self.counters.fanout_seconds_sum += time.perf_counter() - started
        edges: dict[str, dict[str, Any]] = {}
        for edge in self.edges:
            through = progress.get(edge.name, 0)
            row = rows.get(edge.name)
            if through >= record.seq:
                edges[edge.name] = {"status": "applied", "affected": row.affected if row else None, "error": None,
                                    "ms": row.ms if row else None}  # fmt: skip
            else:
                edges[edge.name] = {
                    "status": "pending", "affected": None, "ms": None,
                    "error": f"not applied within {self.settings.timeout:g}s (edge at purge seq {through})",
                }  # fmt: skip
        applied = sum(1 for result in edges.values() if result["status"] == "applied")
        return {
            "id": record.id, "seq": record.seq, "kind": record.kind, "soft": record.soft,
            "created_at": record.created_at, "created_at_iso": iso(record.created_at),
            "duplicate": not created, "edges": edges,
            "applied": applied, "failed": len(edges) - applied,
        }  # fmt: skip

    # -- reports ---------------------------------------------------------------------------------
    def _statuses(self, seq: int, rows: dict[str, Delivery], progress: dict[str, int]) -> dict[str, EdgeStatus]:
        return {edge.name: edge_status(seq, rows.get(edge.name), progress.get(edge.name, 0)) for edge in self.edges}

    @staticmethod
    def _summary(statuses: dict[str, EdgeStatus]) -> dict[str, Any]:
        counts = {name: 0 for name in ("applied", "failed", "rejected", "pending")}
        for status in statuses.values():
            counts[status.status] += 1
        lagging = [name for name, status in statuses.items() if status.status in ("failed", "pending")]
        return {**counts, "lagging": lagging, "complete": counts["applied"] == len(statuses)}

    async def describe(self, purge_id: str) -> dict[str, Any] | None:
        record: ClusterPurge | None = await self._guard(self.log.get(purge_id))
        if record is None:
            return None
        rows = (await self._guard(self.log.deliveries(record.seq, record.seq))).get(record.seq, {})
        progress = await self._guard(self.log.progress())
        statuses = self._statuses(record.seq, rows, progress)
        return {
            **record.to_json(),
            "edges": {name: status.to_json() for name, status in statuses.items()},
            **self._summary(statuses),
            "latest_seq": await self._guard(self.log.latest_seq()),
        }

    async def page(self, after: int, limit: int) -> dict[str, Any]:
        page = await self._guard(self.log.page(after, limit))
        result: dict[str, Any] = page.to_json()
        return result

    async def overview(self, limit: int = 100) -> dict[str, Any]:
        records: list[ClusterPurge] = await self._guard(self.log.recent(limit))
        rows = await self._guard(self.log.deliveries(records[-1].seq, records[0].seq)) if records else {}
        progress = await self._guard(self.log.progress())
        latest = await self._guard(self.log.latest_seq())
        items = []
        for record in records:
            item = record.to_json()
            del item["body"]
            item["summary"] = self._summary(self._statuses(record.seq, rows.get(record.seq, {}), progress))
            items.append(item)
        edges = {
            edge.name: {"applied_through": progress.get(edge.name, 0),
                        "lag": max(0, latest - progress.get(edge.name, 0))}
            for edge in self.edges
        }  # fmt: skip
        self._lag = {name: item["lag"] for name, item in edges.items()}
        return {
            "records": items, "latest_seq": latest, "oldest_seq": await self._guard(self.log.oldest_seq()),
            "log_id": await self._guard(self.log.log_id()), "backend": "redis", "edges": edges,
        }  # fmt: skip

    def edge_lag(self) -> dict[str, int]:
        """Records each enabled edge has not acknowledged, as of the last look."""
        return dict(self._lag)
