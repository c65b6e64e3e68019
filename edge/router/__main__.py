"""``python -m edge.router``: the GeoIP request router (one process, uvloop).

Precedence: ``--config`` file (or ``ROUTER_CONFIG``) < ``ROUTER_*`` environment < flags.  Exit
codes: 0 after SIGTERM/SIGINT, 1 when a listening socket cannot be opened or another router holds
the embedded purge log (``purge_state_dir``), 2 for any bad configuration, inventory, coverage file
or geo database (the message names the field).  SIGHUP reopens the geo database; if the new file
cannot be opened the old one stays in service.

On start it prints one line to stdout (real ports when 0 was asked for)::

    router listening on http://127.0.0.1:8080 (admin http://127.0.0.1:8081), 5 edges

Diagnostics go to stderr; so does the access log (message only), one line per request.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import ssl
import sys
from pathlib import Path
from typing import Any

from aiohttp import web

from edge import sdnotify, signals
from edge.accesslog import reopen_log_files
from edge.config import ConfigError
from edge.controlplane.log import LogLockedError
from edge.controlplane.redisurl import parse_purge_log_url
from edge.router.app import RouterParts, create_router, create_router_admin_app, open_router_parts
from edge.router.config import RouterSettings, load_router_settings
from edge.router.geo import GeoDatabaseError
from edge.router.redirect import RedirectService, serve_redirects
from edge.supervisor import ListenError as SupervisorListenError
from edge.supervisor import bind_listener
from edge.tls import server_ssl_context
from edge.version import add_version_flag, program_name

log = logging.getLogger("edge.router")


DEFAULT_PROG = "python -m edge.router"


class ListenError(Exception):
    """A listening socket could not be opened."""


class PurgeStateLockedError(Exception):
    """Another router (or control plane) holds the embedded purge log's directory."""



def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    prog = program_name(DEFAULT_PROG) if argv is None else DEFAULT_PROG
    parser = argparse.ArgumentParser(
        prog=prog,
        description="edgecache router: redirects each client to the nearest healthy edge.",
        epilog="Precedence: --config file < ROUTER_* environment variables < these flags.",
    )
    add_version_flag(parser, prog)
    parser.add_argument("--config", type=Path, help="TOML config file (also ROUTER_CONFIG)")
    parser.add_argument("--listen", help="public HOST:PORT (default 127.0.0.1:8088)")
    parser.add_argument("--admin-listen", dest="admin_listen", help="admin HOST:PORT (default 127.0.0.1:8081)")
    parser.add_argument("--admin-token", dest="admin_token", help="bearer token for the admin side")
    parser.add_argument("--edges", help="inventory TOML file listing the edges (required)")
    parser.add_argument("--geodb", help="City-type .mmdb database (default: the demo database in geodb/)")
    parser.add_argument(
        "--trust-proxy",
        dest="trust_proxy",
        action="append",
        metavar="CIDR",
        help="believe X-Forwarded-For from peers in this network (repeatable; replaces the configured list)",
    )
    parser.add_argument("--coverage", help="coverage-zone TOML file (CIDR → edge/region overrides)")
    parser.add_argument("--health-interval", dest="health_interval", type=float, help="seconds between checks")
    parser.add_argument("--health-timeout", dest="health_timeout", type=float, help="timeout of one check (s)")
    parser.add_argument("--fall", type=int, help="failed checks in a row before an edge is down (default 3)")
    parser.add_argument("--rise", type=int, help="good checks in a row before a down edge is up (default 2)")
    parser.add_argument(
        "--debug-header",
        dest="debug_header",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="add X-Edge-Route (the decision as JSON) to every answer",
    )
    parser.add_argument("--log-format", dest="log_format", choices=["json", "combined"], help="access log format")
    parser.add_argument(
        "--access-log", dest="access_log", action=argparse.BooleanOptionalAction, default=None, help="access log"
    )
    parser.add_argument("--log-level", dest="log_level", choices=["debug", "info", "warning", "error"])
    parser.add_argument("--tls-cert", dest="tls_cert", help="PEM certificate chain: serve clients over TLS")
    parser.add_argument("--tls-key", dest="tls_key", help="PEM private key for --tls-cert")
    parser.add_argument(
        "--purge-state-dir", dest="purge_state_dir", help="where the cluster purge log is kept (default var/router)"
    )
    parser.add_argument("--purge-edge-token", dest="purge_edge_token", help="bearer token for the edges' admin APIs")
    parser.add_argument(
        "--purge-log", dest="purge_log",
        help="sqlite:///path (embedded, the default) or redis://host:6379/0, rediss://, redis+sentinel://…",
    )  # fmt: skip
    parser.add_argument(
        "--purge-log-retention", dest="purge_log_retention", help="keep purges this long (seconds, or 7d, 12h…)"
    )
    parser.add_argument("--check-config", action="store_true", help="validate everything and exit")
    return parser.parse_args(argv)


OVERRIDES = (
    "tls_cert",
    "tls_key",
    "purge_state_dir",
    "purge_edge_token",
    "purge_log",
    "purge_log_retention",
    "listen",
    "admin_listen",
    "admin_token",
    "edges",
    "geodb",
    "trust_proxy",
    "coverage",
    "health_interval",
    "health_timeout",
    "fall",
    "rise",
    "debug_header",
    "log_format",
    "access_log",
    "log_level",
)


def configure_logging(settings: RouterSettings) -> None:
    """The application log on stderr or ``log_file`` (SIGUSR1 reopens it); access lines are written
    by the redirect listener itself."""
    log_file = settings.log_file
    target: dict[str, Any] = (
        {"filename": str(log_file), "filemode": "a"} if log_file is not None else {"stream": sys.stderr}
    )
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(process)d %(name)s %(levelname)s %(message)s",
        force=True,
        **target,
    )


