"""Process model: one supervisor, N worker processes sharing the listening sockets.

The supervisor binds the public and admin sockets itself and forks workers that inherit them.
DESIGN.md suggests SO_REUSEPORT; a socket bound once and shared is used instead because (a) it
works with ``--listen HOST:0`` (every worker serves the one port the kernel picked), and (b) the
accept backlog belongs to the shared socket, so connections queued while a worker dies are served
by its siblings instead of being reset with the dead worker's own reuseport socket.  The
supervisor serves nothing itself: it restarts workers that die and forwards SIGTERM/SIGINT.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import multiprocessing.connection
import os
import shutil
import signal
import socket
import sys
import time
import urllib.request
from collections.abc import Callable
from multiprocessing.context import ForkProcess
from pathlib import Path
from types import FrameType
from typing import Any

from edge import sdnotify, signals
from edge.accesslog import reopen_log_files
from edge.config import ConfigError, EdgeSettings
from edge.worker import SUPERVISOR_PID_ENV, serve_worker, set_reloader

log = logging.getLogger("edge.supervisor")

RESTART_WINDOW_S = 30.0
RESTARTS_BEFORE_BACKOFF = 5


class ListenError(Exception):
    """A listening socket could not be opened (address in use, permission...)."""


def bind_listener(host: str, port: int, setting: str = "listen") -> socket.socket:
    """A listening TCP socket, IPv4 or IPv6 as the host says, ready to be shared by workers;
    ``ListenError`` names the setting to change."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        family, kind, proto, _, address = infos[0]
        sock = socket.socket(family, kind, proto)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind(address)
        sock.listen(4096)
        sock.setblocking(False)
        return sock
    except OSError as exc:
        flag = "--" + setting.replace("_", "-")
        raise ListenError(
            f"cannot listen on {host}:{port} ({setting} = \"{host}:{port}\", or {flag}): {exc.strerror or exc}"
        ) from exc


def url_of(sock: socket.socket, scheme: str = "http") -> str:
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    return f"{scheme}://{shown}:{port}"


def worker_main(settings: EdgeSettings, node_name: str, public: socket.socket, admin: socket.socket) -> None:
    """Entry point of a forked worker process."""
    # Until the event loop installs its handlers, no operator signal may kill us half-started:
    # the supervisor's handlers were inherited with the fork.
    for signum in (signal.SIGINT, signal.SIGHUP, signal.SIGUSR1, *signals.IGNORED_SIGNALS):
        signal.signal(signum, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGQUIT, signal.SIG_DFL)
    supervisor_pid = os.environ.get(SUPERVISOR_PID_ENV)
    if supervisor_pid:
        signals.die_with_parent(int(supervisor_pid))
    configure_logging(settings.log_level, settings.log_file)
    # uvloop by default: the front end's zero-copy sendfile works on either loop (edge.server.exchange).
    if settings.event_loop == "asyncio":
        asyncio.run(serve_worker(settings, node_name, public, admin))
        return
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        asyncio.run(serve_worker(settings, node_name, public, admin))
    else:
        uvloop.run(serve_worker(settings, node_name, public, admin))


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=0.5) as response:
            return bool(response.status == 200)
    except (OSError, ValueError):
        return False


def configure_logging(level: str, log_file: Path | None = None) -> None:
    """The edge's own messages: stderr, or ``log_file`` (appended; SIGUSR1 reopens it, for logrotate)."""
    target: dict[str, Any] = (
        {"filename": str(log_file), "filemode": "a"} if log_file is not None else {"stream": sys.stderr}
    )
    logging.basicConfig(
        level=level.upper(),
        format="%(asctime)s %(process)d %(name)s %(levelname)s %(message)s",
        force=True,
        **target,
    )


