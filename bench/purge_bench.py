"""Purge latency across a local cluster: ``POST /purge`` on the router until every edge serves fresh content.

Runs once per purge-log backend: ``sqlite`` (the router's embedded log; it pushes each purge to
the edges) and ``redis`` (a ``redis-server`` started here on a random port; the router appends to
the stream and the edges read it themselves) — the latter only where ``redis-server`` is installed
(``make test`` installs it as root).  Starts the origin stub, three edges and the router on
loopback, then for each of N objects: caches it on all three edges (checked: ``X-Cache: HIT``),
sends the purge to the router, and requests the object from every edge until each answers with a
fresh copy from the origin (``X-Cache: MISS``).  Prints p50/p99 of that whole interval and of the
purge call alone.  Bounded in count and time; prints figures, asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

from bench.edge_bench import free_port, wait_http


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * fraction))]


async def measure(router_admin: str, edges: list[str], count: int, budget_s: float) -> dict[str, float]:
    totals: list[float] = []
    calls: list[float] = []
    deadline = time.monotonic() + budget_s
    async with aiohttp.ClientSession() as client:
        for index in range(count):
            if time.monotonic() > deadline:
                break
            path = f"/obj/purge-bench-{index}?size=1024&max_age=600"
            for edge in edges:
                for _ in range(2):
                    async with client.get(edge + path) as resp:
                        await resp.read()
                        cached = resp.headers.get("X-Cache")
            assert cached == "HIT"
            started = time.perf_counter()
            async with client.post(
                f"{router_admin}/purge", json={"urls": [f"http://www.example.com{path}"]}
            ) as resp:
                answer = await resp.json()
            calls.append(time.perf_counter() - started)
            if answer.get("applied") != len(edges):
                raise RuntimeError(f"purge not applied everywhere: {answer}")

            async def fresh(edge: str, path: str = path) -> None:
                for _ in range(100):
                    async with client.get(edge + path) as resp:
                        await resp.read()
                        if resp.headers.get("X-Cache") == "MISS":
                            return
                raise RuntimeError(f"{edge} kept serving purged content")

            await asyncio.gather(*(fresh(edge) for edge in edges))
            totals.append(time.perf_counter() - started)
    return {
        "purges": len(totals),
        "p50_ms": statistics.median(totals) * 1000,
        "p99_ms": percentile(totals, 0.99) * 1000,
        "call_p50_ms": statistics.median(calls) * 1000,
        "call_p99_ms": percentile(calls, 0.99) * 1000,
    }


def start_redis(workdir: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    process = subprocess.Popen(
        [
            "redis-server", "--port", str(port), "--bind", "127.0.0.1", "--dir", str(workdir), "--save", "",
            "--appendonly", "yes", "--appendfsync", "everysec", "--daemonize", "no",
        ],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
                sock.sendall(b"PING\r\n")
                if sock.recv(16).startswith(b"+PONG"):
                    return process, f"redis://127.0.0.1:{port}/0"
        except OSError:
            time.sleep(0.05)
    os.killpg(process.pid, signal.SIGTERM)
    raise RuntimeError("redis-server did not start")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.purge_bench", description=__doc__)
    parser.add_argument("--purges", type=int, default=200)
    parser.add_argument("--budget", type=float, default=120.0, help="seconds at most for the purge loop")
    parser.add_argument("--backend", choices=["sqlite", "redis", "both"], default="both")
    args = parser.parse_args(argv)
    backends = ["sqlite", "redis"] if args.backend == "both" else [args.backend]
    for backend in backends:
        if backend == "redis" and shutil.which("redis-server") is None:
            print("purge, redis backend: redis-server not installed (make test installs it as root); skipped")
            continue
        run_backend(backend, args)


def run_backend(backend: str, args: argparse.Namespace) -> None:
    workdir = Path(tempfile.mkdtemp(prefix="edgecache-purgebench-"))
    origin_port, router_port, router_admin_port = free_port(), free_port(), free_port()
    edge_ports = [(free_port(), free_port()) for _ in range(3)]
    inventory = workdir / "inventory.toml"
    inventory.write_text(
        "".join(
            f'[[edges]]\nname = "e{index}"\nregion = "r{index}"\nlatitude = 0\nlongitude = {index * 30}\n'
            f'url = "http://127.0.0.1:{public}"\nadmin_url = "http://127.0.0.1:{admin}"\n\n'
            for index, (public, admin) in enumerate(edge_ports)
        )
    )
    python = sys.executable
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL, "start_new_session": True}
    processes: list[subprocess.Popen[bytes]] = []
    purge_log: list[str] = []
    control_plane = f"http://127.0.0.1:{router_admin_port}"
    if backend == "redis":
        redis_process, redis_url = start_redis(workdir)
        processes.append(redis_process)
        purge_log, control_plane = ["--purge-log", redis_url], redis_url
    processes += [
        subprocess.Popen([python, "-m", "origin_stub", "--port", str(origin_port)], **quiet),  # type: ignore[call-overload]
        subprocess.Popen(
            [
                python, "-m", "edge.router", "--listen", f"127.0.0.1:{router_port}",
                "--admin-listen", f"127.0.0.1:{router_admin_port}", "--edges", str(inventory),
                "--purge-state-dir", str(workdir / "router"), "--no-access-log", "--health-interval", "0.5",
                *purge_log,
            ],
            **quiet,
        ),  # type: ignore[call-overload]
    ]
    for index, (public, admin) in enumerate(edge_ports):
        processes.append(
            subprocess.Popen(  # type: ignore[call-overload]
                [
                    python, "-m", "edge", "--origin", f"http://127.0.0.1:{origin_port}",
                    "--listen", f"127.0.0.1:{public}", "--admin-listen", f"127.0.0.1:{admin}",
                    "--cache-dir", str(workdir / f"e{index}"), "--workers", "1", "--name", f"e{index}",
                    "--access-log", "off", "--log-level", "warning",
                    "--control-plane", control_plane,
                ],
                **quiet,
            )
        )
    try:
        for _, admin in edge_ports:
            wait_http(f"http://127.0.0.1:{admin}/readyz", timeout=30)
        wait_http(f"http://127.0.0.1:{router_admin_port}/healthz", timeout=30)
        figures = asyncio.run(
            measure(
                f"http://127.0.0.1:{router_admin_port}",
                [f"http://127.0.0.1:{public}" for public, _ in edge_ports],
                args.purges,
                args.budget,
            )
        )
        print(
            f"purge ({backend} log) through the router to 3 local edges serving fresh content "
            f"({int(figures['purges'])} purges): "
            f"p50 {figures['p50_ms']:.1f} ms, p99 {figures['p99_ms']:.1f} ms "
            f"(the POST alone: p50 {figures['call_p50_ms']:.1f} ms, p99 {figures['call_p99_ms']:.1f} ms; "
            f"target p99 <= 50 ms)"
        )
    finally:
        for process in processes:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        for process in processes:
            process.wait(20)


if __name__ == "__main__":
    main()
