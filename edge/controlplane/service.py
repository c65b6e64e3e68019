"""The control plane's engine: log a purge, fan it out, keep every edge in step.

**Ordered delivery per edge.**  An edge keeps only the *highest* cluster sequence it applied
(``edge.purge``), and replays ``GET /purges?after=<that>`` when it restarts.  If it ever applied
``N+1`` while ``N`` had failed, a restart would skip ``N`` for good — and ``/readyz`` reporting
``cluster_seq >= N`` would wrongly prove ``N`` applied.  So each edge has a lock and a watermark
(``applied_through``): a record is sent to an edge only after every earlier one was acknowledged,
and a fan-out that finds its edge behind first sends the missing records, in order.  With that
invariant the edge's ``cluster_seq`` *is* the watermark, and readyz-based confirmation is sound.

**A purge call** (:meth:`ControlPlane.purge`): append to the log (on disk first), then for every
enabled edge in parallel, within ``timeout`` for that edge: take its lock, send what it misses
up to this record, note the outcome.  Answer with per-edge results; never wait beyond the budget.

**The background loop**, every ``retry_interval``, for each edge behind the log: ask its
``/readyz`` (an edge that restarted has replayed the log itself — adopt the ``cluster_seq`` it
reports), then push the remaining records in order until one fails; try again next round.  An
edge whose missing records were deleted by retention first gets a hard purge-all carrying the last
deleted sequence: exactly what the edge itself does when its catch-up finds the log truncated.

Edge answers: ``200`` applied; ``400``/``413``/``422`` *rejected* — the edge will never accept
that body, so it is recorded as such and delivery moves on (retrying would block the edge
forever); anything else, a timeout or a connection error is a *failure*, retried until it works.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp import hdrs

from edge.controlplane.log import DB_NAME, ClusterPurge, ClusterPurgeLog, Delivery, EdgeStatus, edge_status
from edge.controlplane.models import ControlPlaneSettings, PurgeRequest
from edge.controlplane.redisurl import parse_purge_log_url
from edge.inventory import EdgeEntry, Inventory
from edge.overview import iso

__all__ = ["ControlPlane", "ControlPlaneCounters", "DeliveryError", "EdgeRejectedError"]

log = logging.getLogger("edge.controlplane")

PAGE = 500  # records read from the log at a time while catching an edge up
BACKGROUND_BATCH = 100  # pushes per lock hold in the background, so fan-outs are not starved
RECENT_RESULTS = 4096  # per edge, for answering a fan-out whose record another task delivered
REJECT_STATUSES = frozenset({400, 413, 422})


class DeliveryError(Exception):
    """An edge did not apply a purge; retried.  ``seq``: the record it was about, if any."""

    def __init__(self, message: str, seq: int | None = None) -> None:
        super().__init__(message)
        self.seq = seq


class EdgeRejectedError(DeliveryError):
    """The edge refused the body as invalid (400/413/422); recorded, not retried."""


@dataclass
class ControlPlaneCounters:
    """Plain counters for the router to export (Prometheus lives there).  Monotonic unless noted."""

    purges: dict[str, int] = field(default_factory=dict)  # by kind: urls, prefix, tags, all
    soft_purges: int = 0
    edge_applied: dict[str, int] = field(default_factory=dict)  # successful pushes, by edge
    edge_failures: dict[str, int] = field(default_factory=dict)  # failed attempts (push or readyz), by edge
    edge_rejections: dict[str, int] = field(default_factory=dict)  # 400/413/422 answers, by edge
    gap_purges: dict[str, int] = field(default_factory=dict)  # purge-alls sent over a retention gap
    background_rounds: int = 0
    readyz_polls: int = 0
    fanout_seconds_sum: float = 0.0
    fanout_count: int = 0

    @staticmethod
    def bump(counter: dict[str, int], key: str, by: int = 1) -> None:
        counter[key] = counter.get(key, 0) + by

    def snapshot(self) -> dict[str, Any]:
        return {
            "purges": dict(self.purges),
            "soft_purges": self.soft_purges,
            "edge_applied": dict(self.edge_applied),
            "edge_failures": dict(self.edge_failures),
            "edge_rejections": dict(self.edge_rejections),
            "gap_purges": dict(self.gap_purges),
            "background_rounds": self.background_rounds,
            "readyz_polls": self.readyz_polls,
            "fanout_seconds_sum": self.fanout_seconds_sum,
            "fanout_count": self.fanout_count,
        }


@dataclass
class _EdgeState:
    entry: EdgeEntry
    applied_through: int
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    failing: bool = False
    last_error: str | None = None
    last_attempt_at: float | None = None
    last_success_at: float | None = None
    reported_seq: int | None = None
    reported_log_id: str | None = None  # the log the edge's reported_seq counts in, when it says
    results: OrderedDict[int, Delivery] = field(default_factory=OrderedDict)

    @property
    def name(self) -> str:
        return self.entry.name

    def to_json(self, latest: int) -> dict[str, Any]:
        return {
            "applied_through": self.applied_through,
            "lag": max(0, latest - self.applied_through),
            "failing": self.failing,
            "last_error": self.last_error,
            "last_attempt_at": self.last_attempt_at,
            "last_attempt_at_iso": iso(self.last_attempt_at),
            "last_success_at": self.last_success_at,
            "last_success_at_iso": iso(self.last_success_at),
            "reported_seq": self.reported_seq,
            "reported_log_id": self.reported_log_id,
        }


def _describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _error_text(body: str) -> str:
    """The ``error`` of an edge's JSON error body, else the start of the body."""
    try:
        data = json.loads(body)
    except ValueError:
        return body.strip()[:200] or "(empty body)"
    if isinstance(data, dict) and "error" in data:
        return str(data["error"])[:500]
    return body.strip()[:200]


