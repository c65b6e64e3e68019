"""A site's origin servers, as one place to send requests to: balancing, health, failover and the
circuit breaker (Varnish's directors and probes, nginx's upstream block).

    send(request)
      ├─ usable primaries (up, or due a trial) — none: usable backups — none: the circuit is open
      │     → OriginsDown (503 + Retry-After) at once, no connection attempted
      ├─ pick one (edge.balance), send through its keep-alive pool
      ├─ the connection failed before a byte of an answer, or no answer in time, and the request
      │  is idempotent (or ``retry_non_idempotent`` with a body small enough to resend)
      │     → once more, on another origin
      └─ the answer: a 5xx counts against the origin's health, anything else for it

Each worker keeps its own view of health (``edge.health``): active checks run in every worker,
passive failures are seen where they happen, and changes are written to shared state files so a
restarted or reloaded worker starts from them.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Protocol

from yarl import URL

from edge import balance, health
from edge.config import OriginSettings, SiteSettings, UpstreamSettings
from edge.errors import EdgeError, OriginBusy, OriginsDown, OriginTimeout, OriginUnreachable
from edge.upstream import SAFE_RETRY_METHODS, InterimSink, OriginPool, OriginRequest, OriginResponse

log = logging.getLogger("edge.origins")

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
RESEND_LIMIT = 1024 * 1024  # bodies up to this size are kept to be resent (retry_non_idempotent)


@dataclass(eq=False)
class Origin:
    """One origin server of a site, in this worker: its pool, health and counters."""

    index: int
    settings: OriginSettings
    url: URL
    pool: OriginPool
    health: health.Health
    in_flight: int = 0
    requests: int = 0
    failures: int = 0
    latency_buckets: list[int] = field(default_factory=lambda: [0] * (len(LATENCY_BUCKETS) + 1))
    latency_sum: float = 0.0

    @property
    def label(self) -> str:
        return self.settings.url

    @property
    def name(self) -> str:
        """What clients may see (Cache-Status ``fwd-origin``): never the internal address."""
        return self.settings.name or f"origin-{self.index + 1}"

    def observe(self, seconds: float) -> None:
        index = next((i for i, bound in enumerate(LATENCY_BUCKETS) if seconds <= bound), -1)
        self.latency_buckets[index] += 1
        self.latency_sum += seconds

    def state_name(self, now: float) -> str:
        if self.health.state is health.State.DOWN:
            return "down"
        return "backup" if self.settings.backup else "up"


def tls_context(site: SiteSettings) -> ssl.SSLContext:
    """HTTPS to the origins: verified against the system's CAs (or ``ca_file``) unless ``tls_verify``
    is off; SNI and the name checked are the origin URL's host."""
    context = ssl.create_default_context(cafile=str(site.ca_file) if site.ca_file else None)
    if not site.tls_verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


class InflightLimit(Protocol):
    limit: int

    def acquire(self) -> bool: ...

    def release(self) -> None: ...


