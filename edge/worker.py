"""One edge worker: the public listener (our front end serving the cache), the admin API (aiohttp),
and everything they share, built in order and torn down in reverse.

The same :class:`EdgeWorker` runs inside a forked worker process (``serve_worker``, on sockets the
supervisor bound) and inside tests (on fresh loopback ports).
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import ssl
from collections.abc import Callable
from pathlib import Path

from aiohttp import ClientSession, web

from edge import signals
from edge.accesslog import AccessLog, reopen_log_files
from edge.admin import create_admin_app
from edge.cache import crossfill
from edge.cache.coalesce import KeyLocks
from edge.cache.context import CacheContext
from edge.cache.driver import Cache
from edge.catchup import catch_up_with_control_plane
from edge.cluster import Cluster, build_cluster
from edge.config import ConfigError, EdgeSettings
from edge.protection import Protection, build_protection
from edge.purge import PurgeLog, Purger
from edge.runtime import EdgeRuntime
from edge.server.protocol import Listener, listen
from edge.sites import SiteTable, build_site
from edge.store.disk import DiskStore
from edge.store.memory import MemoryStore
from edge.store.tiered import TieredStore
from edge.tls import server_ssl_context

log = logging.getLogger("edge.worker")

SUPERVISOR_PID_ENV = "EDGECACHE_SUPERVISOR_PID"
Reloader = Callable[[], EdgeSettings]
_reloader: Reloader | None = None


def set_reloader(reloader: Reloader | None) -> None:
    """The supervisor's way to re-read the configuration, inherited by forked workers."""
    global _reloader
    _reloader = reloader


def request_reload() -> tuple[bool, str]:
    """For the admin API: validate the configuration, then ask the supervisor to apply it (SIGHUP)."""
    supervisor_pid = os.environ.get(SUPERVISOR_PID_ENV)
    if _reloader is None or not supervisor_pid:
        return False, "not running under the edge supervisor"
    try:
        _reloader()
    except ConfigError as exc:
        return False, str(exc)
    os.kill(int(supervisor_pid), signal.SIGHUP)
    return True, "reload requested"


def create_ssl_context(settings: EdgeSettings) -> ssl.SSLContext | None:
    """A server TLS context from ``tls_cert``/``tls_key``, or None for plain HTTP."""
    return server_ssl_context(settings.tls_cert, settings.tls_key)


