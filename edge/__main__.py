"""``python -m edge``: start an edge node (supervisor plus workers)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from edge.config import ConfigError, EdgeSettings, load_settings
from edge.supervisor import ListenError, Supervisor, bind_listener
from edge.version import add_version_flag, program_name

DEFAULT_PROG = "python -m edge"



def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    prog = program_name(DEFAULT_PROG) if argv is None else DEFAULT_PROG
    parser = argparse.ArgumentParser(
        prog=prog,
        description="edgecache edge node: a caching HTTP reverse proxy in front of one origin.",
        epilog="Precedence: --config file < EDGE_* environment variables < these flags.",
    )
    add_version_flag(parser, prog)
    parser.add_argument("--config", type=Path, help="TOML config file (also EDGE_CONFIG)")
    parser.add_argument("--origin", help="origin base URL, e.g. http://127.0.0.1:8000")
    parser.add_argument("--listen", help="public HOST:PORT (default 0.0.0.0:8080)")
    parser.add_argument("--admin-listen", dest="admin_listen", help="admin API HOST:PORT (default 127.0.0.1:9080)")
    parser.add_argument("--admin-token", dest="admin_token", help="bearer token for the admin API")
    parser.add_argument("--cache-dir", dest="cache_dir", help="disk cache directory (default var/cache)")
    parser.add_argument("--workers", help="worker processes (default: number of CPUs)")
    parser.add_argument("--name", help="node name used in Via and Cache-Status (default HOST:PORT)")
    parser.add_argument("--log-level", dest="log_level", choices=["debug", "info", "warning", "error"])
    parser.add_argument("--access-log", dest="access_log", choices=["json", "combined", "off"], help="access log")
    parser.add_argument("--tls-cert", dest="tls_cert", help="PEM certificate chain: serve the public listener over TLS")
    parser.add_argument("--tls-key", dest="tls_key", help="PEM private key for --tls-cert")
    parser.add_argument("--control-plane", dest="control_plane", help="router admin URL to catch up on cluster purges")
    parser.add_argument("--check-config", action="store_true", help="validate the configuration and exit")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    overrides: dict[str, Any] = {
        key: getattr(args, key)
        for key in (
            "origin",
            "listen",
            "admin_listen",
            "admin_token",
            "cache_dir",
            "workers",
            "name",
            "log_level",
            "access_log",
            "tls_cert",
            "tls_key",
            "control_plane",
        )
    }
    try:
        settings = load_settings(args.config, overrides)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        sys.exit(2)
    if args.check_config:
        print("configuration ok")
        for setting, (host, port) in (("listen", settings.listen_address), ("admin_listen", settings.admin_address)):
            try:
                bind_listener(host, port, setting).close()
            except ListenError as exc:  # reported, not fatal: a running edge holds its own ports
                print(f"note: {exc}")
        return

    def reload() -> EdgeSettings:
        return load_settings(args.config, overrides)

    try:
        sys.exit(Supervisor(settings, reload).run())
    except ListenError as exc:
        print(f"edge: {exc}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