class Supervisor:
    """Keeps ``settings.workers`` workers alive until told to stop; SIGHUP reloads the configuration.

    A reload validates the new configuration first and keeps the old one if it is invalid.  A
    valid one is applied by a rolling replacement: new workers start on the same sockets, then the
    old ones get SIGTERM and drain their in-flight requests, so no connection is refused and the
    disk cache (shared by both generations) survives.  The listening addresses cannot change
    without a restart; a reload that changes them keeps the old ones and says so.
    """

    def __init__(self, settings: EdgeSettings, reloader: Callable[[], EdgeSettings] | None = None) -> None:
        self.settings = settings
        self.reloader = reloader
        self.stopping = False
        self.node_name = settings.name or ""
        self.reload_requested = False
        self.reopen_requested = False
        self.ignored_signal: int | None = None
        self.workers: dict[int, ForkProcess] = {}
        self.retiring: list[ForkProcess] = []
        self.restart_times: list[float] = []
        self.context = multiprocessing.get_context("fork")

    def _request_stop(self, signum: int, frame: FrameType | None) -> None:
        self.stopping = True

    def _origins(self) -> str:
        sites = self.settings.site_list()
        if self.settings.origin is not None and len(sites) == 1:
            return f"origin {self.settings.origin}"
        return f"{len(sites)} site(s): " + ", ".join(f"{site.name} ({len(site.origins)} origins)" for site in sites)

    def _request_reload(self, signum: int, frame: FrameType | None) -> None:
        self.reload_requested = True

    def _request_reopen(self, signum: int, frame: FrameType | None) -> None:
        self.reopen_requested = True

    def _ignore(self, signum: int, frame: FrameType | None) -> None:
        self.ignored_signal = signum

    def _spawn(self, index: int, public: socket.socket, admin: socket.socket) -> None:
        process = self.context.Process(
            target=worker_main,
            args=(self.settings, self.node_name, public, admin),
            name=f"edge-worker-{index}",
        )
        process.start()
        self.workers[index] = process
        log.info("worker %d started (pid %s)", index, process.pid)

    def run(self) -> int:
        configure_logging(self.settings.log_level, self.settings.log_file)
        # Protection's shared counters start empty with the edge: nothing a previous run (or a
        # previous boot, whose monotonic clock is gone) counted may hold a client or a site back.
        shutil.rmtree(Path(self.settings.cache_dir) / "protection", ignore_errors=True)
        public = bind_listener(*self.settings.listen_address)
        admin = bind_listener(*self.settings.admin_address, setting="admin_listen")
        self.node_name = self.settings.node_name(public.getsockname()[1])
        os.environ[SUPERVISOR_PID_ENV] = str(os.getpid())
        set_reloader(self.reloader)
        for signum in signals.STOP_SIGNALS:
            signal.signal(signum, self._request_stop)
        signal.signal(signal.SIGHUP, self._request_reload)
        signal.signal(signal.SIGUSR1, self._request_reopen)
        for signum in signals.IGNORED_SIGNALS:
            signal.signal(signum, self._ignore)
        for index in range(self.settings.workers):
            self._spawn(index, public, admin)
        print(
            f"edge {self.node_name}: listening on {url_of(public, self.settings.scheme)} (admin {url_of(admin)}), "
            f"{self._origins()}, {self.settings.workers} worker(s), supervisor pid {os.getpid()}",
            flush=True,
        )
        ready_url = f"{url_of(admin)}/readyz"
        notified_ready = False
        watchdog = sdnotify.watchdog_interval()
        next_watchdog = time.monotonic()
        while not self.stopping:
            sentinels = [process.sentinel for process in self.workers.values()]
            multiprocessing.connection.wait(sentinels, timeout=0.5)
            if not notified_ready and _answers(ready_url):  # Type=notify: ready after the purge catch-up
                notified_ready = True
                sdnotify.notify(f"READY=1\nSTATUS=serving with {len(self.workers)} worker(s)")
            if watchdog is not None and time.monotonic() >= next_watchdog:
                if all(process.is_alive() for process in self.workers.values()):
                    sdnotify.notify("WATCHDOG=1")
                next_watchdog = time.monotonic() + watchdog
            if self.reload_requested:
                self.reload_requested = False
                self._reload(public, admin)
            if self.reopen_requested:
                self.reopen_requested = False
                reopen_log_files()  # the supervisor's own log_file
                self._signal_workers(signal.SIGUSR1)  # each worker reopens its own log files
                log.info("USR1: log files reopened")
            if self.ignored_signal is not None:
                log.info("%s ignored (not used by edgecache)", signal.Signals(self.ignored_signal).name)
                self.ignored_signal = None
            self._reap_retired()
            for index, process in list(self.workers.items()):
                if process.is_alive() or self.stopping:
                    continue
                log.warning("worker %d (pid %s) exited with %s; restarting", index, process.pid, process.exitcode)
                process.close()
                self._throttle_restarts()
                if not self.stopping:
                    self._spawn(index, public, admin)
        self._stop_workers([*self.workers.values(), *self.retiring])
        public.close()
        admin.close()
        return 0

    def _reload(self, public: socket.socket, admin: socket.socket) -> None:
        if self.reloader is None:
            log.warning("SIGHUP: no configuration source to reload from")
            return
        try:
            new = self.reloader()
        except ConfigError as exc:
            log.error("reload refused, keeping the running configuration:\n%s", exc)
            return
        fixed = {"listen": self.settings.listen, "admin_listen": self.settings.admin_listen}
        if any(getattr(new, name) != value for name, value in fixed.items()):
            log.warning("reload: listen addresses change only with a restart; keeping %s", fixed)
            new = new.model_copy(update=fixed)
        self.settings = new
        self.node_name = new.node_name(public.getsockname()[1])
        configure_logging(new.log_level, new.log_file)
        old = dict(self.workers)
        self.workers = {}
        for index in range(new.workers):
            self._spawn(index, public, admin)
        for process in old.values():
            if process.is_alive() and process.pid is not None:
                os.kill(process.pid, signal.SIGTERM)
            self.retiring.append(process)
        log.info("configuration reloaded: %d new worker(s), %d draining", new.workers, len(old))

    def _signal_workers(self, signum: int) -> None:
        for process in [*self.workers.values(), *self.retiring]:
            if process.is_alive() and process.pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(process.pid, signum)

    def _reap_retired(self) -> None:
        for process in list(self.retiring):
            if not process.is_alive():
                process.join(0)
                self.retiring.remove(process)

    def _throttle_restarts(self) -> None:
        """Back off when workers crash in a loop, so a bad deploy doesn't spin the CPU."""
        now = time.monotonic()
        self.restart_times = [t for t in self.restart_times if now - t < RESTART_WINDOW_S]
        self.restart_times.append(now)
        if len(self.restart_times) > RESTARTS_BEFORE_BACKOFF:
            time.sleep(1.0)

    def _stop_workers(self, processes: list[ForkProcess]) -> None:
        """SIGTERM every worker, give them ``drain_timeout`` to finish in-flight requests, then kill."""
        sdnotify.notify("STOPPING=1")
        for process in processes:
            if process.is_alive() and process.pid is not None:
                os.kill(process.pid, signal.SIGTERM)
        deadline = time.monotonic() + self.settings.shutdown_grace + self.settings.drain_timeout + 2.0
        for process in processes:
            process.join(max(0.0, deadline - time.monotonic()))
            if process.is_alive():
                log.warning("worker pid %s did not drain in time; killing it", process.pid)
                process.kill()
                process.join(2.0)
