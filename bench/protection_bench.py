"""Protection, measured: how many requests an edge can refuse per core next to how many 1 KiB hits
it serves, and a well-behaved client's p99 while one address floods with 1,000 connections.

Pinned (server on core 0, wrk and the clients on core 1, one worker), with ``wrk`` (installed by
``make bench`` as root; without it this figure is skipped):

1. hits: 1 KiB memory hits, no ``[protection]``                      → requests/s
2. refusals: the same edge with ``rate = 1, burst = 0`` per client    → 429s/s (target ≥ hits/s)
3. flood: ``max_connections_per_ip = 64``, ``rate = 2000``; wrk opens 1,000 connections from
   127.0.0.1 while a client on 127.0.0.2 asks for a hit every 10 ms   → its p50/p99 against the
   same client's on an idle edge

Bounded in time; prints figures, asserts nothing.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from bench.edge_bench import find_tools, free_port, parse_wrk, pinned_to, stop_process, wait_http

SERVER_CPUS, LOAD_CPUS = {0}, {1}


def start_edge(workdir: Path, origin: str, protection: str, name: str) -> tuple[subprocess.Popen[bytes], int]:
    port, admin = free_port(), free_port()
    config = workdir / f"{name}.toml"
    config.write_text(f'origin = "{origin}"\n[protection]\n{protection}')
    process = subprocess.Popen(
        [sys.executable, "-m", "edge", "--config", str(config), "--listen", f"127.0.0.1:{port}",
         "--admin-listen", f"127.0.0.1:{admin}", "--cache-dir", str(workdir / f"{name}-cache"), "--workers", "1",
         "--access-log", "off", "--log-level", "warning"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        preexec_fn=pinned_to(SERVER_CPUS),
    )  # fmt: skip
    wait_http(f"http://127.0.0.1:{admin}/readyz", 60)
    return process, port


def wrk(binary: str, url: str, connections: int, seconds: float) -> tuple[float, float]:
    out = subprocess.run(
        [binary, "-t", "1", "-c", str(connections), "-d", f"{seconds:g}s", "--latency", url],
        capture_output=True, text=True, timeout=seconds + 60, check=False, preexec_fn=pinned_to(LOAD_CPUS),
    )  # fmt: skip
    result = parse_wrk(out.stdout)
    return result.requests / result.seconds, result.p99_ms


def calm_client(port: int, seconds: float, source: str = "127.0.0.2") -> list[float]:
    """Sequential keep-alive GETs every 10 ms from ``source``: their times in ms."""
    os.sched_setaffinity(0, LOAD_CPUS)
    times: list[float] = []
    request = b"GET /obj/hot?size=1024&max_age=600 HTTP/1.1\r\nHost: bench\r\n\r\n"
    deadline = time.monotonic() + seconds
    sock = socket.create_connection(("127.0.0.1", port), timeout=5, source_address=(source, 0))
    try:
        while time.monotonic() < deadline:
            started = time.perf_counter()
            sock.sendall(request)
            data = b""
            while b"\r\n\r\n" not in data:
                data += sock.recv(65536)
            head, _, body = data.partition(b"\r\n\r\n")
            length = int(next(line.split(b":")[1] for line in head.split(b"\r\n")
                              if line.lower().startswith(b"content-length")))  # fmt: skip
            while len(body) < length:
                body += sock.recv(65536)
            times.append((time.perf_counter() - started) * 1000)
            time.sleep(0.01)
    finally:
        sock.close()
    return times


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * fraction))]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.protection_bench", description=__doc__)
    parser.add_argument("--seconds", type=float, default=4.0)
    args = parser.parse_args(argv)
    if (os.cpu_count() or 1) < 2:
        print("protection: fewer than 2 cores, no pinned figure")
        return
    tools = find_tools(install=os.geteuid() == 0, want_nginx=False, want_wrk=True)
    if tools.wrk is None:
        print("protection: wrk not available (make bench installs it as root); skipped")
        return
    workdir = Path(tempfile.mkdtemp(prefix="edgecache-protbench-"))
    origin_port = free_port()
    origin = subprocess.Popen([sys.executable, "-m", "origin_stub", "--port", str(origin_port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
                              preexec_fn=pinned_to(LOAD_CPUS))  # fmt: skip
    origin_url = f"http://127.0.0.1:{origin_port}"
    processes = [origin]
    try:
        wait_http(f"{origin_url}/_stub/counters", 30)
        figures: dict[str, float] = {}
        for name, protection in (("hits", ""), ("refusals", "rate = 1\nburst = 0\n")):
            edge, port = start_edge(workdir, origin_url, protection, name)
            processes.append(edge)
            url = f"http://127.0.0.1:{port}/obj/hot?size=1024&max_age=600"
            wrk(tools.wrk, url, 16, 1)  # warm: the object, the first request of the bucket
            figures[name] = statistics.median(wrk(tools.wrk, url, 64, args.seconds)[0] for _ in range(3))
            stop_process(edge)
        edge, port = start_edge(workdir, origin_url, "max_connections_per_ip = 64\nrate = 2000\nburst = 4000\n",
                                "flood")  # fmt: skip
        processes.append(edge)
        calm_client(port, 0.3)  # warm
        idle = calm_client(port, args.seconds)
        flooded: list[float] = []
        runner = threading.Thread(target=lambda: flooded.extend(calm_client(port, args.seconds)))
        load = threading.Thread(
            target=wrk, args=(tools.wrk, f"http://127.0.0.1:{port}/obj/hot?size=1024&max_age=600", 1000,
                              args.seconds + 1))  # fmt: skip
        load.start()
        time.sleep(0.5)
        runner.start()
        runner.join()
        load.join()
        print(
            f"protection (pinned, 1 worker): 1 KiB hits {figures['hits']:,.0f} req/s, refusals (429) "
            f"{figures['refusals']:,.0f} req/s ({figures['refusals'] / figures['hits']:.2f}x the hit rate; "
            f"target >= 1.0x); a client on another address during a 1,000-connection flood: "
            f"p50 {percentile(flooded, 0.5):.2f} ms, p99 {percentile(flooded, 0.99):.2f} ms "
            f"(idle edge: p50 {percentile(idle, 0.5):.2f} ms, p99 {percentile(idle, 0.99):.2f} ms)",
            flush=True,
        )
    finally:
        for process in reversed(processes):
            stop_process(process)
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
