"""``python -m bench.router_bench``: the router's redirects per second per core, latency and decision cost.

Prints, never asserts.  What it does:

1. starts five stand-in edges in three regions (two in ``us-east``, two in ``eu-west``, one in ``ap-southeast``):
   one small aiohttp process whose sites answer ``/readyz`` with ``{"ready": true}``, so the
   router's real health checker finds them healthy (clients are only redirected to them, never
   sent, so they serve nothing else);
2. starts the real router (``python -m edge.router``) with the demo geo database
   (``geodb/demo-city.mmdb``), ``--trust-proxy 127.0.0.0/8`` and, by default, no access log; on a
   machine with two cores or more it is pinned to core 0 and the load generator to core 1;
3. drives a load bounded in time and in requests: ``wrk`` (one thread, a Lua script that gives
   every request another client address in ``X-Forwarded-For`` — addresses from every network
   of the demo database, some the database does not know, some private — and another path), or,
   without wrk, a small asyncio client in another process;
4. reads the router's CPU time (utime + stime from ``/proc/<pid>/stat``) before and after each
   round, and its own ``edgecache_router_decision_seconds`` histogram from ``/metrics``.

Figures (each the median over ``rounds``): redirects/s (wall clock), redirects per router
CPU-second (= per core), p50/p99 latency in ms as the load generator saw it, the mean decision
time inside the router, and an in-process micro-benchmark of one decision through
:class:`edge.router.app.Router` with its memos warm and, for comparison, without any memo
(client address + geo lookup + ``select_edge``).

Every process started here is stopped by its PID; everything listens on 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
import json
import os
import random
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEMO_GEODB = PROJECT_ROOT / "geodb" / "demo-city.mmdb"
DEMO_SOURCE = PROJECT_ROOT / "geodb" / "source.csv"
CLK_TCK = os.sysconf("SC_CLK_TCK")
HOST = "cdn.example"

# The targets for the router.
TARGET_PER_CORE = 50_000.0
TARGET_P99_MS = 5.0

# name, region, latitude, longitude, country, continent, weight: the demo's three regions.
EDGES = (
    ("us-east-1", "us-east", 38.9, -77.0, "US", "NA", 1.0),
    ("us-east-2", "us-east", 39.04, -77.49, "US", "NA", 1.0),
    ("eu-west-1", "eu-west", 53.35, -6.26, "IE", "EU", 1.0),
    ("eu-west-2", "eu-west", 53.33, -6.25, "IE", "EU", 2.0),
    ("ap-southeast-1", "ap-southeast", 1.35, 103.82, "SG", "AS", 1.0),
)

# Bounds on every load: a round never runs longer than this nor sends more requests than this.
MAX_ROUND_SECONDS = 60.0
MAX_REQUESTS_PER_SECOND = 100_000


def log(message: str) -> None:
    print(f"  .. {message}", file=sys.stderr, flush=True)


# --- what the clients ask for --------------------------------------------------------------------


def client_addresses(count: int = 4096, seed: int = 5) -> list[str]:
    """Client addresses, deterministic: mostly from the demo database's networks, some not in it.

    About 80 % come from the networks in ``geodb/source.csv`` (every region and fallback case of
    the demo), 10 % are public addresses the database does not know, 5 % private addresses (not
    looked up at all) and 5 % IPv6 in the documentation range.
    """
    rng = random.Random(seed)
    networks: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
    for line in DEMO_SOURCE.read_text(encoding="utf-8").splitlines():
        if not line or line.startswith("#") or line.startswith("network,"):
            continue
        with contextlib.suppress(ValueError):
            networks.append(ipaddress.ip_network(line.split(",", 1)[0].strip()))
    if not networks:
        networks.append(ipaddress.ip_network("198.51.100.0/24"))
    out: list[str] = []
    for index in range(count):
        kind = index % 20
        if kind < 16:
            network = networks[rng.randrange(len(networks))]
            size = min(network.num_addresses, 1 << 24)
            out.append(str(network.network_address + rng.randrange(size)))
        elif kind < 18:
            out.append(f"{rng.randrange(11, 60)}.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(1, 255)}")
        elif kind < 19:
            out.append(f"10.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(1, 255)}")
        else:
            out.append(f"2001:db8:{rng.randrange(1, 4):x}::{rng.randrange(1, 0xFFFF):x}")
    return out


def request_paths(count: int = 512, seed: int = 7) -> list[str]:
    rng = random.Random(seed)
    kinds = ("img/{n}.png", "js/app.{n}.js", "video/seg-{n}.ts", "api/v1/items/{n}?page=2", "{n}")
    return ["/" + kinds[index % len(kinds)].format(n=rng.randrange(1_000_000)) for index in range(count)]


# --- stand-in edges ------------------------------------------------------------------------------


async def _serve_fake_edges(count: int) -> None:
    """``--fake-edges N``: N sites answering ``/readyz``; print their ports as JSON; stop on SIGTERM."""
    from aiohttp import web

    async def readyz(request: web.Request) -> web.Response:
        return web.json_response({"ready": True})

    app = web.Application()
    app.router.add_get("/readyz", readyz)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    ports: list[int] = []
    for _ in range(count):
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        ports.append(runner.addresses[-1][1])
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    print(json.dumps({"ports": ports}), flush=True)
    try:
        await asyncio.wait_for(stop.wait(), timeout=3600)  # never outlive a forgotten parent for long
    except TimeoutError:
        pass
    finally:
        await runner.cleanup()


def inventory_toml(admin_ports: Sequence[int]) -> str:
    lines = ['region_fallback = ["eu-west", "us-east", "ap-southeast"]', "replication = 1"]
    for (name, region, lat, lon, country, continent, weight), port in zip(EDGES, admin_ports, strict=True):
        lines += [
            "",
            "[[edges]]",
            f'name = "{name}"',
            f'region = "{region}"',
            f"latitude = {lat}",
            f"longitude = {lon}",
            f'url = "http://{name}.edges.example"',
            f'admin_url = "http://127.0.0.1:{port}"',
            f'country = "{country}"',
            f'continent = "{continent}"',
            f"weight = {weight}",
        ]
    return "\n".join(lines) + "\n"


# --- processes -----------------------------------------------------------------------------------


def _pinned(cpus: set[int] | None) -> Any:
    if not cpus:
        return None

    def pin() -> None:
        os.sched_setaffinity(0, cpus)

    return pin


def core_plan() -> tuple[set[int] | None, set[int] | None]:
    """(router cores, load-generator cores): one core each when there are two or more."""
    try:
        available = sorted(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return None, None
    if len(available) < 2:
        return None, None
    return {available[0]}, {available[1]}


def stop_process(process: subprocess.Popen[Any], timeout: float = 10.0) -> None:
    """SIGTERM by PID, wait, SIGKILL by PID if it hangs."""
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.kill(process.pid, signal.SIGKILL)
            process.wait(5)


def read_line(process: subprocess.Popen[str], timeout: float, what: str) -> str:
    """The first stdout line of ``process`` within ``timeout`` seconds."""
    assert process.stdout is not None
    import selectors

    with selectors.DefaultSelector() as selector:
        selector.register(process.stdout, selectors.EVENT_READ)
        if not selector.select(timeout):
            raise RuntimeError(f"{what}: no output within {timeout:g} s")
    line = process.stdout.readline()
    if not line:
        raise RuntimeError(f"{what}: exited with {process.wait(5)} before it was ready")
    return line


def cpu_seconds(pid: int) -> float:
    text = Path(f"/proc/{pid}/stat").read_text()
    fields = text[text.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def tree_cpu_seconds(pid: int) -> float:
    """CPU seconds of ``pid`` and its children (nginx: master and workers)."""
    total = 0.0
    pending = [pid]
    while pending:
        current = pending.pop()
        with contextlib.suppress(OSError):
            total += cpu_seconds(current)
            children = Path(f"/proc/{current}/task/{current}/children").read_text().split()
            pending.extend(int(child) for child in children)
    return total


NGINX_REDIRECT_CONF = """\
# nginx answering every request with a static redirect: the ceiling a redirector on this machine
# can be compared with (same wrk script, same core).
{user}
worker_processes 1;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    {access_log}
    keepalive_requests 1000000;
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        location / {{ return 302 http://127.0.0.1:8101$request_uri; }}
    }}
}}
"""


@contextlib.contextmanager
def running_nginx(
    workdir: Path, access_log: bool, cpus: set[int] | None
) -> Iterator[tuple[subprocess.Popen[str], str]]:
    binary = shutil.which("nginx")
    if binary is None:
        raise RuntimeError("nginx is not installed")
    prefix = workdir / "nginx"
    prefix.mkdir(parents=True, exist_ok=True)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    log_line = f"access_log {prefix}/access.log combined;" if access_log else "access_log off;"
    user = "user root;" if os.geteuid() == 0 else ""
    (prefix / "nginx.conf").write_text(
        NGINX_REDIRECT_CONF.format(user=user, dir=prefix, port=port, access_log=log_line), encoding="utf-8"
    )
    process = subprocess.Popen(
        [binary, "-p", str(prefix), "-e", str(prefix / "error.log"), "-c", "nginx.conf", "-g", "daemon off;"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL, text=True,
        preexec_fn=_pinned(cpus),  # no threads in this process: preexec_fn is safe
    )  # fmt: skip
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 10
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                    break
            except OSError:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise RuntimeError("nginx did not start") from None
                time.sleep(0.05)
        yield process, url
    finally:
        stop_process(process)


def decision_histogram(admin_url: str) -> tuple[float, float]:
    """(sum of seconds, count) of the router's ``edgecache_router_decision_seconds``."""
    with urllib.request.urlopen(admin_url + "/metrics", timeout=5) as response:
        text = response.read().decode()
    total = re.search(r"^edgecache_router_decision_seconds_sum (\S+)$", text, re.MULTILINE)
    count = re.search(r"^edgecache_router_decision_seconds_count (\S+)$", text, re.MULTILINE)
    return (float(total[1]) if total else 0.0), (float(count[1]) if count else 0.0)


