"""``python -m edge.controlplane``: the purge control plane on its own (until the router hosts it).

Precedence: ``--config`` file (or ``CONTROLPLANE_CONFIG``) < ``CONTROLPLANE_*`` environment
(``CONTROLPLANE_EDGE_TOKEN``, ``CONTROLPLANE_ADMIN_TOKEN``, …; keeps tokens out of ``ps``) <
flags.  Exit codes: 0 after SIGTERM/SIGINT, 1 when the socket cannot be opened, 2 for a bad
configuration or inventory, or a state directory another control plane holds.

On start it prints one line to stdout (the real port when 0 was asked for)::

    control plane listening on http://127.0.0.1:8090
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from pathlib import Path
from typing import Any

from aiohttp import web

from edge import signals
from edge.config import ConfigError
from edge.controlplane.app import create_control_plane_app
from edge.controlplane.log import LogLockedError
from edge.controlplane.models import StandaloneSettings, load_standalone_settings
from edge.inventory import Inventory, InventoryError, load_inventory
from edge.version import add_version_flag

log = logging.getLogger("edge.controlplane")

OVERRIDES = (
    "listen",
    "edges",
    "state_dir",
    "edge_token",
    "admin_token",
    "timeout",
    "retry_interval",
    "max_records",
    "max_age",
    "log_level",
)


class StartError(Exception):
    """The control plane could not start; ``code`` is the exit status."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m edge.controlplane",
        description="edgecache purge control plane: one POST /purge reaches every edge of the inventory.",
        epilog="Precedence: --config file < CONTROLPLANE_* environment variables < these flags.",
    )
    add_version_flag(parser, "python -m edge.controlplane")
    parser.add_argument("--config", type=Path, help="TOML config file (also CONTROLPLANE_CONFIG)")
    parser.add_argument("--listen", help="HOST:PORT to serve on (default 127.0.0.1:8090; port 0 picks one)")
    parser.add_argument("--edges", help="inventory TOML file listing the edges (required)")
    parser.add_argument("--state-dir", dest="state_dir", help="directory for the purge log (required)")
    parser.add_argument("--edge-token", dest="edge_token", help="bearer token sent to the edges' admin APIs")
    parser.add_argument("--admin-token", dest="admin_token", help="bearer token required from clients")
    parser.add_argument("--timeout", type=float, help="per-edge budget of one fan-out, seconds (default 2)")
    parser.add_argument(
        "--retry-interval", dest="retry_interval", type=float, help="seconds between background retries (default 1)"
    )
    parser.add_argument("--max-records", dest="max_records", type=int, help="records kept (default 100000)")
    parser.add_argument("--max-age", dest="max_age", type=float, help="seconds a record is kept (default: no limit)")
    parser.add_argument("--log-level", dest="log_level", choices=["debug", "info", "warning", "error"])
    parser.add_argument("--check-config", action="store_true", help="validate everything and exit")
    return parser.parse_args(argv)


def _url(address: Any) -> str:
    host, port = address[0], address[1]
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}"


async def serve(settings: StandaloneSettings, inventory: Inventory) -> None:
    """Run until SIGTERM/SIGINT."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    signals.install(loop, stop.set)
    app = create_control_plane_app(inventory, settings.control_plane())
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=2.0)
    try:
        await runner.setup()
    except LogLockedError as exc:
        raise StartError(str(exc), 2) from None
    try:
        host, port = settings.listen_address
        try:
            await web.TCPSite(runner, host, port, reuse_address=True).start()
        except OSError as exc:
            raise StartError(f"cannot listen on {host}:{port}: {exc.strerror or exc}", 1) from None
        print(f"control plane listening on {_url(runner.addresses[-1])}", flush=True)
        await stop.wait()
    finally:
        await runner.cleanup()


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    overrides = {key: getattr(args, key) for key in OVERRIDES}
    try:
        settings = load_standalone_settings(args.config, overrides)
        inventory = load_inventory(settings.edges)
    except (ConfigError, InventoryError) as exc:
        print(exc, file=sys.stderr)
        sys.exit(2)
    if args.check_config:
        enabled = sum(1 for edge in inventory.edges if edge.enabled)
        print(f"configuration ok: {enabled} enabled edges of {len(inventory.edges)}")
        return
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(process)d %(name)s %(levelname)s %(message)s",
        stream=sys.stderr,
        force=True,
    )
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        run: Any = asyncio.run
    else:
        run = uvloop.run
    try:
        run(serve(settings, inventory))
    except StartError as exc:
        print(f"control plane: {exc}", file=sys.stderr)
        sys.exit(exc.code)


if __name__ == "__main__":
    main()