class ControlPlane:
    """Purge log + fan-out + background catch-up for the enabled edges of one inventory."""

    def __init__(self, inventory: Inventory, settings: ControlPlaneSettings) -> None:
        self.inventory = inventory
        self.settings = settings
        self.edges: list[EdgeEntry] = [edge for edge in inventory.edges if edge.enabled]
        self.counters = ControlPlaneCounters()
        self._log: ClusterPurgeLog | None = None
        self._session: aiohttp.ClientSession | None = None
        self._task: asyncio.Task[None] | None = None
        self._states: dict[str, _EdgeState] = {}
        self._unflushed: list[Delivery] = []
        self._flushing: list[Delivery] = []
        self._dirty: set[str] = set()
        self._flush_lock = asyncio.Lock()
        self._settled_seq = 0  # the highest sequence whose fan-out has finished

    # -- lifecycle -------------------------------------------------------------------------------

    @property
    def log(self) -> ClusterPurgeLog:
        if self._log is None:
            raise RuntimeError("the control plane is not started")
        return self._log

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            raise RuntimeError("the control plane is not started")
        return self._session

    async def start(self) -> None:
        """Open the log, load each edge's progress, open the HTTP client, start the background loop."""
        settings = self.settings
        directory, db_name = settings.state_dir, DB_NAME
        if settings.purge_log is not None:  # sqlite:///dir/file.db
            path = parse_purge_log_url(settings.purge_log).path
            assert path is not None
            directory, db_name = path.parent, path.name
        purge_log = await asyncio.to_thread(
            ClusterPurgeLog, directory, max_records=settings.max_records, max_age=settings.max_age, db_name=db_name
        )
        try:
            progress = await asyncio.to_thread(purge_log.ensure_edges, [edge.name for edge in self.edges])
        except BaseException:
            purge_log.close()
            raise
        self._log = purge_log
        self._settled_seq = purge_log.latest_seq
        self._states = {edge.name: _EdgeState(edge, progress[edge.name]) for edge in self.edges}
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0),
            timeout=aiohttp.ClientTimeout(total=settings.timeout),
        )
        self._task = asyncio.create_task(self._background(), name="controlplane-retries")
        lagging = [state.name for state in self._states.values() if state.applied_through < purge_log.latest_seq]
        log.info(
            "control plane: purge log at sequence %d (oldest %s), %d edges%s",
            purge_log.latest_seq,
            purge_log.oldest_seq,
            len(self._states),
            f", behind: {', '.join(lagging)}" if lagging else "",
        )

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        if self._log is not None:
            try:
                await self.flush()
            finally:
                self._log.close()
                self._log = None
        if self._session is not None:
            await self._session.close()
            self._session = None

    # -- the purge call --------------------------------------------------------------------------

    async def purge(self, request: PurgeRequest, idempotency_key: str | None = None) -> dict[str, Any]:
        """Log ``request``, fan it out to every enabled edge in parallel, return per-edge results.
        A repeated ``idempotency_key`` returns the purge it logged (fanned out again where missing)."""
        record, created = await asyncio.to_thread(self.log.append_once, request, idempotency_key)
        if created:
            self.counters.bump(self.counters.purges, record.kind)
            self.counters.soft_purges += int(record.soft)
        started = time.perf_counter()
        states = list(self._states.values())
        results = await asyncio.gather(*(self._fan_out_one(state, record, started) for state in states))
        self._settled_seq = max(self._settled_seq, record.seq)
        self.counters.fanout_count += 1
        self.counters.fanout_seconds_sum += time.perf_counter() - started
        await self.flush()
        edges = {state.name: result for state, result in zip(states, results, strict=True)}
        applied = sum(1 for result in results if result["status"] == "applied")
        return {
            "id": record.id,
            "seq": record.seq,
            "kind": record.kind,
            "soft": record.soft,
            "created_at": record.created_at,
            "created_at_iso": iso(record.created_at),
            "duplicate": not created,
            "edges": edges,
            "applied": applied,
            "failed": len(results) - applied,
        }

    async def _fan_out_one(self, state: _EdgeState, record: ClusterPurge, started: float) -> dict[str, Any]:
        error: str | None = None
        try:
            async with asyncio.timeout(self.settings.timeout):
                async with state.lock:
                    await self._advance(state, record.seq, probe=state.failing)
        except TimeoutError:
            error = f"timed out after {self.settings.timeout:g}s"
            if state.applied_through + 1 < record.seq:
                error += f" (edge behind: purge seq {state.applied_through + 1} not applied yet)"
            self._failed(state, error)
        except DeliveryError as exc:
            error = str(exc) if exc.seq == record.seq else f"not sent: {exc}"
        ms = round((time.perf_counter() - started) * 1000, 3)
        if state.applied_through < record.seq and error is not None:
            delivered = state.results.get(record.seq)
            if delivered is None or delivered.status != "failed" or delivered.error != error:
                self._save(state, Delivery(record.seq, state.name, "failed", None, error, time.time(), ms))
        return self._result(state, record.seq, ms, error)

    def _result(self, state: _EdgeState, seq: int, ms: float, error: str | None) -> dict[str, Any]:
        delivered = state.results.get(seq)
        if state.applied_through >= seq:
            if delivered is not None and delivered.status == "rejected":
                return {"status": "failed", "affected": None, "error": delivered.error, "ms": ms}
            affected = delivered.affected if delivered is not None and delivered.status == "applied" else None
            return {"status": "applied", "affected": affected, "error": None, "ms": ms}
        if error is None:
            error = delivered.error if delivered is not None else "not applied"
        return {"status": "failed", "affected": None, "error": error, "ms": ms}

    # -- delivery to one edge (caller holds the edge's lock) ------------------------------------

    async def _advance(self, state: _EdgeState, upto: int, *, probe: bool, max_pushes: int | None = None) -> bool:
        """Bring ``state`` up to ``upto`` in order; False when ``max_pushes`` ran out first."""
        if state.applied_through >= upto:
            return True
        if probe:
            reported = await self._probe(state)
            if reported is not None:
                self._adopt(state, *reported)
            if state.applied_through >= upto:
                return True
        pushes = 0
        while state.applied_through < upto:
            if max_pushes is not None and pushes >= max_pushes:
                return False
            limit = PAGE if max_pushes is None else min(PAGE, max_pushes - pushes)
            records = await asyncio.to_thread(self.log.records_between, state.applied_through, upto, limit)
            if not records or records[0].seq > state.applied_through + 1:
                await self._push_gap(state, records[0].seq - 1 if records else upto)
                pushes += 1
                continue
            for record in records:
                await self._push(state, record)
                pushes += 1
        return True

    def _adopt(self, state: _EdgeState, reported: int, log_id: str | None) -> None:
        """The edge says it applied everything through ``reported``; believe it within the log's range,
        and only when it counts in this log (an edge that followed a log since lost counts in that)."""
        previous, state.reported_seq = state.reported_seq, reported
        previous_log, state.reported_log_id = state.reported_log_id, log_id
        if log_id is not None and log_id != self.log.log_id:
            if previous_log != log_id:
                log.warning("edge %s counts its purges in another log (%s); sending it this one's", state.name, log_id)
            return
        latest = self.log.latest_seq
        if reported > latest:
            if previous == reported:
                return  # already said
            log.warning(
                "edge %s reports cluster_seq %d beyond this log's latest %d (was the log reset?); ignoring it",
                state.name,
                reported,
                latest,
            )
            return
        if reported > state.applied_through:
            log.info("edge %s confirmed purges %d..%d itself", state.name, state.applied_through + 1, reported)
            state.applied_through = reported
            state.failing = False
            state.last_success_at = time.time()
            self._dirty.add(state.name)

    async def _probe(self, state: _EdgeState) -> tuple[int, str | None] | None:
        """``GET /readyz``: the edge's ``cluster_seq`` and the log it counts in, when ready (None if
        it does not say)."""
        self.counters.readyz_polls += 1
        state.last_attempt_at = time.time()
        try:
            async with self.session.get(f"{state.entry.admin_url}/readyz", headers=self._edge_headers()) as response:
                text = await response.text()
                if response.status != 200:
                    reason = _error_text(text) if response.status != 503 else _reason(text)
                    message = "edge not ready" if response.status == 503 else f"readyz answered HTTP {response.status}"
                    raise DeliveryError(f"{message}: {reason}" if reason else message)
        except aiohttp.ClientError as exc:
            raise self._failed(state, _describe(exc)) from None
        except TimeoutError:
            raise self._failed(state, f"readyz timed out after {self.settings.timeout:g}s") from None
        except DeliveryError as exc:
            raise self._failed(state, str(exc)) from None
        try:
            data = json.loads(text)
        except ValueError:
            return None
        if not isinstance(data, dict):
            return None
        value, log_id = data.get("cluster_seq"), data.get("cluster_log_id")
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            return None
        return value, log_id if isinstance(log_id, str) and log_id else None

    async def _push(self, state: _EdgeState, record: ClusterPurge) -> None:
        started = time.perf_counter()
        at = time.time()
        try:
            affected = await self._post(state, {**record.edge_body(), "log_id": self.log.log_id})
        except EdgeRejectedError as exc:
            ms = round((time.perf_counter() - started) * 1000, 3)
            log.warning("edge %s rejected purge %s (seq %d): %s", state.name, record.id, record.seq, exc)
            self.counters.bump(self.counters.edge_rejections, state.name)
            self._save(state, Delivery(record.seq, state.name, "rejected", None, str(exc), at, ms))
            state.applied_through = record.seq
            self._dirty.add(state.name)
            return
        except DeliveryError as exc:
            ms = round((time.perf_counter() - started) * 1000, 3)
            self._failed(state, str(exc))
            self._save(state, Delivery(record.seq, state.name, "failed", None, str(exc), at, ms))
            raise DeliveryError(str(exc), record.seq) from None
        ms = round((time.perf_counter() - started) * 1000, 3)
        self._save(state, Delivery(record.seq, state.name, "applied", affected, None, at, ms))
        self._succeeded(state, record.seq)

    async def _push_gap(self, state: _EdgeState, through: int) -> None:
        """The records after the edge's watermark are gone: a hard purge-all stands in for them."""
        first = state.applied_through + 1
        body = {"all": True, "soft": False, "id": f"gap-{first}-{through}", "cluster_seq": through,
                "log_id": self.log.log_id}  # fmt: skip
        try:
            await self._post(state, body)
        except DeliveryError as exc:
            raise self._failed(state, f"purge-all over retention gap {first}..{through}: {exc}") from None
        log.warning("edge %s missed purges %d..%d deleted by retention: sent a purge-all", state.name, first, through)
        self.counters.bump(self.counters.gap_purges, state.name)
        self._succeeded(state, through)

    async def _post(self, state: _EdgeState, body: dict[str, Any]) -> int | None:
        state.last_attempt_at = time.time()
        try:
            async with self.session.post(
                f"{state.entry.admin_url}/purge", json=body, headers=self._edge_headers()
            ) as response:
                text = await response.text()
        except aiohttp.ClientError as exc:
            raise DeliveryError(_describe(exc)) from None
        except TimeoutError:
            raise DeliveryError(f"timed out after {self.settings.timeout:g}s") from None
        if response.status == 200:
            try:
                data = json.loads(text)
            except ValueError:
                return None
            affected = data.get("affected") if isinstance(data, dict) else None
            return affected if isinstance(affected, int) and not isinstance(affected, bool) else None
        if response.status in REJECT_STATUSES:
            raise EdgeRejectedError(f"rejected by the edge: HTTP {response.status}: {_error_text(text)}")
        raise DeliveryError(f"HTTP {response.status}: {_error_text(text)}")

    def _edge_headers(self) -> dict[str, str]:
        token = self.settings.edge_token
        return {hdrs.AUTHORIZATION: f"Bearer {token}"} if token else {}

    def _failed(self, state: _EdgeState, message: str) -> DeliveryError:
        if not state.failing or state.last_error != message:
            log.warning("edge %s: %s", state.name, message)
        state.failing = True
        state.last_error = message
        self.counters.bump(self.counters.edge_failures, state.name)
        return DeliveryError(message)

    def _succeeded(self, state: _EdgeState, seq: int) -> None:
        if state.failing:
            log.info("edge %s is applying purges again (through seq %d)", state.name, seq)
        state.applied_through = max(state.applied_through, seq)
        state.failing = False
        state.last_error = None
        state.last_success_at = time.time()
        self.counters.bump(self.counters.edge_applied, state.name)
        self._dirty.add(state.name)

    def _save(self, state: _EdgeState, delivery: Delivery) -> None:
        state.results[delivery.seq] = delivery
        state.results.move_to_end(delivery.seq)
        while len(state.results) > RECENT_RESULTS:
            state.results.popitem(last=False)
        self._unflushed.append(delivery)

    # -- background catch-up ---------------------------------------------------------------------

    async def _background(self) -> None:
        while True:
            try:
                await self.retry_round()
            except Exception:
                log.exception("control plane background round failed")
            await asyncio.sleep(self.settings.retry_interval)

    async def retry_round(self) -> None:
        """One background round: every edge behind a settled purge is probed and caught up."""
        self.counters.background_rounds += 1
        latest = self.log.latest_seq
        behind = [state for state in self._states.values() if state.applied_through < min(latest, self._settled_seq)]
        if behind:
            await asyncio.gather(*(self._catch_up(state, latest) for state in behind))
        if self.settings.max_age is not None:
            await asyncio.to_thread(self.log.prune)
        await self.flush()

    async def _catch_up(self, state: _EdgeState, upto: int) -> None:
        probe = True
        while True:
            try:
                async with state.lock:
                    done = await self._advance(state, upto, probe=probe, max_pushes=BACKGROUND_BATCH)
            except DeliveryError:
                return  # noted on the state; next round
            if done:
                return
            probe = False

    # -- persistence and reports -----------------------------------------------------------------

    async def flush(self) -> None:
        """Write delivery outcomes and watermarks to the log (in order; the last outcome wins)."""
        async with self._flush_lock:
            if not self._unflushed and not self._dirty:
                return
            self._flushing, self._unflushed = self._unflushed, []
            dirty, self._dirty = self._dirty, set()
            progress = {name: self._states[name].applied_through for name in dirty if name in self._states}
            try:
                await asyncio.to_thread(self.log.record_deliveries, self._flushing, progress)
            except Exception:
                log.exception("could not store delivery outcomes; keeping them for the next attempt")
                self._unflushed[:0] = self._flushing
                self._dirty |= dirty
                raise
            finally:
                self._flushing = []

    def _merge_unwritten(self, rows: dict[int, dict[str, Delivery]], first_seq: int, last_seq: int) -> None:
        """Overlay the delivery outcomes not written yet (they are newer than the stored rows).

        Runs on the event loop, which alone touches ``_flushing``/``_unflushed``.
        """
        for delivery in (*self._flushing, *self._unflushed):
            if first_seq <= delivery.seq <= last_seq:
                rows.setdefault(delivery.seq, {})[delivery.edge] = delivery

    def _statuses(self, seq: int, rows: dict[str, Delivery]) -> dict[str, EdgeStatus]:
        return {name: edge_status(seq, rows.get(name), state.applied_through) for name, state in self._states.items()}

    @staticmethod
    def _summary(statuses: dict[str, EdgeStatus]) -> dict[str, Any]:
        counts = {name: 0 for name in ("applied", "failed", "rejected", "pending")}
        for status in statuses.values():
            counts[status.status] += 1
        lagging = [name for name, status in statuses.items() if status.status in ("failed", "pending")]
        return {**counts, "lagging": lagging, "complete": counts["applied"] == len(statuses)}

    async def describe(self, purge_id: str) -> dict[str, Any] | None:
        """``GET /purges/<id>``: the record, where it stands on every edge, and who lags."""

        def lookup() -> tuple[ClusterPurge, dict[int, dict[str, Delivery]]] | None:
            record = self.log.get(purge_id)
            if record is None and purge_id.isascii() and purge_id.isdigit() and len(purge_id) <= 18:
                record = self.log.get_seq(int(purge_id))
            if record is None:
                return None
            return record, self.log.deliveries(record.seq, record.seq)

        found = await asyncio.to_thread(lookup)
        if found is None:
            return None
        record, rows = found
        self._merge_unwritten(rows, record.seq, record.seq)
        statuses = self._statuses(record.seq, rows.get(record.seq, {}))
        edges: dict[str, dict[str, Any]] = {}
        for name, edge in statuses.items():
            edges[name] = edge.to_json()
            if edge.status in ("failed", "pending"):
                edges[name]["current_error"] = self._states[name].last_error  # the latest attempt, maybe later
        return {
            **record.to_json(),
            "edges": edges,
            **self._summary(statuses),
            "latest_seq": self.log.latest_seq,
        }

    async def page(self, after: int, limit: int) -> dict[str, Any]:
        """``GET /purges?after=N``: what an edge that applied everything through N needs."""
        result = await asyncio.to_thread(self.log.page, after, limit)
        return result.to_json()

    async def overview(self, limit: int = 100) -> dict[str, Any]:
        """``GET /purges``: the newest records with a per-edge summary, and every edge's progress."""

        def read() -> tuple[list[ClusterPurge], dict[int, dict[str, Delivery]]]:
            records = self.log.recent(limit)
            rows = self.log.deliveries(records[-1].seq, records[0].seq) if records else {}
            return records, rows

        records, rows = await asyncio.to_thread(read)
        if records:
            self._merge_unwritten(rows, records[-1].seq, records[0].seq)
        latest = self.log.latest_seq
        items = []
        for record in records:
            summary = self._summary(self._statuses(record.seq, rows.get(record.seq, {})))
            item = record.to_json()
            del item["body"]
            items.append({**item, "summary": summary})
        return {
            "records": items,
            "latest_seq": latest,
            "oldest_seq": self.log.oldest_seq,
            "log_id": self.log.log_id,
            "backend": "sqlite",
            "edges": {name: state.to_json(latest) for name, state in self._states.items()},
        }

    def edge_lag(self) -> dict[str, int]:
        """Records each enabled edge has not confirmed yet (a gauge for the router)."""
        latest = self.log.latest_seq if self._log is not None else 0
        return {name: max(0, latest - state.applied_through) for name, state in self._states.items()}


def _reason(text: str) -> str:
    try:
        data = json.loads(text)
    except ValueError:
        return ""
    return str(data.get("reason") or "") if isinstance(data, dict) else ""