def _url(address: Any, scheme: str = "http") -> str:
    host, port = address[0], address[1]
    shown = f"[{host}]" if ":" in host else host
    return f"{scheme}://{shown}:{port}"


async def _start_site(
    runner: web.AppRunner, address: tuple[str, int], ssl_context: ssl.SSLContext | None = None,
    setting: str = "admin_listen",
) -> str:
    host, port = address
    try:
        await web.TCPSite(runner, host, port, backlog=4096, reuse_address=True, ssl_context=ssl_context).start()
    except OSError as exc:
        raise ListenError(_cannot_listen(host, port, setting, exc)) from exc
    return _url(runner.addresses[-1], "https" if ssl_context else "http")


async def _watchdog(interval: float) -> None:
    """systemd's watchdog: a loop that still runs is a router that still answers."""
    while True:
        sdnotify.notify("WATCHDOG=1")
        await asyncio.sleep(interval)


def _cannot_listen(host: str, port: int, setting: str, exc: OSError) -> str:
    flag = "--" + setting.replace("_", "-")
    return f"cannot listen on {host}:{port} ({setting} = \"{host}:{port}\", or {flag}): {exc.strerror or exc}"


def _purge_state_locked(settings: RouterSettings) -> str:
    """Name the setting that chose the directory: the lock error itself only says "control plane"."""
    if settings.purge_log is not None and settings.purge_log.startswith("sqlite:"):
        path = parse_purge_log_url(settings.purge_log).path
        assert path is not None  # validated with the settings
        directory, where = path.parent, f'purge_log = "{settings.purge_log}", or --purge-log'
        own = "directory for its sqlite purge_log"
    else:
        directory, own = settings.purge_state_dir, "purge_state_dir"
        where = f'purge_state_dir = "{directory}", or --purge-state-dir'
    return (
        f"cannot open the purge log in {directory.resolve()} ({where}): another router (or control plane) holds "
        f"that directory; give each router its own {own}, or share a Redis purge_log"
    )


def _ssl_context(settings: RouterSettings) -> ssl.SSLContext | None:
    """TLS for the public listener when a certificate and key are configured."""
    return server_ssl_context(settings.tls_cert, settings.tls_key)


async def serve(settings: RouterSettings, parts: RouterParts) -> None:
    """Run both listeners until SIGTERM/SIGINT/SIGQUIT; SIGHUP reloads the geo database."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    router = create_router(
        settings, inventory=parts.inventory, locator=parts.locator, coverage=parts.coverage, health=parts.health
    )
    service: RedirectService | None = None

    def reload_geodb() -> None:
        try:
            router.reload_geodb()
        except GeoDatabaseError as exc:
            log.error("geo database reload failed; keeping the one in use: %s", exc)

    def reopen_logs() -> None:
        reopen_log_files()
        if service is not None and service.access_log is not None:
            service.access_log.reopen()

    signals.install(loop, stop.set, reload=reload_geodb, reopen_logs=reopen_logs)
    admin_runner = web.AppRunner(create_router_admin_app(router), access_log=None, shutdown_timeout=1.0)
    listener = None
    await router.start()  # the first health round completes here
    try:
        if stop.is_set():  # told to stop while the first health round ran: never start listening
            return
        try:
            await admin_runner.setup()  # opens the purge log, taking its directory's lock
        except LogLockedError:
            raise PurgeStateLockedError(_purge_state_locked(settings)) from None
        host, port = settings.listen_address
        ssl_context = _ssl_context(settings)
        try:
            listener, service = await serve_redirects(router, host, port, ssl_context)
        except OSError as exc:
            raise ListenError(_cannot_listen(host, port, "listen", exc)) from exc
        public_url = _url(listener.server.sockets[0].getsockname(), "https" if ssl_context else "http")
        admin_url = await _start_site(admin_runner, settings.admin_address)
        print(f"router listening on {public_url} (admin {admin_url}), {len(parts.inventory.edges)} edges", flush=True)
        healthy = sum(1 for ok in parts.health.healthy_map().values() if ok)
        log.info("%d of %d edges healthy after the first check", healthy, len(parts.inventory.edges))
        sdnotify.notify(f"READY=1\nSTATUS=routing to {healthy} of {len(parts.inventory.edges)} edges")
        interval = sdnotify.watchdog_interval()
        if interval is not None:
            watchdog = asyncio.ensure_future(_watchdog(interval))
        await stop.wait()
        sdnotify.notify("STOPPING=1")
        if interval is not None:
            watchdog.cancel()
    finally:
        if listener is not None:
            await listener.close(2.0)
        if service is not None and service.access_log is not None:
            service.access_log.close()
        await admin_runner.cleanup()
        await router.close()


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    overrides = {key: getattr(args, key) for key in OVERRIDES}
    try:
        settings = load_router_settings(args.config, overrides)
        parts = open_router_parts(settings)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        sys.exit(2)
    if args.check_config:
        print(f"configuration ok: {len(parts.inventory.edges)} edges, geo database {parts.locator.database_type}")
        parts.locator.close()
        for setting, (host, port) in (("listen", settings.listen_address), ("admin_listen", settings.admin_address)):
            try:
                bind_listener(host, port, setting).close()
            except SupervisorListenError as exc:  # reported, not fatal: a running router holds its own ports
                print(f"note: {exc}")
        return
    configure_logging(settings)
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        runner: Any = asyncio.run
    else:
        runner = uvloop.run
    try:
        runner(serve(settings, parts))
    except (ListenError, PurgeStateLockedError) as exc:
        print(f"router: {exc}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