def wait_ready(admin_url: str, edges: int, timeout: float = 20.0) -> None:
    """Until the router reports every edge healthy."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with (
            contextlib.suppress(OSError, ValueError),
            urllib.request.urlopen(admin_url + "/health", timeout=2) as answer,
        ):
            if json.loads(answer.read()).get("healthy") == edges:
                return
        time.sleep(0.1)
    raise RuntimeError(f"router at {admin_url}: not every edge healthy within {timeout:g} s")


@dataclass
class RunningRouter:
    process: subprocess.Popen[str]
    url: str
    admin_url: str


@contextlib.contextmanager
def running_router(workdir: Path, access_log: bool, cpus: set[int] | None) -> Iterator[RunningRouter]:
    """Stand-in edges plus the router, both stopped by PID on the way out."""
    edges = subprocess.Popen(
        [sys.executable, "-m", "bench.router_bench", "--fake-edges", str(len(EDGES))],
        stdout=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
        cwd=PROJECT_ROOT,
    )
    router: subprocess.Popen[str] | None = None
    try:
        ports = json.loads(read_line(edges, 20, "stand-in edges"))["ports"]
        inventory = workdir / "inventory.toml"
        inventory.write_text(inventory_toml(ports), encoding="utf-8")
        command = [
            sys.executable, "-m", "edge.router",
            "--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0",
            "--edges", str(inventory), "--geodb", str(DEMO_GEODB),
            "--trust-proxy", "127.0.0.0/8",
            "--health-interval", "1", "--log-level", "warning",
            "--purge-state-dir", str(workdir / "purges"),
            "--access-log" if access_log else "--no-access-log",
        ]  # fmt: skip
        with (workdir / "router.log").open("w") as stderr:
            router = subprocess.Popen(
                command,
                stdout=subprocess.PIPE,
                stderr=stderr,
                stdin=subprocess.DEVNULL,
                text=True,
                cwd=PROJECT_ROOT,
                preexec_fn=_pinned(cpus),  # no threads in this process: preexec_fn is safe
            )
        line = read_line(router, 30, "router")
        found = re.search(r"on (http://\S+) \(admin (http://\S+)\)", line)
        if not found:
            raise RuntimeError(f"router: unexpected first line {line!r}")
        running = RunningRouter(router, found[1], found[2])
        wait_ready(running.admin_url, len(EDGES))
        yield running
    finally:
        if router is not None:
            stop_process(router)
        stop_process(edges)


# --- load generators -----------------------------------------------------------------------------


@dataclass
class Load:
    requests: int
    seconds: float
    p50_ms: float
    p99_ms: float
    bad: int  # answers other than 302, plus socket errors


def _lua_string(text: str) -> str:
    return json.dumps(text)  # ASCII JSON strings are valid Lua strings


def wrk_script(addresses: Sequence[str], paths: Sequence[str], cap: int) -> str:
    return "\n".join(
        [
            "-- edgecache router bench: a different client (X-Forwarded-For) and path per request.",
            "local addrs = {" + ",".join(_lua_string(a) for a in addresses) + "}",
            "local paths = {" + ",".join(_lua_string(p) for p in paths) + "}",
            f"local cap = {cap}",
            "local n = 0",
            "function request()",
            "  n = n + 1",
            "  if n > cap then wrk.thread:stop() end",
            "  local headers = {}",
            '  headers["X-Forwarded-For"] = addrs[(n % #addrs) + 1]',
            f'  headers["Host"] = {_lua_string(HOST)}',
            '  return wrk.format("GET", paths[((n * 7) % #paths) + 1], headers)',
            "end",
            "function done(summary, latency, requests)",
            "  local e = summary.errors",
            '  io.write(string.format("BENCH %d %d %d %d %d\\n", summary.requests, summary.duration,',
            "    latency:percentile(50), latency:percentile(99),",
            "    e.connect + e.read + e.write + e.timeout + e.status))",
            "end",
        ]
    )


def run_wrk(wrk: str, url: str, script: Path, seconds: float, connections: int, cpus: set[int] | None) -> Load:
    duration = f"-d{max(1, round(seconds))}s"
    command = [wrk, "-t1", f"-c{connections}", duration, "--timeout", "2s", "-s", str(script), url]
    done = subprocess.run(
        command,
        capture_output=True,
        text=True,
        timeout=seconds + 30,
        check=False,
        preexec_fn=_pinned(cpus),  # no threads in this process: preexec_fn is safe
    )
    found = re.search(r"^BENCH (\d+) (\d+) (\d+) (\d+) (\d+)$", done.stdout, re.MULTILINE)
    if not found:
        raise RuntimeError(f"wrk: unexpected output:\n{done.stdout}\n{done.stderr}")
    requests, duration_us, p50_us, p99_us, errors = (int(value) for value in found.groups())
    return Load(requests, duration_us / 1e6, p50_us / 1000, p99_us / 1000, errors)


_CONTENT_LENGTH = re.compile(rb"\r\ncontent-length:\s*(\d+)", re.IGNORECASE)


async def _python_load(spec: dict[str, Any]) -> dict[str, Any]:
    """``--load SPEC``: keep-alive connections sending GETs, bounded in time and count."""
    host, port = spec["host"], int(spec["port"])
    addresses, paths = spec["addresses"], spec["paths"]
    requests = [
        f"GET {paths[(index * 7) % len(paths)]} HTTP/1.1\r\nHost: {HOST}\r\nX-Forwarded-For: {address}\r\n\r\n".encode()
        for index, address in enumerate(addresses)
    ]
    deadline = time.perf_counter() + float(spec["seconds"])
    cap = int(spec["cap"])
    latencies: list[float] = []
    bad = 0

    async def connection(index: int) -> None:
        nonlocal bad
        try:
            reader, writer = await asyncio.open_connection(host, port)
        except OSError:
            bad += 1
            return
        try:
            while time.perf_counter() < deadline and len(latencies) < cap:
                index += 1
                started = time.perf_counter()
                writer.write(requests[index % len(requests)])
                head = await reader.readuntil(b"\r\n\r\n")
                length = _CONTENT_LENGTH.search(head)
                if length:
                    await reader.readexactly(int(length[1]))
                latencies.append(time.perf_counter() - started)
                if head[9:12] != b"302":
                    bad += 1
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            bad += 1
        finally:
            writer.close()

    began = time.perf_counter()
    await asyncio.gather(*(connection(index * 7919) for index in range(int(spec["connections"]))))
    elapsed = time.perf_counter() - began
    latencies.sort()

    def pick(q: float) -> float:
        return latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1000 if latencies else 0.0

    return {"requests": len(latencies), "seconds": elapsed, "p50_ms": pick(0.5), "p99_ms": pick(0.99), "bad": bad}


def run_python_load(
    url: str, addresses: Sequence[str], paths: Sequence[str], seconds: float, connections: int, cap: int,
    cpus: set[int] | None,
) -> Load:  # fmt: skip
    found = re.fullmatch(r"http://([\d.]+):(\d+)", url)
    if not found:
        raise ValueError(url)
    spec = {
        "host": found[1], "port": int(found[2]), "addresses": list(addresses), "paths": list(paths),
        "seconds": seconds, "connections": connections, "cap": cap,
    }  # fmt: skip
    done = subprocess.run(
        [sys.executable, "-m", "bench.router_bench", "--load", json.dumps(spec)],
        capture_output=True,
        text=True,
        timeout=seconds + 30,
        check=False,
        cwd=PROJECT_ROOT,
        preexec_fn=_pinned(cpus),  # no threads in this process: preexec_fn is safe
    )
    if done.returncode != 0:
        raise RuntimeError(f"load client failed:\n{done.stderr}")
    data = json.loads(done.stdout)
    return Load(
        int(data["requests"]), float(data["seconds"]), float(data["p50_ms"]), float(data["p99_ms"]), int(data["bad"])
    )


# --- the in-process decision cost ------------------------------------------------------------------


def decision_costs(samples: int = 20_000, max_seconds: float = 10.0) -> dict[str, float]:
    """µs per decision in-process (CPU time of this thread), each over the same ``samples`` requests.

    ``lookup_us``: what the public handler pays — the memoised client/location/zone lookup plus
    :meth:`Selector.choose` (edge and rule only); ``lookup_us_decision``: the same with a whole
    :class:`Decision` (reason and owners; what the access log and the debug header need);
    ``lookup_us_first_visit``: the handler's path for clients never seen before (each address
    once: client address and geo lookup computed, the region step usually remembered by
    coordinates); ``lookup_us_no_memo``: no memo at all — client address, geo lookup and the full
    :func:`select_edge`; ``select_edge_us``: the full ``select_edge`` alone (every candidate);
    ``selector_us``: ``Selector.choose`` alone.
    """
    from edge.router.app import Router, open_router_parts
    from edge.router.clientip import client_address
    from edge.router.config import RouterSettings
    from edge.router.select import select_edge

    addresses = client_addresses()
    paths = request_paths()
    peer = "127.0.0.1"
    with tempfile.TemporaryDirectory(prefix="router-bench-") as tmp:
        inventory = Path(tmp) / "inventory.toml"
        inventory.write_text(inventory_toml(range(9001, 9001 + len(EDGES))), encoding="utf-8")
        settings = RouterSettings(
            edges=inventory, geodb=DEMO_GEODB, trust_proxy=["127.0.0.0/8"], access_log=False,
            purge_state_dir=Path(tmp) / "purges",
        )  # fmt: skip
        parts = open_router_parts(settings)
        try:
            for edge in parts.inventory.edges:
                parts.health.record(edge.name, True)
            router = Router(settings, parts.inventory, parts.locator, parts.coverage, parts.health)
            healthy = parts.health.healthy_map()
            trusted = settings.trusted_networks
            work = [([addresses[i % len(addresses)]], HOST + paths[(i * 7) % len(paths)]) for i in range(samples)]
            places = {address: parts.locator.locate(ipaddress.ip_address(address)) for address in addresses}

            def timed(step: Any, requests: list[tuple[list[str], str]] | None = None) -> float:
                if requests is None:
                    requests = work
                    for xff, key in work[: len(addresses)]:  # warm the memos and the code
                        step(xff, key)
                # CPU time of this thread, not wall time: other work on a shared machine does not count
                deadline = time.perf_counter() + max_seconds
                began = time.thread_time()
                done = 0
                for xff, key in requests:
                    step(xff, key)
                    done += 1
                    if (done & 1023) == 0 and time.perf_counter() > deadline:
                        break
                return (time.thread_time() - began) / done * 1e6

            def hot(xff: list[str], key: str) -> None:
                _, location, zone, token = router.resolve(peer, xff)
                router.selector().choose(location, key, zone, token)

            fresh = Router(settings, parts.inventory, parts.locator, parts.coverage, parts.health)
            unseen = [
                ([address], key) for address, (_, key) in zip(client_addresses(samples, seed=99), work, strict=False)
            ]

            def first_visit(xff: list[str], key: str) -> None:
                _, location, zone, token = fresh.resolve(peer, xff)
                fresh.selector().choose(location, key, zone, token)

            def explained(xff: list[str], key: str) -> None:
                _, location, zone, token = router.resolve(peer, xff)
                router.selector().decide(location, key, zone, token)

            def cold(xff: list[str], key: str) -> None:
                client = client_address(peer, xff, trusted)
                assert client.address is not None
                location = parts.locator.locate(client.address)
                select_edge(parts.inventory, healthy, location, key, None, str(client.address))

            def full_select(xff: list[str], key: str) -> None:
                select_edge(parts.inventory, healthy, places[xff[0]], key, None, xff[0])

            def fast_select(xff: list[str], key: str) -> None:
                selector.choose(places[xff[0]], key, None, xff[0])

            selector = router.selector()
            return {
                "lookup_us": timed(hot),
                "lookup_us_first_visit": timed(first_visit, unseen),
                "lookup_us_decision": timed(explained),
                "lookup_us_no_memo": timed(cold),
                "select_edge_us": timed(full_select),
                "selector_us": timed(fast_select),
            }
        finally:
            parts.locator.close()


# --- the benchmark ---------------------------------------------------------------------------------


def _median(values: Sequence[float]) -> float:
    return float(statistics.median(values)) if values else 0.0


def run_router_bench(
    seconds: float, rounds: int, *, connections: int = 16, access_log: bool = False, load_tool: str = "auto"
) -> dict[str, float]:
    """Start stand-in edges and the router, load it ``rounds`` times for ``seconds`` each; medians.

    Keys: ``redirects_per_s``, ``redirects_per_cpu_s`` (per core), ``router_cpu_s`` (per round),
    ``p50_ms``, ``p99_ms``, ``bad`` (non-302 answers and socket errors), ``decision_us`` (mean
    inside the router under load, from its metrics), ``lookup_us`` / ``lookup_us_decision`` /
    ``lookup_us_no_memo`` / ``select_edge_us`` / ``selector_us`` (in-process, see
    :func:`decision_costs`), ``requests`` (per round), ``connections``, ``wrk`` (1 when
    wrk generated the load, 0 for the Python client).
    """
    seconds = min(max(1.0, seconds), MAX_ROUND_SECONDS)
    rounds = max(1, rounds)
    wrk = shutil.which("wrk") if load_tool in ("auto", "wrk") else None
    if load_tool == "wrk" and wrk is None:
        raise RuntimeError("wrk is not installed (apt-get install -y wrk)")
    router_cpus, load_cpus = core_plan()
    addresses, paths = client_addresses(), request_paths()
    cap = int(seconds * MAX_REQUESTS_PER_SECOND)
    per_round: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory(prefix="router-bench-") as tmp:
        workdir = Path(tmp)
        script = workdir / "router.lua"
        script.write_text(wrk_script(addresses, paths, cap), encoding="utf-8")
        with running_router(workdir, access_log, router_cpus) as router:
            # one short warm-up round: memos filled, code paths hot
            warmup = min(1.0, seconds)
            if wrk:
                run_wrk(wrk, router.url, script, warmup, connections, load_cpus)
            else:
                run_python_load(router.url, addresses, paths, warmup, connections, cap, load_cpus)
            for index in range(rounds):
                cpu0 = cpu_seconds(router.process.pid)
                sum0, count0 = decision_histogram(router.admin_url)
                if wrk:
                    load = run_wrk(wrk, router.url, script, seconds, connections, load_cpus)
                else:
                    load = run_python_load(router.url, addresses, paths, seconds, connections, cap, load_cpus)
                cpu = cpu_seconds(router.process.pid) - cpu0
                sum1, count1 = decision_histogram(router.admin_url)
                figures = {
                    "redirects_per_s": load.requests / load.seconds if load.seconds else 0.0,
                    "redirects_per_cpu_s": load.requests / cpu if cpu else 0.0,
                    "router_cpu_s": cpu,
                    "p50_ms": load.p50_ms,
                    "p99_ms": load.p99_ms,
                    "bad": float(load.bad),
                    "requests": float(load.requests),
                    "decision_us": (sum1 - sum0) / (count1 - count0) * 1e6 if count1 > count0 else 0.0,
                }
                log(
                    f"round {index + 1}/{rounds}: {figures['redirects_per_s']:.0f}/s, "
                    f"{figures['redirects_per_cpu_s']:.0f}/CPU-s, p99 {load.p99_ms:.2f} ms"
                )
                for key, value in figures.items():
                    per_round.setdefault(key, []).append(value)
        if wrk and shutil.which("nginx"):
            nginx_rounds: dict[str, list[float]] = {}
            with running_nginx(workdir, access_log, router_cpus) as (nginx, nginx_url):
                run_wrk(wrk, nginx_url, script, warmup, connections, load_cpus)
                for index in range(rounds):
                    cpu0 = tree_cpu_seconds(nginx.pid)
                    load = run_wrk(wrk, nginx_url, script, seconds, connections, load_cpus)
                    cpu = tree_cpu_seconds(nginx.pid) - cpu0
                    nginx_rounds.setdefault("nginx_per_s", []).append(load.requests / load.seconds)
                    nginx_rounds.setdefault("nginx_per_cpu_s", []).append(load.requests / cpu if cpu else 0.0)
                    nginx_rounds.setdefault("nginx_p99_ms", []).append(load.p99_ms)
                    log(f"nginx round {index + 1}/{rounds}: {load.requests / load.seconds:.0f}/s")
            per_round.update(nginx_rounds)
    result = {key: _median(values) for key, values in per_round.items()}
    result.update(decision_costs())
    result["connections"] = float(connections)
    result["wrk"] = 1.0 if wrk else 0.0
    result["pinned"] = 1.0 if router_cpus else 0.0
    return result


def render(result: dict[str, float], seconds: float, rounds: int, access_log: bool) -> str:
    tool = "wrk, 1 thread" if result.get("wrk") else "Python asyncio client"
    pinned = "router on core 0, load on core 1" if result.get("pinned") else "not pinned (fewer than 2 cores)"
    per_core = result["redirects_per_cpu_s"]
    p99 = result["p99_ms"]
    lines = [
        f"router benchmark: {len(EDGES)} stand-in edges in 3 regions, demo geo database, access log "
        f"{'on (json)' if access_log else 'off'}",
        f"load: {tool}, {result['connections']:.0f} connections, {seconds:g} s x {rounds} rounds (medians); {pinned}",
        "",
        f"  redirects/s (wall)          {result['redirects_per_s']:>10.0f}",
        f"  redirects per CPU-second    {per_core:>10.0f}   (target >= {TARGET_PER_CORE:.0f}/core: "
        f"{'met' if per_core >= TARGET_PER_CORE else 'not met'})",
        f"  router CPU per round (s)    {result['router_cpu_s']:>10.2f}",
        f"  latency p50 (ms)            {result['p50_ms']:>10.2f}",
        f"  latency p99 (ms)            {p99:>10.2f}   (target <= {TARGET_P99_MS:g} ms: "
        f"{'met' if p99 <= TARGET_P99_MS else 'not met'})",
        f"  non-302 answers / errors    {result['bad']:>10.0f}",
        *(
            [
                f"  nginx return 302 (/s)       {result['nginx_per_s']:>10.0f}   (same script, same core; "
                f"{result['nginx_per_cpu_s']:.0f}/CPU-s, p99 {result['nginx_p99_ms']:.2f} ms)",
                f"  router/nginx per CPU-second {per_core / result['nginx_per_cpu_s']:>10.2f}x",
            ]
            if result.get("nginx_per_cpu_s")
            else ["  nginx                       (not installed: no comparison)"]
        ),
        f"  decision in router (us)     {result['decision_us']:>10.1f}   (mean, router's own histogram)",
        f"  lookup, hot path (us)       {result['lookup_us']:>10.1f}   (in-process: memos + Selector.choose)",
        f"  lookup, new client (us)     {result['lookup_us_first_visit']:>10.1f}   (in-process: client + geo + choose)",
        f"  lookup with Decision (us)   {result['lookup_us_decision']:>10.1f}   (memos + Selector.decide: log on)",
        f"  lookup without memos (us)   {result['lookup_us_no_memo']:>10.1f}   (client address + geo + select_edge)",
        f"  select_edge alone (us)      {result['select_edge_us']:>10.1f}   (full path, every candidate)",
        f"  Selector.choose alone (us)  {result['selector_us']:>10.1f}   (fast path, memos warm)",
    ]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.router_bench",
        description="Router benchmark: redirects/s per core, latency, decision cost.",
    )
    parser.add_argument("--seconds", type=float, default=3.0, help="seconds per round (default 3, at most 60)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds; figures are medians (default 3)")
    parser.add_argument("--connections", type=int, default=16, help="concurrent connections (default 16)")
    parser.add_argument("--access-log", action="store_true", help="run the router with its JSON access log on")
    parser.add_argument("--load-tool", choices=["auto", "wrk", "python"], default="auto")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON instead of a table")
    parser.add_argument("--fake-edges", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--load", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.fake_edges:
        asyncio.run(_serve_fake_edges(args.fake_edges))
        return
    if args.load:
        print(json.dumps(asyncio.run(_python_load(json.loads(args.load)))))
        return
    result = run_router_bench(
        args.seconds, args.rounds, connections=args.connections, access_log=args.access_log, load_tool=args.load_tool
    )
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(render(result, min(max(1.0, args.seconds), MAX_ROUND_SECONDS), max(1, args.rounds), args.access_log))


if __name__ == "__main__":
    main()
