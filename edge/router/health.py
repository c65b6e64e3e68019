"""Edge health: poll every edge's admin ``/readyz``, with hysteresis, so one blip moves no clients.

Two parts, kept apart so the rules can be tested without sockets:

**The rules** — :class:`HealthState`, a frozen value with ``observe(ok) -> HealthState``:

==========  ===========  ===========================================================
state       observation  next state
==========  ===========  ===========================================================
unknown     success      up (immediately: the router is usable right after start)
unknown     failure      down once ``fall`` failures in a row were seen, else unknown
up          success      up
up          failure      down once ``fall`` failures in a row were seen, else up
down        success      up once ``rise`` successes in a row were seen, else down
down        failure      down
==========  ===========  ===========================================================

A success resets the failure count and a failure the success count, so only *consecutive*
results move an edge.  Only ``up`` is healthy: an edge that has not yet answered (``unknown``)
gets no clients, which is also what :func:`edge.router.select.select_edge` does with an edge the
health map does not mention.

**The poller** — :class:`HealthChecker`, a thin I/O loop: every ``interval`` seconds it sends
``GET {admin_url}/readyz`` to every enabled edge at once, with a per-request ``timeout``.  A 200
is a success (unless a JSON body says ``"ready": false``); a refused connection, a timeout or any
other status is a failure, recorded as ``last_error``.  ``/readyz`` rather than ``/healthz``:
an edge that is alive but not ready (still catching up on purges) must get no clients.  One
``aiohttp.ClientSession`` serves all checks; its connections are not reused
(``force_close``), so every check also proves the edge still accepts new connections, as
clients must.  :meth:`HealthChecker.start` runs the first round before returning, so the router
knows which edges are up when it starts answering.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal

import aiohttp

from edge.inventory import EdgeEntry
from edge.overview import iso

__all__ = ["READY_PATH", "EdgeHealth", "HealthChange", "HealthChecker", "HealthState", "State"]

log = logging.getLogger("edge.router.health")

READY_PATH = "/readyz"
USER_AGENT = "edgecache-router-health"
# A readiness answer is a small JSON object; more than this is not one.
_MAX_BODY = 64 * 1024

State = Literal["unknown", "up", "down"]

# How many recent state changes :attr:`HealthChecker.changes` keeps.
CHANGES_KEPT = 200


@dataclass(frozen=True, slots=True)
class HealthState:
    """One edge's position in the hysteresis rules of the module docstring; pure, no clock."""

    fall: int = 3
    rise: int = 2
    state: State = "unknown"
    consecutive_ok: int = 0
    consecutive_fail: int = 0

    def __post_init__(self) -> None:
        if self.fall < 1 or self.rise < 1:
            raise ValueError("fall and rise must be at least 1")

    @property
    def healthy(self) -> bool:
        return self.state == "up"

    def observe(self, ok: bool) -> HealthState:
        """The state after one more check result."""
        if ok:
            streak = self.consecutive_ok + 1
            state: State = "up" if self.state != "down" or streak >= self.rise else "down"
            return replace(self, state=state, consecutive_ok=streak, consecutive_fail=0)
        streak = self.consecutive_fail + 1
        state = "down" if self.state == "down" or streak >= self.fall else self.state
        return replace(self, state=state, consecutive_ok=0, consecutive_fail=streak)


@dataclass(frozen=True, slots=True)
class EdgeHealth:
    """What the router knows about one edge's health, for ``/health`` and the metrics.

    Times are wall-clock seconds since the epoch (``None``: never); ``last_change`` is when the
    state last changed (or when checking began, for ``unknown``).
    """

    name: str
    region: str
    enabled: bool
    state: State
    healthy: bool
    last_error: str | None
    last_change: float | None
    last_check: float | None
    last_latency_ms: float | None
    consecutive_ok: int
    consecutive_fail: int
    checks: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "region": self.region,
            "enabled": self.enabled,
            "state": self.state,
            "healthy": self.healthy,
            # an error is news only while the edge is not up; an old one would read as current
            "last_error": self.last_error if self.state != "up" else None,
            "last_change": self.last_change,
            "last_change_iso": iso(self.last_change),
            "last_check": self.last_check,
            "last_check_iso": iso(self.last_check),
            "last_latency_ms": self.last_latency_ms,
            "consecutive_ok": self.consecutive_ok,
            "consecutive_fail": self.consecutive_fail,
            "checks": self.checks,
        }