class EdgeWorker:
    def __init__(self, settings: EdgeSettings, node_name: str, runtime: EdgeRuntime | None = None) -> None:
        self.settings = settings
        self.node_name = node_name
        self.runtime = runtime or EdgeRuntime(settings, node_name)
        self.runtime.request_reload = request_reload
        self.session: ClientSession | None = None
        self.sites: SiteTable | None = None
        self.cluster: Cluster | None = None
        self.protection: Protection | None = None
        self.context: CacheContext | None = None
        self.service: Cache | None = None
        self.access_log: AccessLog | None = None
        self.listener: Listener | None = None
        self.admin_runner: web.AppRunner | None = None
        self._catch_up: asyncio.Task[None] | None = None
        self.stopped = False

    async def start(self, public: socket.socket | None = None, admin: socket.socket | None = None,
                    host: str = "127.0.0.1", port: int = 0) -> None:  # fmt: skip
        """Open the stores, then listen (``public``/``admin``: inherited sockets; else new ports on ``host``)."""
        settings = self.settings
        cache = settings.cache
        self.session = ClientSession()  # the control plane's client (catch-up), not the origin's
        cache_dir = Path(settings.cache_dir)
        self.sites = SiteTable([build_site(settings, site, cache_dir / "origins") for site in settings.site_list()])
        self.sites.start()
        self.protection = build_protection(settings, self.sites)
        self.cluster = build_cluster(settings)
        if self.cluster is not None:
            await self.cluster.start()
        memory = MemoryStore(cache.memory_max_bytes, cache.memory_max_object_bytes) if cache.memory_max_bytes else None
        disk: DiskStore | None = None
        if cache.enabled:
            disk = DiskStore(cache_dir / "store", cache.disk_max_bytes, max_object_bytes=cache.max_object_bytes)
            await disk.start()
        else:
            memory = None
        store = TieredStore(memory, disk, cache.memory_max_object_bytes)
        self.context = CacheContext(
            settings=settings,
            node_name=self.node_name,
            sites=self.sites,
            store=store,
            purger=Purger(PurgeLog(cache_dir / "purge"), store),
            cluster=self.cluster,
            protection=self.protection,
            # Collapsing across workers needs a lock per key in a shared file; one worker needs none.
            key_locks=KeyLocks(str(cache_dir / "fill.locks")) if cache.enabled and settings.workers > 1 else None,
        )
        self.runtime.cache = self.context
        if self.context.key_locks is not None:
            await asyncio.to_thread(crossfill.sweep, cache_dir)
        if settings.access_log != "off":
            self.access_log = AccessLog(settings.access_log, settings.access_log_file)
        self.service = Cache(self.context, self.access_log)
        self._catch_up = asyncio.ensure_future(catch_up_with_control_plane(self.runtime, self.session))
        gate = self.protection if self.protection is not None and self.protection.connections is not None else None
        self.listener = await listen(
            self.service, settings.limits.server_limits(), sock=public, host=host, port=port,
            ssl=create_ssl_context(settings), gate=gate,
        )  # fmt: skip
        self.runtime.connections = self.listener.connections
        self.admin_runner = web.AppRunner(create_admin_app(settings, self.runtime), access_log=None,
                                          shutdown_timeout=1.0)  # fmt: skip
        await self.admin_runner.setup()
        if admin is not None:
            await web.SockSite(self.admin_runner, admin).start()
        else:
            await web.TCPSite(self.admin_runner, host, 0).start()

    @property
    def port(self) -> int:
        assert self.listener is not None
        return self.listener.port

    @property
    def admin_port(self) -> int:
        assert self.admin_runner is not None
        for address in self.admin_runner.addresses:
            return int(address[1])
        raise RuntimeError("admin API not listening")

    def reopen_logs(self) -> None:
        reopen_log_files()
        if self.access_log is not None:
            self.access_log.reopen()

    async def stop(self) -> None:
        """Stop accepting, drain in-flight requests (``drain_timeout``), close everything (once)."""
        if self.stopped:
            return
        self.stopped = True
        settings = self.settings
        if self.listener is not None:
            await self.listener.close(settings.drain_timeout)
        if self.admin_runner is not None:
            await self.admin_runner.cleanup()
        if self._catch_up is not None:
            self._catch_up.cancel()
            await asyncio.gather(self._catch_up, return_exceptions=True)
        context = self.context
        if context is not None:
            for task in list(context.background):
                task.cancel()
            if context.background:
                await asyncio.gather(*context.background, return_exceptions=True)
            await context.purger.close()
            if context.key_locks is not None:
                context.key_locks.close()
            if context.store.disk is not None:
                await context.store.disk.close()
            context.purger.log.close()
        if self.access_log is not None:
            self.access_log.close()
        if self.session is not None:
            await self.session.close()
        if self.sites is not None:
            await self.sites.close()
        if self.cluster is not None:
            await self.cluster.close()
        if self.protection is not None:
            self.protection.close()


async def serve_worker(settings: EdgeSettings, node_name: str, public: socket.socket, admin: socket.socket) -> None:
    """Run one worker on the inherited sockets until SIGTERM/SIGQUIT, then drain."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    worker = EdgeWorker(settings, node_name)
    # Ctrl-C and HUP reach the supervisor, which drains or replaces us; TERM/QUIT (from it) drain.
    signals.install(loop, stop.set, reopen_logs=worker.reopen_logs, stop_signals=(signal.SIGTERM, signal.SIGQUIT))
    loop.add_signal_handler(signal.SIGINT, lambda: None)
    supervisor_pid = int(os.environ.get(SUPERVISOR_PID_ENV, "0"))
    orphan_watch = asyncio.ensure_future(signals.watch_parent(supervisor_pid, stop.set)) if supervisor_pid else None
    await worker.start(public, admin)
    await stop.wait()
    if settings.shutdown_grace:
        # Report not-ready (so routers and load balancers stop sending clients) while still serving,
        # then stop accepting and drain.
        worker.runtime.ready.clear()
        worker.runtime.not_ready_reason = "shutting down"
        await asyncio.sleep(settings.shutdown_grace)
    await worker.stop()
    if orphan_watch is not None:
        orphan_watch.cancel()
