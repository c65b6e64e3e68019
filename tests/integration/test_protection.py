"""``[protection]`` with real two-worker edges on loopback: rate limits that hold for the whole
edge, a cache-busting flood held to ``miss_rate`` at the origin, ``max_origin_inflight``, connection
caps, access rules by address and country, signed URLs, and trusted proxies."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from edge.signedurl import sign_url
from origin_stub import OriginStubServer
from tests.conftest import PROJECT_ROOT, EdgeProcess, free_port, launch_edge

DEMO_GEODB = PROJECT_ROOT / "geodb" / "demo-city.mmdb"
MAXMIND_TEST_DATA = Path(os.environ.get("EDGECACHE_MAXMIND_TEST_DATA", "/work/shared/geodb"))


def start(origin: OriginStubServer, tmp_path: Path, processes: list[EdgeProcess], protection: str,
          top: str = "", workers: int = 2) -> EdgeProcess:  # fmt: skip
    config = tmp_path / "edge.toml"
    config.write_text(f'origin = "{origin.url}"\n{top}\n[protection]\n{protection}')
    edge = launch_edge([
        "--config", str(config), "--listen", f"127.0.0.1:{free_port()}", "--admin-listen", "127.0.0.1:0",
        "--cache-dir", str(tmp_path / "cache"), "--workers", str(workers), "--access-log", "off",
    ])  # fmt: skip
    processes.append(edge)
    return edge


async def get(url: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    async with aiohttp.ClientSession() as client, client.get(url, headers=headers) as resp:
        return resp.status, dict(resp.headers), await resp.read()


def run_flood(url: str, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "tests.support.flood", url, *args], cwd=PROJECT_ROOT,
                            stdout=subprocess.PIPE, text=True)  # fmt: skip


def start_router(config: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "edge.router", "--config", str(config)], cwd=PROJECT_ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip


def flood_result(process: subprocess.Popen[str]) -> dict[str, Any]:
    out, _ = process.communicate(timeout=60)
    return json.loads(out)  # type: ignore[no-any-return]


async def p99_ms(url: str, headers: dict[str, str], count: int, pause: float = 0.015) -> float:
    """A well-behaved client (about 60 requests/s, under its own limit): its p99 in ms."""
    times = []
    async with aiohttp.ClientSession() as client:
        for _ in range(count):
            await asyncio.sleep(pause)
            started = time.perf_counter()
            async with client.get(url, headers=headers) as resp:
                await resp.read()
                assert resp.status == 200
            times.append((time.perf_counter() - started) * 1000)
    times.sort()
    return times[int(len(times) * 0.99) - 1]


async def test_a_flood_gets_burst_plus_rate_and_another_client_is_unaffected(
    origin: OriginStubServer, tmp_path: Path, edge_processes: list[EdgeProcess]
) -> None:
    edge = start(origin, tmp_path, edge_processes, 'rate = 100\nburst = 200\ntrust_proxy = ["127.0.0.0/8"]\n')
    url = f"{edge.url}/obj/flooded?size=1024&max_age=600"
    calm = {"X-Forwarded-For": "198.51.100.2"}
    assert (await get(url, calm))[0] == 200
    baseline = await p99_ms(url, calm, 100)
    flood = run_flood(url, "--rate", "5000", "--seconds", "3", "--connections", "16", "--xff", "198.51.100.1")
    await asyncio.sleep(0.5)  # measure inside the flood, not before it
    during = await p99_ms(url, calm, 100)
    result = flood_result(flood)
    accepted = result["statuses"].get("200", 0)
    refused = result["statuses"].get("429", 0)
    expected = 200 + 100 * result["seconds"]
    assert abs(accepted - expected) <= 0.1 * expected, (accepted, expected, result)  # across both workers
    assert refused > 4 * accepted
    assert during <= max(2 * baseline, baseline + 5.0), (baseline, during)
    status, headers, body = await get(url, {"X-Forwarded-For": "198.51.100.1"})
    assert status in (200, 429)
    if status == 429:
        assert int(headers["Retry-After"]) >= 1
        assert b"rate limit" in body
    async with aiohttp.ClientSession() as client, client.get(f"{edge.admin_url}/metrics") as resp:
        text = await resp.text()
    assert 'edgecache_protection_refusals_total{edge=' in text
    assert 'reason="rate"' in text


async def test_a_cache_busting_flood_is_held_to_miss_rate_at_the_origin(
    origin: OriginStubServer, tmp_path: Path, edge_processes: list[EdgeProcess]
) -> None:
    edge = start(origin, tmp_path, edge_processes,
                 'miss_rate = 20\nmiss_burst = 20\ntrust_proxy = ["127.0.0.0/8"]\n')  # fmt: skip
    warm = f"{edge.url}/obj/hot?size=64&max_age=600"
    attacker = {"X-Forwarded-For": "203.0.113.9"}
    assert (await get(warm, attacker))[0] == 200
    before = origin.state.total
    flood = run_flood(f"{edge.url}/obj/bust?size=64&max_age=600", "--rate", "2000", "--seconds", "2",
                      "--connections", "8", "--xff", "203.0.113.9", "--unique", "--max-requests", "2000")  # fmt: skip
    hits = 0
    while flood.poll() is None:
        status, headers, _ = await get(warm, attacker)  # the same client's hits still flow
        assert status == 200
        hits += headers.get("X-Cache") == "HIT"
    result = flood_result(flood)
    reached = origin.state.total - before
    allowed = 20 + 20 * result["seconds"]
    assert reached <= allowed * 1.1 + 1, (reached, allowed, result)
    assert reached >= 20
    assert result["statuses"].get("429", 0) > 1000
    assert hits > 5


async def test_max_origin_inflight_bounds_the_origins_concurrency(
    origin: OriginStubServer, tmp_path: Path, edge_processes: list[EdgeProcess]
) -> None:
    edge = start(origin, tmp_path, edge_processes, "max_origin_inflight = 3\n")
    hot = f"{edge.url}/obj/warm?size=16&max_age=600"
    assert (await get(hot))[0] == 200

    async def one(index: int) -> int:
        return (await get(f"{edge.url}/obj/slow{index}?size=16&max_age=600&delay_ms=600"))[0]

    tasks = [asyncio.ensure_future(one(index)) for index in range(12)]
    await asyncio.sleep(0.3)
    status, _headers, _ = await get(hot)  # hits are served while the origin is busy
    assert status == 200
    statuses = await asyncio.gather(*tasks)
    assert statuses.count(200) == 3, statuses  # exactly three reached the origin at once …
    assert statuses.count(503) == 9  # … the rest were told to come back, at once
    assert sum(1 for path in origin.state.paths if path.startswith("/obj/slow")) == 3
    status, _headers, _ = await get(f"{edge.url}/obj/slow0?size=16&max_age=600&delay_ms=600")
    assert status == 200  # the slots are free again


async def test_connections_beyond_the_per_address_cap_are_closed_at_once(
    origin: OriginStubServer, tmp_path: Path, edge_processes: list[EdgeProcess]
) -> None:
    edge = start(origin, tmp_path, edge_processes, "max_connections_per_ip = 4\n")
    host, port = "127.0.0.1", int(edge.url.rsplit(":", 1)[1])
    request = f"GET /obj/c?size=4&max_age=60 HTTP/1.1\r\nHost: {host}\r\n\r\n".encode()

    async def ask(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bytes:
        writer.write(request)
        try:
            return await asyncio.wait_for(reader.read(4096), 10)
        except (ConnectionResetError, BrokenPipeError):
            return b""

    admitted = []
    for _ in range(4):
        reader, writer = await asyncio.open_connection(host, port)
        assert (await ask(reader, writer)).startswith(b"HTTP/1.1 200")
        admitted.append((reader, writer))
    reader, writer = await asyncio.open_connection(host, port)
    assert await ask(reader, writer) == b""  # closed without an answer
    writer.close()
    for reader, writer in admitted:  # the admitted ones are unaffected
        assert (await ask(reader, writer)).startswith(b"HTTP/1.1 200")
    _, closing = admitted.pop()
    closing.close()
    deadline = time.monotonic() + 10
    while True:  # a closed connection frees its place
        reader, writer = await asyncio.open_connection(host, port)
        answer = await ask(reader, writer)
        writer.close()
        if answer.startswith(b"HTTP/1.1 200"):
            break
        assert time.monotonic() < deadline, "a freed place was never reused"
        await asyncio.sleep(0.05)
    for _, writer in admitted:
        writer.close()


@pytest.mark.parametrize(
    ("rules", "top", "client", "allowed"),
    [
        ('deny = ["198.51.100.0/24"]', "", "198.51.100.7", False),
        ('deny = ["198.51.100.0/24"]', "", "203.0.113.7", True),
        ('allow = ["10.0.0.0/8"]', "", "203.0.113.7", False),
        ('allow = ["10.0.0.0/8"]', "", "10.1.2.3", True),
        ('deny_countries = ["IE"]', f'geodb = "{DEMO_GEODB}"', "192.0.2.7", False),  # demo database: Dublin
        ('deny_countries = ["IE"]', f'geodb = "{DEMO_GEODB}"', "198.51.100.7", True),  # … and the US
        ('deny_countries = ["GB"]', f'geodb = "{MAXMIND_TEST_DATA / "GeoIP2-City-Test.mmdb"}"', "81.2.69.142", False),
        ('deny_countries = ["GB"]', f'geodb = "{MAXMIND_TEST_DATA / "GeoIP2-City-Test.mmdb"}"', "214.0.0.1", True),
    ],
)
async def test_access_rules_by_address_and_country(
    origin: OriginStubServer, tmp_path: Path, edge_processes: list[EdgeProcess], rules: str, top: str,
    client: str, allowed: bool,
) -> None:  # fmt: skip
    if "GeoIP2-City-Test" in top and not (MAXMIND_TEST_DATA / "GeoIP2-City-Test.mmdb").is_file():
        pytest.skip("MaxMind's test database is not present (set EDGECACHE_MAXMIND_TEST_DATA)")
    edge = start(origin, tmp_path, edge_processes, f'{rules}\ntrust_proxy = ["127.0.0.0/8"]\n', top, workers=1)
    status, _, body = await get(f"{edge.url}/obj/a?size=4", {"X-Forwarded-For": client})
    assert status == (200 if allowed else 403), body


async def test_forwarded_for_is_believed_only_from_trusted_proxies(
    origin: OriginStubServer, tmp_path: Path, edge_processes: list[EdgeProcess]
) -> None:
    edge = start(origin, tmp_path, edge_processes, 'deny = ["127.0.0.0/8"]\ntrust_proxy = ["10.0.0.0/8"]\n',
                 workers=1)  # fmt: skip
    status, _, _ = await get(f"{edge.url}/obj/a?size=4", {"X-Forwarded-For": "203.0.113.5"})
    assert status == 403  # the peer (127.0.0.1) is not a trusted proxy: its header changes nothing
    edge.stop()
    edge = start(origin, tmp_path, edge_processes, 'deny = ["203.0.113.0/24"]\ntrust_proxy = ["127.0.0.0/8"]\n',
                 workers=1)  # fmt: skip
    assert (await get(f"{edge.url}/obj/a?size=4", {"X-Forwarded-For": "203.0.113.5"}))[0] == 403
    assert (await get(f"{edge.url}/obj/a?size=4", {"X-Forwarded-For": "203.0.113.5, 10.9.9.9"}))[0] == 200
    assert (await get(f"{edge.url}/obj/a?size=4", {"Forwarded": 'for="203.0.113.5:4711"'}))[0] == 200  # not read
    edge.stop()
    edge = start(origin, tmp_path, edge_processes,
                 'deny = ["203.0.113.0/24"]\ntrust_proxy = ["127.0.0.0/8"]\nclient_header = "forwarded"\n',
                 workers=1)  # fmt: skip
    assert (await get(f"{edge.url}/obj/a?size=4", {"Forwarded": 'for="203.0.113.5:4711"'}))[0] == 403
    assert (await get(f"{edge.url}/obj/a?size=4", {"X-Forwarded-For": "203.0.113.5"}))[0] == 200  # not read


async def test_signed_urls(origin: OriginStubServer, tmp_path: Path, edge_processes: list[EdgeProcess]) -> None:
    secret = "s3cret-s3cret-s3cret"
    edge = start(origin, tmp_path, edge_processes,
                 f'trust_proxy = ["127.0.0.0/8"]\n[protection.signed_urls]\nsecret = "{secret}"\n'
                 'paths = ["/obj/private*"]\nbind_client = true\n', workers=1)  # fmt: skip
    client = {"X-Forwarded-For": "198.51.100.20"}
    future = int(time.time()) + 600
    good = sign_url(f"{edge.url}/obj/private?size=8&max_age=600", secret, future, client="198.51.100.20")
    status, _headers, body = await get(good, client)
    assert (status, len(body)) == (200, 8)
    other = sign_url(f"{edge.url}/obj/private?size=8&max_age=600", secret, future + 1, client="198.51.100.20")
    assert (await get(other, client))[1]["X-Cache"] == "HIT"  # the token is not part of the key
    expired = sign_url(f"{edge.url}/obj/private?size=8&max_age=600", secret, int(time.time()) - 1,
                       client="198.51.100.20")  # fmt: skip
    tampered = good.replace("/obj/private?", "/obj/private2?")
    cases: list[tuple[str, dict[str, str], Callable[[bytes], bool]]] = [
        (expired, client, lambda body: b"expired" in body),
        (tampered, client, lambda body: b"bad signature" in body),
        (good, {"X-Forwarded-For": "198.51.100.21"}, lambda body: b"bad signature" in body),  # another client
        (f"{edge.url}/obj/private?size=8&max_age=600", client, lambda body: b"missing" in body),
    ]
    for url, headers_, check in cases:
        status, _, body = await get(url, headers_)
        assert status == 403, url
        assert check(body), body
    assert (await get(f"{edge.url}/obj/public?size=8", client))[0] == 200  # outside ``paths``
    host, port = "127.0.0.1", int(edge.url.rsplit(":", 1)[1])
    for target in ("/obj/%70rivate?size=8&max_age=600", "//obj/private?size=8&max_age=600",
                   "/obj/x/../private?size=8&max_age=600", f"http://{host}:{port}/obj/private?size=8&max_age=600"):
        reader, writer = await asyncio.open_connection(host, port)  # other spellings of the same object
        writer.write(f"GET {target} HTTP/1.1\r\nHost: {host}\r\nX-Forwarded-For: 198.51.100.20\r\n\r\n".encode())
        answer = await asyncio.wait_for(reader.read(4096), 10)
        writer.close()
        assert answer.startswith(b"HTTP/1.1 403"), (target, answer[:200])
    async with aiohttp.ClientSession() as session, session.head(expired, headers=client) as resp:
        assert resp.status == 403  # a HEAD refusal carries no body: the connection stays usable
    async with aiohttp.ClientSession() as session:
        for _ in range(2):
            async with session.head(expired, headers=client) as resp:
                assert resp.status == 403
    async with aiohttp.ClientSession() as session, session.request(
        "PURGE", f"{edge.url}/obj/private?size=8&max_age=600"
    ) as resp:
        assert resp.status == 200  # PURGE is judged by purge_allow, not by signed URLs
    before = origin.state.total
    for _ in range(5):
        await get(expired, client)
    assert origin.state.total == before  # refused before any lookup or origin request


async def test_the_router_limits_rate_and_connections_too(tmp_path: Path) -> None:
    inventory = tmp_path / "inventory.toml"
    inventory.write_text('[[edges]]\nname = "e"\nregion = "r"\nlatitude = 0\nlongitude = 0\n'
                         'url = "http://127.0.0.1:9"\nadmin_url = "http://127.0.0.1:9"\n')  # fmt: skip
    config = tmp_path / "router.toml"
    port, admin = free_port(), free_port()
    config.write_text(
        f'listen = "127.0.0.1:{port}"\nadmin_listen = "127.0.0.1:{admin}"\nedges = "{inventory}"\n'
        f'purge_state_dir = "{tmp_path / "rp"}"\naccess_log = false\ntrust_proxy = ["127.0.0.0/8"]\n'
        "[protection]\nrate = 20\nburst = 10\nmax_connections_per_ip = 20\n"
    )
    router = start_router(config)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                await get(f"http://127.0.0.1:{admin}/healthz")
                break
            except aiohttp.ClientError:
                assert time.monotonic() < deadline
                await asyncio.sleep(0.05)
        flood = run_flood(f"http://127.0.0.1:{port}/x", "--rate", "2000", "--seconds", "2", "--connections", "4",
                          "--xff", "198.51.100.1")  # fmt: skip
        result = flood_result(flood)
        answered = sum(count for status, count in result["statuses"].items() if status in ("302", "503"))
        expected = 10 + 20 * result["seconds"]
        assert abs(answered - expected) <= 0.15 * expected + 2, (answered, expected, result)
        assert result["statuses"].get("429", 0) > 1000
        other = await get(f"http://127.0.0.1:{port}/x", {"X-Forwarded-For": "198.51.100.2"})
        assert other[0] != 429  # another client is not held back
        async with aiohttp.ClientSession() as client, client.get(f"http://127.0.0.1:{admin}/metrics") as resp:
            assert 'edgecache_router_refusals_total{reason="rate"}' in await resp.text()
    finally:
        router.terminate()
        router.wait(15)
