"""``python -m origin_stub --host 127.0.0.1 --port N``: run the stub until SIGTERM/SIGINT/SIGQUIT.

The single ``origin_stub listening on URL`` line (flushed) is the contract with whoever started
us (the demo, benchmarks, subprocess tests): with ``--port 0`` it is the only way to learn the port.

Signals follow the rest of edgecache (``edge.signals``): ``SIGHUP`` and ``SIGUSR1`` (what logrotate
sends) are harmless, since the stub keeps no log file to reopen.  Exit codes: 0 after a stop
signal, 1 when the listening socket cannot be opened (one line on stderr naming ``--port``).
"""

from __future__ import annotations

import argparse
import asyncio
import errno
import os
import sys
from collections.abc import Callable, Sequence

from edge import signals
from edge.version import add_version_flag, program_name

from .app import OriginStubServer

DEFAULT_PROG = "python -m origin_stub"


class ListenError(Exception):
    """The listening socket could not be opened (port taken, address not local, no permission)."""



def _port(text: str) -> int:
    """A TCP port, 0 to 65535 (the kernel would silently wrap a larger one)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"{value} is not a port (0 to 65535)")
    return value


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    prog = program_name(DEFAULT_PROG) if argv is None else DEFAULT_PROG
    parser = argparse.ArgumentParser(prog=prog, description="edgecache origin stub: a scriptable HTTP origin")
    add_version_flag(parser, prog)
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=_port, default=8000, help="port, 0 for any free one (default 8000)")
    parser.add_argument("--name", default="", help="sent as X-Stub-Name on every response (several instances)")
    return parser.parse_args(argv)


def _cannot_listen(host: str, port: int, exc: OSError) -> str:
    """One line naming the address and the flags that chose it (uvloop's own message names neither)."""
    shown = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    # a name that does not resolve is a gaierror, whose (negative) errno is not an errno: its strerror says it
    reason = os.strerror(exc.errno) if exc.errno and exc.errno > 0 else (exc.strerror or str(exc))
    hint = "; choose another --port, or --port 0 for any free one" if exc.errno == errno.EADDRINUSE else ""
    return f"cannot listen on {shown} (--host {host} --port {port}): {reason}{hint}"


async def _serve(host: str, port: int, name: str = "") -> None:
    stop = asyncio.Event()
    # Before listening: a signal sent as soon as the URL is printed must find its handler.
    signals.install(asyncio.get_running_loop(), stop.set)
    server = OriginStubServer(host, port, name)
    try:
        await server.start()
    except OSError as exc:
        raise ListenError(_cannot_listen(host, port, exc)) from None
    try:
        print(f"origin_stub listening on {server.url}", flush=True)
        await stop.wait()
    finally:
        await server.stop()


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop when installed (faster for benchmarks), else the standard loop."""
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


def main(argv: Sequence[str] | None = None) -> None:
    args = _parse_args(argv)
    try:
        with asyncio.Runner(loop_factory=_loop_factory()) as runner:
            runner.run(_serve(args.host, args.port, args.name))
    except ListenError as exc:
        print(f"origin_stub: {exc}", file=sys.stderr)
        sys.exit(1)
    sys.stdout.flush()


if __name__ == "__main__":
    main()
