"""A region as one cache, measured: origin requests and hit ratio for one working set.

Starts the origin stub and, in turn, one edge; three edges that do not know each other (islands);
three edges of one region with peer fill (``[cluster]``); and one edge with three times the cache.
Each small edge holds less than the working set (``--objects`` times ``--size`` bytes; its memory and
disk tiers are ``--capacity`` bytes each); clients are spread over a scenario's edges round-robin,
as an L4 balancer would, in shuffled rounds (seeded).  Prints, per scenario, the origin requests,
the hit ratio after the first (cold) round — the share of requests the origin did not see — and
the median request time.  Bounded in count and time; prints figures, asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from bench.edge_bench import free_port, wait_http

TOKEN = "region-bench"


@dataclass
class Scenario:
    name: str
    edges: int
    capacity: int  # bytes of memory and of disk per edge
    cluster: bool


@dataclass
class Figures:
    origin_requests: int
    requests: int
    warm_hit_ratio: float
    median_ms: float


def origin_total(origin: str) -> int:
    with urllib.request.urlopen(f"{origin}/_stub/counters", timeout=30) as resp:
        return int(json.load(resp)["total"])


def start_scenario(
    scenario: Scenario, origin: str, workdir: Path
) -> tuple[list[subprocess.Popen[bytes]], list[tuple[str, str]]]:
    """Start the scenario's edges; their (public, admin) URLs once every one is ready."""
    ports = [(free_port(), free_port()) for _ in range(scenario.edges)]
    inventory = workdir / "inventory.toml"
    inventory.write_text(
        "replication = 1\n"
        + "".join(
            f'\n[[edges]]\nname = "e{index}"\nregion = "r"\nlatitude = 0\nlongitude = 0\n'
            f'url = "http://127.0.0.1:{public}"\nadmin_url = "http://127.0.0.1:{admin}"\n'
            for index, (public, admin) in enumerate(ports)
        )
    )
    processes: list[subprocess.Popen[bytes]] = []
    for index, (public, admin) in enumerate(ports):
        config = workdir / f"e{index}.toml"
        text = (
            f'origin = "{origin}"\nname = "e{index}"\n[cache]\nmemory_max_bytes = {scenario.capacity}\n'
            f"memory_max_object_bytes = 65536\ndisk_max_bytes = {scenario.capacity}\n"
        )
        if scenario.cluster:
            text += (
                f'[cluster]\ninventory = "{inventory}"\nself = "e{index}"\ntoken = "{TOKEN}"\n'
                "health_interval = 0.2\nfall = 2\nrise = 1\n"
            )
        config.write_text(text)
        argv = [
            sys.executable, "-m", "edge", "--config", str(config),
            "--listen", f"127.0.0.1:{public}", "--admin-listen", f"127.0.0.1:{admin}",
            "--cache-dir", str(workdir / f"cache-{index}"), "--workers", "1",
            "--access-log", "off", "--log-level", "warning",
        ]  # fmt: skip
        quiet = subprocess.DEVNULL
        processes.append(subprocess.Popen(argv, stdout=quiet, stderr=quiet, start_new_session=True))
    urls = [(f"http://127.0.0.1:{public}", f"http://127.0.0.1:{admin}") for public, admin in ports]
    for _, admin_url in urls:
        wait_http(f"{admin_url}/readyz", timeout=60)
    if scenario.cluster and scenario.edges > 1:
        deadline = time.monotonic() + 30
        while not all(_peers_healthy(admin_url) for _, admin_url in urls):
            if time.monotonic() > deadline:
                raise RuntimeError("the edges never saw their peers healthy")
            time.sleep(0.1)
    return processes, urls


def _peers_healthy(admin: str) -> bool:
    with urllib.request.urlopen(f"{admin}/cluster", timeout=5) as resp:
        return all(peer["healthy"] for peer in json.load(resp)["peers"])


def stop(processes: list[subprocess.Popen[bytes]]) -> None:
    for process in processes:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
    for process in processes:
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(5)


async def drive(
    edges: list[str], origin: str, paths: list[str], rounds: int, seed: int, budget_s: float
) -> Figures:
    """Every path once per round, rounds shuffled, requests spread over ``edges`` round-robin."""
    shuffler = random.Random(seed)
    times: list[float] = []
    before = origin_total(origin)
    after_first = before
    requests = 0
    deadline = time.monotonic() + budget_s
    async with aiohttp.ClientSession() as client:
        for round_index in range(rounds):
            order = list(paths)
            shuffler.shuffle(order)
            for path in order:
                if time.monotonic() > deadline:
                    break
                started = time.perf_counter()
                async with client.get(edges[requests % len(edges)] + path) as resp:
                    await resp.read()
                    if resp.status != 200:
                        raise RuntimeError(f"{path}: {resp.status}")
                times.append(time.perf_counter() - started)
                requests += 1
            if round_index == 0:
                after_first = origin_total(origin)
    total = origin_total(origin)
    warm_requests = requests - len(paths)
    warm_misses = total - after_first
    return Figures(
        origin_requests=total - before,
        requests=requests,
        warm_hit_ratio=1 - warm_misses / warm_requests if warm_requests > 0 else 0.0,
        median_ms=statistics.median(times) * 1000,
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.region_bench", description=__doc__)
    parser.add_argument("--objects", type=int, default=120)
    parser.add_argument("--size", type=int, default=20000, help="bytes per object")
    parser.add_argument("--capacity", type=int, default=1 << 20, help="memory and disk bytes of a small edge")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--budget", type=float, default=120.0, help="seconds at most per scenario")
    args = parser.parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="edgecache-regionbench-"))
    origin_port = free_port()
    origin = f"http://127.0.0.1:{origin_port}"
    origin_process = subprocess.Popen(
        [sys.executable, "-m", "origin_stub", "--port", str(origin_port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    scenarios = [
        Scenario("1 edge", 1, args.capacity, cluster=False),
        Scenario("3 edges, islands", 3, args.capacity, cluster=False),
        Scenario("3 edges, peer fill", 3, args.capacity, cluster=True),
        Scenario("1 edge, 3x cache", 1, 3 * args.capacity, cluster=False),
    ]
    working_set = args.objects * args.size
    print(
        f"region: working set {args.objects} objects x {args.size} B = {working_set / 1e6:.1f} MB, "
        f"small edge cache {args.capacity / 1e6:.1f} MB memory + {args.capacity / 1e6:.1f} MB disk, "
        f"{args.rounds} shuffled rounds spread round-robin over the edges",
        flush=True,
    )
    try:
        wait_http(f"{origin}/_stub/counters", timeout=30)
        for index, scenario in enumerate(scenarios):
            scenario_dir = workdir / f"s{index}"
            scenario_dir.mkdir()
            processes, urls = start_scenario(scenario, origin, scenario_dir)
            try:
                paths = [f"/obj/region-{index}-{n}?size={args.size}&max_age=3600" for n in range(args.objects)]
                figures = asyncio.run(
                    drive([public for public, _ in urls], origin, paths, args.rounds, args.seed, args.budget)
                )
            finally:
                stop(processes)
            print(
                f"  {scenario.name:<20} origin requests {figures.origin_requests:>4} for {figures.requests} "
                f"requests ({args.objects} distinct); hit ratio after the cold round {figures.warm_hit_ratio:.2f}; "
                f"median {figures.median_ms:.2f} ms",
                flush=True,
            )
    finally:
        stop([origin_process])


if __name__ == "__main__":
    main()
