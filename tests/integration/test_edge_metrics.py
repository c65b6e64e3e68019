"""The metrics an operator coming from nginx/Varnish exporters looks for, from a real edge."""

from __future__ import annotations

import asyncio
import os
import re
import signal
from pathlib import Path

import aiohttp

from origin_stub import OriginStubServer
from tests.conftest import EdgeProcess, launch_edge
from tests.support.processes import children_of
from tests.support.wait import until


async def test_connections_client_latency_capacity_and_build_info(
    origin: OriginStubServer, tmp_path: Path, edge_processes: list[EdgeProcess]
) -> None:
    edge = launch_edge([
        "--origin", origin.url, "--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0",
        "--cache-dir", str(tmp_path / "cache"), "--workers", "2", "--access-log", "off",
    ])  # fmt: skip
    edge_processes.append(edge)
    async with aiohttp.ClientSession() as client:
        for _ in range(6):  # a miss, then hits on the fast path
            async with client.get(f"{edge.url}/obj/m?size=64&max_age=600") as resp:
                await resp.read()
                node = resp.headers["Cache-Status"].split(";", 1)[0]  # this edge's name
        async with client.get(f"{edge.url}/obj/m?size=64", headers={"Via": "1.1 looped-edge"}) as resp:
            await resp.read()  # not a loop: another node's name
        async with client.get(f"{edge.url}/obj/m?size=64", headers={"Via": f"1.1 {node}"}) as resp:
            assert resp.status == 508
    text = ""

    async def counted() -> bool:
        nonlocal text
        async with aiohttp.ClientSession() as client, client.get(f"{edge.admin_url}/metrics") as resp:
            text = await resp.text()
        match = re.search(r'^edgecache_request_seconds_count\{edge="[^"]+"\} (\S+)$', text, re.MULTILINE)
        looped = re.search(r'^edgecache_errors_total\{edge="[^"]+",reason="loop_detected",status="508"\} 1\.0$', text,
                           re.MULTILINE)  # fmt: skip
        return match is not None and float(match[1]) >= 6 and looped is not None

    await until(counted, timeout=20, what="six requests in edgecache_request_seconds")
    assert re.search(r'^edgecache_connections_accepted_total\{edge="[^"]+"\} [1-9]', text, re.MULTILINE)
    assert re.search(r'^edgecache_connections_active\{edge="[^"]+"\} ', text, re.MULTILINE)
    assert re.search(r'^edgecache_request_seconds_bucket\{edge="[^"]+",le="0\.005"\} [1-9]', text, re.MULTILINE)
    disk = re.search(r'^edgecache_tier_capacity_bytes\{edge="[^"]+",tier="disk"\} (\S+)$', text, re.MULTILINE)
    assert disk is not None
    assert float(disk[1]) > 0
    assert re.search(r'^edgecache_build_info\{edge="[^"]+",version="[^"]+"\} 1\.0$', text, re.MULTILINE)
    assert re.search(r"^process_resident_memory_bytes \d", text, re.MULTILINE)
    # process_* cover the supervisor and both workers, whichever worker answers the scrape: the
    # CPU counter never goes back between scrapes (one worker's would, read as a reset).
    assert re.search(r'^edgecache_processes\{edge="[^"]+"\} 3\.0$', text, re.MULTILINE)
    seen = []
    for _ in range(6):
        async with aiohttp.ClientSession() as client, client.get(f"{edge.admin_url}/metrics") as resp:
            cpu = re.search(r"^process_cpu_seconds_total (\S+)$", await resp.text(), re.MULTILINE)
        assert cpu is not None
        seen.append(float(cpu[1]))
    assert seen == sorted(seen)


async def scrape(admin_url: str) -> dict[str, float]:
    """The edge's request count and CPU seconds, as Prometheus would read them now."""
    async with aiohttp.ClientSession() as client, client.get(f"{admin_url}/metrics") as resp:
        text = await resp.text()
    count = re.search(r'^edgecache_request_seconds_count\{edge="[^"]+"\} (\S+)$', text, re.MULTILINE)
    cpu = re.search(r"^process_cpu_seconds_total (\S+)$", text, re.MULTILINE)
    assert count is not None
    assert cpu is not None
    fetched = sum(float(value) for value in re.findall(r"^edgecache_origin_requests_total\{[^}]*\} (\S+)$", text,
                                                        re.MULTILINE))  # fmt: skip
    return {"requests": float(count[1]), "cpu": float(cpu[1]), "origin_requests": fetched}


async def test_counters_never_go_back_when_a_worker_dies(
    origin: OriginStubServer, tmp_path: Path, edge_processes: list[EdgeProcess]
) -> None:
    """A worker that crashes takes nothing from the edge's sums: Prometheus would read the drop as
    a reset (a spike of everything the other workers counted), the dashboard as a restart."""
    edge = launch_edge([
        "--origin", origin.url, "--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0",
        "--cache-dir", str(tmp_path / "cache"), "--workers", "2", "--access-log", "off",
    ])  # fmt: skip
    edge_processes.append(edge)
    supervisor = edge.process.pid
    await until(lambda: len(children_of(supervisor)) == 2, what="two workers")
    for _ in range(40):  # new connections: both workers get some
        async with aiohttp.ClientSession() as client, client.get(f"{edge.url}/obj/c?size=64&max_age=600") as resp:
            await resp.read()

    async def all_published() -> bool:
        return (await scrape(edge.admin_url))["requests"] >= 40

    await until(all_published, timeout=20, what="the 40 requests in the edge's sums")
    before = await scrape(edge.admin_url)
    for victim in sorted(children_of(supervisor)):  # both: whichever fetched from the origin dies too
        os.kill(victim, signal.SIGKILL)
        await until(lambda victim=victim: victim not in children_of(supervisor) and len(children_of(supervisor)) == 2,
                    timeout=20, what="the supervisor replacing the killed worker")  # fmt: skip
        for _ in range(10):  # whichever worker answers, before and after the replacement publishes
            after = await scrape(edge.admin_url)
            assert after["requests"] >= before["requests"]
            assert after["cpu"] >= before["cpu"]
            assert after["origin_requests"] >= before["origin_requests"] >= 1


async def test_refused_requests_count_as_answers_by_class(
    origin: OriginStubServer, tmp_path: Path, edge_processes: list[EdgeProcess]
) -> None:
    """A request refused at the front end (never reaching the cache) is still a 4xx the operator
    sees: in /stats' classes (the dashboard's errors) and edgecache_responses_total."""
    edge = launch_edge([
        "--origin", origin.url, "--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0",
        "--cache-dir", str(tmp_path / "cache"), "--workers", "1", "--access-log", "off",
    ])  # fmt: skip
    edge_processes.append(edge)
    host, port = edge.url.removeprefix("http://").rsplit(":", 1)
    for request in (b"GARBAGE\r\n\r\n", b"GET / HTTP/9.9\r\nHost: a\r\n\r\n"):
        reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(request)
        answer = await reader.read()
        writer.close()
        assert answer.split(b" ", 2)[1] in (b"400", b"505")

    async def counted() -> bool:
        async with aiohttp.ClientSession() as client, client.get(f"{edge.admin_url}/stats") as resp:
            classes = (await resp.json())["by_code_class"]
        return classes.get("4xx", 0) == 1 and classes.get("5xx", 0) == 1

    await until(counted, timeout=20, what="the refused requests in /stats by class")
