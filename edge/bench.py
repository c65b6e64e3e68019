"""``make bench``: throughput and latency figures for the edge on loopback. Prints, never asserts.

Each scenario is a bounded load (request count and wall time both capped) from a separate client
process, so the load generator does not share a core's event loop with what it measures.  Results
are medians of several rounds because the machines are shared and noisy.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass(frozen=True)
class LoadResult:
    requests: int
    errors: int
    seconds: float
    p50_ms: float
    p99_ms: float

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0


async def _load(url: str, concurrency: int, max_requests: int, max_seconds: float) -> LoadResult:
    import aiohttp

    latencies: list[float] = []
    errors = 0
    issued = 0
    deadline = time.perf_counter() + max_seconds

    async def worker(client: aiohttp.ClientSession) -> None:
        nonlocal errors, issued
        while issued < max_requests and time.perf_counter() < deadline:
            issued += 1
            started = time.perf_counter()
            try:
                async with client.get(url) as resp:
                    await resp.read()
                    if resp.status >= 500:
                        errors += 1
            except aiohttp.ClientError:
                errors += 1
            latencies.append(time.perf_counter() - started)

    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as client:
        began = time.perf_counter()
        await asyncio.gather(*(worker(client) for _ in range(concurrency)))
        elapsed = time.perf_counter() - began
    latencies.sort()
    p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] if latencies else 0.0
    return LoadResult(
        len(latencies), errors, elapsed, statistics.median(latencies) * 1000 if latencies else 0.0, p99 * 1000
    )


def run_load(url: str, concurrency: int, max_requests: int, max_seconds: float) -> LoadResult:
    """Run one bounded load in a child process and read its JSON result."""
    code = (
        "import asyncio, json, sys; from edge.bench import _load; "
        "r = asyncio.run(_load(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4]))); "
        "print(json.dumps(r.__dict__))"
    )
    output = subprocess.run(
        [sys.executable, "-c", code, url, str(concurrency), str(max_requests), str(max_seconds)],
        capture_output=True,
        text=True,
        timeout=max_seconds + 60,
        check=True,
    ).stdout
    return LoadResult(**json.loads(output))


def wait_http(url: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=1.0):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"{url} did not come up")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m edge.bench", description=__doc__)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=4.0, help="cap per round")
    parser.add_argument("--requests", type=int, default=20000, help="cap per round")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args(argv)

    origin_port, edge_port, admin_port = free_port(), free_port(), free_port()
    workdir = Path(".bench")
    workdir.mkdir(exist_ok=True)
    processes = [
        subprocess.Popen(
            [sys.executable, "-m", "origin_stub", "--host", "127.0.0.1", "--port", str(origin_port)],
            stdout=subprocess.DEVNULL,
            start_new_session=True,
        ),
        subprocess.Popen(
            [
                sys.executable, "-m", "edge",
                "--origin", f"http://127.0.0.1:{origin_port}",
                "--listen", f"127.0.0.1:{edge_port}",
                "--admin-listen", f"127.0.0.1:{admin_port}",
                "--cache-dir", str(workdir / "cache"),
                "--workers", str(args.workers),
                "--log-level", "warning",
            ],
            stdout=subprocess.DEVNULL,
            start_new_session=True,
        ),
    ]
    try:
        wait_http(f"http://127.0.0.1:{origin_port}/_stub/counters")
        wait_http(f"http://127.0.0.1:{admin_port}/readyz")
        scenarios = [
            ("origin direct, 1 KiB", f"http://127.0.0.1:{origin_port}/obj/b1k?size=1024"),
            ("through edge (forwarding), 1 KiB", f"http://127.0.0.1:{edge_port}/obj/b1k?size=1024"),
            ("through edge (forwarding), 100 KiB", f"http://127.0.0.1:{edge_port}/obj/b100k?size=102400"),
        ]
        print(f"edge workers={args.workers} concurrency={args.concurrency} rounds={args.rounds} (medians)")
        print(f"{'scenario':40} {'req/s':>10} {'p50 ms':>8} {'p99 ms':>8} {'errors':>7}")
        for label, url in scenarios:
            results = [run_load(url, args.concurrency, args.requests, args.seconds) for _ in range(args.rounds)]
            print(
                f"{label:40} {statistics.median(r.rps for r in results):>10.0f} "
                f"{statistics.median(r.p50_ms for r in results):>8.2f} "
                f"{statistics.median(r.p99_ms for r in results):>8.2f} {sum(r.errors for r in results):>7}"
            )
    finally:
        for process in processes:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        for process in processes:
            process.wait(15)


if __name__ == "__main__":
    main()