@dataclass(frozen=True, slots=True)
class HealthChange:
    """One state change, kept in :attr:`HealthChecker.changes` for ``/health`` and tests.

    ``streak`` is the run of results that caused it: successes for ``up``, failures for ``down``.
    """

    time: float
    edge: str
    before: State
    after: State
    streak: int
    error: str | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "time": self.time,
            "time_iso": iso(self.time),
            "edge": self.edge,
            "before": self.before,
            "after": self.after,
            "streak": self.streak,
            "error": self.error,
        }


@dataclass(slots=True)
class _Tracked:
    """The poller's mutable record of one edge around its pure :class:`HealthState`."""

    edge: EdgeEntry
    state: HealthState
    last_error: str | None = None
    last_change: float | None = None
    last_check: float | None = None
    last_latency_ms: float | None = None
    checks: int = 0


class HealthChecker:
    """Polls every enabled edge's ``/readyz`` and keeps a :class:`HealthState` per edge."""

    def __init__(
        self,
        edges: Sequence[EdgeEntry],
        *,
        interval: float = 1.0,
        timeout: float = 1.0,
        fall: int = 3,
        rise: int = 2,
        path: str = READY_PATH,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if interval <= 0 or timeout <= 0:
            raise ValueError("interval and timeout must be positive")
        self.interval = interval
        self.timeout = timeout
        self.path = path
        self._clock = clock
        initial = HealthState(fall=fall, rise=rise)
        now = clock()
        self._edges: dict[str, _Tracked] = {
            edge.name: _Tracked(
                edge,
                initial,
                last_error=None if edge.enabled else "disabled in the inventory; not checked",
                last_change=now,
            )
            for edge in edges
        }
        self._healthy: dict[str, bool] = {name: False for name in self._edges}
        self._session: aiohttp.ClientSession | None = None
        self._task: asyncio.Task[None] | None = None
        self.rounds = 0
        self.changes: deque[HealthChange] = deque(maxlen=CHANGES_KEPT)

    # --- what the router reads ---------------------------------------------------------------

    def healthy_map(self) -> dict[str, bool]:
        """Edge name → healthy (``up``), the input of :func:`edge.router.select.select_edge`."""
        return dict(self._healthy)

    def healthy_view(self) -> dict[str, bool]:
        """The live map itself, without a copy, for the per-request path; do not modify it."""
        return self._healthy

    def snapshot(self) -> dict[str, EdgeHealth]:
        """Every edge's health, in inventory order."""
        return {
            name: EdgeHealth(
                name=name,
                region=tracked.edge.region,
                enabled=tracked.edge.enabled,
                state=tracked.state.state,
                healthy=tracked.state.healthy,
                last_error=tracked.last_error,
                last_change=tracked.last_change,
                last_check=tracked.last_check,
                last_latency_ms=tracked.last_latency_ms,
                consecutive_ok=tracked.state.consecutive_ok,
                consecutive_fail=tracked.state.consecutive_fail,
                checks=tracked.checks,
            )
            for name, tracked in self._edges.items()
        }

    # --- applying results ----------------------------------------------------------------------

    def record(self, name: str, ok: bool, error: str | None = None, latency_ms: float | None = None) -> HealthState:
        """Apply one check result to edge ``name`` and return its new state."""
        tracked = self._edges[name]
        before = tracked.state
        after = before.observe(ok)
        now = self._clock()
        tracked.state = after
        tracked.checks += 1
        tracked.last_check = now
        tracked.last_latency_ms = latency_ms
        if not ok:
            tracked.last_error = error or "check failed"
        if after.state != before.state:
            tracked.last_change = now
            streak = after.consecutive_ok if ok else after.consecutive_fail
            self.changes.append(HealthChange(now, name, before.state, after.state, streak, None if ok else error))
            if after.state == "up":
                log.info("edge %s is up (%d successful check(s) in a row)", name, after.consecutive_ok)
            else:
                log.warning(
                    "edge %s is down after %d failed check(s) in a row: %s", name, after.consecutive_fail, error
                )
        self._healthy[name] = after.healthy
        return after

    # --- the I/O loop --------------------------------------------------------------------------

    async def start(self) -> None:
        """Open the session, run one round (so the first requests see real health), then poll."""
        if self._session is not None:
            raise RuntimeError("health checker already started")
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(force_close=True, limit=0),
            timeout=aiohttp.ClientTimeout(total=self.timeout),
            headers={"User-Agent": USER_AGENT},
            trust_env=False,
        )
        await self.check_round()
        self._task = asyncio.create_task(self._run(), name="edge-health")

    async def stop(self) -> None:
        """Stop polling and close the session; the last known states stay readable."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    async def _run(self) -> None:
        """One loop per enabled edge: each is checked every ``interval`` seconds on its own, so an edge
        that takes its whole ``timeout`` to answer is checked at that pace and holds up nobody else
        (a shared round waited for the slowest check)."""
        enabled = [tracked.edge for tracked in self._edges.values() if tracked.edge.enabled]
        loops = [asyncio.create_task(self._pace(edge, first=index == 0), name=f"edge-health-{edge.name}")
                 for index, edge in enumerate(enabled)]  # fmt: skip
        try:
            await asyncio.gather(*loops)
        finally:
            for each in loops:
                each.cancel()
            await asyncio.gather(*loops, return_exceptions=True)

    async def _pace(self, edge: EdgeEntry, *, first: bool) -> None:
        loop = asyncio.get_running_loop()
        next_check = loop.time() + self.interval
        while True:
            await asyncio.sleep(max(0.0, next_check - loop.time()))
            next_check = loop.time() + self.interval
            try:
                await self._check_and_record(edge)
            except Exception:  # pragma: no cover - a bug here must not stop health checking
                log.exception("health check of %s failed", edge.name)
            if first:
                self.rounds += 1  # as many as the first edge's checks: what /health calls rounds

    async def check_round(self) -> None:
        """Check every enabled edge once, concurrently, and record the results (the first round)."""
        edges = [tracked.edge for tracked in self._edges.values() if tracked.edge.enabled]
        await asyncio.gather(*(self._check_and_record(edge) for edge in edges))
        self.rounds += 1

    async def _check_and_record(self, edge: EdgeEntry) -> None:
        ok, error, latency_ms = await self._check(edge)
        self.record(edge.name, ok, error, latency_ms)

    async def _check(self, edge: EdgeEntry) -> tuple[bool, str | None, float]:
        """One ``GET /readyz``: (ok, error, latency in ms); never raises."""
        session = self._session
        if session is None:
            raise RuntimeError("health checker not started")
        started = time.perf_counter()
        try:
            async with session.get(edge.admin_url + self.path, allow_redirects=False) as response:
                body = await response.content.read(_MAX_BODY)
                status = response.status
        except TimeoutError:
            return False, f"timeout after {self.timeout:g}s", _ms(started)
        except (aiohttp.ClientError, OSError) as exc:
            return False, f"{type(exc).__name__}: {exc}", _ms(started)
        latency = _ms(started)
        if status != 200:
            return False, f"HTTP {status} from {self.path}", latency
        if _says_not_ready(body):
            return False, f'{self.path} answered 200 with "ready": false', latency
        return True, None, latency


def _ms(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 3)


def _says_not_ready(body: bytes) -> bool:
    """A JSON object with ``"ready": false``; any other body (or none) is taken at its 200."""
    try:
        data = json.loads(body)
    except ValueError:
        return False
    return isinstance(data, dict) and data.get("ready") is False
