"""Catching up with the cluster control plane before turning ready.

An edge that was down missed the purges the control plane sent meanwhile.  It asks
``GET {control_plane}/purges?after=N`` (N = the last cluster sequence it applied, kept in the purge
log on disk) and applies what it missed, in order.  If the control plane's log no longer reaches back
to N, everything stored so far is treated as purged (a hard purge-all), so a purged object can never
come back; so it is when the log is another one than the edge followed (its ``log_id``: a router
whose log was lost numbers its purges from 1 again).  Until this is done the edge reports not ready
(``/readyz``) and serves nothing it had stored before it started (``edge.purge.Purger``); it retries
until it succeeds.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import aiohttp
from aiohttp import hdrs

from edge.cache.context import CacheContext
from edge.runtime import EdgeRuntime
from edge.sites import purge_targets

log = logging.getLogger("edge.catchup")


def mark_caught_up(runtime: EdgeRuntime) -> None:
    if runtime.cache is not None:
        runtime.cache.purger.caught_up.set()
    runtime.not_ready_reason = ""
    runtime.ready.set()


async def catch_up_with_control_plane(runtime: EdgeRuntime, session: aiohttp.ClientSession) -> None:
    settings = runtime.settings
    cache = runtime.cache
    if settings.control_plane is None or cache is None:
        mark_caught_up(runtime)
        return
    if not settings.control_plane.lower().startswith(("http://", "https://")):
        from edge.purgestream import follow_purge_stream  # the shared log in Redis: read it directly

        await follow_purge_stream(runtime, settings.control_plane)
        return
    headers = {hdrs.AUTHORIZATION: f"Bearer {settings.control_plane_token}"} if settings.control_plane_token else {}
    base = settings.control_plane.rstrip("/")
    purge_log = cache.purger.log
    delay = 0.2
    while True:
        try:
            after = await purge_log.cluster_seq()
            async with session.get(
                f"{base}/purges", params={"after": str(after), "limit": "1000"}, headers=headers
            ) as response:
                if response.status != 200:
                    raise RuntimeError(f"control plane answered {response.status}")
                page = await response.json()
            log_id = page.get("log_id")
            if isinstance(log_id, str) and log_id and await cache.purger.follow_log(log_id):
                continue  # another log than the one this edge followed: everything went; from its start
            if page.get("truncated"):
                latest = int(page.get("latest_seq", after))
                log.warning("purge log truncated past %d: treating everything stored as purged", after)
                await cache.purger.purge("all", [], False, f"catch-up-{latest}", latest or None)
                continue
            records = page.get("records", [])
            for record in records:
                try:
                    await _apply(cache, record)
                except (ValueError, KeyError, TypeError) as exc:
                    # One unusable record must not keep the edge out of service forever: skipped, and
                    # its sequence recorded as passed (an empty purge).
                    log.error("skipping unusable cluster purge %r: %s", record.get("id"), exc)
                    seq = record.get("seq")
                    if isinstance(seq, int) and not isinstance(seq, bool):
                        await cache.purger.purge("urls", [], False, str(record.get("id")), seq)
            if not records or int(page.get("latest_seq", 0)) <= await purge_log.cluster_seq():
                mark_caught_up(runtime)
                log.info("caught up with the control plane at sequence %d", await purge_log.cluster_seq())
                return
        except (aiohttp.ClientError, TimeoutError, RuntimeError, ValueError, KeyError) as exc:
            runtime.not_ready_reason = f"catching up with the control plane: {exc}"
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)


async def _apply(cache: CacheContext, record: dict[str, Any]) -> None:
    site = record.get("site")
    kind, values = purge_targets(cache.sites, str(record.get("kind")), [str(v) for v in record.get("values") or []],
                                 None if site is None else str(site))  # fmt: skip
    await cache.purger.purge(kind, values, bool(record.get("soft")), str(record.get("id")), int(record["seq"]))  # type: ignore[arg-type]
