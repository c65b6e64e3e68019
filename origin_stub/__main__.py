"""``python -m origin_stub --host 127.0.0.1 --port N``: run the stub until SIGINT/SIGTERM.

The single ``origin_stub listening on URL`` line (flushed) is the contract with whoever started
us (the demo, benchmarks, subprocess tests): with ``--port 0`` it is the only way to learn the port.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from collections.abc import Callable, Sequence

from edge.version import add_version_flag

from .app import OriginStubServer


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m origin_stub", description="edgecache origin stub: a scriptable HTTP origin"
    )
    add_version_flag(parser, "python -m origin_stub")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8000, help="port, 0 for any free one (default 8000)")
    parser.add_argument("--name", default="", help="sent as X-Stub-Name on every response (several instances)")
    return parser.parse_args(argv)


async def _serve(host: str, port: int, name: str = "") -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with OriginStubServer(host, port, name) as server:
        print(f"origin_stub listening on {server.url}", flush=True)
        await stop.wait()


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop when installed (faster for benchmarks), else the standard loop."""
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


def main(argv: Sequence[str] | None = None) -> None:
    args = _parse_args(argv)
    with asyncio.Runner(loop_factory=_loop_factory()) as runner:
        runner.run(_serve(args.host, args.port, args.name))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
