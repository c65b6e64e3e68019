"""``make demo``: a local CDN on loopback — the origin stub and an edge in front of it.

Every component runs as its own process exactly as an operator would start it (the same CLIs), so
the demo doubles as a smoke test of the real programs.  The launcher waits until each one answers,
prints what to try, and on Ctrl-C (or SIGTERM) stops every process it started, by PID.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType


@dataclass
class Component:
    name: str
    argv: list[str]
    ready_url: str
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)


def wait_ready(component: Component, deadline: float) -> None:
    """Poll the component's readiness URL; fail fast if its process died."""
    while time.monotonic() < deadline:
        assert component.process is not None
        if component.process.poll() is not None:
            raise RuntimeError(f"{component.name} exited with code {component.process.returncode}")
        try:
            with urllib.request.urlopen(component.ready_url, timeout=1.0) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{component.name} not ready at {component.ready_url} in time")


def stop_all(components: list[Component], timeout: float = 10.0) -> None:
    """SIGTERM each started process (its own group: edge workers included), then SIGKILL stragglers."""
    for component in reversed(components):
        if component.process is not None and component.process.poll() is None:
            os.killpg(component.process.pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for component in components:
        if component.process is None:
            continue
        try:
            component.process.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            os.killpg(component.process.pid, signal.SIGKILL)
            component.process.wait(5)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m edge.demo", description=__doc__)
    parser.add_argument("--host", default=os.environ.get("DEMO_HOST", "127.0.0.1"))
    parser.add_argument("--origin-port", type=int, default=int(os.environ.get("DEMO_ORIGIN_PORT", "8000")))
    parser.add_argument("--edge-port", type=int, default=int(os.environ.get("DEMO_EDGE_PORT", "8101")))
    parser.add_argument("--admin-port", type=int, default=int(os.environ.get("DEMO_ADMIN_PORT", "9101")))
    parser.add_argument("--workdir", type=Path, default=Path(os.environ.get("DEMO_DIR", ".demo")))
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument(
        "--exit-when-ready", action="store_true", help="start, check, print the guide and stop (for tests)"
    )
    return parser.parse_args(argv)


def guide(host: str, edge_port: int, admin_port: int, origin_port: int) -> str:
    edge = f"http://{host}:{edge_port}"
    return f"""
edgecache demo is up.
  origin stub : http://{host}:{origin_port}/   (demo page, /obj/<name>?size=..., /_stub/counters)
  edge        : {edge}/   (admin http://{host}:{admin_port}/healthz)

Try:
  curl -si '{edge}/obj/hello?size=64&max_age=60'     # forwarded by the edge (see Via)
  curl -si '{edge}/obj/early?early_hints=1'           # 103 Early Hints relayed before the 200
  curl -s  'http://{host}:{origin_port}/_stub/counters'   # what reached the origin
  open {edge}/ in a browser                           # the demo page through the edge

Ctrl-C stops everything.
"""


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    python = sys.executable
    workdir: Path = args.workdir
    workdir.mkdir(parents=True, exist_ok=True)
    origin_url = f"http://{args.host}:{args.origin_port}"
    components = [
        Component(
            "origin stub",
            [python, "-m", "origin_stub", "--host", args.host, "--port", str(args.origin_port)],
            f"{origin_url}/_stub/counters",
        ),
        Component(
            "edge",
            [
                python, "-m", "edge",
                "--origin", origin_url,
                "--listen", f"{args.host}:{args.edge_port}",
                "--admin-listen", f"{args.host}:{args.admin_port}",
                "--cache-dir", str(workdir / "cache-edge"),
                "--workers", str(args.workers),
                "--name", "demo-edge",
            ],
            f"http://{args.host}:{args.admin_port}/readyz",
        ),
    ]
    stopping = False

    def request_stop(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)
    try:
        for component in components:
            component.process = subprocess.Popen(component.argv, start_new_session=True)
            wait_ready(component, time.monotonic() + 30)
        print(guide(args.host, args.edge_port, args.admin_port, args.origin_port), flush=True)
        while not stopping and not args.exit_when_ready:
            for component in components:
                assert component.process is not None
                if component.process.poll() is not None:
                    print(f"{component.name} exited unexpectedly; stopping the demo", file=sys.stderr)
                    stopping = True
            time.sleep(0.2)
    except RuntimeError as exc:
        print(f"demo failed: {exc}", file=sys.stderr)
        stop_all(components)
        sys.exit(1)
    print("stopping...", flush=True)
    stop_all(components)


if __name__ == "__main__":
    main()