class OriginGroup:
    """The origins of one site (``edge.upstream.OriginRoute``)."""

    def __init__(self, site: SiteSettings, upstream: UpstreamSettings, state_dir: Path | None) -> None:
        self.site = site
        self.name = site.name
        self.state_dir = state_dir
        self.passive = site.health.passive
        tls = tls_context(site) if any(origin.url.startswith("https:") for origin in site.origins) else None
        now = time.time()
        self.origins: list[Origin] = []
        for index, spec in enumerate(site.origins):
            checked = site.health
            state = health.Health(checked.fall, checked.rise, checked.interval, active=checked.path is not None)
            if state_dir is not None:
                health.load_state(state_dir, site.name, spec.url, state, now)
            url = URL(spec.url)
            self.origins.append(Origin(index, spec, url, OriginPool(url, upstream, tls), state))
        self.balancer = balance.Balancer(site.balance, len(self.origins))
        self._checks: list[asyncio.Task[None]] = []
        self.limit: InflightLimit | None = None  # protection.max_origin_inflight, for the whole edge
        self.busy = 0  # requests refused by that limit

    # -- lifecycle -----------------------------------------------------------------------------
    def start(self) -> None:
        """Active health checks, when the site has a ``health.path``."""
        if self.site.health.path is not None:
            self._checks = [asyncio.ensure_future(self._check_forever(origin)) for origin in self.origins]

    async def close(self) -> None:
        for task in self._checks:
            task.cancel()
        if self._checks:
            await asyncio.gather(*self._checks, return_exceptions=True)
        for origin in self.origins:
            await origin.pool.close()

    # -- choosing --------------------------------------------------------------------------------
    def candidates(self, now: float, excluded: set[int]) -> list[Origin]:
        """Usable primaries; only if none, usable backups."""
        usable = [o for o in self.origins if o.index not in excluded and o.health.usable(now)]
        primaries = [o for o in usable if not o.settings.backup]
        if primaries:
            return primaries
        if any(not o.settings.backup and o.health.state is health.State.UP for o in self.origins):
            return []  # a primary is up but excluded (already tried): do not spill onto backups
        return [o for o in usable if o.settings.backup]

    def retry_after(self, now: float) -> int:
        """Seconds until an origin may be usable again (for ``Retry-After``)."""
        waits = [max(0.0, o.health.next_trial - now) for o in self.origins if not o.health.active]
        interval = self.site.health.interval
        return max(1, int(min(waits) + 0.999) if waits else int(interval + 0.999))

    # -- sending ---------------------------------------------------------------------------------
    async def send(self, request: OriginRequest, on_interim: InterimSink | None = None) -> OriginResponse:
        limit = self.limit
        if limit is None:
            return await self._send(request, on_interim)
        if not limit.acquire():
            self.busy += 1
            raise OriginBusy(
                f"site {self.name!r} has {limit.limit} origin requests in flight (max_origin_inflight); retry later",
                headers=(("Retry-After", "1"),),
            )  # fmt: skip
        try:
            response = await self._send(request, on_interim)
        except BaseException:
            limit.release()
            raise
        chained = response.on_release

        def released() -> None:  # the origin's connection is free again: so is the slot
            limit.release()
            if chained is not None:
                chained()

        response.on_release = released
        return response

    async def _send(self, request: OriginRequest, on_interim: InterimSink | None) -> OriginResponse:
        safe = request.method in SAFE_RETRY_METHODS
        resendable = request.body is None
        if request.body is not None and (safe or self.site.retry_non_idempotent):
            request, resendable = await _resendable(request)  # a body must be kept to be sent twice
        idempotent = resendable and (safe or request.body is None or self.site.retry_non_idempotent)
        relayed = False  # an interim response reached the client: no second attempt after that

        async def interim(status: int, reason: str, headers: list[tuple[str, str]]) -> None:
            nonlocal relayed
            relayed = True
            assert on_interim is not None
            await on_interim(status, reason, headers)

        tried: set[int] = set()
        last: EdgeError | None = None
        for attempt in range(2):
            now = time.time()
            candidates = self.candidates(now, tried)
            if not candidates:
                if last is not None:
                    raise last
                raise OriginsDown(
                    f"every origin of site {self.name!r} is down; retry later",
                    headers=(("Retry-After", str(self.retry_after(now))),),
                )  # fmt: skip
            origin = self._pick(candidates, request.affinity)
            tried.add(origin.index)
            try:
                return await self._send_to(origin, request, interim if on_interim is not None else None)
            except (OriginUnreachable, OriginTimeout) as exc:
                last = exc
                before = not relayed and (not isinstance(exc, OriginUnreachable) or exc.before_response)
                if not (before and idempotent and attempt == 0):
                    raise
                log.info("site %s: %s failed (%s); trying another origin", self.name, origin.label, exc.reason)
        assert last is not None
        raise last

    def _pick(self, candidates: list[Origin], affinity: str) -> Origin:
        chosen = self.balancer.pick(
            [balance.Candidate(o.index, o.label, o.settings.weight, o.in_flight) for o in candidates], affinity
        )
        return self.origins[chosen.index]

    async def _send_to(self, origin: Origin, request: OriginRequest, on_interim: InterimSink | None) -> OriginResponse:
        now = time.time()
        trial = origin.health.begin(now)
        origin.requests += 1
        origin.in_flight += 1
        started = time.monotonic()
        try:
            response = await origin.pool.request(request, on_interim)
        except (OriginUnreachable, OriginTimeout) as exc:
            origin.in_flight -= 1
            origin.failures += 1
            self._failed(origin, exc.reason, passive=True)
            raise
        except BaseException:
            origin.in_flight -= 1
            origin.health.trial_in_flight = False
            raise
        origin.observe(time.monotonic() - started)

        def released() -> None:
            origin.in_flight -= 1

        response.on_release = released
        if response.status >= 500:
            origin.failures += 1
            self._failed(origin, f"answered {response.status}", passive=True)
        else:
            self._request_succeeded(origin, trial)
        response.origin_label = origin.label
        response.origin_name = origin.name
        return response

    # -- health ----------------------------------------------------------------------------------
    def _failed(self, origin: Origin, reason: str, *, passive: bool) -> None:
        if passive and not self.passive and origin.health.state is health.State.UP:
            origin.health.trial_in_flight = False
            return
        if origin.health.failure(time.time(), reason):
            self._changed(origin, "is down")

    def _request_succeeded(self, origin: Origin, trial: bool) -> None:
        """A real request's good answer.  With active checks only the checks judge health (a
        request answered well must not hide failing checks, e.g. an origin being drained); without
        them it counts while up, and while down only if it was the trial (an answer to a request
        sent before the origin went down says nothing of it now)."""
        if origin.health.active:
            return
        if origin.health.state is health.State.UP or trial:
            self._succeeded(origin)

    def _succeeded(self, origin: Origin) -> None:
        if origin.health.success(time.time()):
            self._changed(origin, "is up again")

    def _changed(self, origin: Origin, what: str) -> None:
        """Log a state change once per edge: the worker that records it first in the shared state
        file logs it; the others, finding it recorded, stay quiet."""
        if self.state_dir is None or health.save_state(self.state_dir, self.name, origin.label, origin.health):
            reason = f": {origin.health.last_error}" if origin.health.state is health.State.DOWN else ""
            log.warning("site %s: origin %s %s%s", self.name, origin.label, what, reason)

    async def _check_forever(self, origin: Origin) -> None:
        checked = self.site.health
        assert checked.path is not None
        host = origin.pool.authority
        while True:
            try:
                status = await origin.pool.probe(checked.path, host, checked.timeout)
            except (OriginUnreachable, OriginTimeout) as exc:
                self._failed(origin, exc.reason, passive=False)
            except Exception as exc:  # a check must never stop checking: whatever broke is a failure
                self._failed(origin, f"health check failed: {exc!r}"[:200], passive=False)
            else:
                if status in checked.expect:
                    self._succeeded(origin)
                else:
                    self._failed(origin, f"health check answered {status}", passive=False)
            await asyncio.sleep(checked.interval)


async def _resendable(request: OriginRequest) -> tuple[OriginRequest, bool]:
    """With ``retry_non_idempotent``: read a small body into memory so it can be sent twice; a body
    larger than ``RESEND_LIMIT`` is streamed once as usual (and not retried)."""
    assert request.body is not None
    chunks = aiter(request.body)
    kept = bytearray()
    async for chunk in chunks:
        kept += chunk
        if len(kept) > RESEND_LIMIT:
            return replace(request, body=_rest(bytes(kept), chunks)), False
    return replace(request, body=ReplayBody(bytes(kept))), True


async def _rest(first: bytes, more: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    yield first
    async for item in more:
        yield item


class ReplayBody:
    """A request body that can be iterated more than once (each send reads it from the start)."""

    def __init__(self, body: bytes) -> None:
        self.body = body

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._chunks()

    async def _chunks(self) -> AsyncIterator[bytes]:
        if self.body:
            yield self.body
